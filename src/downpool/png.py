"""PNG files at the chunk level: checking every chunk, carrying metadata chunks, 16-bit colour.

Pillow decodes PNG pixels, but it neither checks the checksum of the image
data (IDAT) nor notices an IDAT whose stated length runs past the end of the
file, and it has no way to copy chunks it does not interpret (gAMA, cHRM,
text) into a new file.  :func:`scan_png` walks every chunk of a file, checks
its length and CRC, and collects what :mod:`downpool.io` carries over.

Pillow 13 also reads 16-bit RGB, RGBA and gray+alpha PNG only reduced to 8
bits and cannot write them, so this module reads and writes those itself:
zlib and the five row filters of the PNG specification (section 9).
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from typing import IO, Any

import numpy as np

__all__ = ["SIGNATURE", "PngScan", "scan_png", "is_png16_colour", "read_png16", "write_png16",
           "CARRIED_CHUNKS", "XMP_KEYWORD"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Ancillary chunks copied from a PNG input into a PNG output, as they are:
#: colour interpretation (gamma, chromaticities, sRGB intent, cICP) and
#: text.  The resolution (pHYs) travels as dpi, which every format shares.
#: Chunks that describe the old samples (sBIT, bKGD, hIST, tRNS) or the old
#: file (tIME) are not copied.
CARRIED_CHUNKS = frozenset({b"gAMA", b"cHRM", b"sRGB", b"cICP", b"tEXt", b"zTXt", b"iTXt"})

#: The iTXt keyword under which XMP is stored (carried as XMP, not as text).
XMP_KEYWORD = b"XML:com.adobe.xmp"

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG16_MODES = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}  # channels -> mode
_PNG16_COLOUR_TYPES = (2, 4, 6)  # RGB, gray+alpha, RGBA
_READ_BLOCK = 1 << 20
_IDAT_CHUNK_BYTES = 1 << 20
_MAX_CHUNK_LENGTH = 2**31 - 1  # PNG specification, section 5.3


@dataclasses.dataclass
class PngScan:
    """What :func:`scan_png` found in a PNG file whose every chunk checked out.

    Attributes
    ----------
    width, height, bit_depth, colour_type, interlace : int
        The IHDR fields.
    carried : list of (bytes, bytes)
        The :data:`CARRIED_CHUNKS` (type, body), in file order, without the
        XMP iTXt chunk.
    xmp : bytes or None
        The XMP packet, from the ``XML:com.adobe.xmp`` iTXt chunk.
    icc_profile, exif, trns : bytes or None
        The decompressed iCCP profile, the eXIf body, the tRNS body.
    idat : list of bytes or None
        The image data, when asked for (``keep_idat``).
    """

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int
    carried: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    xmp: bytes | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    trns: bytes | None = None
    idat: list[bytes] | None = None


def _name(kind: bytes) -> str:
    return kind.decode("latin-1", "replace")


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    return data if data is not None else b""


def scan_png(stream: IO[bytes], keep_idat: bool = False, check_idat: bool = True) -> PngScan:
    """Check every chunk of the PNG file ``stream`` (from its start) and collect its metadata.

    Every chunk must lie wholly inside the file, its CRC must match, and the
    file must have an IHDR, image data, and an IEND chunk: what libpng
    demands of a file it decodes.  The stream's position is left at the end
    of the IEND chunk.  ``check_idat=False`` skips the image data's bytes
    (their CRCs unchecked, and unread) for a decoder that checks them itself:
    libvips' (libpng's), which Pillow's is not.

    Raises
    ------
    OSError
        A corrupt or truncated file, in words (which chunk, what is wrong).
    """
    stream.seek(0)
    if _read_exactly(stream, len(SIGNATURE)) != SIGNATURE:
        raise OSError("not a PNG file (its signature is wrong)")
    scan: PngScan | None = None
    have_idat = False
    idat: list[bytes] = []
    while True:
        head = _read_exactly(stream, 8)
        if len(head) < 8:
            where = "" if not head else " (it ends inside a chunk header)"
            raise OSError(f"truncated PNG file: it ends before its IEND chunk{where}")
        length, kind = struct.unpack(">I4s", head)
        if length > _MAX_CHUNK_LENGTH or not kind.isalpha():
            raise OSError(f"corrupt PNG file: a chunk header is damaged (type {kind!r}, "
                          f"length {length})")
        if kind == b"IDAT" and not check_idat and not keep_idat:
            _skip_chunk(stream, length)
            have_idat = True
            continue
        crc = zlib.crc32(kind)
        keep = kind != b"IDAT" or keep_idat
        parts = []
        remaining = length
        while remaining:
            piece = _read_exactly(stream, min(remaining, _READ_BLOCK))
            if not piece:
                raise OSError(f"truncated PNG file: its {_name(kind)} chunk runs past the end "
                              f"of the file ({length - remaining} of {length} bytes there)")
            crc = zlib.crc32(piece, crc)
            remaining -= len(piece)
            if keep:
                parts.append(piece)
        stored = _read_exactly(stream, 4)
        if len(stored) < 4:
            raise OSError(f"truncated PNG file: it ends inside the checksum of its "
                          f"{_name(kind)} chunk")
        if crc != struct.unpack(">I", stored)[0]:
            raise OSError(f"corrupt PNG file: the checksum of its {_name(kind)} chunk is wrong "
                          "(the data was damaged)")
        body = b"".join(parts)
        if scan is None:
            if kind != b"IHDR" or length != 13:
                raise OSError("corrupt PNG file: it does not start with an IHDR chunk")
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            scan = PngScan(width, height, depth, colour_type, interlace)
            continue
        if kind == b"IDAT":
            have_idat = True
            if keep_idat:
                idat.append(body)
        elif kind == b"IEND":
            break
        elif kind == b"iCCP":
            scan.icc_profile = _icc_from_iccp(body)
        elif kind == b"eXIf":
            scan.exif = body
        elif kind == b"tRNS":
            scan.trns = body
        elif kind == b"iTXt" and body.split(b"\0", 1)[0] == XMP_KEYWORD:
            scan.xmp = _itxt_text(body)
        elif kind in CARRIED_CHUNKS:
            scan.carried.append((kind, body))
    if not have_idat:
        raise OSError("corrupt PNG file: it has no image data (no IDAT chunk)")
    if keep_idat:
        scan.idat = idat
    return scan


def _skip_chunk(stream: IO[bytes], length: int) -> None:
    """Past an image data chunk's bytes and CRC, unread; an error where the file ends
    inside them, as :func:`scan_png` says it when it reads them."""
    start = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    if start + length > end:
        raise OSError(f"truncated PNG file: its IDAT chunk runs past the end of the file "
                      f"({end - start} of {length} bytes there)")
    if start + length + 4 > end:
        raise OSError("truncated PNG file: it ends inside the checksum of its IDAT chunk")
    stream.seek(start + length + 4)


def _icc_from_iccp(body: bytes) -> bytes | None:
    name_end = body.find(b"\0")
    if name_end < 0:
        return None
    try:
        return zlib.decompress(body[name_end + 2:])
    except zlib.error:
        return None


def _itxt_text(body: bytes) -> bytes | None:
    """The text of an iTXt chunk: keyword, flag, method, language, translated keyword, text."""
    try:
        keyword, rest = body.split(b"\0", 1)
        compressed, rest = rest[0], rest[2:]
        _language, rest = rest.split(b"\0", 1)
        _translated, text = rest.split(b"\0", 1)
        return zlib.decompress(text) if compressed else text
    except (ValueError, IndexError, zlib.error):
        return None


def itxt_chunk(keyword: bytes, text: bytes) -> bytes:
    """The body of an uncompressed iTXt chunk (for XMP)."""
    return keyword + b"\0\0\0\0\0" + text


# --- 16-bit colour --------------------------------------------------------------------


def is_png16_colour(head: bytes) -> bool:
    """Whether the first 29 bytes of a PNG file declare 16-bit samples in more than one channel."""
    return (len(head) >= 29 and head[:8] == SIGNATURE and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in _PNG16_COLOUR_TYPES)


def read_png16(scan: PngScan) -> tuple[np.ndarray, str]:
    """The pixels of a scanned 16-bit gray+alpha, RGB or RGBA PNG and their mode.

    ``scan`` must come from ``scan_png(..., keep_idat=True)`` and not be
    interlaced (the caller refuses that).  A tRNS key colour of an RGB image
    becomes a real alpha channel ("RGBA;16").

    Returns
    -------
    pixels : ndarray of uint16, (H, W, C)
    mode : str
        ``"LA;16"``, ``"RGB;16"`` or ``"RGBA;16"``.
    """
    channels = _CHANNELS[scan.colour_type]
    width, height = scan.width, scan.height
    bytes_per_pixel = 2 * channels
    stride = width * bytes_per_pixel
    try:
        raw = zlib.decompress(b"".join(scan.idat or []))
    except zlib.error as exc:
        raise OSError(f"corrupt PNG file: its image data cannot be decompressed ({exc})") from None
    if len(raw) != height * (stride + 1):
        raise OSError(f"corrupt PNG file: its image data is {len(raw)} bytes, "
                      f"expected {height * (stride + 1)}")
    rows = _unfilter_png(np.frombuffer(raw, np.uint8), height, stride, bytes_per_pixel)
    pixels = rows.view(">u2").reshape(height, width, channels).astype(np.uint16)
    if scan.trns is not None and channels == 3 and len(scan.trns) == 6:
        key = np.frombuffer(scan.trns, ">u2")
        alpha = np.where((pixels == key).all(axis=2), 0, 65535).astype(np.uint16)
        pixels, channels = np.dstack([pixels, alpha]), 4
    return pixels, _PNG16_MODES[channels]


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
        raise OSError(f"corrupt PNG file: unknown filter type in row {bad_row}")
    return out


def write_png16(stream: IO[bytes], pixels: np.ndarray, icc: bytes | None, exif: bytes | None,
                chunks: Any = ()) -> None:
    """Write 16-bit gray+alpha, RGB or RGBA ``pixels`` as PNG to ``stream``.

    ``chunks``: more (type, body) chunks, written before the image data.
    """
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

    stream.write(SIGNATURE)
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    if icc:
        chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    for kind, body in chunks:
        if not (icc and kind == b"sRGB"):  # the profile rules, as Pillow writes it
            chunk(kind, body)
    if exif:
        chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    compressed = zlib.compress(filtered.tobytes(), 6)
    for start in range(0, max(len(compressed), 1), _IDAT_CHUNK_BYTES):
        chunk(b"IDAT", compressed[start:start + _IDAT_CHUNK_BYTES])
    chunk(b"IEND", b"")
