"""The range of a float image, and whether it holds a NaN or an inf, in one threaded pass."""

from __future__ import annotations

import numpy as np

from .numba_idioms import jit
from .threads import thread_pool

__all__ = ["float_range"]

@jit(nogil=True)
def _bits_range(bits, magnitude, shift, i0, i1, out):
    """Over ``bits[i0:i1]``, a float array's bits as signed integers of its width:
    ``out[0]`` the largest magnitude (its bits without the sign; at or above
    the exponent's mask it is a NaN or an inf), ``out[1]`` and ``out[2]`` the
    least and greatest ordering key.

    The key ``b ^ ((b >> shift) & magnitude)`` orders as the floats do (a
    negative float's other bits count down), so one pass of integer min and
    max, which LLVM vectorises, does what NumPy's ``min``, ``max`` and a
    finiteness test do in three.
    """
    top = out[0]
    lo = out[1]
    hi = out[2]
    view = bits[i0:i1]  # a loop from 0 vectorises (downpool.numba_idioms)
    for x in range(view.shape[0]):
        b = view[x]
        a = b & magnitude
        top = a if a > top else top
        key = b ^ ((b >> shift) & magnitude)
        lo = key if key < lo else lo
        hi = key if key > hi else hi
    out[0] = top
    out[1] = lo
    out[2] = hi


def float_range(image: np.ndarray, threads: int | None = None) -> tuple[float, float] | None:
    """``(min, max)`` of a C-contiguous float32 or float64 array in one pass over it,
    split between ``threads`` threads (default: Numba's, at most one per 2^20
    values); None where it holds a NaN or an inf.

    Every float method needs the range, and SPEC 1 refuses NaN and inf:
    NumPy's ``min`` and ``max`` took longer than ``avg``'s kernel itself.
    """
    import numba

    ints = np.int32 if image.dtype == np.float32 else np.int64
    info = np.iinfo(ints)
    bits = image.reshape(-1).view(ints)
    magnitude, shift = ints(info.max), ints(8 * bits.itemsize - 1)
    if threads is None:
        threads = max(1, min(numba.get_num_threads(), bits.size >> 20))
    threads = max(1, min(threads, bits.size))
    parts = np.empty((threads, 3), dtype=ints)
    parts[:] = (0, info.max, info.min)
    bounds = [bits.size * t // threads for t in range(threads + 1)]
    if threads == 1:
        _bits_range(bits, magnitude, shift, 0, bits.size, parts[0])
    else:
        _bits_range(bits, magnitude, shift, 0, 0, parts[0])  # compiles here, once
        pool = thread_pool(threads)
        jobs = [pool.submit(_bits_range, bits, magnitude, shift, bounds[t], bounds[t + 1], parts[t])
                for t in range(threads)]
        for job in jobs:
            job.result()
    exponent = np.array(np.inf, dtype=image.dtype).view(ints)
    if parts[:, 0].max() >= exponent:
        return None
    keys = np.array([parts[:, 1].min(), parts[:, 2].max()], dtype=ints)
    lo, hi = (keys ^ ((keys >> shift) & magnitude)).view(image.dtype)
    return float(lo), float(hi)
