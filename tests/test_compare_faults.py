"""``downpool compare`` under hostile inputs (issue 29): its montage never replaces an
input or an existing file unasked, its limits hold before decoding, and every fault is
one line naming the file and the cause.

Each test makes its case itself, with the real libraries (Pillow, zlib), and runs the
installed command in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin, features

from cli_helpers import downpool_command, no_traceback, png_chunk, run_downpool, save, temp_files
from helpers import smooth_image, textured_image

#: The montage's size for one image and ``--methods avg`` (four cells: the original
#: crop, avg and the two baselines), from the layout the README states ("Each image
#: is a block five cells wide") and the cell sizes of tests/test_compare.py:
#: 4 cells of 192 + 6 wide and one row of 192 + 30 + 6 high, 6 pixels around.
ONE_IMAGE_AVG_MONTAGE = (4 * 198 + 6, 228 + 6)


def _lines(stderr: str) -> list[str]:
    return stderr.splitlines()


def _one_error(result: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one line on stderr, an error; that line."""
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    lines = _lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("downpool: error: "), result.stderr
    return lines[0]


# --- the montage never replaces an input, nor an existing file unasked --------------


def _spell_the_input(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """An input image and, per ``kind``, a montage path that is that same file."""
    image = save(tmp_path / "a.png", textured_image((24, 24, 3)))
    if kind == "same name":
        return image, str(image)
    if kind == "another spelling":
        (tmp_path / "sub").mkdir()
        return image, f"{tmp_path}/sub/../a.png"
    if kind == "relative":
        return image, "a.png"
    if kind == "symbolic link":
        os.symlink(image, tmp_path / "link.png")
        return image, str(tmp_path / "link.png")
    os.link(image, tmp_path / "hard.png")
    return image, str(tmp_path / "hard.png")


@pytest.mark.parametrize("kind", ["same name", "another spelling", "relative", "symbolic link",
                                  "hard link"])
def test_the_montage_never_replaces_an_input(tmp_path, kind):
    """Not even with --overwrite, and whichever way the path names the input."""
    image, montage = _spell_the_input(tmp_path, kind)
    before = image.read_bytes()
    result = run_downpool("compare", image, "--methods", "avg", "--montage", montage,
                          "--overwrite", cwd=tmp_path)
    error = _one_error(result)
    assert error.startswith(f"downpool: error: {montage}: the montage would overwrite the input")
    assert result.stdout == ""  # refused before any image was measured
    assert image.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_an_existing_montage_is_replaced_only_with_overwrite(tmp_path):
    image = save(tmp_path / "a.png", textured_image((24, 24, 3)))
    target = tmp_path / "m.png"
    target.write_bytes(b"a file of the user's")
    result = run_downpool("compare", image, "--methods", "avg", "--montage", target)
    assert _one_error(result) == (f"downpool: error: {target}: the montage's file exists "
                                  "(use --overwrite to replace it)")
    assert result.stdout == ""
    assert target.read_bytes() == b"a file of the user's"

    result = run_downpool("compare", image, "--methods", "avg", "--montage", target,
                          "--overwrite")
    assert result.returncode == 0, result.stderr
    no_traceback(result)
    with Image.open(target) as picture:
        assert picture.format == "PNG" and picture.size == ONE_IMAGE_AVG_MONTAGE
    assert temp_files(tmp_path) == []


def test_an_existing_link_at_the_montage_path_needs_overwrite(tmp_path):
    """A symbolic link to another file (not an input) is an existing file: kept unasked."""
    image = save(tmp_path / "a.png", textured_image((24, 24, 3)))
    other = tmp_path / "other.txt"
    other.write_text("notes")
    os.symlink(other, tmp_path / "m.png")
    result = run_downpool("compare", image, "--methods", "avg", "--montage", tmp_path / "m.png")
    assert "the montage's file exists" in _one_error(result)
    assert other.read_text() == "notes"


def test_a_montage_found_in_an_input_folder_is_not_compared_and_is_replaced(tmp_path):
    """A rerun into the folder it compares: the montage of the first run is found by the
    folder walk; it is taken as that output (as shrink does), not as an image."""
    folder = tmp_path / "photos"
    for i in range(2):
        save(folder / f"p{i}.png", textured_image((24, 24, 3), seed=i))
    target = folder / "montage.png"
    first = run_downpool("compare", folder, "--methods", "avg", "--montage", target)
    assert first.returncode == 0, first.stderr
    made = target.read_bytes()

    again = run_downpool("compare", folder, "--methods", "avg", "--montage", target)
    assert "the montage's file exists" in again.stderr and again.returncode == 1
    assert target.read_bytes() == made

    result = run_downpool("compare", folder, "--methods", "avg", "--montage", target,
                          "--overwrite", "--format", "json")
    assert result.returncode == 0, result.stderr
    images = {row["image"] for row in json.loads(result.stdout)["rows"]}
    assert images == {str(folder / "p0.png"), str(folder / "p1.png")}
    assert f"downpool: note: {target} is where the montage goes: not compared" in result.stderr
    with Image.open(target) as picture:
        assert picture.size == (ONE_IMAGE_AVG_MONTAGE[0], 2 * 228 + 6)


def test_a_montage_into_a_device_is_written_without_overwrite(tmp_path):
    image = save(tmp_path / "a.png", textured_image((24, 24, 3)))
    result = run_downpool("compare", image, "--methods", "avg", "--montage", "/dev/null")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# --- limits -------------------------------------------------------------------------------


def _png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A grey PNG whose header claims width x height and whose bytes are few (zeros
    compress a thousandfold): the rows are compressed one at a time."""
    packer = zlib.compressobj(9)
    row = bytes(1 + width)  # filter type 0, then the row
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                     + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))
    return path


def _peak_of(*args: object, cwd: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``downpool ARGS``; the result and that process's peak resident memory, in bytes
    (``wait4`` gives the rusage of this one child)."""
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen([*downpool_command(), *map(str, args)], stdout=stdout,
                                   stderr=stderr, cwd=cwd)
        timer = threading.Timer(180, process.kill)  # a limit that no longer holds: no hang
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
    result = subprocess.CompletedProcess(args, process.returncode, out.read_text(),
                                         err.read_text())
    out.unlink()
    err.unlink()
    return result, usage.ru_maxrss * 1024  # Linux: kilobytes


def test_max_pixels_refuses_an_image_before_decoding(tmp_path):
    image = _png_of_zeros(tmp_path / "wide.png", 200, 100)
    result = run_downpool("compare", image, "--methods", "avg", "--max-pixels", "10000")
    assert _one_error(result) == (f"downpool: error: {image}: image is 200x100 = 20,000 pixels, "
                                  "above the limit of 10,000 (raise it with --max-pixels)")
    assert result.stdout == ""


def test_max_memory_refuses_an_image_from_its_header(tmp_path):
    """A 12000x12000 PNG of 140 KB: decoding it alone would take 144 MB, comparing it
    gigabytes.  It is refused from its header (--max-pixels 0: no pixel limit), and the
    command's peak memory stays that of comparing a tiny image."""
    bomb = _png_of_zeros(tmp_path / "bomb.png", 12000, 12000)
    assert bomb.stat().st_size < 200_000
    small = save(tmp_path / "small.png", textured_image((16, 16, 3)))
    base, base_peak = _peak_of("compare", small, "--methods", "avg", cwd=tmp_path)
    assert base.returncode == 0, base.stderr

    result, peak = _peak_of("compare", bomb, "--methods", "avg", "--max-pixels", "0",
                            "--max-memory", "200M", cwd=tmp_path)
    error = _one_error(result)
    assert error.startswith(f"downpool: error: {bomb}: 12000x12000 image needs about ")
    assert error.endswith(" of memory to compare, above --max-memory 200.0 MiB")
    needed = error.split("needs about ")[1].split(" of memory")[0]
    assert needed.endswith(" GiB") and float(needed[:-4]) > 1  # 144 M pixels, 8 bytes each and more
    assert peak < base_peak + 100 * 2**20, (peak, base_peak)


def test_an_image_within_max_memory_is_compared(tmp_path):
    image = save(tmp_path / "a.png", textured_image((40, 40, 3)))
    result = run_downpool("compare", image, "--methods", "avg", "--max-memory", "1G")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{image}: 40x40 -> 20x20")


@pytest.mark.parametrize("value", ["lots", "-5M", "9" * 400])
def test_a_bad_max_memory_is_a_usage_error(tmp_path, value):
    image = save(tmp_path / "a.png", textured_image((16, 16, 3)))
    result = run_downpool("compare", image, "--max-memory", value)
    no_traceback(result)
    assert result.returncode == 2
    assert "--max-memory" in result.stderr and result.stdout == ""


#: The images whose peak memory is checked against the estimate: one scored whole
#: (scikit-image's SSIM on the whole image, up to 4 Mi values) and one scored in strips.
MEASURED = [((1000, 1000), ["--methods", "avg,dpid"]),
            ((1250, 1250, 3), ["--methods", "avg", "--montage", "m.png", "--scale", "0.75"])]


@pytest.mark.parametrize("shape, options", MEASURED)
def test_the_memory_estimate_is_above_the_measured_peak(tmp_path, shape, options):
    """What --max-memory compares with must not be below what the command takes: the
    peak resident memory of a run, less that of a run on a tiny image (Python, NumPy,
    Numba, scikit-image), is at most ``downpool.compare.memory_needed``."""
    from downpool.compare import memory_needed
    from downpool.io import open_image

    image = save(tmp_path / "big.png", textured_image(shape, seed=3))
    tiny = save(tmp_path / "tiny.png", textured_image((16, 16, *shape[2:]), seed=4))
    base, base_peak = _peak_of("compare", tiny, *options, "--overwrite", cwd=tmp_path)
    assert base.returncode == 0, base.stderr
    result, peak = _peak_of("compare", image, *options, "--overwrite", "--max-memory", "0",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    headers = []
    with open_image(image, before_decode=headers.append):
        pass
    settings = dict(zip(options[::2], options[1::2]))
    need = memory_needed(headers[0], settings["--methods"],
                         scale=float(settings["--scale"]) if "--scale" in settings else None,
                         keep_outputs="--montage" in settings)
    assert peak - base_peak <= need, (peak - base_peak, need)


# --- faults that were tracebacks -------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64, 3), (1250, 1250, 3)])
def test_a_uniform_image_is_kept_exactly_by_every_method(tmp_path, shape):
    """A uniform image: every method and baseline keeps it exactly, SSIM 1 and PSNR inf
    (null in json), whether it is scored whole (64x64) or in strips (1250x1250x3, more
    than 4 Mi values: the strips once divided by its zero error).  The montage shows it."""
    image = save(tmp_path / "flat.png", np.full(shape, 77, np.uint8))
    result = run_downpool("compare", image, "--methods", "avg,max,dpid", "--format", "json",
                          "--montage", tmp_path / "m.png")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [row["method"] for row in rows] == ["avg", "max", "dpid", "pillow-box",
                                               "pillow-lanczos"]
    for row in rows:
        assert row["ssim"] == pytest.approx(1.0, abs=1e-12), row
        assert row["psnr"] is None, row
    assert (tmp_path / "m.png").is_file()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_table_that_cannot_be_written_is_a_one_line_error(tmp_path):
    image = save(tmp_path / "a.png", textured_image((24, 24, 3)))
    with open("/dev/full", "w") as full:
        result = subprocess.run([*downpool_command(), "compare", str(image), "--methods", "avg"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert _one_error(result) == ("downpool: error: standard output: cannot write the table: "
                                  "No space left on device")


def _damaged_avif(path: Path) -> Path:
    """A real AVIF (Pillow's encoder) whose coded picture is zeroed: the container
    parses, the AV1 decoder fails (Pillow's plugin raises RuntimeError)."""
    buffer = io.BytesIO()
    Image.fromarray(textured_image((64, 64, 3), seed=5)).save(buffer, format="AVIF")
    data = bytearray(buffer.getvalue())
    start = data.index(b"mdat") + 4
    data[start:start + 36] = bytes(36)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_a_damaged_avif_is_a_one_line_error(tmp_path):
    avif = _damaged_avif(tmp_path / "broken.avif")
    with pytest.raises(RuntimeError):  # the case is the one of the issue
        with Image.open(avif) as opened:
            opened.load()
    good = save(tmp_path / "good.png", textured_image((24, 24, 3)))
    result = run_downpool("compare", avif, good, "--methods", "avg")
    no_traceback(result)
    assert result.returncode == 1
    [error] = [line for line in _lines(result.stderr) if line.startswith("downpool: error: ")]
    assert error.startswith(f"downpool: error: {avif}: ")
    assert "decod" in error.lower() and "internal error" not in error, error
    assert result.stdout.startswith("mean over 1 images") or str(good) in result.stdout


# --- stderr: one line each, downpool's own -------------------------------------------------


def _garbled_lzw_tiff(path: Path) -> Path:
    """An LZW TIFF (Pillow, libtiff) whose compressed strip is garbled: libtiff prints
    its words ("LZWDecode: ...") on descriptor 2 as it fails."""
    buffer = io.BytesIO()
    Image.fromarray(textured_image((64, 64, 3), seed=13)).save(buffer, format="TIFF",
                                                               compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    start = TiffImagePlugin.TiffImageFile(io.BytesIO(bytes(data))).tag_v2[273][0]
    for i in range(start + 40, start + 104):
        data[i] = (data[i] * 7 + 13) & 0xFF
    path.write_bytes(bytes(data))
    return path


def test_libtiffs_words_go_into_the_files_error(tmp_path):
    tiff = _garbled_lzw_tiff(tmp_path / "garbled.tif")
    good = save(tmp_path / "good.png", textured_image((24, 24, 3)))
    result = run_downpool("compare", tiff, good, "--methods", "avg")
    no_traceback(result)
    assert result.returncode == 1
    lines = _lines(result.stderr)
    assert all(line.startswith("downpool: ") for line in lines), result.stderr
    assert "tempfile.tif" not in result.stderr
    [error] = [line for line in lines if line.startswith("downpool: error: ")]
    assert error.startswith(f"downpool: error: {tiff}: ") and "(libtiff: " in error, error


def test_python_warnings_are_one_line_under_their_file(tmp_path):
    """Pillow warns of damaged EXIF with a UserWarning; Python would print it with its
    source path and line.  compare says it as the file's warning, and goes on."""
    odd = tmp_path / "odd_exif.jpg"
    Image.fromarray(smooth_image((16, 16, 3))).save(
        odd, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\x00\x00\xff"
                  b"\xff\x00\x00")
    result = run_downpool("compare", odd, "--methods", "avg")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stderr)
    assert lines and all(line.startswith(f"downpool: warning: {odd}: ") for line in lines), lines
    assert any("Corrupt EXIF data" in line for line in lines)
    assert ".py:" not in result.stderr


def test_control_characters_in_names_are_escaped(tmp_path):
    """A newline in a name cannot print a line of its own, on stderr or in the table."""
    fake = tmp_path / "x\ndownpool: note: all fine\n.png"
    fake.write_bytes(b"not an image")
    named = save(tmp_path / "ok\x1b[31m.png", textured_image((24, 24, 3)))
    result = run_downpool("compare", fake, "--methods", "avg")
    error = _one_error(result)
    assert error.startswith(f"downpool: error: {tmp_path}/x\\ndownpool: note: all fine\\n.png: ")

    result = run_downpool("compare", named, "--methods", "avg")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert result.stdout.splitlines()[0].startswith(f"{tmp_path}/ok\\x1b[31m.png: 24x24 -> 12x12")


def test_with_stderr_closed_the_work_is_still_done(tmp_path):
    """``2>&-``: the messages are lost, the table and the montage are not."""
    image = save(tmp_path / "a.png", textured_image((24, 24, 3)))
    result = subprocess.run([*downpool_command(), "compare", str(image), "--methods", "avg",
                             "--montage", str(tmp_path / "m.png")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            timeout=120, pass_fds=(), close_fds=True,
                            preexec_fn=lambda: os.close(2))
    assert result.returncode == 0
    assert result.stdout.startswith(f"{image}: 24x24 -> 12x12")
    with Image.open(tmp_path / "m.png") as picture:
        assert picture.size == ONE_IMAGE_AVG_MONTAGE
    assert temp_files(tmp_path) == []


def test_a_name_that_is_not_utf8_does_not_stop_the_table(tmp_path):
    """Bytes that are not UTF-8 in a name, under a strict UTF-8 stdout: the table is
    written, the name as the bytes it has (as ls does)."""
    name = os.fsencode(tmp_path) + b"/n\xff.png"
    save(Path(os.fsdecode(name)), textured_image((24, 24, 3)))
    result = subprocess.run([*downpool_command(), "compare", name, "--methods", "avg"],
                            capture_output=True, timeout=120,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    no_traceback(result.stderr.decode(errors="replace"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(name + b": 24x24 -> 12x12")


# --- the library beneath -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(61, 47, 3), (58, 40)])
def test_the_reference_comparison_in_strips_equals_the_whole_one(monkeypatch, shape):
    """--against reference on a large output is scored in strips too (it was scored whole,
    with scikit-image's working values for the whole output): the same scores."""
    from downpool import compare as cmp
    from downpool.compare import scores

    pixels = textured_image(shape, seed=21)
    whole = cmp.compare_image(pixels, "avg,dpid", kernel_size=2, against="reference")
    out_width = -(-shape[1] // 2)
    monkeypatch.setattr(scores, "WHOLE_IMAGE_VALUES", 0)
    monkeypatch.setattr(scores, "STRIP_VALUES", 16 * out_width)  # 16-row strips: two of them
    calls = []
    real = scores.strip_sums
    monkeypatch.setattr(scores, "strip_sums", lambda *a: calls.append(a[2]) or real(*a))
    strips = cmp.compare_image(pixels, "avg,dpid", kernel_size=2, against="reference")
    channels = shape[2] if len(shape) == 3 else 1
    assert len(calls) == 4 * channels * 2  # 4 rows x channels x 2 strips
    for a, b in zip(whole.scores, strips.scores):
        assert b.ssim == pytest.approx(a.ssim, rel=1e-12, abs=1e-14), a.method
        assert b.psnr == pytest.approx(a.psnr, rel=1e-12) or a.psnr == b.psnr, a.method


@pytest.mark.parametrize("dtype, channels, has_alpha", [
    (np.uint8, 4, True), (np.uint16, 2, True), (np.uint8, 3, False), (np.float32, 1, False)])
def test_x_made_a_band_at_a_time_is_the_documented_formula(monkeypatch, dtype, channels,
                                                           has_alpha):
    """X is converted a band of rows at a time (its float64 working copies stay a band):
    each value is still ``c * a + (1 - a)`` in float64, rounded to float32."""
    from downpool import compare as cmp
    from downpool.compare import scores

    monkeypatch.setattr(scores, "BAND_VALUES", 50)  # bands of a row or two: many of them
    rng = np.random.default_rng(7)
    shape = (23, 19, channels)
    if np.dtype(dtype).kind == "u":
        pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
        unit = pixels.astype(np.float64) / np.iinfo(dtype).max
    else:
        pixels = rng.random(shape).astype(dtype)
        unit = pixels.astype(np.float64)
    if has_alpha:
        unit = unit[..., :-1] * unit[..., -1:] + (1.0 - unit[..., -1:])
    expected = unit.astype(np.float32).astype(np.float64)
    if expected.shape[2] == 1:
        expected = expected[..., 0]
    x = cmp.to_unit_float(pixels, has_alpha=has_alpha)
    assert x.dtype == np.float64 and x.shape == expected.shape
    np.testing.assert_array_equal(x, expected)


def test_a_montage_label_keeps_a_name_on_one_line_and_save_can_refuse(tmp_path):
    from downpool import compare as cmp

    result = cmp.compare_image(textured_image((24, 24, 3)), "avg", name="a\nb\x1b.png",
                               keep_outputs=True)
    cells = cmp.montage_cells(result)
    assert cells[0][1][0] == [("original: a\\nb\\x1b.png", False)]
    target = tmp_path / "m.png"
    target.write_bytes(b"kept")
    with pytest.raises(FileExistsError):
        cmp.save_montage(cmp.montage([cells]), target, replace=False)
    assert target.read_bytes() == b"kept" and temp_files(tmp_path) == []


def test_a_kernel_beyond_any_image_is_a_usage_error(tmp_path):
    image = save(tmp_path / "a.png", textured_image((16, 16, 3)))
    result = run_downpool("compare", image, "--methods", "avg", "-k", "100000000000000000000")
    no_traceback(result)
    assert result.returncode == 2 and "--kernel-size" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and result.stdout == ""


def test_an_input_name_too_long_for_the_system_is_one_line_and_the_rest_goes_on(tmp_path):
    good = save(tmp_path / "good.png", textured_image((16, 16, 3)))
    long_name = tmp_path / ("y" * 300 + ".png")
    result = run_downpool("compare", long_name, good, "--methods", "avg", "--format", "csv")
    no_traceback(result)
    assert result.returncode == 1
    assert f"downpool: error: {long_name}: File name too long" in _lines(result.stderr)
    assert [row.split(",")[0] for row in result.stdout.splitlines()[1:]] == [str(good)] * 3


def test_a_folder_that_cannot_be_listed_is_one_line_and_the_rest_goes_on(tmp_path, monkeypatch):
    """As root no folder is unreadable: the listing's PermissionError is made here."""
    from click.testing import CliRunner

    from downpool import cli_compare
    from downpool.cli import main

    good = save(tmp_path / "good.png", textured_image((16, 16, 3)))
    (tmp_path / "locked").mkdir()

    def refuse(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(cli_compare, "_images_in", refuse)
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "locked"), str(good),
                                       "--methods", "avg"])
    assert result.exit_code == 1, result.output
    assert (f"downpool: error: {tmp_path / 'locked'}: cannot read this folder: "
            "Permission denied") in result.stderr
    assert result.stdout.startswith(f"{good}: 16x16 -> 8x8")
