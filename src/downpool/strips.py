"""Output rows in strips: which input rows each strip reads.

An image can be pooled a strip of output rows at a time, each strip reading
only the input rows its windows cover, and the result is the one a whole-image
call gives, bit for bit, because every output value depends on its own window
only, with two exceptions that the strips carry:

- DPID's guide smoothing reads the output rows above and below
  (:attr:`downpool.methods.MethodSpec.halo_rows`): a strip is pooled with that
  many more rows on each side, which are then dropped;
- stochastic sampling draws by the output pixel's index in the whole image
  (:attr:`downpool.core.PoolJob.first_row`).

The CPU chooses block kernels by the whole image's row windows
(:attr:`downpool.core.PoolJob.block_rows`), not by a strip's, which can look
like blocks where the image's are not (a strip of one window).

Windows shared by two strips (overlapping strides, area coverage) are read by
both.  The CUDA kernels use strips to fit the GPU's memory, ``downscale`` to
convert alpha and linear light a strip at a time.
"""

from __future__ import annotations

import numpy as np

from .geometry import AxisWindows

__all__ = ["plan_strips", "strip_span", "rows_between"]


def plan_strips(start: np.ndarray, count: np.ndarray, halo: int, in_row_bytes: int,
                out_row_bytes: int, halo_row_bytes: int, max_bytes: float) -> list[tuple[int, int]]:
    """Split the output rows into strips whose arrays fit in ``max_bytes``.

    Parameters
    ----------
    start, count : ndarray of int64
        The row windows (:class:`downpool.geometry.AxisWindows`); both
        ``start`` and ``start + count`` never decrease.
    halo : int
        Output rows above and below a strip that it also needs (DPID's guide
        smoothing needs 1).
    in_row_bytes : int
        Bytes of one input row.
    out_row_bytes : int
        Bytes per output row of the strip.
    halo_row_bytes : int
        Bytes per output row of the strip and its halo.
    max_bytes : float
        Budget for one strip's arrays.

    Returns
    -------
    list of (int, int)
        ``[first, end)`` output rows of each strip, in order, covering all
        rows.  A strip has at least one row, even where one row exceeds the
        budget.
    """
    n = start.shape[0]
    end = start + count
    strips = []
    first = 0
    while first < n:
        last = np.arange(first + 1, n + 1)  # candidate strip ends
        top = max(first - halo, 0)
        bottom = np.minimum(last + halo, n)
        cost = ((end[bottom - 1] - start[top]) * in_row_bytes + (last - first) * out_row_bytes
                + (bottom - top) * halo_row_bytes)
        fits = int(np.searchsorted(cost, max_bytes, side="right"))  # cost never decreases
        stop = int(last[max(fits, 1) - 1])
        strips.append((first, stop))
        first = stop
    return strips


def strip_span(gy, first: int, stop: int, halo: int) -> tuple[int, int, int, int]:
    """Output rows ``[top, bottom)`` with the halo, and input rows ``[in_start, in_end)`` they read."""
    top = max(first - halo, 0)
    bottom = min(stop + halo, gy.size)
    return top, bottom, int(gy.start[top]), int(gy.start[bottom - 1] + gy.count[bottom - 1])


def rows_between(gy: AxisWindows, top: int, bottom: int, in_start: int) -> AxisWindows:
    """Row windows ``[top, bottom)`` of ``gy``, for an image whose row 0 is input row ``in_start``."""
    return windows_between(gy, top, bottom, in_start)


def windows_between(axis: AxisWindows, first: int, stop: int, offset: int) -> AxisWindows:
    """Windows ``[first, stop)`` of ``axis``, for a part whose index 0 is input ``offset``
    (rows of a strip, columns of a tile)."""
    return AxisWindows(axis.start[first:stop] - offset, axis.count[first:stop],
                       axis.weight[first:stop], axis.units[first:stop])
