"""Numba CPU kernels for block geometry: windows that tile the image.

When the windows of both axes are consecutive blocks (integer pooling with a
stride equal to the kernel, or a ``size``/``scale`` that divides the image's
size), every pixel of a window has the same coverage, so the coverages drop
out of every formula and one kernel, :func:`pool_kernel`, serves every
method: it walks the output rows and hands each window to the method's
window function. The method is the length of an argument tuple, so Numba
prunes the other methods' branches before it types the kernel (see
:func:`pool_kernel`).

The commonest block (:data:`CONSTANT_BLOCKS`, halving) of the commonest
images (:data:`CONSTANT_CHANNELS`, :data:`CONSTANT_DTYPES`) is compiled in
as *compile-time constants*, passed as the lengths of tuples of zeros: LLVM
then unrolls the window loops and vectorises across windows (avg about five
times faster than with run-time sizes, dpp about three times).  Vectorising
needs loops without calls or branches that raise: hence
``error_model="numpy"`` (no test for division by zero) and the rounding of
:func:`_store` written with float selects.  Every other block and channel
count shares one kernel with run-time values (empty tuples); the partial
windows at the bottom and right edges of a constant kernel's image get a
run-time kernel that makes them one by one, so that the kernels to
compile stay few -- at most four per method and dtype: each
costs seconds of compiling on first use, and with RGBA and float64 as
constants too the reference tests compiled 183 block kernels, against 82
before.

Some methods make a whole output row in passes along its contiguous W*C
values instead (the ``*_row`` functions), where a window's loops cannot
vectorise: stochastic sample (a random pick per window is a branch
mispredicted about every other time, so picks are counted), dpp and RGB dpid
over run-time blocks (too short and strided loops), and softpool on float
input (an exponential per value, vectorised only along a row). softpool
over constant blocks, where the image's range bounds its exponents (beta =
4.4 on 8- and 16-bit images), has a kernel of its own in float32,
:func:`softpool_f32_kernel`.
Loops there run over views from index 0: Numba wraps negative indices, and
a loop from a run-time start keeps LLVM from proving the index never is.
dpp's and dpid's passes work in float32 on 8- and 16-bit images (twice the
values per vector; SPEC 1 allows it), summing at most ``_ROW_CHUNK`` rows
before folding into float64 per window, and keep their sums in buffers of
their own: views of one scratch array LLVM cannot tell apart, which kept
dpid's per-pixel pass scalar. They are compiled apart from the kernel and
called once per row, which keeps the kernel's typing short.

The kernels are serial ``nogil`` functions over a range of output rows;
:func:`run_rows` splits the rows between ``numba.get_num_threads()`` threads.
Serial kernels compile in about half the time of ``prange`` ones, and each
writes straight into ``out``: nothing of the image's size is allocated (dpid
keeps three guide rows per thread), so peak memory is the input plus the
output.

Integer images keep integer arithmetic where the result allows it (the
sums of avg and of every window mean, max).  The other formulas are those
of :mod:`downpool.windows` with equal coverages and float64 accumulators
(but for dpp's and dpid's row passes above),
in the same order of operations where a result is discrete (stochastic
sampling's pick).  dpp and dpid have two forms: for their default exponent
lam = 1, the SPEC's weights as they stand, a square root per pixel, where
the caller has checked that no weight can overflow or vanish (``*_DIRECT``:
one pass less and no division or power per pixel); and for any lam,
weights relative to the window's largest distance, which no exponent or
value can overflow.
"""

from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import intrinsic, overload

from .core import NUMBA_SCOPE_WARNING, PoolJob, as_rows
from .geometry import block_length
from .windows import DPP_EPS2, dpp_scaling, power, selection_value, uniform_draw_after

# The shared helpers, compiled again to be inlined: Numba does not inline one
# jitted function into another by itself, and a call per pixel costs more
# than the arithmetic.  Not cached: only their source is used, inlined.
_power = njit(inline="always")(power.py_func)
_selection_value = njit(inline="always")(selection_value.py_func)
_dpp_scaling = njit(inline="always")(dpp_scaling.py_func)

__all__ = ["CONSTANT_BLOCKS", "CONSTANT_CHANNELS", "CONSTANT_DTYPES", "BlockPlan", "block_plan",
           "run_rows", "pool_kernel", "pool_blocks"]

# Inlining the window functions into the kernel below trips a
# pedantic SSA self-check of Numba's (variables "not in scope" across the
# inlined blocks); the compiled code is right, as the tests check against
# the reference, so users are not shown it.
# The warning is attributed to the kernel's own line, so it is matched by its
# message rather than by the module that raises it.
warnings.filterwarnings("ignore", message=NUMBA_SCOPE_WARNING, category=NumbaIRAssumptionWarning)

#: Square block sides compiled as constants; other blocks use run-time sizes.
CONSTANT_BLOCKS = (2,)
#: Channel counts compiled as constants (grey, RGB) with a constant block.
CONSTANT_CHANNELS = (1, 3)
#: Image dtypes compiled with constant sizes (float64 is rare in image files).
CONSTANT_DTYPES = ("uint8", "uint16", "float32")

# The window function of each method, passed as the length of a tuple.
AVG = 1
MAX = 2
LP_TABLE = 3
LP = 4
SOFTPOOL_TABLE = 5
SOFTPOOL = 6
EXPECTATION = 7
DPP_SYM = 8
DPP_ASYM = 9
DPP_SYM_DIRECT = 10
DPP_ASYM_DIRECT = 11
SAMPLE = 12
DPID = 13
DPID_DIRECT = 14
RMS = 15
SOFTPOOL_F32 = 16

# dpp and dpid for lam other than 1: rarely used, so not worth compiling
# kernels with constant sizes for.
_RUNTIME_ONLY = (DPP_SYM, DPP_ASYM, DPID)
#: dpp's direct forms, whose full windows of run-time size are made in passes
#: along the row (:func:`_dpp_direct_row`).
_DPP_DIRECT = (DPP_SYM_DIRECT, DPP_ASYM_DIRECT)


class BlockPlan(tuple):
    """``(dims, sizes)``: the compile-time and run-time block geometry of a job.

    ``dims`` is ``(kh_dims, kw_dims, c_dims)``, tuples whose lengths are the
    constants compiled in (empty: the run-time value is used); ``sizes`` is
    ``(block_h, block_w)``.
    """

    __slots__ = ()

    @property
    def constant(self) -> bool:
        """Whether the block sizes are compiled in (then the kernel unrolls and vectorises)."""
        return len(self[0][0]) > 0


def block_plan(job: PoolJob) -> BlockPlan | None:
    """The block geometry of ``job`` for :func:`pool_kernel`, or None where it does not apply.

    None where the windows are not consecutive blocks on both axes, or an
    integer image is not written to its own dtype (the kernels keep integer
    sums and stored values there).
    """
    if job.image.dtype.kind == "u" and not (job.out_int and job.out.dtype == job.image.dtype):
        return None
    kh = block_length(job.rows) if job.block_rows is None else (job.block_rows or None)
    kw = block_length(job.cols)
    if kh is None or kw is None:
        return None
    constant = (kh == kw and kh in CONSTANT_BLOCKS and job.image.shape[2] in CONSTANT_CHANNELS
                and job.image.dtype.name in CONSTANT_DTYPES)
    channels = job.image.shape[2]
    if not constant:
        return BlockPlan((((), (), ()), (kh, kw)))  # every size at run time
    dims = ((0,) * kh, (0,) * kw, (0,) * channels)
    return BlockPlan((dims, (kh, kw)))


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


def run_rows(kernel, out: np.ndarray, *args) -> None:
    """``kernel(*args, i0, i1)`` for ranges of ``out``'s rows that split them between threads.

    The thread count is ``numba.get_num_threads()``, so ``NUMBA_NUM_THREADS``
    and ``numba.set_num_threads`` govern these kernels as they would
    Numba's own parallel loops (which no CPU kernel uses).  The first, empty range runs on the calling thread, so
    that a kernel that has to be compiled is compiled once, there.  The work
    is counted as the values of ``out`` and of ``args[0]``, the image every
    kernel reads: a thumbnail of a large image is worth splitting too.
    """
    import numba

    n_rows = out.shape[0]
    threads = min(numba.get_num_threads(), n_rows)
    kernel(*args, 0, 0)
    if threads <= 1 or out.size + args[0].size < _MIN_PARALLEL:
        kernel(*args, 0, n_rows)
        return
    pool = thread_pool(threads)
    bounds = [n_rows * t // threads for t in range(threads + 1)]
    jobs = [pool.submit(kernel, *args, bounds[t], bounds[t + 1]) for t in range(threads)]
    for job in jobs:
        job.result()


# --- shared pieces -------------------------------------------------------------


@njit(cache=True, inline="always")
def _known(dims, value):
    """``len(dims)``, a compile-time constant, unless ``dims`` is empty; then ``value``."""
    return len(dims) if len(dims) > 0 else value


def _window_mean(rows, y0, ny, x0, nx, channels, c, in_scale):
    """The window's mean working value."""


@overload(_window_mean, inline="always")
def _window_mean_impl(rows, y0, ny, x0, nx, channels, c, in_scale):
    if isinstance(rows.dtype, types.Integer):
        def impl(rows, y0, ny, x0, nx, channels, c, in_scale):
            # Integer sums, exact and about three times faster than float ones.
            return _window_sum(rows, y0, ny, x0, nx, channels, c, 0) * (in_scale / (ny * nx))
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


@njit(cache=True, inline="always")
def _column_sums(rows, y0, ny, start, length, scale, sums):
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
_ROW_CHUNK = 64


def _row_float(rows, x):
    """``x`` in the working float of the row passes over ``rows``: float32 for 8- and
    16-bit images (exact for their values; SPEC 1 asks for float32
    arithmetic with 1e-5 accuracy), float64 for float images, whose range
    float32 may not hold."""


@overload(_row_float)
def _row_float_impl(rows, x):
    if isinstance(rows.dtype, types.Integer) and rows.dtype.bitwidth <= 16:
        return lambda rows, x: np.float32(x)
    return lambda rows, x: np.float64(x)


def _row_buffer(rows, n):
    """A new array of ``n`` values of :func:`_row_float`'s working float.

    Buffers of their own, not views of the kernel's float64 scratch rows as
    float32: a ``view`` adds about 1.4 s to the compiling of a function that
    takes one, and LLVM can tell separate buffers apart (views of one array
    it cannot, which kept loops scalar)."""


@overload(_row_buffer)
def _row_buffer_impl(rows, n):
    if isinstance(rows.dtype, types.Integer) and rows.dtype.bitwidth <= 16:
        return lambda rows, n: np.empty(n, np.float32)
    return lambda rows, n: np.empty(n)


@njit(cache=True)
def fill(values, value):
    """``values[:] = value`` as a loop: a slice assignment compiles shape checks
    with string messages, seconds of a kernel's first call."""
    for x in range(values.shape[0]):
        values[x] = value


@njit(cache=True)
def _fold_windows(values, n_windows, block_w, channels, totals):
    """``totals[j * channels + c] +=`` the sum of channel c of ``values`` over window j's
    ``block_w`` columns, in float64."""
    for j in range(n_windows):
        for c in range(channels):
            acc = 0.0
            for t in range(block_w):
                acc += values[(j * block_w + t) * channels + c]
            totals[j * channels + c] += acc


@njit(cache=True, inline="always")
def _window_sum(rows, y0, ny, x0, nx, channels, c, acc):
    """``acc`` plus the window's stored values of channel ``c``."""
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            acc += src[(x0 + t) * channels + c]
    return acc


@njit(cache=True, inline="always")
def _window_max(rows, y0, ny, x0, nx, channels, c):
    m = rows[y0, x0 * channels + c]
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            # A select, as max(m, v) picks (m unless v > m): Numba's ``max`` kept
            # LLVM from vectorising the kernel's loop (2.6x slower on 24 MP RGB).
            v = src[(x0 + t) * channels + c]
            m = v if v > m else m
    return m


def _block_mean(rows, y0, ny, x0, nx, channels, c, in_scale):
    """avg's stored result: integer images are summed and rounded half up in integers."""


@overload(_block_mean, inline="always")
def _block_mean_impl(rows, y0, ny, x0, nx, channels, c, in_scale):
    if isinstance(rows.dtype, types.Integer):
        def impl(rows, y0, ny, x0, nx, channels, c, in_scale):
            n = ny * nx
            return (_window_sum(rows, y0, ny, x0, nx, channels, c, 0) + n // 2) // n
        return impl

    def impl_float(rows, y0, ny, x0, nx, channels, c, in_scale):
        return _window_mean(rows, y0, ny, x0, nx, channels, c, in_scale)
    return impl_float


def _store(v, out_max, out):
    """A working value as ``out`` stores it (:func:`downpool.windows.stored`, typed on ``out``)."""


@overload(_store, inline="always")
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


# --- lp, softpool, stochastic expectation -------------------------------------------


@njit(cache=True, inline="always")
def _lp_table_window(rows, y0, ny, x0, nx, channels, c, table, inv_p):
    s = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            # The cast lets float images compile this function; they never call it.
            s += table[np.intp(src[(x0 + t) * channels + c])]  # a^p
    return _power(s / (ny * nx), inv_p)


@njit(cache=True, inline="always")
def _rms_window(rows, y0, ny, x0, nx, channels, c, in_scale):
    """lp with p = 2 on an integer or float32 image: squares of stored values in
    float64 (exact for integers; no float32 value's square overflows or underflows)."""
    s = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            v = np.float64(src[(x0 + t) * channels + c])
            s += v * v
    return in_scale * math.sqrt(s / (ny * nx))


@njit(cache=True, inline="always")
def _lp_window(rows, y0, ny, x0, nx, channels, c, in_scale, p, inv_p):
    # Relative to the window's maximum m: m * mean((a/m)^p)^(1/p), for any p.
    m = _window_max(rows, y0, ny, x0, nx, channels, c)
    if m <= 0:
        return 0.0
    s = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            # A division, not a reciprocal: a flat window gives exactly 1.
            s += _power(src[(x0 + t) * channels + c] / m, p)
    return m * in_scale * _power(s / (ny * nx), inv_p)


@njit(cache=True, inline="always")
def _softpool_table_window(rows, y0, ny, x0, nx, channels, c, tables):
    num = 0.0
    den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            v = 2 * np.intp(src[(x0 + t) * channels + c])
            num += tables[v]  # a e^(beta (a - ref))
            den += tables[v + 1]  # e^(beta (a - ref))
    return num / den


def _bitcast(source, target):
    """An intrinsic that reads a ``source`` scalar's bits as a ``target`` of the same
    width: a bitcast, which LLVM vectorises."""
    @intrinsic
    def bitcast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))
        return target(source), codegen
    return bitcast


_float_bits = _bitcast(types.float64, types.int64)
_bits_float = _bitcast(types.int64, types.float64)
_float32_bits = _bitcast(types.float32, types.int32)
_bits_float32 = _bitcast(types.int32, types.float32)


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm's): n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 * 2**52: x + _ROUND has round(x) in its low bits


@njit(cache=True, forceinline=True, fastmath={"contract"})
def _exp_nonpositive(x):
    """e^x for x <= 0, within 1e-14 relative of ``math.exp``; 0 below -708.

    ``math.exp`` is a call to libm that LLVM makes one value at a time; this
    one is arithmetic and bitcasts, which vectorise (softpool on float32 RGB
    about 3x faster). e^x = 2^n e^r with n = round(x / ln 2), |r| <= ln(2)/2,
    e^r by its Taylor series to r^11 (the next term is below 1e-15), 2^n made
    from its exponent bits. Below -708, 2^n would be subnormal; such a weight
    is under 1e-307 of the window's largest (1), and is dropped.
    """
    y = max(x, -708.0)
    t = y * _LOG2E + _ROUND
    n = t - _ROUND
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    two_n = _bits_float((_float_bits(t) - _float_bits(_ROUND) + 1023) << 52)
    return p * two_n if x >= -708.0 else 0.0


# softpool in float32 (SOFTPOOL_F32): 2^x as arithmetic on eight lanes. The
# exponents are bounded (``cpu._softpool_in_float32`` takes images where
# beta * |a - ref| <= 8, so |x| <= 8 / ln 2 < 12), so neither 2^x nor a term
# e * a can leave float32's normal range.
_F32_ROUND = np.float32(12582912.0)  # 1.5 * 2**23: x + _F32_ROUND has round(x) in its low bits
_F32_ROUND_BITS = np.int32(np.array([_F32_ROUND]).view(np.int32)[0])
# 2^f on [-1/2, 1/2], a degree-5 polynomial fitted to the relative error
# (Lawson's iteration on Chebyshev nodes): within 7.5e-8 of 2^f, about float32's
# own rounding, where the Taylor series to f^5 is 30 times farther off.
_EXP2_C5 = np.float32(0.0013276471964577007)
_EXP2_C4 = np.float32(0.009675541739150917)
_EXP2_C3 = np.float32(0.055507132771198356)
_EXP2_C2 = np.float32(0.24022119716405663)
_EXP2_C1 = np.float32(0.6931469670603315)
_EXP2_C0 = np.float32(1.0000000716561699)
_F32_HALF = np.float32(0.5)
_F32_ZERO = np.float32(0.0)


@njit(cache=True, forceinline=True, fastmath={"contract"})
def _exp2_f32(x):
    """2^x for a float32 |x| <= 126, within 2.2e-7 relative, in float32 arithmetic
    that LLVM vectorises eight values at a time.

    2^x = 2^n 2^f with n = round(x) (from the low bits of x + 1.5 * 2^23, where
    a float32 keeps no fraction), f = x - n in [-1/2, 1/2] (exact), 2^f by
    the polynomial above, and the factor 2^n added to its exponent bits.
    """
    t = x + _F32_ROUND
    n = t - _F32_ROUND
    f = x - n
    p = _EXP2_C5
    p = p * f + _EXP2_C4
    p = p * f + _EXP2_C3
    p = p * f + _EXP2_C2
    p = p * f + _EXP2_C1
    p = p * f + _EXP2_C0
    # 2^n p: n added to p's exponent bits, an integer add rather than a multiply.
    # p is within [2^-1/2, 2^1/2], and at least 1 where n = -126 (x >= -126 makes
    # f >= 0 there), so for |x| <= 126 the result is a normal float32.
    return _bits_float32(_float32_bits(p) + ((_float32_bits(t) - _F32_ROUND_BITS) << np.int32(23)))


def _store_f32(v, in_scale, out_max, out):
    """:func:`_store` for a float32 ``v`` in stored units of the input, in float32."""


@overload(_store_f32, inline="always")
def _store_f32_impl(v, in_scale, out_max, out):
    if isinstance(out.dtype, types.Integer):
        def impl(v, in_scale, out_max, out):
            # Rounded half up as _store rounds; float32 holds every uint16 value.
            x = np.floor(v * np.float32(in_scale * out_max) + _F32_HALF)
            x = x if x > _F32_ZERO else _F32_ZERO
            top = np.float32(out_max)
            return x if x < top else top
        return impl

    def impl_float(v, in_scale, out_max, out):
        return v * np.float32(in_scale)
    return impl_float


@njit(cache=True, inline="always")
def _softpool_f32_exponent(params):
    """``(scale, shift)`` of SOFTPOOL_F32, in float32: the weight of a stored value a is
    2^(a * scale - shift), scale = beta * in_scale / ln 2 and shift = ref * scale
    (``params[3]`` beta, ``params[4]`` ref, in working units)."""
    in_scale = params[0]
    scale = params[3] * in_scale * _LOG2E
    return np.float32(scale), np.float32(params[4] / in_scale * scale)


@njit(cache=True, inline="always")
def _softpool_f32_window(rows, y0, ny, x0, nx, channels, c, scale, shift):
    """One window of SOFTPOOL_F32 (the partial windows at the edges), in stored units,
    with the weights of :func:`_softpool_f32_row`."""
    num = _F32_ZERO
    den = _F32_ZERO
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = np.float32(src[(x0 + t) * channels + c])
            e = _exp2_f32(a * scale - shift)
            num += e * a
            den += e
    return num / den


@njit(cache=True, inline="always")
def _softpool_f32_row(kh_dims, kw_dims, c_dims, rows, y0, n_cols, o, params, num, den, ratio):
    """softpool over the row's ``n_cols`` full blocks of constant size, in float32; returns
    ``n_cols``.

    ``params[3]`` is beta and ``params[4]`` the centre ``ref`` of the image's
    value range, both in working units, where ``cpu.pool_softpool`` has checked
    that ``beta * |a - ref| <= 8`` and ``beta * |a| <= 16`` for every value a. The
    weights, in stored units, are then 2^(a * scale - shift) with ``scale = beta *
    in_scale / ln 2`` and ``shift = ref * scale``, between e^-8 and e^8: no window
    needs its maximum subtracted, and neither they nor a term e * a leave
    float32's normal range. Relative to the float64 formula, the weights are
    within 1.5e-6 (the roundings of a * scale < 24 and of the exponent; those
    of scale and shift scale beta and every weight alike), and a result within
    about that of its window's range (SPEC 1: 1e-5).

    Three passes along the row's contiguous W*C values, each vectorised eight
    float32 values at a time: each column's sums of e * a and of e over the
    block's rows; at every position x, the ratio of the sums over the
    columns x, x + C, ... of a block starting there, rounded as stored (half
    of them are not the start of a block, but a pass over every x vectorises
    where one over the blocks' starts would not); and the blocks' starts
    copied to the output. About 1.3x faster than the float64 tables of
    uint8 input, and 3x faster than float exponentials per window's maximum
    on float32 input. ``num``, ``den`` and ``ratio`` are float32 rows of the
    row's W*C length, allocated apart (LLVM cannot tell views of one array
    apart, and then does not vectorise).
    """
    block_h, block_w, channels = len(kh_dims), len(kw_dims), len(c_dims)
    in_scale, out_max = params[0], params[1]
    # One multiply-add per value, not a subtraction and a multiply.
    scale, shift = _softpool_f32_exponent(params)
    length = n_cols * block_w * channels
    for x in range(length):
        n = _F32_ZERO
        d = _F32_ZERO
        for r in range(block_h):
            a = np.float32(rows[y0 + r, x])
            e = _exp2_f32(a * scale - shift)
            n += e * a
            d += e
        num[x] = n
        den[x] = d
    for x in range(length - (block_w - 1) * channels):
        n = num[x]
        d = den[x]
        for t in range(1, block_w):
            n += num[x + t * channels]
            d += den[x + t * channels]
        ratio[x] = _store_f32(n / d, in_scale, out_max, o)
    for j in range(n_cols):
        for c in range(channels):
            o[j * channels + c] = ratio[j * block_w * channels + c]
    return n_cols


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def softpool_f32_kernel(img, rows, out_rows, kh_dims, kw_dims, c_dims, params, i0, i1):
    """Output rows ``i0`` to ``i1`` of SOFTPOOL_F32 over the image's full blocks, of the
    constant sizes ``len(kh_dims)`` by ``len(kw_dims)`` on ``len(c_dims)``
    channels (:func:`_softpool_f32_row`); ``rows`` and ``out_rows`` as in :func:`pool_kernel`.

    A kernel of its own rather than a method of :func:`pool_kernel`: it
    compiles in about half the time (a first call of softpool is about a
    second shorter). :func:`pool_blocks` runs :func:`pool_kernel` for the
    partial windows of odd-sized images, with :func:`_softpool_f32_window`.
    """
    block_h, block_w, channels = len(kh_dims), len(kw_dims), len(c_dims)
    i1 = min(i1, img.shape[0] // block_h)
    n_cols = img.shape[1] // block_w
    if i0 >= i1:
        return
    length = n_cols * block_w * channels
    num = np.empty(length, np.float32)
    den = np.empty(length, np.float32)
    ratio = np.empty(length, np.float32)
    for i in range(i0, i1):
        _softpool_f32_row(kh_dims, kw_dims, c_dims, rows, i * block_h, n_cols, out_rows[i],
                          params, num, den, ratio)


@njit(cache=True, inline="always")
def _store_ratios(num, den, o, first, n_windows, block_w, last_width, channels, out_max):
    """The last step of the row passes: output ``first + j`` is the sum of ``num``
    over window j's columns over that of ``den``, for every channel.

    ``last_width`` is the last window's (less than ``block_w`` where it is
    partial); the others are ``block_w`` wide.
    """
    for j in range(n_windows):
        nx = block_w if j + 1 < n_windows else last_width
        for c in range(channels):
            n = 0.0
            d = 0.0
            for t in range(nx):
                n += num[(j * block_w + t) * channels + c]
                d += den[(j * block_w + t) * channels + c]
            o[(first + j) * channels + c] = _store(n / d, out_max, o)


@njit(cache=True, inline="always")
def _softpool_row(method_dims, constant, rows, img, i, y0, ny, first, n_cols, block_h, block_w,
                  channels, o, gs, params, scratch):
    """softpool, relative to each window's maximum (every exponent <= 0), for the
    row's windows from ``first`` on, partial ones at the edges included;
    returns ``n_cols``.

    Float input has no table: each value takes an exponential. Made window
    by window, the Horner chain of each is latency-bound; here the values go
    through :func:`_exp_nonpositive` in one pass along the row's contiguous
    W*C values, against their window's maximum spread over the window's
    columns, and LLVM vectorises it (about 3x faster on float32 RGB at k=2).
    For constant and run-time sizes alike, so no kernel compiles
    softpool's window function.
    ``scratch`` has 4 rows of the row's length.
    """
    if first >= n_cols:
        return first
    in_scale, out_max, beta = params[0], params[1], params[3]
    width = img.shape[1]
    start = first * block_w * channels
    length = (min(n_cols * block_w, width) - first * block_w) * channels
    top = scratch[0, start:start + length]
    num = scratch[1, start:start + length]
    den = scratch[2, start:start + length]
    for j in range(n_cols - first):
        x0 = (first + j) * block_w
        # Constant kernels make full windows only: their width stays a constant.
        nx = block_w if len(constant) > 0 else min(block_w, width - x0)
        for c in range(channels):
            m = _window_max(rows, y0, ny, x0, nx, channels, c) * in_scale
            for t in range(nx):
                top[(j * block_w + t) * channels + c] = m
    for x in range(length):
        num[x] = 0.0
        den[x] = 0.0
    for r in range(ny):
        src = rows[y0 + r, start:start + length]
        for x in range(length):
            a = src[x] * in_scale
            e = _exp_nonpositive(beta * (a - top[x]))
            num[x] += e * a
            den[x] += e
    last_width = block_w if len(constant) > 0 else min(block_w, width - (n_cols - 1) * block_w)
    _store_ratios(num, den, o, first, n_cols - first, block_w, last_width, channels, out_max)
    return n_cols


@njit(cache=True, inline="always")
def _expectation_window(rows, y0, ny, x0, nx, channels, c, scale, unit):
    """sum a^2 / sum a (0 where the sum is 0), values pooled as ``v * scale`` times ``unit``."""
    num = 0.0
    den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = src[(x0 + t) * channels + c] * scale
            num += a * a
            den += a
    return unit * (num / den) if den > 0.0 else 0.0  # num / den <= 1: no overflow


# --- dpp -------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _dpp_direct_window(rows, y0, ny, x0, nx, channels, c, in_scale, alpha, asym):
    """dpp with lam = 1 as the SPEC writes it: weights ``alpha + sqrt((a - g)^2 + eps^2)``.

    The caller has checked that no weight times a value can overflow.
    """
    g = _window_mean(rows, y0, ny, x0, nx, channels, c, in_scale)
    num = 0.0
    den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = src[(x0 + t) * channels + c] * in_scale
            d = a - g
            if asym:
                # max(d, 0.0) as a select: Numba's ``max`` keeps the loop across
                # windows from vectorising.
                d = 0.0 if d < 0.0 else d
            w = alpha + math.sqrt(d * d + DPP_EPS2)
            num += w * a
            den += w
    return num / den


def _dpp_direct_row(method_dims, constant, rows, img, i, y0, ny, first, n_cols, block_h, block_w,
                    channels, o, gs, params, scratch):
    """:func:`_dpp_direct_window` for the row's full windows from ``first`` on; returns the
    first window not made (the kernel makes the partial ones).

    For run-time block sizes, where the window loops are too short and
    strided to vectorise: every pass runs along the row's contiguous W*C
    values instead -- the column sums of the means, each window's mean
    spread back over its columns, the weights and their sums -- and the sums
    across each window are folded into float64 per window. 8- and 16-bit
    images work in float32 (:func:`_row_float`), twice as many values per
    vector, and sum at most ``_ROW_CHUNK`` rows so before each fold.
    The passes' rows are buffers of their own (:func:`_row_buffer`); the
    windows' sums are rows 4 and 5 of ``scratch``. Compiled on its own
    (``_dpp_direct_row_jit``) and called by :func:`pool_kernel`.
    """
    last = min(img.shape[1] // block_w, n_cols)
    if ny < block_h or first >= last:
        return first
    in_scale, out_max = params[0], params[1]
    asym = len(method_dims) == DPP_ASYM_DIRECT
    scale = _row_float(rows, in_scale)
    alpha = _row_float(rows, params[3])
    eps2 = _row_float(rows, DPP_EPS2)
    zero = _row_float(rows, 0.0)
    n_windows = last - first
    # Views from 0: loops from 0, which LLVM can tell are not negative indices
    # (numba wraps those), vectorise.
    start = first * block_w * channels
    length = n_windows * block_w * channels
    column = _row_buffer(rows, length)
    mean = _row_buffer(rows, length)
    num = _row_buffer(rows, length)
    den = _row_buffer(rows, length)
    window_num = scratch[4, :n_windows * channels]
    window_den = scratch[5, :n_windows * channels]
    # The windows' means, their terms scaled first, so that float sums cannot
    # overflow.
    fill(window_num, 0.0)
    mean_scale = _row_float(rows, in_scale / (block_h * block_w))
    for r0 in range(0, block_h, _ROW_CHUNK):
        _column_sums(rows, y0 + r0, min(_ROW_CHUNK, block_h - r0), start, length, mean_scale,
                     column)
        _fold_windows(column, n_windows, block_w, channels, window_num)
    for j in range(n_windows):
        for c in range(channels):
            g = _row_float(rows, window_num[j * channels + c])
            for t in range(block_w):
                mean[(j * block_w + t) * channels + c] = g
    fill(window_num, 0.0)
    fill(window_den, 0.0)
    for r0 in range(0, block_h, _ROW_CHUNK):
        fill(num, 0.0)
        fill(den, 0.0)
        for r in range(r0, min(r0 + _ROW_CHUNK, block_h)):
            src = rows[y0 + r, start:start + length]
            for x in range(length):
                a = _row_float(rows, src[x]) * scale
                d = a - mean[x]
                if asym:
                    d = max(d, zero)
                w = alpha + math.sqrt(d * d + eps2)
                num[x] += w * a
                den[x] += w
        _fold_windows(num, n_windows, block_w, channels, window_num)
        _fold_windows(den, n_windows, block_w, channels, window_den)
    for k in range(n_windows * channels):
        o[first * channels + k] = _store(window_num[k] / window_den[k], out_max, o)
    return last


@njit(cache=True, inline="always")
def _dpp_window(rows, y0, ny, x0, nx, channels, c, in_scale, alpha, lam, asym):
    """:func:`downpool.windows.dpp_window` with equal coverages, for one channel.

    The weights divided by their largest, so that no exponent or value can
    overflow them.
    """
    g = _window_mean(rows, y0, ny, x0, nx, channels, c, in_scale)
    big = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            d = src[(x0 + t) * channels + c] * in_scale - g
            if asym:
                d = max(d, 0.0)
            big = max(big, abs(d))
    if lam == 0.0 or big * big < DPP_EPS2 * 1e-30:
        return g
    half_lam = 0.5 * lam
    eps2, inv_big, inv_peak, share = _dpp_scaling(big, half_lam, alpha)
    num = 0.0
    den = 0.0
    # Weights divided by the pixel count, as normalised coverages are: sums of
    # values near float64's maximum stay finite.
    inv_n = 1.0 / (ny * nx)
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = src[(x0 + t) * channels + c] * in_scale
            d = (a - g) * inv_big
            if asym:
                d = max(d, 0.0)
            w = inv_n * (share + (1.0 - share) * _power((d * d + eps2) * inv_peak, half_lam))
            num += w * a
            den += w
    return num / den


# --- stochastic sample -------------------------------------------------------------


@njit(cache=True, inline="always")
def _sample_pixel(img, y0, ny, x0, nx, weight, u, value_mode, n_colour):
    """The pixel drawn from a window: as :func:`downpool.windows.sample_window`, step for step.

    ``weight`` is the coverage every pixel of the window has (the product of
    the normalised row and column coverages, as the general kernel
    multiplies them), so both kernels pick the same pixel for the same draw.
    """
    total = 0.0
    for r in range(ny):
        for s in range(nx):
            total += weight * _selection_value(img, y0 + r, x0 + s, value_mode, n_colour)
    uniform = total <= 0.0  # all weights zero: draw by coverage alone
    target = u * (1.0 if uniform else total)
    cum = 0.0
    pick_y = -1
    pick_x = -1
    for r in range(ny):
        for s in range(nx):
            w = weight
            if not uniform:
                w *= _selection_value(img, y0 + r, x0 + s, value_mode, n_colour)
            if w > 0.0:
                pick_y = y0 + r
                pick_x = x0 + s
                cum += w
                if cum > target:
                    return pick_y, pick_x
    return pick_y, pick_x


@njit(cache=True, inline="always")
def _uniform_pick(u, weight, n):
    """The pick of a window whose pixels all have selection value 0 and coverage ``weight``:
    :func:`_sample_pixel`'s draw by coverage alone (target ``u * 1.0``), counted as
    :func:`_sample_row` counts."""
    cum = 0.0
    below = 0
    last = 0
    for q in range(n):
        cum += weight
        below += cum <= u
        last = q if weight > 0.0 else last
    return below if below < n else last


@njit(cache=True, inline="always")
def _sample_row(method_dims, constant, rows, img, i, y0, ny, first, n_cols, block_h, block_w,
                channels, o, gs, params, scratch):
    """Stochastic sample of the row's full windows from ``first`` on; returns the
    first window not made (the kernel makes the partial ones).

    The same picks as :func:`_sample_pixel`, made in passes that LLVM can
    vectorise: the selection values of the block's rows, the draws, the
    picks (counted, without the early exit on a random draw that is
    mispredicted about every other window), then the copy of the picked
    pixels. 2.5x faster on 24 MP RGB uint8 at k=2. ``scratch`` has
    ``block_h + 1`` rows of at least the image's width.
    """
    in_scale, out_max, table, param, param2, n_colour, value_mode, draw_from, yw, xw = params
    end = min(img.shape[1] // block_w, n_cols)
    if ny < block_h or first >= end:
        return first
    n_windows = end - first
    width = n_windows * block_w
    start = first * block_w * channels
    draws = scratch[block_h, :n_windows]
    # Integers, which the copy below indexes with as they are; a buffer of its own
    # (a view of a scratch row as integers added 1.4 s to the first call).
    picks = np.empty(n_windows, np.int64)
    row_length = o.shape[0] // channels
    for r in range(block_h):
        # selection_value, from the contiguous row (views from 0: see the module).
        src = rows[y0 + r, start:start + width * channels]
        values = scratch[r, :width]
        if value_mode == 1:
            for x in range(width):
                px = x * channels
                values[x] = 0.2126 * src[px] + 0.7152 * src[px + 1] + 0.0722 * src[px + 2]
        else:
            for x in range(width):
                total = 0.0
                for c in range(n_colour):
                    total += src[x * channels + c]
                values[x] = total / n_colour
    for j in range(n_windows):
        draws[j] = uniform_draw_after(draw_from, i * row_length + first + j)
    # Every full block has the same coverages (geometry.block_length), so the
    # column weight is read once: read per window from the (n, k) weight
    # array, a load of stride k kept LLVM from vectorising this loop (about
    # 6 ms of 57 on 24 MP RGB).
    weight = yw[i, 0] * xw[first, 0]
    n = block_h * block_w
    for j in range(n_windows):
        x0 = j * block_w
        total = 0.0
        for r in range(block_h):
            for s in range(block_w):
                total += weight * scratch[r, x0 + s]
        target = draws[j] * total
        # The general kernel picks the first pixel with weight whose running
        # sum passes the target. Weights are >= 0, so the running sum never
        # falls and the first sum past the target is one that a pixel with
        # weight raised: the pick is the number of sums not past it. If
        # rounding leaves every sum short, the last pixel with weight.
        cum = 0.0
        below = 0
        last = 0
        for r in range(block_h):
            for s in range(block_w):
                w = weight * scratch[r, x0 + s]
                cum += w
                below += cum <= target
                last = r * block_w + s if w > 0.0 else last
        # All weights zero: drawn by coverage alone, in the copy below. Rare, so
        # not made here, where every window would pay for both forms (the loop
        # is vectorised across windows): about 4 ms of 47 on 24 MP RGB.
        picks[j] = -1 if total <= 0.0 else (below if below < n else last)
    for j in range(n_windows):
        k = picks[j]
        if k < 0:
            k = _uniform_pick(draws[j], weight, n)
        src = rows[y0 + k // block_w]
        x = (first + j) * block_w + k % block_w
        for c in range(channels):
            o[(first + j) * channels + c] = src[x * channels + c]
    return end


# --- dpid --------------------------------------------------------------------------
#
# The guide is made on the fly, a row at a time: each call keeps the area
# means G of output rows i-1, i, i+1 in a ring of three rows, smooths them
# into Gs of row i, and pools row i's windows against it.  A call's first and
# last rows cost one extra guide row each; nothing of the output's size is
# allocated.


@njit(cache=True, inline="always")
def _guide_row(rows, g, block_h, block_w, channels, height, width, in_scale, dest):
    """G of output row ``g``: the area mean of every channel, in working values."""
    y0 = g * block_h
    ny = min(block_h, height - y0)
    n_cols = dest.shape[0] // channels
    full = width // block_w
    edge = 0
    if ny == block_h:
        for j in range(full):
            for c in range(channels):
                dest[j * channels + c] = _window_mean(rows, y0, block_h, j * block_w, block_w,
                                                      channels, c, in_scale)
        edge = full
    for j in range(edge, n_cols):
        nx = min(block_w, width - j * block_w)
        for c in range(channels):
            dest[j * channels + c] = _window_mean(rows, y0, ny, j * block_w, nx, channels, c,
                                                  in_scale)


@njit(cache=True, inline="always")
def _guide_row_passes(rows, g, block_h, block_w, channels, height, width, in_scale, dest,
                      column):
    """:func:`_guide_row` for run-time block sizes: the full windows' sums made down
    the contiguous row first (``column``, the row's length), then across each window."""
    y0 = g * block_h
    ny = min(block_h, height - y0)
    full = width // block_w
    length = full * block_w * channels
    sums = column[:length]
    _column_sums(rows, y0, ny, 0, length, in_scale / (ny * block_w), sums)
    for j in range(full):
        for c in range(channels):
            acc = 0.0
            for t in range(block_w):
                acc += sums[(j * block_w + t) * channels + c]
            dest[j * channels + c] = acc
    for j in range(full, dest.shape[0] // channels):
        nx = width - j * block_w
        for c in range(channels):
            dest[j * channels + c] = _window_mean(rows, y0, ny, j * block_w, nx, channels, c,
                                                  in_scale)


@njit(cache=True, inline="always")
def _smooth_weight(k, n):
    """The [1 2 1] side weight of index ``k`` of ``n``, renormalised at the ends
    (1/4 2/4 1/4 inside, 2/3 1/3 at an end)."""
    return 1.0 / 3.0 if k == 0 or k == n - 1 else 0.25


@njit(cache=True)
def smooth_row(ring, i, n_rows, channels, vert, gs):
    """Gs of output row ``i`` from the G rows in ``ring`` (row g at ``ring[g % 3]``):
    G smoothed by ``[1 2 1]^T [1 2 1]``, neighbours outside the output left out and
    the rest renormalised (SPEC 3, dpid step 2).

    The kernel is separable and the neighbours that exist form a product set,
    so a vertical pass, then a horizontal one, each renormalised, is the 2-D
    definition.  The weights are normalised before summing: a convex
    combination, which cannot overflow even near float64's maximum.  Every
    CPU kernel makes Gs here (the general and block kernels give the same
    bits).
    """
    mid = ring[i % 3]
    up = ring[(i - 1) % 3]
    down = ring[(i + 1) % 3]
    side = _smooth_weight(i, n_rows)
    # One pass per case: the row's scratch does not fit in L1, so passes cost.
    # Loops, not slice assignments: those compile shape checks with string
    # messages, which took 4 s of dpid's first call.
    if n_rows == 1:
        for x in range(vert.shape[0]):
            vert[x] = mid[x]
    elif i == 0:
        for x in range(vert.shape[0]):
            vert[x] = (2.0 * side) * mid[x] + side * down[x]
    elif i == n_rows - 1:
        for x in range(vert.shape[0]):
            vert[x] = (2.0 * side) * mid[x] + side * up[x]
    else:
        for x in range(vert.shape[0]):
            vert[x] = ((2.0 * side) * mid[x] + side * up[x]) + side * down[x]
    n_cols = vert.shape[0] // channels
    if n_cols == 1:
        for x in range(vert.shape[0]):
            gs[x] = vert[x]
        return
    # The end columns, then the inner ones in one contiguous loop (vectorised).
    edge = 1.0 / 3.0
    last = (n_cols - 1) * channels
    for c in range(channels):
        gs[c] = (2.0 * edge) * vert[c] + edge * vert[c + channels]
        gs[last + c] = (2.0 * edge) * vert[last + c] + edge * vert[last + c - channels]
    for k in range(channels, last):
        gs[k] = (0.5 * vert[k] + 0.25 * vert[k - channels]) + 0.25 * vert[k + channels]


@njit(cache=True, inline="always")
def _dpid_direct_window(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale, lam,
                        out_max, o, acc):
    """dpid with lam = 1 (``lam`` is not read) as the SPEC writes it, weights ``|a - Gs|``,
    into ``o[base:]``.

    The caller has checked that no weight can overflow, and that a window
    whose weights all vanish has every pixel at Gs.  For kernels with a
    constant channel count of at most four (:func:`_dpid_direct_any` for the
    others): the channels are kept in scalars rather than in ``acc``, and
    LLVM vectorises across windows.
    """
    # A channel's share of the distance: 0 for alpha, as a factor rather than
    # a branch.
    m1 = 1.0 if n_colour > 1 else 0.0
    m2 = 1.0 if n_colour > 2 else 0.0
    m3 = 1.0 if n_colour > 3 else 0.0
    g0 = gs[base]
    g1 = gs[base + 1] if channels > 1 else 0.0
    g2 = gs[base + 2] if channels > 2 else 0.0
    g3 = gs[base + 3] if channels > 3 else 0.0
    den = 0.0
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            px = (x0 + t) * channels
            a0 = src[px] * in_scale
            d2 = (a0 - g0) * (a0 - g0)
            a1 = src[px + 1] * in_scale if channels > 1 else 0.0
            a2 = src[px + 2] * in_scale if channels > 2 else 0.0
            a3 = src[px + 3] * in_scale if channels > 3 else 0.0
            d2 += m1 * ((a1 - g1) * (a1 - g1)) + m2 * ((a2 - g2) * (a2 - g2)) \
                + m3 * ((a3 - g3) * (a3 - g3))
            w = math.sqrt(d2)
            den += w
            s0 += w * a0
            s1 += w * a1
            s2 += w * a2
            s3 += w * a3
    # den is 0 where every distance is: the output is then Gs.
    some = den > 0.0
    inv = 1.0 / den if some else 0.0
    o[base] = _store(s0 * inv if some else g0, out_max, o)
    if channels > 1:
        o[base + 1] = _store(s1 * inv if some else g1, out_max, o)
    if channels > 2:
        o[base + 2] = _store(s2 * inv if some else g2, out_max, o)
    if channels > 3:
        o[base + 3] = _store(s3 * inv if some else g3, out_max, o)


def _dpid_direct_row(method_dims, constant, rows, img, i, y0, ny, first, n_cols, block_h, block_w,
                     channels, o, gs, params, scratch):
    """:func:`_dpid_direct_window` for an RGB row's full windows from ``first`` on;
    returns the first window not made.

    As :func:`_dpp_direct_row`: passes along the row's pixels, for run-time
    block sizes, in float32 on 8- and 16-bit images, folded into float64
    every ``_ROW_CHUNK`` rows; the channel count is the literal 3, so that
    the per-pixel channel loops unroll.
    """
    last = min(img.shape[1] // block_w, n_cols)
    if ny < block_h or first >= last or channels != 3:
        return first
    in_scale, out_max, n_colour = params[0], params[1], params[5]
    rgb = 3
    scale = _row_float(rows, in_scale)
    # Alpha has no share in the distance.
    share1 = _row_float(rows, 1.0 if n_colour > 1 else 0.0)
    share2 = _row_float(rows, 1.0 if n_colour > 2 else 0.0)
    n_windows = last - first
    start = first * block_w * rgb
    n_pixels = n_windows * block_w
    length = n_pixels * rgb
    spread = _row_buffer(rows, length)
    sums = _row_buffer(rows, length)
    den = _row_buffer(rows, n_pixels)
    square = _row_buffer(rows, length)
    window_sums = scratch[4, :n_windows * rgb]
    window_den = scratch[5, :n_windows]
    for j in range(n_windows):
        for t in range(block_w):
            for c in range(rgb):
                spread[(j * block_w + t) * rgb + c] = _row_float(rows, gs[(first + j) * rgb + c])
    fill(window_sums, 0.0)
    fill(window_den, 0.0)
    for r0 in range(0, block_h, _ROW_CHUNK):
        fill(sums, 0.0)
        fill(den, 0.0)
        # Each row in three passes, so that the one with the square roots runs
        # along whole vectors: the squared differences of every value, then
        # each pixel's weight (spread over its channels in ``square``), then
        # the sums.
        for r in range(r0, min(r0 + _ROW_CHUNK, block_h)):
            src = rows[y0 + r, start:start + length]
            for x in range(length):
                d = _row_float(rows, src[x]) * scale - spread[x]
                square[x] = d * d
            for p in range(n_pixels):
                w = math.sqrt(square[p * rgb] + share1 * square[p * rgb + 1]
                              + share2 * square[p * rgb + 2])
                den[p] += w
                for c in range(rgb):
                    square[p * rgb + c] = w
            for x in range(length):
                sums[x] += square[x] * _row_float(rows, src[x])
        _fold_windows(sums, n_windows, block_w, rgb, window_sums)
        _fold_windows(den, n_windows, block_w, 1, window_den)
    for j in range(n_windows):
        total = window_den[j]
        # total is 0 where every distance is: the output is then Gs.
        some = total > 0.0
        inv = in_scale / total if some else 0.0
        for c in range(rgb):
            base = (first + j) * rgb + c
            o[base] = _store(window_sums[j * rgb + c] * inv if some else gs[base], out_max, o)
    return last


@njit(cache=True, inline="always")
def _dpid_direct_any(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale, lam, out_max,
                     o, acc):
    """:func:`_dpid_direct_window` for any channel count, summing in ``acc``."""
    den = 0.0
    for c in range(channels):
        acc[c] = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            px = (x0 + t) * channels
            d2 = 0.0
            for c in range(n_colour):
                d = src[px + c] * in_scale - gs[base + c]
                d2 += d * d
            w = math.sqrt(d2)
            den += w
            for c in range(channels):
                acc[c] += w * src[px + c]
    some = den > 0.0
    inv_den = in_scale / den if some else 0.0
    for c in range(channels):
        o[base + c] = _store(acc[c] * inv_den if some else gs[base + c], out_max, o)


@njit(cache=True, inline="always")
def _dpid_window(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale, lam, out_max,
                 o, acc):
    """:func:`downpool.windows.dpid_window` with equal coverages, stored into ``o[base:]``.

    Distances relative to the window's largest, so that no exponent or
    value can overflow or flush the weights.
    """
    big = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            for c in range(n_colour):
                big = max(big, abs(src[(x0 + t) * channels + c] * in_scale - gs[base + c]))
    if big == 0.0 and lam != 0.0:  # every distance is zero: sum w = 0, the output is Gs
        for c in range(channels):
            o[base + c] = _store(gs[base + c], out_max, o)
        return
    inv_big = 1.0 / big if big > 0.0 else 0.0
    top2 = 0.0
    if lam != 0.0:
        for r in range(ny):
            src = rows[y0 + r]
            for t in range(nx):
                d2 = 0.0
                for c in range(n_colour):
                    d = (src[(x0 + t) * channels + c] * in_scale - gs[base + c]) * inv_big
                    d2 += d * d
                top2 = max(top2, d2)
    half_lam = 0.5 * lam
    inv_top2 = 1.0 / top2 if top2 > 0.0 else 0.0
    den = 0.0
    inv_n = 1.0 / (ny * nx)
    for c in range(channels):
        acc[c] = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            px = (x0 + t) * channels
            w = inv_n  # normalised like coverages: sums near float64's maximum stay finite
            if lam != 0.0:
                d2 = 0.0
                for c in range(n_colour):
                    d = (src[px + c] * in_scale - gs[base + c]) * inv_big
                    d2 += d * d
                w *= _power(d2 * inv_top2, half_lam)
            den += w
            for c in range(channels):
                acc[c] += w * src[px + c]
    for c in range(channels):
        o[base + c] = _store(acc[c] * in_scale / den, out_max, o)


# --- the kernel ----------------------------------------------------------------------


@njit(cache=True, inline="always")
def _sample_into(rows, img, i, y0, ny, x0, nx, j, channels, o, base, params):
    """Stochastic sample of one window: the drawn pixel's stored values, copied as for max."""
    in_scale, out_max, table, param, param2, n_colour, value_mode, draw_from, yw, xw = params
    y, x = _sample_pixel(img, y0, ny, x0, nx, yw[i, 0] * xw[j, 0],
                         uniform_draw_after(draw_from, i * (o.shape[0] // channels) + j), value_mode,
                         n_colour)
    for c in range(channels):
        o[base + c] = img[y, x, c]


@njit(cache=True)
def _dpid_guide(rows, i, i0, n_rows, kh_dims, kw_dims, c_dims, sizes, height, width, in_scale,
                scratch, column):
    """dpid: Gs of output row ``i`` into ``scratch[4]`` (a call's first row also makes
    the G rows before it).

    A function of its own, compiled for the kernel's dims: the block's
    constant sizes reach its loops, and the kernel's compiling stays short.
    With run-time sizes, the G rows are made in passes along the row, in
    ``column`` (the image row's length).
    """
    block_h = _known(kh_dims, sizes[0])
    block_w = _known(kw_dims, sizes[1])
    channels = _known(c_dims, rows.shape[1] // width)
    first = max(i0 - 1, 0) if i == i0 else i + 1
    for g in range(first, min(i + 2, n_rows)):
        # A test of an argument tuple's length: pruned before typing (see pool_kernel).
        if len(kh_dims) == 0:
            _guide_row_passes(rows, g, block_h, block_w, channels, height, width, in_scale,
                              scratch[g % 3], column)
        else:
            _guide_row(rows, g, block_h, block_w, channels, height, width, in_scale,
                       scratch[g % 3])
    smooth_row(scratch, i, n_rows, channels, scratch[3], scratch[4])


# dpp's and dpid's row passes for run-time sizes are compiled on their own and
# called, not inlined: Numba's typing of the kernel with their bodies inlined
# grew superlinearly, and their first call took 4-8 s longer. Their sizes are
# run-time values anyway, so inlining bought no constants; a call per output
# row costs nothing measurable.
_dpp_direct_row_jit = njit(cache=True, nogil=True, error_model="numpy")(_dpp_direct_row)
_dpid_direct_row_jit = njit(cache=True, nogil=True, error_model="numpy")(_dpid_direct_row)


# error_model="numpy": a float division is a plain instruction, not a test
# for zero that would raise -- the test keeps LLVM from vectorising any loop
# with a division (dpp was 2.9x slower).  No window divides by zero.
@njit(cache=True, nogil=True, error_model="numpy")
def pool_kernel(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, method_dims, params,
                j0, i0, i1):
    """Output rows ``i0`` to ``i1`` of the method ``len(method_dims)`` over blocks.

    ``rows`` and ``out_rows`` are the image ``img`` and the output as rows
    (:func:`downpool.core.as_rows`). ``kh_dims``, ``kw_dims``, ``c_dims`` and ``sizes`` are a
    :class:`BlockPlan`'s.  ``params`` is ``(in_scale, out_max, table, param,
    param2, n_colour, value_mode, draw_from, yw, xw)``: ``table`` the lookup table
    of the ``_TABLE`` methods (softpool's two tables interleaved), ``param``
    p, beta, expectation's unit, dpp's alpha or dpid's lam, ``param2`` dpp's
    lam or SOFTPOOL_F32's centre of the value range, and the rest stochastic
    sampling's and dpid's.

    With constant sizes the kernel makes the full blocks only (and ignores
    ``j0``): unrolled, and for some methods vectorised across windows.  With
    run-time sizes it makes every window of the rows, from column ``j0`` on
    in rows of full height: :func:`pool_blocks` runs it after the constant
    kernel for the partial windows at the right and bottom edges, with
    ``edge_dims`` ``(0,)``: a kernel for those thin strips alone, which
    makes every window one by one (softpool's, which have no window
    function, in its passes) and so compiles no passes along the row that
    they would not use: a second or more off the first call of stochastic
    sample or dpp on an image of odd size. Otherwise ``edge_dims`` is empty.

    The method, and whether the sizes are constants, are the lengths of
    argument tuples. Numba folds every ``len`` of an argument tuple to a
    constant and prunes the branches it decides before typing, so a kernel
    types and inlines its own method's functions alone -- where functions
    chosen through ``@overload`` are first compiled whole on their own as
    well (a quarter to a third of a kernel's first call). So the tests below
    compare ``method``, ``len(kh_dims)`` or ``len(c_dims)`` with constants,
    in the kernel's own body: in an inlined function they are not pruned.
    """
    method = len(method_dims)
    constant = len(kh_dims) > 0
    block_h = _known(kh_dims, sizes[0])
    block_w = _known(kw_dims, sizes[1])
    channels = _known(c_dims, img.shape[2])
    height, width = img.shape[0], img.shape[1]
    n_rows, n_cols = out_rows.shape[0], out_rows.shape[1] // channels
    if constant:
        i1 = min(i1, height // block_h)
        n_cols = width // block_w
    if i0 >= i1:
        return
    # dpid: rows 0-2 the ring of guide rows, 3 the vertical pass, 4 Gs, 5 a pixel.
    guided = method == DPID or method == DPID_DIRECT
    scratch = np.empty((6, out_rows.shape[1] if guided else 0))
    # Rows taken once: a view made per window costs a reference count each,
    # which keeps LLVM from vectorising.
    gs, acc = scratch[4], scratch[5]
    # Rows for the methods made in passes along the row: stochastic sample and
    # softpool over any blocks, dpp's and dpid's direct forms over run-time ones.
    sampled = method == SAMPLE
    passes = method == SOFTPOOL or (not constant and (
        method == DPP_SYM_DIRECT or method == DPP_ASYM_DIRECT or guided))
    row_scratch = np.empty((block_h + 1 if sampled else 6,
                            width if sampled else (rows.shape[1] if passes else 0)))
    in_scale, out_max = params[0], params[1]
    for i in range(i0, i1):
        if guided:
            _dpid_guide(rows, i, i0, n_rows, kh_dims, kw_dims, c_dims, sizes, height, width,
                        in_scale, scratch, row_scratch[3])
        o = out_rows[i]
        y0 = i * block_h
        # Constant kernels see only full blocks: their sizes stay constants.
        ny = block_h if constant else min(block_h, height - y0)
        first = 0 if constant or ny < block_h else j0
        # The methods with passes along the row make the row's windows from
        # ``first`` on there, and return the first they did not make.
        if method == SOFTPOOL:
            first = _softpool_row(method_dims, kh_dims, rows, img, i, y0, ny, first, n_cols,
                                  block_h, block_w, channels, o, gs, params, row_scratch)
        elif len(edge_dims) > 0:
            pass
        elif method == SAMPLE:
            first = _sample_row(method_dims, kh_dims, rows, img, i, y0, ny, first, n_cols,
                                block_h, block_w, channels, o, gs, params, row_scratch)
        elif len(kh_dims) == 0:
            if method == DPID_DIRECT:
                first = _dpid_direct_row_jit(method_dims, kh_dims, rows, img, i, y0, ny, first,
                                             n_cols, block_h, block_w, channels, o, gs, params,
                                             row_scratch)
            elif method == DPP_SYM_DIRECT or method == DPP_ASYM_DIRECT:
                first = _dpp_direct_row_jit(method_dims, kh_dims, rows, img, i, y0, ny, first,
                                            n_cols, block_h, block_w, channels, o, gs, params,
                                            row_scratch)
        # The rest window by window. Integer images keep their own dtype for avg,
        # max and sample, and float images have in_scale 1: stored values are
        # the results there.
        for j in range(first, n_cols):
            x0 = j * block_w
            nx = block_w if constant else min(block_w, width - x0)
            base = j * channels
            if method == AVG:
                for c in range(channels):
                    o[base + c] = _block_mean(rows, y0, ny, x0, nx, channels, c, in_scale)
            elif method == MAX:
                for c in range(channels):
                    o[base + c] = _window_max(rows, y0, ny, x0, nx, channels, c)
            elif method == SAMPLE:
                if len(kh_dims) == 0:  # constant kernels make every window in passes
                    _sample_into(rows, img, i, y0, ny, x0, nx, j, channels, o, base, params)
            elif method == RMS:
                for c in range(channels):
                    o[base + c] = _store(_rms_window(rows, y0, ny, x0, nx, channels, c,
                                                     in_scale), out_max, o)
            elif method == LP_TABLE:
                for c in range(channels):
                    o[base + c] = _store(_lp_table_window(rows, y0, ny, x0, nx, channels, c,
                                                          params[2], 1.0 / params[3]),
                                         out_max, o)
            elif method == LP:
                for c in range(channels):
                    o[base + c] = _store(_lp_window(rows, y0, ny, x0, nx, channels, c,
                                                    in_scale, params[3], 1.0 / params[3]),
                                         out_max, o)
            elif method == SOFTPOOL_TABLE:
                for c in range(channels):
                    o[base + c] = _store(_softpool_table_window(rows, y0, ny, x0, nx, channels,
                                                                c, params[2]), out_max, o)
            elif method == SOFTPOOL_F32:  # the edge kernel's partial windows
                scale, shift = _softpool_f32_exponent(params)
                for c in range(channels):
                    o[base + c] = _store_f32(_softpool_f32_window(rows, y0, ny, x0, nx, channels,
                                                                  c, scale, shift),
                                             in_scale, out_max, o)
            elif method == EXPECTATION:
                for c in range(channels):
                    o[base + c] = _store(_expectation_window(rows, y0, ny, x0, nx, channels, c,
                                                             in_scale, params[3]), out_max, o)
            elif method == DPP_SYM_DIRECT:
                for c in range(channels):
                    o[base + c] = _store(_dpp_direct_window(rows, y0, ny, x0, nx, channels, c,
                                                            in_scale, params[3], False),
                                         out_max, o)
            elif method == DPP_ASYM_DIRECT:
                for c in range(channels):
                    o[base + c] = _store(_dpp_direct_window(rows, y0, ny, x0, nx, channels, c,
                                                            in_scale, params[3], True),
                                         out_max, o)
            elif method == DPP_SYM:
                for c in range(channels):
                    o[base + c] = _store(_dpp_window(rows, y0, ny, x0, nx, channels, c, in_scale,
                                                     params[3], params[4], False), out_max, o)
            elif method == DPP_ASYM:
                for c in range(channels):
                    o[base + c] = _store(_dpp_window(rows, y0, ny, x0, nx, channels, c, in_scale,
                                                     params[3], params[4], True), out_max, o)
            elif method == DPID:
                _dpid_window(rows, y0, ny, x0, nx, channels, params[5], gs, base, in_scale,
                             params[3], out_max, o, acc)
            elif method == DPID_DIRECT:
                if len(c_dims) > 0 and len(c_dims) <= 4:  # channels in scalars
                    _dpid_direct_window(rows, y0, ny, x0, nx, channels, params[5], gs, base,
                                        in_scale, params[3], out_max, o, acc)
                else:
                    _dpid_direct_any(rows, y0, ny, x0, nx, channels, params[5], gs, base,
                                     in_scale, params[3], out_max, o, acc)
            # softpool: every window made in passes.


def pool_blocks(plan: BlockPlan, method: int, image: np.ndarray, out: np.ndarray,
                params: tuple) -> None:
    """Run :func:`pool_kernel` for ``method`` over a job's blocks, on every thread.

    A plan with constant sizes makes the full blocks with the constant
    kernel (SOFTPOOL_F32's: :func:`softpool_f32_kernel`), then any partial
    windows with the run-time one.
    """
    dims, sizes = plan
    method_dims = (0,) * method
    arrays = (image, as_rows(image), as_rows(out))
    if method in _RUNTIME_ONLY:
        dims = ((), (), ())
    if method == SOFTPOOL_F32:  # planned for constant sizes only
        run_rows(softpool_f32_kernel, out, *arrays, *dims, params)
    else:
        run_rows(pool_kernel, out, *arrays, *dims, (), sizes, method_dims, params, 0)
    if len(dims[0]) == 0:
        return
    full_rows, full_cols = image.shape[0] // sizes[0], image.shape[1] // sizes[1]
    # Thin strips, not worth splitting between threads: the last column of
    # every row (and all of a partial last row), or the partial last row alone.
    edge = ((), (), (), (0,))  # run-time sizes, windows one by one
    if full_cols < out.shape[1]:
        pool_kernel(*arrays, *edge, sizes, method_dims, params, full_cols, 0, out.shape[0])
    elif full_rows < out.shape[0]:
        pool_kernel(*arrays, *edge, sizes, method_dims, params, 0, full_rows, out.shape[0])
