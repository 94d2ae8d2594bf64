"""Helpers for the end-to-end tests of the ``downpool`` command.

The tests run the installed console script in a subprocess, as a user would,
on image files they write with Pillow (or, for 16-bit colour PNG, which
Pillow cannot write or read, with :func:`write_png` and :func:`read_png`).
The pixels come from the image makers of ``helpers``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Defined in helpers; named here too because tests/test_cli_fast_load.py imports it from here.

__all__ = ["downpool_command", "run_downpool", "no_traceback", "summary", "save", "load",
           "srgb_icc_profile", "temp_files", "write_png", "read_png", "png_chunk", "png_chunks",
           "tiff_ifd", "exif_block", "write_tiff", "write_bmp565"]


def downpool_command() -> list[str]:
    """The installed ``downpool`` script, else ``python -m downpool``."""
    script = shutil.which("downpool") or os.path.join(os.path.dirname(sys.executable), "downpool")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "downpool"]


def run_downpool(*args: object, cwd: Path | None = None, timeout: float = 120,
                 ) -> subprocess.CompletedProcess:
    """Run ``downpool ARGS...``; stdout and stderr are captured as text (so not a TTY)."""
    return subprocess.run([*downpool_command(), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def no_traceback(output: subprocess.CompletedProcess | str) -> None:
    """No Python traceback in a run's stderr and stdout, or in ``output`` if it is text."""
    texts = [output] if isinstance(output, str) else [output.stderr, output.stdout]
    for text in texts:
        assert "Traceback" not in (text or ""), text


def summary(output: subprocess.CompletedProcess | str) -> str:
    """The one line of a batch's summary (``N done, ...``) in a run's stderr, or in
    ``output`` if it is text (a stderr read from a Popen)."""
    stderr = output if isinstance(output, str) else output.stderr
    lines = [line for line in stderr.splitlines() if " done, " in line]
    assert len(lines) == 1, stderr
    return lines[0]


def save(path: Path, pixels: np.ndarray, mode: str | None = None, **options) -> Path:
    """Write ``pixels`` with Pillow (the format from the extension)."""
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def load(path: Path) -> tuple[np.ndarray, Image.Image]:
    """The pixels of ``path`` and the (loaded) Pillow image."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(image), image


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    if to_left <= to_up and to_left <= to_corner:
        return left
    return up if to_up <= to_corner else corner


def _predict(kind: int, row: bytes | bytearray, prev: bytes, x: int, step: int) -> int:
    """The PNG filter prediction for byte ``x`` (spec section 9.2)."""
    left = row[x - step] if x >= step else 0
    up = prev[x]
    corner = prev[x - step] if x >= step else 0
    return (0, left, up, (left + up) // 2, _paeth(left, up, corner))[kind]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and CRC."""
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def write_png(path: Path, pixels: np.ndarray, chunks: tuple[tuple[bytes, bytes], ...] = ()) -> Path:
    """Write an 8- or 16-bit PNG without Pillow, rows filtered with types 0-4 in turn.

    Pillow cannot write 16-bit colour PNG; cycling through the five filter
    types makes a decoder meet each of them.  ``chunks`` go before the pixels.
    """
    depth = 16 if pixels.dtype == np.uint16 else 8
    data = np.asarray(pixels, dtype=">u2" if depth == 16 else np.uint8)
    h, w = data.shape[:2]
    channels = 1 if data.ndim == 2 else data.shape[2]
    step = channels * depth // 8
    rows = [data[y].tobytes() for y in range(h)]
    raw = bytearray()
    for y, row in enumerate(rows):
        kind = y % 5
        prev = rows[y - 1] if y else bytes(len(row))
        raw.append(kind)
        raw.extend((row[x] - _predict(kind, row, prev, x, step)) & 0xFF for x in range(len(row)))
    header = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                     + b"".join(png_chunk(k, b) for k, b in chunks)
                     + png_chunk(b"IDAT", zlib.compress(bytes(raw))) + png_chunk(b"IEND", b""))
    return path


def read_png(path: Path) -> tuple[np.ndarray, dict[bytes, bytes]]:
    """Decode a non-interlaced 8- or 16-bit PNG without Pillow: (pixels, {chunk type: body})."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, idat = 8, {}, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[position + 8 + length:][:4])[0]
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
        position += 12 + length
    w, h, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert interlace == 0
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    step = channels * depth // 8
    raw = zlib.decompress(idat)
    size = w * step
    prev = bytes(size)
    out = bytearray()
    for y in range(h):
        kind, filtered = raw[y * (size + 1)], raw[y * (size + 1) + 1:(y + 1) * (size + 1)]
        row = bytearray(size)
        for x in range(size):
            row[x] = (filtered[x] + _predict(kind, row, prev, x, step)) & 0xFF
        out += row
        prev = bytes(row)
    pixels = np.frombuffer(bytes(out), ">u2" if depth == 16 else np.uint8)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return pixels.reshape(shape).astype(np.uint16 if depth == 16 else np.uint8), chunks


def srgb_icc_profile() -> bytes:
    """A real ICC profile (Little CMS's sRGB)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def temp_files(folder: Path) -> list[Path]:
    """Temporary files that an interrupted write could have left under ``folder``."""
    return [p for p in folder.rglob("*") if p.name.endswith(".downpool-tmp")]


def png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a PNG file, in order."""
    data = path.read_bytes()
    position, chunks = 8, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunks.append((kind, data[position + 8:position + 8 + length]))
        position += 12 + length
    return chunks


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], start: int, order: str = ">") -> bytes:
    """One TIFF IFD at file offset ``start``: entries (tag, type, count, value bytes),
    values longer than 4 bytes placed after it; no next IFD."""
    count = len(entries)
    data_offset = start + 2 + 12 * count + 4
    table, extra = struct.pack(order + "H", count), b""
    for tag, kind, n, value in sorted(entries):
        if len(value) <= 4:
            table += struct.pack(order + "HHI", tag, kind, n) + value.ljust(4, b"\0")
        else:
            table += struct.pack(order + "HHII", tag, kind, n, data_offset + len(extra))
            extra += value + (b"\0" if len(value) % 2 else b"")
    return table + struct.pack(order + "I", 0) + extra


def exif_block(entries: list[tuple[int, int, int, bytes]], order: str = ">") -> bytes:
    """An EXIF block ("Exif\\0\\0" + a TIFF header + IFD0), written by hand so that it
    can hold what Pillow would not write (a resolution stored as text)."""
    header = (b"MM\x00*" if order == ">" else b"II*\x00") + struct.pack(order + "I", 8)
    return b"Exif\x00\x00" + header + tiff_ifd(entries, 8, order)


def write_tiff(path: Path, pixels: np.ndarray, signed: bool = False) -> Path:
    """An uncompressed one-strip grayscale TIFF of 8- or 16-bit ``pixels`` (SampleFormat 2
    if ``signed``), written by hand: Pillow cannot write signed 16-bit samples."""
    height, width = pixels.shape
    bits = pixels.dtype.itemsize * 8
    data = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()
    short = lambda v: struct.pack("<H", v)  # noqa: E731
    long = lambda v: struct.pack("<I", v)  # noqa: E731
    entries = [(256, 4, 1, long(width)), (257, 4, 1, long(height)), (258, 3, 1, short(bits)),
               (259, 3, 1, short(1)), (262, 3, 1, short(1)), (273, 4, 1, long(0)),
               (277, 3, 1, short(1)), (278, 4, 1, long(height)), (279, 4, 1, long(len(data))),
               (339, 3, 1, short(2 if signed else 1))]
    ifd_size = len(tiff_ifd(entries, 8, "<"))
    entries[5] = (273, 4, 1, long(8 + ifd_size))
    path.write_bytes(b"II*\x00" + long(8) + tiff_ifd(entries, 8, "<") + data)
    return path


def write_bmp565(path: Path, red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> Path:
    """A 16-bit BMP with BI_BITFIELDS masks 5-6-5 (0..31, 0..63, 0..31 per channel)."""
    height, width = red.shape
    packed = (red.astype(np.uint16) << 11) | (green.astype(np.uint16) << 5) | blue.astype(np.uint16)
    row_bytes = (width * 2 + 3) // 4 * 4
    rows = b"".join(packed[y].astype("<u2").tobytes().ljust(row_bytes, b"\0")
                    for y in range(height - 1, -1, -1))  # bottom-up
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 16, 3, len(rows), 2835, 2835, 0, 0)
    masks = struct.pack("<III", 0xF800, 0x07E0, 0x001F)
    offset = 14 + len(info) + len(masks)
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset)
                     + info + masks + rows)
    return path
