"""Files of several frames: animated GIF, WebP and PNG (APNG), and multi-page TIFF.

Pillow decodes them a frame at a time, each frame coalesced onto the canvas
(a full picture, whatever the file's disposal and blending), and writes them
back with every frame's duration and the loop count.  Only the file I/O is
here: pooling in time is :mod:`downpool.frames`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import IO, Any, Callable, Iterator

import numpy as np

from . import io as image_io
from .files import put_file
from .io import ANIMATED_FORMATS

__all__ = ["ANIMATED_FORMATS", "SequenceInfo", "SequenceFile", "write_sequence",
           "check_frame_format", "gif_canvas"]



@dataclasses.dataclass(frozen=True)
class SequenceInfo:
    """What is kept of a file of frames.

    Attributes
    ----------
    format : str
        ``"GIF"``, ``"WEBP"``, ``"PNG"`` (APNG) or ``"TIFF"`` (pages).
    n_frames : int
    loop : int or None
        How often the animation plays, as the file says it (0: for ever);
        None where the file says nothing (a GIF without a loop extension plays once).
    icc_profile : bytes or None
        The first frame's ICC profile.
    compression : str or None
        For TIFF, the first page's compression (Pillow's name).
    """

    format: str
    n_frames: int
    loop: int | None
    icc_profile: bytes | None
    compression: str | None = None


class SequenceFile:
    """The frames of a file that :func:`downpool.io.open_image` opened (``source``, an
    :class:`~downpool.io.ImageFile`), decoded by Pillow as :meth:`frames` goes.

    :func:`~downpool.io.open_image` checks the first frame's header; :attr:`headers`
    describes every frame before any is decoded, for the caller to check them all
    (a TIFF's later page may be far larger than its first, and a GIF's frames may
    spread its canvas)."""

    def __init__(self, source: Any) -> None:
        first = source.header
        self._source = source._source  # the path, or a pipe's bytes
        self._plain_pages = False
        with source.file_bytes() as raw:
            im, self._head = source.pillow_image()
            self._im = im
            fmt = im.format
            self.info = SequenceInfo(fmt, int(getattr(im, "n_frames", 1)), im.info.get("loop"),
                                     im.info.get("icc_profile") or None,
                                     im.info.get("compression") if fmt == "TIFF" else None)
            self.headers = self._headers(first, raw)

    def _headers(self, first: Any, raw: IO[bytes]) -> list[Any]:
        """Each frame's :class:`~downpool.io.ImageHeader`, read without decoding a pixel.

        A TIFF's pages are each described by their own tags.  The frames of an
        animation are all the canvas, coalesced (in the first frame's kind): a
        GIF's canvas is its logical screen grown to hold every frame, as Pillow
        grows it; Pillow holds the canvas and the frame before it (4 bytes a
        pixel each).
        """
        im, n = self._im, self.info.n_frames
        if self.info.format == "TIFF":
            headers, plain = [], True
            try:
                for index in range(n):
                    im.seek(index)
                    headers.append(image_io._header(im, "TIFF", self._head))
                    plain = plain and _plain_page(im)
            except (EOFError, OSError, ValueError, SyntaxError) as exc:
                raise OSError(f"page {len(headers) + 1} of {n} cannot be read: "
                              f"{image_io._decode_failure(exc, 'TIFF')}") from None
            finally:
                im.seek(0)
            kinds = {(h.width, h.height, h.channels, h.bytes_per_sample) for h in headers}
            self._plain_pages = plain and len(kinds) == 1 and n > 1
            return headers
        width, height = first.width, first.height
        if self.info.format == "GIF":
            width, height = gif_canvas(raw, (width, height))
        canvas = dataclasses.replace(first, width=width, height=height,
                                     decoded_bytes=2 * 4 * width * height, streamed=False)
        return [canvas] * n

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """Each frame's pixels (uint8 or uint16; (H, W) or (H, W, C)) and duration in ms.

        GIF, WebP and APNG frames are the whole canvas, in the first frame's
        mode (L, LA, RGB or RGBA: a GIF whose first frame has a transparent
        colour is RGBA throughout).  TIFF pages come as each is stored, as
        :func:`downpool.io.read_image` reads a still TIFF.
        """
        if self._plain_pages:
            yield from self._libvips_pages()
            return
        im = self._im
        mode = None
        for index in range(self.info.n_frames):
            try:
                # The caller checked every frame's header against its own limits.
                with image_io.pillow_limit_lifted(self.headers[index].pixels):
                    im.seek(index)
                    im.load()
            except (EOFError, OSError, ValueError, SyntaxError) as exc:
                raise OSError(f"frame {index + 1} of {self.info.n_frames} cannot be decoded: "
                              f"{image_io._decode_failure(exc, self.info.format)}") from None
            if self.info.format == "TIFF":
                image_io._refuse_reduced_samples(im, "TIFF")
                pixels, _, _ = image_io._pixels_and_mode(im, None, self._head)
            else:
                if mode is None:
                    mode = image_io._pixels_and_mode(im, None, self._head)[1]
                    mode = {"LA;16": "LA", "I;16": "L"}.get(mode, mode)
                pixels = np.asarray(im if im.mode == mode else im.convert(mode))
            yield pixels, float(im.info.get("duration") or 0.0)

    def _libvips_pages(self) -> Iterator[tuple[np.ndarray, float]]:
        """The pages of a TIFF whose pages are all plain and of one kind, decoded by libvips
        as one image of its pages one below the other, in order.  Pillow's decoder
        (libtiff, handed each page's IFD) walks the file's IFDs from the first for each
        page, so that reading took time quadratic in the number of pages."""
        from . import libvips

        first = self.headers[0]
        n = len(self.headers)
        expected = ({1: "uchar", 2: "ushort"}[first.bytes_per_sample], first.channels,
                    first.width, first.height * n)

        def decoder(fail_on: str) -> Any:
            image = libvips.open_rows(self._source, "TIFF", fail_on=fail_on, n=-1)
            if (image.format, image.bands, image.width, image.height) != expected:
                raise OSError(f"libvips reads these {n} TIFF pages as "
                              f"{image.width}x{image.height} {image.format} x {image.bands}, "
                              "not as their tags say")
            return image

        for band in libvips.decoded_bands(decoder, first.height, "TIFF"):
            # A copy: the pooler holds the pages of a time window.
            yield np.array(band[:, :, 0] if first.channels == 1 else band), 0.0


def _plain_page(im: Any) -> bool:
    """Whether libvips decodes this TIFF page (Pillow's, seeked to it) as Pillow would, as
    :func:`downpool.io.open_image` streams a plain still TIFF: L, LA, RGB, RGBA or 16-bit
    gray (RGB and RGBA of 16 bits too, which only libvips decodes), every sample of 8
    or of 16 bits, stored raw, LZW, Deflate or PackBits, upright."""
    bits = image_io._tiff_bits(im)
    return (im.mode in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B")
            and bits in ((8,) * len(bits), (16,) * len(bits))
            and im.info.get("compression") in ("raw", "tiff_lzw", "tiff_adobe_deflate",
                                               "packbits")
            and im.tag_v2.get(274, 1) == 1)


def gif_canvas(stream: IO[bytes], size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a GIF's canvas once every frame is drawn: its logical screen
    ``size``, grown to each frame's extent as Pillow grows it, read from the file's
    blocks without decoding a pixel (the image data's sub-blocks are skipped)."""
    width, height = size
    head = stream.read(13)
    if len(head) < 13:
        return width, height
    if head[10] & 0x80:  # the global colour table
        stream.seek(3 << ((head[10] & 7) + 1), os.SEEK_CUR)

    def skip_sub_blocks() -> bool:
        while True:
            length = stream.read(1)
            if not length:
                return False
            if length[0] == 0:
                return True
            stream.seek(length[0], os.SEEK_CUR)

    while True:
        kind = stream.read(1)
        if kind == b"\x21":  # an extension: its label, then sub-blocks
            if not stream.read(1) or not skip_sub_blocks():
                break
        elif kind == b"\x2c":  # an image: its extent, colour table and LZW sub-blocks
            descriptor = stream.read(9)
            if len(descriptor) < 9:
                break
            x, y, w, h, flags = struct.unpack("<HHHHB", descriptor)
            width, height = max(width, x + w), max(height, y + h)
            if flags & 0x80:
                stream.seek(3 << ((flags & 7) + 1), os.SEEK_CUR)
            if not stream.read(1) or not skip_sub_blocks():
                break
        else:  # the trailer, or what Pillow stops at too
            break
    return width, height


def check_frame_format(fmt: str, n_frames: int) -> None:
    """``UnsupportedImageError`` where ``n_frames`` frames cannot be written as ``fmt``."""
    if n_frames > 1 and fmt not in ANIMATED_FORMATS:
        raise image_io.UnsupportedImageError(
            f"{fmt} holds one frame, and this file has {n_frames}: write GIF, WebP, PNG or "
            f"TIFF, or keep the first frame alone (--frames first)")


def _palettised(images: list[Any]) -> list[Any]:
    """GIF frames in palette mode, each with its own adaptive palette, as Pillow's GIF
    writer would make them (median cut; a transparent entry where alpha is 0), but on
    threads: quantising is most of the time of writing a GIF, and Pillow does it
    without the GIL."""
    from PIL import Image

    def palettised(im: Any) -> Any:
        if im.mode == "L":
            return im
        if im.mode == "LA":
            im = im.convert("RGBA")
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)
        if im.palette.mode == "RGBA":
            for rgba, index in im.palette.colors.items():
                if rgba[3] == 0:
                    im.info["transparency"] = index
                    break
        return im

    from .threads import map_on_threads

    return map_on_threads(palettised, images)


def write_sequence(
    path: str | os.PathLike,
    frames: list[np.ndarray],
    durations: list[float],
    info: SequenceInfo | None = None,
    format: str | None = None,
    quality: int | None = None,
    strip: bool = False,
    replace: bool = True,
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Write ``frames`` as an animation (or TIFF pages) to ``path``, atomically.

    Parameters
    ----------
    frames : list of ndarray
        uint8 or uint16, (H, W) or (H, W, C), C in 1..4 (2 and 4 with alpha);
        GIF, WebP and APNG frames all of one shape.
    durations : list of float
        Each frame's duration in milliseconds (GIF keeps hundredths of a second).
    info : SequenceInfo, optional
        The source's loop count, ICC profile (unless ``strip``) and TIFF compression.
    format : str, optional
        GIF, WEBP, PNG or TIFF; default the source's, else the extension's.
    quality, strip, replace, before_rename
        As for :func:`downpool.io.write_image`.

    Raises
    ------
    UnsupportedImageError
        A format that holds one frame (JPEG, BMP, AVIF, HEIF), or alpha for
        one without it.
    OSError
        As :func:`downpool.io.write_image`.
    """
    path = os.fspath(path)
    fmt = (format or (info.format if info is not None else None)
           or image_io.format_for_extension(path) or "")
    fmt = image_io._checked_format(frames[0], fmt)
    check_frame_format(fmt, len(frames))
    if fmt == "TIFF":
        _write_tiff_pages(path, frames, info, quality, strip, replace, before_rename)
        return
    images = [image_io._to_pillow(f, fmt) for f in frames]
    alpha = images[0].mode in ("LA", "RGBA")
    options: dict[str, Any] = {}
    loop = info.loop if info is not None else 0
    if fmt != "TIFF":
        options["duration"] = [max(0, round(d)) for d in durations]
    if fmt == "GIF":
        images = _palettised(images)
        # Each frame is a whole picture: with alpha, the last one is cleared
        # before the next is drawn, else it would show through.
        options["disposal"] = 2 if alpha else 1
        if loop is not None:
            options["loop"] = loop
    elif fmt in ("WEBP", "PNG"):
        options["loop"] = 1 if loop is None else loop  # GIF without a loop plays once
        if fmt == "WEBP":
            options["quality"] = image_io._DEFAULT_QUALITY if quality is None else int(quality)
    if info is not None and info.icc_profile and not strip and fmt != "GIF":
        options["icc_profile"] = info.icc_profile

    def write(out: IO[bytes]) -> None:
        images[0].save(out, format=fmt, save_all=True, append_images=images[1:], **options)
        if before_rename is not None:
            before_rename()

    put_file(path, write, replace=replace)


def _write_tiff_pages(path: str, frames: list[np.ndarray], info: SequenceInfo | None,
                      quality: int | None, strip: bool, replace: bool,
                      before_rename: Callable[[], None] | None) -> None:
    """TIFF pages, written by libvips (:func:`downpool.libvips.save_tiff_pages`): the
    input's compression where libtiff can write it for the pages, else Deflate; the
    ICC profile unless ``strip``.  Pillow's multi-page writer took time quadratic in
    the number of pages; libvips reads pages that lie one after the other in one
    array where they are."""
    from . import libvips

    pages = []
    for index, frame in enumerate(frames):
        if frame.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"page {index + 1} must be uint8 or uint16, got {frame.dtype}")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if frame.ndim not in (2, 3) or frame.ndim == 3 and frame.shape[2] not in (2, 3, 4):
            raise ValueError(f"page {index + 1} must be (H, W) or (H, W, C) with C in 1..4, "
                             f"got {frame.shape}")
        pages.append(frame)
    compression = (info.compression if info is not None and info.compression
                   in image_io._TIFF_KEPT_COMPRESSIONS else image_io.TIFF_DEFAULT_COMPRESSION)
    icc = info.icc_profile if info is not None and not strip else None

    def write(out: IO[bytes]) -> None:
        libvips.save_tiff_pages(out, pages, compression=compression,
                                quality=image_io._DEFAULT_QUALITY if quality is None
                                else int(quality), icc=icc)
        if before_rename is not None:
            before_rename()

    put_file(path, write, replace=replace)
