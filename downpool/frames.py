"""Pool sequences of frames in time as well as space (SPEC section 6).

:func:`downscale_frames` pools a ``(T, H, W[, C])`` array; :class:`FrameDownscaler`
takes frames one at a time (a video's decoder, an animation's frames) and
keeps only the frames a later time window still reads.

Every method pools its 3-D window with its own 2-D kernels: the ``n`` frames of
a time window are interleaved row by row into one ``(H*n, W, C)`` image (row
``y`` of frame ``t`` is its row ``y*n + t``), and the row windows are stretched
to match (:func:`downpool.geometry.interleave_axis`).  A window's rows in that
image are then exactly its 3-D window, each pixel with the coverage of its
spatial position, so one kernel call pools an output frame on any device, with
the block and separable fast paths of the 2-D methods.  dpid's guide is
smoothed over the output frame's rows and columns, never across frames.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from . import api
from .core import check_dtype, float_range
from .methods import get_method

__all__ = ["downscale_frames", "FrameDownscaler", "time_windows", "check_time_geometry"]


def check_time_geometry(time_kernel: Any, time_stride: Any) -> tuple[int, int]:
    """``(kt, st)`` as integers, ``st`` defaulting to ``kt``; ``ValueError`` unless both
    are positive integers."""
    for name, value in (("time_kernel", time_kernel), ("time_stride", time_stride)):
        if value is None and name == "time_stride":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    kt = int(time_kernel)
    return kt, kt if time_stride is None else int(time_stride)


def time_windows(n_frames: int, time_kernel: int, time_stride: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of the input frames of each output frame (SPEC section 6).

    ``out_t = ceil((T - kt) / st) + 1`` when ``T >= kt``, else 1, and output
    frame ``f`` reads ``[f*st, min(f*st + kt, T))``.  With a stride larger than
    the kernel, a last window that would start past the last frame is dropped,
    as the space geometry drops one (:func:`downpool.geometry.pooling_axis`).
    """
    if n_frames < 1:
        raise ValueError("a sequence needs at least one frame")
    kt, st = time_kernel, time_stride
    n_out = -(-(n_frames - kt) // st) + 1 if n_frames >= kt else 1
    n_out = min(n_out, -(-n_frames // st))
    return [(f * st, min(f * st + kt, n_frames)) for f in range(n_out)]


def interleave_frames(frames: list[np.ndarray]) -> np.ndarray:
    """``n`` frames ``(H, W, C)`` as one C-contiguous ``(H*n, W, C)`` image, rows interleaved."""
    if len(frames) == 1:
        return np.ascontiguousarray(frames[0])
    height, width, channels = frames[0].shape
    return np.stack(frames, axis=1).reshape(height * len(frames), width, channels)


class FrameDownscaler:
    """Pool frames that arrive one at a time, ``time_kernel`` frames into one.

    Parameters
    ----------
    shape : (H, W) or (H, W, C)
        Every frame's shape.
    dtype : uint8, uint16, float32 or float64 (``mode``: uint32 too)
        Every frame's dtype.
    method : str
        As for :func:`downpool.downscale`, and so are the space geometry
        (``kernel_size``, ``stride``, ``size``, ``scale``), ``device``,
        ``has_alpha``, ``linear`` and the method's parameters.
    time_kernel, time_stride : int
        The time geometry of :func:`downscale_frames`.

    :meth:`feed` takes the next frame and returns the output frames that are
    complete; :meth:`close` returns the rest (a last, partial time window).
    Only the frames that a time window still to come reads are kept: at most
    ``time_kernel`` of them.  Each output frame is what :func:`downscale_frames`
    gives for it on the whole sequence, bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> frames = np.arange(5 * 16, dtype=np.uint8).reshape(5, 4, 4)
    >>> pooler = FrameDownscaler((4, 4), np.uint8, "max", time_kernel=2)
    >>> outs = [o for frame in frames for o in pooler.feed(frame)] + pooler.close()
    >>> [o.tolist() for o in outs]
    [[[21, 23], [29, 31]], [[53, 55], [61, 63]], [[69, 71], [77, 79]]]
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, method: str = "softpool", *,
                 time_kernel: int = 1, time_stride: int | None = None, **options: Any) -> None:
        self.time_kernel, self.time_stride = check_time_geometry(time_kernel, time_stride)
        dtype = np.dtype(dtype)
        check_dtype(dtype, labels=get_method(method).labels)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"a frame's shape must be (H, W) or (H, W, C) of positive sizes, "
                             f"got {shape}")
        self._flat = len(shape) == 2
        self.shape = (*shape, 1) if self._flat else tuple(shape)
        self.dtype = dtype
        self._method, self._options = method, options
        # One pooling per number of frames in a window (the last may be partial);
        # the first is made now, so that a bad method or geometry fails before any frame.
        self._poolings: dict[int, api.Pooling] = {}
        self._pooling(1)
        # Input index -> (frame, its value range), for the frames a window to come reads.
        self._frames: dict[int, tuple[np.ndarray, tuple[float, float]]] = {}
        self._received = 0
        self._emitted = 0  # output frames done

    def _pooling(self, n: int) -> api.Pooling:
        if n not in self._poolings:
            # The value range is set per window (float_range of its frames).
            self._poolings[n] = api.Pooling(self._method, self.shape, self.dtype, (0.0, 1.0),
                                            frames=n, **self._options)
        return self._poolings[n]

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The shape of each output frame (as the frames': with or without channels)."""
        out = self._pooling(1).out_shape
        return out[:2] if self._flat else out

    def feed(self, frame: Any) -> list[np.ndarray]:
        """Take the next frame; return the output frames it completes (often none)."""
        arr = np.asarray(frame)
        if arr.dtype.kind in "uf" and not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if self._flat and arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"frame {self._received} is {arr.dtype} of shape {arr.shape}; every "
                             f"frame must be {self.dtype} of shape {self.shape}")
        if arr.dtype.kind == "f":
            value_range = float_range(arr)
            if value_range is None:
                raise ValueError(f"frame {self._received} contains NaN or infinite values")
        else:
            value_range = (0.0, 1.0)
        if self._received >= self._emitted * self.time_stride:  # else between windows
            self._frames[self._received] = (arr, value_range)
        self._received += 1
        done = []
        # Output frame f is complete once frame f*st + kt - 1 has arrived.
        while self._emitted * self.time_stride + self.time_kernel <= self._received:
            start = self._emitted * self.time_stride
            done.append(self._pool_window(start, start + self.time_kernel))
        return done

    def close(self) -> list[np.ndarray]:
        """The output frames left once the last frame is in: the partial last window."""
        if self._received == 0:
            raise ValueError("no frames were fed: a sequence needs at least one frame")
        windows = time_windows(self._received, self.time_kernel, self.time_stride)
        done = [self._pool_window(start, stop) for start, stop in windows[self._emitted:]]
        self._frames.clear()
        return done

    def _pool_window(self, start: int, stop: int) -> np.ndarray:
        part = [self._frames[t] for t in range(start, stop)]
        pooling = self._pooling(len(part))
        lo = min(r[0] for _, r in part)
        hi = max(r[1] for _, r in part)
        pooling.set_value_range((lo, hi))
        out = pooling.pool_image(interleave_frames([f for f, _ in part]), frame=self._emitted)
        self._emitted += 1
        # Frames before the next window's start are read by no later window.
        for t in [t for t in self._frames if t < self._emitted * self.time_stride]:
            del self._frames[t]
        return out[:, :, 0] if self._flat else out


def downscale_frames(
    frames: Any,
    method: str = "softpool",
    *,
    time_kernel: int = 1,
    time_stride: int | None = None,
    kernel_size: Any = None,
    stride: Any = None,
    size: Any = None,
    scale: Any = None,
    device: str = "auto",
    has_alpha: bool = False,
    linear: bool = False,
    **params: Any,
) -> np.ndarray:
    """Downscale a sequence of frames in time and space (SPEC section 6).

    Parameters
    ----------
    frames : array_like, shape (T, H, W) or (T, H, W, C)
        Frames first, channels last; the dtypes of :func:`downpool.downscale`.
        The array is never modified.
    method : str
        One of ``downpool.METHODS``.  Each output pixel pools its 3-D window:
        the frames of its time window times its spatial window, every pixel
        with the coverage of its spatial position.
    time_kernel : int
        Frames pooled into one output frame (default 1: each frame on its own).
    time_stride : int, optional
        Step between time windows (default ``time_kernel``).  The last window
        may be partial, never padded: ``out_t = ceil((T - kt) / st) + 1``
        (1 where ``T < kt``).
    kernel_size, stride, size, scale, device, has_alpha, linear, **params
        As for :func:`downpool.downscale`, the same for every frame.

    Returns
    -------
    ndarray, shape (out_t, out_h, out_w[, C])
        The input's dtype and number of dimensions.  With ``time_kernel=1``
        each frame is :func:`downpool.downscale` of it, bit for bit, except
        stochastic sample mode's draws, which are keyed by the output index
        over (frame, row, column): frame 0 draws as ``downscale`` does.

    Raises
    ------
    ValueError, TypeError, DeviceUnavailableError
        As :func:`downpool.downscale`; also for a bad time geometry or an
        array that is not 3-D or 4-D.

    Examples
    --------
    >>> import numpy as np, downpool
    >>> clip = np.arange(4 * 4 * 4, dtype=np.uint8).reshape(4, 4, 4)
    >>> downpool.downscale_frames(clip, "max", time_kernel=2, kernel_size=2)[:, 0]
    array([[21, 23],
           [53, 55]], dtype=uint8)
    """
    arr = np.asarray(frames)
    if arr.ndim not in (3, 4):
        raise ValueError(f"frames must be 3-D (T, H, W) or 4-D (T, H, W, C), got a {arr.ndim}-D "
                         f"array of shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"frames have an empty axis: shape {arr.shape}")
    pooler = FrameDownscaler(arr.shape[1:], arr.dtype, method, time_kernel=time_kernel,
                             time_stride=time_stride, kernel_size=kernel_size, stride=stride,
                             size=size, scale=scale, device=device, has_alpha=has_alpha,
                             linear=linear, **params)
    windows = time_windows(arr.shape[0], pooler.time_kernel, pooler.time_stride)
    out = np.empty((len(windows), *pooler.out_shape), dtype=pooler.dtype)
    f = 0
    for frame in arr:
        for result in pooler.feed(frame):
            out[f] = result
            f += 1
    for result in pooler.close():
        out[f] = result
        f += 1
    return out

