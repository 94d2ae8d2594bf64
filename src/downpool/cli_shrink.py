"""``downpool shrink``: downscale image files and folders.

The command plans the whole batch first (which file goes where), then runs
each file through ``io.open_image -> downpool.downscale (or RowDownscaler,
band by band) -> io.write_image``: with ``-j 1`` one file after another;
else ``-j`` files at a time on threads of this process (libvips, Pillow's
codecs and the ``nogil`` kernels release the GIL, and Numba starts once), or
with ``--processes`` in worker processes.  A bad file costs only that
file: its error is reported in one line and the batch goes on.  An image
whose working memory would not fit in what the system has left is refused
before it is decoded (:mod:`downpool.memory`), so that it cannot get the
whole batch killed.

Stopping: Ctrl-C finishes the files in flight (their writes are atomic) and
cancels the rest; SIGTERM and SIGHUP drop the files in flight (their
temporary files are removed; a thread drops its file at the next band of
rows or before its output is put in place) and cancel the rest; either way
the summary is printed and the exit status is 128 + the signal (130, 143,
129).  Worker processes end with the main process, even when it is killed
outright.

Nothing here imports Numba: the kernels load on the first image, in the
process that pools it, so ``downpool shrink --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import os
import re
import signal
import string
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import click

from . import interrupts
from .cli import command_params, memory_limit_option, method_choice, method_param_options
from .files import output_is_stream, remove_stale_temporaries
from .geometry import output_size
from .io import (ANIMATED_FORMATS, DEFAULT_MAX_PIXELS, EXTENSION_FORMATS, FORMAT_EXTENSIONS,
                 IMAGE_EXTENSIONS)
from .memory import format_bytes, over_the_limit
from .messages import caught, fold, one_line
from .methods import get_method
from .video import VIDEO_EXTENSIONS, is_video

__all__ = ["shrink", "Settings", "Task", "FileResult", "shrink_file", "plan_tasks", "memory_needed"]

DEFAULT_NAME = "{stem}_{method}{ext}"
DEFAULT_NAME_IN_FOLDER = "{stem}{ext}"
NAME_FIELDS = ("stem", "method", "ext")
EXIT_FAILED, EXIT_USAGE = 1, 2



@dataclasses.dataclass(frozen=True)
class Settings:
    """What to do to every file of a batch (picklable, sent to worker processes).

    Geometry: at most one of ``kernel_size`` (with ``stride``), ``scale``,
    ``size`` (height, width), or ``width``/``height`` (one alone keeps the
    aspect ratio); none means ``kernel_size=2``.
    """

    method: str
    params: dict[str, Any]
    kernel_size: int | None = None
    stride: int | None = None
    scale: float | None = None
    size: tuple[int, int] | None = None
    width: int | None = None
    height: int | None = None
    device: str = "auto"
    linear: bool = False
    to_srgb: bool = False
    format: str | None = None
    quality: int | None = None
    strip: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    overwrite: bool = False
    skip_existing: bool = False
    #: Bytes one file may take to decode and pool (None: no check); and
    #: whether that is the memory left on the machine ("auto") or --max-memory.
    max_memory: int | None = None
    memory_is_auto: bool = True
    jobs: int = 1
    processes: bool = False
    fast_load: bool = False
    #: A Dask scheduler's address, or "local[:N]" (--scheduler); None: this machine.
    scheduler: str | None = None
    #: "all": every frame of an animation, page of a TIFF or frame of a video;
    #: "first": the first alone, as a still image (--frames).
    frames: str = "all"
    #: Frames pooled into one, and the step between them (--time-kernel, --time-stride).
    time_kernel: int = 1
    time_stride: int | None = None

    def pools_alpha(self, has_alpha: bool) -> bool:
        """Whether an image's alpha channel is pooled as alpha: a label method (mode)
        takes it as one more channel of labels."""
        return has_alpha and not get_method(self.method).labels

    def geometry(self, shape: tuple[int, int]) -> dict[str, Any]:
        """The geometry keywords of :func:`downpool.downscale` for an image of ``shape`` (H, W)."""
        if self.width is not None or self.height is not None:
            h, w = shape
            if self.width is not None and self.height is not None:
                return {"size": (self.height, self.width)}
            if self.width is not None:
                return {"size": (max(1, round(h * self.width / w)), self.width)}
            return {"size": (self.height, max(1, round(w * self.height / h)))}
        if self.size is not None:
            return {"size": self.size}
        if self.scale is not None:
            return {"scale": self.scale}
        return {"kernel_size": self.kernel_size or 2, "stride": self.stride}

    def load_factor(self, shape: tuple[int, int]) -> int:
        """The 1/f that --fast-load decodes a JPEG or WebP of ``shape`` (H, W) at.

        The largest f of 8, 4 and 2 that leaves the pooling at least 2x to
        do, as libvips' thumbnail does; with -k, one that divides K (and no
        --stride other than K); 1 without --fast-load.
        """
        if not self.fast_load:
            return 1
        geometry = self.geometry(shape)
        if "kernel_size" in geometry:
            k = geometry["kernel_size"]
            if geometry["stride"] not in (None, k):
                return 1
            return next((f for f in LOAD_FACTORS if k % f == 0 and k // f >= 2), 1)
        out_h, out_w = output_size(shape, **geometry)
        h, w = shape
        return next((f for f in LOAD_FACTORS if h >= 2 * f * out_h and w >= 2 * f * out_w), 1)

    def loaded_geometry(self, full: tuple[int, int], loaded: tuple[int, int],
                        factor: int) -> dict[str, Any]:
        """The geometry keywords that pool an image decoded at 1/``factor`` (shape ``loaded``)
        to the output size that :meth:`geometry` gives the image at its ``full`` shape.

        -k K becomes K / factor where that makes the same size (the decoders
        round the scaled size differently), else the output size is asked for.
        """
        geometry = self.geometry(full)
        if loaded == full:
            return geometry
        if "size" in geometry:
            return geometry
        out = output_size(full, **geometry)
        if "kernel_size" in geometry:
            k = geometry["kernel_size"] // factor
            if output_size(loaded, kernel_size=k) == out:
                return {"kernel_size": k, "stride": None}
        return {"size": out}


@dataclasses.dataclass(frozen=True)
class Task:
    """One file of a batch: where it is read from and written to."""

    source: str
    target: str


@dataclasses.dataclass(frozen=True)
class FileResult:
    """What became of one :class:`Task`: ``status`` is "done", "skipped" or "failed"."""

    source: str
    target: str
    status: str
    message: str = ""
    warnings: tuple[str, ...] = ()


# --- one file -------------------------------------------------------------------


def shrink_file(task: Task, settings: Settings) -> FileResult:
    """Read, downscale and write one file; every expected fault becomes a failed result.

    Runs in the main process or in a worker; never raises for bad input.
    Python warnings raised meanwhile (Pillow's "corrupt EXIF data" ...) and
    what C libraries print (libtiff's warnings) come back in
    ``FileResult.warnings``, to be reported in one line each; where the file
    failed, the C libraries' words are added to its error instead.
    """
    if _THREAD.__dict__.get("stop") is not None:  # a batch thread (_shrink_in_thread)
        recorded = _THREAD.warnings = []
        native = _THREAD.native = []
        try:
            result = _shrink_file(task, settings)
        finally:
            _THREAD.warnings = _THREAD.native = None
        messages = [" ".join(str(message).split()) for message in recorded]
        return _with_words(result, messages, native)
    result = None
    try:
        with caught() as words:
            result = _shrink_file(task, settings)
    except interrupts.INTERRUPTS as stop:
        import multiprocessing

        # A stop held while descriptor 2 was put back comes after the file was
        # put in place: it still counts (in the main process; a worker's
        # result goes back through its pool).
        if result is None or multiprocessing.parent_process() is not None:
            raise
        raise _Interrupted([_with_words(result, words.messages, words.native)], stop) from None
    return _with_words(result, words.messages, words.native)


def _with_words(result: FileResult, messages: list[str], native: list[str]) -> FileResult:
    """The result with the file's warnings, and the C libraries' words added to them or its
    error (:func:`downpool.messages.fold`)."""
    error, warnings = fold(result.message if result.status == "failed" else None, messages,
                           native)
    if error is not None:
        result = dataclasses.replace(result, message=error)
    if warnings:
        result = dataclasses.replace(result, warnings=warnings)
    return result


def _import_numba_without_scipy() -> None:
    """Import Numba's NumPy support without its probe for SciPy's BLAS.

    When Numba first loads a kernel, ``numba.np.arraymath`` imports
    ``scipy.linalg`` (installed for scikit-image) to see whether
    ``np.convolve`` and ``np.correlate`` may call BLAS: 0.15 s of a 0.9 s
    ``shrink`` of a small image. downpool's kernels call neither, so the CLI,
    which owns its process, hides SciPy for that one import; without BLAS
    Numba uses its own loop for those two functions. The library leaves its
    caller's process alone.
    """
    if "numba.np.arraymath" in sys.modules or "scipy" in sys.modules:
        return
    sys.modules["scipy"] = None  # type: ignore[assignment]  # import scipy -> ImportError
    try:
        importlib.import_module("numba.np.arraymath")
    finally:
        if sys.modules.get("scipy", 0) is None:
            del sys.modules["scipy"]


_KERNELS_LOADING: threading.Thread | None = None


def load_kernels_in_background() -> None:
    """Start importing NumPy's and Numba's kernels on a thread, while the first file decodes.

    Importing Numba and loading the cached kernels is most of a small job's
    time; a batch need not wait for it before its first file is decoded.
    The pooling step waits for it (:func:`_load_kernels`).
    """
    global _KERNELS_LOADING
    if _KERNELS_LOADING is None and "downpool.stream" not in sys.modules:
        # A Ctrl-C inside start() would leave a thread that cannot be joined
        # at exit; held, the signal arrives once it is running (and the
        # thread starts with the stop signals blocked: they are the main
        # thread's to take).
        held = interrupts.hold_stop_signals()
        try:
            thread = threading.Thread(target=_import_kernels, name="downpool-numba", daemon=True)
            thread.start()
            _KERNELS_LOADING = thread
        finally:
            interrupts.release_stop_signals(held)


def _import_kernels() -> None:
    # Only the modules: loading a guessed kernel from Numba's cache as well
    # cost a batch of small files more than it saved (benchmarks/results.md).
    try:
        _import_numba_without_scipy()
        importlib.import_module("downpool.stream")  # api, cpu, the kernels' modules
    except BaseException:  # noqa: BLE001 - the pooling step imports again, and says why
        pass


def _load_kernels() -> None:
    """Wait for :func:`load_kernels_in_background` where it started; else import here."""
    if _KERNELS_LOADING is not None:
        _KERNELS_LOADING.join()
    _import_numba_without_scipy()


def _shrink_file(task: Task, settings: Settings) -> FileResult:
    from . import io as image_io

    def failed(cause: str) -> FileResult:
        return FileResult(task.source, task.target, "failed", cause)

    _check_stop()
    # A FIFO or a device (/dev/null) is written into, not replaced: no
    # --overwrite needed, and nothing to skip.
    if os.path.lexists(task.target) and not output_is_stream(task.target):
        if settings.skip_existing:
            return FileResult(task.source, task.target, "skipped", "output exists")
        if not settings.overwrite:
            return failed(f"output {task.target} exists (use --overwrite to replace it, "
                          "or --skip-existing to skip it)")
    if is_video(task.source):
        return _shrink_video(task, settings)
    try:
        with image_io.open_image(task.source, max_pixels=settings.max_pixels,
                                 before_decode=lambda header: _check_header(header, settings),
                                 to_srgb=settings.to_srgb,
                                 max_read_bytes=settings.max_memory) as source:
            sequence = None
            if settings.frames == "all" and source.n_frames > 1:
                _check_frame_format(task.target, settings, source.n_frames)
                sequence = _pool_sequence(source, settings,
                                          _output_format(task.target, settings))
                outcome = sequence.frames[0], None
            else:
                outcome = _pool_still(source, settings)
    except _Refused as refused:
        return failed(str(refused))
    except _PoolingFailed as fault:
        return failed(str(fault))
    except Exception as exc:  # noqa: BLE001 - reported per file, the batch goes on
        return failed(_read_error(exc, task.source))
    pooled, like = outcome
    if sequence is None and (settings.time_kernel > 1 or (settings.time_stride or 1) > 1):
        import warnings

        warnings.warn("--time-kernel and --time-stride pool frames, and this image has one: "
                      "pooled in space only", stacklevel=1)
    unmade = _make_output_folder(task.target)
    if unmade is not None:
        return failed(unmade)
    fmt = _output_format(task.target, settings)
    _check_stop()
    try:
        if sequence is not None and (len(sequence.frames) > 1 or (fmt or sequence.info.format)
                                     in ANIMATED_FORMATS):
            from .sequence_io import write_sequence

            write_sequence(task.target, sequence.frames, sequence.durations, info=sequence.info,
                           format=fmt, quality=settings.quality, strip=settings.strip,
                           replace=settings.overwrite, before_rename=_check_stop)
        else:
            with _native_section((fmt or getattr(like, "format", "")).upper() in ("TIFF", "TIF")):
                image_io.write_image(task.target, pooled, like=like, format=fmt,
                                     quality=settings.quality, strip=settings.strip,
                                     replace=settings.overwrite, before_rename=_check_stop)
    except FileExistsError:
        return _appeared_meanwhile(task, settings)
    except Exception as exc:  # noqa: BLE001
        return failed(f"cannot write {task.target}: {_describe(exc, task.target)}")
    return FileResult(task.source, task.target, "done")


def _shrink_video(task: Task, settings: Settings) -> FileResult:
    """A video file, decoded, pooled and encoded a frame at a time (:mod:`downpool.video`):
    the frames a time window reads are held, never the clip."""
    from .video import VideoUnavailableError, probe_video, rewrite_video

    def failed(cause: str) -> FileResult:
        return FileResult(task.source, task.target, "failed", cause)

    if settings.frames == "first":
        return failed("--frames first applies to images: a video keeps its frames")
    if not is_video(task.target):
        return failed(f"a video is written as a video: {task.target} is not .mp4, .m4v, .mov, "
                      f".mkv or .webm (--format applies to images)")
    try:
        _check_video(probe_video(task.source), settings)
    except _Refused as refused:
        return failed(str(refused))
    except VideoUnavailableError as exc:
        return failed(str(exc))
    except Exception as exc:  # noqa: BLE001 - reported per file, the batch goes on
        return failed(_read_error(exc, task.source))
    unmade = _make_output_folder(task.target)
    if unmade is not None:
        return failed(unmade)

    def pooler_for(shape: tuple[int, int, int]) -> Any:
        # One call per output frame (max_bytes=0): only time_kernel frames are held.
        import numpy as np

        return _frame_pooler(shape, np.dtype(np.uint8), settings, max_bytes=0)

    try:
        rewrite_video(task.source, task.target, pooler_for,
                      time_stride=settings.time_stride or settings.time_kernel,
                      quality=settings.quality, replace=settings.overwrite,
                      before_rename=_check_stop)
    except _PoolingFailed as fault:
        return failed(str(fault))
    except VideoUnavailableError as exc:
        return failed(str(exc))
    except FileExistsError:
        return _appeared_meanwhile(task, settings)
    except Exception as exc:  # noqa: BLE001 - reported per file, the batch goes on
        return failed(_read_error(exc, task.source))
    return FileResult(task.source, task.target, "done")


def _check_video(facts: dict[str, Any], settings: Settings) -> None:
    """Refuse, from its stream's header, a video whose frames are above --max-pixels or
    whose decoding, pooling and encoding would take more memory than a file may
    (:func:`video_memory_needed`)."""
    width, height = facts["width"], facts["height"]
    pixels = width * height
    if settings.max_pixels is not None and pixels > settings.max_pixels:
        raise _Refused(f"the video's frames are {width}x{height} = {pixels:,} pixels, above the "
                       f"limit of {settings.max_pixels:,} (raise it with --max-pixels)")
    if settings.max_memory is None or pixels == 0:
        return
    need = video_memory_needed(width, height, facts["bits"], settings)
    if need <= settings.max_memory:
        return
    raise _Refused(f"{width}x{height} video needs about {format_bytes(need)} of memory to "
                   f"decode, pool and encode, {_over_the_limit(settings)}")


#: Frames of the input that FFmpeg's decoder may hold at once: the reference
#: frames of H.264 and HEVC (up to 16), one per frame thread, and a few more.
VIDEO_DECODER_FRAMES = 16 + 16 + 2
#: Frames of the output that the encoder may hold at once: x264's look-ahead
#: (40 frames at its default preset), B-frames and references, as YUV 4:2:0.
VIDEO_ENCODER_FRAMES = 64


def video_memory_needed(width: int, height: int, bits: int, settings: Settings) -> int:
    """Bytes that decoding, pooling and encoding a video of ``width`` x ``height`` frames
    take (:func:`downpool.video.rewrite_video`): FFmpeg's decoder (its reference and
    threads' frames, 1.5 bytes a pixel, 3 above 8 bits), the RGB frames decoded
    ahead and the time window (3 bytes a pixel each, a window of more than one
    frame interleaved in one more copy), ``downscale``'s working memory, and
    the encoder's frames of the output (1.5 bytes a pixel)."""
    from .api import working_bytes
    from .video import READ_AHEAD

    pixels = width * height
    out_h, out_w = output_size((height, width), **settings.geometry((height, width)))
    kt = settings.time_kernel
    decoder = VIDEO_DECODER_FRAMES * pixels * (3 if bits > 8 else 3 / 2)
    frames = (READ_AHEAD + 2 + (2 * kt if kt > 1 else kt)) * pixels * 3
    encoder = VIDEO_ENCODER_FRAMES * out_h * out_w * 3 / 2 + out_h * out_w * 3
    return int(decoder + frames + encoder
               + working_bytes((height, width, 3), 1, (out_h, out_w), linear=settings.linear))


def _appeared_meanwhile(task: Task, settings: Settings) -> FileResult:
    """The result where the output appeared while it was being made (a write that
    replaces nothing)."""
    if settings.skip_existing:  # another run, into the same folder, was quicker
        return FileResult(task.source, task.target, "skipped",
                          "output appeared while this one was being made")
    return FileResult(task.source, task.target, "failed",
                      f"output {task.target} appeared while it was being written; not replaced")


def _output_format(target: str, settings: Settings) -> str | None:
    """The format a file is written in: --format, else the output's extension's."""
    return settings.format or EXTENSION_FORMATS.get(Path(target).suffix.lower())


def _make_output_folder(target: str) -> str | None:
    """Create the folder ``target`` goes in; the error where it cannot be made."""
    folder = os.path.dirname(os.path.abspath(target))
    # Parent first, without recursion (os.makedirs recurses before Python 3.12, and
    # a tree mirrored from folders nested a thousand deep ran out of its limit).
    missing = []
    path = folder
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:  # made meanwhile (another file's thread)
                if not os.path.isdir(path):
                    raise
        if not os.path.isdir(folder):  # a file (or a link to one) where the folder goes
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder)
    except OSError as exc:
        return f"cannot create output folder {folder}: {_describe(exc, folder)}"
    return None


class _StoppableFrames:
    """A frame pooler that checks for a stop at each frame and says its faults as a file's."""

    def __init__(self, pooler: Any) -> None:
        self._pooler = pooler
        self.out_shape = pooler.out_shape

    def feed(self, frame: Any) -> list[Any]:
        _check_stop()
        try:
            return self._pooler.feed(frame)
        except Exception as exc:  # noqa: BLE001
            raise _PoolingFailed(_describe(exc)) from None

    def close(self) -> list[Any]:
        return self._pooler.close()


def _check_frame_format(target: str, settings: Settings, n_frames: int) -> None:
    """Refuse, before any frame is decoded, frames that the output's format cannot hold."""
    from .frames import time_windows
    from .sequence_io import check_frame_format

    fmt = _output_format(target, settings)
    if fmt is not None:
        kt = settings.time_kernel
        out_frames = len(time_windows(n_frames, kt, settings.time_stride or kt))
        try:
            check_frame_format(fmt, out_frames)
        except ValueError as exc:
            raise _PoolingFailed(f"cannot write {target}: {exc}") from None


def _pool_still(source: Any, settings: Settings) -> tuple[Any, Any]:
    """One image (or an animation's first frame), decoded at 1/f with --fast-load."""
    factor = source.shrink_on_load(settings.load_factor(source.full_shape))
    if source.streamed:
        return _pool_streamed(source, settings, factor)
    with _native_section(source.header.format == "TIFF"):
        image = source.read()
    return _pool_whole(image, settings, source.full_shape if factor > 1 else None, factor)


@dataclasses.dataclass
class _PooledSequence:
    """The pooled frames of a file of frames, their durations (ms) and what is kept of it."""

    frames: list[Any]
    durations: list[float]
    info: Any


def _pool_sequence(source: Any, settings: Settings, fmt: str | None = None) -> _PooledSequence:
    """Every frame of an animated GIF, WebP or PNG, or every page of a TIFF, of the opened
    ``source``, pooled in time and space as they are decoded
    (:class:`downpool.FrameDownscaler`): the frames a time window reads are held, never
    the whole file.  Each output frame lasts the sum of its input frames' durations
    (SPEC section 6).  ``fmt``: the output's format, where known (else the input's), for
    the memory its writer takes (:func:`_check_frames`)."""
    import warnings

    import numpy as np

    from .frames import time_windows
    from .sequence_io import SequenceFile

    kt = settings.time_kernel
    st = settings.time_stride or kt
    if settings.to_srgb:
        warnings.warn("--to-srgb does not apply to animations and TIFF pages yet: their frames "
                      "are pooled as stored, their profile kept", stacklevel=1)
    sequence = SequenceFile(source)
    _check_frames(sequence.headers, sequence.info.format, settings, fmt or sequence.info.format)
    pooled: list[Any] = []
    durations: list[float] = []
    pooler = first = None
    # Frames of one kind are pooled into one array, one after the other: the TIFF
    # writer (libvips) reads them where they are.
    uniform = len({(h.width, h.height, h.channels, h.bytes_per_sample)
                   for h in sequence.headers}) == 1
    n_out = len(time_windows(len(sequence.headers), kt, st))
    block = None

    def keep(frames: list[Any]) -> None:
        nonlocal block
        for frame in frames:
            if uniform and block is None:
                block = np.empty((n_out, *frame.shape), frame.dtype)
            if block is not None and len(pooled) < n_out and (frame.shape, frame.dtype) == (
                    block.shape[1:], block.dtype):
                block[len(pooled)] = frame
                pooled.append(block[len(pooled)])
            else:
                pooled.append(frame)

    for index, (pixels, duration) in enumerate(sequence.frames()):  # decoding errors propagate
        durations.append(duration)
        kind = (pixels.shape, pixels.dtype)
        if kind != first:
            if pooler is not None:
                if kt > 1 or st > 1:
                    raise _PoolingFailed(
                        f"page {index + 1} is {_describe_frame(*kind)} and page 1 "
                        f"{_describe_frame(*first)}: pooling pages in time "
                        f"(--time-kernel, --time-stride) needs pages of one size and kind")
                keep(pooler.close())
            first = kind
            pooler = _frame_pooler(*kind, settings)
        keep(pooler.feed(pixels))
    keep(pooler.close())
    info = sequence.info
    if len(durations) != info.n_frames:
        raise OSError(f"the file has {len(durations)} frames, not the {info.n_frames} it says")
    if kt > 1 or st > 1:
        durations = [sum(durations[a:b]) for a, b in time_windows(len(durations), kt, st)]
    return _PooledSequence(pooled, durations, info)


def _check_frames(headers: list[Any], fmt: str, settings: Settings,
                  out_fmt: str | None = None) -> None:
    """Refuse, before any frame is decoded, a file of frames one of whose frames (or
    pages) is above --max-pixels, or whose frames would take more memory to pool and
    write than the file may (:func:`frames_memory_needed`)."""
    what = "page" if fmt == "TIFF" else "frame"
    if settings.max_pixels is not None:
        for index, header in enumerate(headers):
            if header.pixels > settings.max_pixels:
                raise _Refused(
                    f"{what} {index + 1} of {len(headers)} is {header.width}x{header.height} = "
                    f"{header.pixels:,} pixels, above the limit of {settings.max_pixels:,} "
                    "(raise it with --max-pixels)")
    if settings.max_memory is None:
        return
    need = frames_memory_needed(headers, settings, out_fmt or fmt)
    if need <= settings.max_memory:
        return
    widest = max(headers, key=lambda h: h.pixels)
    size = (f"{len(headers)} {what}s of {widest.width}x{widest.height}" if fmt != "TIFF"
            else f"{len(headers)} pages of up to {widest.width}x{widest.height}")
    held = "the pooled frames are all held until they are written"
    raise _Refused(f"{size} need about {format_bytes(need)} of memory to pool ({held}), "
                   f"{_over_the_limit(settings)}")


def frames_memory_needed(headers: list[Any], settings: Settings, fmt: str = "TIFF") -> int:
    """Bytes that decoding, pooling and writing a file of frames with these headers take,
    written as ``fmt``.

    Frames are decoded and pooled one time window at a time, but every pooled
    frame is held until the file is written (the writers take them all at
    once).  Pillow's writers (GIF, WebP, APNG) hold each again: as a Pillow image
    (4 bytes a pixel for colour, 2 for 16-bit gray, 1 for gray) and, for GIF,
    palettised and copied once more (2 bytes; 1 for the others).  libvips writes
    TIFF pages of one kind where they are, and pages of several kinds each run
    encoded in memory first (at most their samples again, twice while it is
    joined).  The largest frame's decoding adds Pillow's own buffers
    (``decoded_bytes``: for an animation the canvas and the frame before it),
    the array and a converted copy, the other frames a time window reads
    (interleaved in one more copy), the batch of small frames pooled in one
    call with its stacked copy, and ``downscale``'s working memory
    (:func:`downpool.api.working_bytes`).  On the bombs of
    ``tests/test_cli_hostile_files.py`` pooled without a limit, the estimates
    were 1.2x (GIF), 1.3x (APNG) and 1.6x (TIFF pages) the measured peaks less
    the process's own 150 MB.
    """
    from .api import STRIP_BYTES, working_bytes
    from .frames import time_windows

    kt = settings.time_kernel
    st = settings.time_stride or kt
    decoding = 0
    outputs: dict[tuple[int, int, int, int], int] = {}
    one_kind = len({(h.width, h.height, h.channels, h.bytes_per_sample) for h in headers}) <= 1
    for header in headers:
        key = (header.width, header.height, header.channels, header.bytes_per_sample)
        if key in outputs:
            continue
        frame = header.pixels * header.channels * header.bytes_per_sample
        out_h, out_w = output_size((header.height, header.width),
                                   **settings.geometry((header.height, header.width)))
        samples = header.channels * header.bytes_per_sample
        if fmt == "TIFF":
            writer = 0 if one_kind else 2 * samples
        else:
            writer = ((1 if header.bytes_per_sample == 1 else 2) if header.channels == 1
                      else 4) + (2 if fmt == "GIF" else 1)
        outputs[key] = out_h * out_w * (samples + writer)
        window = (2 * kt - 1) * frame if kt > 1 else frame
        batch = min(STRIP_BYTES, len(headers) * frame) if frame < STRIP_BYTES else 0
        decoding = max(decoding, header.decoded_bytes + frame + window + 2 * batch
                       + working_bytes((header.height, header.width, header.channels),
                                       header.bytes_per_sample, (out_h, out_w),
                                       has_alpha=settings.pools_alpha(header.has_alpha),
                                       linear=settings.linear))
    if len(outputs) == 1:
        held = len(time_windows(len(headers), kt, st)) * next(iter(outputs.values()))
    else:  # pages of several kinds, each pooled alone (kt = 1, else refused)
        held = sum(outputs[(h.width, h.height, h.channels, h.bytes_per_sample)]
                   for h in headers)
    return decoding + held + (headers[0].source_bytes if headers else 0)


def _frame_pooler(shape: tuple[int, ...], dtype: Any, settings: Settings,
                  max_bytes: int | None = None) -> "_StoppableFrames":
    """A :class:`downpool.FrameDownscaler` for frames of ``shape`` and ``dtype``, with the
    settings, that checks for a stop at each frame."""
    from .frames import FrameDownscaler

    geometry = _pooling_geometry(shape, settings)
    has_alpha = len(shape) == 3 and shape[2] in (2, 4)
    try:
        return _StoppableFrames(FrameDownscaler(
            shape, dtype, settings.method, time_kernel=settings.time_kernel,
            time_stride=settings.time_stride, device=settings.device,
            has_alpha=settings.pools_alpha(has_alpha), linear=settings.linear,
            max_bytes=max_bytes, **geometry, **settings.params))
    except Exception as exc:  # noqa: BLE001
        raise _PoolingFailed(_describe(exc)) from None


def _describe_frame(shape: tuple[int, ...], dtype: Any) -> str:
    """``640x480 RGB 8-bit`` for frames of ``shape`` and ``dtype``."""
    channels = shape[2] if len(shape) == 3 else 1
    kind = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
    return f"{shape[1]}x{shape[0]} {kind} {dtype.itemsize * 8}-bit"


class _Refused(Exception):
    """An image refused on its header, before it is decoded (memory)."""


class _PoolingFailed(Exception):
    """An image read well that cannot be pooled as asked (its message is the file's error)."""


def _pool_whole(image: Any, settings: Settings, full: tuple[int, int] | None = None,
                factor: int = 1) -> tuple[Any, Any]:
    """``downscale`` on a decoded :class:`~downpool.io.LoadedImage`: the pixels and their metadata.

    ``full`` is the image's (H, W) before a decoder scaled it by 1/``factor``.
    """
    import dataclasses as dc

    from .api import downscale

    geometry = _pooling_geometry(image.pixels.shape, settings, full, factor)
    try:
        pooled = downscale(
            image.pixels, settings.method, device=settings.device,
            has_alpha=settings.pools_alpha(image.has_alpha), linear=settings.linear, **geometry,
            **settings.params,
        )
    except Exception as exc:  # noqa: BLE001 - ValueError for a bad geometry, and the unexpected
        raise _PoolingFailed(_describe(exc)) from None
    # Only the input's metadata are needed now: its pixels can go before encoding.
    return pooled, dc.replace(image, pixels=pooled)


def _pooling_geometry(shape: tuple[int, ...], settings: Settings,
                      full: tuple[int, int] | None = None, factor: int = 1) -> dict[str, Any]:
    """The geometry keywords for an image of ``shape``, once the kernels are loaded
    (:meth:`Settings.loaded_geometry` where it was decoded at 1/``factor`` of ``full``)."""
    _load_kernels()
    full = full or shape[:2]
    too_large = _larger_than_input(settings.geometry(full), full)
    geometry = settings.loaded_geometry(full, shape[:2], factor)
    if too_large:
        raise _PoolingFailed(too_large)
    return geometry


#: The scales --fast-load may decode a JPEG or WebP at (1/f), largest first.
LOAD_FACTORS = (8, 4, 2)

#: Input rows fetched from libvips at a time, in bytes of samples
#: (``benchmarks/results.md``: smaller bands and strips held the peak lower
#: at the same speed).
BAND_BYTES = 1 << 20
#: The working memory of one strip of a streamed image (RowDownscaler's
#: ``max_bytes``): smaller than ``downscale``'s, since the input rows a strip
#: needs are held (and joined across bands) besides its working values.
STREAM_STRIP_BYTES = 4 << 20


def _pool_streamed(source: Any, settings: Settings, factor: int = 1) -> tuple[Any, Any]:
    """Pool an :class:`~downpool.io.ImageFile` band by band as libvips decodes it.

    Bit for bit what :func:`_pool_whole` makes of the whole image
    (:class:`downpool.RowDownscaler`); the input is never held whole.
    """
    import numpy as np

    from .stream import RowDownscaler

    shape = source.shape
    geometry = _pooling_geometry(shape, settings, source.full_shape if factor > 1 else None,
                                 factor)
    try:
        pooler = RowDownscaler(shape, source.dtype, settings.method, device=settings.device,
                               has_alpha=settings.pools_alpha(source.has_alpha),
                               linear=settings.linear,
                               max_bytes=STREAM_STRIP_BYTES, **geometry, **settings.params)
    except Exception as exc:  # noqa: BLE001
        raise _PoolingFailed(_describe(exc)) from None
    pooled = np.empty(pooler.out_shape, source.dtype)
    row_bytes = int(np.prod(shape[1:])) * source.dtype.itemsize
    made = 0
    for band in source.bands(max(1, BAND_BYTES // row_bytes)):  # decoding errors propagate
        _check_stop()
        try:
            rows = pooler.feed(band)
        except Exception as exc:  # noqa: BLE001
            raise _PoolingFailed(_describe(exc)) from None
        pooled[made:made + rows.shape[0]] = rows
        made += rows.shape[0]
    pooler.close()
    return pooled, source.like(pooled)


def memory_needed(header: Any, settings: Settings) -> int:
    """Bytes that decoding and pooling an image with this :class:`~downpool.io.ImageHeader` take.

    The decoder's own buffer, the array read from it (for a streamed image,
    the input rows one strip holds and one band), and what
    :func:`downpool.api.working_bytes` says ``downscale`` adds; compared in
    ``benchmarks/bench_memory.py`` with the peak memory of real runs.
    """
    from .api import working_bytes

    shape = (header.height, header.width, header.channels)
    geometry = settings.geometry((header.height, header.width))
    out_size = output_size((header.height, header.width), **geometry)
    held = header.pixels * header.channels * header.bytes_per_sample
    if header.streamed:
        held = min(held, 2 * STREAM_STRIP_BYTES + BAND_BYTES)
    return (header.decoded_bytes + held + header.source_bytes
            + working_bytes(shape, header.bytes_per_sample, out_size,
                            has_alpha=settings.pools_alpha(header.has_alpha),
                            linear=settings.linear))


def _check_header(header: Any, settings: Settings) -> None:
    """Refuse an image whose decoding and pooling would need more memory than it may take."""
    if settings.max_memory is None:
        return
    need = memory_needed(header, settings)
    if need <= settings.max_memory:
        return
    raise _Refused(f"{header.width}x{header.height} image needs about {format_bytes(need)} of "
                   f"memory to pool, {_over_the_limit(settings)}")


def _over_the_limit(settings: Settings) -> str:
    return over_the_limit(settings.max_memory, settings.memory_is_auto, settings.jobs)


def _larger_than_input(geometry: dict[str, Any], shape: tuple[int, int]) -> str | None:
    """The error for an output size (--size, --width, --height) above the input's, in WxH."""
    if "size" not in geometry:
        return None
    (out_h, out_w), (h, w) = geometry["size"], shape
    if out_h <= h and out_w <= w:
        return None
    return (f"the output, {out_w}x{out_h}, would be larger than the {w}x{h} input "
            "(width x height); downpool only downscales")


def _read_error(exc: BaseException, source: str) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a folder (use -r to read the images inside it)"
    return _describe(exc, source)


def _describe(exc: BaseException, own_path: str | None = None) -> str:
    """A one-line cause for ``exc``, without the file name when it is ``own_path``."""
    if isinstance(exc, OSError) and exc.strerror:
        name = os.fspath(exc.filename) if exc.filename is not None else None
        return exc.strerror if name in (None, own_path) else f"{name}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = " ".join(str(exc).split())
    if isinstance(exc, (OSError, ValueError, TypeError, RuntimeError)):
        return text or type(exc).__name__
    # Not a fault of the input: say what it was, so that it can be reported.
    return f"internal error: {type(exc).__name__}: {text}"


# --- planning -------------------------------------------------------------------


#: What a folder input is searched for: image and video files.
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def _walk_images(folder: Path, recursive: bool, skip: set[str],
                 unreadable: list[OSError]) -> Iterator[Path]:
    """Image files in ``folder`` (sorted, each folder's files before its subfolders'; hidden
    names and the ``skip`` folders left out).

    Folders that cannot be listed are added to ``unreadable``.  The walk keeps
    its own stack: ``os.walk`` recurses (before Python 3.12), and folders
    nested a thousand deep ran out of Python's recursion limit.  Links to
    folders are not followed, as ``os.walk`` does not.
    """
    pending = [str(folder)]
    while pending:
        root = pending.pop()
        try:
            with os.scandir(root) as found:
                entries = list(found)
        except OSError as error:
            unreadable.append(error)
            continue
        dirs, files = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_EXTENSIONS:
                yield Path(root, name)
        if recursive:
            pending.extend(os.path.join(root, d) for d in sorted(dirs, reverse=True)
                           if not d.startswith(".")
                           and os.path.realpath(os.path.join(root, d)) not in skip)


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; False where it cannot be looked at (a name too long
    for the file system, say), which reading it then reports."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _unusable_output(target: Path) -> str | None:
    """Why ``target`` cannot be written whatever is in it, or None: a name longer than the
    file system takes (each part of the path, and the whole)."""
    folder = next((p for p in (target.parent, *target.parent.parents) if os.path.isdir(p)), Path("."))
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        path_max = os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    for part in target.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            return (f"output name {part[:40]}... is {size} bytes, more than the {name_max} a "
                    "file name may have here; choose a shorter --name or -o")
    size = len(os.fsencode(os.path.abspath(target)))
    if size >= path_max:
        return (f"output path is {size} bytes, more than the {path_max - 1} a path may have "
                "here; choose a shorter -o")
    return None


def _output_name(template: str, source: Path, method: str, fmt: str | None) -> str:
    ext = source.suffix
    if fmt is not None and EXTENSION_FORMATS.get(ext.lower()) != fmt:
        ext = FORMAT_EXTENSIONS[fmt]
    return template.format(stem=source.stem, method=method, ext=ext)


def plan_tasks(
    inputs: list[str],
    out: str | None,
    recursive: bool,
    name: str | None,
    method: str,
    fmt: str | None,
) -> tuple[list[Task], list[FileResult], list[str]]:
    """Decide where each input file goes.

    Parameters
    ----------
    inputs : list of str
        Files and folders, as given on the command line.
    out : str or None
        ``-o``: a file for a single input file, otherwise a folder in which
        each folder input's tree is mirrored (files go to its top).
    recursive : bool
        Descend into subfolders of folder inputs.
    name : str or None
        Output name template (fields ``{stem}``, ``{method}``, ``{ext}``);
        default ``{stem}_{method}{ext}`` beside the input, ``{stem}{ext}`` in
        an ``-o`` folder.
    method : str
        For the ``{method}`` field.
    fmt : str or None
        Output format: ``{ext}`` becomes its extension when it differs from
        the input's.

    Returns
    -------
    tasks : list of Task
    refused : list of FileResult
        Inputs that are not processed: failed (their output would overwrite
        an input, or another input's output; a folder that cannot be read)
        or skipped (named inputs that are the output of another input).
    warnings : list of str
    """
    out_is_folder = out is not None and (
        len(inputs) > 1 or out.endswith(("/", os.sep)) or os.path.isdir(out)
        or any(os.path.isdir(p) for p in inputs)
    )
    template = name or (DEFAULT_NAME_IN_FOLDER if out_is_folder else DEFAULT_NAME)
    skip_dirs = {os.path.realpath(out)} if out_is_folder else set()
    planned: list[tuple[Path, Path, bool]] = []  # source, target, found by walking a folder
    warnings = []
    unreadable: list[OSError] = []
    for given in inputs:
        path = Path(given)
        if _is_folder(path):
            errors_before = len(unreadable)
            found = list(_walk_images(path, recursive, skip_dirs, unreadable))
            if not found and len(unreadable) == errors_before:
                warnings.append(f"no image files in folder {given}"
                                + ("" if recursive else " (use -r to descend into subfolders)"))
            for source in found:
                relative = source.relative_to(path)
                folder = (Path(out) / relative.parent) if out_is_folder else source.parent
                planned.append((source, folder / _output_name(template, source, method, fmt), True))
        else:
            if out is None:
                target = path.parent / _output_name(template, path, method, fmt)
            elif out_is_folder:
                target = Path(out) / _output_name(template, path, method, fmt)
            else:
                target = Path(out)
            planned.append((path, target, False))

    def key(p: Path) -> str:
        return os.path.realpath(p)

    folder_errors = [
        FileResult(os.fspath(error.filename or ""), "", "failed",
                   f"cannot read this folder: {error.strerror or error}") for error in unreadable]
    producers = {key(target): source for source, target, _ in planned}
    # An input that is another input's output (an earlier run's output, picked
    # up by a folder walk or a shell glob) is taken as that output, not read
    # again: files found in folders are left out, files named are skipped.
    tasks, refused, claimed = [], folder_errors, {}
    kept = []
    for source, target, walked in planned:
        producer = producers.get(key(source))
        if producer is None or key(producer) == key(source):
            kept.append((source, target, walked))
        elif not walked:
            refused.append(FileResult(str(source), str(target), "skipped",
                                      f"it is the output of {producer}"))
    planned = kept
    sources = {key(source) for source, _, _ in planned}
    for source, target, _ in planned:
        unusable = _unusable_output(target)
        if unusable is not None:
            refused.append(FileResult(str(source), str(target), "failed", unusable))
        elif key(target) in sources or _same_file(target, source):
            refused.append(FileResult(str(source), str(target), "failed",
                                      f"output {target} would overwrite an input file"))
        elif key(target) in claimed:
            refused.append(FileResult(str(source), str(target), "failed",
                                      f"output {target} is also the output of {claimed[key(target)]}"))
        else:
            claimed[key(target)] = str(source)
            tasks.append(Task(str(source), str(target)))
    return tasks, refused, warnings


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (a hard link, a symlink); False where either
    cannot be looked at."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# --- running a batch -----------------------------------------------------------------

# In a worker: whether a file is being processed now (a SIGTERM then unwinds
# it, removing its temporary file) or the worker waits for one (it exits).
_worker_busy = False


class _WorkerStopped(BaseException):
    """SIGTERM reached a worker while it processed a file."""


def _worker_stop(signum: int, frame: object) -> None:
    if _worker_busy:
        raise _WorkerStopped()
    os._exit(128 + signum)


def _die_with_parent(parent: int) -> None:
    """Have this process get SIGTERM when ``parent`` dies, even of SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    else:  # elsewhere, watch for the parent's end
        import threading

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # it died before we asked
        os._exit(128 + signal.SIGTERM)


def _init_worker(parent: int) -> None:
    """Set up a worker process: one Numba thread; stop signals as the batch needs them."""
    # Before Numba is imported here (it is, by the first image): N workers x 1 thread.
    os.environ["NUMBA_NUM_THREADS"] = "1"
    # Ctrl-C and a closed terminal reach the whole process group; the main
    # process decides what happens to the files in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_stop)
    _die_with_parent(parent)
    # The main process blocked these while it started us (see _run_in_workers).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(interrupts.STOP_SIGNALS))


def _shrink_in_worker(task: Task, settings: Settings) -> FileResult:
    global _worker_busy
    _worker_busy = True
    try:
        return shrink_file(task, settings)
    except _WorkerStopped:
        # On the way here the file's temporary was removed; the result is not wanted.
        os._exit(128 + signal.SIGTERM)
    finally:
        _worker_busy = False


#: A batch thread's own state: the warnings and C libraries' words of its
#: file, and the event that tells it to drop that file.
_THREAD = threading.local()


class _Dropped(BaseException):
    """The batch was stopped (SIGTERM, SIGHUP): this thread's file is given up.

    A BaseException, so that the per-file ``except Exception`` handlers let
    it through and only the file's temporary is cleaned up on the way.
    """


def _check_stop() -> None:
    stop = _THREAD.__dict__.get("stop")
    if stop is not None and stop.is_set():
        raise _Dropped()


def _native_section(needed: bool) -> Any:
    """In a batch thread, catch what C libraries print while a codec that prints runs (libtiff).

    Descriptor 2 belongs to the whole process, so a thread points it at a
    file only around the calls that may write there, one thread at a time
    (:data:`downpool.native_stderr.LOCK`); one file after another, the
    whole file is caught (:func:`shrink_file`).
    """
    import contextlib

    native = _THREAD.__dict__.get("native")
    if not needed or native is None:
        return contextlib.nullcontext()
    from .native_stderr import capture

    @contextlib.contextmanager
    def section() -> Iterator[None]:
        lines: list[str] = []
        try:
            with capture() as lines:
                yield
        finally:  # a decoder's words belong to its error too
            native.extend(lines)

    return section()


class _ThreadWarnings:
    """Warnings shown in a batch thread go to its file's list (``warnings.catch_warnings``
    swaps process-wide state, which threads would undo for each other)."""

    def __enter__(self) -> "_ThreadWarnings":
        import warnings

        from .numba_warnings import NUMBA_SCOPE_WARNING

        self._saved = warnings.catch_warnings()
        self._saved.__enter__()
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=NUMBA_SCOPE_WARNING)
        shown = warnings.showwarning

        def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                 line: Any = None) -> None:
            recorded = _THREAD.__dict__.get("warnings")
            if recorded is None:  # not a file's thread (a library's own)
                shown(message, category, filename, lineno, file, line)
            else:
                recorded.append(message)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc: Any) -> None:
        self._saved.__exit__(*exc)


def _shrink_in_thread(task: Task, settings: Settings, stop: threading.Event) -> FileResult | None:
    """:func:`shrink_file` on a batch thread; None where the file was dropped."""
    _THREAD.stop = stop
    try:
        return shrink_file(task, settings)
    except _Dropped:
        return None
    finally:
        _THREAD.stop = None


def _run_in_threads(tasks: list[Task], settings: Settings, jobs: int) -> Iterator[FileResult]:
    from concurrent.futures import ThreadPoolExecutor, as_completed, wait

    stop = threading.Event()
    futures: dict[Any, Task] = {}
    reported = set()

    def drop() -> None:
        stop.set()
        interrupts.ignore_stop_signals()  # while the threads remove their temporaries
        wait(futures)

    with _ThreadWarnings():
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="downpool-file")
        try:
            for task in tasks:
                futures[pool.submit(_shrink_in_thread, task, settings, stop)] = task
            for future in as_completed(futures):
                reported.add(future)
                yield future.result()
        except interrupts.INTERRUPTS as stopped:
            raise _stop_pool(pool, futures, reported, stopped, drop,
                             lambda future, task: future.result()) from None
        pool.shutdown(wait=True)


_WORKER_SETUP = threading.Lock()
_WORKER_WARNINGS: list[Any] = []


def _shrink_on_worker(task: Task, settings: Settings, existed: bool) -> FileResult:
    """:func:`shrink_file` on a thread of a Dask worker (``--scheduler``).

    ``existed``: whether the output was there when the batch started.  One
    that appeared since, without --overwrite, was put in place by an
    earlier try of this very file whose worker died before it could report.
    """
    with _WORKER_SETUP:
        if not _WORKER_WARNINGS:  # once per worker process: warnings kept per file
            _WORKER_WARNINGS.append(_ThreadWarnings().__enter__())
    if (not existed and not settings.overwrite and not settings.skip_existing
            and os.path.lexists(task.target) and not output_is_stream(task.target)):
        return FileResult(task.source, task.target, "done",
                          "written by an earlier try, whose worker died before it reported")
    if not os.path.lexists(task.source):
        import socket

        return FileResult(task.source, task.target, "failed",
                          f"not found on the worker on {socket.gethostname()}: the workers "
                          "must see the input and output paths")
    return _shrink_in_thread(task, settings, threading.Event()) or FileResult(
        task.source, task.target, "failed", "dropped")


def _cluster_client(scheduler: str) -> tuple[Any, Any]:
    """A ``distributed.Client`` of the scheduler at ``scheduler``, or of a new LocalCluster."""
    from distributed import Client, LocalCluster

    match = re.fullmatch(r"local(?::(\d+))?", scheduler)
    if match is None:
        return Client(scheduler), None  # timeout: distributed.comm.timeouts.connect (30 s)
    workers = int(match[1]) if match[1] else _usable_cpus()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=":0")
    return Client(cluster), cluster


class _NoCluster(Exception):
    """The Dask scheduler of --scheduler could not be reached (the batch did not start)."""


def _cluster_outcome(future: Any, task: Task) -> FileResult:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - its workers died (KilledWorker), or the unexpected
        if type(exc).__name__ == "KilledWorker":
            cause = "every worker that ran it died (out of memory?)"
        else:
            cause = f"worker failed: {_describe(exc) or type(exc).__name__}"
        return FileResult(task.source, task.target, "failed", cause)


def _run_on_cluster(tasks: list[Task], settings: Settings, scheduler: str) -> Iterator[FileResult]:
    """The batch as tasks of a Dask cluster: results as they come, files retried by Dask
    on the other workers where a worker dies."""
    import uuid

    from distributed import as_completed

    try:
        client, cluster = _cluster_client(scheduler)
    except OSError as exc:  # distributed's connection timeout and refusal are OSErrors
        raise _NoCluster(f"cannot reach the Dask scheduler at {scheduler}: "
                         f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    batch = uuid.uuid4().hex[:12]
    futures: dict[Any, Task] = {}
    reported: set = set()
    try:
        for i, task in enumerate(tasks):
            existed = os.path.lexists(task.target)
            future = client.submit(_shrink_on_worker, task, settings, existed, pure=False,
                                   key=f"downpool-shrink-{batch}-{i}")
            futures[future] = task
        for future in as_completed(futures):
            reported.add(future)
            yield _cluster_outcome(future, futures[future])
    except interrupts.INTERRUPTS as stop:
        raise _stop_cluster(client, futures, reported, stop) from None
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        _remove_stale_temporaries(tasks)  # a dead worker's, where it ran on this host


def _stop_cluster(client: Any, futures: dict[Any, Task], reported: set,
                  stop: BaseException) -> "_Interrupted":
    """Cancel the files not started; with Ctrl-C, wait for those being made."""
    from distributed import wait

    running = {key for keys in client.processing().values() for key in keys}
    client.cancel([f for f in futures if f.key not in running and not f.done()])
    if _finishes_in_flight(stop):
        try:
            wait([f for f in futures if f.key in running])
        except interrupts.INTERRUPTS:  # a second signal: do not wait
            pass
    client.cancel([f for f in futures if not f.done()])
    finished = [_cluster_outcome(f, task) for f, task in futures.items()
                if f not in reported and f.status == "finished"]
    return _Interrupted(finished, stop)


def _run_in_process(tasks: list[Task], settings: Settings) -> Iterator[FileResult]:
    for task in tasks:
        yield shrink_file(task, settings)


class _Interrupted(Exception):
    """A batch was stopped: the results that came in meanwhile, and the stopping exception."""

    def __init__(self, finished: list[FileResult], stop: BaseException):
        super().__init__("interrupted")
        self.finished = finished
        self.stop = stop


def _finishes_in_flight(stop: BaseException) -> bool:
    """Ctrl-C lets the files in flight finish; SIGTERM and SIGHUP drop them."""
    return not isinstance(stop, interrupts.Stopped) or stop.signum == signal.SIGINT


def _run_in_workers(tasks: list[Task], settings: Settings, jobs: int) -> Iterator[FileResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    def outcome(future: Any, task: Task) -> FileResult:
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - a worker killed (out of memory?) or broken
            return FileResult(task.source, task.target, "failed",
                              f"worker process failed: {_describe(exc) or type(exc).__name__}")

    def terminate_workers() -> None:
        # The pool has no public way to stop its processes; each drops its file.
        for process in list(getattr(pool, "_processes", {}).values()):
            try:
                process.terminate()
            except (OSError, ValueError, AttributeError):
                pass

    # spawn: forking a process whose Numba threading layer may be running is unsafe.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(),))
    futures: dict[Any, Task] = {}
    reported = set()
    try:
        # Workers start during submit(): with the stop signals blocked, they
        # inherit them blocked and cannot die of one before _init_worker is ready.
        mask = interrupts.hold_stop_signals()
        try:
            for task in tasks:
                futures[pool.submit(_shrink_in_worker, task, settings)] = task
        finally:
            interrupts.release_stop_signals(mask)  # a pending signal arrives here
        for future in as_completed(futures):
            reported.add(future)
            yield outcome(future, futures[future])
    except interrupts.INTERRUPTS as stop:
        raise _stop_pool(pool, futures, reported, stop, terminate_workers, outcome) from None
    pool.shutdown(wait=True)


def _stop_pool(pool: Any, futures: dict[Any, Task], reported: set, stop: BaseException,
               drop: Any, result_of: Any) -> "_Interrupted":
    """Stop a batch's pool: cancel the files not started, finish or ``drop()`` those in flight.

    Ctrl-C lets the files in flight finish; SIGTERM, SIGHUP or a second
    Ctrl-C drops them.  ``result_of(future, task)`` gives a finished file's
    result (None: dropped).  Returns what :func:`run_batch` is to be told.
    """
    from concurrent.futures import wait

    for future in futures:
        future.cancel()
    finish = _finishes_in_flight(stop)
    if finish:
        try:
            wait(futures)  # the files being pooled now are finished and written whole
        except interrupts.INTERRUPTS:  # a second signal: drop them after all
            finish = False
    if not finish:
        drop()
    finished = [result_of(f, task) for f, task in futures.items()
                if f not in reported and f.done() and not f.cancelled() and f.exception() is None]
    pool.shutdown(wait=True, cancel_futures=True)
    return _Interrupted([result for result in finished if result is not None], stop)


def _progress_bar(total: int, quiet: bool) -> Any:
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    # No monitor thread: it may redraw the bar while a file's C-level
    # messages are being captured (downpool.native_stderr).
    tqdm.monitor_interval = 0
    return tqdm(total=total, file=sys.stderr, unit="file", dynamic_ncols=True, leave=False)


def _say(message: str, bar: Any) -> None:
    from .native_stderr import LOCK

    message = one_line(message)  # a newline in a file's name does not make a line of its own
    with LOCK:  # not while a batch thread has descriptor 2 pointed at its capture
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            click.echo(message, err=True)


def _advance(bar: Any) -> None:
    from .native_stderr import LOCK

    with LOCK:
        bar.update()


def _remove_stale_temporaries(tasks: list[Task]) -> None:
    """Remove what runs that were killed left in this batch's output folders, and say so."""
    folders = {os.path.dirname(os.path.abspath(task.target)) for task in tasks}
    removed = [path for folder in sorted(folders) for path in remove_stale_temporaries(folder)]
    if removed:
        _say(f"downpool: removed {len(removed)} temporary file{'s' * (len(removed) > 1)} "
             f"left by a run that was killed (in {os.path.dirname(removed[0])}"
             f"{' ...' if len(folders) > 1 else ''})", None)


def run_batch(tasks: list[Task], refused: list[FileResult], settings: Settings, jobs: int,
              quiet: bool) -> int:
    """Run ``tasks``, report each failure as it happens and a summary at the end.

    Returns
    -------
    int
        The exit status: 0, 1 (some file failed), or 128 + the signal that
        stopped the batch (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
    """
    start = time.perf_counter()
    results: list[FileResult] = list(refused)
    for result in refused:
        kind = "error" if result.status == "failed" else "skipping"
        _say(f"downpool: {kind}: {result.source}: {result.message}", None)
    bar = None
    stopped: BaseException | None = None
    stream = None
    try:
        if tasks and settings.scheduler is None and (jobs <= 1 or not settings.processes):
            load_kernels_in_background()
        _remove_stale_temporaries(tasks)
        bar = _progress_bar(len(tasks), quiet)
        workers = min(jobs, len(tasks))
        if settings.scheduler is not None and tasks:
            stream = _run_on_cluster(tasks, settings, settings.scheduler)
        elif workers <= 1:
            stream = _run_in_process(tasks, settings)
        elif settings.processes:
            stream = _run_in_workers(tasks, settings, workers)
        else:
            stream = _run_in_threads(tasks, settings, workers)
        for result in stream:
            results.append(result)
            for warning in result.warnings:
                _say(f"downpool: warning: {result.source}: {warning}", bar)
            if result.status == "failed":
                _say(f"downpool: error: {result.source}: {result.message}", bar)
            if bar is not None:
                _advance(bar)
    except _NoCluster as exc:
        _say(f"downpool: error: {exc}", None)
        return EXIT_FAILED
    except _Interrupted as stop:
        stopped = stop.stop
        results.extend(stop.finished)
    except interrupts.INTERRUPTS as stop:
        # Stopped while reporting a result, outside the runner: it is told
        # now, so that it deals with its files in flight as it would have.
        stopped = stop
        if stream is not None:
            try:
                stream.throw(stop)
            except _Interrupted as inner:
                results.extend(inner.finished)
            except (StopIteration, *interrupts.INTERRUPTS):
                pass
    finally:
        interrupts.ignore_stop_signals()  # nothing may cut the summary short now
        if bar is not None:
            bar.close()
        if _KERNELS_LOADING is not None:
            _KERNELS_LOADING.join()  # not cut off halfway through loading LLVM at exit
    elapsed = time.perf_counter() - start
    count = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    summary = (f"downpool: {count['done']} done, {count['skipped']} skipped, "
               f"{count['failed']} failed in {elapsed:.1f} s")
    if stopped is not None:
        summary += f"; interrupted, {len(tasks) + len(refused) - len(results)} not processed"
    click.echo(summary, err=True)
    if len(tasks) + len(refused) > 1:
        # Each failure was reported as it happened; list them again where a
        # long batch's output may have scrolled them away.
        for result in results:
            if result.status == "failed":
                click.echo(one_line(f"downpool: failed: {result.source}: {result.message}"),
                           err=True)
    if stopped is not None:
        return interrupts.exit_status(stopped)
    return EXIT_FAILED if count["failed"] else 0


# --- the command ---------------------------------------------------------------------


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """``WxH`` -> (height, width)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise click.BadParameter(f"expected WIDTHxHEIGHT of positive integers, e.g. 640x480; "
                                 f"got {value!r}")
    return int(match[2]), int(match[1])


def _check_template(template: str | None) -> None:
    if template is None:
        return
    fields_text = ", ".join(f"{{{f}}}" for f in NAME_FIELDS)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:  # an unmatched brace
        raise click.BadParameter(f"{template!r} is not a name template ({exc}); the fields are "
                                 f"{fields_text}, and a literal brace is {{{{ or }}}}",
                                 param_hint="--name") from None
    # A field name is what comes before "." "[" "!" or ":" ({stem.upper}, {ext:>5}).
    unknown = [f for f in fields if re.split(r"[.\[!:]", f, maxsplit=1)[0] not in NAME_FIELDS]
    if unknown:
        raise click.BadParameter(f"unknown field {{{unknown[0]}}}; the fields are {fields_text}",
                                 param_hint="--name")
    try:
        template.format(stem="x", method="m", ext=".png")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise click.BadParameter(f"{template!r} cannot be filled in ({exc})", param_hint="--name") from None
    if "/" in template or os.sep in template:
        raise click.BadParameter("a name, not a path: use -o for another folder",
                                 param_hint="--name")


@click.command("shrink", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", "out", metavar="OUT",
              help="Output file (for one input file) or folder (mirrors the inputs' tree). "
                   "Default: beside each input, named by --name.")
@click.option("-r", "--recursive", is_flag=True, help="Descend into subfolders of folder inputs.")
@click.option("--name", "name", metavar="TEMPLATE",
              help=f"Output file name; fields {{stem}}, {{method}}, {{ext}}. "
                   f"[default: {DEFAULT_NAME} beside the input, {DEFAULT_NAME_IN_FOLDER} in an -o folder]")
@click.option("-m", "--method", type=method_choice(), default="softpool", show_default=True,
              help="Pooling method (see `downpool methods`).")
@click.option("-k", "--kernel-size", "kernel_size", type=click.IntRange(min=1),
              help="Pool KxK windows: the output is ceil(size / K).  [default: 2 when no size is given]")
@click.option("--stride", type=click.IntRange(min=1), help="Step between windows, with -k. [default: K]")
@click.option("--scale", type=click.FloatRange(0, 1, min_open=True),
              help="Scale factor in (0, 1]: output = round(size x F).")
@click.option("--size", "size", metavar="WxH", callback=_parse_size,
              help="Output width x height, e.g. 640x480.")
@click.option("--width", type=click.IntRange(min=1), help="Output width; alone, keeps the aspect ratio.")
@click.option("--height", type=click.IntRange(min=1), help="Output height; alone, keeps the aspect ratio.")
@method_param_options
@click.option("--time-kernel", "time_kernel", type=click.IntRange(min=1), default=1,
              show_default=True,
              help="Pool T frames of an animation, TIFF pages or video into one (3-D windows); "
                   "each output frame lasts as long as its inputs together.")
@click.option("--time-stride", "time_stride", type=click.IntRange(min=1),
              help="Step between the frames pooled into one, with --time-kernel. [default: T]")
@click.option("--frames", "frames", type=click.Choice(["all", "first"]), default="all",
              show_default=True,
              help="Keep every frame of animated GIF, WebP and PNG, TIFF pages and videos, or "
                   "the first frame alone as a still image.")
@click.option("--linear", is_flag=True, help="Pool in linear light (decode sRGB, pool, encode).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to compute.")
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg", "webp", "tiff", "gif", "avif",
                                                  "heic"],
                                                 case_sensitive=False),
              help="Output format.  [default: the -o file's extension, else the input's]")
@click.option("--quality", type=click.IntRange(1, 100),
              help="JPEG, WebP, AVIF and HEIC quality. [default: 90]")
@click.option("--to-srgb", is_flag=True,
              help="Convert from the embedded ICC profile to sRGB before pooling, and tag the "
                   "output sRGB (as vipsthumbnail --export-profile srgb).  [default: keep the "
                   "profile]")
@click.option("--fast-load", is_flag=True,
              help="Decode JPEG and WebP at 1/2, 1/4 or 1/8 of their size where at least 2x "
                   "is left to pool (as vipsthumbnail does): faster, but a box filter comes "
                   "before the method.  [default: decode at full size]")
@click.option("--strip", is_flag=True,
              help="Write no metadata (ICC profile, EXIF, XMP, IPTC, resolution, PNG text and gamma).")
@click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images with more pixels than this (0: no limit).")
@click.option("--max-memory", "max_memory", metavar="SIZE|auto", default="auto", show_default=True,
              help="Refuse images that would need more memory than this to decode and pool "
                   "(e.g. 4G, 500M; 0: no limit).  auto: the memory the system has left at the "
                   "start, shared between the -j workers.")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose output exists.")
@click.option("--overwrite", is_flag=True,
              help="Replace existing outputs (never an input file).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Files at a time  [default: the number of CPUs]: threads of this process, "
                   "or worker processes with --processes.")
@click.option("--processes", is_flag=True,
              help="Run the -j files in worker processes (each with its own Numba and one "
                   "kernel thread) instead of threads.")
@click.option("--scheduler", metavar="ADDRESS|local[:N]",
              help="Run the batch on a Dask cluster (pip install \"downpool[dask]\"): the "
                   "scheduler at ADDRESS (tcp://host:8786), or a new local one of N worker "
                   "processes.  Every worker must see the input and output paths (a shared "
                   "file system); -j and --processes do not apply.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (the summary still prints).")
def shrink(inputs: tuple[str, ...], out: str | None, recursive: bool, name: str | None,
           method: str, kernel_size: int | None, stride: int | None, scale: float | None,
           size: tuple[int, int] | None, width: int | None, height: int | None,
           time_kernel: int, time_stride: int | None, frames: str, linear: bool,
           device: str, fmt: str | None, quality: int | None, to_srgb: bool, fast_load: bool,
           strip: bool, max_pixels: int,
           max_memory: str, skip_existing: bool, overwrite: bool, jobs: int | None,
           processes: bool, scheduler: str | None, quiet: bool, **kwargs: Any) -> None:
    """Downscale image files and folders.

    \b
    INPUT is a file or folder (-r descends into subfolders).  Without -o,
    each output goes beside its input, named {stem}_{method}{ext}.  An
    existing output is kept unless --overwrite; an input is never replaced.
    A FIFO or device output (/dev/null) is written into; a link, through.
    Exit status: 0 all done, 1 some file failed, 2 usage error, 128 + the
    signal when stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).

    \b
    downpool shrink photo.jpg --method dpid --width 800
    downpool shrink photos/ -r -o small/ -k 4 -j 2 --skip-existing
    """
    spec, params = command_params(method, kwargs)

    geometries = [flag for flag, used in (
        ("-k/--stride", kernel_size is not None or stride is not None), ("--scale", scale is not None),
        ("--size", size is not None), ("--width/--height", width is not None or height is not None),
    ) if used]
    if len(geometries) > 1:
        raise click.UsageError(f"give one of -k, --scale, --size, --width/--height "
                               f"(got {' and '.join(geometries)})")
    if stride is not None and kernel_size is None:
        raise click.UsageError("--stride goes with -k")
    if stride is not None and spec.area_only:
        raise click.UsageError(f"--stride is not accepted by {method} (it always uses area geometry)")
    if spec.labels and (linear or to_srgb):
        raise click.UsageError(f"{'--linear' if linear else '--to-srgb'} does not apply to "
                               f"{method}: it pools labels, whose values must stay as they are")
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing contradict each other")
    if frames == "first" and (time_kernel > 1 or time_stride is not None):
        raise click.UsageError("--frames first keeps one frame: --time-kernel and --time-stride "
                               "do not apply")
    _check_template(name)
    memory_limit_option(max_memory)  # a bad --max-memory is a usage error before any planning
    if device == "cuda":
        _check_device(device)

    # Without --format, each file's format follows its output's extension
    # (so `-o small.webp` writes WebP), else the input's own format.
    output_format = {"HEIC": "HEIF"}.get(fmt.upper(), fmt.upper()) if fmt else None
    tasks, refused, warnings = plan_tasks(list(inputs), out, recursive, name, method, output_format)
    for warning in warnings:
        _say(f"downpool: warning: {warning}", None)
    # The memory is shared by the files that can be in flight at once.
    jobs = max(1, min(_usable_cpus() if jobs is None else jobs, len(tasks)))
    # Each worker process holds its own Python, NumPy and Numba besides its image;
    # threads share the one process's.
    memory_limit, memory_is_auto = memory_limit_option(
        max_memory, jobs, jobs if processes and jobs > 1 else 1)
    if scheduler is not None:
        _check_cluster(scheduler, processes)
        local = re.fullmatch(r"local(?::(\d+))?", scheduler)
        if local is None and memory_is_auto:
            memory_limit = None  # this machine's memory says nothing of the workers'
        elif local is not None:
            jobs = max(1, int(local[1]) if local[1] else _usable_cpus())
            memory_limit, memory_is_auto = memory_limit_option(max_memory, jobs, jobs)
    settings = Settings(
        method=method, params=params, kernel_size=kernel_size, stride=stride, scale=scale,
        size=size, width=width, height=height, device=device, linear=linear, to_srgb=to_srgb,
        format=output_format, quality=quality, strip=strip, max_pixels=max_pixels or None,
        overwrite=overwrite, skip_existing=skip_existing, max_memory=memory_limit,
        memory_is_auto=memory_is_auto, jobs=jobs, processes=processes, fast_load=fast_load,
        scheduler=scheduler, frames=frames, time_kernel=time_kernel, time_stride=time_stride,
    )
    sys.exit(run_batch(tasks, refused, settings, jobs, quiet))


def _check_cluster(scheduler: str, processes: bool) -> None:
    """Usage errors of --scheduler, and the missing extra, before any file."""
    if processes:
        raise click.UsageError("--scheduler and --processes contradict each other")
    if re.fullmatch(r"local(:[1-9]\d*)?", scheduler) is None and "://" not in scheduler:
        raise click.BadParameter(f"expected tcp://HOST:PORT or local[:N], got {scheduler!r}",
                                 param_hint="--scheduler")
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        click.echo('downpool: error: --scheduler needs Dask\'s distributed: '
                   'pip install "downpool[dask]"', err=True)
        sys.exit(EXIT_FAILED)
    if "://" in scheduler:
        from distributed.comm import parse_address, parse_host_port
        from distributed.comm.registry import backends

        try:
            scheme, location = parse_address(scheduler)
            host, _ = parse_host_port(location)
            if scheme not in backends:
                raise ValueError(f"unknown protocol {scheme!r} (known: {', '.join(backends)})")
            if not host:
                raise ValueError("no host")
        except ValueError as exc:
            raise click.BadParameter(f"{scheduler!r} is not a scheduler address such as "
                                     f"tcp://HOST:PORT: {exc}", param_hint="--scheduler") from None


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _check_device(device: str) -> None:
    """Fail once, before the batch, where the device cannot be used at all."""
    import numpy as np

    from .api import DeviceUnavailableError, downscale

    try:
        downscale(np.zeros((1, 1), np.uint8), "avg", kernel_size=1, device=device)
    except DeviceUnavailableError as exc:
        click.echo(f"downpool: error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
