"""The public function :func:`downscale`."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Any

import numpy as np

from . import colour
from .core import PoolJob, check_image, dtype_max, quantize
from .geometry import block_length, interleave_axis, plan_windows, repeat_axis
from .methods import get_method, resolve_params
from .strips import plan_strips, rows_between, strip_span, windows_between

__all__ = ["downscale", "working_bytes", "DeviceUnavailableError", "Pooling", "STRIP_BYTES"]

DEVICES = ("auto", "cpu", "cuda")


class DeviceUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for and no CUDA GPU is usable."""


def _nvidia_driver_may_be_present() -> bool:
    """False only where Linux shows no NVIDIA driver: then ``"auto"`` need not import
    ``numba.cuda`` to find out (about 0.3 s of a small ``shrink``'s start-up).

    The kernel driver publishes ``/proc/driver/nvidia``; WSL 2 has ``/dev/dxg``
    instead.  Other systems are asked through numba-cuda.
    """
    if not sys.platform.startswith("linux"):
        return True
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/dxg")


def _kernels(device: Any):
    """The module whose ``pool_<method>`` functions run on ``device``.

    ``"auto"`` is :mod:`downpool.cuda` where a real CUDA GPU is usable (never
    Numba's CUDA simulator), else :mod:`downpool.cpu`, silently.  Asking costs
    nothing without numba-cuda or (for ``"auto"`` on Linux) without an NVIDIA
    driver, and else one import of ``numba.cuda`` per process.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    if device != "cpu":
        from importlib.util import find_spec

        if find_spec("numba_cuda") is None:
            reason = 'numba-cuda is not installed (pip install "downpool[cuda]")'
        elif device == "auto" and not _nvidia_driver_may_be_present():
            reason = "no NVIDIA driver"
        else:
            try:
                gpu = importlib.import_module(".cuda", __package__)
                reason = gpu.unavailable_reason(real_gpu_only=device == "auto")
            except Exception as exc:  # noqa: BLE001 - a broken install must not break "auto"
                reason = f"numba-cuda fails to load ({type(exc).__name__}: {exc})".splitlines()[0]
        if reason is None:
            return gpu
        if device == "cuda":
            raise DeviceUnavailableError(
                f"device='cuda': no usable CUDA GPU: {reason}; use device='cpu' or 'auto'"
            )
    return importlib.import_module(".cpu", __package__)


def working_bytes(shape: tuple[int, ...], itemsize: int, out_size: tuple[int, int], *,
                  has_alpha: bool = False, linear: bool = False) -> int:
    """The memory :func:`downscale` takes beyond its input, for an image of ``shape``.

    An estimate from above, for refusing an image before it is decoded
    rather than running out of memory: the output, row-sized scratch, and
    with ``has_alpha`` or ``linear`` one strip of float working values
    (:data:`STRIP_BYTES`, or more where one output row's windows alone take
    more: a thumbnail a few pixels high).  Compared with peak resident memory
    measured on 12-megapixel images in ``benchmarks/results.md`` ("Memory of
    shrink").

    Parameters
    ----------
    shape : (H, W) or (H, W, C)
    itemsize : int
        Bytes per input sample: 1, 2, 4 or 8.
    out_size : (int, int)
        The output's (height, width).
    """
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    out_h, out_w = out_size
    total = out_h * out_w * channels * itemsize * 2
    if has_alpha or linear:
        in_row, out_row = _converted_row_bytes(width, out_w, channels, 8 if itemsize == 8 else 4,
                                               linear)
        # One output row's windows (area boxes straddle one more input row),
        # with a halo row on each side: what the smallest strip holds.
        smallest = 3 * (-(-height // out_h) + 1) * in_row + 3 * out_row
        total += int(1.25 * max(STRIP_BYTES, smallest))
    return int(total)


def downscale(
    image: Any,
    method: str = "softpool",
    *,
    kernel_size: Any = None,
    stride: Any = None,
    size: Any = None,
    scale: Any = None,
    device: str = "auto",
    has_alpha: bool = False,
    linear: bool = False,
    **params: Any,
) -> np.ndarray:
    """Downscale an image with a pooling method.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Channels last; dtype uint8, uint16, float32 or float64 (``mode``:
        uint32 too).  Integer images are pooled as values in [0, 1]; float
        images as they are.
        The array is never modified.
    method : str
        One of ``downpool.METHODS``: ``avg``, ``max``, ``lp``, ``softpool``,
        ``stochastic``, ``dpp``, ``dpid``, ``mode``.
    kernel_size : int or (int, int), optional
        Integer pooling window; windows at the bottom and right edges may be
        partial.  For ``dpid``, k means ``size=(ceil(H/k), ceil(W/k))``.
    stride : int or (int, int), optional
        Step between windows (default: ``kernel_size``).  Not with ``dpid``.
    size : (int, int), optional
        Output (height, width), at most the input's: each output pixel pools
        its box of the input, with fractional coverage at the box edges.
    scale : float, optional
        In (0, 1]: ``size = max(1, round(n * scale))`` per axis.
    device : {"auto", "cpu", "cuda"}
        Where to compute.  ``"auto"`` is CUDA where numba-cuda is installed
        and a CUDA GPU is usable, else the CPU; ``"cuda"`` without one raises
        :class:`DeviceUnavailableError`.
    has_alpha : bool
        The last channel is alpha: colour is pooled premultiplied by it, and
        alpha is not a colour channel for ``dpid``'s distance.  Arrays are
        plain channels unless this is set.
    linear : bool
        Pool the colour channels in linear light: decode from sRGB first and
        encode the result back.
    **params
        The method's parameters (see ``downpool.METHODS[method].params``).

    Returns
    -------
    ndarray
        The downscaled image, with the input's dtype and number of dimensions.

    Raises
    ------
    ValueError
        For an unknown method or parameter, a value outside its range, a
        bad geometry, an output larger than the input, NaN/inf input, or
        negative input to ``lp`` or ``stochastic``.
    TypeError
        For an unsupported dtype.
    DeviceUnavailableError
        For ``device="cuda"`` without a usable CUDA GPU.

    Examples
    --------
    >>> import numpy as np, downpool
    >>> img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    >>> downpool.downscale(img, "max", kernel_size=2)
    array([[ 5,  7],
           [13, 15]], dtype=uint8)
    """
    arr, value_range = check_image(image, labels=get_method(method).labels)
    img = np.ascontiguousarray(arr if arr.ndim == 3 else arr[:, :, np.newaxis])
    pooling = Pooling(method, img.shape, img.dtype, value_range, kernel_size=kernel_size,
                      stride=stride, size=size, scale=scale, device=device,
                      has_alpha=has_alpha, linear=linear, **params)
    out = pooling.pool_image(img)
    return out if arr.ndim == 3 else out[:, :, 0]


def _converted_row_bytes(width: int, out_w: int, channels: int, work_item: int,
                         linear: bool) -> tuple[int, int]:
    """Working bytes of a strip converted for alpha or linear light: per input row (its
    float copy and the transfer function's three temporaries, or premultiplying's one)
    and per output row of the strip and its halo (the float64 output and quantize's
    two temporaries)."""
    return width * channels * work_item * (4 if linear else 2), out_w * channels * 8 * 3


#: Bytes that one strip of an image pooled with alpha or in linear light may
#: take in working values (its float copy, the conversion's temporaries, its
#: float output).  Tests set it small to force strips.
STRIP_BYTES = 32 << 20


class Pooling:
    """One ``downscale`` of an image of ``shape`` and ``dtype``, a strip of output rows at a time.

    Validates the method, its parameters and the geometry, and chooses the
    kernels; :meth:`strips` plans strips of output rows and
    :meth:`pool_strip` pools one from the input rows it reads
    (:mod:`downpool.strips`).  Every strip is what the whole image gives for
    its rows, bit for bit.  :func:`downscale` and
    :class:`downpool.stream.RowDownscaler` are built on it.

    ``value_range`` is the range of the stored values (``(0, 1)`` for
    integers, as :func:`downpool.core.check_image` gives).  With ``has_alpha``
    or ``linear`` the kernels' range is that of the converted corners of it
    (the conversion is monotone in each channel, and premultiplying is
    bilinear), so it is known before any row is converted.
    """

    def __init__(self, method: str, shape: tuple[int, int, int], dtype: np.dtype,
                 value_range: tuple[float, float], *, kernel_size: Any = None,
                 stride: Any = None, size: Any = None, scale: Any = None, device: str = "auto",
                 has_alpha: bool = False, linear: bool = False, frames: int = 1,
                 batch: int = 1, **params: Any) -> None:
        spec = get_method(method)
        values = resolve_params(spec, params)
        height, width, channels = shape
        self.rows, self.cols = plan_windows(spec.name, spec.area_only, (height, width),
                                            kernel_size, stride, size, scale)
        #: Output rows of one frame (of a sequence's: see below).
        self.frame_rows = self.rows.size
        if frames > 1:
            # A time window of n frames is pooled as one image whose rows are
            # the frames' rows interleaved (downpool.frames): row y of frame t is
            # row y*n + t, so each window's rows hold its 3-D window.
            self.rows = interleave_axis(self.rows, frames)
            height *= frames
        if batch > 1:
            # ``batch`` such images stacked: one kernel call for several output frames.
            self.rows = repeat_axis(self.rows, batch, height)
            height *= batch
        kernels = _kernels(device)
        if spec.labels and (has_alpha or linear):
            raise ValueError(f"{spec.name}: pools labels, which have no "
                             f"{'alpha' if has_alpha else 'linear light'}: "
                             f"{'has_alpha' if has_alpha else 'linear'} does not apply")
        if has_alpha and channels < 2:
            raise ValueError(f"{spec.name}: has_alpha needs at least 2 channels, got {channels}")
        if spec.needs_nonnegative and value_range[0] < 0:
            raise ValueError(f"{spec.name}: needs non-negative values, but the image's minimum "
                             f"is {value_range[0]!r}")
        self.dtype = np.dtype(dtype)
        self.shape = (height, width, channels)
        self.out_shape = (self.rows.size, self.cols.size, channels)
        self.halo = spec.halo_rows
        self.has_alpha, self.linear = has_alpha, linear
        self.converted = has_alpha or linear
        self.n_colour = channels - 1 if has_alpha else channels
        # Luma needs three colour channels: RGB, or RGBA with or without has_alpha.
        self.value_mode = 1 if channels in (3, 4) and self.n_colour >= 3 else 0
        self._pool = functools.partial(getattr(kernels, f"pool_{spec.name}"), **values)
        self._top = dtype_max(self.dtype)
        #: The row block length of the whole image (0: not blocks); the kernels
        #: choose block kernels by it, not by a strip's rows.
        self.block_rows = block_length(self.rows) or 0
        self.block_cols = block_length(self.cols) or 0
        if self.converted:
            self._work_dtype = np.dtype(np.float64 if self.dtype == np.float64 else np.float32)
        self.set_value_range(value_range)

    def set_value_range(self, value_range: tuple[float, float]) -> None:
        """Pool images whose stored values lie in ``value_range`` from now on (a float
        sequence's time windows each have their own)."""
        if self.converted:
            lo, hi = ((0, self._top) if self.dtype.kind == "u" else value_range)
            corners = np.array([[lo, lo], [lo, hi], [hi, lo], [hi, hi]], dtype=self.dtype)
            probe = self._convert(np.repeat(corners, [self.shape[2] - 1, 1], axis=1)[:, None, :])
            self.value_range = (float(probe.min()), float(probe.max()))
        else:
            self.value_range = value_range

    def _convert(self, part: np.ndarray) -> np.ndarray:
        """Stored rows to float working values: scaled, linear light, premultiplied."""
        work = part.astype(self._work_dtype)
        work *= self._work_dtype.type(1.0 / self._top)
        if self.linear:
            colour.srgb_to_linear(work[..., :self.n_colour])
        if self.has_alpha:
            colour.premultiply(work)
        return work

    def strips(self, max_bytes: float, tile: tuple[int, int] | None = None,
               ) -> list[tuple[int, int, int, int]]:
        """``(first, stop, in_start, in_end)``: output rows ``[first, stop)`` of each strip,
        in order, and the input rows ``[in_start, in_end)`` it reads, each strip's
        working memory about ``max_bytes`` (at least one output row).  ``tile``: the
        strips of a tile of ``(output columns, input columns)``, not of the full width."""
        height, width, channels = self.shape
        out_w = self.cols.size
        if tile is not None:
            out_w, width = tile
        if self.converted:
            in_row_bytes, halo_row_bytes = _converted_row_bytes(
                width, out_w, channels, self._work_dtype.itemsize, self.linear)
        else:  # the rows as they are, and the output
            in_row_bytes = width * channels * self.dtype.itemsize
            halo_row_bytes = out_w * channels * self.dtype.itemsize
        strips = plan_strips(self.rows.start, self.rows.count, self.halo, in_row_bytes, 0,
                             halo_row_bytes, max_bytes)
        return [(first, stop, *strip_span(self.rows, first, stop, self.halo)[2:])
                for first, stop in strips]

    def column_tiles(self, max_columns: int) -> list[tuple[int, int, int, int]]:
        """``(c_first, c_stop, x_start, x_end)``: output columns ``[c_first, c_stop)`` of each
        tile, in order, and the input columns ``[x_start, x_end)`` it reads (with dpid's
        column of halo), each tile about ``max_columns`` input columns (at least one
        output column)."""
        tiles = plan_strips(self.cols.start, self.cols.count, self.halo, 1, 0, 0, max_columns)
        return [(first, stop, *strip_span(self.cols, first, stop, self.halo)[2:])
                for first, stop in tiles]

    def pool_image(self, img: np.ndarray, frame: int = 0) -> np.ndarray:
        """The whole output from the C-contiguous ``img`` of :attr:`shape`; with alpha or
        linear light a strip at a time, so that no full-size float copy is made.
        ``frame``: the (first) output frame of a sequence, which keys stochastic draws."""
        if not self.converted:
            # The kernels read the image as it is: one strip, no copy.
            return self.pool_strip(img, 0, self.rows.size, 0, frame)
        out = np.empty(self.out_shape, dtype=img.dtype)
        for first, stop, in_start, in_end in self.strips(STRIP_BYTES):
            out[first:stop] = self.pool_strip(img[in_start:in_end], first, stop, in_start, frame)
        return out

    def pool_strip(self, part: np.ndarray, first: int, stop: int, in_start: int,
                   frame: int = 0, columns: tuple[int, int, int] | None = None) -> np.ndarray:
        """Output rows ``[first, stop)``, in the input's dtype, from ``part``: the input rows
        from ``in_start`` on, at least to the end of what those rows (and their halo) read.
        ``frame``: the output frame of a sequence (stochastic draws are keyed by the
        output index over frame, row and column).  ``columns``: ``(c_first, c_stop,
        x_start)``, only the output columns ``[c_first, c_stop)`` of those rows, from the
        input columns of ``part`` from ``x_start`` on (a tile, :meth:`column_tiles`)."""
        top, bottom, _, in_end = strip_span(self.rows, first, stop, self.halo)
        c_first, c_stop, x_start = (0, self.cols.size, 0) if columns is None else columns
        left, right, _, x_end = strip_span(self.cols, c_first, c_stop, self.halo)
        if (part.shape[0] < in_end - in_start or part.shape[1] < x_end - x_start
                or part.shape[2:] != self.shape[2:]):
            raise ValueError(f"rows {first}-{stop}, columns {c_first}-{c_stop} need input rows "
                             f"{in_start}-{in_end} and columns {x_start}-{x_end}, got "
                             f"{part.shape[0]} rows of shape {part.shape[1:]}")
        part = part[:in_end - in_start]  # rows below the last window are read by none
        if columns is not None:  # and a tile's columns right of its last window
            part = part[:, :x_end - x_start]
        rows = rows_between(self.rows, top, bottom, in_start)
        cols = self.cols if columns is None else windows_between(self.cols, left, right, x_start)
        out_w, channels = right - left, self.shape[2]
        common = dict(rows=rows, cols=cols, n_colour=self.n_colour,
                      value_mode=self.value_mode, value_range=self.value_range,
                      first_row=top + frame * self.frame_rows, block_rows=self.block_rows,
                      first_col=left, out_width=self.cols.size, block_cols=self.block_cols)
        kept = (slice(first - top, stop - top), slice(c_first - left, c_stop - left))
        if not self.converted:
            job = PoolJob(image=np.ascontiguousarray(part), in_scale=1.0 / self._top,
                          out=np.empty((bottom - top, out_w, channels), dtype=self.dtype),
                          out_max=self._top, out_int=self.dtype.kind == "u", **common)
            self._pool(job)
            return job.out[kept]
        job = PoolJob(image=self._convert(part), in_scale=1.0,
                      out=np.empty((bottom - top, out_w, channels)), out_max=1.0, out_int=False,
                      **common)
        self._pool(job)
        pooled = job.out[kept]
        if self.has_alpha:
            colour.unpremultiply(pooled)
        if self.linear:
            colour.linear_to_srgb(pooled[..., :self.n_colour])
        return quantize(pooled, self.dtype)
