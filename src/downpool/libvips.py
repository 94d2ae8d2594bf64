"""Decoding image files a band of rows at a time, and writing TIFF, through libvips.

libvips (``pyvips`` with the ``pyvips-binary`` wheel) decodes PNG, JPEG,
TIFF and WebP strip by strip when it is asked for rows in order
(``access="sequential"``), so that a file of any height is read holding only
a few strips.  :mod:`downpool.io` decides which files come this way (the
plain ones: 8 or 16 bits, L/LA/RGB/RGBA, lossless TIFF compressions) and
keeps reading the others with Pillow; this module only opens and fetches.

A damaged file is an error, never an image with a grey bottom half:
``fail_on="error"`` makes libvips stop where its decoder reports a
truncation or a corrupt block.

TIFF is written by libvips straight from the output array (no copy of it,
where Pillow holds the pixels again, 4 bytes each for RGB), in 16-bit colour
too, which Pillow cannot write.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Iterator

import numpy as np

__all__ = ["open_rows", "bands", "decode_error", "save_tiff", "TIFF_COMPRESSIONS"]

_SAMPLE_TYPES = {"uchar": np.uint8, "ushort": np.uint16}


@functools.cache
def _pyvips() -> Any:
    import pyvips

    # libvips' warnings reach Python's logging; without this they would
    # print as "pyvips: ..." lines, uncounted.  They are caught as
    # warnings by the callers instead (the command reports them per file).
    logging.getLogger("pyvips").addHandler(_WARNINGS)
    logging.getLogger("pyvips").propagate = False
    # Each file is opened once and read once: libvips' operation cache would
    # only keep the last hundred files' decoders and buffers alive.
    pyvips.cache_set_max(0)
    return pyvips


class _AsWarnings(logging.Handler):
    """Re-issue libvips' log records as Python warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        import warnings

        text = " ".join(record.getMessage().split())
        # A decoding error is raised, and said, once; libvips also logs it for
        # every tile of the image that it then fails to make.
        if record.levelno >= logging.WARNING and not _TILE_ERROR.fullmatch(text):
            warnings.warn(f"libvips: {text}", RuntimeWarning, stacklevel=2)


_TILE_ERROR = re.compile(r"(VIPS: )?error in tile \d+ x \d+")


_WARNINGS = _AsWarnings()


def open_rows(source: str | bytes, fmt: str = "image", **load_options: Any) -> Any:
    """A ``pyvips.Image`` of the file at ``source`` (a path, or the file's bytes), not yet decoded.

    Its rows must be fetched in order, top to bottom (:func:`bands`).
    ``load_options`` go to the format's loader (``shrink`` for JPEG,
    ``scale`` for WebP).
    """
    pyvips = _pyvips()
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return pyvips.Image.new_from_buffer(bytes(source), "", access="sequential",
                                                fail_on="error", **load_options)
        return pyvips.Image.new_from_file(source, access="sequential", fail_on="error",
                                          **load_options)
    except pyvips.Error as exc:
        raise decode_error(exc, fmt) from None


def bands(image: Any, rows: int, fmt: str = "image") -> Iterator[np.ndarray]:
    """The image's pixels, ``rows`` rows at a time from the top, as (n, W, C) arrays.

    The arrays are read-only views of libvips' buffers (``uint8`` or
    ``uint16``).  A decoding error is an ``OSError`` in words.
    """
    pyvips = _pyvips()
    dtype = _SAMPLE_TYPES[image.format]
    width, height, channels = image.width, image.height, image.bands
    region = pyvips.Region.new(image)
    for top in range(0, height, rows):
        count = min(rows, height - top)
        try:
            data = region.fetch(0, top, width, count)
        except pyvips.Error as exc:
            raise decode_error(exc, fmt) from None
        yield np.frombuffer(data, dtype=dtype).reshape(count, width, channels)


def decode_error(exc: Any, fmt: str = "image") -> OSError:
    """libvips' error as an ``OSError`` that says what is wrong with the file, in one line.

    libvips prefixes its decoders' words with its loader's name
    ("tiff2vips: Using code not yet in table"); they are given as the
    library's own ("libtiff: ...").
    """
    lines = [" ".join(line.split()) for line in str(getattr(exc, "detail", "") or "").splitlines()]
    words = []
    for line in dict.fromkeys(line for line in lines if line):
        loader, _, text = line.partition(": ")
        library = _DECODERS.get(loader)
        if library and text:
            line = text if text.startswith(library) else f"{library}: {text}"
        words.append(line)
    detail = "; ".join(words)
    fmt = {"WEBP": "WebP"}.get(fmt, fmt)
    if any(word in detail.lower() for word in ("premature end", "truncated", "unexpected end")):
        return OSError(f"truncated {fmt} file: the image data ends early")
    return OSError(f"corrupt {fmt} file: its image data is damaged ({detail or exc})")


#: libvips' loader names, as its messages begin, and the libraries they speak for.
_DECODERS = {"tiff2vips": "libtiff", "VipsJpeg": "libjpeg", "vipspng": "libpng",
             "spng": "libspng", "webp": "libwebp", "VipsForeignLoad": "libvips"}


def srgb_profile() -> bytes:
    """libvips' own sRGB ICC profile, the one :func:`to_srgb` tags its results with."""
    global _SRGB
    if _SRGB is None:
        pyvips = _pyvips()
        lab = pyvips.Image.black(1, 1, bands=3).copy(interpretation="lab")
        _SRGB = bytes(lab.icc_export(output_profile="srgb").get("icc-profile-data"))
    return _SRGB


_SRGB: bytes | None = None


def to_srgb(image: Any, fallback: str | None = None) -> Any:
    """``image`` converted from its embedded ICC profile to sRGB, in its own sample depth.

    Relative colorimetric intent, as vipsthumbnail's ``--export-profile
    srgb``; gray becomes RGB, alpha is kept as it is.  Without an embedded
    profile, ``fallback`` (one of libvips' own, "cmyk") is used; the caller
    has checked that there is one or the other.
    """
    pyvips = _pyvips()
    depth = 16 if image.format == "ushort" else 8
    options = {"input_profile": fallback} if fallback else {}
    try:
        return image.icc_transform("srgb", embedded=True, intent="relative", depth=depth,
                                   **options)
    except pyvips.Error as exc:
        raise OSError(f"cannot convert to sRGB: {' '.join(str(exc).split())}") from None


def array_to_srgb(pixels: np.ndarray, icc: bytes | None, has_alpha: bool,
                  cmyk: bool = False) -> np.ndarray:
    """An (H, W[, C]) uint8/uint16 array with the ICC profile ``icc``, converted to sRGB.

    ``cmyk``: the four channels are CMYK (0 is no ink), and without ``icc``
    libvips' fallback CMYK profile describes them.
    """
    pyvips = _pyvips()
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour = channels - (1 if has_alpha else 0)
    sixteen = pixels.dtype == np.uint16
    interpretation = "cmyk" if cmyk else (
        {1: "grey16", 3: "rgb16"} if sixteen else {1: "b-w", 3: "srgb"})[colour]
    image = pyvips.Image.new_from_array(np.ascontiguousarray(pixels)).copy(
        interpretation=interpretation)
    if icc is not None:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    converted = to_srgb(image, fallback="cmyk" if cmyk else None).numpy()
    return converted if converted.ndim == 3 else converted[:, :, None]


#: downpool's names of TIFF compressions (Pillow's) -> libvips'.
TIFF_COMPRESSIONS = {"raw": "none", "tiff_lzw": "lzw", "tiff_adobe_deflate": "deflate",
                     "packbits": "packbits", "jpeg": "jpeg"}

#: Above this many bytes of samples a TIFF is written as BigTIFF (a classic
#: TIFF's offsets end at 4 GiB; the margin is for its tags and strip tables).
BIGTIFF_BYTES = (4 << 30) - (64 << 20)


def save_tiff(stream: Any, pixels: np.ndarray, *, compression: str, quality: int | None = None,
              icc: bytes | None = None, xmp: bytes | None = None,
              dpi: tuple[float, float] | None = None) -> bool:
    """Write (H, W[, C]) ``uint8``/``uint16`` pixels (C in 1..4, alpha last in 2 and 4) as
    a TIFF file into the binary ``stream``; returns whether it is a BigTIFF.

    ``compression`` is a key of :data:`TIFF_COMPRESSIONS`.  libvips reads
    the array where it is.  Without ``dpi`` the file states 1 dot per inch,
    as Pillow's TIFF writer did.  Alpha is written unassociated (not
    premultiplied).
    """
    pyvips = _pyvips()
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    bands = 1 if pixels.ndim == 2 else pixels.shape[2]
    sixteen = pixels.dtype == np.uint16
    image = pyvips.Image.new_from_memory(pixels.data, width, height, bands,
                                         "ushort" if sixteen else "uchar")
    colour = ("rgb16" if sixteen else "srgb") if bands >= 3 else ("grey16" if sixteen else "b-w")
    xres, yres = (d / 25.4 for d in (dpi or (1.0, 1.0)))  # libvips' unit: pixels per mm
    image = image.copy(interpretation=colour, xres=xres, yres=yres)
    if icc:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    if xmp:
        image.set_type(pyvips.GValue.blob_type, "xmp-data", xmp)
    big = pixels.nbytes > BIGTIFF_BYTES
    options: dict[str, Any] = {"compression": TIFF_COMPRESSIONS[compression], "resunit": "inch",
                               "bigtiff": big}
    if compression == "jpeg":
        options["Q"] = quality
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a buffer (for a FIFO, a device)
        stream.write(image.tiffsave_buffer(**options))
        return big
    stream.flush()
    image.tiffsave_target(pyvips.Target.new_to_descriptor(descriptor), **options)
    stream.seek(0, 2)  # libvips wrote through the descriptor
    return big
