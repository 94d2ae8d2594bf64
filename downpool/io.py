"""Reading and writing image files: the only module that knows about Pillow.

Pixels go in and out as NumPy arrays; what a file carries besides pixels
(ICC profile, EXIF, format) travels beside them in a :class:`LoadedImage`, so
that image operations never see a file and file code never pools anything.

Decisions (SPEC section 4):

- 8- and 16-bit samples are kept: ``uint8`` or ``uint16`` arrays.  Pillow 13
  holds 16-bit *grayscale* (mode ``I;16``) but reduces 16-bit RGB, RGBA and
  LA files to 8 bits when it decodes them; :func:`read_image` refuses such a
  file with :class:`UnsupportedImageError` rather than silently losing bits.
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
import struct
import tempfile
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

_EXTENSION_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG",
                      ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
                      ".gif": "GIF"}

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
        The Pillow mode the pixels are written back as: ``"L"``, ``"LA"``,
        ``"RGB"``, ``"RGBA"`` or ``"I;16"`` (16-bit grayscale).
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
    return _EXTENSION_FORMATS.get(Path(path).suffix.lower())


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
        the six above, or samples that cannot be kept (16-bit colour, which
        Pillow reduces to 8 bits; 32-bit integer or float samples).

    Examples
    --------
    >>> img = read_image("photo.jpg")                       # doctest: +SKIP
    >>> img.pixels.shape, img.pixels.dtype, img.mode        # doctest: +SKIP
    ((3000, 4000, 3), dtype('uint8'), 'RGB')
    """
    from PIL import Image, ImageOps

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
        4 have alpha last.  16-bit grayscale is kept in PNG and TIFF; other
        formats get the samples rounded to 8 bits.
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
    image = _to_pillow(pixels, fmt)
    options: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = _DEFAULT_QUALITY if quality is None else int(quality)
    # TIFF is written uncompressed: Pillow's libtiff path (needed for LZW or
    # Deflate) cannot write an EXIF block that has an Exif sub-IFD.
    if like is not None and not strip and fmt in _METADATA_FORMATS:
        if like.icc_profile:
            options["icc_profile"] = like.icc_profile
        if like.exif:
            options["exif"] = _exif_for_output(like.exif, image.width, image.height)

    folder = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                     suffix=".downpool-tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            image.save(stream, format=fmt, **options)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600); an output gets the usual mode.
        os.chmod(temp_path, 0o666 & ~_current_umask())
        if replace:
            os.replace(temp_path, path)
        else:
            _rename_no_clobber(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
