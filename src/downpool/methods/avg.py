"""``avg``: the coverage-weighted mean of each window, the box filter (SPEC section 3).

- Its window formula is :func:`downpool.numba_idioms.window_mean`, which dpp's
  guide and dpid's guide use too, and which :mod:`downpool.cuda` compiles.
- Over constant blocks, :func:`avg_blocks`: integer images summed and rounded
  half up in integers, exact and faster than float sums.
- Everything else takes the separable passes (:mod:`downpool.separable`),
  faster than blocks of run-time size.
"""

from __future__ import annotations

from typing import NamedTuple

from numba import types
from numba.extending import overload

from ..blocks import block_column, block_layout, block_row, constant_plan, run_blocks
from ..core import PoolJob
from ..numba_idioms import block_mean, block_sum, jit
from ..separable import MODE_SUM, run_separable

__all__ = ["AvgParams", "avg_block", "avg_blocks", "pool"]


class AvgParams(NamedTuple):
    """The parameters :func:`avg_blocks` takes."""

    in_scale: float


def avg_block(rows, y0, ny, x0, nx, channels, c, in_scale):
    """avg's stored result: integer images are summed and rounded half up in integers."""


@overload(avg_block, inline="always")
def _avg_block_impl(rows, y0, ny, x0, nx, channels, c, in_scale):
    if isinstance(rows.dtype, types.Integer):
        def impl(rows, y0, ny, x0, nx, channels, c, in_scale):
            n = ny * nx
            return (block_sum(rows, y0, ny, x0, nx, channels, c, 0) + n // 2) // n
        return impl

    def impl_float(rows, y0, ny, x0, nx, channels, c, in_scale):
        return block_mean(rows, y0, ny, x0, nx, channels, c, in_scale)
    return impl_float


@jit(inline="always")
def _avg_row(rows, o, y0, ny, first, n_cols, block_w, width, channels, constant, in_scale):
    """A row's windows from ``first`` on, into ``o``."""
    for j in range(first, n_cols):
        x0, nx, base = block_column(j, block_w, width, constant, channels)
        for c in range(channels):
            o[base + c] = avg_block(rows, y0, ny, x0, nx, channels, c, in_scale)


@jit(nogil=True, error_model="numpy")
def avg_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
               params, j0, i0, i1):
    """avg over blocks (:func:`downpool.blocks.run_blocks`); stored values are the results:
    integer images keep their own dtype, float images have in_scale 1."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    for i in range(i0, i1):
        o, y0, ny, first = block_row(out_rows, i, block_h, img.shape[0], constant, j0)
        _avg_row(rows, o, y0, ny, first, n_cols, block_w, img.shape[1], channels, constant,
                 params.in_scale)


def pool(job: PoolJob) -> None:
    """avg of ``job`` on the CPU."""
    plan = constant_plan(job)
    if plan is not None:
        run_blocks(plan, avg_blocks, job.image, job.out, AvgParams(float(job.in_scale)))
        return
    run_separable(job, MODE_SUM)
