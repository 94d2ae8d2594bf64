"""``downpool shrink`` on video files (PyAV, the ``video`` extra): clips made here by PyAV,
pooled in time and space, read back with PyAV: frame count, rate, duration, pixels, audio."""

from __future__ import annotations

import os
import sys
from fractions import Fraction

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import downpool  # noqa: E402
from cli_helpers import run_downpool, save, temp_files  # noqa: E402

av = pytest.importorskip("av", reason='the video extra: pip install "downpool[video]"')


def clip_frames(n: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Smooth moving gradients (content that the encoders keep close) that flicker by 80
    levels from frame to frame, so that pooling two frames differs from either."""
    y, x = np.mgrid[0:height, 0:width]
    return [np.clip(np.stack([40 + 2 * x + 3 * t, 60 + y, 120 - x - 2 * t], -1) + 80 * (t % 2),
                    0, 255).astype(np.uint8) for t in range(n)]


def make_clip(path, frames, fps=24, codec="libx264", audio_seconds=1.0, **options):
    """A video of ``frames`` (and a 440 Hz AAC tone, where ``audio_seconds``)."""
    out = av.open(str(path), "w", options=options)
    video = out.add_stream(codec, rate=fps)
    video.height, video.width = frames[0].shape[:2]
    video.pix_fmt = "yuv420p"
    video.options = {"crf": "10"} if codec == "libx264" else {}
    audio = None
    if audio_seconds:
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "mono"
    for i, pixels in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, fps)
        out.mux(video.encode(frame))
    out.mux(video.encode())
    if audio is not None:
        t = np.arange(int(44100 * audio_seconds)) / 44100
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        sound.sample_rate, sound.pts = 44100, 0
        out.mux(audio.encode(sound))
        out.mux(audio.encode())
    out.close()
    return path


def read_clip(path):
    """(decoded RGB frames, frame times, video stream facts, audio packets' bytes)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        facts = {"codec": video.codec_context.name, "rate": video.average_rate,
                 "size": (video.height, video.width),
                 "audio": [(s.codec_context.name, s.rate) for s in container.streams.audio]}
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    audio = []
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = [bytes(p) for p in container.demux(audio=0) if p.size]
    return frames, times, facts, audio


def test_time_kernel_halves_frames_and_rate_and_copies_the_audio(tmp_path):
    frames = clip_frames(12)
    source = make_clip(tmp_path / "clip.mp4", frames)
    result = run_downpool("shrink", source, "-o", tmp_path / "out.mp4", "--time-kernel", "2",
                          "-k", "2", "-m", "avg", "--quality", "100")
    assert result.returncode == 0, result.stderr
    got, times, facts, audio = read_clip(tmp_path / "out.mp4")
    assert facts["codec"] == "h264" and facts["rate"] == 12 and facts["size"] == (24, 32)
    assert len(got) == 6
    np.testing.assert_allclose(times, np.arange(6) / 12, atol=1e-3)  # 0.5 s, as the input
    # The audio packets are the input's, byte for byte.
    decoded_in, _, facts_in, audio_in = read_clip(source)
    assert facts["audio"] == facts_in["audio"] == [("aac", 44100)]
    assert audio == audio_in and len(audio) > 10
    # The pixels: downscale_frames of the decoded input, through a lossy encoder.
    expected = downpool.downscale_frames(np.stack(decoded_in), "avg", time_kernel=2,
                                         kernel_size=2)
    error = np.abs(np.stack(got).astype(int) - expected.astype(int))
    assert error.mean() < 2.0, error.mean()
    assert temp_files(tmp_path) == []


def test_stride_divides_the_rate_and_webm_gets_vp9(tmp_path):
    source = make_clip(tmp_path / "clip.mp4", clip_frames(12), fps=24, audio_seconds=0)
    result = run_downpool("shrink", source, "-o", tmp_path / "out.webm", "--time-kernel", "3",
                          "--time-stride", "3")
    assert result.returncode == 0, result.stderr
    got, _, facts, audio = read_clip(tmp_path / "out.webm")
    assert facts["codec"] == "vp9" and facts["rate"] == 8 and len(got) == 4 and audio == []


def test_the_input_codec_is_kept_where_it_can_be_written(tmp_path):
    source = make_clip(tmp_path / "clip.mkv", clip_frames(6), fps=10, codec="mpeg4",
                       audio_seconds=0)
    result = run_downpool("shrink", source, "-o", tmp_path / "out.mkv", "-k", "2")
    assert result.returncode == 0, result.stderr
    got, _, facts, _ = read_clip(tmp_path / "out.mkv")
    assert facts["codec"] == "mpeg4" and facts["rate"] == 10 and len(got) == 6


def test_bad_videos_are_one_line_errors_and_the_batch_goes_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = make_clip(folder / "good.mp4", clip_frames(6), audio_seconds=0)
    data = good.read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])  # its index (moov) is at the end
    (folder / "empty.mp4").write_bytes(b"")
    indexed = make_clip(tmp_path / "indexed.mp4", clip_frames(24), audio_seconds=0,
                        movflags="faststart").read_bytes()  # index first: frames are counted
    (folder / "short.mp4").write_bytes(indexed[: len(indexed) * 2 // 3])
    # A video stream given no frame: FFmpeg's MP4 muxer leaves the stream out.
    silent = av.open(str(folder / "no_frames.mp4"), "w")
    stream = silent.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    sound = silent.add_stream("aac", rate=44100)
    sound.layout = "mono"
    samples = av.AudioFrame.from_ndarray(np.zeros((1, 4410), np.float32), format="fltp",
                                         layout="mono")
    samples.sample_rate, samples.pts = 44100, 0
    silent.mux(sound.encode(samples))
    silent.mux(sound.encode())
    silent.mux(stream.encode())
    silent.close()
    save(folder / "still.png", clip_frames(1)[0])
    result = run_downpool("shrink", folder, "-o", tmp_path / "out")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    errors = sorted(line for line in result.stderr.splitlines()
                    if line.startswith("downpool: error:"))
    assert len(errors) == 4, errors
    assert "cut.mp4: cannot read the video: invalid data found" in errors[0]
    assert "empty.mp4: cannot read the video" in errors[1]
    assert "no_frames.mp4: no video stream in the file" in errors[2]
    assert "short.mp4: truncated video: " in errors[3] and " of the 24 frames" in errors[3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mp4", "still.png"]
    assert temp_files(tmp_path) == []


def test_without_pyav_a_video_is_a_one_line_error_naming_the_extra(tmp_path):
    source = make_clip(tmp_path / "clip.mp4", clip_frames(4), audio_seconds=0)
    blocker = tmp_path / "blocker" / "av"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('PyAV is not here')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker.parent))
    import subprocess

    from cli_helpers import downpool_command

    result = subprocess.run([*downpool_command(), "shrink", str(source), "-o",
                             str(tmp_path / "out.mp4")], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert ('downpool: error: ' in result.stderr
            and 'video files need PyAV: pip install "downpool[video]"' in result.stderr)
    assert "Traceback" not in result.stderr and not (tmp_path / "out.mp4").exists()


def test_ctrl_c_while_a_video_is_encoded_leaves_nothing_behind(tmp_path):
    """Stopped between frames: exit 130, the summary, no output and no temporary file."""
    import signal
    import subprocess
    import time

    from cli_helpers import downpool_command

    source = make_clip(tmp_path / "long.mp4", clip_frames(240, 96, 128), audio_seconds=0)
    out = tmp_path / "out"
    process = subprocess.Popen([*downpool_command(), "shrink", str(source), "-o",
                                str(out / "long.mp4"), "-m", "dpid"],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not temp_files(tmp_path) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the video was done before the signal came")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert not (out / "long.mp4").exists() and temp_files(tmp_path) == []
