"""Video files through PyAV (FFmpeg): decoded a frame at a time, encoded as frames come.

:func:`rewrite_video` reads a video's frames in order, hands each to the
caller's pooling (which gives back the output frames it has finished), encodes
those, and copies the audio packets as they are.  Only the file I/O is here:
pooling in time and space is :mod:`downpool.frames`.  PyAV is the extra
``pip install "downpool[video]"``.
"""

from __future__ import annotations

import os
import queue
import threading
from fractions import Fraction
from typing import IO, Any, Callable, Iterable, Iterator

from .files import put_file
from .io import _DEFAULT_QUALITY

__all__ = ["VIDEO_EXTENSIONS", "VideoUnavailableError", "is_video", "crf_for_quality",
           "rewrite_video", "probe_video"]

#: Video files, by extension, and the FFmpeg muxer that writes each.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
VIDEO_EXTENSIONS = frozenset(CONTAINERS)

#: 1/118 of a quantiser step: FFmpeg's FF_QP2LAMBDA.
QP2LAMBDA = 118
#: The FFmpeg encoder for a decoded stream's codec, where the wheel has one.
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "vp8": "libvpx",
            "av1": "libsvtav1", "mpeg4": "mpeg4"}
#: The encoders whose rate control takes a CRF, and its largest value.
CRF_RANGES = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63, "libvpx": 63, "libsvtav1": 63}
#: What WebM holds; other codecs are encoded as VP9 there.
WEBM_CODECS = {"vp8", "vp9", "av1"}
WEBM_AUDIO = {"opus", "vorbis"}
#: The encoder used where the input's cannot be written.
FALLBACK_ENCODER = "libx264"


class VideoUnavailableError(RuntimeError):
    """PyAV, the ``video`` extra, is not installed."""


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path``'s extension is a video container's."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoUnavailableError(
            'video files need PyAV: pip install "downpool[video]"') from None
    return av


def probe_video(source: str | os.PathLike) -> dict[str, Any]:
    """What a video's header says of its first video stream, before a frame is decoded.

    Returns ``width``, ``height`` (of its frames, as decoded), ``frames`` (as the
    header counts them; 0 where it does not), ``codec`` (FFmpeg's decoder name)
    and ``bits`` (per sample: 8, 10, 12 ...).

    Raises
    ------
    VideoUnavailableError
        Without PyAV.
    OSError
        A file FFmpeg cannot read, one without a video stream, or one whose
        codec this build of FFmpeg cannot decode (an unknown codec tag).
    """
    av = _av()
    try:
        reader = av.open(os.fspath(source))
    except av.error.FFmpegError as exc:
        raise OSError(f"cannot read the video: {_words(exc)}") from None
    with reader:
        video = _first_video_stream(reader)
        context = video.codec_context
        pixel_format = context.format
        bits = 8
        if pixel_format is not None and pixel_format.components:
            bits = max(c.bits for c in pixel_format.components)
        return {"width": context.width, "height": context.height, "frames": video.frames or 0,
                "codec": context.name, "bits": bits}


def _first_video_stream(reader: Any) -> Any:
    """The container's first video stream, one FFmpeg can decode (else an ``OSError``)."""
    if not reader.streams.video:
        raise OSError("no video stream in the file")
    video = reader.streams.video[0]
    if video.codec_context is None:  # a codec tag this FFmpeg does not know
        raise OSError("the video stream's codec is not one that FFmpeg (in PyAV) can "
                      "decode: an unknown or damaged codec tag")
    return video


def crf_for_quality(quality: int, crf_max: int) -> int:
    """The CRF for ``--quality`` 1-100: 90 (the default) is x264's 18, visually lossless
    for most footage; each step down adds 1/3 of a CRF step, scaled to the encoder's range
    (0-51 for x264 and x265, 0-63 for VP8, VP9 and AV1)."""
    crf51 = 18 + (90 - quality) / 3
    return int(min(crf_max, max(0, round(crf51 * crf_max / 51))))


def rewrite_video(
    source: str | os.PathLike,
    target: str | os.PathLike,
    pooler_for: Callable[[tuple[int, int, int]], Any],
    time_stride: int = 1,
    quality: int | None = None,
    replace: bool = True,
    before_rename: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Decode ``source`` frame by frame, pool, encode into ``target`` (atomically).

    Parameters
    ----------
    source, target : path
        Video files (MP4, MOV, MKV, WebM); the target's container follows its
        extension.
    pooler_for : callable
        Takes the frames' shape (H, W, 3) and returns what pools them: a
        :class:`downpool.FrameDownscaler`, whose ``feed`` gets each decoded
        frame (uint8 RGB) in order, ``close`` is called after the last, and
        ``out_shape`` is the output frames' shape.
    time_stride : int
        The frame rate is divided by it.
    quality : int, optional
        1-100 (default 90), the CRF of :func:`crf_for_quality`.
    replace, before_rename
        As for :func:`downpool.io.write_image`.

    Returns
    -------
    dict
        ``frames_in``, ``frames_out``, ``codec`` (the encoder) and ``audio``
        (the copied audio codec, or None).

    Raises
    ------
    VideoUnavailableError
        Without PyAV.
    OSError
        A file FFmpeg cannot read, one with no video stream or no frame, one
        that ends before the frames its header counts, or an audio codec the
        target's container cannot hold.
    """
    av = _av()
    source, target = os.fspath(source), os.fspath(target)
    container_format = CONTAINERS.get(os.path.splitext(target)[1].lower())
    if container_format is None:
        raise OSError(f"cannot write video to {target}: use one of "
                      f"{', '.join(sorted(VIDEO_EXTENSIONS))}")
    try:
        reader = av.open(source)
    except av.error.FFmpegError as exc:
        raise OSError(f"cannot read the video: {_words(exc)}") from None
    stats: dict[str, Any] = {}
    try:
        video = _first_video_stream(reader)
        video.thread_type = "AUTO"
        audio = reader.streams.audio[0] if reader.streams.audio else None
        if audio is not None and container_format == "webm" and audio.codec_context.name not in WEBM_AUDIO:
            raise OSError(f"{audio.codec_context.name} audio cannot be copied into WebM "
                          f"(Opus or Vorbis only): write .mp4, .mkv or .mov")
        rate = Fraction(video.average_rate or video.guessed_rate or 25) / time_stride

        def write(out: IO[bytes]) -> None:
            writer = av.open(out, mode="w", format=container_format)
            try:
                stats.update(_transcode(av, reader, video, audio, writer, pooler_for, rate,
                                        container_format, quality))
            finally:
                writer.close()
            if before_rename is not None:
                before_rename()

        put_file(target, write, replace=replace)
    finally:
        reader.close()
    return stats


def _transcode(av: Any, reader: Any, video: Any, audio: Any, writer: Any,
               pooler_for: Callable, rate: Fraction, container_format: str,
               quality: int | None) -> dict[str, Any]:
    import numpy as np

    codec = video.codec_context.name
    encoder = ENCODERS.get(codec) if _can_encode(av, ENCODERS.get(codec)) else None
    if container_format == "webm" and codec not in WEBM_CODECS:
        encoder = "libvpx-vp9"
    encoder = encoder or FALLBACK_ENCODER
    pooler = pooler_for((video.codec_context.height, video.codec_context.width, 3))
    # Every stream is added before the first packet is written (the header).
    stream = _video_stream(writer, encoder, rate, pooler.out_shape, quality)
    frame_time = 1 / rate
    audio_out = writer.add_stream_from_template(audio) if audio is not None else None
    frames_in = frames_out = 0

    def encode(frames: Iterable[Any]) -> None:
        nonlocal frames_out
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            # In units of 1/rate, which the encoder keeps (the muxer may give
            # the stream another time base once the header is written).
            frame.pts = frames_out
            frame.time_base = frame_time
            writer.mux(stream.encode(frame))
            frames_out += 1

    try:
        for pixels, packet in _read_ahead(_decoded(reader, video, audio), READ_AHEAD):
            if packet is None:
                frames_in += 1
                encode(pooler.feed(pixels))
            else:  # audio, copied as it is
                packet.stream = audio_out
                writer.mux(packet)
    except av.error.FFmpegError as exc:
        raise OSError(f"the video cannot be decoded past frame {frames_in}: {_words(exc)}") \
            from None
    if frames_in == 0:
        raise OSError("the video has no frame that can be decoded")
    if video.frames and frames_in < video.frames:
        raise OSError(f"truncated video: {frames_in} of the {video.frames} frames its header "
                      f"counts could be decoded")
    encode(pooler.close())
    writer.mux(stream.encode())  # flush the encoder
    return {"frames_in": frames_in, "frames_out": frames_out, "codec": encoder,
            "audio": audio.codec_context.name if audio is not None else None}


#: Frames decoded ahead of the one being pooled (on a thread of their own).
READ_AHEAD = 2


def _decoded(reader: Any, video: Any, audio: Any) -> Iterator[tuple[Any, Any]]:
    """``(RGB pixels, None)`` for each video frame and ``(None, packet)`` for each audio
    packet, in the file's order."""
    for packet in reader.demux(*[s for s in (video, audio) if s is not None]):
        if packet.stream is video:
            for frame in packet.decode():
                yield frame.to_ndarray(format="rgb24"), None
        elif packet.dts is not None:
            yield None, packet


def _read_ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, made on a thread of their own up to ``depth`` ahead of the caller:
    FFmpeg decodes and converts the next frames (without the GIL) while this one is
    pooled and encoded.  What the thread raises is raised here."""
    ahead: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            put((False, exc))

    thread = threading.Thread(target=run, name="downpool-video-decode", daemon=True)
    thread.start()
    try:
        while True:
            more, item = ahead.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()  # before the file is closed under it


def _can_encode(av: Any, name: str | None) -> bool:
    if name is None:
        return False
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - not in this build of FFmpeg
        return False
    return True


def _video_stream(writer: Any, encoder: str, rate: Fraction, shape: tuple[int, ...],
                  quality: int | None) -> Any:
    height, width = shape[:2]
    stream = writer.add_stream(encoder, rate=rate)
    stream.width, stream.height = width, height
    # 4:2:0 needs even sizes; an odd pooled size keeps full chroma instead.
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    stream.time_base = 1 / rate
    quality = _DEFAULT_QUALITY if quality is None else int(quality)
    if encoder in CRF_RANGES:
        crf = crf_for_quality(quality, CRF_RANGES[encoder])
        stream.options = {"crf": str(crf)}
        if encoder.startswith("libvpx"):
            stream.options["b:v"] = "0"  # constant quality, no bitrate cap
    else:  # mpeg4: a fixed quantiser, 2 (best) to 31
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = QP2LAMBDA * max(2, min(31, round(2 + (100 - quality) * 29 / 99)))
    return stream


def _words(exc: BaseException) -> str:
    """FFmpeg's reason, without its error number and the file's name."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    return text[:1].lower() + text[1:] if text else type(exc).__name__
