"""Helpers shared by the tests: the dtypes an image may have and the makers of random images.

``tests/conftest.py`` puts this folder on ``sys.path``, so ``from helpers import ...``
works from every test module (and from ``tests/test_cuda.py``'s own process).
Command-line helpers are in ``cli_helpers``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DTYPES", "random_image", "textured_image", "smooth_image"]

#: The image dtypes of SPEC section 1.
DTYPES = [np.uint8, np.uint16, np.float32, np.float64]


def random_image(shape: tuple[int, ...], dtype=np.uint8, seed: int | np.random.Generator = 0, *,
                 layout: int | str | None = None, lo: float = 0.0, hi: float = 1.0,
                 extremes: bool = False) -> np.ndarray:
    """Uniform random pixels: integer dtypes over their whole range, floats in ``[lo, hi)``.

    Parameters
    ----------
    shape
        The image's shape; with ``layout`` an int, ``shape`` is (H, W) and gets
        that many channels (``None`` or ``"2d"``: ``shape`` as it is).
    seed
        An int, or a :class:`numpy.random.Generator` that is drawn from (so that a
        test's images continue one random sequence).
    extremes
        Set a few pixels (one in twenty, twice) of an integer image to 0 and to the
        dtype's maximum, so that saturation is exercised.
    """
    if layout is not None and layout != "2d":
        shape = (*shape, layout)
    rng = np.random.default_rng(seed)  # a Generator is returned as it is
    dtype = np.dtype(dtype)
    if dtype.kind != "u":
        return (lo + (hi - lo) * rng.random(shape)).astype(dtype)
    top = int(np.iinfo(dtype).max)
    image = rng.integers(0, top + 1, size=shape).astype(dtype)
    if extremes:
        flat = image.reshape(-1)
        n = max(1, flat.size // 20)
        flat[rng.integers(0, flat.size, n)] = 0
        flat[rng.integers(0, flat.size, n)] = top
    return image


def textured_image(shape: tuple[int, ...], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Random integer pixels at half range over a left-to-right ramp (to a third of the range):
    texture and a gradient, so that the pooling methods give different results."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    base = rng.integers(0, top, size=shape, dtype=np.int64)
    ramp = np.linspace(0, top // 3, shape[1], dtype=np.int64)
    ramp = ramp[None, :] if len(shape) == 2 else ramp[None, :, None]
    return np.clip(base // 2 + ramp, 0, top).astype(dtype)


def smooth_image(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Gradients with a little noise: uint8 content that JPEG keeps close, for lossy formats."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    y, x = np.mgrid[0:h, 0:w]
    channels = [(40 + 150 * x / max(w - 1, 1) + 30 * (k % 2) * y / max(h - 1, 1)) for k in range(c)]
    base = np.stack(channels, axis=-1) + rng.normal(0, 3, size=shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)
