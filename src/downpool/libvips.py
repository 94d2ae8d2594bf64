"""Decoding image files a band of rows at a time, and writing TIFF, through libvips.

libvips (``pyvips`` with the ``pyvips-binary`` wheel) decodes PNG, JPEG,
TIFF and WebP strip by strip when it is asked for rows in order
(``access="sequential"``), so that a file of any height is read holding only
a few strips.  :mod:`downpool.io` decides which files come this way (the
plain ones: 8 or 16 bits, L/LA/RGB/RGBA, lossless TIFF compressions) and
keeps reading the others with Pillow; this module only opens and fetches.

A damaged file is an error, never an image with a grey bottom half:
``fail_on="error"`` makes libvips stop where its decoder reports a
truncation or a corrupt block.  libjpeg reports missing or damaged image
data only as a warning (it fills the blocks it could not decode with grey),
so a JPEG is decoded with ``fail_on="warning"`` and libjpeg's warnings are
judged one by one (:data:`JPEG_WARNINGS`, :func:`decoded_bands`);
:func:`check_jpeg` does the same for a JPEG that Pillow is to decode.

TIFF is written by libvips straight from the output array (no copy of it,
where Pillow holds the pixels again, 4 bytes each for RGB), in 16-bit colour
too, which Pillow cannot write.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import struct
import threading
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["open_rows", "bands", "decoded_bands", "check_jpeg", "decode_error", "save_tiff",
           "save_tiff_pages",
           "TIFF_COMPRESSIONS", "JPEG_WARNINGS", "DamagedJpegError"]

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
    """Re-issue libvips' log records as Python warnings (or hand them to
    :func:`_jpeg_log`, where this thread is decoding a JPEG)."""

    def emit(self, record: logging.LogRecord) -> None:
        import warnings

        collected = _LOG.__dict__.get("records")
        if collected is not None:  # this thread's JPEG decoder: judged by _jpeg_log's caller
            collected.append((record.levelno, record.getMessage()))
            return
        text = " ".join(record.getMessage().split())
        # A decoding error is raised, and said, once; libvips also logs it for
        # every tile of the image that it then fails to make.
        if record.levelno >= logging.WARNING and not _TILE_ERROR.fullmatch(text):
            warnings.warn(f"libvips: {text}", RuntimeWarning, stacklevel=2)


_TILE_ERROR = re.compile(r"(VIPS: )?error in tile \d+ x \d+")


_WARNINGS = _AsWarnings()


def open_rows(source: str | bytes, fmt: str = "image", fail_on: str = "error",
              **load_options: Any) -> Any:
    """A ``pyvips.Image`` of the file at ``source`` (a path, or the file's bytes), not yet decoded.

    Its rows must be fetched in order, top to bottom (:func:`bands`).
    ``load_options`` go to the format's loader (``shrink`` for JPEG,
    ``scale`` for WebP); ``fail_on`` is libvips' (``"warning"`` for a JPEG
    read by :func:`decoded_bands`).
    """
    pyvips = _pyvips()
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return pyvips.Image.new_from_buffer(bytes(source), "", access="sequential",
                                                fail_on=fail_on, **load_options)
        return pyvips.Image.new_from_file(source, access="sequential", fail_on=fail_on,
                                          **load_options)
    except pyvips.Error as exc:
        raise decode_error(exc, fmt) from None


def bands(image: Any, rows: int, fmt: str = "image", skip: int = 0,
          raw: bool = False) -> Iterator[np.ndarray]:
    """The image's pixels, ``rows`` rows at a time from the top, as (n, W, C) arrays.

    The arrays are read-only views of libvips' buffers (``uint8`` or
    ``uint16``).  A decoding error is an ``OSError`` in words (``raw``: the
    ``pyvips.Error`` itself).  The first ``skip`` rows are decoded and left out.
    """
    pyvips = _pyvips()
    dtype = _SAMPLE_TYPES[image.format]
    width, height, channels = image.width, image.height, image.bands
    region = pyvips.Region.new(image)
    del image  # the region holds it: dropping the region closes the decoder
    top = 0
    while top < height:
        count = min(rows, height - top)
        if top < skip:
            count = min(count, skip - top)
        try:
            data = region.fetch(0, top, width, count)
        except pyvips.Error as exc:
            if raw:
                raise
            raise decode_error(exc, fmt) from None
        if top >= skip:
            yield np.frombuffer(data, dtype=dtype).reshape(count, width, channels)
        top += count


#: libjpeg's warnings (libjpeg-turbo 3's ``JWRN_*`` messages, all of those a file
#: can cause, as found in the libjpeg of the pyvips and Pillow wheels): the
#: words that name each, whether the pixels are whole after it, and why.
#: libjpeg does not stop at a warning: where the image data is missing or
#: damaged it fills the blocks it cannot decode with flat grey (or decodes
#: garbage), and returns as if all were well.  A JPEG with a warning marked
#: False is refused; one marked True is decoded, with a warning line.
JPEG_WARNINGS: tuple[tuple[str, bool, str], ...] = (
    # JWRN_HIT_MARKER: a marker (the EOI of a cut file, say) before the last
    # block of the scan: every block after it is flat grey.
    ("premature end of data segment", False, "the blocks after it would be grey"),
    # JWRN_JPEG_EOF: the file ends inside the image data (libvips reads its own
    # source and says "premature end of JPEG image", an error, instead).
    ("premature end of jpeg file", False, "the rest of the image would be grey"),
    # JWRN_HUFF_BAD_CODE, JWRN_ARITH_BAD_CODE: a code the scan's tables do not
    # hold; the blocks from there on are garbage or grey.
    ("bad huffman code", False, "the blocks from there on would be garbage"),
    ("bad arithmetic code", False, "the blocks from there on would be garbage"),
    # JWRN_MUST_RESYNC: a restart marker out of sequence: the image data of the
    # restart intervals in between is missing, and their blocks grey.
    ("instead of rst", False, "image data between restart markers is missing"),
    # JWRN_BOGUS_PROGRESSION: a progressive scan that refines coefficients no
    # earlier scan gave: scans are missing or out of order.
    ("inconsistent progression sequence", False, "a progressive JPEG's scans are missing"),
    # JWRN_EXTRANEOUS_DATA: bytes between a segment's end and the next marker,
    # which libjpeg skips (padding that some encoders write before a restart
    # marker or the end); no block is lost.
    ("extraneous bytes before marker", True, "skipped bytes, no image data lost"),
    # JWRN_JFIF_MAJOR: a JFIF version libjpeg does not know; the image data is
    # read as usual.
    ("unknown jfif revision", True, "metadata only"),
    # JWRN_ADOBE_XFORM: an Adobe segment's colour transform code libjpeg does
    # not know; it takes the colour space from the components instead.
    ("unknown adobe color transform", True, "metadata only"),
    # JWRN_BOGUS_ICC: a damaged ICC profile segment (libvips reads the profile
    # itself, and Pillow too).
    ("bad icc marker", True, "metadata only"),
    # JWRN_NOT_SEQUENTIAL: a baseline scan's progressive-only fields, which
    # libjpeg ignores.
    ("invalid sos parameters for sequential jpeg", True, "fields that libjpeg ignores"),
)


class DamagedJpegError(OSError):
    """A JPEG whose image data libjpeg reported missing or damaged (:data:`JPEG_WARNINGS`)."""


def _jpeg_warnings(text: str) -> list[tuple[str, bool | None, str]]:
    """libjpeg's words in libvips' error buffer ``text`` (its lines that begin with
    "VipsJpeg: "): each line, and from :data:`JPEG_WARNINGS` whether it is a harmless
    warning (True), damage (False) or neither, an error or an unknown warning (None),
    and why."""
    found = []
    for line in dict.fromkeys(" ".join(line.split()) for line in text.splitlines()):
        if not line.startswith("VipsJpeg: "):
            continue  # another loader's words, or libvips' own
        words = line.removeprefix("VipsJpeg: ")
        lower = words.lower()
        known = next(((harmless, why) for key, harmless, why in JPEG_WARNINGS if key in lower),
                     (None, ""))
        found.append((words, *known))
    return found


def _damaged(words: str, why: str) -> DamagedJpegError:
    if "premature end" in words.lower():
        return DamagedJpegError(f"truncated JPEG file: the image data ends early, and {why} "
                                f"(libjpeg: {words})")
    return DamagedJpegError(f"corrupt JPEG file: its image data is damaged, and {why} "
                            f"(libjpeg: {words})")


@contextlib.contextmanager
def _jpeg_log() -> Iterator[list[tuple[int, str]]]:
    """Collect what libvips logs in this thread meanwhile (its JPEG reader's count of
    warnings, logged as it closes) instead of issuing it as warnings."""
    _pyvips()
    outer = _LOG.__dict__.get("records")
    records: list[tuple[int, str]] = []
    _LOG.records = records
    try:
        yield records
    finally:
        _LOG.records = outer


_LOG = threading.local()
#: What libvips' JPEG reader logs as it closes where libjpeg warned (then the
#: error buffer, where libjpeg's first warning was put).
_WARNINGS_COUNTED = re.compile(r"(?:VIPS: )?read gave (\d+) warnings?")


def decoded_bands(open_image: Callable[[str], Any], rows: int, fmt: str = "image",
                  ) -> Iterator[np.ndarray]:
    """The pixels of ``open_image(fail_on)`` (a ``pyvips.Image`` opened with libvips'
    ``fail_on``), ``rows`` rows at a time from the top, as :func:`bands` gives them.

    A JPEG is opened with ``fail_on="warning"``: libvips stops at the strip after
    libjpeg's first warning, and the warning decides (:data:`JPEG_WARNINGS`).
    After a harmless one the file is decoded again with ``fail_on="error"``, the
    rows already handed out skipped; damage is a :class:`DamagedJpegError`.  A
    warning in the last strip, which libvips lets pass, and warnings after a
    harmless first one are known from the count that libjpeg's reader logs as it
    closes.  libvips names only the first warning of a read: more than one,
    after a harmless first, is refused too, as possibly damage.
    """
    if fmt != "JPEG":
        yield from bands(open_image("error"), rows, fmt)
        return
    import warnings

    pyvips = _pyvips()
    done = 0
    harmless: tuple[str, str] | None = None  # the first warning, where it was harmless
    with _jpeg_log() as log:
        while True:
            image = open_image("error" if harmless else "warning")
            try:
                for band in bands(image, rows, fmt, skip=done, raw=True):
                    done += band.shape[0]
                    yield band
            except pyvips.Error as exc:
                del image
                found = _jpeg_warnings(str(getattr(exc, "detail", "") or ""))
                for words, kind, why in found:
                    if kind is False:
                        raise _damaged(words, why) from None
                if found and harmless is None and all(kind for _, kind, _ in found):
                    harmless = found[0][0], found[0][2]
                    continue  # decoded again, past the harmless warning
                raise decode_error(exc, fmt) from None
            del image  # libjpeg's reader closes, and logs how many warnings it gave
            break
    counted, rest = [], []
    index = 0
    while index < len(log):
        match = _WARNINGS_COUNTED.fullmatch(" ".join(log[index][1].split()))
        if match:
            said = log[index + 1][1] if index + 1 < len(log) else ""
            said = said.removeprefix("VIPS: ")  # pyvips' logger names the domain
            counted.append((int(match.group(1)), said))
            index += 2
        else:
            rest.append(log[index])
            index += 1
    for level, text in rest:  # the rest of libvips' log, as without a JPEG
        _WARNINGS.emit(logging.makeLogRecord({"levelno": level, "msg": text}))
    if counted:
        pyvips.vips_lib.vips_error_clear()  # these words are used: not another file's
    for count, said in counted:
        found = _jpeg_warnings(said)
        for words, kind, why in found:
            if kind is False:
                raise _damaged(words, why)
            if kind is None:
                raise DamagedJpegError(f"corrupt JPEG file: libjpeg warns '{words}', which "
                                       "downpool does not know to be harmless")
        if count > 1:
            first = f" the first ('{found[0][0]}') is harmless, but" if found else ""
            raise DamagedJpegError(
                f"corrupt JPEG file: libjpeg gave {count} warnings while decoding it;{first} "
                "libvips names only the first, and the others may be missing image data")
        if found:
            harmless = harmless or (found[0][0], found[0][2])
        elif harmless is None:
            raise DamagedJpegError(
                "corrupt JPEG file: libjpeg warned while decoding its last rows, and its words "
                "were lost (another file's error cleared libvips' messages): try it alone")
    if harmless is not None:
        warnings.warn(f"libjpeg: {harmless[0]} (harmless: {harmless[1]})", RuntimeWarning,
                      stacklevel=2)


def check_jpeg(source: str | bytes) -> None:
    """Refuse a JPEG whose image data is missing or damaged, before Pillow decodes it.

    Pillow's decoder does not say libjpeg's warnings, and gives the blocks it
    could not decode as grey: the file is decoded here once more by libvips at
    1/8 of its size (libjpeg still reads every block's codes, where its
    warnings come from, but leaves out most of the rest) and judged as
    :func:`decoded_bands` judges it.  Raises :class:`DamagedJpegError`; libvips'
    other errors are left to Pillow's decoder to find, or not.
    """
    try:  # 64 rows at a time: at most 1.5 MB, even 65535 pixels wide
        for _ in decoded_bands(lambda fail_on: open_rows(source, "JPEG", fail_on=fail_on,
                                                         shrink=8), 64, "JPEG"):
            pass
    except DamagedJpegError:
        raise
    except OSError:
        pass


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
    pixels = np.ascontiguousarray(pixels)
    image = _tiff_image(pixels, pixels.shape[0], icc=icc, xmp=xmp, dpi=dpi)
    big = pixels.nbytes > BIGTIFF_BYTES
    _tiffsave(stream, image, _tiff_options(compression, quality, big))
    return big


def save_tiff_pages(stream: Any, pages: list[np.ndarray], *, compression: str,
                    quality: int | None = None, icc: bytes | None = None) -> bool:
    """Write ``pages`` ((H, W[, C]) ``uint8``/``uint16`` arrays) as one multi-page TIFF
    file into the binary, seekable ``stream``; returns whether it is a BigTIFF.

    Each run of pages of one shape and dtype is one libvips image, its pages one
    below the other (``page-height``), which libvips writes page after page, in
    time linear in their number (Pillow's writer walks every earlier page for
    each new one).  The pages are read where they lie when they are consecutive
    parts of one array, as ``downpool shrink`` pools them; else they are copied
    together.  Runs of different kinds are each written by libvips and joined
    (:func:`_join_tiffs`).  Compression, alpha and resolution as
    :func:`save_tiff`; the ICC profile goes with every page it fits (libvips
    leaves it out of pages of another colour space, a gray page's of an RGB
    profile).
    """
    runs: list[list[np.ndarray]] = []
    for page in pages:
        if runs and (page.shape, page.dtype) == (runs[-1][0].shape, runs[-1][0].dtype):
            runs[-1].append(page)
        else:
            runs.append([page])
    big = sum(page.nbytes for page in pages) > BIGTIFF_BYTES

    def image_of(run: list[np.ndarray]) -> Any:
        height = run[0].shape[0]
        image = _tiff_image(_one_block(run), height, icc=icc)
        channels = 1 if run[0].ndim == 2 else run[0].shape[2]
        kind = compression
        if kind == "jpeg" and not (run[0].dtype == np.uint8 and channels in (1, 3)):
            kind = "tiff_adobe_deflate"  # libtiff's JPEG takes 8-bit gray and RGB only
        return image, _tiff_options(kind, quality, big)

    if len(runs) == 1:
        image, options = image_of(runs[0])
        _tiffsave(stream, image, options)
        return big

    def encoded() -> Iterator[bytes]:
        for run in runs:
            image, options = image_of(run)
            yield image.tiffsave_buffer(**options)

    _join_tiffs(stream, encoded(), len(pages))
    return big


def _one_block(pages: list[np.ndarray]) -> np.ndarray:
    """Pages of one shape and dtype as one C-contiguous array, one below the other: a
    view where they lie one after the other in one array already, else a copy."""
    first = pages[0]
    step = first.nbytes
    address = first.__array_interface__["data"][0]
    if all(page.flags.c_contiguous and page.__array_interface__["data"][0] == address + k * step
           for k, page in enumerate(pages)):
        shape = (len(pages) * first.shape[0], *first.shape[1:])
        return np.lib.stride_tricks.as_strided(first, shape, first.strides, writeable=False)
    return np.concatenate(pages)


def _tiff_image(pixels: np.ndarray, page_height: int, *, icc: bytes | None = None,
                xmp: bytes | None = None, dpi: tuple[float, float] | None = None) -> Any:
    """A ``pyvips.Image`` of C-contiguous (H, W[, C]) pixels, where they are, with its pages
    ``page_height`` rows each, its colour space, resolution and metadata set for tiffsave."""
    pyvips = _pyvips()
    height, width = pixels.shape[:2]
    bands = 1 if pixels.ndim == 2 else pixels.shape[2]
    sixteen = pixels.dtype == np.uint16
    image = pyvips.Image.new_from_memory(pixels.data if pixels.flags.writeable
                                         else memoryview(pixels), width, height, bands,
                                         "ushort" if sixteen else "uchar")
    colour = ("rgb16" if sixteen else "srgb") if bands >= 3 else ("grey16" if sixteen else "b-w")
    xres, yres = (d / 25.4 for d in (dpi or (1.0, 1.0)))  # libvips' unit: pixels per mm
    image = image.copy(interpretation=colour, xres=xres, yres=yres)
    if page_height != height:
        image.set_type(pyvips.GValue.gint_type, "page-height", page_height)
    if icc:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    if xmp:
        image.set_type(pyvips.GValue.blob_type, "xmp-data", xmp)
    return image


def _tiff_options(compression: str, quality: int | None, big: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"compression": TIFF_COMPRESSIONS[compression], "resunit": "inch",
                               "bigtiff": big}
    if compression == "jpeg":
        options["Q"] = 90 if quality is None else int(quality)
    return options


def _tiffsave(stream: Any, image: Any, options: dict[str, Any]) -> None:
    """libvips' tiffsave into ``stream``: through its descriptor where it has one."""
    pyvips = _pyvips()
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a buffer (for a FIFO, a device)
        stream.write(image.tiffsave_buffer(**options))
        return
    stream.flush()
    image.tiffsave_target(pyvips.Target.new_to_descriptor(descriptor), **options)
    stream.seek(0, 2)  # libvips wrote through the descriptor


#: TIFF field types -> bytes per value.
_TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                    13: 4, 16: 8, 17: 8, 18: 8}
#: Tags whose values are offsets into the file: StripOffsets, TileOffsets, FreeOffsets.
_TIFF_OFFSET_TAGS = {273, 324, 288}
#: Tags that point at IFDs of their own (SubIFDs, Exif, GPS, Interoperability), which
#: :func:`_join_tiffs` does not move: libvips writes none for the pages given it.
_TIFF_IFD_TAGS = {330, 34665, 34853, 40965}
_TIFF_PAGE_NUMBER = 297


def _join_tiffs(stream: Any, parts: Iterator[bytes], pages: int) -> None:
    """Write TIFF files (``parts``: all classic or all BigTIFF, one byte order, as libvips
    wrote them) into the seekable ``stream`` as one file of all their pages, in order.

    Each part is written whole where the file has got to (its header left as
    unused bytes), with every offset in it moved by that much: its IFDs' chain,
    values stored out of line, and the strip and tile offsets.  The last IFD
    of each part is then chained to the next part's first, and each page's
    PageNumber is set to its place in the whole file.
    """
    previous_link = None  # where the last written part's last next-IFD offset is
    page = 0
    for data in parts:
        end = stream.seek(0, 2)
        if end % 2:
            stream.write(b"\0")
            end += 1
        if previous_link is None:
            start = stream.tell()
            if start != 0:
                raise ValueError("a TIFF file is joined from the start of its stream")
            base = 0
        else:
            base = end
        block = bytearray(data)
        del data
        first, last_link, page = _move_tiff(block, base, page, pages)
        stream.write(block)
        if previous_link is not None:
            offset_format, _ = previous_link
            stream.seek(previous_link[1])
            stream.write(struct.pack(offset_format, first))
            stream.seek(0, 2)
        previous_link = last_link


def _move_tiff(block: bytearray, base: int, page: int, pages: int,
               ) -> tuple[int, tuple[str, int], int]:
    """Move every offset in the TIFF file ``block`` by ``base`` (in place); its first IFD's
    offset and where its last next-IFD offset is, both as they will be in the joined file,
    and the page number after its pages."""
    order = {b"II": "<", b"MM": ">"}[bytes(block[:2])]
    big = struct.unpack(order + "H", block[2:4])[0] == 43
    offset_format = order + ("Q" if big else "I")
    count_format, entry_bytes, inline = ((order + "Q", 20, 8) if big else (order + "H", 12, 4))
    offset_size = 8 if big else 4
    limit = 1 << (8 * offset_size)

    def moved(value: int) -> int:
        if value + base >= limit:
            raise ValueError("the joined TIFF file is too large for its offsets")
        return value + base

    first = struct.unpack_from(offset_format, block, 8 if big else 4)[0]
    ifd, link = first, None
    seen = set()
    while ifd and ifd not in seen:
        seen.add(ifd)
        count = struct.unpack_from(count_format, block, ifd)[0]
        entries = ifd + struct.calcsize(count_format)
        for k in range(count):
            at = entries + k * entry_bytes
            tag, kind = struct.unpack_from(order + "HH", block, at)
            number = struct.unpack_from(order + ("Q" if big else "I"), block, at + 4)[0]
            value_at = at + 4 + offset_size
            if tag in _TIFF_IFD_TAGS:
                raise ValueError(f"TIFF tag {tag} points at an IFD that cannot be moved")
            size = _TIFF_TYPE_BYTES.get(kind, 1) * number
            values_at = value_at
            if size > inline:
                values_at = struct.unpack_from(offset_format, block, value_at)[0]
                struct.pack_into(offset_format, block, value_at, moved(values_at))
            if tag in _TIFF_OFFSET_TAGS:
                item = {3: "H", 4: "I", 16: "Q"}[kind]
                for i in range(number):
                    where = values_at + i * struct.calcsize(item)
                    value = moved(struct.unpack_from(order + item, block, where)[0])
                    if item == "H" and value > 0xFFFF:
                        raise ValueError("the joined TIFF file is too large for its offsets")
                    struct.pack_into(order + item, block, where, value)
            elif tag == _TIFF_PAGE_NUMBER and kind == 3 and number == 2:
                struct.pack_into(order + "HH", block, value_at, min(page, 0xFFFF),
                                 min(pages, 0xFFFF))
        page += 1
        link = entries + count * entry_bytes
        following = struct.unpack_from(offset_format, block, link)[0]
        if following:
            struct.pack_into(offset_format, block, link, moved(following))
        ifd = following
    if link is None:
        raise ValueError("a TIFF file without an IFD")
    return first + base, (offset_format, link + base), page
