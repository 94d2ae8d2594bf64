"""The Numba idioms every kernel uses, each with its reason, stated once here.

- Every jitted function is compiled through :func:`jit`: ``cache=True``, no
  eager signatures (a kernel compiles for the dtypes it meets), and the other
  flags at the use.  Kernels that threads share (:func:`downpool.threads.run_rows`)
  are ``nogil=True``.
- Numba does not inline one jitted function into another by itself, and a call
  per pixel costs more than its arithmetic: helpers called per pixel are
  ``inline="always"``, and a cached helper is inlined elsewhere through
  :func:`inlined` (its source compiled again).
- Compile-time constants (a block's sides, a channel count, a variant) reach a
  kernel as the lengths of tuples of zeros (:func:`known`): Numba folds
  ``len`` of an argument tuple to a constant and prunes the branches it
  decides before typing, so that a kernel types its own variant alone, and LLVM
  unrolls and vectorises loops of constant length.  Only tests in the kernel's
  own body are pruned, not those in an inlined function.
- No slice assignment (``a[:] = v``) in kernels: it compiles shape checks with
  string messages, which lengthen a first call (:func:`fill`).
- Loops run over views from index 0: Numba wraps negative indices, and a loop
  from a run-time start keeps LLVM from proving that an index never is one.
- Selects (``v if v > m else m``) instead of ``max`` and ``min`` in loops that
  must vectorise, and ``error_model="numpy"`` on kernels that divide (a division
  is then an instruction, not a test for zero that raises).
- A pedantic SSA self-check of Numba's warns ("variable ... is not in scope")
  when inlined helpers are compiled into a kernel; the code is right (the tests
  check it against the reference), so the warning is filtered.

Besides, the arithmetic a block's windows share: sums, maxima and means of a
window read from the image as rows (:func:`downpool.core.as_rows`), and the
rounding of a working value into the output's dtype.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import njit, types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import overload

from .numba_warnings import NUMBA_SCOPE_WARNING

__all__ = ["jit", "inlined", "known", "fill", "stored", "store", "store_pixel", "power",
           "power_inlined", "window_max", "window_mean", "block_sum", "block_max", "block_mean",
           "column_sums", "fold_windows", "row_float", "row_buffer", "ROW_CHUNK"]

# The warning is attributed to the kernel's own line, so it is matched by its
# message rather than by the module that raises it.
warnings.filterwarnings("ignore", message=NUMBA_SCOPE_WARNING, category=NumbaIRAssumptionWarning)


def jit(function=None, **flags):
    """``numba.njit`` with ``cache=True`` and ``flags``: every jitted function of downpool."""
    flags = {"cache": True, **flags}
    return njit(**flags) if function is None else njit(**flags)(function)


def inlined(function):
    """A jitted ``function`` compiled again to be inlined where it is called; not cached
    itself (only its source is used)."""
    return njit(inline="always")(function.py_func)


@jit(inline="always")
def known(dims, value):
    """``len(dims)``, a compile-time constant, unless ``dims`` is empty; then ``value``."""
    return len(dims) if len(dims) > 0 else value


@jit
def fill(values, value):
    """``values[:] = value`` as a loop: a slice assignment compiles shape checks
    with string messages, which lengthen a kernel's first call."""
    for x in range(values.shape[0]):
        values[x] = value


@jit
def stored(v, out_max, out_int):
    """A working value as the output dtype stores it: integers scaled, rounded half up, clipped."""
    if out_int:
        return min(max(math.floor(v * out_max + 0.5), 0.0), out_max)
    return v


@jit
def power(x, e):
    """``x ** e`` with the common exponents made cheap (dpp and dpid's default lam=1)."""
    if e == 0.5:
        return math.sqrt(x)
    if e == 1.0:
        return x
    if e == 2.0:
        return x * x
    return x ** e


@jit
def window_max(img, in_scale, y0, ny, x0, nx, c):
    m = -np.inf
    for r in range(ny):
        for s in range(nx):
            m = max(m, img[y0 + r, x0 + s, c] * in_scale)
    return m


@jit
def window_mean(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, c):
    acc = 0.0
    for r in range(ny):
        for s in range(nx):
            acc += yw[i, r] * xw[j, s] * img[y0 + r, x0 + s, c]
    return acc * in_scale


#: ``power`` inlined where it is called.
power_inlined = inlined(power)

@jit
def store_pixel(out, i, j, res, out_max, out_int):
    for c in range(res.shape[0]):
        out[i, j, c] = stored(res[c], out_max, out_int)


def store(v, out_max, out):
    """A working value as ``out`` stores it (:func:`stored`, typed on ``out``)."""


@overload(store, inline="always")
def _store_impl(v, out_max, out):
    if isinstance(out.dtype, types.Integer):
        def impl(v, out_max, out):
            # Written out rather than with min/max and math.floor: those went
            # through an int64 round trip and a call that kept LLVM from
            # vectorising the loops that store.
            x = np.floor(v * out_max + 0.5)
            x = x if x > 0.0 else 0.0
            return x if x < out_max else out_max
        return impl

    def impl_float(v, out_max, out):
        return v
    return impl_float


@jit(inline="always")
def block_sum(rows, y0, ny, x0, nx, channels, c, acc):
    """``acc`` plus the window's stored values of channel ``c``."""
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            acc += src[(x0 + t) * channels + c]
    return acc


@jit(inline="always")
def block_max(rows, y0, ny, x0, nx, channels, c):
    m = rows[y0, x0 * channels + c]
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            # A select, as max(m, v) picks (m unless v > m): Numba's ``max`` keeps
            # LLVM from vectorising the kernel's loop.
            v = src[(x0 + t) * channels + c]
            m = v if v > m else m
    return m


def block_mean(rows, y0, ny, x0, nx, channels, c, in_scale):
    """The window's mean working value."""


@overload(block_mean, inline="always")
def _block_mean_impl(rows, y0, ny, x0, nx, channels, c, in_scale):
    if isinstance(rows.dtype, types.Integer):
        def impl(rows, y0, ny, x0, nx, channels, c, in_scale):
            # Integer sums: exact, and faster than float ones.
            return block_sum(rows, y0, ny, x0, nx, channels, c, 0) * (in_scale / (ny * nx))
        return impl

    def impl_float(rows, y0, ny, x0, nx, channels, c, in_scale):
        # Terms scaled first, so that float sums cannot overflow.
        scale = in_scale / (ny * nx)
        acc = 0.0
        for r in range(ny):
            src = rows[y0 + r]
            for t in range(nx):
                acc += src[(x0 + t) * channels + c] * scale
        return acc
    return impl_float


@jit(inline="always")
def column_sums(rows, y0, ny, start, length, scale, sums):
    """``sums[x]``: the sum of ``rows[y0 + r, start + x] * scale`` over ``ny`` rows, the
    first step of a row's window means made along the contiguous row (``sums``
    a view from 0: see the module)."""
    for x in range(length):
        sums[x] = 0.0
    for r in range(ny):
        src = rows[y0 + r, start:start + length]
        for x in range(length):
            sums[x] += src[x] * scale


#: Rows a row pass sums in its working float before it folds the sums into
#: float64: sums of at most 64 terms keep float32's relative error below
#: 64 * 2^-24 = 4e-6 (SPEC: 1e-5).
ROW_CHUNK = 64


def row_float(rows, x):
    """``x`` in the working float of the row passes over ``rows``: float32 for 8- and
    16-bit images (exact for their values; SPEC 1 asks for float32
    arithmetic with 1e-5 accuracy), float64 for float images, whose range
    float32 may not hold."""


@overload(row_float)
def _row_float_impl(rows, x):
    if isinstance(rows.dtype, types.Integer) and rows.dtype.bitwidth <= 16:
        return lambda rows, x: np.float32(x)
    return lambda rows, x: np.float64(x)


def row_buffer(rows, n):
    """A new array of ``n`` values of :func:`row_float`'s working float.

    Buffers of their own, not views of the kernel's float64 scratch rows as
    float32: a ``view`` adds about 1.4 s to the compiling of a function that
    takes one, and LLVM can tell separate buffers apart (views of one array
    it cannot, which kept loops scalar)."""


@overload(row_buffer)
def _row_buffer_impl(rows, n):
    if isinstance(rows.dtype, types.Integer) and rows.dtype.bitwidth <= 16:
        return lambda rows, n: np.empty(n, np.float32)
    return lambda rows, n: np.empty(n)


@jit
def fold_windows(values, n_windows, block_w, channels, totals):
    """``totals[j * channels + c] +=`` the sum of channel c of ``values`` over window j's
    ``block_w`` columns, in float64."""
    for j in range(n_windows):
        for c in range(channels):
            acc = 0.0
            for t in range(block_w):
                acc += values[(j * block_w + t) * channels + c]
            totals[j * channels + c] += acc
