"""``max``: the largest value each window touches (SPEC section 3).

- Its window formula is :func:`downpool.numba_idioms.window_max` (lp's and
  softpool's window maximum too), which :mod:`downpool.cuda` compiles.
- Over constant blocks, :func:`max_blocks`, on stored values.
- Everything else, :func:`separable_max_kernel`: the column-wise maximum of a
  window's rows along the contiguous row, then along each window.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..blocks import block_column, block_layout, block_row, constant_plan, run_blocks
from ..core import PoolJob
from ..numba_idioms import block_max, jit, stored
from ..threads import run_rows

__all__ = ["MaxParams", "max_blocks", "separable_max_kernel", "pool"]


class MaxParams(NamedTuple):
    """The parameters :func:`max_blocks` takes: none (a record, as every block kernel takes)."""


@jit(inline="always")
def _max_window(rows, o, y0, ny, j, block_w, width, channels, constant):
    """Window ``j`` of a row, into ``o``."""
    x0, nx, base = block_column(j, block_w, width, constant, channels)
    for c in range(channels):
        o[base + c] = block_max(rows, y0, ny, x0, nx, channels, c)


@jit(nogil=True, error_model="numpy")
def max_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
               params, j0, i0, i1):
    """max over blocks (:func:`downpool.blocks.run_blocks`), on stored values."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    for i in range(i0, i1):
        o, y0, ny, first = block_row(out_rows, i, block_h, img.shape[0], constant, j0)
        for j in range(first, n_cols):
            _max_window(rows, o, y0, ny, j, block_w, img.shape[1], channels, constant)


@jit(nogil=True)
def separable_max_kernel(img, in_scale, ys, yn, xs, xn, out, out_max, out_int, rows, i0, i1):
    """Max pooling of output rows ``i0`` to ``i1``: the column-wise max of the window's
    rows (``rows``: ``img`` as rows), then the max along each window."""
    if i0 >= i1:
        return
    width, channels = img.shape[1], img.shape[2]
    top = np.empty(width * channels, dtype=img.dtype)
    for i in range(i0, i1):
        first = rows[ys[i]]
        for x in range(top.shape[0]):  # not ``top[:] =`` (downpool.numba_idioms)
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


def pool(job: PoolJob) -> None:
    """max of ``job`` on the CPU."""
    plan = constant_plan(job)
    if plan is not None:
        run_blocks(plan, max_blocks, job.image, job.out, MaxParams())
        return
    gy, gx = job.rows, job.cols
    run_rows(separable_max_kernel, job.out, job.image, job.in_scale, gy.start, gy.count,
             gx.start, gx.count, job.out, job.out_max, job.out_int, job.row_views()[0])
