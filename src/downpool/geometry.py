"""Window geometry: which input pixels feed each output pixel, and how much.

Both geometries of SPEC section 2 are separable, so each axis is described on
its own by :class:`AxisWindows` and a pixel's coverage is the product of its
row and column coverages.  The per-axis coverages are stored *normalised*
(each window's weights sum to 1): every method is a ratio of coverage-weighted
sums or ignores the size of the weights, so this changes no result, and it
keeps weighted sums of large float values from overflowing.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AxisWindows", "pooling_axis", "area_axis", "interleave_axis", "repeat_axis",
           "plan_windows",
           "block_length"]


@dataclass(frozen=True)
class AxisWindows:
    """The windows of one axis.

    Attributes
    ----------
    start : ndarray of int64, shape (n_out,)
        First input index of each window.
    count : ndarray of int64, shape (n_out,)
        Number of input indices in each window (all with coverage > 0).
    weight : ndarray of float64, shape (n_out, max(count))
        ``weight[i, t]`` is the coverage of input ``start[i] + t``, divided by
        the window's total coverage; zero past ``count[i]``.
    units : ndarray of int64, shape (n_out, max(count))
        The same coverages as exact integers, in units shared by every window
        of the axis (1 per pixel for integer pooling, ``1/n_out`` of a pixel
        for area windows); zero past ``count[i]``.  For ``mode``, which
        compares total coverages: a tie is a tie, not a matter of rounding.
    """

    start: np.ndarray
    count: np.ndarray
    weight: np.ndarray
    units: np.ndarray

    @property
    def size(self) -> int:
        """Number of output pixels along this axis."""
        return int(self.start.shape[0])


def pooled_length(n_in: int, k: int, s: int) -> int:
    """The number of integer pooling windows along an axis (see :func:`pooling_axis`)."""
    n_out = -(-(n_in - k) // s) + 1 if n_in >= k else 1
    return min(n_out, -(-n_in // s))


def pooling_axis(n_in: int, k: int, s: int) -> AxisWindows:
    """Integer pooling windows: kernel ``k``, stride ``s``, partial edge windows.

    ``n_out = ceil((n_in - k) / s) + 1`` when ``n_in >= k``, else 1; window ``i``
    reads ``[i*s, min(i*s + k, n_in))``.  With a stride larger than the kernel
    that formula can count a last window that starts past the edge and so
    holds no pixel; it is dropped (as PyTorch's ``ceil_mode`` does), which
    caps ``n_out`` at ``ceil(n_in / s)``.

    A kernel or stride longer than the axis acts as one of the axis' length
    (one window of every pixel, or of the first ``k``), so both are capped
    at ``n_in``: the same windows, in integers that fit the arrays.
    """
    k, s = min(k, n_in), min(s, n_in)
    n_out = pooled_length(n_in, k, s)
    start = np.arange(n_out, dtype=np.int64) * s
    count = np.minimum(start + k, n_in) - start
    inside = np.arange(int(count.max())) < count[:, None]
    weight = np.where(inside, 1.0 / count[:, None], 0.0)
    return AxisWindows(start, count, weight, inside.astype(np.int64))


def area_axis(n_in: int, n_out: int) -> AxisWindows:
    """Arbitrary-size windows: output ``i`` covers ``[i*n_in/n_out, (i+1)*n_in/n_out)``.

    Coverages are computed in integers (units of ``1/n_out`` of a pixel), so
    there are no slivers of rounding error at window edges.
    """
    lo = np.arange(n_out, dtype=np.int64) * n_in  # box start, in units of 1/n_out
    hi = lo + n_in
    start = lo // n_out
    end = -(-hi // n_out)  # first input pixel not touched
    count = end - start
    offset = np.arange(int(count.max()), dtype=np.int64)
    q = start[:, None] + offset  # input index of every window slot
    overlap = np.minimum(hi[:, None], (q + 1) * n_out) - np.maximum(lo[:, None], q * n_out)
    # overlap / n_out, normalised by n_in / n_out; zero past each window's count
    inside = offset < count[:, None]
    weight = np.where(inside, overlap / n_in, 0.0)
    return AxisWindows(start, count, weight, np.where(inside, overlap, 0))


def interleave_axis(axis: AxisWindows, n: int) -> AxisWindows:
    """The windows of ``axis`` over ``n`` frames whose rows are interleaved.

    Row ``y`` of frame ``t`` is row ``y*n + t`` of the interleaved image, so the
    rows of a window, in every frame, are one run of ``n * count`` rows: each
    keeps its coverage (SPEC section 6: time adds no fractional coverage),
    normalised over the ``n`` frames.
    """
    weight = np.repeat(axis.weight, n, axis=1) / n
    units = np.repeat(axis.units, n, axis=1)
    return AxisWindows(axis.start * n, axis.count * n, weight, units)


def repeat_axis(axis: AxisWindows, n: int, period: int) -> AxisWindows:
    """The windows of ``axis`` repeated ``n`` times, the k-th copy shifted by ``k * period``
    inputs: the rows of ``n`` images of ``period`` rows stacked into one."""
    shift = np.repeat(np.arange(n, dtype=np.int64) * period, axis.size)
    return AxisWindows(np.tile(axis.start, n) + shift, np.tile(axis.count, n),
                       np.tile(axis.weight, (n, 1)), np.tile(axis.units, (n, 1)))


def block_length(axis: AxisWindows) -> int | None:
    """``k`` where the windows are consecutive blocks of ``k`` with equal coverages, else None.

    Integer pooling with stride equal to the kernel gives blocks (the last
    one may be shorter), and so does an area geometry whose output size
    divides the input's.  Kernels can then ignore the coverages: every
    pixel of a window weighs the same.
    """
    k = int(axis.count[0])
    n = axis.size
    if not (np.array_equal(axis.start, np.arange(n, dtype=np.int64) * k)
            and np.all(axis.count[:-1] == k) and 1 <= axis.count[-1] <= k):
        return None
    inside = np.arange(axis.weight.shape[1]) < axis.count[:, None]
    return k if bool(np.all((axis.weight == axis.weight[:, :1]) | ~inside)) else None


def positive_int(value: Any) -> bool:
    """Whether ``value`` is an integer >= 1 (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _pair(method: str, name: str, value: Any) -> tuple[int, int]:
    """Accept ``k`` or ``(kh, kw)`` of positive integers."""
    if positive_int(value):
        return int(value), int(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(positive_int(v) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(
        f"{method}: {name} must be a positive integer or a pair (h, w) of them, got {value!r}"
    )


def output_size_for_scale(method: str, shape: tuple[int, int], scale: Any) -> tuple[int, int]:
    """``max(1, round(n * scale))`` per axis, for ``scale`` in (0, 1]."""
    if (
        isinstance(scale, bool)
        or not isinstance(scale, numbers.Real)
        or not math.isfinite(scale)
        or not 0 < scale <= 1
    ):
        raise ValueError(
            f"{method}: scale must be a number in (0, 1] (downpool only downscales), got {scale!r}"
        )
    return tuple(max(1, round(n * float(scale))) for n in shape)  # type: ignore[return-value]


def output_size(shape: tuple[int, int], kernel_size: Any = None, stride: Any = None,
                size: Any = None, scale: Any = None, *, method: str = "downscale",
                ) -> tuple[int, int]:
    """The output (height, width) that :func:`plan_windows` gives an image of ``shape``,
    without building any window: the same rules (``dpid``'s kernel sizes too, whose
    ``ceil(n / k)`` is the integer count at stride k)."""
    if size is not None:
        return _pair(method, "size", size)
    if scale is not None:
        return output_size_for_scale(method, shape, scale)
    kh, kw = _pair(method, "kernel_size", 2 if kernel_size is None else kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(method, "stride", stride)
    return pooled_length(shape[0], kh, sh), pooled_length(shape[1], kw, sw)


def plan_windows(
    method: str,
    area_only: bool,
    shape: tuple[int, int],
    kernel_size: Any = None,
    stride: Any = None,
    size: Any = None,
    scale: Any = None,
) -> tuple[AxisWindows, AxisWindows]:
    """Validate the geometry arguments of :func:`downpool.downscale` and build the windows.

    Parameters
    ----------
    method : str
        Method name, for error messages.
    area_only : bool
        The method always uses the arbitrary-size geometry (``dpid``).
    shape : (int, int)
        Input height and width.
    kernel_size, stride, size, scale
        As in :func:`downpool.downscale`: at most one of ``kernel_size``,
        ``size`` and ``scale``; none means ``kernel_size=2``.

    Returns
    -------
    rows, cols : AxisWindows
    """
    given = [n for n, v in (("kernel_size", kernel_size), ("size", size), ("scale", scale))
             if v is not None]
    if len(given) > 1:
        raise ValueError(f"{method}: give at most one of kernel_size, size, scale (got {' and '.join(given)})")
    if stride is not None:
        if area_only:
            raise ValueError(f"{method}: stride is not accepted ({method} always uses area geometry)")
        if size is not None or scale is not None:
            raise ValueError(f"{method}: stride goes only with kernel_size, not with size or scale")
    h, w = shape
    if size is None and scale is None:
        kh, kw = _pair(method, "kernel_size", 2 if kernel_size is None else kernel_size)
        if area_only:
            size = (-(-h // kh), -(-w // kw))
        else:
            sh, sw = (kh, kw) if stride is None else _pair(method, "stride", stride)
            return pooling_axis(h, kh, sh), pooling_axis(w, kw, sw)
    elif scale is not None:
        size = output_size_for_scale(method, shape, scale)
    oh, ow = _pair(method, "size", size)
    if oh > h or ow > w:
        raise ValueError(
            f"{method}: size {oh}x{ow} (HxW) is larger than the {h}x{w} input; downpool only downscales"
        )
    return area_axis(h, oh), area_axis(w, ow)
