"""The public function :func:`downscale`."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Any

import numpy as np

from . import colour
from .core import PoolJob, check_image, dtype_max, float_range, quantize
from .geometry import plan_windows
from .methods import get_method, resolve_params
from .strips import plan_strips, rows_between, strip_span

__all__ = ["downscale", "working_bytes", "DeviceUnavailableError"]

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
        work_item = 8 if itemsize == 8 else 4
        # One output row's windows (area boxes straddle one more input row),
        # with a halo row on each side: what the smallest strip holds.
        window_rows = 3 * (-(-height // out_h) + 1)
        smallest = (window_rows * width * channels * work_item * (4 if linear else 2)
                    + 3 * out_w * channels * 8 * 3)
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
        Channels last; dtype uint8, uint16, float32 or float64.  Integer
        images are pooled as values in [0, 1]; float images as they are.
        The array is never modified.
    method : str
        One of ``downpool.METHODS``: ``avg``, ``max``, ``lp``, ``softpool``,
        ``stochastic``, ``dpp``, ``dpid``.
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
    spec = get_method(method)
    values = resolve_params(spec, params)
    arr, value_range = check_image(image)
    rows, cols = plan_windows(spec.name, spec.area_only, arr.shape[:2],
                              kernel_size, stride, size, scale)
    kernels = _kernels(device)
    img = np.ascontiguousarray(arr if arr.ndim == 3 else arr[:, :, np.newaxis])
    channels = img.shape[2]
    if has_alpha and channels < 2:
        raise ValueError(f"{spec.name}: has_alpha needs at least 2 channels, got {channels}")
    if spec.needs_nonnegative and value_range[0] < 0:
        raise ValueError(
            f"{spec.name}: needs non-negative values, but the image's minimum is {value_range[0]!r}"
        )
    out_shape = (rows.size, cols.size, channels)
    n_colour = channels - 1 if has_alpha else channels
    # Luma needs three colour channels: RGB, or RGBA with or without has_alpha.
    value_mode = 1 if channels in (3, 4) and n_colour >= 3 else 0
    pool = functools.partial(getattr(kernels, f"pool_{spec.name}"), **values)
    if not (linear or has_alpha):
        top = dtype_max(arr.dtype)
        job = PoolJob(image=img, in_scale=1.0 / top, rows=rows, cols=cols,
                      out=np.empty(out_shape, dtype=arr.dtype), out_max=top,
                      out_int=arr.dtype.kind == "u", n_colour=n_colour, value_mode=value_mode,
                      value_range=value_range)
        pool(job)
        out = job.out
    else:
        out = _pool_converted(img, rows, cols, pool, spec.halo_rows, has_alpha=has_alpha,
                              linear=linear, n_colour=n_colour, value_mode=value_mode)
    return out if arr.ndim == 3 else out[:, :, 0]


#: Bytes that one strip of an image pooled with alpha or in linear light may
#: take in working values (its float copy, the conversion's temporaries, its
#: float output).  Tests set it small to force strips.
STRIP_BYTES = 32 << 20


def _pool_converted(img: np.ndarray, rows: Any, cols: Any, pool: Any, halo: int, *,
                    has_alpha: bool, linear: bool, n_colour: int, value_mode: int) -> np.ndarray:
    """Pool ``img`` (H, W, C) premultiplied by alpha and/or in linear light, a strip of
    output rows at a time (:mod:`downpool.strips`), so that no full-size float copy
    of the image is made: each strip's input rows are converted to float working
    values, pooled into float64, converted back and stored in the input's dtype.

    The working values' range, which chooses the kernels' exact fast paths, is
    the whole image's: for 8- and 16-bit input the bound (0, what the largest
    stored value converts to), as without alpha; for float input the exact
    minimum and maximum, from a first pass over the strips.
    """
    dtype = img.dtype
    work_dtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    scale = work_dtype.type(1.0 / dtype_max(dtype))

    def converted(part: np.ndarray) -> np.ndarray:
        work = part.astype(work_dtype)
        work *= scale
        if linear:
            colour.srgb_to_linear(work[..., :n_colour])
        if has_alpha:
            colour.premultiply(work)
        return work

    height, width, channels = img.shape
    out_w = cols.size
    # Per input row: the float copy and about three temporaries of the transfer
    # function (one of premultiplying); per output row of a strip and its halo:
    # the float64 output and quantize's two temporaries.
    in_row_bytes = width * channels * work_dtype.itemsize * (4 if linear else 2)
    strips = plan_strips(rows.start, rows.count, halo, in_row_bytes, 0, out_w * channels * 8 * 3,
                         STRIP_BYTES)
    if len(strips) > 1 and strips[-1][1] - strips[-1][0] == 1:
        # A strip's first window sets the block size the CPU's block kernels
        # see (geometry.block_length): a last window that is partial must not
        # stand alone, or it would be pooled as blocks of its own height.
        strips[-2:] = [(strips[-2][0], strips[-1][1])]
    spans = [strip_span(rows, first, stop, halo) for first, stop in strips]
    if dtype.kind == "f":
        ranges = [float_range(converted(img[in_start:in_end])) for _, _, in_start, in_end in spans]
        if any(r is None for r in ranges):
            raise ValueError("with has_alpha or linear the image's working values overflow "
                             "to infinity; scale the image down first")
        value_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    else:
        value_range = (0.0, float(converted(np.full((1, 1, channels), dtype_max(dtype), dtype)).max()))
    out = np.empty((rows.size, out_w, channels), dtype=dtype)
    for (first, stop), (top, bottom, in_start, in_end) in zip(strips, spans):
        job = PoolJob(image=converted(img[in_start:in_end]), in_scale=1.0,
                      rows=rows_between(rows, top, bottom, in_start), cols=cols,
                      out=np.empty((bottom - top, out_w, channels)), out_max=1.0, out_int=False,
                      n_colour=n_colour, value_mode=value_mode, value_range=value_range,
                      first_row=top)
        pool(job)
        pooled = job.out[first - top:stop - top]
        if has_alpha:
            colour.unpremultiply(pooled)
        if linear:
            colour.linear_to_srgb(pooled[..., :n_colour])
        out[first:stop] = quantize(pooled, dtype)
    return out
