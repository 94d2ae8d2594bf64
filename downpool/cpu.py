"""Numba CPU kernels: ``pool_<method>(job, **params)`` for every method.

Two families of kernels, each a serial ``nogil`` function over a range of
output rows that :func:`downpool.cpu_blocks.run_rows` splits between threads
(serial kernels compile in about half the time of ``prange`` ones, and no
call starts Numba's threading layer):

- separable kernels for the methods that are ratios of coverage-weighted sums
  (avg, max, lp, softpool, stochastic expectation): a vertical pass over the
  contiguous W*C axis, then a horizontal pass;
- per-window kernels for the methods that need each window's own statistics
  (dpp, dpid, stochastic sample, and the softpool/lp fallbacks for extreme
  parameters), which call the shared window functions of
  :mod:`downpool.windows` for every output pixel.  Three of them have a
  faster form of their own: dpp and dpid, for the default lam = 1, take the
  SPEC's weights in one pass around window means (dpp's g, dpid's guide G,
  smoothed into Gs) made for the whole output row first, a row at a time
  (:func:`_mean_row`), and make the row's windows together, across windows
  (:func:`_dpp_direct_row`, :func:`_dpid_direct_row`); stochastic sample
  makes the selection values of each output row's window rows once and picks
  from them (:func:`_pick`).

The horizontal passes read the image through column taps
(:meth:`downpool.core.PoolJob.column_taps`), made once per call: for each
column offset within the windows, every output value's input index and
coverage, so that a pass is one loop over the output row's values.

Where the windows tile the image (integer pooling with stride equal to the
kernel, or a size that divides the image's), every entry point hands the job
to the faster kernels of :mod:`downpool.cpu_blocks` instead.

Input values are read in their own dtype and multiplied by ``in_scale`` (1/255,
1/65535 or 1), so integer images are never copied to float.  Arithmetic is
float64: it keeps the SPEC's 1e-5 accuracy for any window size and float
inputs of any range (dpp's and dpid's row passes over 8- and 16-bit images
work in float32, within the same accuracy: see :mod:`downpool.cpu_blocks`).
:func:`float_range` finds a float image's range and refuses NaN and inf in
one pass.  The API looks the entry points up by method name.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import cpu_blocks as blocks
from .core import PoolJob
from .methods.mode import pool as pool_mode
from .windows import (DPP_EPS2, dpid_window, draw_base, dpp_window, lp_window, power, sample_window,
                      selection_value, softpool_window, stored, uniform_draw,
                      uniform_draw_after)

__all__ = [
    "float_range",
    "pool_avg",
    "pool_max",
    "pool_lp",
    "pool_softpool",
    "pool_stochastic",
    "pool_dpp",
    "pool_dpid",
    "pool_mode",
    "uniform_draw",
]


@njit(cache=True)
def _store_pixel(out, i, j, res, out_max, out_int):
    for c in range(res.shape[0]):
        out[i, j, c] = stored(res[c], out_max, out_int)


# --- separable kernels -------------------------------------------------------
#
# avg, max, lp, softpool and stochastic's expectation are ratios of sums of
# per-pixel terms weighted by c = wy * wx, so each output row is made in two
# passes: a vertical pass that accumulates the window's rows into buffers
# along the contiguous W*C axis (which LLVM vectorises), then a horizontal
# pass over each window's columns.  What each mode accumulates:
#
#   SUM       num += w*v                      out = num * in_scale
#   TABLE     num += w*num_table[v]           out = num^(1/param)       (lp, integer input)
#   TABLES    num += w*num_table[v]           out = num / den           (softpool, integer input)
#             den += w*den_table[v]
#   SOFT      e = exp(param*(a - ref))        out = num / den           (softpool, float input
#             num += w*e*a; den += w*e                                   of bounded range)
#   SQUARES   num += w*a*a; den += w*a        out = ref * num / den, 0 where den = 0
#
# v is the stored value, a = v * in_scale the working value.  The mode reaches
# the kernels as the length of a tuple of zeros (``mode_dims``): Numba folds it
# to a constant and prunes the other modes' loops before typing, so that each
# method compiles its own (avg's first call on a general geometry took 1.3 s
# longer with all five).

MODE_SUM = 0
MODE_TABLE = 1
MODE_TABLES = 2
MODE_SOFT = 3
MODE_SQUARES = 4


@njit(cache=True)
def _accumulate_row(row, w, in_scale, mode_dims, num_table, den_table, param, ref, num, den):
    """Add one input row's terms, weighted by ``w``, to ``num`` and ``den``.

    One loop per mode, with the branch outside the element loop, so that
    each loop vectorises.
    """
    n = row.shape[0]
    mode = len(mode_dims)
    if mode == MODE_SUM:
        for x in range(n):
            num[x] += w * row[x]
    elif mode == MODE_TABLE:
        for x in range(n):
            num[x] += w * num_table[np.intp(row[x])]
    elif mode == MODE_TABLES:
        for x in range(n):
            v = np.intp(row[x])
            num[x] += w * num_table[v]
            den[x] += w * den_table[v]
    elif mode == MODE_SOFT:
        for x in range(n):
            a = row[x] * in_scale
            e = w * math.exp(param * (a - ref))
            num[x] += e * a
            den[x] += e
    else:
        for x in range(n):
            a = row[x] * in_scale
            num[x] += w * a * a
            den[x] += w * a


@njit(cache=True, nogil=True)
def separable_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int,
                     mode_dims, num_table, den_table, param, ref, rows, out_rows, taps_index,
                     taps_weight, i0, i1):
    """Separable pooling of output rows ``i0`` to ``i1``: the mode ``len(mode_dims)`` and
    its arguments as in the table above; ``rows`` and ``out_rows`` are ``img`` and
    ``out`` as rows (:meth:`PoolJob.row_views`), ``taps_*`` the horizontal pass
    (:meth:`PoolJob.column_taps`)."""
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    mode = len(mode_dims)
    uses_den = mode != MODE_SUM and mode != MODE_TABLE
    # Row buffers are made once per call, not per output row: a buffer above
    # malloc's mmap threshold costs page faults each time.
    num = np.empty(width * channels)
    den = np.empty(width * channels if uses_den else 1)
    out_num = np.empty(out_rows.shape[1])
    out_den = np.empty(out_rows.shape[1] if uses_den else 1)
    for i in range(i0, i1):
        blocks.fill(num, 0.0)  # not ``num[:] =``: shape checks, seconds of compiling
        blocks.fill(den, 0.0)
        for r in range(yn[i]):
            _accumulate_row(rows[ys[i] + r], yw[i, r], in_scale, mode_dims, num_table,
                            den_table, param, ref, num, den)
        _pool_columns(num, taps_index, taps_weight, out_num)
        if uses_den:
            _pool_columns(den, taps_index, taps_weight, out_den)
        _finish_row(out_num, out_den, in_scale, mode_dims, param, ref, out_max, out_int,
                    out_rows[i])


@njit(cache=True)
def _pool_columns(row_sums, taps_index, taps_weight, pooled):
    """Horizontal pass: ``pooled[j*C + c] = sum_s xw[j, s] * row_sums[(xs[j] + s)*C + c]``,
    through the taps of :meth:`PoolJob.column_taps` (the terms past a window's count
    add exact zeros)."""
    n = pooled.shape[0]
    for k in range(n):
        pooled[k] = 0.0
    for s in range(taps_index.shape[0]):
        index = taps_index[s]
        weight = taps_weight[s]
        for k in range(n):
            pooled[k] += weight[k] * row_sums[index[k]]


@njit(cache=True)
def _finish_row(num, den, in_scale, mode_dims, param, ref, out_max, out_int, out_row):
    # One loop per mode, each simple enough to vectorise.
    n = out_row.shape[0]
    mode = len(mode_dims)
    if mode == MODE_SUM:
        for k in range(n):
            out_row[k] = stored(num[k] * in_scale, out_max, out_int)
    elif mode == MODE_TABLE:
        inv_p = 1.0 / param
        for k in range(n):
            # power() takes a square root for lp's default p = 2
            out_row[k] = stored(power(num[k], inv_p), out_max, out_int)
    elif mode == MODE_SQUARES:
        for k in range(n):
            out_row[k] = stored(ref * num[k] / den[k] if den[k] > 0.0 else 0.0, out_max, out_int)
    else:
        for k in range(n):
            out_row[k] = stored(num[k] / den[k], out_max, out_int)


@njit(cache=True, nogil=True)
def separable_max_kernel(img, in_scale, ys, yn, xs, xn, out, out_max, out_int, rows, i0, i1):
    """Max pooling of output rows ``i0`` to ``i1``: the column-wise max of the window's
    rows (``rows``: ``img`` as rows), then the max along each window."""
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    top = np.empty(width * channels, dtype=img.dtype)
    for i in range(i0, i1):
        first = rows[ys[i]]
        for x in range(top.shape[0]):  # not ``top[:] =``: 4 s of compiling
            top[x] = first[x]
        for r in range(1, yn[i]):
            row = rows[ys[i] + r]
            for x in range(top.shape[0]):
                top[x] = max(top[x], row[x])
        for j in range(out.shape[1]):
            for c in range(channels):
                m = top[xs[j] * channels + c]
                for s in range(1, xn[j]):
                    m = max(m, top[(xs[j] + s) * channels + c])
                out[i, j, c] = stored(m * in_scale, out_max, out_int)


# --- lp --------------------------------------------------------------------


@njit(cache=True, nogil=True)
def lp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, p, i0, i1):
    res = np.empty(img.shape[2])
    for i in range(i0, i1):
        for j in range(out.shape[1]):
            lp_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j, p, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- softpool --------------------------------------------------------------


@njit(cache=True, nogil=True)
def softpool_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, beta, i0, i1):
    res = np.empty(img.shape[2])
    for i in range(i0, i1):
        for j in range(out.shape[1]):
            softpool_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j, beta, res)
            _store_pixel(out, i, j, res, out_max, out_int)


# --- stochastic ------------------------------------------------------------

# The selection value, compiled again to be inlined into the pass below.
_selection_value = njit(inline="always")(selection_value.py_func)


@njit(cache=True, inline="always")
def _pick(values, ny, yw, i, x0, nx, xw, j, u):
    """``(r, x)`` of the pixel drawn from window ``(i, j)``: row ``r`` of the window, column
    ``x`` of the image.

    :func:`downpool.windows.sample_window`'s pick, step for step, so that every
    kernel and device picks the same pixel for the same draw, but with the
    selection values read from ``values[r, x]`` (made once per output row)
    instead of computed twice per pixel.
    """
    total = 0.0
    for r in range(ny):
        for s in range(nx):
            total += yw[i, r] * xw[j, s] * values[r, x0 + s]
    uniform = total <= 0.0  # all weights zero: draw by coverage alone
    target = u * (1.0 if uniform else total)
    cum = 0.0
    pick_r = -1
    pick_x = -1
    for r in range(ny):
        for s in range(nx):
            w = yw[i, r] * xw[j, s]
            if not uniform:
                w *= values[r, x0 + s]
            if w > 0.0:
                # The last pixel with weight is the fallback if rounding
                # leaves ``cum`` just short of ``target`` at the end.
                pick_r = r
                pick_x = x0 + s
                cum += w
                if cum > target:
                    return pick_r, pick_x
    return pick_r, pick_x


@njit(cache=True, nogil=True)
def stochastic_sample_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int,
                             draws, value_mode, n_colour, buffered_dims, i0, i1):
    """Stochastic sample of output rows ``i0`` to ``i1``, copying every channel of the
    pixel drawn from each window; ``draws`` is the job's
    :func:`~downpool.windows.draw_base`.

    Where ``buffered_dims`` is ``(0,)``, the selection values of each output
    row's window rows are made first, in a pass along them, and each window
    picks from them (:func:`_pick`).  Where it is ``()`` (windows so tall
    that their rows' values would take more than :data:`SAMPLE_VALUES`
    float64s: thumbnails a few pixels high of a large image), each window
    computes its values as it goes, in :func:`downpool.windows.sample_window`,
    which picks the same pixels.  The form is the length of a tuple, so that
    Numba compiles one of them (as in :func:`dpid_kernel`).
    """
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    n_cols = out.shape[1]
    values = np.empty((yw.shape[1] if len(buffered_dims) > 0 else 0, width))
    res = np.empty(channels)
    for i in range(i0, i1):
        y0 = ys[i]
        ny = yn[i]
        if len(buffered_dims) == 0:
            for j in range(n_cols):
                sample_window(img, in_scale, y0, ny, yw, i, xs[j], xn[j], xw, j,
                              uniform_draw_after(draws, i * n_cols + j), value_mode, n_colour, res)
                _store_pixel(out, i, j, res, out_max, out_int)
            continue
        for r in range(ny):
            for x in range(width):
                values[r, x] = _selection_value(img, y0 + r, x, value_mode, n_colour)
        for j in range(n_cols):
            r, x = _pick(values, ny, yw, i, xs[j], xn[j], xw, j,
                         uniform_draw_after(draws, i * n_cols + j))
            for c in range(channels):
                out[i, j, c] = stored(img[y0 + r, x, c] * in_scale, out_max, out_int)


def sample_kernel_form(job: PoolJob, max_values: int | None = None) -> tuple:
    """``buffered_dims`` of :func:`stochastic_sample_kernel` for ``job``: ``(0,)`` where a
    thread's selection values of one output row's windows take at most ``max_values``
    float64s (default :data:`SAMPLE_VALUES`)."""
    limit = SAMPLE_VALUES if max_values is None else max_values
    return (0,) if job.rows.weight.shape[1] * job.image.shape[1] <= limit else ()


# --- dpp -------------------------------------------------------------------


@njit(cache=True)
def _mean_row(rows, g, ys, yn, yw, taps_index, taps_weight, in_scale, column, dest):
    """The coverage-weighted mean of every channel of output row ``g``'s windows, in
    working values: dpp's g and dpid's G.  Summed in the order of the separable avg
    kernel (the same bits), in ``column`` (an image row's length)."""
    for x in range(column.shape[0]):
        column[x] = 0.0
    for r in range(yn[g]):
        w = yw[g, r]
        src = rows[ys[g] + r]
        for x in range(column.shape[0]):
            column[x] += w * src[x]
    _pool_columns(column, taps_index, taps_weight, dest)
    for k in range(dest.shape[0]):
        dest[k] = dest[k] * in_scale


@njit(cache=True)
def _gather_taps(src, index, in_scale, values):
    """``values[k] = src[index[k]] * in_scale``: one column offset's pixels of an output
    row's windows, gathered through its taps (:meth:`PoolJob.column_taps`) so that
    the arithmetic of dpp's and dpid's row passes runs over contiguous values.
    Compiled apart and called once per image row and offset."""
    for k in range(values.shape[0]):
        values[k] = src[index[k]] * in_scale


@njit(cache=True, inline="always")
def _dpp_direct_row(rows, in_scale, y0, ny, yw, i, taps_index, taps_weight, means, alpha, asym,
                    values, num, den):
    """dpp with lam = 1 as the SPEC writes it, weights ``c (alpha + sqrt((a - g)^2 + eps^2))``
    around each window's mean ``g`` (``means``), for every value ``k = j*C + c`` of an
    output row: ``num[k]`` the sum of window j's weighted values of channel c, ``den[k]``
    of its weights.

    The caller has checked that no weight times a value can overflow (as for
    the block kernel's direct form). As in :func:`_dpid_direct_row`, the pixels
    are gathered through the column taps, and the weights' arithmetic runs across
    the row's values, which LLVM vectorises; each window sums in its own order.
    """
    for k in range(num.shape[0]):
        num[k] = 0.0
        den[k] = 0.0
    for r in range(ny):
        wr = yw[i, r]
        for t in range(taps_index.shape[0]):
            weight = taps_weight[t]
            _gather_taps(rows[y0 + r], taps_index[t], in_scale, values)
            for k in range(values.shape[0]):
                a = values[k]
                d = a - means[k]
                if asym:
                    d = 0.0 if d < 0.0 else d  # max(d, 0.0), as a select that vectorises
                w = wr * weight[k] * (alpha + math.sqrt(d * d + DPP_EPS2))
                num[k] += w * a
                den[k] += w


@njit(cache=True, nogil=True, error_model="numpy")
def dpp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, alpha, lam, asym,
               direct_dims, rows, taps_index, taps_weight, i0, i1):
    """dpp of output rows ``i0`` to ``i1``: the direct form where ``direct_dims`` is
    ``(0,)`` (lam = 1, checked by the caller), with each row's window means made
    first in passes along the row; else :func:`downpool.windows.dpp_window`'s
    weights relative to each window's largest.  The form is the length of a
    tuple, so that Numba compiles one of them (as in :func:`dpid_kernel`).
    ``rows`` is ``img`` as rows, ``taps_*`` the horizontal pass of the means and of
    the direct form (:meth:`PoolJob.column_taps`).
    """
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    n_cols = out.shape[1]
    means = np.empty(n_cols * channels)
    column = np.empty(width * channels)
    res = np.empty(channels)
    row_values = n_cols * channels if len(direct_dims) > 0 else 0
    values = np.empty(row_values)
    num = np.empty(row_values)
    den = np.empty(row_values)
    for i in range(i0, i1):
        if len(direct_dims) > 0:
            _mean_row(rows, i, ys, yn, yw, taps_index, taps_weight, in_scale, column, means)
            _dpp_direct_row(rows, in_scale, ys[i], yn[i], yw, i, taps_index, taps_weight, means,
                            alpha, asym, values, num, den)
            for j in range(n_cols):
                for c in range(channels):
                    res[c] = num[j * channels + c] / den[j * channels + c]
                _store_pixel(out, i, j, res, out_max, out_int)
        else:
            for j in range(n_cols):
                dpp_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j,
                           alpha, lam, asym, res)
                _store_pixel(out, i, j, res, out_max, out_int)


# --- dpid ------------------------------------------------------------------
#
# As the block kernel does (cpu_blocks), the guide is made a row at a time:
# each call keeps the area means G of output rows i-1, i, i+1 in a ring of
# three rows, smooths them into Gs of row i and pools row i's windows against
# it, so nothing of the output's size is allocated (a whole float64 guide and
# its smoothing were 3-4x the output's bytes, and took longer than the pooling).


@njit(cache=True, inline="always")
def _dpid_direct_row(rows, in_scale, y0, ny, yw, i, taps_index, taps_weight, channels, n_colour,
                     gs, values, den, sums):
    """dpid with lam = 1 as the SPEC writes it, weights ``c |a - Gs|``, for every window
    of an output row: ``den[j]`` the sum of window j's weights, ``sums[j*C + c]`` of
    its weighted values.

    The caller has checked that no weight can overflow or vanish (as for the
    block kernel's direct form). The SPEC's 1/sqrt(C) cancels in the ratio. Up to
    four channels (a constant), kept in scalars.

    The windows' pixels come from the column taps (:meth:`PoolJob.column_taps`):
    for each row and column offset, the pixels are gathered into ``values``
    first, and the weights' arithmetic (a square root per pixel) then runs over
    contiguous values, across windows, which LLVM vectorises (20% faster on
    6001x4001 at k=2). Each window still sums its pixels row by row, column by
    column, with zeros past its count: the order, and the bits, of a window at a
    time.
    """
    m1 = 1.0 if n_colour > 1 else 0.0
    m2 = 1.0 if n_colour > 2 else 0.0
    m3 = 1.0 if n_colour > 3 else 0.0
    for j in range(den.shape[0]):
        den[j] = 0.0
    for k in range(sums.shape[0]):
        sums[k] = 0.0
    for r in range(ny):
        wr = yw[i, r]
        for t in range(taps_index.shape[0]):
            weight = taps_weight[t]
            _gather_taps(rows[y0 + r], taps_index[t], in_scale, values)
            for j in range(den.shape[0]):
                base = j * channels
                a0 = values[base]
                a1 = values[base + 1] if channels > 1 else 0.0
                a2 = values[base + 2] if channels > 2 else 0.0
                a3 = values[base + 3] if channels > 3 else 0.0
                g0 = gs[base]
                g1 = gs[base + 1] if channels > 1 else 0.0
                g2 = gs[base + 2] if channels > 2 else 0.0
                g3 = gs[base + 3] if channels > 3 else 0.0
                d2 = (a0 - g0) * (a0 - g0) + m1 * ((a1 - g1) * (a1 - g1)) \
                    + m2 * ((a2 - g2) * (a2 - g2)) + m3 * ((a3 - g3) * (a3 - g3))
                w = wr * weight[base] * math.sqrt(d2)
                den[j] += w
                sums[base] += w * a0
                if channels > 1:
                    sums[base + 1] += w * a1
                if channels > 2:
                    sums[base + 2] += w * a2
                if channels > 3:
                    sums[base + 3] += w * a3


@njit(cache=True, nogil=True, error_model="numpy")
def dpid_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, n_colour, lam,
                direct_dims, rows, taps_index, taps_weight, i0, i1):
    """dpid of output rows ``i0`` to ``i1``: the direct form where ``direct_dims`` is a
    tuple of one zero per channel (lam = 1 and at most four channels, checked by the
    caller), else (``()``) :func:`downpool.windows.dpid_window`'s weights relative to
    each window's largest distance.

    The form is the length of a tuple, so that Numba prunes the other form
    before typing (as in :func:`downpool.cpu_blocks.pool_kernel`) and compiles
    one window function, not both; the direct form's channel count is then a
    constant, and its tests of it fold away (about 13% faster on RGB).
    ``rows`` is ``img`` as rows, ``taps_*`` the guide's horizontal pass
    (:meth:`PoolJob.column_taps`), which the direct form reads too.
    """
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    n_rows, n_cols = out.shape[0], out.shape[1]
    # Rows 0-2 the ring of G rows (row g at g % 3), 3 the vertical smoothing, 4 Gs.
    ring = np.empty((5, n_cols * channels))
    column = np.empty(width * channels)
    res = np.empty(channels)
    den = np.empty(n_cols if len(direct_dims) > 0 else 0)
    sums = np.empty(n_cols * channels if len(direct_dims) > 0 else 0)
    values = np.empty(n_cols * channels if len(direct_dims) > 0 else 0)
    for i in range(i0, i1):
        first = max(i0 - 1, 0) if i == i0 else i + 1
        for g in range(first, min(i + 2, n_rows)):
            _mean_row(rows, g, ys, yn, yw, taps_index, taps_weight, in_scale, column,
                      ring[g % 3])
        blocks.smooth_row(ring, i, n_rows, channels, ring[3], ring[4])
        gs = ring[4]
        if len(direct_dims) > 0:
            _dpid_direct_row(rows, in_scale, ys[i], yn[i], yw, i, taps_index, taps_weight,
                             len(direct_dims), n_colour, gs, values, den, sums)
            for j in range(n_cols):
                # A window whose weights all are 0 has every pixel at Gs, its output.
                some = den[j] > 0.0
                inv = 1.0 / den[j] if some else 0.0
                for c in range(channels):
                    k = j * channels + c
                    res[c] = sums[k] * inv if some else gs[k]
                _store_pixel(out, i, j, res, out_max, out_int)
        else:
            # dpid_window indexes the guide and the row coverages by output row:
            # this row's alone, as row 0.
            guide = gs.reshape((1, n_cols, channels))
            wy = yw[i:i + 1]
            for j in range(n_cols):
                dpid_window(img, in_scale, ys[i], yn[i], wy, 0, xs[j], xn[j], xw, j, guide,
                            n_colour, lam, res)
                _store_pixel(out, i, j, res, out_max, out_int)


# --- entry points ----------------------------------------------------------

_NO_TABLE = np.zeros(1)

#: Most selection values (float64) a thread of the general stochastic sample
#: kernel keeps, 8 MB: jobs with taller windows compute them as they go.
SAMPLE_VALUES = 1 << 20

# Largest exponent magnitude the separable paths allow: e^600 and e^-600 are
# well inside float64, so no window's weights can all underflow or overflow.
_EXP_LIMIT = 600.0


def _separable(job: PoolJob, mode: int, num_table=_NO_TABLE, den_table=_NO_TABLE,
               param: float = 0.0, ref: float = 0.0, in_scale: float | None = None) -> None:
    args = list(job.kernel_args())
    if in_scale is not None:
        args[1] = in_scale
    blocks.run_rows(separable_kernel, job.out, *args, (0,) * mode, num_table, den_table,
                    float(param), float(ref), *job.row_views(), *job.column_taps())


def _draw_base(job: PoolJob, seed: int) -> np.uint64:
    """The stochastic draws of ``job``'s output rows: those of rows ``job.first_row`` on."""
    # Numba returns a uint64 to Python as an int: typed again as one here.
    return np.uint64(draw_base(np.uint64(seed), job.first_row * job.cols.size))


def _working_values(job: PoolJob) -> np.ndarray | None:
    """``a`` for every stored value of an integer input (its lookup table), else None."""
    if job.image.dtype.kind != "u":
        return None
    return np.arange(np.iinfo(job.image.dtype).max + 1, dtype=np.float64) * job.in_scale


def _blocks(job: PoolJob, plan: blocks.BlockPlan, method: int, table=_NO_TABLE,
            param: float = 0.0, param2: float = 0.0, in_scale: float | None = None,
            seed: int = 0) -> None:
    """:func:`downpool.cpu_blocks.pool_blocks` with the window function ``method`` over ``job``."""
    params = (float(job.in_scale if in_scale is None else in_scale), float(job.out_max),
              table, float(param), float(param2), int(job.n_colour), int(job.value_mode),
              _draw_base(job, seed), job.rows.weight, job.cols.weight)
    blocks.pool_blocks(plan, method, job.image, job.out, params)


def _constant_blocks(job: PoolJob) -> blocks.BlockPlan | None:
    """The job's block plan where its sizes are compiled in, else None.

    Methods with a separable path take the block kernels only then: with
    run-time sizes the block kernel's window loops do not vectorise, and
    the separable passes, along the contiguous W*C axis, are 2-6x faster
    (avg and max at k=4 and at scale 0.1).
    """
    plan = blocks.block_plan(job)
    return plan if plan is not None and plan.constant else None


def pool_avg(job: PoolJob) -> None:
    plan = _constant_blocks(job)
    if plan is not None:
        _blocks(job, plan, blocks.AVG)
        return
    _separable(job, MODE_SUM)


def pool_max(job: PoolJob) -> None:
    plan = _constant_blocks(job)
    if plan is not None:
        _blocks(job, plan, blocks.MAX)
        return
    gy, gx = job.rows, job.cols
    blocks.run_rows(separable_max_kernel, job.out, job.image, job.in_scale, gy.start, gy.count,
                    gx.start, gx.count, job.out, job.out_max, job.out_int, job.row_views()[0])


def pool_lp(job: PoolJob, p: float) -> None:
    values = _working_values(job)
    # Integer input: a table of a^p.  The smallest non-zero a^p, (1/max)^p,
    # must stay well inside the normal float64 range (e^-708), else windows
    # of small values lose precision or come out 0.
    use_table = values is not None and p * math.log(values.shape[0] - 1) < _EXP_LIMIT
    plan = blocks.block_plan(job)
    constant = plan is not None and plan.constant
    # The default p = 2 on integer and float32 images: sums of squared stored
    # values in float64, where no float32 value's square can overflow or
    # underflow, so the window maximum is not needed.
    if constant and p == 2.0 and (values is not None or job.image.dtype == np.float32):
        _blocks(job, plan, blocks.RMS)
    elif constant and use_table:
        _blocks(job, plan, blocks.LP_TABLE, values ** p, param=p)
    elif plan is not None and not use_table:
        _blocks(job, plan, blocks.LP, param=p)
    elif use_table:
        _separable(job, MODE_TABLE, values ** p, param=p)
    else:  # relative to each window's maximum, exact for any p
        blocks.run_rows(lp_kernel, job.out, *job.kernel_args(), float(p))


def pool_softpool(job: PoolJob, beta: float) -> None:
    lo, hi = job.value_range
    if beta == 0.0:
        pool_avg(job)  # e^0 = 1: exactly avg, for any range
        return
    # With the exponent centred on the image's mid value, every e^(beta*(a - ref))
    # lies within e^+-(beta * (hi - lo) / 2); one pass of sums is exact when
    # that and the terms e * a stay far inside float64 (below e^600).
    # Otherwise each window subtracts its own maximum. Over constant blocks,
    # where e^(beta*|a - ref|) <= e^8, in float32 (eight values per vector),
    # with no table or window maximum.
    ref = 0.5 * (lo + hi)
    plan = blocks.block_plan(job)
    if plan is not None and plan.constant and _softpool_in_float32(beta, lo, hi):
        _blocks(job, plan, blocks.SOFTPOOL_F32, param=beta, param2=ref)
        return
    magnitude = max(abs(lo), abs(hi), 1.0)
    bounded = beta * (0.5 * hi - 0.5 * lo) + math.log(magnitude) <= _EXP_LIMIT
    values = _working_values(job)
    if bounded and values is not None:  # integer input: tables of e and e * a
        weights = np.exp(beta * (values - ref))
        if plan is not None and plan.constant:
            # Interleaved, so that a value's two entries share a cache line.
            tables = np.stack([weights * values, weights], axis=1).ravel()
            _blocks(job, plan, blocks.SOFTPOOL_TABLE, tables)
        else:
            _separable(job, MODE_TABLES, weights * values, weights)
    elif plan is not None:
        _blocks(job, plan, blocks.SOFTPOOL, param=beta)
    elif bounded:
        _separable(job, MODE_SOFT, param=beta, ref=ref)
    else:
        blocks.run_rows(softpool_kernel, job.out, *job.kernel_args(), float(beta))


#: Largest |beta * (a - ref)| that softpool's float32 kernel takes: its weights
#: e^(beta * (a - ref)) lie in [e^-8, e^8], and each is within 1.5e-6 of the
#: float64 one (see :func:`_softpool_in_float32`).
_EXP_LIMIT_F32 = 8.0


def _softpool_in_float32(beta: float, lo: float, hi: float) -> bool:
    """Whether softpool's float32 block kernel (``cpu_blocks.SOFTPOOL_F32``) keeps SPEC 1's
    accuracy on an image whose values lie in [lo, hi].

    Its weights are centred on the range's middle and bounded by
    ``e^(beta * (hi - lo) / 2)`` (at most e^8), so every term e * a stays in
    float32's normal range when the values' magnitude does: float images of
    magnitude above 1e30 (e * a would near float32's largest) or below 1e-30
    (e * a would be subnormal, with fewer significant bits) keep the float64
    kernels. The kernel forms each exponent as ``a * beta / ln 2 - shift`` in one
    multiply-add, which rounds once where the CPU fuses it and twice where it
    does not: ``beta * |a| <= 16`` keeps both roundings below 1.5e-6 of a weight
    (values far from 0 relative to their spread, such as [1000, 1001] at a beta
    that spread needs, keep the float64 kernels). beta = 4.4 on 8- and 16-bit
    images gives an exponent of 2.2 and beta * |a| <= 4.4.
    """
    magnitude = max(abs(lo), abs(hi))
    return (beta * (0.5 * hi - 0.5 * lo) <= _EXP_LIMIT_F32
            and beta * magnitude <= 2.0 * _EXP_LIMIT_F32
            and (magnitude == 0.0 or 1e-30 <= magnitude <= 1e30))


def pool_stochastic(job: PoolJob, mode: str, seed: int) -> None:
    plan = blocks.block_plan(job)
    if mode == "sample":
        if plan is not None:
            _blocks(job, plan, blocks.SAMPLE, seed=seed)
        else:
            blocks.run_rows(stochastic_sample_kernel, job.out, *job.kernel_args(),
                            _draw_base(job, seed), job.value_mode, job.n_colour,
                            sample_kernel_form(job))
        return
    # sum c a^2 / sum c a is homogeneous of degree 1: pool a / hi, which cannot
    # overflow when squared, and multiply back.
    top = job.value_range[1]
    unit = top if top > 0.0 else 1.0
    if plan is not None and plan.constant:
        _blocks(job, plan, blocks.EXPECTATION, param=unit, in_scale=job.in_scale / unit)
    else:
        _separable(job, MODE_SQUARES, ref=unit, in_scale=job.in_scale / unit)


def pool_dpp(job: PoolJob, alpha: float, lam: float, variant: str) -> None:
    if lam == 0.0:
        pool_avg(job)  # every weight is alpha + 1: the window's mean
        return
    # The default lam = 1 has weights alpha + sqrt((a - g)^2 + eps^2) as they
    # stand, where every w * a lies far inside float64; else the kernels divide
    # the weights by the window's largest, for any exponent.
    lo, hi = job.value_range
    magnitude = max(abs(lo), abs(hi), 1.0)
    span = hi - lo  # may be inf: a product, not a power, which would raise
    direct = lam == 1.0 and (math.log(max(alpha, 1.0)) + 0.5 * math.log(span * span + DPP_EPS2)
                             + math.log(magnitude) <= _EXP_LIMIT)
    plan = blocks.block_plan(job)
    if plan is None:
        blocks.run_rows(dpp_kernel, job.out, *job.kernel_args(), float(alpha), float(lam),
                        variant == "asym", (0,) if direct else (), job.row_views()[0],
                        *job.column_taps())
        return
    if variant == "asym":
        method = blocks.DPP_ASYM_DIRECT if direct else blocks.DPP_ASYM
    else:
        method = blocks.DPP_SYM_DIRECT if direct else blocks.DPP_SYM
    _blocks(job, plan, method, param=alpha, param2=lam)


def pool_dpid(job: PoolJob, lam: float) -> None:
    if lam == 0.0:
        pool_avg(job)  # every weight is 1: the window's mean
        return
    # The default lam = 1 has weights |a - Gs| as they stand for integer and
    # float32 images: no distance can overflow in float64, nor be so small
    # that its square flushes to zero without being zero.  Else the kernels
    # divide the distances by the window's largest, for any exponent.
    direct = lam == 1.0 and job.image.dtype != np.float64
    plan = blocks.block_plan(job)
    if plan is not None:
        _blocks(job, plan, blocks.DPID_DIRECT if direct else blocks.DPID, param=lam)
        return
    # The general kernel's direct form keeps up to four channels in scalars.
    direct = direct and job.image.shape[2] <= 4
    blocks.run_rows(dpid_kernel, job.out, *job.kernel_args(), job.n_colour, float(lam),
                    (0,) * job.image.shape[2] if direct else (), job.row_views()[0],
                    *job.column_taps())


# --- the range of a float image ------------------------------------------------------


@njit(cache=True, nogil=True)
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
    view = bits[i0:i1]  # a loop from 0 vectorises (see cpu_blocks)
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

    Every float method needs the range, and SPEC 1 refuses NaN and inf: on a
    24 MP RGB float32 image NumPy's ``min`` and ``max`` took 30 ms, more than
    ``avg``'s kernel itself.
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
        pool = blocks.thread_pool(threads)
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
