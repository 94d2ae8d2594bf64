"""Helpers for the end-to-end tests of the ``downpool`` command.

The tests run the installed console script in a subprocess, as a user would,
on image files they write with Pillow (or, for 16-bit colour PNG, which
Pillow cannot write or read, with :func:`write_png` and :func:`read_png`).
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

__all__ = ["downpool_command", "run_downpool", "random_image", "smooth_image", "save", "load",
           "srgb_icc_profile", "temp_files", "write_png", "read_png"]


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


def random_image(shape: tuple[int, ...], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth-ish random pixels, so that pooling methods give different results."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    base = rng.integers(0, top, size=shape, dtype=np.int64)
    ramp = np.linspace(0, top // 3, shape[1], dtype=np.int64)
    ramp = ramp[None, :] if len(shape) == 2 else ramp[None, :, None]
    return np.clip(base // 2 + ramp, 0, top).astype(dtype)


def smooth_image(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Gradients with a little noise: content that JPEG keeps close, for lossy formats."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    y, x = np.mgrid[0:h, 0:w]
    channels = [(40 + 150 * x / max(w - 1, 1) + 30 * (k % 2) * y / max(h - 1, 1)) for k in range(c)]
    base = np.stack(channels, axis=-1) + rng.normal(0, 3, size=shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


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


def _chunk(kind: bytes, body: bytes) -> bytes:
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
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + b"".join(_chunk(k, b) for k, b in chunks)
                     + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b""))
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
