"""``downpool pyramid`` with hostile inputs and outputs (issue 29).

- ``--overwrite`` replaces only a pyramid (OME-Zarr 0.4 or 0.5), never a folder
  that holds an input or the current folder, nor anything else;
- every fault is one line naming the file and the cause, with libtiff's lines
  and Python warnings folded into downpool's own lines, control characters
  escaped;
- ``--max-pixels`` and ``--max-memory`` hold for image files, zarr arrays and
  stacks of pages, before any work;
- a killed run's temporary folder is removed by the next run.

Each case is made here with the real libraries (Pillow, zarr, ome-zarr-py,
tifffile) and run through the installed command.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin, features

import downpool
from cli_helpers import downpool_command, no_traceback, png_chunk, run_downpool, save
from helpers import textured_image

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask.array")


def _one_error(result: subprocess.CompletedProcess, path: object) -> str:
    """The run failed with exactly one line on stderr, an error about ``path``."""
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"downpool: error: {path}: "), result.stderr
    return lines[0]


def _levels(path: Path) -> list[np.ndarray]:
    """The levels of the pyramid at ``path``, read by ome-zarr-py."""
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    [node, *_] = list(reader.Reader(io.parse_url(str(path)))())
    return [np.asarray(level) for level in node.data]


def _ome_zarr(path: Path, version: str) -> Path:
    """A pyramid written by ome-zarr-py: NGFF 0.4 (zarr format 2) or 0.5 (zarr format 3)."""
    writer = pytest.importorskip("ome_zarr.writer")
    formats = pytest.importorskip("ome_zarr.format")
    fmt, zarr_format = ((formats.FormatV04(), 2) if version == "0.4"
                        else (formats.FormatV05(), 3))
    group = zarr.open_group(str(path), mode="a", zarr_format=zarr_format)
    writer.write_image(np.full((32, 32), 7, np.uint8), group, fmt=fmt, axes="yx",
                       scale_factors=[2])
    return path


# --- what --overwrite may replace ----------------------------------------------------


def test_a_folder_that_holds_the_input_is_never_replaced(tmp_path):
    """The issue's case (``pyramid proj/a.png -o proj --overwrite`` deleted proj/a.png),
    also where proj is a real pyramid, and where the input is named through a link or
    with ``..``."""
    proj = tmp_path / "proj"
    source = save(proj / "sub" / "a.png", textured_image((24, 20, 3), seed=1))
    data = source.read_bytes()
    result = run_downpool("pyramid", source, "-o", proj, "--overwrite")
    assert "holds the input" in _one_error(result, proj)
    assert source.read_bytes() == data
    _ome_zarr(proj, "0.4")  # now it is a pyramid, and still holds the input
    (tmp_path / "link").symlink_to(proj)
    for given in (source, tmp_path / "link" / "sub" / "a.png",
                  proj / "sub" / ".." / "sub" / "a.png"):
        result = run_downpool("pyramid", given, "-o", proj, "--overwrite")
        assert "holds the input" in _one_error(result, proj), given
        assert source.read_bytes() == data
    # The output is the input itself, or a pyramid of which the input is a level.
    result = run_downpool("pyramid", source, "-o", source, "--overwrite")
    assert "is the input" in _one_error(result, source)
    result = run_downpool("pyramid", proj / "s0", "-o", proj, "--overwrite")
    assert "holds the input" in _one_error(result, proj)
    assert source.read_bytes() == data and (proj / "s0").is_dir()


def test_what_is_not_a_pyramid_is_not_replaced(tmp_path):
    """``-o docs --overwrite`` deleted docs/thesis.txt: a folder without multiscales
    metadata, a zarr array, an empty folder, a file, an OME-TIFF and a link to a pyramid
    are each refused in one line, and left as they were."""
    source = save(tmp_path / "a.png", textured_image((24, 20, 3), seed=2))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("three years")
    array = tmp_path / "array.zarr"
    zarr.create_array(str(array), data=np.zeros((8, 8), np.uint8))
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes.zarr"
    notes.write_text("not a folder")
    link = tmp_path / "link.zarr"
    link.symlink_to(_ome_zarr(tmp_path / "real.zarr", "0.4"))
    causes = {docs: "not an OME-Zarr pyramid", array: "not an OME-Zarr pyramid",
              empty: "not an OME-Zarr pyramid", notes: "is a file",
              link: "is a symbolic link"}
    tifffile = pytest.importorskip("tifffile")
    ome_tiff = tmp_path / "slide.ome.tif"
    tifffile.imwrite(ome_tiff, np.zeros((16, 16), np.uint8), ome=True)
    causes[ome_tiff] = "is an OME-TIFF file"
    before = {p: sorted(os.listdir(p)) if p.is_dir() else p.read_bytes() for p in causes}
    for target, cause in causes.items():
        result = run_downpool("pyramid", source, "-o", target, "--overwrite")
        line = _one_error(result, target)
        assert cause in line, line
        assert "not replaced" in line, line
    assert before == {p: sorted(os.listdir(p)) if p.is_dir() else p.read_bytes()
                      for p in causes}
    assert (docs / "thesis.txt").read_text() == "three years"
    assert link.is_symlink()


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_pyramid_is_replaced_with_overwrite_only(tmp_path, version):
    """A pyramid that ome-zarr-py wrote (NGFF 0.4 on zarr 2, or 0.5 on zarr 3) is
    recognised: refused without --overwrite, replaced whole with it."""
    pixels = textured_image((40, 36, 3), seed=3)
    source = save(tmp_path / "a.png", pixels)
    target = _ome_zarr(tmp_path / "out.zarr", version)
    result = run_downpool("pyramid", source, "-o", target)
    line = _one_error(result, target)
    assert f"exists, an OME-Zarr {version} pyramid (use --overwrite to replace it)" in line
    result = run_downpool("pyramid", source, "-o", target, "--overwrite", "--levels", "2",
                          "--chunks", "16")
    assert result.returncode == 0, result.stderr
    assert not (target / "s0").exists()  # nothing of the old pyramid is left
    level0, level1 = _levels(target)
    np.testing.assert_array_equal(level0.transpose(1, 2, 0), pixels)
    np.testing.assert_array_equal(level1.transpose(1, 2, 0),
                                  downpool.downscale(pixels, "avg", kernel_size=2))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_current_folder_and_its_ancestors_are_refused(tmp_path):
    """``pyramid -o . --overwrite`` was a traceback; the current folder is refused even
    where it is a pyramid, and so is any folder that holds it."""
    source = save(tmp_path / "a.png", textured_image((24, 20, 3), seed=4))
    work = tmp_path / "work"
    made = run_downpool("pyramid", source, "-o", work, "--levels", "1")
    assert made.returncode == 0, made.stderr
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    for given in (".", "..", "../work", str(tmp_path)):
        result = run_downpool("pyramid", source, "-o", given, "--overwrite", cwd=work)
        line = _one_error(result, given)
        assert "current folder" in line and "not replaced" in line, line
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
    assert source.is_file()


# --- one-line errors ---------------------------------------------------------------


def test_bad_zarr_inputs_are_one_line_errors(tmp_path):
    """A 1-D array was a traceback (IndexError); a group, a 4-D array and an unsupported
    dtype are said in words too."""
    cases = {"one.zarr": ((100,), np.uint8, "is a 1-D zarr array of shape (100,)"),
             "four.zarr": ((2, 3, 4, 5), np.uint8, "is a 4-D zarr array"),
             "int64.zarr": ((8, 8), np.int64, "dtype int64 is not supported")}
    for name, (shape, dtype, cause) in cases.items():
        zarr.create_array(str(tmp_path / name), data=np.zeros(shape, dtype))
        result = run_downpool("pyramid", tmp_path / name, "-o", tmp_path / "out.zarr")
        assert cause in _one_error(result, tmp_path / name)
    group = _ome_zarr(tmp_path / "group.zarr", "0.4")
    result = run_downpool("pyramid", group, "-o", tmp_path / "out.zarr")
    assert f"is a zarr group, not an array (a pyramid: give one of its arrays, such as " \
           f"{group / 's0'})" in _one_error(result, group)
    assert not (tmp_path / "out.zarr").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_huge_chunks_are_cut_to_the_level_or_refused_by_the_memory_limit(tmp_path):
    """--chunks 1000000000 was a MemoryError (zarr made a 1e9 x 1e9 chunk): a chunk is now
    never larger than its level, and one whose row of chunks would not fit --max-memory
    is refused before any work."""
    pixels = textured_image((40, 30, 3), seed=5)
    source = save(tmp_path / "a.png", pixels)
    result = run_downpool("pyramid", source, "-o", tmp_path / "a.zarr", "--chunks",
                          "1000000000")
    assert result.returncode == 0, result.stderr
    stored = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["0"]
    assert stored.chunks == (3, 40, 30)
    np.testing.assert_array_equal(_levels(tmp_path / "a.zarr")[0].transpose(1, 2, 0), pixels)
    big = save(tmp_path / "big.png", np.zeros((1500, 1500), np.uint8))
    result = run_downpool("pyramid", big, "-o", tmp_path / "big.zarr", "--chunks",
                          "1000000000", "--max-memory", "5M")
    line = _one_error(result, big)
    assert "with --chunks 1000000000 needs about" in line and "above --max-memory 5.0 MiB" in line
    assert not (tmp_path / "big.zarr").exists()


@pytest.mark.skipif(not features.check("avif"), reason="Pillow without AVIF")
def test_a_damaged_avif_is_a_one_line_error(tmp_path):
    """Pillow's AVIF plugin raises RuntimeError for a file whose primary item is missing;
    that was a traceback."""
    source = tmp_path / "a.avif"
    Image.fromarray(textured_image((32, 32, 3), seed=6)).save(source)
    data = source.read_bytes()
    assert data.count(b"pitm") == 1
    source.write_bytes(data.replace(b"pitm", b"pitX"))  # the primary item box, unnamed
    with pytest.raises(RuntimeError):  # what Pillow itself does with it
        with Image.open(source) as image:
            image.load()
    result = run_downpool("pyramid", source, "-o", tmp_path / "a.zarr")
    assert "Failed to decode image" in _one_error(result, source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avif"]


def test_an_output_name_too_long_is_refused_before_any_work(tmp_path):
    """A 300-byte name is refused at once in one line; a 246-byte one is written (its
    temporary name is cut to fit)."""
    source = save(tmp_path / "a.png", textured_image((24, 20, 3), seed=7))
    long_name = tmp_path / ("n" * 295 + ".zarr")
    result = run_downpool("pyramid", source, "-o", long_name)
    assert "its name is 300 bytes long" in _one_error(result, long_name)
    fits = tmp_path / ("n" * 241 + ".zarr")
    result = run_downpool("pyramid", source, "-o", fits, "--levels", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.png", fits.name])


# --- limits ------------------------------------------------------------------------


def test_an_empty_huge_zarr_array_is_refused_at_once(tmp_path):
    """An empty 200000x200000 zarr array, a few hundred bytes on disk, was written for
    minutes: zarr arrays now have --max-pixels too (default 1 gigapixel)."""
    huge = tmp_path / "huge.zarr"
    zarr.create_array(str(huge), shape=(200_000, 200_000), dtype="uint8", chunks=(1000, 1000))
    assert sum(p.stat().st_size for p in huge.rglob("*") if p.is_file()) < 2000
    started = time.monotonic()
    result = run_downpool("pyramid", huge, "-o", tmp_path / "out.zarr", timeout=60)
    assert time.monotonic() - started < 30
    line = _one_error(result, huge)
    assert ("zarr array is 200000x200000 = 40,000,000,000 pixels, above the limit of "
            "1,000,000,000 (raise it with --max-pixels)") in line
    assert not (tmp_path / "out.zarr").exists()
    # Without the pixel limit, the memory limit still says what it would take.
    result = run_downpool("pyramid", huge, "-o", tmp_path / "out.zarr", "--max-pixels", "0",
                          "--max-memory", "20M", timeout=60)
    assert "needs about" in _one_error(result, huge)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.zarr"]


def test_max_pixels_holds_for_image_files_and_stack_pages(tmp_path):
    """The default (1 gigapixel, as shrink's; it was no limit) refuses a 300-byte PNG whose
    header says 40000x30000 before any decoding; pages of a stack were not checked."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 30000, 8, 0, 0, 0, 0))
                     + png_chunk(b"IDAT", zlib.compress(bytes(30001))) + png_chunk(b"IEND", b""))
    result = run_downpool("pyramid", bomb, "-o", tmp_path / "bomb.zarr", "--max-memory", "0")
    assert ("image is 40000x30000 = 1,200,000,000 pixels, above the limit of 1,000,000,000"
            in _one_error(result, bomb))
    bomb.unlink()
    source = save(tmp_path / "a.png", textured_image((100, 80, 3), seed=8))
    result = run_downpool("pyramid", source, "-o", tmp_path / "a.zarr", "--max-pixels", "5000")
    assert "image is 80x100 = 8,000 pixels, above the limit of 5,000" in _one_error(result, source)
    stack = tmp_path / "stack"
    save(stack / "p0.tif", textured_image((50, 60, 3), seed=9))
    save(stack / "p1.tif", textured_image((100, 60, 3), seed=10))  # a larger page
    result = run_downpool("pyramid", stack, "-o", tmp_path / "s.zarr", "--max-pixels", "5000")
    assert "above the limit of 5,000" in _one_error(result, stack / "p1.tif")
    save(stack / "p1.tif", textured_image((50, 60, 3), seed=10))
    result = run_downpool("pyramid", stack, "-o", tmp_path / "s.zarr", "--max-pixels", "5000",
                          "--levels", "2", "--chunks", "16")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "s.zarr", "stack"]


def test_max_memory_holds_for_files_zarr_arrays_and_stacks(tmp_path):
    pixels = textured_image((600, 500, 3), seed=11)
    source = save(tmp_path / "a.png", pixels)
    array = tmp_path / "a_in.zarr"
    zarr.create_array(str(array), data=pixels, chunks=(600, 500, 3))
    stack = tmp_path / "stack"
    for z in range(2):
        save(stack / f"p{z}.tif", pixels)
    for given, what in ((source, "image"), (array, "zarr array"), (stack / "p0.tif", "page")):
        named = stack if given.parent == stack else given
        result = run_downpool("pyramid", named, "-o", tmp_path / "out.zarr", "--max-memory",
                              "2M")
        line = _one_error(result, given)
        assert f"a pyramid of this 500x600 {what} with --chunks 512 needs about" in line, line
        assert "above --max-memory 2.0 MiB" in line
        assert not (tmp_path / "out.zarr").exists()
        result = run_downpool("pyramid", named, "-o", tmp_path / "out.zarr", "--max-memory",
                              "0", "--levels", "2")
        assert result.returncode == 0, result.stderr
        level0 = _levels(tmp_path / "out.zarr")[0]
        np.testing.assert_array_equal(level0[:, 0] if named == stack else level0,
                                      pixels.transpose(2, 0, 1))
        os.rename(tmp_path / "out.zarr", tmp_path / f"done_{what.replace(' ', '_')}.zarr")


def test_a_bad_max_memory_is_a_usage_error(tmp_path):
    source = save(tmp_path / "a.png", textured_image((8, 8, 3)))
    for value in ("9" * 400, "lots"):
        result = run_downpool("pyramid", source, "-o", tmp_path / "a.zarr", "--max-memory", value)
        no_traceback(result)
        assert result.returncode == 2 and "Invalid value for --max-memory" in result.stderr
    assert not (tmp_path / "a.zarr").exists()


# --- what is printed ---------------------------------------------------------------


def _garbled_lzw_tiff(path: Path, seed: int) -> Path:
    """An LZW TIFF whose compressed strip is garbled: libtiff prints "Using code not yet
    in table" as Pillow decodes it."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(textured_image((64, 64, 3), seed=seed)).save(buffer, format="TIFF",
                                                                 compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    start = TiffImagePlugin.TiffImageFile(io.BytesIO(bytes(data))).tag_v2[273][0]
    for i in range(start + 40, start + 104):
        data[i] = (data[i] * 7 + 13) & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_libtiff_lines_go_into_the_files_error(tmp_path):
    """libtiff's raw "tempfile.tif: ..." lines were printed between downpool's."""
    garbled = _garbled_lzw_tiff(tmp_path / "garbled.tif", 12)
    result = run_downpool("pyramid", garbled, "-o", tmp_path / "g.zarr")
    line = _one_error(result, garbled)
    assert "(libtiff: " in line and "tempfile.tif" not in line, line
    # A page of a stack, read when the writer comes to it: its own name.
    stack = tmp_path / "stack"
    save(stack / "p0.tif", textured_image((64, 64, 3), seed=13))
    _garbled_lzw_tiff(stack / "p1.tif", 14)
    result = run_downpool("pyramid", stack, "-o", tmp_path / "s.zarr")
    line = _one_error(result, stack / "p1.tif")
    assert "(libtiff: " in line and "tempfile.tif" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbled.tif", "stack"]


def test_python_warnings_are_one_line_warnings_of_the_file(tmp_path):
    """A warning was printed as Python does, with the source file of Pillow that raised
    it, on two lines."""
    source = tmp_path / "odd_exif.jpg"
    Image.fromarray(textured_image((16, 16, 3))).save(
        source,
        exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\x00\x00\xff\xff\x00\x00")
    result = run_downpool("pyramid", source, "-o", tmp_path / "o.zarr")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"downpool: warning: {source}: Corrupt EXIF data"), lines
    assert lines[1].startswith(f"downpool: wrote {tmp_path / 'o.zarr'}: 1 levels"), lines
    assert ".py:" not in result.stderr


def test_control_characters_in_paths_are_escaped(tmp_path):
    """A newline in a name cannot print a line of its own, nor an escape sequence reach
    the terminal."""
    fake = "x\ndownpool: wrote fake.zarr: 5 levels\n.png"
    (tmp_path / fake).write_bytes(b"not an image")
    result = run_downpool("pyramid", tmp_path / fake, "-o", tmp_path / "o.zarr")
    line = _one_error(result, str(tmp_path / fake).replace("\n", "\\n"))
    assert "x\\ndownpool: wrote fake.zarr: 5 levels\\n.png: " in line
    source = save(tmp_path / "a.png", textured_image((8, 8, 3)))
    result = run_downpool("pyramid", source, "-o", tmp_path / "red\x1b[31m.zarr")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "red\\x1b[31m.zarr" in result.stderr
    assert (tmp_path / "red\x1b[31m.zarr").is_dir()  # the name itself is kept


def test_with_stderr_closed_the_pyramid_is_still_made(tmp_path):
    """Closed descriptor 2 (``2>&-``): the first file opened would take its number, and
    libtiff's words would land in it; the run points it at /dev/null and does the job."""
    source = save(tmp_path / "a.png", textured_image((40, 30, 3), seed=15))
    command = " ".join(f"'{part}'" for part in [*downpool_command(), "pyramid", str(source),
                                                "-o", str(tmp_path / "a.zarr"), "--levels",
                                                "2", "--chunks", "16"])
    run = subprocess.run(["sh", "-c", f"{command} 2>&-"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout
    assert len(_levels(tmp_path / "a.zarr")) == 2


# --- temporaries -------------------------------------------------------------------


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(tmp_path):
    """``kill -9`` leaves the half-made pyramid under its temporary name, which the
    stale-temporary cleaner knows: the next run into that folder removes it."""
    array = tmp_path / "in.zarr"
    zarr.create_array(str(array), data=textured_image((1200, 1000), seed=16),
                      chunks=(100, 100))
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.Popen([*downpool_command(), "pyramid", str(array), "-o",
                            str(out / "slow.zarr"), "--chunks", "16"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in out.iterdir() if p.name.endswith(".downpool-tmp")]:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    [left] = [p for p in out.iterdir() if p.name.endswith(".downpool-tmp")]
    assert left.is_dir() and left.name.startswith(".slow.zarr.")
    source = save(tmp_path / "a.png", textured_image((8, 8, 3)))
    result = run_downpool("pyramid", source, "-o", out / "a.zarr")
    assert result.returncode == 0, result.stderr
    assert "downpool: removed 1 temporary left by a run that was killed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.zarr"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
