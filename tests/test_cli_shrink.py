"""End-to-end tests of ``downpool shrink``: the installed command, run on files made here.

Every test runs the real console script in a subprocess (each run pays about
a second for loading Numba's cached kernels), so images are tiny and several
files share one run where that stays readable.  Expected pixels come from
``downpool.downscale`` on the same array: the command must compute exactly
what the API computes.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import zlib

import numpy as np
import pytest
from PIL import Image

import downpool
from cli_helpers import (downpool_command, load, no_traceback, read_png, run_downpool, save,
                         srgb_icc_profile, summary, temp_files, write_png)
from helpers import smooth_image, textured_image


# --- help and usage -------------------------------------------------------------------


def test_help_shows_every_method_parameter_with_its_default_and_imports_no_numba():
    result = run_downpool("shrink", "--help")
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())  # undo click's line wrapping
    for text in ["--method", "-k", "--stride", "--scale", "--size", "--width", "--height",
                 "--beta", "softpool 4.4", "--p", "lp 2.0", "--lam", "dpid 1.0", "--alpha",
                 "--variant", "--mode", "--seed", "--device", "--format", "--quality", "--strip",
                 "--jobs", "--quiet", "--skip-existing", "--overwrite", "--max-pixels",
                 "--linear", "--name", "--recursive"]:
        assert text in help_text, text
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, downpool.cli_shrink; "
                               "print('numba' in sys.modules, 'PIL' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("args, message", [
    (["--method", "avg", "--beta", "2"], "--beta"),
    (["-k", "2", "--scale", "0.5"], "one of"),
    (["--size", "12by5"], "WIDTHxHEIGHT"),
    (["--scale", "1.5"], "--scale"),
    (["--stride", "2"], "--stride goes with -k"),
    (["--method", "dpid", "-k", "2", "--stride", "1"], "--stride"),
    (["--overwrite", "--skip-existing"], "contradict"),
    (["--name", "{stem}_{colour}{ext}"], "unknown field {colour}; the fields are {stem}, {method}, {ext}"),
    (["--name", "{stem"], "not a name template"),
    (["--beta", "-1"], "beta"),
    (["--format", "bmp"], "--format"),
    (["--quality", "0"], "--quality"),
    (["--method", "mode", "--linear"], "--linear does not apply to mode: it pools labels"),
    (["--method", "mode", "--to-srgb"], "--to-srgb does not apply to mode"),
])
def test_usage_errors_exit_2_and_touch_nothing(tmp_path, args, message):
    source = save(tmp_path / "a.png", textured_image((8, 8, 3)))
    result = run_downpool("shrink", source, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    no_traceback(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# --- modes, formats, bit depth -------------------------------------------------------------


def test_mode_keeps_the_labels_of_grey_16_bit_and_rgba_label_images(tmp_path):
    """A label image through --method mode: every output value is a label of the input,
    16-bit labels stay 16-bit, and an RGBA file's alpha is pooled as one more label
    channel (not premultiplied), streamed or not, as the API computes it."""
    rng = np.random.default_rng(3)
    grey = (rng.integers(0, 7, (41, 37)) * 9000).astype(np.uint16)
    rgba = np.repeat(rng.integers(0, 3, (41, 37, 1)) * 120, 4, axis=2).astype(np.uint8)
    rgba[..., 3] = np.where(rgba[..., 0] == 0, 0, 255)
    sources = [save(tmp_path / "grey.png", grey), save(tmp_path / "rgba.png", rgba, "RGBA")]
    out = tmp_path / "out"
    result = run_downpool("shrink", *sources, "-o", out, "--method", "mode", "--size", "9x8")
    assert result.returncode == 0, result.stderr
    for source, pixels in zip(sources, [grey, rgba]):
        written, im = load(out / source.name)
        assert written.dtype == pixels.dtype
        np.testing.assert_array_equal(written, downpool.downscale(pixels, "mode", size=(8, 9)))
        assert set(np.unique(written)) <= set(np.unique(pixels))


def test_modes_and_formats_are_kept_and_pixels_equal_the_api(tmp_path):
    rgb = textured_image((12, 18, 3), seed=1)
    gray = textured_image((12, 18), seed=2)
    rgba = textured_image((12, 18, 4), seed=3)
    rgba[:4, :, 3] = 0  # fully transparent rows: alpha must be pooled premultiplied
    la = textured_image((12, 18, 2), seed=4)
    folder = tmp_path / "in"
    save(folder / "rgb.png", rgb)
    save(folder / "gray.png", gray)
    save(folder / "rgba.png", rgba)
    save(folder / "la.png", la)
    save(folder / "rgb.bmp", rgb)
    save(folder / "rgb.tif", rgb)
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    smooth = smooth_image((12, 18, 3), seed=5)  # for the lossy formats
    Image.fromarray(smooth).quantize(64).save(folder / "anim.gif", save_all=True,
                                              append_images=[Image.new("P", (18, 12))])
    Image.fromarray(smooth).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    save(folder / "rgb.webp", smooth, lossless=True)

    result = run_downpool("shrink", folder, "-o", tmp_path / "out", "-q")
    assert result.returncode == 0, result.stderr
    assert summary(result).startswith("downpool: 10 done, 0 skipped, 0 failed in ")
    assert "%|" not in result.stderr  # stderr is a pipe here: no progress bar

    def expected(pixels, has_alpha=False):
        return downpool.downscale(pixels, "softpool", kernel_size=2, has_alpha=has_alpha)

    exact = {"rgb.png": (rgb, "RGB", False), "gray.png": (gray, "L", False),
             "rgba.png": (rgba, "RGBA", True), "la.png": (la, "LA", True),
             "rgb.bmp": (rgb, "RGB", False), "rgb.tif": (rgb, "RGB", False)}
    for name, (pixels, mode, has_alpha) in exact.items():
        out, image = load(tmp_path / "out" / name)
        assert image.mode == mode, name
        np.testing.assert_array_equal(out, expected(pixels, has_alpha), err_msg=name)
    assert np.all(load(tmp_path / "out" / "rgba.png")[0][:2, :, 3] == 0)

    out, image = load(tmp_path / "out" / "palette.png")
    assert image.mode == "RGBA"  # palette with transparency -> RGBA
    source = np.asarray(Image.open(folder / "palette.png").convert("RGBA"))
    np.testing.assert_array_equal(out, expected(source, True))

    # Its second frame draws nothing (test_cli_frames.py has real animations): written
    # back as GIF, where Pillow stores the two equal frames once.
    out, image = load(tmp_path / "out" / "anim.gif")
    assert image.format == "GIF" and image.size == (9, 6)
    first = np.asarray(Image.open(folder / "anim.gif").convert("RGB")).astype(int)
    assert np.abs(np.asarray(image.convert("RGB")).astype(int)
                  - expected(first.astype(np.uint8))).mean() < 8

    out, image = load(tmp_path / "out" / "cmyk.jpg")  # CMYK -> RGB, still JPEG
    assert image.mode == "RGB" and image.format == "JPEG" and out.shape == (6, 9, 3)
    source = np.asarray(Image.open(folder / "cmyk.jpg").convert("RGB"))
    assert np.abs(out.astype(int) - expected(source)).mean() < 4

    out, image = load(tmp_path / "out" / "rgb.webp")
    assert image.format == "WEBP" and out.shape == (6, 9, 3)
    assert np.abs(out.astype(int) - expected(smooth)).mean() < 4


def test_16_bit_grayscale_round_trip_keeps_16_bits(tmp_path):
    gray16 = textured_image((10, 14), dtype=np.uint16, seed=5)
    write_png(tmp_path / "g16.png", gray16)
    save(tmp_path / "g16.tif", gray16)
    result = run_downpool("shrink", tmp_path / "g16.png", tmp_path / "g16.tif", "--method", "avg")
    assert result.returncode == 0, result.stderr
    expected = downpool.downscale(gray16, "avg", kernel_size=2)
    assert np.any(expected % 257 != 0)  # values an 8-bit detour could not give back
    for name in ["g16_avg.png", "g16_avg.tif"]:
        out, image = load(tmp_path / name)
        assert image.mode == "I;16" and out.dtype == np.uint16, name
        np.testing.assert_array_equal(out, expected, err_msg=name)


def test_16_bit_colour_png_round_trip_with_orientation_and_icc(tmp_path):
    # Pillow 13 reads 16-bit colour PNG only as 8 bits per channel and cannot
    # write it: downpool has its own PNG codec for these; read_png checks it
    # independently (written with all five row filters, read back here).
    rgb16 = textured_image((10, 14, 3), dtype=np.uint16, seed=12)
    rgba16 = textured_image((10, 14, 4), dtype=np.uint16, seed=13)
    rgba16[:, :3, 3] = 0
    la16 = textured_image((10, 14, 2), dtype=np.uint16, seed=14)
    icc = srgb_icc_profile()
    exif = Image.Exif()
    exif[0x0112] = 6
    metadata = ((b"iCCP", b"sRGB\0\0" + zlib.compress(icc)), (b"eXIf", exif.tobytes()[6:]))
    write_png(tmp_path / "rgb16.png", rgb16, metadata)
    write_png(tmp_path / "rgba16.png", rgba16)
    write_png(tmp_path / "la16.png", la16)
    result = run_downpool("shrink", tmp_path / "rgb16.png", tmp_path / "rgba16.png",
                          tmp_path / "la16.png", "--method", "dpid")
    assert result.returncode == 0, result.stderr
    cases = {"rgb16": (np.rot90(rgb16, -1), False), "rgba16": (rgba16, True), "la16": (la16, True)}
    for name, (upright, has_alpha) in cases.items():
        out, chunks = read_png(tmp_path / f"{name}_dpid.png")
        expected = downpool.downscale(upright, "dpid", has_alpha=has_alpha)
        assert out.dtype == np.uint16 and np.any(expected % 257 != 0), name
        np.testing.assert_array_equal(out, expected, err_msg=name)
    _, chunks = read_png(tmp_path / "rgb16_dpid.png")
    assert zlib.decompress(chunks[b"iCCP"].split(b"\0", 1)[1][1:]) == icc
    written_exif = Image.Exif()
    written_exif.load(chunks[b"eXIf"])
    assert written_exif[0x0112] == 1

    # TIFF holds 16-bit colour too (written and read by libvips; Pillow would
    # read it as 8 bits): out as TIFF, and that TIFF shrunk again.
    result = run_downpool("shrink", tmp_path / "rgba16.png", "-o", tmp_path / "rgba16.tif",
                          "--method", "dpid")
    assert result.returncode == 0, result.stderr
    import pyvips

    rgba16_dpid = downpool.downscale(rgba16, "dpid", has_alpha=True)
    written = pyvips.Image.new_from_file(str(tmp_path / "rgba16.tif"))
    assert written.interpretation == "rgb16" and written.bands == 4
    np.testing.assert_array_equal(written.numpy(), rgba16_dpid)
    result = run_downpool("shrink", tmp_path / "rgba16.tif", "-o", tmp_path / "again.png",
                          "--method", "avg")
    assert result.returncode == 0, result.stderr
    out, _ = read_png(tmp_path / "again.png")
    np.testing.assert_array_equal(out, downpool.downscale(rgba16_dpid, "avg", has_alpha=True))

    # An 8-bit format (BMP, JPEG, WebP) asked for gets the samples rounded to 8 bits.
    result = run_downpool("shrink", tmp_path / "rgb16.png", "-o", tmp_path / "eight.bmp")
    assert result.returncode == 0, result.stderr
    out, image = load(tmp_path / "eight.bmp")
    sixteen = downpool.downscale(np.rot90(rgb16, -1), "softpool").astype(np.uint32)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(out, (sixteen * 255 + 32767) // 65535)


def test_format_quality_and_output_file_extension(tmp_path):
    rgb = smooth_image((16, 20, 3), seed=6)
    source = save(tmp_path / "a.png", rgb)
    result = run_downpool("shrink", source, "--format", "jpeg", "--quality", "95", "--method", "avg")
    assert result.returncode == 0, result.stderr
    out, image = load(tmp_path / "a_avg.jpg")
    assert image.format == "JPEG" and out.shape == (8, 10, 3)
    assert np.abs(out.astype(int) - downpool.downscale(rgb, "avg")).mean() < 3

    result = run_downpool("shrink", source, "-o", tmp_path / "small.webp", "--method", "avg")
    assert result.returncode == 0, result.stderr
    assert load(tmp_path / "small.webp")[1].format == "WEBP"

    # JPEG has no alpha: a clear per-file error, not a silent flattening.
    save(tmp_path / "t.png", textured_image((8, 8, 4)))
    result = run_downpool("shrink", tmp_path / "t.png", "--format", "jpeg")
    assert result.returncode == 1
    assert f"{tmp_path / 't.png'}: cannot write" in result.stderr and "alpha" in result.stderr
    assert list(tmp_path.glob("t_*")) == [] and temp_files(tmp_path) == []


# --- metadata ---------------------------------------------------------------------------------


def test_exif_orientation_6_is_applied_and_written_as_1_and_icc_is_kept(tmp_path):
    stored = smooth_image((12, 20, 3), seed=7)
    stored[0:4, 0:4] = (255, 0, 0)  # a red mark at the stored top-left corner
    icc = srgb_icc_profile()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    exif[0x010F] = "downpool tests"
    save(tmp_path / "o6.png", stored, exif=exif.tobytes(), icc_profile=icc)
    save(tmp_path / "o6.jpg", stored, exif=exif.tobytes(), icc_profile=icc, quality=95)

    result = run_downpool("shrink", tmp_path / "o6.png", tmp_path / "o6.jpg", "--method", "max")
    assert result.returncode == 0, result.stderr
    upright = np.rot90(stored, -1)  # clockwise: the mark moves to the top-right
    assert upright.shape == (20, 12, 3) and tuple(upright[0, -1]) == (255, 0, 0)
    out, image = load(tmp_path / "o6_max.png")
    np.testing.assert_array_equal(out, downpool.downscale(upright, "max"))
    for name in ["o6_max.png", "o6_max.jpg"]:
        out, image = load(tmp_path / name)
        assert image.size == (6, 10), name
        assert image.getexif()[0x0112] == 1, name
        assert image.getexif()[0x010F] == "downpool tests", name
        assert image.info["icc_profile"] == icc, name
        assert out[0, -1, 0] > 200 and out[0, -1, 1] < 100, name  # the mark is top-right

    result = run_downpool("shrink", tmp_path / "o6.png", "--strip", "--name", "{stem}_bare{ext}")
    assert result.returncode == 0, result.stderr
    _, image = load(tmp_path / "o6_bare.png")
    assert image.size == (6, 10) and "icc_profile" not in image.info and not image.getexif()


# --- geometry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, api_arguments", [
    (["--width", "10"], {"size": (7, 10)}),      # 14x20 -> aspect kept: round(14 * 10 / 20)
    (["--height", "5"], {"size": (5, 7)}),       # round(20 * 5 / 14) = 7
    (["--size", "9x4"], {"size": (4, 9)}),       # WxH on the command line, (h, w) for the API
    (["--scale", "0.3"], {"scale": 0.3}),
    (["-k", "3", "--stride", "2"], {"kernel_size": 3, "stride": 2}),
    (["--linear"], {"linear": True}),
])
def test_geometry_and_linear_options_map_to_the_api(tmp_path, args, api_arguments):
    pixels = textured_image((14, 20, 3), seed=8)
    source = save(tmp_path / "g.png", pixels)
    result = run_downpool("shrink", source, *args, "--method", "dpp", "--lam", "2")
    assert result.returncode == 0, result.stderr
    out, _ = load(tmp_path / "g_dpp.png")
    np.testing.assert_array_equal(out, downpool.downscale(pixels, "dpp", lam=2.0, **api_arguments))


def test_unusable_device_fails_once_before_the_batch(tmp_path):
    save(tmp_path / "a.png", textured_image((8, 8, 3)))
    save(tmp_path / "b.png", textured_image((8, 8, 3)))
    result = run_downpool("shrink", tmp_path, "--device", "cuda")
    assert result.returncode == 1
    assert result.stderr.count("downpool: error: ") == 1 and "cuda" in result.stderr.lower()
    no_traceback(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


# --- bad input and faults ------------------------------------------------------------------------


def test_bad_files_are_reported_one_line_each_and_the_batch_goes_on(tmp_path):
    folder = tmp_path / "batch"
    good = textured_image((30, 40, 3), seed=9)
    save(folder / "good.png", good)
    jpeg = folder / "corrupt.jpg"
    save(jpeg, textured_image((64, 64, 3), seed=10), quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # cut in the middle
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image at all\n")
    save(folder / "narrow.png", textured_image((30, 5, 3)))   # narrower than --width 8
    save(folder / "huge.png", textured_image((100, 100)))     # above --max-pixels 5000
    # A readable image whose EXIF is damaged: done, with a one-line warning.
    Image.fromarray(smooth_image((16, 16, 3))).save(
        folder / "odd_exif.jpg",
        exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\x00\x00\xff\xff\x00\x00")
    missing = tmp_path / "missing.png"

    result = run_downpool("shrink", folder, missing, "--width", "8", "--max-pixels", "5000",
                          "--method", "avg")
    assert result.returncode == 1
    no_traceback(result)
    assert summary(result).startswith("downpool: 2 done, 0 skipped, 6 failed in ")
    assert f"downpool: warning: {folder / 'odd_exif.jpg'}: Corrupt EXIF data" in result.stderr
    causes = {
        folder / "corrupt.jpg": "truncated",
        folder / "empty.png": "empty file (0 bytes)",
        folder / "notes.png": "not an image",
        folder / "narrow.png": "larger than the 5x30 input",
        folder / "huge.png": "above the limit of 5,000",
        missing: "No such file or directory",
    }
    errors = [line for line in result.stderr.splitlines() if line.startswith("downpool: error: ")]
    assert len(errors) == len(causes), result.stderr
    for path, cause in causes.items():
        [line] = [e for e in errors if e.startswith(f"downpool: error: {path}: ")]
        assert cause in line, line
        assert f"downpool: failed: {path}: " in result.stderr  # listed again in the summary
    out, _ = load(folder / "good_avg.png")
    np.testing.assert_array_equal(out, downpool.downscale(good, "avg", size=(6, 8)))
    assert sorted(p.name for p in folder.iterdir() if "_avg" in p.name) == ["good_avg.png",
                                                                            "odd_exif_avg.jpg"]
    assert temp_files(tmp_path) == []


def test_unwritable_output_folder_is_a_per_file_error(tmp_path):
    save(tmp_path / "a.png", textured_image((8, 8, 3)))
    save(tmp_path / "b.png", textured_image((8, 8, 3)))
    # Tests may run as root, for whom permission bits do not stop a write:
    # a folder whose parent is a regular file cannot be created by anyone.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    result = run_downpool("shrink", tmp_path / "a.png", tmp_path / "b.png", "-o", blocker / "out")
    assert result.returncode == 1
    no_traceback(result)
    for name in ["a.png", "b.png"]:
        assert (f"downpool: error: {tmp_path / name}: cannot create output folder "
                f"{blocker / 'out'}: Not a directory") in result.stderr
    assert summary(result).startswith("downpool: 0 done, 0 skipped, 2 failed")


def test_read_only_output_folder_is_a_per_file_error(tmp_path):
    save(tmp_path / "a.png", textured_image((8, 8, 3)))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("permission bits do not stop this user (root): see the blocker test")
        result = run_downpool("shrink", tmp_path / "a.png", "-o", locked / "a.png")
        assert result.returncode == 1
        assert f"cannot write {locked / 'a.png'}: Permission denied" in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_existing_outputs_are_kept_skipped_or_replaced_and_inputs_never_replaced(tmp_path):
    pixels = textured_image((8, 12, 3), seed=11)
    source = save(tmp_path / "a.png", pixels)
    original = source.read_bytes()
    assert run_downpool("shrink", source).returncode == 0
    output = tmp_path / "a_softpool.png"
    first = output.read_bytes()

    result = run_downpool("shrink", source, "--beta", "0")
    assert result.returncode == 1 and "exists (use --overwrite" in result.stderr
    assert output.read_bytes() == first

    result = run_downpool("shrink", source, "--beta", "0", "--skip-existing")
    assert result.returncode == 0 and summary(result).startswith("downpool: 0 done, 1 skipped")
    assert output.read_bytes() == first

    result = run_downpool("shrink", source, "--beta", "0", "--overwrite")
    assert result.returncode == 0, result.stderr
    # beta = 0 is exactly avg: the output was replaced.
    np.testing.assert_array_equal(load(output)[0], downpool.downscale(pixels, "avg"))
    assert oct(output.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    for args in (["--name", "{stem}{ext}", "--overwrite"], ["-o", source, "--overwrite"]):
        result = run_downpool("shrink", source, *args)
        assert result.returncode == 1 and "would overwrite an input file" in result.stderr
        assert source.read_bytes() == original


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_output_folder_mirrors_the_input_tree(tmp_path):
    tree = tmp_path / "photos"
    save(tree / "a.png", textured_image((8, 8, 3)))
    save(tree / "sub" / "b.png", textured_image((8, 8)))
    save(tree / "sub" / "deep" / "c.jpg", textured_image((8, 8, 3)))
    (tree / "sub" / "readme.txt").write_text("ignored: not an image extension")
    result = run_downpool("shrink", tree, "-r", "-o", tmp_path / "small", "-k", "4")
    assert result.returncode == 0, result.stderr
    made = sorted(str(p.relative_to(tmp_path / "small")) for p in (tmp_path / "small").rglob("*")
                  if p.is_file())
    assert made == ["a.png", "sub/b.png", "sub/deep/c.jpg"]
    assert load(tmp_path / "small" / "sub" / "deep" / "c.jpg")[0].shape == (2, 2, 3)

    result = run_downpool("shrink", tree, "-o", tmp_path / "flat")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a.png"]

    # Beside the inputs, a rerun does not take the earlier outputs for inputs:
    # neither from a folder walk, nor when a shell glob names them.
    assert run_downpool("shrink", tree, "-r").returncode == 0
    result = run_downpool("shrink", tree, "-r", "--skip-existing")
    assert summary(result).startswith("downpool: 0 done, 3 skipped, 0 failed"), result.stderr
    result = run_downpool("shrink", *sorted(tree.glob("*.png")), "--skip-existing")
    assert summary(result).startswith("downpool: 0 done, 2 skipped, 0 failed"), result.stderr
    assert f"skipping: {tree / 'a_softpool.png'}: it is the output of {tree / 'a.png'}" in result.stderr
    assert not list(tree.rglob("*_softpool_softpool*"))


# --- workers, progress, Ctrl-C ----------------------------------------------------------------


@pytest.mark.parametrize("jobs", [["-j", "2"], ["-j", "3", "--processes"]])
def test_two_jobs_give_the_same_files_as_one(tmp_path, jobs):
    folder = tmp_path / "in"
    for i in range(6):
        save(folder / f"img{i}.png", textured_image((20, 24, 3), seed=20 + i))
    args = ["--method", "stochastic", "--seed", "7", "-k", "3"]
    one = run_downpool("shrink", folder, "-o", tmp_path / "j1", "-j", "1", *args)
    two = run_downpool("shrink", folder, "-o", tmp_path / "j2", *jobs, *args)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert summary(two).startswith("downpool: 6 done, 0 skipped, 0 failed")
    for i in range(6):
        a, b = (tmp_path / j / f"img{i}.png" for j in ("j1", "j2"))
        assert a.read_bytes() == b.read_bytes()
        np.testing.assert_array_equal(
            load(b)[0], downpool.downscale(load(folder / f"img{i}.png")[0], "stochastic",
                                           seed=7, kernel_size=3))


def test_progress_bar_on_a_terminal_only(tmp_path):
    for i in range(3):
        save(tmp_path / f"p{i}.png", textured_image((8, 8, 3), seed=i))

    def run_on_tty(*args: str) -> str:
        controller, terminal = pty.openpty()
        # A terminal of 100 columns (a fresh pty has 0, where tqdm draws nothing).
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        process = subprocess.Popen([*downpool_command(), "shrink", str(tmp_path), *args],
                                   stdout=subprocess.DEVNULL, stderr=terminal)
        os.close(terminal)
        chunks = []
        while True:
            ready, _, _ = select.select([controller], [], [], 60)
            try:
                chunk = os.read(controller, 4096) if ready else b""
            except OSError:  # the terminal closed: the process is gone
                chunk = b""
            if not chunk:
                break
            chunks.append(chunk)
        os.close(controller)
        assert process.wait(60) == 0
        return b"".join(chunks).decode(errors="replace")

    shown = run_on_tty("--method", "avg")
    assert "0/3 [" in shown and "3 done, 0 skipped, 0 failed" in shown
    hidden = run_on_tty("--method", "avg", "--overwrite", "-q")
    assert "/3" not in hidden and "3 done, 0 skipped, 0 failed" in hidden


def test_kernels_compiled_after_the_first_file_raise_no_numba_warning(tmp_path):
    """Numba's pedantic "variable ... is not in scope" check, which compiling some
    kernels raises, stays hidden for every file of a batch: the per-file capture
    of warnings (for Pillow's) once dropped the filter after the first file. A
    cache of its own makes this run compile its kernels."""
    folder = tmp_path / "in"
    save(folder / "a.png", textured_image((24, 24, 3), seed=1))
    save(folder / "b.png", textured_image((24, 24, 4), seed=2))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([*downpool_command(), "shrink", str(folder), "-o", str(tmp_path / "out"),
                             "--method", "dpid", "--scale", "0.25"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr


@pytest.mark.parametrize("markup", ["", "\x1b[1m"], ids=["plain", "colorama-bold"])
def test_numba_scope_warning_filter_matches_with_and_without_terminal_markup(markup):
    """Where colorama is installed, Numba wraps its messages in terminal markup
    ("\x1b[1m" ... "\x1b[0m"); the filter once matched only plain messages, and
    shrink printed the warning on such machines (CI's system Python). Other
    warnings still come through."""
    import warnings

    from numba.core.errors import NumbaIRAssumptionWarning

    from downpool.numba_warnings import NUMBA_SCOPE_WARNING

    reset = "\x1b[0m" if markup else ""
    scope = f"{markup}variable 'acc.1' is not in scope.\n\nThis warning came from ...{reset}"
    other = f"{markup}some other pedantic finding{reset}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=NUMBA_SCOPE_WARNING)
        warnings.warn_explicit(scope, NumbaIRAssumptionWarning, "kernel.py", 1)
        # As Numba raises it, with whatever markup this environment gives it.
        warnings.warn(NumbaIRAssumptionWarning("variable 'acc.2' is not in scope."))
        warnings.warn_explicit(other, NumbaIRAssumptionWarning, "kernel.py", 2)
    assert ["some other pedantic finding" in str(w.message) for w in caught] == [True]


def test_shrink_loads_numba_without_importing_scipy(tmp_path):
    """The CLI skips Numba's SciPy BLAS probe (0.15 s of a small shrink), and
    leaves SciPy importable afterwards."""
    source = save(tmp_path / "a.png", textured_image((16, 16, 3), seed=1))
    code = f"""
import sys
from downpool.cli import main
try:
    main(["shrink", {str(source)!r}, "--method", "softpool", "-q"])
except SystemExit as stop:
    assert stop.code == 0, stop.code
import numba.np.arraymath
print("scipy" in sys.modules, numba.np.arraymath._HAVE_BLAS)
import scipy.linalg
print(scipy.linalg.norm([3.0, 4.0]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "5.0"]
    out, _ = load(tmp_path / "a_softpool.png")
    np.testing.assert_array_equal(out, downpool.downscale(textured_image((16, 16, 3), seed=1),
                                                          "softpool"))


@pytest.mark.parametrize("where", ["os.open", "os.fdopen", "os.fsync", "os.chmod", "os.replace"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_ctrl_c_at_any_step_of_a_write_leaves_no_temporary_file(tmp_path, monkeypatch, where, fmt):
    """A Ctrl-C is raised as the step's call returns, where Python checks for
    signals: the temporary file is removed, and the target is either untouched
    or whole. (``tempfile.mkstemp`` lost its file when it landed in its open.)"""
    from downpool.io import write_image

    target = tmp_path / "out.img"
    target.write_bytes(b"old")
    pixels = textured_image((24, 20, 3), seed=3)
    name = where.removeprefix("os.")
    real = getattr(os, name)

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, pixels, format=fmt)
    monkeypatch.undo()
    assert temp_files(tmp_path) == []
    if where == "os.replace":
        assert Image.open(target).format == fmt  # renamed whole before the Ctrl-C
    else:
        assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img"]


@pytest.mark.parametrize("jobs, whole_group", [("1", False), ("2", True), ("2 --processes", True)])
def test_ctrl_c_leaves_no_partial_output_and_skip_existing_resumes(tmp_path, jobs, whole_group):
    """SIGINT to the command alone (``kill -INT``), or to its whole process group with
    its workers, as Ctrl-C in a terminal does."""
    folder = tmp_path / "in"
    count = 12
    for i in range(count):
        save(folder / f"img{i:02d}.png", textured_image((256, 256, 3), seed=i))
    out = tmp_path / "out"
    args = ["shrink", folder, "-o", out, "--method", "dpid", "--scale", "0.3", "-j", *jobs.split()]
    process = subprocess.Popen([*downpool_command(), *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len([p for p in out.iterdir() if p.suffix == ".png"]) >= 2:
            break
        time.sleep(0.01)
    if whole_group:
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    written = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    assert 2 <= len(written) < count, "the batch ended before Ctrl-C: make it longer"
    assert "interrupted" in stderr
    assert temp_files(tmp_path) == []
    for name in written:  # each output there is whole
        image, _ = load(out / name)
        assert image.shape == (77, 77, 3)

    result = run_downpool("shrink", *args[1:], "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert summary(result).startswith(
        f"downpool: {count - len(written)} done, {len(written)} skipped, 0 failed")
    assert len(list(out.iterdir())) == count
    last = f"img{count - 1:02d}.png"
    np.testing.assert_array_equal(
        load(out / last)[0], downpool.downscale(load(folder / last)[0], "dpid", scale=0.3))


def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    """Errors once named the hidden ".x.png.1234.downpool-tmp" file instead of the output."""
    from downpool.io import write_image

    real_open = os.open

    def refuse(path, flags, *args):
        if str(path).endswith(".downpool-tmp"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    target = tmp_path / "out.png"
    with pytest.raises(PermissionError) as caught:
        write_image(target, textured_image((4, 4, 3)), format="PNG")
    assert caught.value.filename == str(target)
    assert temp_files(tmp_path) == [] and not target.exists()


def test_threads_report_each_warning_under_its_own_file(tmp_path):
    """Threads share the process's warning machinery: each file's warning must stay its own."""
    folder = tmp_path / "batch"
    for i in range(5):
        save(folder / f"good{i}.png", textured_image((40, 30, 3), seed=i))
    for i in range(3):
        Image.fromarray(smooth_image((16, 16, 3))).save(
            folder / f"odd_exif{i}.jpg",
            exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\x00\x00\xff\xff\x00\x00")
    result = run_downpool("shrink", folder, "-o", tmp_path / "out", "-j", "3", "--method", "avg")
    assert result.returncode == 0, result.stderr
    warned = sorted(line.split(": ")[2] for line in result.stderr.splitlines()
                    if line.startswith("downpool: warning: "))
    assert warned == sorted(str(folder / f"odd_exif{i}.jpg") for i in range(3)), result.stderr
    assert all("Corrupt EXIF data" in line for line in result.stderr.splitlines()
               if line.startswith("downpool: warning: "))
    assert len(list((tmp_path / "out").iterdir())) == 8
