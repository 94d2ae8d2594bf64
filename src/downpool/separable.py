"""Separable pooling: the methods that are ratios of coverage-weighted sums, in two passes.

avg, max, lp, softpool and stochastic's expectation are ratios of sums of
per-pixel terms weighted by c = wy * wx, so each output row is made in two
passes: a vertical pass that accumulates the window's rows into buffers
along the contiguous W*C axis (which LLVM vectorises), then a horizontal
pass over each window's columns, through column taps
(:meth:`downpool.core.PoolJob.column_taps`) made once per call.  What each
mode accumulates:

  SUM       num += w*v                      out = num * in_scale
  TABLE     num += w*num_table[v]           out = num^(1/param)       (lp, integer input)
  TABLES    num += w*num_table[v]           out = num / den           (softpool, integer input)
            den += w*den_table[v]
  SOFT      e = exp(param*(a - ref))        out = num / den           (softpool, float input
            num += w*e*a; den += w*e                                   of bounded range)
  SQUARES   num += w*a*a; den += w*a        out = ref * num / den, 0 where den = 0

v is the stored value, a = v * in_scale the working value.  The mode reaches
the kernels as the length of a tuple of zeros, so that each method compiles
its own (:mod:`downpool.numba_idioms`).  The window means of a row
(:func:`mean_row`: dpp's g, dpid's G) are summed in the same order, and so
give the separable avg's bits.
"""

from __future__ import annotations

import math

import numpy as np

from .core import PoolJob
from .numba_idioms import fill, jit, power, stored
from .threads import run_rows

__all__ = ["MODE_SUM", "MODE_TABLE", "MODE_TABLES", "MODE_SOFT", "MODE_SQUARES", "EXP_LIMIT",
           "separable_kernel", "run_separable", "pool_columns", "mean_row", "gather_taps",
           "working_values"]

MODE_SUM = 0
MODE_TABLE = 1
MODE_TABLES = 2
MODE_SOFT = 3
MODE_SQUARES = 4


# Largest exponent magnitude the separable paths allow: e^600 and e^-600 are
# well inside float64, so no window's weights can all underflow or overflow.
EXP_LIMIT = 600.0


@jit
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


@jit(nogil=True)
def separable_kernel(img, in_scale, ys, yn, yw, out_max, out_int, mode_dims, num_table,
                     den_table, param, ref, rows, out_rows, taps_index, taps_weight, i0, i1):
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
        fill(num, 0.0)  # not ``num[:] =`` (downpool.numba_idioms)
        fill(den, 0.0)
        for r in range(yn[i]):
            _accumulate_row(rows[ys[i] + r], yw[i, r], in_scale, mode_dims, num_table,
                            den_table, param, ref, num, den)
        pool_columns(num, taps_index, taps_weight, out_num)
        if uses_den:
            pool_columns(den, taps_index, taps_weight, out_den)
        _finish_row(out_num, out_den, in_scale, mode_dims, param, ref, out_max, out_int,
                    out_rows[i])


@jit
def pool_columns(row_sums, taps_index, taps_weight, pooled):
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


@jit
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


NO_TABLE = np.zeros(1)


def run_separable(job: PoolJob, mode: int, num_table=None, den_table=None, param: float = 0.0,
                  ref: float = 0.0, in_scale: float | None = None) -> None:
    """:func:`separable_kernel` in ``mode`` over ``job``, on every thread."""
    gy = job.rows
    run_rows(separable_kernel, job.out, job.image, job.in_scale if in_scale is None else in_scale,
             gy.start, gy.count, gy.weight, job.out_max, job.out_int, (0,) * mode,
             NO_TABLE if num_table is None else num_table,
             NO_TABLE if den_table is None else den_table,
             float(param), float(ref), *job.row_views(), *job.column_taps())


@jit
def mean_row(rows, g, ys, yn, yw, taps_index, taps_weight, in_scale, column, dest):
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
    pool_columns(column, taps_index, taps_weight, dest)
    for k in range(dest.shape[0]):
        dest[k] = dest[k] * in_scale


@jit
def gather_taps(src, index, in_scale, values):
    """``values[k] = src[index[k]] * in_scale``: one column offset's pixels of an output
    row's windows, gathered through its taps (:meth:`PoolJob.column_taps`) so that
    the arithmetic of dpp's and dpid's row passes runs over contiguous values.
    Compiled apart and called once per image row and offset."""
    for k in range(values.shape[0]):
        values[k] = src[index[k]] * in_scale


def working_values(job: PoolJob) -> np.ndarray | None:
    """``a`` for every stored value of an integer input (its lookup table), else None."""
    if job.image.dtype.kind != "u":
        return None
    return np.arange(np.iinfo(job.image.dtype).max + 1, dtype=np.float64) * job.in_scale
