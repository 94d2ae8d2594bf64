"""``downpool shrink`` on files of frames: animated GIF, WebP and APNG, multi-page TIFF.
Every frame kept with its duration and the loop count, frames coalesced, pooled in time
with --time-kernel; the files are made by Pillow and read back with it."""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import downpool  # noqa: E402
from cli_helpers import no_traceback, run_downpool, temp_files  # noqa: E402


def palette_frames(n: int, shape=(24, 32), seed: int = 0) -> list[np.ndarray]:
    """RGB frames of at most 64 colours (a GIF holds them exactly), each a change of
    a part of the one before, so that Pillow stores frames after the first as deltas."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (64, 3), dtype=np.uint8)
    frame = colours[rng.integers(0, 64, shape)]
    frames = [frame]
    for _ in range(1, n):
        frame = frame.copy()
        y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 6)
        frame[y:y + 6, x:x + 6] = colours[rng.integers(0, 64, (6, 6))]
        frames.append(frame)
    return frames


def save_animation(path, frames, durations, **options):
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, **options)
    return path


def read_animation(path):
    """(frames as arrays, durations in ms, info of the first frame) as Pillow reads them."""
    with Image.open(path) as im:
        info = dict(im.info)
        frames, durations = [], []
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            im.load()
            frames.append(np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "P") and
                                                "transparency" in im.info else im.mode)))
            durations.append(im.info.get("duration"))
        return frames, durations, info, im.format


def test_gif_keeps_every_frame_its_duration_and_the_loop(tmp_path):
    """10 frames in, 10 out (was: 1 frame, exit 0), each halved; durations and loop kept.
    The frames after the first are stored as deltas: each output frame is the pooled
    whole picture."""
    frames = palette_frames(10)
    durations = [40, 50, 60, 70, 80, 90, 100, 110, 120, 130]
    source = save_animation(tmp_path / "a.gif", frames, durations, loop=0)
    result = run_downpool("shrink", source, "-o", tmp_path / "out.gif", "-m", "max", "-k", "2")
    assert result.returncode == 0, result.stderr
    got, got_durations, info, fmt = read_animation(tmp_path / "out.gif")
    assert fmt == "GIF" and len(got) == 10 and got_durations == durations
    assert info.get("loop") == 0
    assert got[0].shape[:2] == (12, 16)
    # APNG is lossless: there the frames are exactly downscale of the whole pictures.
    result = run_downpool("shrink", source, "-o", tmp_path / "out.png", "-m", "max", "-k", "2")
    assert result.returncode == 0, result.stderr
    got, got_durations, info, fmt = read_animation(tmp_path / "out.png")
    assert fmt == "PNG" and got_durations == durations
    for frame, out in zip(frames, got):
        np.testing.assert_array_equal(out, downpool.downscale(frame, "max", kernel_size=2))


def test_gif_without_a_loop_extension_still_plays_once(tmp_path):
    source = save_animation(tmp_path / "once.gif", palette_frames(3), [100, 100, 100])
    assert "loop" not in Image.open(source).info
    for out in ("once_out.gif", "once_out.webp", "once_out.png"):
        result = run_downpool("shrink", source, "-o", tmp_path / out)
        assert result.returncode == 0, result.stderr
        info = read_animation(tmp_path / out)[2]
        assert info.get("loop") == (None if out.endswith(".gif") else 1), out


def test_apng_time_kernel_pools_frames_and_sums_their_durations(tmp_path):
    """--time-kernel 2 on 5 RGBA frames: 3 frames (the last one alone), each
    ``downscale_frames`` of its window, lasting its inputs' durations together."""
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (20, 18, 4), dtype=np.uint8) for _ in range(5)]
    source = save_animation(tmp_path / "a.png", frames, [10, 20, 30, 40, 50], loop=3)
    result = run_downpool("shrink", source, "-o", tmp_path / "out.png", "--time-kernel", "2",
                          "-m", "softpool", "-k", "2")
    assert result.returncode == 0, result.stderr
    got, durations, info, _ = read_animation(tmp_path / "out.png")
    assert durations == [30, 70, 50] and info["loop"] == 3
    expected = downpool.downscale_frames(np.stack(frames), "softpool", time_kernel=2,
                                         kernel_size=2, has_alpha=True)
    np.testing.assert_array_equal(np.stack(got), expected)
    # a stride: windows of 3 frames every 2, overlapping; durations summed per window
    result = run_downpool("shrink", source, "-o", tmp_path / "strided.png", "--time-kernel", "3",
                          "--time-stride", "2", "-m", "max")
    assert result.returncode == 0, result.stderr
    got, durations, _, _ = read_animation(tmp_path / "strided.png")
    assert durations == [60, 120]
    np.testing.assert_array_equal(np.stack(got), downpool.downscale_frames(
        np.stack(frames), "max", time_kernel=3, time_stride=2, has_alpha=True))


def test_animated_webp_keeps_frames_durations_and_loop(tmp_path):
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(4)]
    source = save_animation(tmp_path / "a.webp", frames, [100, 200, 300, 400], loop=2,
                            lossless=True)
    result = run_downpool("shrink", source, "-o", tmp_path / "out.webp", "-k", "2",
                          "--time-kernel", "2")
    assert result.returncode == 0, result.stderr
    got, durations, info, fmt = read_animation(tmp_path / "out.webp")
    assert fmt == "WEBP" and len(got) == 2 and durations == [300, 700] and info["loop"] == 2
    assert got[0].shape[:2] == (8, 10)


def test_gif_with_transparency_stays_transparent(tmp_path):
    frames = []
    for i in range(3):
        frame = np.zeros((16, 16, 4), np.uint8)
        frame[..., 0] = 200
        frame[..., 3] = 255
        frame[:8, : 4 + 4 * i, 3] = 0  # a transparent corner that grows
        frames.append(frame)
    source = save_animation(tmp_path / "t.gif", frames, [100] * 3, loop=0, disposal=2)
    result = run_downpool("shrink", source, "-o", tmp_path / "t_out.gif", "-m", "max")
    assert result.returncode == 0, result.stderr
    got, _, _, _ = read_animation(tmp_path / "t_out.gif")
    assert len(got) == 3
    for i, frame in enumerate(got):
        alpha = frame[..., 3]
        assert (alpha[:4, : 2 + 2 * i] == 0).all() and (alpha[4:] == 255).all(), i


def test_multi_page_tiff_keeps_every_page(tmp_path):
    """Pages of different sizes and kinds each pooled alone; in time only pages of one kind."""
    rng = np.random.default_rng(6)
    pages = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
             rng.integers(0, 65536, (10, 12), dtype=np.uint16),
             rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)]
    images = [Image.fromarray(p) for p in pages]
    source = tmp_path / "pages.tif"
    images[0].save(source, save_all=True, append_images=images[1:], compression="tiff_lzw")
    result = run_downpool("shrink", source, "-o", tmp_path / "out.tif", "-m", "avg")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.tif") as out:
        assert out.n_frames == 3
        for i, page in enumerate(pages):
            out.seek(i)
            np.testing.assert_array_equal(np.asarray(out), downpool.downscale(page, "avg"))
            assert out.info["compression"] == "tiff_lzw"
    result = run_downpool("shrink", source, "-o", tmp_path / "t.tif", "--time-kernel", "2")
    assert result.returncode == 1
    no_traceback(result)
    assert ("page 2 is 12x10 gray 16-bit and page 1 24x20 RGB 8-bit: pooling pages in time"
            in result.stderr)
    assert not (tmp_path / "t.tif").exists() and temp_files(tmp_path) == []


def test_frames_first_and_time_kernel_on_a_still_image(tmp_path):
    source = save_animation(tmp_path / "a.gif", palette_frames(4), [100] * 4, loop=0)
    result = run_downpool("shrink", source, "-o", tmp_path / "first.png", "--frames", "first")
    assert result.returncode == 0, result.stderr
    assert getattr(Image.open(tmp_path / "first.png"), "n_frames", 1) == 1
    still = tmp_path / "still.png"
    Image.fromarray(palette_frames(1)[0]).save(still)
    result = run_downpool("shrink", still, "-o", tmp_path / "still_out.png", "--time-kernel", "3")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "pooled in space only" in result.stderr
    result = run_downpool("shrink", source, "--frames", "first", "--time-kernel", "2")
    assert result.returncode == 2 and "--frames first keeps one frame" in result.stderr


def test_bad_frame_files_are_one_line_errors_and_the_batch_goes_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = save_animation(folder / "good.gif", palette_frames(3), [100] * 3, loop=0)
    data = good.read_bytes()
    (folder / "truncated.gif").write_bytes(data[: len(data) * 2 // 3])
    result = run_downpool("shrink", folder, "-o", tmp_path / "out")
    no_traceback(result)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("downpool: error:")]
    assert len(errors) == 1 and "truncated.gif" in errors[0], result.stderr
    assert (tmp_path / "out" / "good.gif").exists()
    assert not (tmp_path / "out" / "truncated.gif").exists()
    assert temp_files(tmp_path) == []
    result = run_downpool("shrink", good, "-o", tmp_path / "a.jpg")
    assert result.returncode == 1
    assert "JPEG holds one frame, and this file has 3" in result.stderr
    assert not (tmp_path / "a.jpg").exists()


def test_compare_says_it_compares_the_first_frame_of_an_animation(tmp_path):
    source = save_animation(tmp_path / "a.gif", palette_frames(3, (32, 32)), [100] * 3, loop=0)
    result = run_downpool("compare", source, "--methods", "avg,max", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert f"downpool: note: {source} has 3 frames: compared on the first alone" in result.stderr
    assert len(result.stdout.strip().splitlines()) == 5  # header, 2 methods, 2 Pillow baselines
