"""Reading and writing image files: the only module that knows about file formats.

Pixels go in and out as NumPy arrays; what a file carries besides pixels
(ICC profile, EXIF, XMP, IPTC, resolution, PNG colour chunks, format)
travels beside them in a :class:`LoadedImage`, so that image operations
never see a file and file code never pools anything.

Decisions (SPEC section 4):

- 8- and 16-bit samples are kept: ``uint8`` or ``uint16`` arrays.  Pillow 13
  holds 16-bit *grayscale* (mode ``I;16``) but decodes 16-bit RGB, RGBA and
  gray+alpha PNG only reduced to 8 bits, and cannot write them:
  :mod:`downpool.png` reads and writes those PNGs.  16-bit RGB and RGBA TIFF
  is read and written by libvips; where libvips cannot take it (turned,
  other compressions) it is refused with :class:`UnsupportedImageError`
  rather than silently reduced to 8 bits.  Packed 16-bit pixels (RGB565 and RGB555 BMP) hold at most 6 bits a
  channel and are read as 8-bit RGB, which keeps every value.
- Modes L, LA, RGB and RGBA are kept.  Palette images become RGB, or RGBA
  where they have transparency; a PNG whose transparency is a key colour
  (tRNS in a gray, RGB, 16-bit gray or 1-bit image) gets a real alpha
  channel (LA, RGBA), so that the key colour is not averaged into its
  neighbours; bilevel images become L; CMYK, YCbCr, LAB and HSV become RGB,
  and their ICC profile (which describes the old colour space) is dropped.
- The EXIF orientation is applied on load and the EXIF data carries
  orientation 1 afterwards, patched in the block as it was read
  (:mod:`downpool.exif`).
- Every chunk of a PNG is checked (:func:`downpool.png.scan_png`): a bad
  checksum or a chunk that runs past the end of the file is an error.
- AVIF is read and written by Pillow's own codec, HEIC/HEIF by pillow-heif
  (registered with Pillow when a HEIF file is met), 8 bits per channel.
- Writes go through :func:`downpool.files.put_file`: atomic for regular
  files, into FIFOs and character devices, through symbolic links.
- :func:`open_image` reads the header first.  A file whose pixels libvips
  decodes exactly as Pillow would (8- and 16-bit PNG without palette or key
  colour, baseline or progressive JPEG in L or RGB, WebP, uncompressed /
  LZW / Deflate / PackBits TIFF in L, LA, RGB, RGBA or 16-bit gray, no EXIF
  rotation), from 2 MiB of samples up (:data:`STREAM_MIN_BYTES`), is decoded
  by libvips (:mod:`downpool.libvips`) in bands of rows with sequential
  access, so that a caller can pool it without holding the whole image;
  every other file is decoded whole by Pillow, as before.  Either
  way a damaged or truncated file is an error, never a partly grey image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from . import exif as exif_blocks
from . import png
from .files import put_file

__all__ = [
    "LoadedImage",
    "ImageHeader",
    "UnsupportedImageError",
    "MetadataWarning",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "FORMAT_EXTENSIONS",
    "EXTENSION_FORMATS",
    "IMAGE_EXTENSIONS",
    "format_for_extension",
    "read_image",
    "open_image",
    "ImageFile",
    "encode_image",
    "write_image",
]

DEFAULT_MAX_PIXELS = 1_000_000_000

#: Output formats that can be asked for, by Pillow name.
FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "AVIF", "HEIF")

#: The extension a file of each format gets when the format changes.
FORMAT_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif",
                     "BMP": ".bmp", "GIF": ".gif", "AVIF": ".avif", "HEIF": ".heic"}

#: The format each image extension implies (lower case, with the dot).
EXTENSION_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG",
                     ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
                     ".gif": "GIF", ".avif": "AVIF", ".heic": "HEIF", ".heif": "HEIF",
                     ".hif": "HEIF"}

#: Extensions picked up when walking a folder; files named on the command line
#: are read whatever their name.
IMAGE_EXTENSIONS = frozenset(EXTENSION_FORMATS)

# Formats whose files hold an alpha channel (GIF only one bit of it, which
# Pillow's quantiser manages).
#: Formats that hold several frames (:mod:`downpool.sequence_io` reads and writes them).
ANIMATED_FORMATS = ("GIF", "WEBP", "PNG", "TIFF")
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "GIF", "AVIF", "HEIF"}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
_METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF", "AVIF", "HEIF"}
# Formats whose encoders take a quality; AVIF and HEIF are read and written
# 8 bits per sample.
_QUALITY_FORMATS = {"JPEG", "WEBP", "AVIF", "HEIF"}
#: ISO media brands of HEIF files (HEVC-coded: read and written by pillow-heif).
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_DPI_FORMATS = {"PNG", "JPEG", "TIFF", "BMP"}

_EXIF_ORIENTATION = 0x0112
_TIFF_XMP, _TIFF_IPTC = 700, 33723

_DEFAULT_QUALITY = 90
# JPEG segments hold 65533 bytes; EXIF and XMP each need one.
_JPEG_SEGMENT_BYTES = 65533
_JPEG_XMP_BYTES = _JPEG_SEGMENT_BYTES - 29

#: TIFF compressions that are written again as they were read; any other
#: (CCITT fax, which needs 1-bit samples, and those Pillow cannot write)
#: becomes the lossless default.
_TIFF_KEPT_COMPRESSIONS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"}
TIFF_DEFAULT_COMPRESSION = "tiff_adobe_deflate"


class UnsupportedImageError(ValueError):
    """A file that Pillow decodes, but not in a form downpool can keep."""


class MetadataWarning(UserWarning):
    """Metadata that could not be kept: the image is written without it."""


@dataclasses.dataclass
class LoadedImage:
    """An image read from a file, with what is needed to write it back alike.

    Attributes
    ----------
    pixels : ndarray
        ``uint8`` or ``uint16``, shape (H, W) for L / I;16 or (H, W, C) with
        C = 2 (LA), 3 (RGB) or 4 (RGBA); already turned upright by the EXIF
        orientation.
    has_alpha : bool
        The last channel is alpha (LA, RGBA).
    mode : str
        What the pixels are: the Pillow modes ``"L"``, ``"LA"``, ``"RGB"``,
        ``"RGBA"``, ``"I;16"`` (16-bit grayscale), or, for 16-bit colour
        (no Pillow mode holds it), ``"LA;16"``, ``"RGB;16"``, ``"RGBA;16"``.
    icc_profile : bytes or None
        The embedded ICC profile, as found in the file.
    exif : bytes or None
        The EXIF block (``Exif\\0\\0`` prefix) with its orientation set to 1
        (the pixels are upright).
    format : str
        Pillow's name of the file format: ``"PNG"``, ``"JPEG"``, ``"TIFF"``,
        ``"WEBP"``, ``"BMP"``, ``"GIF"``.
    size : (int, int)
        (width, height) of the file as stored, before the orientation was applied.
    xmp : bytes or None
        The XMP packet, its orientation set to 1.
    iptc : bytes or None
        IPTC-IIM records (from JPEG's Photoshop segment or TIFF tag 33723).
    dpi : (float, float) or None
        Resolution in pixels per inch, where the file states one.
    png_chunks : tuple of (bytes, bytes)
        For PNG, the ancillary chunks carried into a PNG output as they are
        (:data:`downpool.png.CARRIED_CHUNKS`: gAMA, cHRM, sRGB, cICP, text).
    compression : str or None
        For TIFF, Pillow's name of its compression (``"tiff_lzw"``, ``"group4"`` ...).
    """

    pixels: np.ndarray
    has_alpha: bool
    mode: str
    icc_profile: bytes | None
    exif: bytes | None
    format: str
    size: tuple[int, int] = (0, 0)
    xmp: bytes | None = None
    iptc: bytes | None = None
    dpi: tuple[float, float] | None = None
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()
    compression: str | None = None


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, known before its pixels are decoded.

    ``channels`` and ``bytes_per_sample`` describe the array
    :func:`read_image` will return; ``decoded_bytes`` is the memory the
    decoder itself holds while it works (Pillow keeps 1, 2 or 4 bytes a
    pixel, whatever the channels); for a streamed image, the few strips
    libvips holds.
    """

    width: int
    height: int
    format: str
    channels: int
    bytes_per_sample: int
    has_alpha: bool
    decoded_bytes: int
    #: The pixels are decoded a band of rows at a time (libvips): the whole
    #: image is never held.
    streamed: bool = False
    #: Bytes of the file itself held in memory while it is decoded (a pipe's,
    #: read whole first); 0 for a file read from disk.
    source_bytes: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height


def format_for_extension(path: str | os.PathLike) -> str | None:
    """The Pillow format name that a file name's extension implies, or None."""
    return EXTENSION_FORMATS.get(Path(path).suffix.lower())


# --- reading --------------------------------------------------------------------------


@contextlib.contextmanager
def _seekable_file(path: str, max_read_bytes: int | None = None) -> Iterator[IO[bytes]]:
    """``path`` opened for reading; a pipe or terminal (``/dev/stdin``) is read into memory,
    and refused (:class:`UnsupportedImageError`) as soon as more than ``max_read_bytes``
    have arrived: the rest is never read."""
    with open(path, "rb") as stream:
        if stream.seekable():
            yield stream
            return
        chunks, held = [], 0
        while True:
            chunk = stream.read(_PIPE_CHUNK_BYTES)
            if not chunk:
                break
            chunks.append(chunk)
            held += len(chunk)
            if max_read_bytes is not None and held > max_read_bytes:
                from .memory import format_bytes

                raise UnsupportedImageError(
                    f"more than {format_bytes(max_read_bytes)} arrived on this pipe, which is "
                    f"read into memory before it is decoded: above what one file may take "
                    f"(--max-memory); read no further")
        data = b"".join(chunks)
        del chunks
        yield io.BytesIO(data)


#: A pipe is read this much at a time (and checked against its limit between reads).
_PIPE_CHUNK_BYTES = 1 << 20


def read_image(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    before_decode: Callable[[ImageHeader], None] | None = None,
    to_srgb: bool = False,
    max_read_bytes: int | None = None,
) -> LoadedImage:
    """Read an image file into a NumPy array, keeping its bit depth and metadata.

    Parameters
    ----------
    path : str or path-like
        A PNG, JPEG, TIFF, WebP, BMP, GIF (the first frame), AVIF or HEIC
        file.  A pipe (``/dev/stdin``) is read into memory first.
    max_pixels : int or None
        Refuse images with more pixels than this (width x height), before
        decoding them.  This replaces Pillow's decompression-bomb limit.
        None means no limit.
    before_decode : callable, optional
        Called with the :class:`ImageHeader` once the header is read and
        before any pixel is decoded; what it raises stops the read (the
        command's memory check).
    to_srgb : bool
        Convert the pixels from the embedded ICC profile to sRGB (libvips,
        relative colorimetric intent; a gray image with a profile becomes
        RGB) and carry libvips' sRGB profile instead.  An RGB image without
        a profile is taken as sRGB and tagged so; gray without one is left
        as it is.  CMYK is converted to RGB as without it (its profile
        dropped).
    max_read_bytes : int or None
        A pipe (which is read into memory first) that holds more than this
        is refused as soon as that much has arrived, without reading the
        rest.  None means no limit.  Files on disk are not read whole.

    Returns
    -------
    LoadedImage
        ``pixels`` is ``uint8`` or ``uint16``, (H, W) or (H, W, C), upright.

    Raises
    ------
    OSError
        The file is missing, unreadable, truncated or corrupt, or not an
        image; the message says which, in words.
    UnsupportedImageError
        A ``ValueError``: an image above ``max_pixels``, a format other than
        the six above, or samples that cannot be kept (16-bit colour TIFF
        that libvips cannot decode, which Pillow reduces to 8 bits;
        interlaced 16-bit colour PNG; 32-bit
        float samples; integer samples outside 0..65535).

    See Also
    --------
    open_image : the same file, its pixels read a band of rows at a time.

    Examples
    --------
    >>> img = read_image("photo.jpg")                       # doctest: +SKIP
    >>> img.pixels.shape, img.pixels.dtype, img.mode        # doctest: +SKIP
    ((3000, 4000, 3), dtype('uint8'), 'RGB')
    """
    with open_image(path, max_pixels, before_decode, to_srgb, max_read_bytes) as image:
        return image.read()


@contextlib.contextmanager
def open_image(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    before_decode: Callable[[ImageHeader], None] | None = None,
    to_srgb: bool = False,
    max_read_bytes: int | None = None,
) -> Iterator[ImageFile]:
    """Open an image file and read its header and metadata, its pixels not yet.

    The parameters and errors are :func:`read_image`'s; decoding errors come
    from :meth:`ImageFile.read` or :meth:`ImageFile.bands`.  Plain PNG,
    JPEG, TIFF and WebP files (8 or 16 bits, L/LA/RGB/RGBA, upright, TIFF
    compressed losslessly or not at all) are decoded by libvips a band of
    rows at a time, holding a few strips; the others (palette, key-colour
    transparency, CMYK, EXIF-rotated, BMP, GIF ...) are decoded whole by
    Pillow.  Both ways give the same pixels as :func:`read_image`.

    Examples
    --------
    >>> with open_image("huge.tif") as image:                 # doctest: +SKIP
    ...     for band in image.bands(256):
    ...         pooler.feed(band)
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    with _seekable_file(path, max_read_bytes) as stream:
        held = len(stream.getvalue()) if isinstance(stream, io.BytesIO) else 0
        head = stream.read(64)
        stream.seek(0)
        if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
            _register_heif()
        # Pillow's limit is process-wide and raises only far above its warning
        # level; ours is per call and checked on the header, before decoding.
        # Threads opening files at once (a batch) take turns: else one's
        # restoring the limit lands inside another's open.
        with _PILLOW_LIMIT_LOCK:
            saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(stream)
            except UnidentifiedImageError:
                raise OSError(_unidentified(head)) from None
            except (SyntaxError, EOFError, struct.error, zlib.error, IndexError, KeyError,
                    ValueError, OSError) as exc:
                raise _decode_failure(exc, _signature_format(head) or "image") from None
            finally:
                Image.MAX_IMAGE_PIXELS = saved_limit
        with im:
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise UnsupportedImageError(
                    f"image is {width}x{height} = {width * height:,} pixels, above the "
                    f"limit of {max_pixels:,} (raise it with --max-pixels)"
                )
            fmt = "JPEG" if im.format == "MPO" else im.format
            if fmt not in FORMATS:
                raise UnsupportedImageError(
                    f"{im.format or 'unknown'} files are not supported "
                    f"(PNG, JPEG, TIFF, WebP, BMP, GIF, AVIF and HEIC are)"
                )
            header = _header(im, fmt, head)
            # A small image is decoded whole: libvips' set-up would cost more than it saves.
            may_stream = (header.pixels * header.channels * header.bytes_per_sample
                          >= STREAM_MIN_BYTES)
            scan = None
            if fmt == "PNG":
                position = stream.tell()
                # The image data's CRCs are left to libvips where it may decode the
                # file (libpng checks them); Pillow's decoder checks none.
                scan = png.scan_png(stream, check_idat=not may_stream)
                stream.seek(position)
            plain = None
            # A small JPEG or WebP may still be decoded by libvips: scaled, on
            # request; 16-bit colour TIFF only libvips decodes.
            only_libvips = _is_tiff16_colour(im, fmt)
            if may_stream or only_libvips or fmt in SHRINK_ON_LOAD_FORMATS:
                plain = _plain_metadata(im, fmt, head, scan)
            may_stream = may_stream or (only_libvips and plain is not None)
            if may_stream and plain is not None:
                header = _header(im, fmt, head, streamed=True)
            elif may_stream and scan is not None:  # Pillow's after all: its image data's CRCs now
                png.scan_png(stream, check_idat=True)
                stream.seek(position)
            if held:
                header = dataclasses.replace(header, source_bytes=held)
            if before_decode is not None:
                before_decode(header)
            source = stream.getvalue() if isinstance(stream, io.BytesIO) else path
            yield ImageFile(im, fmt, head, stream, scan, header, plain, source, to_srgb,
                            streamed=may_stream and plain is not None)


class ImageFile:
    """An opened image file (:func:`open_image`): its header and metadata, pixels on demand.

    Attributes
    ----------
    header : ImageHeader
    shape : tuple
        The upright pixels' shape: (H, W) or (H, W, C).
    dtype : numpy.dtype
        ``uint8`` or ``uint16``.
    has_alpha : bool
    streamed : bool
        Whether :meth:`bands` decodes as it goes (libvips) rather than
        handing out slices of the whole decoded image (Pillow).
    """

    def __init__(self, im: Any, fmt: str, head: bytes, stream: IO[bytes], scan: Any,
                 header: ImageHeader, plain: LoadedImage | None, source: str | bytes,
                 to_srgb: bool = False, streamed: bool = True) -> None:
        self._im, self._fmt, self._head, self._stream, self._scan = im, fmt, head, stream, scan
        self._plain, self._source = plain, source
        self.header = header
        self.streamed = streamed and plain is not None
        self._used = False
        self._to_srgb = to_srgb
        self._convert = to_srgb and plain is not None and plain.icc_profile is not None
        self._load_options: dict[str, Any] = {}
        self._set_plain_shape(header.width, header.height)

    @property
    def n_frames(self) -> int:
        """Frames of an animated GIF, WebP or PNG, or pages of a TIFF (1 for other formats)."""
        if self._fmt not in ANIMATED_FORMATS:
            return 1
        return int(getattr(self._im, "n_frames", 1))

    def file_bytes(self) -> IO[bytes]:
        """The file, opened afresh for reading from its start (a pipe's bytes as read)."""
        if isinstance(self._source, (bytes, bytearray)):
            return io.BytesIO(self._source)
        return open(self._source, "rb")

    def pillow_image(self) -> tuple[Any, bytes]:
        """The opened Pillow image and the file's first bytes, for reading every frame
        through Pillow (:mod:`downpool.sequence_io`) instead of :meth:`read`.  Call once,
        before the pixels are read."""
        if self._used:
            raise RuntimeError("the pixels of an ImageFile can be read once")
        self._used = True
        return self._im, self._head

    @property
    def full_shape(self) -> tuple[int, int]:
        """(H, W) of the upright image at its full size (for :meth:`shrink_on_load`)."""
        height, width = self.header.height, self.header.width
        if self._plain is None and self._fmt == "JPEG":  # turned upright once decoded
            if _exif_of(self._im.info.get("exif"))[0] in range(5, 9):
                return width, height
        return height, width

    def _set_plain_shape(self, width: int, height: int) -> None:
        """Shape, dtype and alpha of a plain file's pixels, decoded at ``width`` x ``height``."""
        plain, header = self._plain, self.header
        if plain is not None:
            self._like = _srgb_metadata(plain) if self._to_srgb else plain
            channels = header.channels
            if self._convert and channels in (1, 2):
                channels += 2  # gray with a profile becomes RGB
            self.dtype = np.dtype(np.uint16 if header.bytes_per_sample == 2 else np.uint8)
            self.shape = (height, width) + ((channels,) if channels > 1 else ())
            self.has_alpha = plain.has_alpha
        else:
            self._like = None
            self.dtype = self.shape = self.has_alpha = None  # known once decoded

    def shrink_on_load(self, factor: int) -> int:
        """Decode a JPEG or WebP file at about 1/``factor`` of its size (2, 4 or 8).

        libjpeg's DCT scaling and libwebp's scaled decoding make the smaller
        image as they decode, faster than decoding it whole, with what
        amounts to a box filter; :attr:`shape` (where known) is then the
        smaller one.  Other formats, and a WebP that must be turned upright,
        are decoded at full size.  Call before the pixels are read.  Returns
        the factor applied: ``factor``, or 1.
        """
        if self._used:
            raise RuntimeError("shrink_on_load must come before the pixels are read")
        if factor not in (1, 2, 4, 8):
            raise ValueError(f"factor must be 1, 2, 4 or 8, got {factor}")
        if factor == 1 or self._fmt not in SHRINK_ON_LOAD_FORMATS:
            return 1
        if self._plain is not None:  # libvips decodes it, streamed or not
            from . import libvips

            self.streamed = True
            self._load_options = ({"shrink": factor} if self._fmt == "JPEG"
                                  else {"scale": 1 / factor})
            image = libvips.open_rows(self._source, self._fmt, **self._load_options)
            self._set_plain_shape(image.width, image.height)
            return factor
        if self._fmt == "JPEG":  # CMYK, or turned: Pillow's libjpeg scales as it decodes
            width, height = self._im.size
            self._im.draft(self._im.mode, (width // factor, height // factor))
            return factor
        return 1

    def read(self) -> LoadedImage:
        """The whole image, as :func:`read_image` returns it."""
        if not self.streamed:
            return self._read_whole()
        pixels = np.empty(self.shape, self.dtype)
        top = 0
        for band in self.bands(max(1, (8 << 20) // max(1, pixels[0].nbytes))):
            pixels[top:top + band.shape[0]] = band.reshape(band.shape[0], *self.shape[1:])
            top += band.shape[0]
        return self.like(pixels)

    def bands(self, rows: int) -> Iterator[np.ndarray]:
        """The upright pixels, ``rows`` rows at a time from the top.

        Each band has the image's width, channels and dtype; it may be a
        read-only view that is not valid after the next band.  Call once.
        """
        if self._used:
            raise RuntimeError("the pixels of an ImageFile can be read once")
        self._used = True
        if not self.streamed:
            pixels = self._read_whole().pixels
            for top in range(0, pixels.shape[0], rows):
                yield pixels[top:top + rows]
            return
        from . import libvips

        height, width = self.shape[:2]
        expected = ({1: "uchar", 2: "ushort"}[self.header.bytes_per_sample], self.header.channels,
                    width, height)

        def decoder(fail_on: str) -> Any:
            image = libvips.open_rows(self._source, self._fmt, fail_on=fail_on,
                                      **self._load_options)
            if (image.format, image.bands, image.width, image.height) != expected:
                raise OSError(f"libvips reads this {self._fmt} file as "
                              f"{image.width}x{image.height} {image.format} x {image.bands}, "
                              "not as its header says")
            return libvips.to_srgb(image) if self._convert else image

        flat = len(self.shape) == 2
        for band in libvips.decoded_bands(decoder, rows, self._fmt):
            yield band[:, :, 0] if flat else band

    def like(self, pixels: np.ndarray) -> LoadedImage:
        """This file's metadata around ``pixels`` (for :func:`write_image`'s ``like``)."""
        if self._like is None:
            raise RuntimeError("the metadata are known once the pixels are read")
        return dataclasses.replace(self._like, pixels=pixels)

    def _read_whole(self) -> LoadedImage:
        if self._fmt == "JPEG":  # Pillow does not say libjpeg's warnings of damage
            from . import libvips

            libvips.check_jpeg(self._source)
        with pillow_limit_lifted(self.header.pixels):
            loaded = _decode_with_pillow(self._im, self._fmt, self._head, self._stream,
                                         self._scan, keep_cmyk=self._to_srgb)
        self._im.close()  # Pillow's copy of the pixels goes before they are pooled
        if self._to_srgb:
            loaded = _in_srgb(loaded)
        self._like = dataclasses.replace(loaded, pixels=np.empty((0,), loaded.pixels.dtype))
        self.shape, self.dtype, self.has_alpha = loaded.pixels.shape, loaded.pixels.dtype, loaded.has_alpha
        return loaded


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def pillow_limit_lifted(pixels: int) -> Iterator[None]:
    """Pillow's own decompression-bomb limit lifted while an image (or frame, or page)
    of ``pixels`` is decoded, where it is above that limit: the caller's limit
    (``max_pixels``, and the command's memory check) was applied to its header, and is
    the one that holds; Pillow's would refuse a TIFF page or GIF frame over 179
    megapixels even with ``--max-pixels 0``.  The limit is process-wide: it is lifted,
    and the decoding done, under the lock that :func:`open_image` takes, so only
    such large images wait for one another."""
    from PIL import Image

    with _PILLOW_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
    if limit is None or pixels <= limit:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved

#: What :meth:`ImageFile.shrink_on_load` scales as it decodes.
SHRINK_ON_LOAD_FORMATS = ("JPEG", "WEBP")

#: Images with fewer bytes of samples than this are decoded whole even where
#: libvips could stream them (``benchmarks/results.md``: a batch of small
#: JPEGs).
STREAM_MIN_BYTES = 2 << 20


_SRGB_MODES = {"L": "RGB", "LA": "RGBA", "I;16": "RGB;16", "LA;16": "RGBA;16"}


def _srgb_metadata(loaded: LoadedImage) -> LoadedImage:
    """The metadata of ``loaded`` once its pixels are in sRGB (:func:`read_image`'s ``to_srgb``)."""
    from . import libvips

    if loaded.icc_profile is not None:
        return dataclasses.replace(loaded, mode=_SRGB_MODES.get(loaded.mode, loaded.mode),
                                   icc_profile=libvips.srgb_profile())
    if loaded.mode in _SRGB_MODES:  # gray without a profile: no RGB profile fits it
        return loaded
    return dataclasses.replace(loaded, icc_profile=libvips.srgb_profile())


def _in_srgb(loaded: LoadedImage) -> LoadedImage:
    """A decoded image converted from its ICC profile to sRGB.

    CMYK without a profile goes through libvips' fallback CMYK profile, as in
    vipsthumbnail.
    """
    from . import libvips

    pixels = loaded.pixels
    if loaded.mode == "CMYK":
        pixels = libvips.array_to_srgb(pixels, loaded.icc_profile, False, cmyk=True)
        loaded = dataclasses.replace(loaded, mode="RGB", icc_profile=libvips.srgb_profile())
    elif loaded.icc_profile is not None:
        pixels = libvips.array_to_srgb(pixels, loaded.icc_profile, loaded.has_alpha)
    return dataclasses.replace(_srgb_metadata(loaded), pixels=pixels)


def _plain_metadata(im: Any, fmt: str, head: bytes, scan: Any) -> LoadedImage | None:
    """The metadata of a file that libvips decodes in bands as Pillow would, else None.

    Plain: PNG, JPEG, TIFF or WebP holding L, LA, RGB or RGBA samples of 8
    bits (or 16: gray in PNG and TIFF, every mode in PNG), without a
    key-colour transparency, stored upright (EXIF orientation 1), a TIFF
    compressed losslessly.  Everything Pillow reads of such a file's
    metadata is there before its pixels.
    """
    mode = im.mode
    sixteen_bit_png = fmt == "PNG" and png.is_png16_colour(head)
    if fmt == "PNG":
        if scan.bit_depth < 8 or scan.colour_type == 3 or scan.trns is not None:
            return None
        if not (sixteen_bit_png or mode in ("L", "LA", "RGB", "RGBA", "I;16")):
            return None
        exif_block = scan.exif and exif_blocks.EXIF_PREFIX + scan.exif
        icc = scan.icc_profile
    elif fmt == "JPEG":
        if mode not in ("L", "RGB"):
            return None
        exif_block, icc = im.info.get("exif"), im.info.get("icc_profile") or None
    elif fmt == "WEBP":
        if mode not in ("RGB", "RGBA"):
            return None
        exif_block, icc = im.info.get("exif"), im.info.get("icc_profile") or None
    elif fmt == "TIFF":
        bits = _tiff_bits(im)
        if (mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B")
                or len(bits) > 1 and bits != (8,) * len(bits) and bits != (16,) * len(bits)
                or im.info.get("compression") not in ("raw", "tiff_lzw", "tiff_adobe_deflate",
                                                      "packbits")):
            return None
        exif_block, icc = None, im.info.get("icc_profile") or None
    else:
        return None
    orientation, exif_bytes = _exif_of(exif_block or None, im if fmt == "TIFF" else None)
    if orientation in range(2, 9):  # turned upright only once whole
        return None
    if sixteen_bit_png:
        channels = {2: 3, 4: 2, 6: 4}[scan.colour_type]
        pixel_mode = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels]
    elif _is_tiff16_colour(im, fmt):
        pixel_mode = mode + ";16"
    else:
        pixel_mode = "I;16" if mode.startswith("I;16") else mode
    return _loaded(np.empty((0,), np.uint8), pixel_mode, icc, exif_bytes, fmt, im.size,
                   _metadata(im, fmt, scan))


def _loaded(pixels: np.ndarray, mode: str, icc: bytes | None, exif: bytes | None, fmt: str,
            size: tuple[int, int], metadata: dict[str, Any]) -> LoadedImage:
    """The :class:`LoadedImage` of upright ``pixels``: its XMP says orientation 1 too."""
    xmp = metadata.pop("xmp")
    if xmp is not None:
        xmp = exif_blocks.patch_xmp(xmp, orientation=1)
    return LoadedImage(pixels=pixels, has_alpha=mode in ("LA", "RGBA", "LA;16", "RGBA;16"),
                       mode=mode, icc_profile=icc, exif=exif, format=fmt, size=size, xmp=xmp,
                       **metadata)


def _decode_with_pillow(im: Any, fmt: str, head: bytes, stream: IO[bytes], scan: Any,
                        keep_cmyk: bool = False) -> LoadedImage:
    """The whole image, decoded by Pillow (and :mod:`downpool.png` for 16-bit colour PNG).

    ``keep_cmyk``: CMYK samples stay CMYK, with their profile (for :func:`_in_srgb`).
    """
    width, height = im.size
    if fmt == "PNG" and png.is_png16_colour(head):
        if scan.interlace:
            raise UnsupportedImageError("interlaced 16-bit colour PNG is not supported")
        position = stream.tell()
        scan = png.scan_png(stream, keep_idat=True)
        stream.seek(position)
        pixels, mode = png.read_png16(scan)
        exif = _exif_of(scan.exif and exif_blocks.EXIF_PREFIX + scan.exif)
        icc, metadata = scan.icc_profile, _metadata(im, fmt, scan)
    else:
        _refuse_reduced_samples(im, fmt)
        try:
            im.load()  # before getexif: a PNG's eXIf chunk may follow the pixel data
        except (SyntaxError, EOFError, struct.error, zlib.error, IndexError, KeyError,
                ValueError, OSError) as exc:
            raise _decode_failure(exc, fmt) from None
        icc = im.info.get("icc_profile") or None
        exif = _exif_of(im.info.get("exif") if fmt != "TIFF" else None, im)
        metadata = _metadata(im, fmt, scan)
        pixels, mode, icc = _pixels_and_mode(im, icc, head, keep_cmyk)
    orientation, exif_bytes = exif
    pixels = _apply_orientation(pixels, orientation)
    return _loaded(pixels, mode, icc, exif_bytes, fmt, (width, height), metadata)


def _header(im: Any, fmt: str, head: bytes, streamed: bool = False) -> ImageHeader:
    """The :class:`ImageHeader` of an opened (not yet decoded) image."""
    width, height = im.size
    mode = im.mode
    keyed = "transparency" in im.info  # a palette or key colour: alpha is added
    if fmt == "PNG" and png.is_png16_colour(head):
        channels = {2: 3, 4: 2, 6: 4}[head[25]]
        # downpool.png's reader holds the decompressed rows, the unfiltered
        # rows and the samples at once: three times the samples.
        decoder = 3 * width * height * 2 * channels
        if streamed:
            decoder = _libvips_bytes(width, height, channels, 2, interlaced=head[28] == 1)
        return ImageHeader(width, height, fmt, channels, 2, channels in (2, 4), decoder, streamed)
    if mode in ("1", "L", "I;16", "I;16B", "I;16L", "I", "F"):
        channels = 2 if keyed else 1
    elif mode in ("LA", "La", "PA"):
        channels = 2
    elif mode in ("RGBA", "RGBa"):
        channels = 4
    else:  # RGB, P, CMYK, YCbCr ...
        channels = 4 if keyed else 3
    sample_bytes = 2 if mode.startswith("I") or _is_tiff16_colour(im, fmt) else 1
    if streamed:
        whole = (fmt == "PNG" and head[28] == 1) or (
            fmt == "JPEG" and ("progressive" in im.info or "progression" in im.info))
        decoder = _libvips_bytes(width, height, channels, sample_bytes, interlaced=whole)
    else:
        # Pillow holds 1 byte a pixel for 1/L/P, 2 for I;16, and 4 for every other mode.
        decoder = width * height * {"1": 1, "L": 1, "P": 1}.get(
            mode, 2 if mode.startswith("I;16") else 4)
    return ImageHeader(width, height, fmt, channels, sample_bytes, channels in (2, 4), decoder,
                       streamed)


def _libvips_bytes(width: int, height: int, channels: int, sample_bytes: int,
                   interlaced: bool) -> int:
    """What libvips holds while it decodes a file in sequential order.

    An interlaced PNG and a progressive JPEG are decoded whole before their
    first row (a JPEG as its coefficients, 2 bytes a sample); every other
    file a few strips at a time: :data:`_LIBVIPS_ROWS` rows, and at least 4 MiB.
    """
    row = width * channels * sample_bytes
    if interlaced:
        return height * width * channels * 2 if sample_bytes == 1 else height * row
    return max(4 << 20, _LIBVIPS_ROWS * row)


#: Rows that libvips keeps in its cache of a sequential read (its default
#: tile height for strip loaders, doubled for the read-ahead).
_LIBVIPS_ROWS = 512


def _signature_format(head: bytes) -> str | None:
    """The format a file's first bytes announce, whether or not Pillow could open it."""
    if head.startswith(png.SIGNATURE):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


# ISO media files by their brand: the formats read here (HEIC, HEIF, AVIF), which
# Pillow fails to identify only when they are damaged, and others people try.
_ISO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC",
               b"heis": "HEIC", b"hevm": "HEIC", b"hevs": "HEIC", b"mif1": "HEIF",
               b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF", b"crx ": "Canon CR3 raw"}
_ISO_READ = {"HEIC", "HEIF", "AVIF"}


def _unidentified(head: bytes) -> str:
    """Why Pillow could not identify a file, in a user's words."""
    supported = "PNG, JPEG, TIFF, WebP, BMP, GIF, AVIF and HEIC are"
    if not head:
        return "empty file (0 bytes)"
    known = _signature_format(head)
    if known:
        return f"corrupt or truncated {known} file: its header cannot be read"
    if head[4:8] == b"ftyp":
        name = _ISO_BRANDS.get(head[8:12])
        if name in _ISO_READ:
            return f"corrupt or truncated {name} file: its header cannot be read"
        if name:
            return f"{name} files are not supported ({supported})"
        return f"a video or other ISO media file, not an image ({supported})"
    for magic, name in ((b"%PDF", "PDF"), (b"\xff\x0a", "JPEG XL"),
                        (b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000")):
        if head.startswith(magic):
            return f"{name} files are not supported ({supported})"
    text = head.lstrip().lower()
    if text.startswith((b"<svg", b"<?xml")):
        return f"SVG and other XML files are not supported ({supported})"
    return f"not an image file, or one in a format downpool cannot read ({supported})"


def _decode_failure(exc: BaseException, fmt: str) -> OSError:
    """A decoder's error as an ``OSError`` that says what is wrong with the file."""
    if isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL):
        return exc  # the system's own error (no such file, permission denied ...)
    fmt = {"WEBP": "WebP"}.get(fmt, fmt)
    text = " ".join(str(exc).split())
    lower = text.lower()
    if isinstance(exc, OSError) and exc.errno == errno.EINVAL:
        message = f"corrupt {fmt} file: it points to data outside the file"
    elif "truncated" in lower or isinstance(exc, EOFError):
        message = f"truncated {fmt} file: the image data ends early"
    elif lower.startswith(("broken data stream", "unrecognized data stream", "decoder error",
                           "buffer overrun")):
        message = f"corrupt {fmt} file: its image data is damaged"
    elif lower.startswith(("could not create decoder", "failed to read next frame")):
        message = f"corrupt or truncated {fmt} file: the decoder cannot read it"
    elif lower.startswith("cannot load this image"):
        message = f"{fmt} file without image data"
    elif isinstance(exc, MemoryError):
        message = "out of memory while decoding"
    else:
        message = f"corrupt or truncated {fmt} file ({text or type(exc).__name__})"
    return OSError(message)


def _register_heif() -> None:
    """Let Pillow open and save HEIF/HEIC (pillow-heif: libheif with its HEVC codecs)."""
    try:
        import pillow_heif
    except ImportError:
        raise UnsupportedImageError(
            "HEIC files need pillow-heif: pip install pillow-heif (a dependency of downpool)"
        ) from None
    pillow_heif.register_heif_opener()


def _refuse_reduced_samples(im: Any, fmt: str) -> None:
    """Refuse a TIFF or HEIF whose samples above 8 bits Pillow would reduce to 8 bits.

    Among the formats read here only TIFF and HEIF hold them (16-bit colour PNG
    has its own reader); a 16-bit BMP packs a whole pixel in 16 bits (RGB565),
    at most 6 bits a channel, which Pillow decodes without loss.
    """
    if fmt == "HEIF" and (im.info.get("bit_depth") or 8) > 8:
        raise UnsupportedImageError(
            f"{im.info['bit_depth']}-bit HEIF: pillow-heif decodes it for Pillow reduced to 8 "
            "bits per channel, and downpool does not drop bits silently"
        )
    if fmt != "TIFF":
        return
    bits = _tiff_bits(im)
    if len(bits) > 1 and max(bits) > 8:
        raise UnsupportedImageError(
            f"{max(bits)}-bit TIFF with {len(bits)} channels, stored "
            f"{im.info.get('compression') or 'compressed'}, turned or in {im.mode}: Pillow can "
            "only decode it reduced to 8 bits per channel, and downpool does not drop bits "
            "silently; 16-bit RGB and RGBA TIFF stored upright, raw, LZW, Deflate or "
            "PackBits are supported"
        )


def _tiff_bits(im: Any) -> tuple[int, ...]:
    bits = im.tag_v2.get(258, (1,))
    return bits if isinstance(bits, tuple) else (bits,)


def _is_tiff16_colour(im: Any, fmt: str) -> bool:
    """A 16-bit RGB or RGBA TIFF: libvips decodes it (Pillow would reduce it to 8 bits)."""
    return fmt == "TIFF" and im.mode in ("RGB", "RGBA") and _tiff_bits(im)[0] == 16


def _png_key_alpha(pixels: np.ndarray, key: Any) -> np.ndarray:
    """The alpha channel that a PNG tRNS key colour means: 0 where a pixel is the key."""
    top = np.iinfo(pixels.dtype).max
    matches = pixels == key if pixels.ndim == 2 else (pixels == np.asarray(key)).all(axis=2)
    alpha = np.where(matches, 0, top).astype(pixels.dtype)
    return np.dstack([pixels, alpha])


def _pixels_and_mode(im: Any, icc: bytes | None, head: bytes,
                     keep_cmyk: bool = False) -> tuple[np.ndarray, str, bytes | None]:
    """The image's samples as an array, the mode to write them back as, and the ICC profile."""
    mode = im.mode
    if mode == "CMYK" and keep_cmyk:
        return np.asarray(im), mode, icc
    key = im.info.get("transparency") if im.format == "PNG" else None
    if mode.startswith("I;16"):
        values = np.asarray(im).astype(np.uint16, copy=False)
        if key is not None:
            return _png_key_alpha(values, key), "LA;16", icc
        return values, "I;16", icc
    if mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            kind = "signed" if values.min() < 0 else "32-bit"
            raise UnsupportedImageError(
                f"{kind} integer samples outside 0..65535 are not supported "
                f"(unsigned 8- and 16-bit samples are)")
        return values.astype(np.uint16), "I;16", icc
    if mode == "F":
        raise UnsupportedImageError("32-bit float samples are not supported (8 and 16 bits are)")
    if key is not None and mode in ("1", "L", "RGB"):
        values = np.asarray(im.convert("L") if mode == "1" else im)
        depth = head[24] if len(head) > 24 else 8
        if mode == "L" and depth < 8:
            key = key * (255 // (2**depth - 1))  # Pillow scales 1/2/4-bit gray up to 0..255
        return _png_key_alpha(values, key), "LA" if mode != "RGB" else "RGBA", icc
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im), mode, icc
    if mode == "1":
        return np.asarray(im.convert("L")), "L", icc
    if mode in ("P", "PA"):
        target = "RGBA" if (mode == "PA" or im.has_transparency_data) else "RGB"
        return np.asarray(im.convert(target)), target, icc
    if mode in ("La", "RGBa"):  # premultiplied in memory: undo it
        target = mode[:-1] + "A"
        return np.asarray(im.convert(target)), target, icc
    if mode == "RGBX":
        return np.asarray(im.convert("RGB")), "RGB", icc
    # CMYK, YCbCr, LAB, HSV: the profile describes the old colour space, so
    # it cannot be carried over to the RGB samples.
    return np.asarray(im.convert("RGB")), "RGB", None


def _apply_orientation(pixels: np.ndarray, orientation: Any) -> np.ndarray:
    """Turn ``pixels`` upright for an EXIF orientation (1-8); others are left as they are."""
    # EXIF orientation says how the stored rows must be turned to display upright:
    # 6 means "rotate 90 degrees clockwise", which is np.rot90 with k=-1.
    turn = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


# --- metadata -------------------------------------------------------------------------

# IFD0 tags of a TIFF that describe the picture rather than the file's
# layout (which Pillow writes afresh): only these travel as EXIF, and only
# these of an EXIF block go into a TIFF's first IFD.
_TIFF_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0112, 0x0131, 0x0132, 0x013B, 0x8298)
_SUB_IFDS = (0x8769, 0x8825)  # Exif, GPS


def _exif_of(block: bytes | None, im: Any = None) -> tuple[int, bytes | None]:
    """The orientation and the upright EXIF block, from a raw block or a TIFF's tags."""
    from PIL import Image

    if block:
        parsed = Image.Exif()
        try:
            parsed.load(block)
        except Exception:  # noqa: BLE001 - Pillow has warned; patching needs no parse
            pass
        orientation = parsed.get(_EXIF_ORIENTATION, 1)
        patched = exif_blocks.patch_exif(block, orientation=1)
        if patched is None and orientation == 1:
            patched = block if block.startswith(exif_blocks.EXIF_PREFIX) else exif_blocks.EXIF_PREFIX + block
        if patched is None:
            patched = _reencoded(parsed)
        return orientation, patched
    if im is None:
        return 1, None
    tags = im.getexif()
    orientation = tags.get(_EXIF_ORIENTATION, 1)
    if im.format == "TIFF":
        tags = _tiff_descriptive_tags(tags)
    return orientation, _reencoded(tags) if len(tags) else None


def _reencoded(exif: Any) -> bytes | None:
    """EXIF tags encoded again, with orientation 1; None (and a warning) if they will not encode."""
    try:
        exif[_EXIF_ORIENTATION] = 1
        return exif.tobytes()
    except Exception as exc:  # noqa: BLE001 - odd tags must not cost the image
        warnings.warn(f"EXIF metadata dropped: it cannot be re-encoded ({type(exc).__name__}: "
                      f"{exc})", MetadataWarning, stacklevel=2)
        return None


def _tiff_descriptive_tags(tiff_tags: Any) -> Any:
    """The EXIF-worthy part of a TIFF's tags (``Image.getexif()`` of a TIFF is its whole IFD0)."""
    from PIL import Image

    exif = Image.Exif()
    try:
        for tag in _TIFF_DESCRIPTIVE_TAGS:
            if tag in tiff_tags:
                exif[tag] = tiff_tags[tag]
        for tag in _SUB_IFDS:
            entries = tiff_tags.get_ifd(tag)
            if entries:
                exif.get_ifd(tag).update(entries)
    except Exception:  # noqa: BLE001 - metadata that will not parse is not worth the image
        pass
    return exif


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) or None
    if isinstance(value, tuple) and len(value) == 1:
        return _as_bytes(value[0])
    return None


def _stated_dpi(im: Any, fmt: str) -> tuple[float, float] | None:
    """The resolution the file itself states, in pixels per inch, or None.

    Pillow's ``info["dpi"]`` is not always stated: it is 72 for a JPEG whose
    JFIF header gives only an aspect ratio, and 1 for a TIFF without
    resolution tags.  Those are not carried.
    """
    if fmt == "JPEG" and im.info.get("jfif_unit") not in (1, 2):
        return None
    if fmt == "TIFF" and not (282 in im.tag_v2 and 283 in im.tag_v2
                              and im.tag_v2.get(296, 2) in (2, 3)):
        return None
    given = im.info.get("dpi")
    try:
        if given is not None and len(given) == 2 and all(float(v) > 0 for v in given):
            return float(given[0]), float(given[1])
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    return None


def _metadata(im: Any, fmt: str, scan: Any) -> dict[str, Any]:
    """XMP, IPTC, resolution, PNG chunks and TIFF compression of an opened image."""
    xmp = scan.xmp if scan is not None else _as_bytes(im.info.get("xmp"))
    iptc = None
    if fmt == "JPEG":
        iptc = exif_blocks.iptc_from_photoshop(im.info.get("photoshop"))
    elif fmt == "TIFF":
        iptc = _as_bytes(im.tag_v2.get(_TIFF_IPTC)) if im.tag_v2.tagtype.get(_TIFF_IPTC) in (1, 7) else None
    return {
        "xmp": xmp, "iptc": iptc, "dpi": _stated_dpi(im, fmt),
        "png_chunks": tuple(scan.carried) if scan is not None else (),
        "compression": im.info.get("compression") if fmt == "TIFF" else None,
    }


# --- writing --------------------------------------------------------------------------


def _to_pillow(pixels: np.ndarray, fmt: str) -> Any:
    """A Pillow image of ``pixels`` that ``fmt`` can store, or ``UnsupportedImageError``."""
    from PIL import Image

    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"pixels must be uint8 or uint16, got {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.ndim not in (2, 3) or channels not in (1, 2, 3, 4):
        raise ValueError(f"pixels must be (H, W) or (H, W, C) with C in 1..4, got {pixels.shape}")
    if channels in (2, 4) and fmt not in _ALPHA_FORMATS:
        raise UnsupportedImageError(
            f"{fmt} cannot store the alpha channel; choose --format png, webp or tiff"
        )
    if pixels.ndim == 3 and channels == 1:
        pixels = pixels[:, :, 0]
    if pixels.dtype == np.uint16:
        if channels == 1 and fmt in _SIXTEEN_BIT_FORMATS:
            return Image.fromarray(np.ascontiguousarray(pixels))  # mode I;16
        # The chosen format holds 8 bits: round to nearest (65535 / 255 = 257).
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    return Image.frombuffer(mode, (pixels.shape[1], pixels.shape[0]),
                            np.ascontiguousarray(pixels), "raw", mode, 0, 1)


def _dropped(what: str, why: str) -> None:
    warnings.warn(f"{what} not written: {why}", MetadataWarning, stacklevel=3)


@dataclasses.dataclass
class _Metadata:
    """What of ``like`` goes into an output of one format, already adjusted to the output."""

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None
    dpi: tuple[float, float] | None = None
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()


def _metadata_for(like: LoadedImage | None, fmt: str, strip: bool, width: int,
                  height: int) -> _Metadata:
    if like is None or strip:
        return _Metadata()
    chosen = _Metadata(dpi=like.dpi if fmt in _DPI_FORMATS else None)
    if fmt not in _METADATA_FORMATS:
        return chosen
    chosen.icc = like.icc_profile
    if like.exif:
        chosen.exif = exif_blocks.patch_exif(like.exif, pixel_size=(width, height)) or like.exif
    if like.xmp:
        chosen.xmp = exif_blocks.patch_xmp(like.xmp, pixel_size=(width, height))
    if fmt in ("JPEG", "TIFF"):
        chosen.iptc = like.iptc
    elif like.iptc:
        _dropped("IPTC metadata", f"{fmt} has no place for it")
    if fmt == "PNG":
        chosen.png_chunks = like.png_chunks
    return chosen


def _pnginfo(meta: _Metadata) -> Any:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for kind, body in meta.png_chunks:
        if not (meta.icc and kind == b"sRGB"):  # an ICC profile and sRGB exclude each other
            info.add(kind, body)
    if meta.xmp:
        info.add(b"iTXt", png.itxt_chunk(png.XMP_KEYWORD, meta.xmp))
    return info


def _tiff_compression(like: LoadedImage | None, pixels: np.ndarray) -> str:
    """The input TIFF's compression where Pillow can write it for these samples, else Deflate."""
    wanted = like.compression if like is not None and like.format == "TIFF" else None
    wanted = {"tiff_deflate": "tiff_adobe_deflate"}.get(wanted, wanted)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if wanted == "jpeg" and not (pixels.dtype == np.uint8 and channels in (1, 3)):
        wanted = None  # libtiff's JPEG takes 8-bit gray and RGB only
    return wanted if wanted in _TIFF_KEPT_COMPRESSIONS else TIFF_DEFAULT_COMPRESSION


def _tiff_tags(meta: _Metadata) -> tuple[Any, dict[int, dict]]:
    """The first-IFD tags for a TIFF output, and its Exif/GPS sub-IFDs."""
    from PIL import Image, TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    sub_ifds: dict[int, dict] = {}
    if meta.exif:
        exif = Image.Exif()
        try:
            exif.load(meta.exif)
            for tag in _TIFF_DESCRIPTIVE_TAGS:
                if tag in exif:
                    tags[tag] = exif[tag]
            tags[_EXIF_ORIENTATION] = 1
            sub_ifds = {tag: dict(exif.get_ifd(tag)) for tag in _SUB_IFDS if exif.get_ifd(tag)}
        except Exception as exc:  # noqa: BLE001
            _dropped("EXIF metadata", f"it cannot be read back ({exc})")
    if meta.xmp:
        tags[_TIFF_XMP] = meta.xmp
        tags.tagtype[_TIFF_XMP] = 1
    if meta.iptc:
        tags[_TIFF_IPTC] = meta.iptc
        tags.tagtype[_TIFF_IPTC] = 7
    return tags, sub_ifds


def _save_tiff(out: IO[bytes], pixels: np.ndarray, meta: _Metadata, compression: str,
               quality: int | None) -> None:
    """Write the TIFF file through libvips, then add what only its first IFD can hold."""
    from . import libvips

    tags, sub_ifds = _tiff_tags(meta)
    xmp = tags.pop(_TIFF_XMP) if _TIFF_XMP in tags else None
    big = libvips.save_tiff(out, pixels, compression=compression, icc=meta.icc, xmp=xmp,
                            dpi=meta.dpi,
                            quality=_DEFAULT_QUALITY if quality is None else int(quality))
    if not (len(tags) or sub_ifds):
        return
    if big:
        _dropped("EXIF and IPTC metadata", "downpool does not add them to a BigTIFF file")
        return
    try:
        exif_blocks.extend_tiff_first_ifd(out, tags, sub_ifds)
    except (TypeError, ValueError, KeyError, struct.error, RuntimeError) as exc:
        # A tag that will not encode: the picture matters more than its metadata.
        _dropped("EXIF and IPTC metadata", f"they cannot be encoded in TIFF ({exc})")


def encode_image(
    pixels: np.ndarray,
    format: str,
    like: LoadedImage | None = None,
    quality: int | None = None,
    strip: bool = False,
) -> bytes:
    """The bytes of an image file of ``pixels`` in ``format``, with the metadata of ``like``.

    See :func:`write_image` for the parameters.  Metadata that the format has
    no place for, or that will not encode, is left out with a
    :class:`MetadataWarning`.
    """
    fmt = _checked_format(pixels, format)
    buffer = io.BytesIO()
    _encode_into(buffer, pixels, fmt, like, quality, strip)
    return buffer.getvalue()


def _checked_format(pixels: np.ndarray, format: str) -> str:
    """The format's name, once it is known that ``pixels`` can be written in it."""
    fmt = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}.get(format.upper(), format.upper())
    if fmt not in FORMATS:
        raise UnsupportedImageError(f"cannot write format {fmt or '(none given)'!r}: "
                                    f"choose one of {', '.join(FORMATS)}")
    return fmt


def _encode_into(buffer: IO[bytes], pixels: np.ndarray, fmt: str, like: LoadedImage | None,
                 quality: int | None, strip: bool) -> None:
    """Write the file of ``pixels`` in the checked format ``fmt`` into ``buffer``."""
    sixteen_bit_colour = pixels.dtype == np.uint16 and pixels.ndim == 3 and pixels.shape[2] > 1
    height, width = pixels.shape[:2]
    meta = _metadata_for(like, fmt, strip, width, height)
    if sixteen_bit_colour and fmt == "PNG":
        # Pillow holds 16-bit samples only in grayscale: downpool.png writes these.
        chunks = list(meta.png_chunks)
        if meta.xmp:
            chunks.append((b"iTXt", png.itxt_chunk(png.XMP_KEYWORD, meta.xmp)))
        if meta.dpi:
            chunks.append((b"pHYs", struct.pack(">IIB", *(round(d / 0.0254) for d in meta.dpi), 1)))
        png.write_png16(buffer, pixels, meta.icc, meta.exif, chunks)
        return
    if fmt == "TIFF":
        _save_tiff(buffer, pixels, meta, _tiff_compression(like, pixels), quality)
        return
    image = _to_pillow(pixels, fmt)
    if fmt == "HEIF":
        _register_heif()
    options: dict[str, Any] = {}
    if fmt in _QUALITY_FORMATS:
        options["quality"] = _DEFAULT_QUALITY if quality is None else int(quality)
    if fmt in ("AVIF", "HEIF"):
        # Full chroma from quality 90 up, as libvips' heifsave does ("auto"):
        # halved chroma is what costs most at high quality.
        full = options["quality"] >= 90
        if fmt == "AVIF":
            options["subsampling"] = "4:4:4" if full else "4:2:0"
        else:
            options["chroma"] = 444 if full else 420
    if meta.icc:
        options["icc_profile"] = meta.icc
    if meta.dpi:
        options["dpi"] = meta.dpi
    if meta.exif:
        if fmt == "JPEG" and len(meta.exif) > _JPEG_SEGMENT_BYTES:
            _dropped("EXIF metadata", f"its {len(meta.exif):,} bytes do not fit in a JPEG segment")
        else:
            options["exif"] = meta.exif
    if meta.xmp:
        if fmt == "JPEG" and len(meta.xmp) > _JPEG_XMP_BYTES:
            _dropped("XMP metadata", f"its {len(meta.xmp):,} bytes do not fit in a JPEG segment")
        elif fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
            options["xmp"] = meta.xmp
    if fmt == "JPEG" and meta.iptc:
        try:
            options["extra"] = exif_blocks.photoshop_app13(meta.iptc)
        except ValueError as exc:
            _dropped("IPTC metadata", str(exc))
    if fmt == "PNG" and (meta.png_chunks or meta.xmp):
        options["pnginfo"] = _pnginfo(meta)
    image.save(buffer, format=fmt, **options)


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    like: LoadedImage | None = None,
    format: str | None = None,
    quality: int | None = None,
    strip: bool = False,
    replace: bool = True,
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Write ``pixels`` to ``path`` atomically, with the metadata of ``like``.

    The image is encoded into a temporary file in the target folder,
    flushed to disk and renamed to ``path``; on any failure
    (or Ctrl-C) the temporary file is removed, so ``path`` is either
    untouched or complete.  A FIFO or character device at ``path`` is
    written into; a symbolic link is written through (its target replaced,
    the link kept); a folder, block device or socket is refused
    (:func:`downpool.files.put_file`).

    Parameters
    ----------
    path : str or path-like
        The file to write.  Its folder must exist.
    pixels : ndarray
        ``uint8`` or ``uint16``, (H, W) or (H, W, C) with C in 1..4; C = 2 and
        4 have alpha last.  16 bits are kept in PNG and TIFF (every mode);
        JPEG, WebP, BMP and GIF hold 8 bits, so they get the samples rounded
        to 8 bits.
    like : LoadedImage, optional
        The source image: its metadata are written (unless ``strip``) where
        the format holds them (README, "What is kept"), its format is the
        default, and for TIFF its compression is kept where Pillow can write
        it (else Deflate, lossless).
    format : str, optional
        ``"PNG"``, ``"JPEG"``, ``"WEBP"``, ``"TIFF"``, ``"BMP"`` or ``"GIF"``
        (case-insensitive).  Default: the format of ``like``, else the one
        the extension of ``path`` implies.
    quality : int, optional
        1-100, for JPEG, WebP and JPEG-compressed TIFF (default 90); ignored
        by other formats.
    strip : bool
        Write no metadata (no ICC profile, EXIF, XMP, IPTC, resolution or PNG chunks).
    replace : bool
        Replace an existing regular file at ``path``.  If False and one
        exists (even one that appeared while writing), ``FileExistsError`` is
        raised and nothing is replaced.
    before_rename : callable, optional
        Called once the file is encoded, before it is put in place; what it
        raises abandons the write (the temporary file is removed).

    Raises
    ------
    OSError
        The folder is missing or not writable, the disk is full, ``path``
        exists and ``replace`` is False (``FileExistsError``), or ``path`` is
        a folder, device or socket (:class:`downpool.files.OutputRefused`).
    UnsupportedImageError
        A ``ValueError``: alpha for a format without alpha (JPEG, BMP), or an
        unknown format.
    """
    path = os.fspath(path)
    fmt = format or (like.format if like is not None else None) or format_for_extension(path) or ""
    fmt = _checked_format(pixels, fmt)
    def write(out: IO[bytes]) -> None:
        _encode_into(out, pixels, fmt, like, quality, strip)
        if before_rename is not None:
            before_rename()

    put_file(path, write, replace=replace)
