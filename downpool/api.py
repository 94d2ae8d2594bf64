"""The public function :func:`downscale`."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import numpy as np

from . import colour
from .core import PoolJob, check_image, dtype_max, float_range, quantize
from .geometry import plan_windows
from .methods import get_method, resolve_params

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
    rather than running out of memory: with ``has_alpha`` or ``linear``
    the image is converted in one full-size float32 copy (float64 for
    float64 input), and NumPy's transfer function and premultiplication
    make temporaries of it; otherwise only the output and row-sized scratch
    are allocated.  The factors come from peak resident memory measured on
    12-megapixel images (``benchmarks/results.md``, "Memory of shrink").

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
    values = height * width * channels
    transformed = has_alpha or linear
    work_item = 8 if itemsize == 8 else 4
    total = out_size[0] * out_size[1] * channels * (8 if transformed else itemsize) * 2
    if transformed:
        colour_values = height * width * (channels - 1 if has_alpha else channels)
        temporaries = colour_values * work_item * 3 if linear else values * work_item * 1.25
        total += values * work_item + int(temporaries)
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
    top = dtype_max(arr.dtype)
    out_shape = (rows.size, cols.size, channels)
    n_colour = channels - 1 if has_alpha else channels
    transformed = linear or has_alpha
    if transformed:
        # Transfer function and premultiplication need float working values:
        # one full-size copy, scaled in place.
        img = img.astype(np.float64 if arr.dtype == np.float64 else np.float32)
        img *= img.dtype.type(1.0 / top)
        if linear:
            colour.srgb_to_linear(img[..., :n_colour])
        if has_alpha:
            colour.premultiply(img)
        value_range = float_range(img)
    job = PoolJob(
        image=img, in_scale=1.0 if transformed else 1.0 / top, rows=rows, cols=cols,
        out=np.empty(out_shape, dtype=np.float64 if transformed else arr.dtype),
        out_max=1.0 if transformed else top, out_int=not transformed and arr.dtype.kind == "u",
        # Luma needs three colour channels: RGB, or RGBA with or without has_alpha.
        n_colour=n_colour, value_mode=1 if channels in (3, 4) and n_colour >= 3 else 0,
        value_range=value_range,
    )
    getattr(kernels, f"pool_{spec.name}")(job, **values)
    out = job.out
    if transformed:
        if has_alpha:
            colour.unpremultiply(out)
        if linear:
            colour.linear_to_srgb(out[..., :n_colour])
        out = quantize(out, arr.dtype)
    return out if arr.ndim == 3 else out[:, :, 0]
