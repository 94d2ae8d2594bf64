"""Helpers shared by the tests: the dtypes an image may have and the makers of random images.

``tests/conftest.py`` puts this folder on ``sys.path``, so ``from helpers import ...``
works from every test module (and from ``tests/test_cuda.py``'s own process).
Command-line helpers are in ``cli_helpers``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DTYPES", "random_image"]

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
