"""Numba CUDA kernels: ``pool_<method>(job, **params)`` for every method.

The same entry points as :mod:`downpool.cpu`, so that the API picks a device
by picking a module.  Every kernel runs one thread per output pixel and calls
its method's window function (``downpool.methods.<name>``, and the shared
window statistics of :mod:`downpool.numba_idioms`) -- the functions the CPU's
general kernels call -- which Numba compiles as CUDA device functions: the
formulas exist once, for every device.

Data movement per call: the input is copied to the GPU once, in its own dtype
(8- and 16-bit images travel as integers and are scaled by ``in_scale`` in
the kernel), and the output is copied back once, in the output dtype; the
window tables (a few kilobytes) travel alongside.  An image that does not fit
in the GPU's free memory is processed in strips of output rows; each strip
copies the input rows its windows read (windows shared by two strips, from
overlapping strides or area coverage, are read by both), so a stripped call
copies each input row once or, at strip edges, twice.

Arithmetic is float64, as on the CPU: the shared window functions are the
CPU's, and float64 keeps the SPEC's 1e-5 accuracy for any window size.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the kernels run as
Python (a block at a time, one Python thread per CUDA thread) and receive
the simulator's array wrappers, which compiled ``@njit`` functions cannot
take: there, each shared window function is called through :func:`_shared`,
which hands it the wrapped NumPy arrays.  The window math then runs as the
CPU's compiled code (faster than its ``py_func``, and the same source), and
the kernels' own code -- indexing, strips, launches, transfers -- is what the
simulator tests; compiling the kernels for a real GPU (PTX) is tested apart.

Where results can differ from the CPU's: NVVM contracts multiply-adds into
FMAs, and libdevice's exp/log/pow are not the CPU's libm, so values may
differ in their last bits (far inside the SPEC's 1e-5).  Stochastic
sampling draws the same numbers (integer SplitMix64) and so picks the same
pixel, except where a draw falls within such a last-bit difference of the
boundary between two pixels' cumulative weights (about 1e-16 per window).
"""

from __future__ import annotations

import functools
import warnings
from types import SimpleNamespace

import numpy as np
from numba import cuda, float64
from numba.cuda.core.config import ENABLE_CUDASIM
from numba.cuda.core.errors import NumbaPerformanceWarning

from . import numba_idioms
from .core import PoolJob
from .methods import dpid, dpp, lp, mode, softpool, stochastic
from .strips import plan_strips, strip_span

__all__ = [
    "SIMULATOR",
    "unavailable_reason",
    "kernels",
    "pool_avg",
    "pool_max",
    "pool_lp",
    "pool_softpool",
    "pool_stochastic",
    "pool_dpp",
    "pool_dpid",
    "pool_mode",
]

#: True when Numba's CUDA simulator stands in for a GPU.
SIMULATOR = bool(ENABLE_CUDASIM)

# Threads per block: 32 consecutive output columns (neighbouring threads
# read neighbouring pixels) by 8 output rows.
_BLOCK_COLUMNS = 32
_BLOCK_ROWS = 8

# Share of the free device memory a call plans to use, leaving room for the
# CUDA context's own allocations and for other processes.
_FREE_MEMORY_SHARE = 0.8


def unavailable_reason(real_gpu_only: bool = False) -> str | None:
    """Why the CUDA kernels cannot run here, in a few words; None where they can.

    Parameters
    ----------
    real_gpu_only : bool
        Count Numba's CUDA simulator as unavailable (for ``device="auto"``,
        which must never pick a simulator that runs a thousand times slower
        than the CPU kernels).
    """
    if SIMULATOR:
        return "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) is not a GPU" if real_gpu_only else None
    return _hardware_reason()


@functools.cache
def _hardware_reason() -> str | None:
    # Initialising the driver costs milliseconds to seconds: once per process.
    if cuda.is_available():
        return None
    error = cuda.cuda_error()
    if error:
        # The driver's message spans lines; its first sentence says what is missing.
        return next(line.strip() for line in str(error).splitlines() if line.strip()).rstrip(".")
    try:
        if len(cuda.gpus) == 0:
            return "the CUDA driver finds no GPU"
    except Exception as exc:  # noqa: BLE001 - any driver failure means no GPU
        return f"the CUDA driver fails: {exc}".splitlines()[0]
    return 'numba-cuda finds no NVVM (CUDA toolkit): pip install "numba-cuda[cu12]"'


# --- the shared window math ---------------------------------------------------

if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray, FakeWithinKernelCUDAArray

    def _host_array(value):
        """The NumPy array inside a simulator array wrapper; anything else as it is."""
        if isinstance(value, FakeWithinKernelCUDAArray):
            value = value._item
        if isinstance(value, FakeCUDAArray):
            value = value._ary
        return value

    def _shared(function):
        """``function`` (an ``@njit`` dispatcher) callable from simulated kernels."""

        @functools.wraps(function)
        def call(*args):
            return function(*[_host_array(a) for a in args])

        return call
else:

    def _shared(function):
        """``function`` itself: Numba compiles ``@njit`` functions called from kernels as device functions."""
        return function


_stored = _shared(numba_idioms.stored)
_window_max = _shared(numba_idioms.window_max)
_window_mean = _shared(numba_idioms.window_mean)
_lp_window = _shared(lp.lp_window)
_softpool_window = _shared(softpool.softpool_window)
_expectation_window = _shared(stochastic.expectation_window)
_uniform_draw = _shared(stochastic.uniform_draw)
_sample_window = _shared(stochastic.sample_window)
_dpp_window = _shared(dpp.dpp_window)
_dpid_window = _shared(dpid.dpid_window)
_mode_window = _shared(mode.mode_window)


# --- kernels --------------------------------------------------------------------
#
# Every window kernel takes the leading arguments
#
#   img, in_scale, ys, yn, yw, y_shift, xs, xn, xw, out, out_max, out_int
#
# -- PoolJob.kernel_args() with ``y_shift`` after the row windows -- for one
# strip of output rows, then the method's own arguments (one tuple of them for
# the kernels of _window_kernel).  ys, yn, yw are the
# strip's rows of the row windows, ``img`` holds input rows from ``y_shift``
# on (window i starts at row ys[i] - y_shift of it), and ``out`` is the strip's
# output rows.  Thread (x, y) of the grid makes output pixel (i=y, j=x).


@functools.cache
def kernels(channels: int) -> SimpleNamespace:
    """The kernels for images of ``channels`` channels.

    Each thread keeps its pixel's result in a local array, whose length must
    be a compile-time constant: the kernels are built, and compiled on first
    use, once per channel count.

    Returns
    -------
    SimpleNamespace
        ``avg``, ``max``, ``sample``, ``mode``, the window kernels of
        :func:`_window_kernel` (``lp``, ``softpool``, ``expectation``,
        ``dpp``, ``dpid``) and ``smooth`` (DPID's guide smoothing).
    """

    @cuda.jit
    def avg(img, in_scale, ys, yn, yw, y_shift, xs, xn, xw, out, out_max, out_int):
        j, i = cuda.grid(2)
        if i < out.shape[0] and j < out.shape[1]:
            for c in range(channels):
                v = _window_mean(img, in_scale, ys[i] - y_shift, yn[i], yw, i, xs[j], xn[j], xw, j, c)
                out[i, j, c] = _stored(v, out_max, out_int)

    @cuda.jit
    def max_(img, in_scale, ys, yn, yw, y_shift, xs, xn, xw, out, out_max, out_int):
        j, i = cuda.grid(2)
        if i < out.shape[0] and j < out.shape[1]:
            for c in range(channels):
                v = _window_max(img, in_scale, ys[i] - y_shift, yn[i], xs[j], xn[j], c)
                out[i, j, c] = _stored(v, out_max, out_int)

    @cuda.jit
    def sample(img, in_scale, ys, yn, yw, y_shift, xs, xn, xw, out, out_max, out_int,
               first_index, draw_row, seed, value_mode, n_colour):
        j, i = cuda.grid(2)
        if i < out.shape[0] and j < out.shape[1]:
            res = cuda.local.array(channels, float64)
            # The draw's index is the pixel's index in the whole output, so
            # that strips, tiles and devices draw alike.
            u = _uniform_draw(seed, first_index + i * draw_row + j)
            _sample_window(img, in_scale, ys[i] - y_shift, yn[i], yw, i, xs[j], xn[j], xw, j,
                           u, value_mode, n_colour, res)
            for c in range(channels):
                out[i, j, c] = _stored(res[c], out_max, out_int)

    @cuda.jit
    def mode(img, in_scale, ys, yn, yw, y_shift, xs, xn, xw, out, out_max, out_int, yu, xu):
        # The stored value itself: out has the input's dtype.
        j, i = cuda.grid(2)
        if i < out.shape[0] and j < out.shape[1]:
            for c in range(channels):
                out[i, j, c] = _mode_window(img, ys[i] - y_shift, yn[i], yu, i, xs[j], xn[j],
                                            xu, j, c)

    @cuda.jit
    def smooth(guide, guide_row0, first_row, n_rows, smoothed):
        """``downpool.methods.dpid.smooth_row`` for output rows ``first_row + i``.

        ``guide`` holds the unsmoothed guide's rows from ``guide_row0`` on
        (the strip's rows and the existing neighbours above and below);
        ``n_rows`` is the height of the whole output, whose top and bottom
        rows have no outer neighbour.  The weights are those of
        ``downpool.methods.dpid.smooth_row``'s two passes -- 1/4 2/4 1/4, or 2/3 1/3 at an
        edge, or 1 along an axis of length 1 -- multiplied out.
        """
        j, i = cuda.grid(2)
        n_cols = smoothed.shape[1]
        if i < smoothed.shape[0] and j < n_cols:
            row = first_row + i
            for c in range(channels):
                acc = 0.0
                for dy in range(-1, 2):
                    wy = _smooth_weight(row, dy, n_rows)
                    if wy > 0.0:
                        for dx in range(-1, 2):
                            wx = _smooth_weight(j, dx, n_cols)
                            if wx > 0.0:
                                acc += wy * wx * guide[row + dy - guide_row0, j + dx, c]
                smoothed[i, j, c] = acc

    windows = {name: _window_kernel(window, channels) for name, window in _WINDOWS.items()}
    return SimpleNamespace(avg=avg, max=max_, sample=sample, mode=mode, smooth=smooth, **windows)


#: The kernels of :func:`_window_kernel`: their window function, whose trailing
#: arguments are the kernel's last, a tuple (``_run`` packs them).
_WINDOWS = {"lp": _lp_window, "softpool": _softpool_window, "expectation": _expectation_window,
            "dpp": _dpp_window, "dpid": _dpid_window}


def _window_kernel(window, channels: int):
    """A kernel that makes each output pixel with ``window(img, in_scale, y0, ny, yw, i, x0,
    nx, xw, j, *params, res)``, ``params`` its last argument: a tuple of the method's
    parameters (dpid's smoothed guide among them)."""

    @cuda.jit
    def kernel(img, in_scale, ys, yn, yw, y_shift, xs, xn, xw, out, out_max, out_int, params):
        j, i = cuda.grid(2)
        if i < out.shape[0] and j < out.shape[1]:
            res = cuda.local.array(channels, float64)
            window(img, in_scale, ys[i] - y_shift, yn[i], yw, i, xs[j], xn[j], xw, j, *params,
                   res)
            for c in range(channels):
                out[i, j, c] = _stored(res[c], out_max, out_int)

    return kernel


@cuda.jit(device=True)
def _smooth_weight(k, offset, n):
    """Weight of neighbour ``k + offset`` in the [1 2 1] smoothing of index ``k`` of ``n``."""
    if n == 1:
        return 1.0 if offset == 0 else 0.0
    if k + offset < 0 or k + offset >= n:
        return 0.0
    side = 1.0 / 3.0 if k == 0 or k == n - 1 else 0.25
    return 2.0 * side if offset == 0 else side


# --- strips ---------------------------------------------------------------------


def _free_bytes() -> float:
    """Device memory a call may plan to use."""
    free, _ = cuda.current_context().get_memory_info()
    return _FREE_MEMORY_SHARE * free


def _launch(kernel, n_rows: int, n_cols: int, *args) -> None:
    block = (min(_BLOCK_COLUMNS, n_cols), min(_BLOCK_ROWS, n_rows))
    grid = (-(-n_cols // block[0]), -(-n_rows // block[1]))
    with warnings.catch_warnings():
        # Small images make grids of few blocks, which Numba warns about;
        # they are correct, and not worth a message.
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        kernel[grid, block](*args)


def _run(job: PoolJob, name: str, params: tuple, max_bytes: float | None) -> None:
    """Run window kernel ``name`` over ``job``, strip by strip, with trailing arguments ``params``.

    A ``params`` entry ``_FIRST_INDEX`` is replaced by the whole output's index
    of the strip's first pixel (:attr:`PoolJob.first_index`), ``_ROW_UNITS`` by the strip's rows of the row windows' coverage units.  ``name == "dpid"`` first makes each strip's smoothed guide.  Where
    ``job.image`` and ``job.out`` are CUDA device arrays already, nothing is
    copied and the job runs as one strip.
    """
    d_image, d_out = _device_array(job.image), _device_array(job.out)
    resident = d_image is not None and d_out is not None
    image, out = (d_image, d_out) if resident else (job.image, job.out)
    if not (image.flags["C_CONTIGUOUS"] and out.flags["C_CONTIGUOUS"]):
        raise ValueError("PoolJob image and out must be C-contiguous")
    height, width, channels = image.shape
    out_h, out_w = out.shape[:2]
    gy, gx = job.rows, job.cols
    kernel_set = kernels(channels)
    guided = name == "dpid"
    halo = 1 if guided else 0
    guide_row_bytes = out_w * channels * 8
    # Window tables first: they stay on the device for every strip.
    ys, yn, yw = (cuda.to_device(a) for a in (gy.start, gy.count, gy.weight))
    xs, xn, xw = (cuda.to_device(a) for a in (gx.start, gx.count, gx.weight))
    yu = cuda.to_device(gy.units) if any(p is _ROW_UNITS for p in params) else None
    if resident:  # on the device already, so it fits
        strips = [(0, out_h)]
    else:
        budget = _free_bytes() if max_bytes is None else max_bytes
        strips = plan_strips(gy.start, gy.count, halo, width * channels * image.itemsize,
                             out_w * channels * out.itemsize + (guide_row_bytes if guided else 0),
                             guide_row_bytes if guided else 0, budget)
    # Device buffers for the largest strip, reused by every strip.
    spans = [strip_span(gy, first, stop, halo) for first, stop in strips]
    slab_rows_max = max(in_end - in_start for _, _, in_start, in_end in spans)
    strip_rows_max = max(stop - first for first, stop in strips)
    if not resident:
        image_buffer = cuda.device_array(slab_rows_max * width * channels, dtype=image.dtype)
        out_buffer = cuda.device_array(strip_rows_max * out_w * channels, dtype=out.dtype)
        # Copies go through (rows, width * channels) views: a length-1 channel
        # axis made by np.newaxis has stride 0, which Numba's copies would
        # take for a broadcast axis and drop.
        image_rows = image.reshape(height, width * channels)
        out_rows_host = out.reshape(out_h, out_w * channels)
    if guided:
        guide_rows_max = max(bottom - top for top, bottom, _, _ in spans)
        guide_buffer = cuda.device_array(guide_rows_max * out_w * channels, dtype=np.float64)
        smooth_buffer = cuda.device_array(strip_rows_max * out_w * channels, dtype=np.float64)
    for (first, stop), (top, bottom, in_start, in_end) in zip(strips, spans):
        if resident:
            d_image, d_out = image, out
        else:
            d_image = image_buffer[: (in_end - in_start) * width * channels].reshape(
                in_end - in_start, width * channels)
            d_image.copy_to_device(image_rows[in_start:in_end])
            d_image = d_image.reshape(in_end - in_start, width, channels)
            d_out_rows = out_buffer[: (stop - first) * out_w * channels].reshape(
                stop - first, out_w * channels)
            d_out = d_out_rows.reshape(stop - first, out_w, channels)
        args = [d_image, job.in_scale, ys[first:stop], yn[first:stop], yw[first:stop], in_start,
                xs, xn, xw, d_out, job.out_max, job.out_int]
        if guided:
            # Guide rows [top, bottom): the strip's rows and their neighbours.
            d_guide = guide_buffer[: (bottom - top) * out_w * channels].reshape(
                bottom - top, out_w, channels)
            _launch(kernel_set.avg, bottom - top, out_w, d_image, job.in_scale, ys[top:bottom],
                    yn[top:bottom], yw[top:bottom], in_start, xs, xn, xw, d_guide, 1.0, False)
            d_smooth = smooth_buffer[: (stop - first) * out_w * channels].reshape(
                stop - first, out_w, channels)
            _launch(kernel_set.smooth, stop - first, out_w, d_guide, top, first, out_h, d_smooth)
        trailing = [d_smooth] if guided else []
        trailing.extend(job.first_index + first * job.draw_row if p is _FIRST_INDEX
                        else yu[first:stop] if p is _ROW_UNITS else p for p in params)
        if name in _WINDOWS:  # one argument, a tuple
            trailing = [tuple(trailing)]
        _launch(getattr(kernel_set, name), stop - first, out_w, *args, *trailing)
        if not resident:
            d_out_rows.copy_to_host(out_rows_host[first:stop])


def _device_array(value):
    """``value`` as a Numba device array where it is a CUDA array (Numba's, CuPy's...), else None."""
    if isinstance(value, np.ndarray):
        return None
    if getattr(value, "__cuda_ndarray__", False):  # Numba's own, and the simulator's
        return value
    if hasattr(value, "__cuda_array_interface__"):
        return cuda.as_cuda_array(value)
    return None


# Placeholders in ``params`` for the output index of the strip's first pixel (stochastic
# sampling's draws) and its rows' coverage units (mode's).
_FIRST_INDEX = object()
_ROW_UNITS = object()


# --- entry points ---------------------------------------------------------------
#
# Each takes the method's parameters and ``max_bytes``: the device memory one
# strip may use (default: most of the free memory).  Tests set it small to
# force strips.


def pool_avg(job: PoolJob, *, max_bytes: float | None = None) -> None:
    """Average pooling of ``job`` on the GPU."""
    _run(job, "avg", (), max_bytes)


def pool_max(job: PoolJob, *, max_bytes: float | None = None) -> None:
    """Max pooling of ``job`` on the GPU."""
    _run(job, "max", (), max_bytes)


def pool_lp(job: PoolJob, p: float, *, max_bytes: float | None = None) -> None:
    """Lp pooling relative to each window's maximum, exact for any ``p``."""
    _run(job, "lp", (float(p),), max_bytes)


def pool_softpool(job: PoolJob, beta: float, *, max_bytes: float | None = None) -> None:
    """SoftPool with each window's maximum subtracted, exact for any ``beta`` and range."""
    _run(job, "softpool", (float(beta),), max_bytes)


def pool_stochastic(job: PoolJob, mode: str, seed: int, *, max_bytes: float | None = None) -> None:
    """Stochastic pooling: one drawn pixel per window (``"sample"``) or the expectation."""
    if mode == "sample":
        _run(job, "sample", (_FIRST_INDEX, job.draw_row, np.uint64(seed), job.value_mode,
                             job.n_colour), max_bytes)
        return
    top = job.value_range[1]
    _run(job, "expectation", (top if top > 0.0 else 1.0,), max_bytes)


def pool_dpp(job: PoolJob, alpha: float, lam: float, variant: str, *,
             max_bytes: float | None = None) -> None:
    """Detail-preserving pooling (DPP Lite), ``variant`` ``"sym"`` or ``"asym"``."""
    _run(job, "dpp", (float(alpha), float(lam), variant == "asym"), max_bytes)


def pool_mode(job: PoolJob, *, max_bytes: float | None = None) -> None:
    """The most frequent value of each window (stored values, in the input's dtype)."""
    if job.out.dtype != job.image.dtype:
        raise ValueError("mode copies stored values: its output has the input's dtype")
    _run(job, "mode", (_ROW_UNITS, cuda.to_device(job.cols.units)), max_bytes)


def pool_dpid(job: PoolJob, lam: float, *, max_bytes: float | None = None) -> None:
    """Detail-preserving image downscaling: area-average guide, smoothed, then weighted windows."""
    _run(job, "dpid", (job.n_colour, float(lam)), max_bytes)
