"""The threads every CPU kernel runs on: serial ``nogil`` kernels over ranges of output rows.

Serial kernels compile in about half the time of ``prange`` ones, and no call
starts Numba's threading layer; each writes straight into the output, so
nothing of the image's size is allocated.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["thread_pool", "kernel_threads", "run_rows", "map_on_threads"]

_POOLS: dict[int, ThreadPoolExecutor] = {}


_POOLS_LOCK = threading.Lock()  # a batch's file threads may ask for the first pool at once


#: Below this many values read and written a call runs on the calling thread alone.
_MIN_PARALLEL = 1 << 14


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` threads for nogil kernels, made on first use."""
    pool = _POOLS.get(threads)
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.get(threads)
            if pool is None:
                pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="downpool")
    return pool


def kernel_threads() -> int:
    """The kernels' thread count: ``numba.get_num_threads()``, so that ``NUMBA_NUM_THREADS``
    and ``numba.set_num_threads`` govern them as they would Numba's own parallel loops
    (which no CPU kernel uses)."""
    import numba

    return numba.get_num_threads()


def map_on_threads(function, items: list) -> list:
    """``[function(item) for item in items]``, on the kernels' threads where there are
    several: for work that runs without the GIL (NumPy copies, Pillow's quantiser)."""
    threads = min(kernel_threads(), len(items))
    if threads <= 1:
        return [function(item) for item in items]
    return list(thread_pool(threads).map(function, items))


def run_rows(kernel, out: np.ndarray, *args) -> None:
    """``kernel(*args, i0, i1)`` for ranges of ``out``'s rows that split them between threads.

    The thread count is :func:`kernel_threads`.  The first, empty range runs on the
    calling thread, so
    that a kernel that has to be compiled is compiled once, there.  The work
    is counted as the values of ``out`` and of ``args[0]``, the image every
    kernel reads: a thumbnail of a large image is worth splitting too.
    """
    n_rows = out.shape[0]
    threads = min(kernel_threads(), n_rows)
    kernel(*args, 0, 0)
    if threads <= 1 or out.size + args[0].size < _MIN_PARALLEL:
        kernel(*args, 0, n_rows)
        return
    pool = thread_pool(threads)
    bounds = [n_rows * t // threads for t in range(threads + 1)]
    jobs = [pool.submit(kernel, *args, bounds[t], bounds[t + 1]) for t in range(threads)]
    for job in jobs:
        job.result()
