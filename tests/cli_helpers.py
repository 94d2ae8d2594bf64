"""Helpers for the end-to-end tests of the ``downpool`` command.

The tests run the installed console script in a subprocess, as a user would,
on image files they write with Pillow (or, for 16-bit colour PNG, which
Pillow cannot write, with :func:`write_png16`).
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

__all__ = ["downpool_command", "run_downpool", "random_image", "smooth_image", "save", "load", "write_png16",
           "srgb_icc_profile", "temp_files"]


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


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """Write a 16-bit PNG (gray, gray+alpha, RGB or RGBA) without Pillow."""
    data = np.asarray(pixels, dtype=">u2")
    h, w = data.shape[:2]
    channels = 1 if data.ndim == 2 else data.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + data[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def srgb_icc_profile() -> bytes:
    """A real ICC profile (Little CMS's sRGB)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def temp_files(folder: Path) -> list[Path]:
    """Temporary files that an interrupted write could have left under ``folder``."""
    return [p for p in folder.rglob("*") if p.name.endswith(".downpool-tmp")]
