"""Helpers shared by the API and the kernels of every device.

Pure NumPy (no Numba): the image checks and dtype rules of SPEC section 1,
the :class:`PoolJob` that carries one call's arrays to a kernel, and the
small output-sized steps (the DPID guide smoothing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .geometry import AxisWindows

__all__ = ["SUPPORTED_DTYPES", "LABEL_DTYPES", "dtype_max", "check_dtype", "check_image",
           "float_range", "PoolJob", "as_rows", "quantize"]

#: Input dtypes downpool accepts; the result has the same dtype.
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32),
                    np.dtype(np.float64))
#: What the label methods (``mode``) accept besides: label images often hold
#: more than 65535 labels.
LABEL_DTYPES = SUPPORTED_DTYPES + (np.dtype(np.uint32),)


def dtype_max(dtype: np.dtype) -> float:
    """The value that means 1.0: 255 for uint8, 65535 for uint16, 1 for floats."""
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


def check_dtype(dtype: np.dtype, labels: bool = False) -> None:
    """``TypeError`` for a dtype downpool does not pool (``labels``: a label method's)."""
    if dtype not in (LABEL_DTYPES if labels else SUPPORTED_DTYPES):
        also = " (uint32 with mode)" if dtype in LABEL_DTYPES else ""
        raise TypeError(
            f"image dtype {dtype} is not supported: use uint8, uint16, float32 or float64{also}"
        )


def check_image(image, labels: bool = False) -> tuple[np.ndarray, tuple[float, float]]:
    """Return ``image`` as an ndarray of a supported dtype in native byte order,
    with the range of its working values: (0, 1) for integers, (min, max) for floats.

    ``labels``: the method pools labels (``mode``), which may be uint32 as well.

    Raises
    ------
    TypeError
        For a dtype other than uint8, uint16, float32, float64 (and uint32
        with ``labels``).
    ValueError
        For anything but 2-D or 3-D, an empty axis, or NaN/inf values.
    """
    arr = np.asarray(image)
    if arr.dtype.kind in "uf" and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    check_dtype(arr.dtype, labels)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"image must be 2-D (H, W) or 3-D (H, W, C), got a {arr.ndim}-D array of shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"image has an empty axis: shape {arr.shape}")
    if arr.dtype.kind == "f":
        value_range = float_range(arr)
        if value_range is None:
            raise ValueError("image contains NaN or infinite values")
        return arr, value_range
    return arr, (0.0, 1.0)


#: From this many values on, :func:`float_range` makes one threaded pass.
_ONE_PASS_RANGE = 1 << 20


def float_range(image: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of a float array, or None where it holds a NaN or an inf.

    Large C-contiguous images take one threaded pass
    (:func:`downpool.value_range.float_range`); others NumPy's ``min`` and ``max``,
    which propagate NaN and show inf, without a full-size temporary.
    """
    if image.size >= _ONE_PASS_RANGE and image.flags.c_contiguous:
        from .value_range import float_range as one_pass_range

        return one_pass_range(image)
    lo, hi = image.min(), image.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return float(lo), float(hi)


def as_rows(a: np.ndarray) -> np.ndarray:
    """A C-contiguous (H, W, C) array as (H, W*C) rows: a view, which kernels take
    beside the array.

    Made here rather than in the kernels: Numba's ``reshape`` adds to every
    kernel's first call.
    """
    if not a.flags.c_contiguous:
        raise ValueError("kernels take C-contiguous arrays")
    return a.reshape(a.shape[0], a.shape[1] * a.shape[2])


@dataclass(frozen=True)
class PoolJob:
    """One kernel call: the input, its windows and where the result goes.

    Attributes
    ----------
    image : ndarray, shape (H, W, C)
        C-contiguous input, in its own dtype.
    in_scale : float
        Multiplier that takes stored values to working values (1/255, 1/65535, 1).
    rows, cols : AxisWindows
        Windows of each axis.
    out : ndarray, shape (out_h, out_w, C)
        Written by the kernel.
    out_max : float
        Working value 1.0 is stored as ``out_max`` (255, 65535 or 1).
    out_int : bool
        ``out`` is an integer array: values are rounded half up and clipped.
    n_colour : int
        Leading channels that are colour (all, or all but a trailing alpha).
    value_mode : int
        Stochastic pooling's pixel value: 1 luma of channels 0-2, 0 mean of the colour channels.
    value_range : (float, float)
        Bounds of the working values (``image * in_scale``), for choosing exact fast paths.
    first_row : int
        The whole image's output row that is row 0 of ``out`` (a strip of
        the image, :mod:`downpool.strips`): stochastic sampling draws by the
        whole image's output index.
    block_rows : int or None
        The whole image's row block length (:func:`downpool.geometry.block_length`
        of its row windows, 0 where they are not blocks), for a strip, whose own
        windows may look like blocks where the image's are not (a strip of one
        window) or not where they are (a strip of the partial last window);
        None: from ``rows``.
    first_col : int
        The whole image's output column that is column 0 of ``out`` (a tile of
        columns, :meth:`downpool.api.Pooling.pool_strip`): stochastic draws.
    out_width : int or None
        The whole image's output width, by which stochastic draws are keyed
        (row-major output index); None: ``cols.size``.
    block_cols : int or None
        As ``block_rows``, for the columns of a tile.
    """

    image: np.ndarray
    in_scale: float
    rows: AxisWindows
    cols: AxisWindows
    out: np.ndarray
    out_max: float
    out_int: bool
    n_colour: int
    value_mode: int
    value_range: tuple[float, float]
    first_row: int = 0
    block_rows: int | None = None
    first_col: int = 0
    out_width: int | None = None
    block_cols: int | None = None

    @property
    def draw_row(self) -> int:
        """Output indices from one row to the next: the whole image's output width."""
        return self.cols.size if self.out_width is None else self.out_width

    @property
    def first_index(self) -> int:
        """The whole image's output index of ``out[0, 0]``, which stochastic draws follow."""
        return self.first_row * self.draw_row + self.first_col

    def kernel_args(self) -> tuple:
        """The leading arguments every window kernel takes."""
        gy, gx = self.rows, self.cols
        return (self.image, self.in_scale, gy.start, gy.count, gy.weight,
                gx.start, gx.count, gx.weight, self.out, self.out_max, self.out_int)

    def column_taps(self) -> tuple[np.ndarray, np.ndarray]:
        """The horizontal pass of the separable kernels as taps: ``(index, weight)``, each
        of shape ``(max count, out_w * C)``, where output value ``k = j*C + c`` of a row
        takes ``weight[s, k] * row[index[s, k]]`` for each ``s``: channel c of input
        column ``cols.start[j] + s``, weighted by its coverage (0 past the window's
        count, where the index is clamped to the image).

        Made once per call, so that the kernels' horizontal pass is one loop over
        the output row's values that LLVM vectorises (a loop per window does
        not), summing each window's columns in the same order.  Their size
        is 16 bytes per tap: for windows that do not overlap, about
        ``(W + out_w) * C * 16`` bytes (under 0.5 MB for a 6000-pixel-wide RGB
        image at k=2); overlapping windows (stride s < kernel k) take about k/s
        times a row of that.
        """
        gx, channels, width = self.cols, self.image.shape[2], self.image.shape[1]
        count = gx.weight.shape[1]
        columns = np.minimum(gx.start[None, :] + np.arange(count)[:, None], width - 1)
        index = (columns[:, :, None] * channels + np.arange(channels)).reshape(count, -1)
        weight = np.repeat(gx.weight.T, channels, axis=1)
        return np.ascontiguousarray(index, dtype=np.int64), np.ascontiguousarray(weight)

    def row_views(self) -> tuple[np.ndarray, np.ndarray]:
        """The image and the output as (H, W*C) rows (:func:`as_rows`), for the kernels
        that run along the contiguous W*C axis."""
        return as_rows(self.image), as_rows(self.out)

    def with_output(self, out: np.ndarray) -> "PoolJob":
        """The same job writing working values (unscaled floats) to ``out``."""
        return dataclasses.replace(self, out=out, out_max=1.0, out_int=False)


def quantize(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Working values to ``dtype``: integers are scaled, rounded half up and clipped."""
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)
    top = dtype_max(dtype)
    return np.clip(np.floor(values * top + 0.5), 0, top).astype(dtype)
