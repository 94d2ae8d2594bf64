"""``shrink`` given hostile names and arguments: one line each, the batch goes on.

Each case makes its files itself and runs the installed command.
"""

from __future__ import annotations

import os
import socket
import subprocess

import numpy as np
import pytest
from PIL import Image

from cli_helpers import downpool_command, load, no_traceback, run_downpool, save, summary

#: 2x2 blocks of one colour each: their average is exact.
BLOCKS = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
PIXELS = BLOCKS.repeat(2, axis=0).repeat(2, axis=1)


def _errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("downpool: error: ")]


def test_an_output_name_too_long_fails_that_file_and_the_batch_goes_on(tmp_path):
    """A 250-byte name gets a 259-byte output name (``_softpool`` added): that file fails
    with one line, the others are done, and the summary is printed."""
    long_name = "x" * 246 + ".png"
    save(tmp_path / long_name, PIXELS)
    save(tmp_path / "a.png", PIXELS)
    result = run_downpool("shrink", tmp_path)
    no_traceback(result)
    assert result.returncode == 1
    assert summary(result).startswith("downpool: 1 done, 0 skipped, 1 failed")
    [error] = _errors(result)
    assert error.startswith(f"downpool: error: {tmp_path / long_name}: output name xxxx")
    assert error.endswith("is 259 bytes, more than the 255 a file name may have here; "
                          "choose a shorter --name or -o")
    assert (tmp_path / "a_softpool.png").is_file()


@pytest.mark.parametrize("args", [
    lambda tmp: [tmp / "a.png", "-o", tmp / ("b" * 300 + ".png")],
    lambda tmp: [tmp / "a.png", "--name", "{stem:>300}{ext}"],
    lambda tmp: [tmp / "a.png", "-o", f"{tmp / 'out'}/", "--name", "{stem:>300}{ext}"],
    lambda tmp: [tmp / ("c" * 300 + ".png")],
], ids=["300-byte -o", "--name 300", "--name 300 in a folder", "300-byte input"])
def test_names_past_the_file_systems_limit_are_one_line_errors(tmp_path, args):
    save(tmp_path / "a.png", PIXELS)
    result = run_downpool("shrink", *args(tmp_path))
    no_traceback(result)
    assert result.returncode == 1
    assert len(_errors(result)) == 1 and "bytes, more than the 255" in _errors(result)[0]
    assert summary(result).startswith("downpool: 0 done, 0 skipped, 1 failed")


def test_folders_nested_past_the_recursion_limit_are_walked_and_mirrored(tmp_path,
                                                                        monkeypatch):
    """1,050 folders deep with -r: os.walk and os.makedirs recurse (Python 3.11) and ran out
    of the recursion limit; the tree is walked and mirrored."""
    deep = tmp_path / "in"
    deep.mkdir()
    monkeypatch.chdir(deep)  # the test's own working folder, put back after it
    for _ in range(1050):  # short relative names: the absolute path would pass PATH_MAX
        os.mkdir("d")
        os.chdir("d")
    Image.fromarray(PIXELS).save("bottom.png")
    save(deep / "top.png", PIXELS)
    try:
        result = run_downpool("shrink", "in", "-r", "-o", "out", "-m", "avg", cwd=tmp_path)
        no_traceback(result)
        assert result.returncode == 0, result.stderr
        assert summary(result).startswith("downpool: 2 done")
        bottom = os.path.join("out", *["d"] * 1050, "bottom.png")
        assert load(tmp_path / bottom)[0].shape == (6, 5, 3)
        assert (tmp_path / "out" / "top.png").is_file()
    finally:  # pytest's clean-up of old temporary folders recurses, as os.walk does
        for tree in ("in", "out"):
            _remove_deep_tree(tmp_path / tree)


def _remove_deep_tree(top) -> None:
    """Remove ``top``, a folder whose subfolders ``d`` nest deep, without recursion."""
    if not top.is_dir():
        return
    os.chdir(top)
    try:
        depth = 0
        while os.path.isdir("d"):
            os.chdir("d")
            depth += 1
        for _ in range(depth + 1):
            for name in os.listdir("."):
                if name != "d":
                    os.remove(name)
            if os.path.isdir("d"):
                os.rmdir("d")
            os.chdir("..")
        os.rmdir(top)
    finally:
        os.chdir(top.parent)


@pytest.mark.parametrize("option, value, words", [
    ("--max-memory", "9" * 400, "is more than 1 EiB (use 0 for no limit)"),
    ("--max-memory", "2000000T", "2000000T is more than 1 EiB"),
    ("--scheduler", "tcp://", "is not a scheduler address such as tcp://HOST:PORT"),
    ("--scheduler", "tcp://host", "missing port number"),
    ("--scheduler", "udp://host:1", "unknown protocol 'udp'"),
    ("--scheduler", "tcp://:8786", "no host"),
])
def test_out_of_range_options_are_usage_errors(tmp_path, option, value, words):
    save(tmp_path / "a.png", PIXELS)
    result = run_downpool("shrink", tmp_path / "a.png", "-o", tmp_path / "b.png", option, value)
    no_traceback(result)
    assert result.returncode == 2
    assert words in result.stderr and f"Invalid value for {option}" in result.stderr
    assert not (tmp_path / "b.png").exists()


def test_a_kernel_larger_than_any_integer_the_arrays_hold(tmp_path):
    """-k 10^20 is one window of the whole image (SPEC 2: one output where H < k)."""
    save(tmp_path / "a.png", PIXELS)
    for k in ("100000000000000000000", "12"):
        result = run_downpool("shrink", tmp_path / "a.png", "-o", tmp_path / f"k{k[:3]}.png",
                              "-k", k, "-m", "avg")
        no_traceback(result)
        assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(load(tmp_path / "k100.png")[0], load(tmp_path / "k12.png")[0])
    assert load(tmp_path / "k100.png")[0].shape == (1, 1, 3)


def test_a_scheduler_that_cannot_be_reached_is_one_line(tmp_path):
    save(tmp_path / "a.png", PIXELS)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    result = subprocess.run([*downpool_command(), "shrink", str(tmp_path / "a.png"), "-o",
                             str(tmp_path / "b.png"), "--scheduler", f"tcp://127.0.0.1:{port}"],
                            capture_output=True, text=True, env=env, timeout=120)
    no_traceback(result)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines()
        if line.startswith(f"downpool: error: cannot reach the Dask scheduler at "
                           f"tcp://127.0.0.1:{port}: ")]
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "b.png").exists()


def test_with_stderr_closed_the_job_is_done(tmp_path):
    """``2>&-``: the file is written and the exit status says how it went; only the
    messages are lost."""
    save(tmp_path / "a.png", PIXELS)
    command = [*downpool_command(), "shrink", str(tmp_path / "a.png"), "-o",
               str(tmp_path / "b.png"), "-m", "avg"]
    done = subprocess.run(command, stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2),
                          timeout=120)
    assert done.returncode == 0
    np.testing.assert_array_equal(load(tmp_path / "b.png")[0], BLOCKS)
    again = subprocess.run(command, stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2),
                           timeout=120)
    assert again.returncode == 1  # b.png exists: refused, silently


def test_with_stdout_and_stderr_closed_no_output_takes_their_numbers(tmp_path):
    """``>&- 2>&-``: the files the command opens do not get descriptors 1 and 2 (where a
    C library's words would land in them); the job is done."""
    save(tmp_path / "a.png", PIXELS)
    done = subprocess.run([*downpool_command(), "shrink", str(tmp_path / "a.png"), "-o",
                           str(tmp_path / "b.tif"), "-m", "avg"], stdin=subprocess.DEVNULL,
                          preexec_fn=lambda: (os.close(1), os.close(2)), timeout=120)
    assert done.returncode == 0
    np.testing.assert_array_equal(load(tmp_path / "b.tif")[0], BLOCKS)
