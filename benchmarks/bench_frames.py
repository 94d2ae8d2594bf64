"""Frames and time (issue 18): animated GIF and video through ``downpool shrink``, next to
a Pillow loop and to FFmpeg's own filters through PyAV, in one run.

1. A 100-frame 640x480 animated GIF halved: ``downpool shrink -k 2`` (avg, the
   2x2 box of Pillow's ``reduce(2)``, and softpool, the default) next to a
   Pillow script (``ImageSequence``, ``reduce(2)``, ``save_all`` with the
   durations and loop).  Each a fresh process, as a user runs them.
2. In one process, the library on the same 100 frames: ``downscale_frames``
   with ``time_kernel`` 1 and 2, next to ``downscale`` of one frame of the same
   total pixel count (100*480 x 640), and for ``time_kernel=2`` next to
   ``downscale`` with the same number of pixels per window (a 4x2 kernel).
3. A 10-second 720p clip (30 fps, H.264 CRF 18, AAC) at ``--time-kernel 2 -k 2``
   next to a PyAV script that runs FFmpeg's filter graph
   ``scale=iw/2:ih/2:flags=area`` (space only), and one with
   ``tmix=frames=2,framestep=2,scale=iw/2:ih/2:flags=area`` (the same 2x2x2
   average as ``-m avg --time-kernel 2``), both encoding H.264 at CRF 18
   (downpool's default ``--quality 90``) and copying the audio.

Wall time of a process includes its start-up; the median of ``--repeat`` runs,
and the largest peak resident memory, as ``bench_cli.py`` measures them.

Usage::

    python benchmarks/bench_frames.py --repeat 3
    python benchmarks/bench_frames.py --quick      # small inputs: a smoke test

The inputs are made under ``benchmarks/out/frames/`` (git-ignored) on the first run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_cli import downpool_command, measure  # noqa: E402

PILLOW_GIF = """
import sys
from PIL import Image, ImageSequence
with Image.open(sys.argv[1]) as im:
    loop = im.info.get("loop")
    frames, durations = [], []
    for frame in ImageSequence.Iterator(im):
        durations.append(frame.info.get("duration", 0))
        frames.append(frame.convert("RGB").reduce(2))
options = {} if loop is None else {"loop": loop}
frames[0].save(sys.argv[2], save_all=True, append_images=frames[1:], duration=durations, **options)
"""

PYAV_FILTER = """
import sys
import av
source, target, chain = sys.argv[1], sys.argv[2], sys.argv[3]
reader = av.open(source)
video = reader.streams.video[0]
video.thread_type = "AUTO"
audio = reader.streams.audio[0] if reader.streams.audio else None
writer = av.open(target, "w")
graph = av.filter.Graph()
steps = [graph.add_buffer(template=video)]
for step in chain.split(","):
    name, _, options = step.partition("=")
    steps.append(graph.add(name, options or None))
steps.append(graph.add("buffersink"))
for a, b in zip(steps, steps[1:]):
    a.link_to(b)
graph.configure()
rate = video.average_rate / (2 if "framestep" in chain else 1)
out = writer.add_stream("libx264", rate=rate)
out.width, out.height, out.pix_fmt = video.width // 2, video.height // 2, "yuv420p"
out.options = {"crf": "18"}
copied = writer.add_stream_from_template(audio) if audio is not None else None
count = 0
def drain():
    global count
    while True:
        try:
            frame = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        frame.pts = count
        frame.time_base = 1 / rate
        count += 1
        writer.mux(out.encode(frame))
for packet in reader.demux(*[s for s in (video, audio) if s is not None]):
    if packet.stream is video:
        for frame in packet.decode():
            graph.push(frame)
            drain()
    elif packet.dts is not None:
        packet.stream = copied
        writer.mux(packet)
graph.push(None)
drain()
writer.mux(out.encode())
writer.close()
"""


def make_gif(path: Path, frames: int, width: int, height: int) -> None:
    """An animated GIF of moving, textured gradients (a palette per frame), 40 ms a frame."""
    if path.exists():
        return
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for t in range(frames):
        channels = [110 + 80 * np.sin(x / 40 + t / 8 + c) + 30 * np.cos(y / 25 - t / 5)
                    for c in range(3)]
        pixels = np.stack(channels, -1) + rng.normal(0, 8, (height, width, 3))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).quantize(256))
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)


def make_clip(path: Path, seconds: int, width: int, height: int, fps: int = 30) -> None:
    """An H.264 (CRF 18) clip of moving gradients with noise, and 48 kHz AAC audio."""
    if path.exists():
        return
    import av

    rng = np.random.default_rng(1)
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"crf": "18"}
    audio = out.add_stream("aac", rate=48000)
    audio.layout = "stereo"
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for t in range(seconds * fps):
        channels = [110 + 80 * np.sin(x / 60 + t / 10 + c) + 30 * np.cos(y / 35 - t / 7)
                    for c in range(3)]
        pixels = np.clip(np.stack(channels, -1) + rng.normal(0, 4, (height, width, 3)), 0, 255)
        frame = av.VideoFrame.from_ndarray(pixels.astype(np.uint8), format="rgb24")
        frame.pts, frame.time_base = t, Fraction(1, fps)
        out.mux(video.encode(frame))
    out.mux(video.encode())
    samples = np.arange(seconds * 48000) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 330 * samples)).astype(np.float32)
    sound = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
    sound.sample_rate, sound.pts = 48000, 0
    out.mux(audio.encode(sound))
    out.mux(audio.encode())
    out.close()


def median_seconds(call, repeat: int) -> float:
    call()  # compiled, in the caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def library_rows(gif: Path, repeat: int) -> list[str]:
    import downpool

    with Image.open(gif) as im:
        frames = np.stack([np.asarray(im.convert("RGB")) for _ in iter_frames(im)])
    t, h, w, c = frames.shape
    one_frame = frames.reshape(t * h, w, c)
    rows = []
    for method in ("avg", "max", "softpool", "dpid"):
        flat = median_seconds(lambda: downpool.downscale(one_frame, method, kernel_size=2), repeat)
        k1 = median_seconds(lambda: downpool.downscale_frames(frames, method, kernel_size=2),
                            repeat)
        k2 = median_seconds(lambda: downpool.downscale_frames(frames, method, time_kernel=2,
                                                              kernel_size=2), repeat)
        geometry = {"size": (t * h // 4, w // 2)} if method == "dpid" else {"kernel_size": (4, 2)}
        window = median_seconds(lambda: downpool.downscale(one_frame, method, **geometry), repeat)
        rows.append(f"| {method} | {flat * 1e3:.1f} | {k1 * 1e3:.1f} ({k1 / flat:.2f}x) | "
                    f"{window * 1e3:.1f} | {k2 * 1e3:.1f} ({k2 / flat:.2f}x; {k2 / window:.2f}x) |")
    return rows


def iter_frames(im):
    for index in range(im.n_frames):
        im.seek(index)
        yield index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke test")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "frames")
    args = parser.parse_args()
    work = args.workdir / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    results = work / "results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    n_frames, gif_size = (10, (160, 120)) if args.quick else (100, (640, 480))
    seconds, clip_size = (1, (320, 180)) if args.quick else (10, (1280, 720))
    gif = work / "anim.gif"
    clip = work / "clip.mp4"
    make_gif(gif, n_frames, *gif_size)
    make_clip(clip, seconds, *clip_size)
    downpool = downpool_command()
    common = ["--overwrite", "-q"]
    # Numba's cache in place, the files in the page cache
    for method in ("avg", "softpool"):
        subprocess.run(downpool + ["shrink", str(gif), "-o", str(results / "warm.gif"), "-m",
                                   method, *common], check=True, capture_output=True)
    print(f"# frames benchmark: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, median of {args.repeat}")
    print()
    print(f"{n_frames}-frame {gif_size[0]}x{gif_size[1]} GIF, halved:")
    print()
    print("| job | wall (s) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    jobs = [
        ("downpool shrink -k 2 -m avg", downpool + ["shrink", str(gif), "-o",
                                                    str(results / "avg.gif"), "-k", "2", "-m",
                                                    "avg", *common]),
        ("downpool shrink -k 2 (softpool)", downpool + ["shrink", str(gif), "-o",
                                                        str(results / "soft.gif"), "-k", "2",
                                                        *common]),
        ("downpool shrink -k 2 --time-kernel 2", downpool + [
            "shrink", str(gif), "-o", str(results / "t2.gif"), "-k", "2", "--time-kernel", "2",
            *common]),
        ("Pillow loop: ImageSequence, reduce(2), save_all",
         [sys.executable, "-c", PILLOW_GIF, str(gif), str(results / "pillow.gif")]),
    ]
    for label, command in jobs:
        wall, peak = measure(command, args.repeat)
        print(f"| {label} | {wall:.2f} | {peak:.0f} |", flush=True)
    print()
    print(f"The library on the GIF's {n_frames} frames, in one process (ms; ratios to "
          f"`downscale` of one {n_frames * gif_size[1]}x{gif_size[0]} frame at k=2, and for "
          f"time_kernel=2 also to `downscale` with 8 pixels a window):")
    print()
    print("| method | downscale, one frame of all rows | downscale_frames kt=1 | "
          "downscale 4x2 windows | downscale_frames kt=2 |")
    print("|---|---:|---:|---:|---:|")
    for row in library_rows(gif, max(args.repeat, 5)):
        print(row, flush=True)
    print()
    print(f"{seconds}-second {clip_size[0]}x{clip_size[1]} 30 fps H.264 clip with AAC audio, "
          f"halved in space (and time):")
    print()
    print("| job | wall (s) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    jobs = [
        ("downpool shrink --time-kernel 2 -k 2 -m avg", downpool + [
            "shrink", str(clip), "-o", str(results / "avg.mp4"), "--time-kernel", "2", "-k", "2",
            "-m", "avg", *common]),
        ("downpool shrink --time-kernel 2 -k 2 (softpool)", downpool + [
            "shrink", str(clip), "-o", str(results / "soft.mp4"), "--time-kernel", "2", "-k",
            "2", *common]),
        ("downpool shrink -k 2 -m avg (space only)", downpool + [
            "shrink", str(clip), "-o", str(results / "space.mp4"), "-k", "2", "-m", "avg",
            *common]),
        ("PyAV filter graph: scale=iw/2:ih/2:flags=area (space only)",
         [sys.executable, "-c", PYAV_FILTER, str(clip), str(results / "ffmpeg.mp4"),
          "scale=iw/2:ih/2:flags=area"]),
        ("PyAV filter graph: tmix=frames=2,framestep=2,scale=...:flags=area",
         [sys.executable, "-c", PYAV_FILTER, str(clip), str(results / "ffmpeg_t.mp4"),
          "tmix=frames=2,framestep=2,scale=iw/2:ih/2:flags=area"]),
    ]
    for label, command in jobs:
        wall, peak = measure(command, args.repeat)
        print(f"| {label} | {wall:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
