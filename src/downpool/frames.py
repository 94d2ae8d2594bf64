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

from typing import Any

import numpy as np

from . import api
from .core import check_dtype, float_range
from .geometry import positive_int
from .methods import get_method
from .threads import map_on_threads

__all__ = ["downscale_frames", "FrameDownscaler", "time_windows", "check_time_geometry"]


def check_time_geometry(time_kernel: Any, time_stride: Any) -> tuple[int, int]:
    """``(kt, st)`` as integers, ``st`` defaulting to ``kt``; ``ValueError`` unless both
    are positive integers."""
    def positive(name: str, value: Any) -> int:
        if not positive_int(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        return int(value)

    kt = positive("time_kernel", time_kernel)
    return kt, kt if time_stride is None else positive("time_stride", time_stride)


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
    time_kernel : int
        Frames pooled into one output frame, as for :func:`downscale_frames`.
    time_stride : int, optional
        Step between time windows (default ``time_kernel``).
    max_bytes : int, optional
        Input bytes pooled in one kernel call (default
        :data:`downpool.api.STRIP_BYTES`): small frames of integer dtypes are
        pooled several output frames at a time, which saves the cost of a call
        per frame.  0 pools each output frame as soon as its window is complete.

    Notes
    -----
    :meth:`feed` takes the next frame and returns the output frames that are
    done; :meth:`close` returns the rest (the last, partial time window among
    them).  Only the frames that a time window still to pool reads are kept:
    ``time_kernel`` of them, and the frames of the windows waiting for a call
    (about ``max_bytes``).  Each output frame is what :func:`downscale_frames`
    gives for it, bit for bit.

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
                 time_kernel: int = 1, time_stride: int | None = None,
                 max_bytes: int | None = None, **options: Any) -> None:
        self.time_kernel, self.time_stride = check_time_geometry(time_kernel, time_stride)
        dtype = np.dtype(dtype)
        spec = get_method(method)
        check_dtype(dtype, labels=spec.labels)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"a frame's shape must be (H, W) or (H, W, C) of positive sizes, "
                             f"got {shape}")
        self._flat = len(shape) == 2
        self.shape = (*shape, 1) if self._flat else tuple(shape)
        self.dtype = dtype
        self._method, self._options = method, options
        # One pooling per (frames in a window, windows in a call); the first is
        # made now, so that a bad method or geometry fails before any frame.
        self._poolings: dict[tuple[int, int], api.Pooling] = {}
        self._pooling(1, 1)
        # Several windows in one call give each output pixel the same window and
        # arithmetic as one call each, except where: a float window's value range
        # is its own (the kernels' fast paths follow it), dpid smooths its guide
        # across output rows (it would cross frames), and stacking changes
        # whether the rows are blocks (checked in _batch_size).
        batchable = dtype.kind != "f" and spec.halo_rows == 0
        limit = api.STRIP_BYTES if max_bytes is None else max_bytes
        self._batch_bytes = limit if batchable else 0
        self._frame_bytes = int(np.prod(self.shape)) * dtype.itemsize
        # Input index -> (frame, its value range), for the frames a window to come reads.
        self._frames: dict[int, tuple[np.ndarray, tuple[float, float]]] = {}
        self._received = 0
        self._windows = 0  # time windows complete (pooled or waiting in _ready)
        self._ready: list[tuple[int, int]] = []
        self._emitted = 0  # output frames given out

    def _pooling(self, n: int, batch: int) -> api.Pooling:
        if (n, batch) not in self._poolings:
            # The value range is set per call (float_range of its frames).
            self._poolings[n, batch] = api.Pooling(self._method, self.shape, self.dtype, (0.0, 1.0),
                                                   frames=n, batch=batch, **self._options)
        return self._poolings[n, batch]

    def _batch_size(self, n: int, available: int) -> int:
        """Windows of ``n`` frames to pool in one call, of the ``available`` ones."""
        batch = min(available, max(1, self._batch_bytes // max(1, n * self._frame_bytes)))
        if batch > 1 and self._pooling(n, batch).block_rows != self._pooling(n, 1).block_rows:
            return 1  # a frame's row blocks do not tile the stack (H is no multiple of k)
        return batch

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The shape of each output frame (as the frames': with or without channels)."""
        out = self._pooling(1, 1).out_shape
        return out[:2] if self._flat else out

    def feed(self, frame: Any) -> list[np.ndarray]:
        """Take the next frame; return the output frames now done (often none)."""
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
        if self._received >= self._windows * self.time_stride:  # else between windows
            self._frames[self._received] = (arr, value_range)
        self._received += 1
        # Window w is complete once frame w*st + kt - 1 has arrived.
        while self._windows * self.time_stride + self.time_kernel <= self._received:
            start = self._windows * self.time_stride
            self._ready.append((start, start + self.time_kernel))
            self._windows += 1
        if len(self._ready) * self.time_kernel * self._frame_bytes < self._batch_bytes:
            return []
        return self._pool_ready()

    def close(self) -> list[np.ndarray]:
        """The output frames left once the last frame is in: the partial last window too."""
        if self._received == 0:
            raise ValueError("no frames were fed: a sequence needs at least one frame")
        windows = time_windows(self._received, self.time_kernel, self.time_stride)
        self._ready.extend(windows[self._windows:])
        self._windows = len(windows)
        done = self._pool_ready()
        self._frames.clear()
        return done

    def _pool_ready(self) -> list[np.ndarray]:
        done: list[np.ndarray] = []
        while self._ready:
            n = self._ready[0][1] - self._ready[0][0]
            same = next((k for k, (a, b) in enumerate(self._ready) if b - a != n), len(self._ready))
            batch = self._batch_size(n, same)
            windows, self._ready = self._ready[:batch], self._ready[batch:]
            parts = [[self._frames[t] for t in range(a, b)] for a, b in windows]
            pooling = self._pooling(n, batch)
            pooling.set_value_range((min(r[0] for part in parts for _, r in part),
                                     max(r[1] for part in parts for _, r in part)))
            out = pooling.pool_image(stack_windows([[f for f, _ in part] for part in parts]),
                                     frame=self._emitted)
            out = out.reshape(batch, -1, *out.shape[1:])
            done.extend(o[:, :, 0] if self._flat else o for o in out)
            self._emitted += batch
        # Frames before the next window's start are read by no later window.
        keep = self._windows * self.time_stride
        for t in [t for t in self._frames if t < keep]:
            del self._frames[t]
        return done


def stack_windows(windows: list[list[np.ndarray]]) -> np.ndarray:
    """The time windows' frames ``(H, W, C)`` as one C-contiguous image: each window's
    frames interleaved row by row (:func:`downpool.geometry.interleave_axis`), the
    windows one below the other (:func:`downpool.geometry.repeat_axis`).

    Single frames that lie one after the other in one array (a ``(T, H, W, C)``
    array's frames) are read where they are, without a copy.
    """
    if all(len(w) == 1 for w in windows):
        frames = [w[0] for w in windows]
        first = frames[0]
        step = first.nbytes
        address = first.__array_interface__["data"][0]
        if first.flags.c_contiguous and all(
                f.flags.c_contiguous and f.__array_interface__["data"][0] == address + k * step
                for k, f in enumerate(frames)):
            height, width, channels = first.shape
            return np.lib.stride_tricks.as_strided(first, (len(frames) * height, width, channels),
                                                   first.strides, writeable=False)
        return np.concatenate(frames)
    height, width, channels = windows[0][0].shape
    n = len(windows[0])
    out = np.empty((len(windows), height, n, width, channels), dtype=windows[0][0].dtype)
    copies = [(out[k, :, t], frame) for k, w in enumerate(windows) for t, frame in enumerate(w)]
    if out.size >= 1 << 16:  # NumPy copies without the GIL
        map_on_threads(lambda copy: np.copyto(*copy), copies)
    else:
        for target, frame in copies:
            target[...] = frame
    return out.reshape(len(windows) * height * n, width, channels)


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

