"""``lp``: the power mean of each window, between avg (p = 1) and max (p -> inf) (SPEC section 3).

- :func:`lp_window`, the formula relative to the window's maximum m,
  ``m * mean((a/m)^p)^(1/p)``, exact for any p: the CPU's fallback
  (:func:`lp_kernel`) and :mod:`downpool.cuda`'s device function.
- Over constant blocks (:func:`lp_blocks`): the default p = 2 on integer and
  float32 images as sums of squared stored values in float64 (RMS: no float32
  value's square can overflow or underflow, so no maximum is needed); a table
  of a^p for integer images; the window-maximum form otherwise.
- The separable passes with the table of a^p for integer images
  (:mod:`downpool.separable`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from ..blocks import block_column, block_layout, block_plan, block_row, run_blocks
from ..core import PoolJob
from ..numba_idioms import block_max, jit, power_inlined, store, store_pixel, window_max
from ..separable import EXP_LIMIT, MODE_TABLE, NO_TABLE, run_separable, working_values
from ..threads import run_rows

__all__ = ["lp_window", "lp_kernel", "LpParams", "lp_blocks", "pool"]

@jit
def lp_window(img, in_scale, y0, ny, yw, i, x0, nx, xw, j, p, res):
    for c in range(res.shape[0]):
        m = window_max(img, in_scale, y0, ny, x0, nx, c)
        if m <= 0.0:  # all zero (negative input is rejected before)
            res[c] = 0.0
            continue
        acc = 0.0
        for r in range(ny):
            for s in range(nx):
                acc += yw[i, r] * xw[j, s] * (img[y0 + r, x0 + s, c] * in_scale / m) ** p
        res[c] = m * acc ** (1.0 / p)


@jit(nogil=True)
def lp_kernel(img, in_scale, ys, yn, yw, xs, xn, xw, out, out_max, out_int, p, i0, i1):
    res = np.empty(img.shape[2])
    for i in range(i0, i1):
        for j in range(out.shape[1]):
            lp_window(img, in_scale, ys[i], yn[i], yw, i, xs[j], xn[j], xw, j, p, res)
            store_pixel(out, i, j, res, out_max, out_int)


class LpParams(NamedTuple):
    """The parameters :func:`lp_blocks` takes: the table of a^p (integer input), p."""

    in_scale: float
    out_max: float
    table: np.ndarray
    p: float


# The variants of lp_blocks.
RMS = 1
TABLE = 2
RELATIVE = 3


@jit(inline="always")
def _lp_table_block(rows, y0, ny, x0, nx, channels, c, table, inv_p):
    s = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            # The cast lets float images compile this function; they never call it.
            s += table[np.intp(src[(x0 + t) * channels + c])]  # a^p
    return power_inlined(s / (ny * nx), inv_p)


@jit(inline="always")
def _rms_block(rows, y0, ny, x0, nx, channels, c, in_scale):
    """lp with p = 2 on an integer or float32 image: squares of stored values in
    float64 (exact for integers; no float32 value's square overflows or underflows)."""
    s = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            v = np.float64(src[(x0 + t) * channels + c])
            s += v * v
    return in_scale * math.sqrt(s / (ny * nx))


@jit(inline="always")
def _lp_block(rows, y0, ny, x0, nx, channels, c, in_scale, p, inv_p):
    # Relative to the window's maximum m: m * mean((a/m)^p)^(1/p), for any p.
    m = block_max(rows, y0, ny, x0, nx, channels, c)
    if m <= 0:
        return 0.0
    s = 0.0
    for r in range(ny):
        src = rows[y0 + r]
        for t in range(nx):
            # A division, not a reciprocal: a flat window gives exactly 1.
            s += power_inlined(src[(x0 + t) * channels + c] / m, p)
    return m * in_scale * power_inlined(s / (ny * nx), inv_p)


@jit(nogil=True, error_model="numpy")
def lp_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
              params, j0, i0, i1):
    """lp over blocks (:func:`downpool.blocks.run_blocks`), variant ``len(variant_dims)``:
    :data:`RMS`, :data:`TABLE` or :data:`RELATIVE` (to the window's maximum)."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    variant = len(variant_dims)
    in_scale, out_max, p = params.in_scale, params.out_max, params.p
    for i in range(i0, i1):
        o, y0, ny, first = block_row(out_rows, i, block_h, img.shape[0], constant, j0)
        for j in range(first, n_cols):
            x0, nx, base = block_column(j, block_w, img.shape[1], constant, channels)
            if variant == RMS:
                for c in range(channels):
                    o[base + c] = store(_rms_block(rows, y0, ny, x0, nx, channels, c, in_scale),
                                        out_max, o)
            elif variant == TABLE:
                for c in range(channels):
                    o[base + c] = store(_lp_table_block(rows, y0, ny, x0, nx, channels, c,
                                                        params.table, 1.0 / p), out_max, o)
            else:
                for c in range(channels):
                    o[base + c] = store(_lp_block(rows, y0, ny, x0, nx, channels, c, in_scale, p,
                                                  1.0 / p), out_max, o)


def pool(job: PoolJob, p: float) -> None:
    """lp of ``job`` on the CPU."""
    values = working_values(job)
    # Integer input: a table of a^p.  The smallest non-zero a^p, (1/max)^p,
    # must stay well inside the normal float64 range (e^-708), else windows
    # of small values lose precision or come out 0.
    use_table = values is not None and p * math.log(values.shape[0] - 1) < EXP_LIMIT
    plan = block_plan(job)
    constant = plan is not None and plan.constant
    record = functools.partial(LpParams, float(job.in_scale), float(job.out_max))
    # The default p = 2 on integer and float32 images: sums of squared stored
    # values in float64, where no float32 value's square can overflow or
    # underflow, so the window maximum is not needed.
    if constant and p == 2.0 and (values is not None or job.image.dtype == np.float32):
        run_blocks(plan, lp_blocks, job.image, job.out, record(NO_TABLE, 0.0), RMS)
    elif constant and use_table:
        run_blocks(plan, lp_blocks, job.image, job.out, record(values ** p, float(p)), TABLE)
    elif plan is not None and not use_table:
        run_blocks(plan, lp_blocks, job.image, job.out, record(NO_TABLE, float(p)), RELATIVE)
    elif use_table:
        run_separable(job, MODE_TABLE, values ** p, param=p)
    else:  # relative to each window's maximum, exact for any p
        run_rows(lp_kernel, job.out, *job.kernel_args(), float(p))
