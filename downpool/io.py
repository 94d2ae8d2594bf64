"""Reading and writing image files: the only module that knows about Pillow.

Pixels go in and out as NumPy arrays; what a file carries besides pixels
(ICC profile, EXIF, format) travels beside them in a :class:`LoadedImage`, so
that image operations never see a file and file code never pools anything.

Decisions (SPEC section 4):

- 8- and 16-bit samples are kept: ``uint8`` or ``uint16`` arrays.  Pillow 13
  holds 16-bit *grayscale* (mode ``I;16``) but decodes 16-bit RGB, RGBA and
  gray+alpha PNG only reduced to 8 bits, and cannot write them: this module
  reads and writes those PNGs itself (chunks, zlib, the five row filters).
  16-bit colour in other formats (TIFF) is refused with
  :class:`UnsupportedImageError` rather than silently reduced to 8 bits.
- Modes L, LA, RGB and RGBA are kept.  Palette images become RGB, or RGBA
  where they have transparency; bilevel images become L; CMYK, YCbCr, LAB
  and HSV become RGB, and their ICC profile (which describes the old colour
  space) is dropped.
- The EXIF orientation is applied on load and the EXIF data carries
  orientation 1 afterwards.
- Writes are atomic: a temporary file in the target folder, renamed over the
  target only once it is complete.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LoadedImage",
    "UnsupportedImageError",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "FORMAT_EXTENSIONS",
    "EXTENSION_FORMATS",
    "IMAGE_EXTENSIONS",
    "format_for_extension",
    "read_image",
    "write_image",
]

DEFAULT_MAX_PIXELS = 1_000_000_000

#: Output formats that can be asked for, by Pillow name.
FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")

#: The extension a file of each format gets when the format changes.
FORMAT_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif",
                     "BMP": ".bmp", "GIF": ".gif"}

#: The format each image extension implies (lower case, with the dot).
EXTENSION_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG",
                     ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
                     ".gif": "GIF"}

#: Extensions picked up when walking a folder; files named on the command line
#: are read whatever their name.
IMAGE_EXTENSIONS = frozenset(EXTENSION_FORMATS)

# Formats whose files hold an alpha channel (GIF only one bit of it, which
# Pillow's quantiser manages).
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "GIF"}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
_METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_EXIF_PIXEL_X, _EXIF_PIXEL_Y = 0xA002, 0xA003

_DEFAULT_QUALITY = 90


class UnsupportedImageError(ValueError):
    """A file that Pillow decodes, but not in a form downpool can keep."""


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
        ``"RGBA"``, ``"I;16"`` (16-bit grayscale), or, for 16-bit colour PNG
        (no Pillow mode holds it), ``"LA;16"``, ``"RGB;16"``, ``"RGBA;16"``.
    icc_profile : bytes or None
        The embedded ICC profile, as found in the file.
    exif : bytes or None
        The EXIF block with its orientation set to 1 (the pixels are upright).
    format : str
        Pillow's name of the file format: ``"PNG"``, ``"JPEG"``, ``"TIFF"``,
        ``"WEBP"``, ``"BMP"``, ``"GIF"``.
    size : (int, int)
        (width, height) of the file as stored, before the orientation was applied.
    """

    pixels: np.ndarray
    has_alpha: bool
    mode: str
    icc_profile: bytes | None
    exif: bytes | None
    format: str
    size: tuple[int, int] = (0, 0)

    @property
    def bits(self) -> int:
        """Bits per sample: 8 or 16."""
        return 16 if self.pixels.dtype == np.uint16 else 8


def format_for_extension(path: str | os.PathLike) -> str | None:
    """The Pillow format name that a file name's extension implies, or None."""
    return EXTENSION_FORMATS.get(Path(path).suffix.lower())


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file into a NumPy array, keeping its bit depth and metadata.

    Parameters
    ----------
    path : str or path-like
        A PNG, JPEG, TIFF, WebP, BMP or GIF file (GIF: the first frame).
    max_pixels : int or None
        Refuse images with more pixels than this (width x height), before
        decoding them.  This replaces Pillow's decompression-bomb limit.
        None means no limit.

    Returns
    -------
    LoadedImage
        ``pixels`` is ``uint8`` or ``uint16``, (H, W) or (H, W, C), upright.

    Raises
    ------
    OSError
        The file is missing, unreadable, truncated or corrupt, or not an
        image (``PIL.UnidentifiedImageError`` is an ``OSError``).
    UnsupportedImageError
        A ``ValueError``: an image above ``max_pixels``, a format other than
        the six above, or samples that cannot be kept (16-bit colour other
        than PNG, which Pillow reduces to 8 bits; interlaced 16-bit colour
        PNG; 32-bit integer or float samples).

    Examples
    --------
    >>> img = read_image("photo.jpg")                       # doctest: +SKIP
    >>> img.pixels.shape, img.pixels.dtype, img.mode        # doctest: +SKIP
    ((3000, 4000, 3), dtype('uint8'), 'RGB')
    """
    from PIL import Image

    path = os.fspath(path)
    # Pillow's limit is process-wide and raises only far above its warning
    # level; ours is per call and checked on the header, before decoding.
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
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
                    f"(PNG, JPEG, TIFF, WebP, BMP and GIF are)"
                )
            if fmt == "PNG" and _is_png16_colour(im):
                im.close()
                return _read_png16(path)
            _refuse_reduced_samples(im)
            im.load()  # before getexif: a PNG's eXIf chunk may follow the pixel data
            icc = im.info.get("icc_profile") or None
            exif = im.getexif()
            orientation = exif.get(_EXIF_ORIENTATION, 1)
            pixels, mode, icc = _pixels_and_mode(im, icc)
    except (SyntaxError, EOFError, struct.error, zlib.error, IndexError, KeyError) as exc:
        # Pillow's plugins raise these for damaged files; callers expect OSError.
        raise OSError(f"corrupt or truncated image ({exc or type(exc).__name__})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit

    pixels = _apply_orientation(pixels, orientation)
    if fmt == "TIFF":
        exif = _tiff_descriptive_tags(exif)
    exif_bytes = _upright_exif(exif) if len(exif) else None
    return LoadedImage(
        pixels=pixels, has_alpha=mode in ("LA", "RGBA"), mode=mode, icc_profile=icc,
        exif=exif_bytes, format=fmt, size=(width, height),
    )


def _refuse_reduced_samples(im: Any) -> None:
    """Refuse a file whose 16-bit colour samples Pillow would reduce to 8 bits."""
    if im.mode.startswith("I;16"):
        return
    rawmodes = []
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        # The decoder arguments start with the raw mode for most plugins (GIF: an int).
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
        if isinstance(raw, str):
            rawmodes.append(raw)
    if any(";16" in raw for raw in rawmodes):
        raise UnsupportedImageError(
            f"16-bit {im.format} in colour (read as {im.mode}): Pillow can only decode it "
            "reduced to 8 bits per channel, and downpool does not drop bits silently; "
            "16-bit grayscale is supported"
        )


def _pixels_and_mode(im: Any, icc: bytes | None) -> tuple[np.ndarray, str, bytes | None]:
    """The image's samples as an array, the mode to write them back as, and the ICC profile."""
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16, copy=False), "I;16", icc
    if mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnsupportedImageError("32-bit integer samples outside 0..65535 are not supported")
        return values.astype(np.uint16), "I;16", icc
    if mode == "F":
        raise UnsupportedImageError("32-bit float samples are not supported (8 and 16 bits are)")
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


# IFD0 tags of a TIFF that describe the picture rather than the file's
# layout (which Pillow writes afresh): only these travel as EXIF.
_TIFF_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0112, 0x0131, 0x0132, 0x013B, 0x8298)
_SUB_IFDS = (0x8769, 0x8825)  # Exif, GPS


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


def _upright_exif(exif: Any) -> bytes | None:
    """The EXIF block with orientation 1; None if Pillow cannot re-encode it."""
    try:
        exif[_EXIF_ORIENTATION] = 1
        return exif.tobytes()
    except Exception:  # noqa: BLE001 - odd maker notes must not cost the image
        return None


def _exif_for_output(exif: bytes, width: int, height: int) -> bytes:
    """``exif`` with the pixel dimensions of the Exif IFD, where present, set to the output's."""
    from PIL import Image

    try:
        data = Image.Exif()
        data.load(exif)
        data[_EXIF_ORIENTATION] = 1
        sub = data.get_ifd(_EXIF_IFD)
        if _EXIF_PIXEL_X in sub or _EXIF_PIXEL_Y in sub:
            sub[_EXIF_PIXEL_X] = width
            sub[_EXIF_PIXEL_Y] = height
        return data.tobytes()
    except Exception:  # noqa: BLE001 - keep the block as read rather than lose it
        return exif


# --- 16-bit colour PNG ----------------------------------------------------------------
#
# Pillow 13 decodes 16-bit RGB, RGBA and gray+alpha PNG only reduced to 8 bits
# per channel, and cannot write them.  PNG is simple enough to do here:
# chunks, zlib, and the five row filters of the PNG specification (section 9).

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG16_CHANNELS = {4: 2, 2: 3, 6: 4}  # colour type -> channels (gray+alpha, RGB, RGBA)
_PNG16_MODES = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}
_IDAT_CHUNK_BYTES = 1 << 20


def _is_png16_colour(im: Any) -> bool:
    """Whether a PNG opened by Pillow has 16-bit samples and more than one channel."""
    fp = getattr(im, "fp", None)
    if fp is None:
        return False
    position = fp.tell()
    try:
        fp.seek(0)
        head = fp.read(29)
    finally:
        fp.seek(position)
    return (len(head) == 29 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in _PNG16_CHANNELS)


def _png_chunks(data: bytes) -> Any:
    """(type, body) of each chunk of a PNG file, checksums verified, up to IEND."""
    position = len(_PNG_SIGNATURE)
    while True:
        if position + 8 > len(data):
            raise OSError("truncated PNG file (it ends before its IEND chunk)")
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        crc = data[position + 8 + length:position + 12 + length]
        if len(body) < length or len(crc) < 4:
            raise OSError(f"truncated PNG file (in its {kind.decode('latin-1')} chunk)")
        if zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise OSError(f"corrupt PNG file (bad checksum of its {kind.decode('latin-1')} chunk)")
        yield kind, body
        if kind == b"IEND":
            return
        position += 12 + length


def _read_png16(path: str) -> LoadedImage:
    """Read a 16-bit gray+alpha, RGB or RGBA PNG with its ICC profile and EXIF."""
    from PIL import Image

    data = Path(path).read_bytes()
    idat, icc, exif_block, transparent = [], None, None, None
    width = height = channels = 0
    for kind, body in _png_chunks(data):
        if kind == b"IHDR":
            width, height, _, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            channels = _PNG16_CHANNELS[colour_type]
            if interlace:
                raise UnsupportedImageError("interlaced 16-bit colour PNG is not supported")
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"iCCP":
            name_end = body.find(b"\0")
            if name_end < 0:
                raise OSError("corrupt PNG file (bad iCCP chunk)")
            icc = zlib.decompress(body[name_end + 2:])
        elif kind == b"eXIf":
            exif_block = body
        elif kind == b"tRNS" and channels == 3 and len(body) == 6:
            transparent = np.frombuffer(body, ">u2")
    bytes_per_pixel = 2 * channels
    stride = width * bytes_per_pixel
    raw = zlib.decompress(b"".join(idat))
    if len(raw) != height * (stride + 1):
        raise OSError(f"corrupt PNG file (pixel data is {len(raw)} bytes, "
                      f"expected {height * (stride + 1)})")
    rows = _unfilter_png(np.frombuffer(raw, np.uint8), height, stride, bytes_per_pixel)
    pixels = rows.view(">u2").reshape(height, width, channels).astype(np.uint16)
    if transparent is not None:  # one colour marked transparent: make it real alpha
        alpha = np.where((pixels == transparent).all(axis=2), 0, 65535).astype(np.uint16)
        pixels, channels = np.dstack([pixels, alpha]), 4
    exif = Image.Exif()
    if exif_block:
        try:
            exif.load(exif_block)
        except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels
            exif = Image.Exif()
    pixels = _apply_orientation(pixels, exif.get(_EXIF_ORIENTATION, 1))
    return LoadedImage(
        pixels=pixels, has_alpha=channels in (2, 4), mode=_PNG16_MODES[channels], icc_profile=icc,
        exif=_upright_exif(exif) if len(exif) else None, format="PNG", size=(width, height),
    )


def _unfilter_rows(raw, out, bytes_per_pixel):  # pragma: no cover - compiled by Numba
    """Undo the PNG row filters of ``raw`` into ``out``; the index of a bad row, or -1."""
    height, stride = out.shape
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        if kind > 4:
            return y
        for x in range(stride):
            value = np.int32(raw[start + 1 + x])
            left = np.int32(out[y, x - bytes_per_pixel]) if x >= bytes_per_pixel else np.int32(0)
            up = np.int32(out[y - 1, x]) if y > 0 else np.int32(0)
            if kind == 1:
                value += left
            elif kind == 2:
                value += up
            elif kind == 3:
                value += (left + up) >> 1
            elif kind == 4:
                corner = (np.int32(out[y - 1, x - bytes_per_pixel])
                          if (y > 0 and x >= bytes_per_pixel) else np.int32(0))
                estimate = left + up - corner
                to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                if to_left <= to_up and to_left <= to_corner:
                    value += left
                elif to_up <= to_corner:
                    value += up
                else:
                    value += corner
            out[y, x] = value & 0xFF
    return -1


_compiled_unfilter = None


def _unfilter_png(raw: np.ndarray, height: int, stride: int, bytes_per_pixel: int) -> np.ndarray:
    """The filtered rows of a PNG's decompressed data, unfiltered: uint8 (height, stride)."""
    global _compiled_unfilter
    if _compiled_unfilter is None:
        # Numba only here, on the first 16-bit colour PNG: Average and Paeth rows
        # depend on the byte just decoded, which NumPy cannot vectorise.
        import numba

        _compiled_unfilter = numba.njit(cache=True, nogil=True)(_unfilter_rows)
    out = np.empty((height, stride), np.uint8)
    bad_row = _compiled_unfilter(raw, out, bytes_per_pixel)
    if bad_row >= 0:
        raise OSError(f"corrupt PNG file (unknown filter type in row {bad_row})")
    return out


def _write_png16(stream: Any, pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    """Write 16-bit gray+alpha, RGB or RGBA ``pixels`` as PNG to ``stream``."""
    height, width, channels = pixels.shape
    colour_type = {2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(height, -1)
    # The "Up" filter on every row but the first (byte-wise difference from the
    # row above, modulo 256): vectorised, and it compresses photos well.
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[0, 0] = 0
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]

    def chunk(kind: bytes, body: bytes) -> None:
        stream.write(struct.pack(">I", len(body)) + kind + body
                     + struct.pack(">I", zlib.crc32(kind + body)))

    stream.write(_PNG_SIGNATURE)
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    if icc:
        chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    if exif:
        chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    compressed = zlib.compress(filtered.tobytes(), 6)
    for start in range(0, max(len(compressed), 1), _IDAT_CHUNK_BYTES):
        chunk(b"IDAT", compressed[start:start + _IDAT_CHUNK_BYTES])
    chunk(b"IEND", b"")


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


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _rename_no_clobber(source: str, target: str) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (``FileExistsError``)."""
    try:
        # link() fails if the target exists, so no other writer is clobbered.
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links: check, then rename (a small race).
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "File exists", target) from None
        os.replace(source, target)
        return
    os.unlink(source)


# As tempfile.mkstemp opens its files: new, private, not through a symlink.
_TEMP_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    like: LoadedImage | None = None,
    format: str | None = None,
    quality: int | None = None,
    strip: bool = False,
    replace: bool = True,
) -> None:
    """Write ``pixels`` to ``path`` atomically, with the metadata of ``like``.

    The image is written to a temporary file in the target folder, flushed
    to disk and renamed to ``path``; on any failure (or Ctrl-C) the temporary
    file is removed, so ``path`` is either untouched or complete.

    Parameters
    ----------
    path : str or path-like
        The file to write.  Its folder must exist.
    pixels : ndarray
        ``uint8`` or ``uint16``, (H, W) or (H, W, C) with C in 1..4; C = 2 and
        4 have alpha last.  16 bits are kept in PNG (all modes) and TIFF
        (grayscale; 16-bit colour TIFF is an ``UnsupportedImageError``);
        JPEG, WebP, BMP and GIF hold 8 bits, so they get the samples rounded
        to 8 bits.
    like : LoadedImage, optional
        The source image: its ICC profile and EXIF are written (unless
        ``strip``), and its format is the default.
    format : str, optional
        ``"PNG"``, ``"JPEG"``, ``"WEBP"``, ``"TIFF"``, ``"BMP"`` or ``"GIF"``
        (case-insensitive).  Default: the format of ``like``, else the one
        the extension of ``path`` implies.
    quality : int, optional
        1-100, for JPEG and WebP (default 90); ignored by other formats.
    strip : bool
        Write no ICC profile and no EXIF.
    replace : bool
        Replace an existing ``path``.  If False and ``path`` exists (even if it
        appeared while writing), ``FileExistsError`` is raised and nothing is
        replaced.

    Raises
    ------
    OSError
        The folder is missing or not writable, the disk is full, or ``path``
        exists and ``replace`` is False (``FileExistsError``).
    UnsupportedImageError
        A ``ValueError``: alpha for a format without alpha (JPEG, BMP), or an
        unknown format.
    """
    path = os.fspath(path)
    fmt = (format or (like.format if like is not None else None)
           or format_for_extension(path) or "").upper()
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise UnsupportedImageError(f"cannot write format {fmt or '(none given)'!r}: "
                                    f"choose one of {', '.join(FORMATS)}")
    sixteen_bit_colour = pixels.dtype == np.uint16 and pixels.ndim == 3 and pixels.shape[2] > 1
    if sixteen_bit_colour and fmt == "TIFF":
        raise UnsupportedImageError(
            "Pillow cannot write 16-bit colour TIFF; choose --format png to keep 16 bits"
        )
    # Pillow holds 16-bit samples only in grayscale: 16-bit colour PNG has its own encoder.
    image = None if sixteen_bit_colour and fmt == "PNG" else _to_pillow(pixels, fmt)
    height, width = pixels.shape[:2]
    options: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = _DEFAULT_QUALITY if quality is None else int(quality)
    # TIFF is written uncompressed: Pillow's libtiff path (needed for LZW or
    # Deflate) cannot write an EXIF block that has an Exif sub-IFD.
    if like is not None and not strip and fmt in _METADATA_FORMATS:
        if like.icc_profile:
            options["icc_profile"] = like.icc_profile
        if like.exif:
            options["exif"] = _exif_for_output(like.exif, width, height)

    folder = os.path.dirname(os.path.abspath(path))
    temp_path = None
    try:
        # Not tempfile.mkstemp: a Ctrl-C raised as its open() returns would
        # leave a file whose name we never got. Here the name is known first.
        for _ in range(100):
            temp_path = os.path.join(folder, f".{os.path.basename(path)}."
                                             f"{secrets.token_hex(4)}.downpool-tmp")
            try:
                fd = os.open(temp_path, _TEMP_FLAGS, 0o600)
                break
            except FileExistsError:
                temp_path = None  # another writer's file, not ours to remove
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary file name", folder)
        with os.fdopen(fd, "wb") as stream:
            if image is None:
                _write_png16(stream, pixels, options.get("icc_profile"), options.get("exif"))
            else:
                image.save(stream, format=fmt, **options)
            stream.flush()
            os.fsync(stream.fileno())
        # The file is made private (0600); an output gets the usual mode.
        os.chmod(temp_path, 0o666 & ~_current_umask())
        if replace:
            os.replace(temp_path, path)
        else:
            _rename_no_clobber(temp_path, path)
    except BaseException:
        if temp_path is not None:
            try:
                os.unlink(temp_path)
            except OSError:  # gone already (renamed), or never made
                pass
        raise
