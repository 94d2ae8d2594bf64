"""``mode``: the most frequent value of each window, for label images (SPEC section 3).

Per channel, among the window's pixels, the value whose pixels have the
largest total coverage wins; a tie goes to the smallest value.  Coverages
are the geometry's exact integer units (:attr:`downpool.geometry.AxisWindows.units`),
so totals are exact and a tie is a tie, never a matter of rounding.  The
result is a stored value of the input, copied as it is: no scaling, no
rounding, and any dtype, ``uint32`` included.

The layers, from the formula up:

- :func:`mode_window`: one window, no scratch memory, quadratic in the
  window's size.  The reference form: the CPU uses it for small windows and
  :mod:`downpool.cuda` compiles it as a device function (a GPU thread has no
  room for a sort's scratch).
- :func:`mode_window_sorted`: the same result in ``n log n``, from the
  window's values sorted stably into per-thread scratch, for large windows
  on the CPU.  Equal values (``-0.0`` and ``0.0`` too) are one value, whose
  first pixel in row-major order gives the result in both forms.
- :func:`mode_window_counted`: the same result in ``n``, for 8- and 16-bit
  labels: each value's total added up in a table indexed by the value (256
  or 65536 entries per thread), then read back for the values met.  A sort
  of every window made large overlapping windows (``-k 400 --stride 1``)
  take minutes.
- :func:`mode_blocks`: windows that tile the image in k=2 blocks of 1 or 3
  channels (any dtype), whose sizes are compile-time constants, and their
  partial edges (:func:`downpool.blocks.run_blocks`): every pixel of a block
  weighs the same, and a value's total is a count.
- :func:`pool`: the plan, which picks the kernels for a job.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..blocks import BlockPlan, block_column, block_layout, block_plan, block_row, run_blocks
from ..core import PoolJob
from ..numba_idioms import jit
from ..threads import run_rows

__all__ = ["mode_window", "mode_window_sorted", "mode_window_counted", "mode_kernel",
           "mode_kernel_counted", "ModeParams", "mode_blocks", "pool", "SORTED_FROM"]

#: Windows of at least this many pixels take the sorted form on the CPU.
SORTED_FROM = 25

#: Block sides and channel counts compiled as constants (a pyramid's k=2 of
#: grey or RGB labels).
CONSTANT_BLOCK = 2
CONSTANT_CHANNELS = (1, 3)


@jit
def mode_window(img, y0, ny, yu, i, x0, nx, xu, j, c):
    """The mode of channel ``c`` of window ``(i, j)``: rows ``y0`` to ``y0 + ny`` with
    coverage units ``yu[i]``, columns likewise (``xu[j]``)."""
    best = img[y0, x0, c]
    best_total = np.int64(-1)
    for r in range(ny):
        for s in range(nx):
            v = img[y0 + r, x0 + s, c]
            if best_total >= 0 and v == best:
                continue  # its total is the best one already
            total = np.int64(0)
            for r2 in range(ny):
                for s2 in range(nx):
                    if img[y0 + r2, x0 + s2, c] == v:
                        total += yu[i, r2] * xu[j, s2]
            if total > best_total or (total == best_total and v < best):
                best = v
                best_total = total
    return best


@jit
def mode_window_sorted(img, y0, ny, yu, i, x0, nx, xu, j, c, values, units):
    """:func:`mode_window` through a stable sort of the window's values, in ``values``
    and ``units`` (at least ``ny * nx`` long each)."""
    n = 0
    for r in range(ny):
        for s in range(nx):
            values[n] = img[y0 + r, x0 + s, c]
            units[n] = yu[i, r] * xu[j, s]
            n += 1
    order = np.argsort(values[:n], kind="mergesort")  # stable: a run starts at its first pixel
    best = values[order[0]]
    best_total = np.int64(-1)
    k = 0
    while k < n:
        v = values[order[k]]
        total = np.int64(0)
        while k < n and values[order[k]] == v:
            total += units[order[k]]
            k += 1
        if total > best_total:  # ascending values: a tie keeps the smaller
            best = v
            best_total = total
    return best


@jit
def mode_window_counted(img, y0, ny, yu, i, x0, nx, xu, j, c, totals, met):
    """:func:`mode_window` of integer labels through ``totals`` (one entry per possible
    value, zero on entry and left zero) and ``met`` (at least ``ny * nx`` long)."""
    n = 0
    for r in range(ny):
        for s in range(nx):
            v = img[y0 + r, x0 + s, c]
            if totals[v] == 0:
                met[n] = v
                n += 1
            totals[v] += yu[i, r] * xu[j, s]
    best = img[y0, x0, c]
    best_total = np.int64(-1)
    for k in range(n):
        v = met[k]
        total = totals[v]
        if total > best_total or (total == best_total and v < best):
            best = v
            best_total = total
        totals[v] = 0
    return best


@jit(nogil=True)
def mode_kernel_counted(img, ys, yn, yu, xs, xn, xu, out, values, j0, i0, i1):
    """:func:`mode_kernel` for labels of ``values`` possible values (256 or 65536): the
    counted form for windows of :data:`SORTED_FROM` pixels or more."""
    if i0 >= i1:
        return
    totals = np.zeros(values, dtype=np.int64)
    met = np.empty(yu.shape[1] * xu.shape[1], dtype=img.dtype)
    for i in range(i0, i1):
        for j in range(j0, out.shape[1]):
            for c in range(img.shape[2]):
                if yn[i] * xn[j] >= SORTED_FROM:
                    out[i, j, c] = mode_window_counted(img, ys[i], yn[i], yu, i, xs[j], xn[j], xu,
                                                       j, c, totals, met)
                else:
                    out[i, j, c] = mode_window(img, ys[i], yn[i], yu, i, xs[j], xn[j], xu, j, c)


@jit(nogil=True)
def mode_kernel(img, ys, yn, yu, xs, xn, xu, out, j0, i0, i1):
    """The mode of every window of output rows ``i0`` to ``i1``, from column ``j0`` on."""
    if i0 >= i1:
        return
    largest = yu.shape[1] * xu.shape[1]
    scratch = largest if largest >= SORTED_FROM else 0
    values = np.empty(scratch, dtype=img.dtype)
    units = np.empty(scratch, dtype=np.int64)
    for i in range(i0, i1):
        for j in range(j0, out.shape[1]):
            for c in range(img.shape[2]):
                if yn[i] * xn[j] >= SORTED_FROM:
                    out[i, j, c] = mode_window_sorted(img, ys[i], yn[i], yu, i, xs[j], xn[j], xu,
                                                      j, c, values, units)
                else:
                    out[i, j, c] = mode_window(img, ys[i], yn[i], yu, i, xs[j], xn[j], xu, j, c)


class ModeParams(NamedTuple):
    """The parameters :func:`mode_blocks` takes: none (a record, as every block kernel takes)."""


@jit(inline="always")
def _block_mode(rows, y0, ny, x0, nx, channels, c):
    """The mode of one block whose pixels weigh the same: each value's count, the
    best chosen with selects rather than branches."""
    best = rows[y0, x0 * channels + c]
    best_count = 0
    for r in range(ny):
        for t in range(nx):
            v = rows[y0 + r, (x0 + t) * channels + c]
            count = 0
            for r2 in range(ny):
                for t2 in range(nx):
                    count += rows[y0 + r2, (x0 + t2) * channels + c] == v
            better = (count > best_count) | ((count == best_count) & (v < best))
            best = v if better else best
            best_count = count if better else best_count
    return best


@jit(nogil=True)
def mode_blocks(img, rows, out_rows, kh_dims, kw_dims, c_dims, edge_dims, sizes, variant_dims,
                params, j0, i0, i1):
    """mode over blocks (:func:`downpool.blocks.run_blocks`): the full blocks with constant
    sizes, and the partial ones at the edges with run-time sizes."""
    block_h, block_w, channels, n_cols, i1, constant = block_layout(img, out_rows, kh_dims, kw_dims,
                                                                    c_dims, sizes, i1)
    for i in range(i0, i1):
        o, y0, ny, first = block_row(out_rows, i, block_h, img.shape[0], constant, j0)
        for j in range(first, n_cols):
            x0, nx, base = block_column(j, block_w, img.shape[1], constant, channels)
            for c in range(channels):
                o[base + c] = _block_mode(rows, y0, ny, x0, nx, channels, c)


def pool(job: PoolJob) -> None:
    """``mode`` of ``job`` on the CPU: the block kernel where the windows are k=2 blocks of
    1 or 3 channels (any dtype: labels are often uint32), the window kernel for
    everything else: its counted form for 8- and 16-bit labels, its sorted form for
    the others."""
    if job.out.dtype != job.image.dtype:
        raise ValueError("mode copies stored values: its output has the input's dtype")
    gy, gx = job.rows, job.cols
    plan = block_plan(job)
    channels = job.image.shape[2]
    if (plan is not None and plan[1] == (CONSTANT_BLOCK, CONSTANT_BLOCK)
            and channels in CONSTANT_CHANNELS):
        dims = (0,) * CONSTANT_BLOCK
        run_blocks(BlockPlan(((dims, dims, (0,) * channels), plan[1])), mode_blocks, job.image,
                   job.out, ModeParams())
        return
    if job.image.dtype in (np.uint8, np.uint16):
        run_rows(mode_kernel_counted, job.out, job.image, gy.start, gy.count, gy.units,
                 gx.start, gx.count, gx.units, job.out, 1 << (8 * job.image.dtype.itemsize), 0)
        return
    run_rows(mode_kernel, job.out, job.image, gy.start, gy.count, gy.units, gx.start, gx.count,
             gx.units, job.out, 0)
