"""Numba CPU kernels for block geometry: windows that tile the image.

When the windows of both axes are consecutive blocks (integer pooling with a
stride equal to the kernel, or a ``size``/``scale`` that divides the image's
size), every pixel of a window has the same coverage, so the coverages drop
out of every formula.  Each kernel here is compiled for the call's block
size as a *compile-time constant*, passed as the length of a tuple of zeros:
LLVM unrolls the window loops, which makes these kernels faster than the
general ones of :mod:`downpool.cpu`.  Those take over for non-square blocks
and blocks above :data:`MAX_CONSTANT_BLOCK`, so that rare shapes do not each
compile a kernel of their own.  The channel count stays a run-time value:
as a constant it made avg about three times faster again, but multiplied the
kernels to compile by the channel counts in use.  Partial windows at the bottom and right edges go
through the same window functions with run-time sizes.

The kernels are serial ``nogil`` functions over a range of output rows;
:func:`run_rows` splits the rows between ``numba.get_num_threads()`` threads.
Serial kernels compile in about half the time of ``prange`` ones, and each
writes straight into ``out``: nothing of the image's size is allocated (dpid
keeps three guide rows per thread), so peak memory is the input plus the
output.

Integer images keep integer arithmetic where the result allows it (avg's
sums, max).  The other formulas are those of :mod:`downpool.windows` with
equal coverages and float64 accumulators, in the same order of operations
where a result is discrete (stochastic sampling's pick).
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import overload

from .core import PoolJob
from .geometry import block_length
from .windows import DPP_EPS2, power, selection_value, uniform_draw

# The shared helpers, compiled again to be inlined: Numba does not inline one
# jitted function into another by itself, and a call per pixel costs more
# than the arithmetic.  Not cached: only their source is used, inlined.
_power = njit(inline="always")(power.py_func)
_selection_value = njit(inline="always")(selection_value.py_func)

__all__ = ["MAX_CONSTANT_BLOCK", "block_sizes", "run_rows",
           "avg_kernel", "max_kernel", "channel_kernel", "sample_kernel", "dpid_kernel"]

# Inlining the window functions into the variant chooser below trips a
# pedantic SSA self-check of Numba's (variables "not in scope" across the
# inlined blocks); the compiled code is right, as the tests check against
# the reference, so users are not shown it.
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning, module="numba.core.ssa")

#: Largest block side that the block kernels take.
MAX_CONSTANT_BLOCK = 16

# Variants of channel_kernel, passed as the length of a tuple.
LP_TABLE = 1
LP = 2
SOFTPOOL_TABLE = 3
SOFTPOOL = 4
EXPECTATION = 5
DPP_SYM = 6
DPP_ASYM = 7


def block_sizes(job: PoolJob) -> tuple | None:
    """``(kh_dims, kw_dims)`` for the block kernels, or None where they do not apply.

    The tuples' lengths are the block's height and width.  None where the
    windows are not square blocks of 2 to :data:`MAX_CONSTANT_BLOCK` pixels
    (1 is a copy, and every other shape would be one more kernel to compile
    for little use), or an integer image is not written to its own dtype
    (the kernels keep integer sums there).
    """
    if job.image.dtype.kind == "u" and not (job.out_int and job.out.dtype == job.image.dtype):
        return None
    kh, kw = block_length(job.rows), block_length(job.cols)
    if kh is None or kh != kw or not 2 <= kh <= MAX_CONSTANT_BLOCK:
        return None
    return (0,) * kh, (0,) * kw


_POOLS: dict[int, ThreadPoolExecutor] = {}

#: Below this many output values a call runs on the calling thread alone.
_MIN_PARALLEL = 1 << 14


def run_rows(kernel, out: np.ndarray, *args) -> None:
    """``kernel(*args, i0, i1)`` for ranges of ``out``'s rows that split them between threads.

    The thread count is ``numba.get_num_threads()``, so ``NUMBA_NUM_THREADS``
    and ``numba.set_num_threads`` govern these kernels as they do the
    ``prange`` ones.  The first, empty range runs on the calling thread, so
    that a kernel that has to be compiled is compiled once, there.
    """
    import numba

    n_rows = out.shape[0]
    threads = min(numba.get_num_threads(), n_rows)
    kernel(*args, 0, 0)
    if threads <= 1 or out.size < _MIN_PARALLEL:
        kernel(*args, 0, n_rows)
        return
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="downpool")
    bounds = [n_rows * t // threads for t in range(threads + 1)]
    jobs = [pool.submit(kernel, *args, bounds[t], bounds[t + 1]) for t in range(threads)]
    for job in jobs:
        job.result()


# --- shared pieces -------------------------------------------------------------


@njit(cache=True, inline="always")
def _window_mean(rows, y0, ny, x0, nx, channels, c, in_scale):
    """The window's mean working value; terms scaled first, so float sums cannot overflow."""
    scale = in_scale / (ny * nx)
    acc = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            acc += src[(x0 + t) * channels + c] * scale
    return acc


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
        return lambda v, out_max, out: min(max(math.floor(v * out_max + 0.5), 0.0), out_max)
    return lambda v, out_max, out: v


@njit(cache=True)
def _as_rows(a):
    """An (H, W, C) array as (H, W*C) rows."""
    return a.reshape(a.shape[0], a.shape[1] * a.shape[2])


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
            m = max(m, src[(x0 + t) * channels + c])
    return m


# Every kernel walks its rows the same way: the windows of a full row of
# blocks with the constant sizes (unrolled, vectorised), then the windows at
# the edges -- the last column, or all of a partial last row -- with
# run-time sizes.  ``full`` is the number of full blocks in a row.


@njit(cache=True)
def avg_kernel(img, in_scale, out, dims, i0, i1):
    kh_dims, kw_dims = dims
    channels, block_h, block_w = img.shape[2], len(kh_dims), len(kw_dims)
    rows, out_rows = _as_rows(img), _as_rows(out)
    height, width = img.shape[0], img.shape[1]
    full = width // block_w
    for i in range(i0, i1):
        o = out_rows[i]
        y0 = i * block_h
        ny = min(block_h, height - y0)
        edge = 0
        if ny == block_h:
            for j in range(full):
                for c in range(channels):
                    o[j * channels + c] = _block_mean(rows, y0, block_h, j * block_w, block_w,
                                                      channels, c, in_scale)
            edge = full
        for j in range(edge, out.shape[1]):
            nx = min(block_w, width - j * block_w)
            for c in range(channels):
                o[j * channels + c] = _block_mean(rows, y0, ny, j * block_w, nx, channels, c,
                                                  in_scale)


@njit(cache=True)
def max_kernel(img, out, dims, i0, i1):
    # Integer images keep their own dtype and float images have in_scale 1:
    # the largest stored value is the result.
    kh_dims, kw_dims = dims
    channels, block_h, block_w = img.shape[2], len(kh_dims), len(kw_dims)
    rows, out_rows = _as_rows(img), _as_rows(out)
    height, width = img.shape[0], img.shape[1]
    full = width // block_w
    for i in range(i0, i1):
        o = out_rows[i]
        y0 = i * block_h
        ny = min(block_h, height - y0)
        edge = 0
        if ny == block_h:
            for j in range(full):
                for c in range(channels):
                    o[j * channels + c] = _window_max(rows, y0, block_h, j * block_w, block_w,
                                                      channels, c)
            edge = full
        for j in range(edge, out.shape[1]):
            nx = min(block_w, width - j * block_w)
            for c in range(channels):
                o[j * channels + c] = _window_max(rows, y0, ny, j * block_w, nx, channels, c)


# --- lp, softpool, stochastic expectation, dpp ------------------------------------


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
def _softpool_table_window(rows, y0, ny, x0, nx, channels, c, num_table, den_table):
    num = 0.0
    den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            v = np.intp(src[(x0 + t) * channels + c])
            num += num_table[v]  # a e^(beta (a - ref))
            den += den_table[v]  # e^(beta (a - ref))
    return num / den


@njit(cache=True, inline="always")
def _softpool_window(rows, y0, ny, x0, nx, channels, c, in_scale, beta):
    # Relative to the window's maximum: every exponent <= 0.
    m = _window_max(rows, y0, ny, x0, nx, channels, c) * in_scale
    num = 0.0
    den = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            a = src[(x0 + t) * channels + c] * in_scale
            e = math.exp(beta * (a - m))
            num += e * a
            den += e
    return num / den


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


@njit(cache=True, inline="always")
def _dpp_window(rows, y0, ny, x0, nx, channels, c, in_scale, alpha, lam, asym):
    """:func:`downpool.windows.dpp_window` with equal coverages, for one channel."""
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
    eps2 = DPP_EPS2 / (big * big)
    peak = 1.0 + eps2
    inv_big = 1.0 / big
    inv_peak = 1.0 / peak
    half_lam = 0.5 * lam
    if alpha > 0.0:
        log_rho_max = half_lam * (2.0 * math.log(big) + math.log(peak))
        share = 1.0 / (1.0 + math.exp(log_rho_max - math.log(alpha)))
    else:
        share = 0.0
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


def _channel_window(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table,
                    den_table, param, param2):
    """The pooled working value of one channel's window, for the variant ``len(variant_dims)``."""


@overload(_channel_window, inline="always")
def _channel_window_impl(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table,
                         den_table, param, param2):
    # Chosen while typing, so that a kernel compiles only its own variant.
    variant = variant_dims.count

    if variant == LP_TABLE:
        def impl(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table, den_table,
                 param, param2):
            return _lp_table_window(rows, y0, ny, x0, nx, channels, c, table, 1.0 / param)
    elif variant == LP:
        def impl(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table, den_table,
                 param, param2):
            return _lp_window(rows, y0, ny, x0, nx, channels, c, in_scale, param, 1.0 / param)
    elif variant == SOFTPOOL_TABLE:
        def impl(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table, den_table,
                 param, param2):
            return _softpool_table_window(rows, y0, ny, x0, nx, channels, c, table, den_table)
    elif variant == SOFTPOOL:
        def impl(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table, den_table,
                 param, param2):
            return _softpool_window(rows, y0, ny, x0, nx, channels, c, in_scale, param)
    elif variant == EXPECTATION:
        def impl(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table, den_table,
                 param, param2):
            return _expectation_window(rows, y0, ny, x0, nx, channels, c, in_scale, param)
    else:
        asym = variant == DPP_ASYM

        def impl(variant_dims, rows, y0, ny, x0, nx, channels, c, in_scale, table, den_table,
                 param, param2):
            return _dpp_window(rows, y0, ny, x0, nx, channels, c, in_scale, param, param2, asym)
    return impl


@njit(cache=True)
def channel_kernel(img, in_scale, out, out_max, dims, variant_dims, table, den_table, param,
                   param2, i0, i1):
    """lp, softpool, stochastic expectation or dpp: ``len(variant_dims)`` says which.

    ``param``: p, beta, expectation's unit or dpp's alpha; ``param2``: dpp's
    lam; ``table``/``den_table``: the lookup tables of the ``_TABLE`` variants.
    """
    kh_dims, kw_dims = dims
    channels, block_h, block_w = img.shape[2], len(kh_dims), len(kw_dims)
    rows, out_rows = _as_rows(img), _as_rows(out)
    height, width = img.shape[0], img.shape[1]
    full = width // block_w
    for i in range(i0, i1):
        o = out_rows[i]
        y0 = i * block_h
        ny = min(block_h, height - y0)
        edge = 0
        if ny == block_h:
            for j in range(full):
                for c in range(channels):
                    o[j * channels + c] = _store(
                        _channel_window(variant_dims, rows, y0, block_h, j * block_w, block_w,
                                        channels, c, in_scale, table, den_table, param, param2),
                        out_max, out)
            edge = full
        for j in range(edge, out.shape[1]):
            nx = min(block_w, width - j * block_w)
            for c in range(channels):
                o[j * channels + c] = _store(
                    _channel_window(variant_dims, rows, y0, ny, j * block_w, nx, channels, c,
                                    in_scale, table, den_table, param, param2), out_max, out)


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


@njit(cache=True)
def sample_kernel(img, out, dims, yw, xw, seed, value_mode, n_colour, i0, i1):
    # The drawn pixel's stored values are copied: integer images keep their
    # own dtype and float images have in_scale 1.
    kh_dims, kw_dims = dims
    channels, block_h, block_w = img.shape[2], len(kh_dims), len(kw_dims)
    height, width = img.shape[0], img.shape[1]
    n_cols = out.shape[1]
    full = width // block_w
    for i in range(i0, i1):
        y0 = i * block_h
        ny = min(block_h, height - y0)
        edge = 0
        if ny == block_h:
            for j in range(full):
                y, x = _sample_pixel(img, y0, block_h, j * block_w, block_w, yw[i, 0] * xw[j, 0],
                                     uniform_draw(seed, i * n_cols + j), value_mode, n_colour)
                for c in range(channels):
                    out[i, j, c] = img[y, x, c]
            edge = full
        for j in range(edge, n_cols):
            nx = min(block_w, width - j * block_w)
            y, x = _sample_pixel(img, y0, ny, j * block_w, nx, yw[i, 0] * xw[j, 0],
                                 uniform_draw(seed, i * n_cols + j), value_mode, n_colour)
            for c in range(channels):
                out[i, j, c] = img[y, x, c]


# --- dpid --------------------------------------------------------------------------
#
# The guide is made on the fly, a row at a time: each call keeps the area
# means G of output rows i-1, i, i+1 in a ring of three rows, smooths them
# into Gs of row i, and pools row i's windows against it.  A call's first and
# last rows cost one extra guide row each; nothing of the output's size is
# allocated.


@njit(cache=True)
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
def _smooth_weight(k, n):
    """The [1 2 1] side weight of index ``k`` of ``n``, renormalised at the ends
    (as :func:`downpool.core.smooth_guide`)."""
    return 1.0 / 3.0 if k == 0 or k == n - 1 else 0.25


@njit(cache=True)
def _smooth_row(ring, i, n_rows, channels, vert, gs):
    """Gs of output row ``i`` from the G rows in ``ring`` (row g at ``ring[g % 3]``):
    the vertical pass, then the horizontal one, in core.smooth_guide's order of sums."""
    mid = ring[i % 3]
    if n_rows == 1:
        vert[:] = mid
    else:
        side = _smooth_weight(i, n_rows)
        for x in range(vert.shape[0]):
            vert[x] = (2.0 * side) * mid[x]
        if i > 0:
            up = ring[(i - 1) % 3]
            for x in range(vert.shape[0]):
                vert[x] += side * up[x]
        if i < n_rows - 1:
            down = ring[(i + 1) % 3]
            for x in range(vert.shape[0]):
                vert[x] += side * down[x]
    n_cols = vert.shape[0] // channels
    if n_cols == 1:
        gs[:] = vert
        return
    for j in range(n_cols):
        side = _smooth_weight(j, n_cols)
        for c in range(channels):
            k = j * channels + c
            acc = (2.0 * side) * vert[k]
            if j > 0:
                acc += side * vert[k - channels]
            if j < n_cols - 1:
                acc += side * vert[k + channels]
            gs[k] = acc


@njit(cache=True, inline="always")
def _dpid_window(rows, y0, ny, x0, nx, channels, n_colour, gs, base, in_scale, lam, out_max,
                 o):
    """:func:`downpool.windows.dpid_window` with equal coverages, stored into ``o[base:]``."""
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
    acc = np.zeros(channels)  # small and fixed-size: kept in registers
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


@njit(cache=True)
def dpid_kernel(img, in_scale, out, out_max, dims, n_colour, lam, i0, i1):
    kh_dims, kw_dims = dims
    channels, block_h, block_w = img.shape[2], len(kh_dims), len(kw_dims)
    rows, out_rows = _as_rows(img), _as_rows(out)
    height, width = img.shape[0], img.shape[1]
    n_rows, n_cols = out.shape[0], out.shape[1]
    full = width // block_w
    if i0 >= i1:
        return
    ring = np.empty((3, out_rows.shape[1]))
    vert = np.empty(out_rows.shape[1])
    gs = np.empty(out_rows.shape[1])
    for g in range(max(i0 - 1, 0), i0 + 1):
        _guide_row(rows, g, block_h, block_w, channels, height, width, in_scale, ring[g % 3])
    for i in range(i0, i1):
        if i + 1 < n_rows:
            _guide_row(rows, i + 1, block_h, block_w, channels, height, width, in_scale,
                       ring[(i + 1) % 3])
        _smooth_row(ring, i, n_rows, channels, vert, gs)
        o = out_rows[i]
        y0 = i * block_h
        ny = min(block_h, height - y0)
        edge = 0
        if ny == block_h:
            for j in range(full):
                _dpid_window(rows, y0, block_h, j * block_w, block_w, channels, n_colour, gs,
                             j * channels, in_scale, lam, out_max, o)
            edge = full
        for j in range(edge, n_cols):
            _dpid_window(rows, y0, ny, j * block_w, min(block_w, width - j * block_w), channels,
                         n_colour, gs, j * channels, in_scale, lam, out_max, o)
