"""End-to-end tests of ``downpool shrink`` under faults: nothing replaced that is not a
regular file, nothing left behind by a signal, no process outliving the command, no
batch killed by one huge image, and every problem said in one line.

Each test makes its own case (device nodes, FIFOs, links, sockets, signals,
concurrent runs, a PNG that declares a huge image) and runs the installed command.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import downpool
from cli_helpers import (downpool_command, load, no_traceback, png_chunk, run_downpool, save,
                         summary, temp_files)
from helpers import textured_image


# --- outputs that are not regular files ----------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_a_character_device_output_is_written_into_and_stays_a_device(tmp_path):
    """``-o /dev/null --overwrite`` once turned /dev/null into a regular file (as root)."""
    source = save(tmp_path / "a.png", textured_image((8, 8, 3)))
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the null device
    for extra in ([], ["--overwrite"]):
        result = run_downpool("shrink", source, "-o", null, *extra)
        assert result.returncode == 0, result.stderr
        assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert temp_files(tmp_path) == []


def test_a_fifo_output_gets_the_file_and_stays_a_fifo(tmp_path):
    pixels = textured_image((10, 12, 3), seed=1)
    source = save(tmp_path / "a.png", pixels)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run_downpool("shrink", source, "-o", fifo, "--overwrite", "--method", "avg")
    reader.join(30)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "received.png").write_bytes(received[0])
    np.testing.assert_array_equal(load(tmp_path / "received.png")[0],
                                  downpool.downscale(pixels, "avg"))
    assert temp_files(tmp_path) == []


def test_a_symlink_output_is_written_through_and_other_special_files_are_refused(tmp_path):
    pixels = textured_image((10, 12, 3), seed=2)
    source = save(tmp_path / "a.png", pixels)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = save(elsewhere / "target.png", textured_image((4, 4, 3)))
    link = tmp_path / "link.png"
    link.symlink_to(target)
    result = run_downpool("shrink", source, "-o", link, "--method", "avg")
    assert result.returncode == 1 and "exists (use --overwrite" in result.stderr
    result = run_downpool("shrink", source, "-o", link, "--method", "avg", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link is kept ...
    np.testing.assert_array_equal(load(target)[0], downpool.downscale(pixels, "avg"))  # ... and followed
    assert temp_files(tmp_path) == []

    sock_path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        result = run_downpool("shrink", source, "-o", sock_path, "--overwrite")
    finally:
        server.close()
    assert result.returncode == 1
    assert f"cannot write {sock_path}: is a socket" in result.stderr
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    no_traceback(result.stderr)


# --- signals -----------------------------------------------------------------------------------


def _batch(folder: Path, count: int = 12, side: int = 400) -> None:
    for i in range(count):
        save(folder / f"img{i:02d}.png", textured_image((side, side, 3), seed=i))


def _start(args: list, out: Path, written: int = 2) -> subprocess.Popen:
    """Start the command in a session of its own; return once ``written`` outputs exist."""
    process = subprocess.Popen([*downpool_command(), *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len([p for p in out.iterdir() if p.suffix == ".png"]) >= written:
            return process
        time.sleep(0.005)
    process.kill()
    raise AssertionError("the batch ended (or never began) before the signal: make it longer")


def _main_pid(process: subprocess.Popen) -> int:
    """The Python process of the command (the console script may run through a shim)."""
    for candidate in [process.pid, *_group(process.pid)]:
        try:
            command_line = Path(f"/proc/{candidate}/cmdline").read_bytes()
        except OSError:
            continue
        if b"shrink" in command_line and b"multiprocessing" not in command_line:
            child_commands = [Path(f"/proc/{c}/cmdline").read_bytes() for c in _children(candidate)]
            if not any(b"shrink" in c and b"multiprocessing" not in c for c in child_commands):
                return candidate
    return process.pid


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_group_gone(pgid: int, seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = _group(pgid)
        if not left:
            return []
        time.sleep(0.05)
    return _group(pgid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("jobs", [["-j", "1"], ["-j", "2"], ["-j", "2", "--processes"]],
                         ids=["serial", "threads", "processes"])
def test_sigterm_mid_batch_drops_files_in_flight_and_leaves_nothing_running(tmp_path, jobs):
    """``kill``, ``timeout``, systemd and ``docker stop`` send SIGTERM to the command alone.
    It once left full-size temporaries behind and, with -j 2, workers that ran on for good."""
    folder, out = tmp_path / "in", tmp_path / "out"
    _batch(folder)
    process = _start(["shrink", folder, "-o", out, "--method", "dpid", "--scale", "0.3", *jobs], out)
    os.kill(_main_pid(process), signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    no_traceback(stderr)
    assert "interrupted" in stderr and " done, " in stderr
    assert _wait_group_gone(process.pid) == []
    assert temp_files(tmp_path) == []
    written = sorted(p.name for p in out.iterdir())
    assert 2 <= len(written) < 12
    line = summary(stderr)
    done = int(line.split()[1])
    if "--processes" in jobs:
        # Known race of worker processes: a worker stopped between putting its
        # output in place and sending its result leaves a whole file that the
        # summary does not count (README, "-j").  Threads check before the rename.
        assert len(written) - 1 <= done <= len(written), line
    else:
        assert done == len(written), line
    assert line.startswith(f"downpool: {done} done, 0 skipped, 0 failed in ")
    assert line.endswith(f"; interrupted, {12 - done} not processed")
    for name in written:
        assert load(out / name)[0].shape == (120, 120, 3)  # each whole


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_the_main_process_is_killed_outright(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    _batch(folder, count=16)
    process = _start(["shrink", folder, "-o", out, "--method", "dpid", "--scale", "0.3", "-j", "2",
                      "--processes"], out)
    main = _main_pid(process)
    workers = _children(main)
    assert workers, "no worker processes found"
    os.kill(main, signal.SIGKILL)
    process.communicate(timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(map(_running, workers)):
        time.sleep(0.05)
    assert not any(map(_running, workers)), "workers outlived their parent"
    count = len([p for p in out.iterdir() if p.suffix == ".png"])
    time.sleep(0.5)
    assert len([p for p in out.iterdir() if p.suffix == ".png"]) == count  # nothing more written
    assert temp_files(out) == []  # the workers removed theirs as they went


def _hold_a_temporary(folder: Path) -> subprocess.Popen:
    """A process that is writing an output (stuck in its fsync): its temporary file is live."""
    code = f"""
import os, sys, time
os.fsync = lambda fd: (print("writing", flush=True), time.sleep(3600))
from downpool.files import put_file
put_file({str(folder / 'held.png')!r}, b"partial")
"""
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "writing"
    return holder


def test_a_killed_runs_temporaries_are_removed_and_a_live_runs_are_not(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = _hold_a_temporary(out)
    dead.kill()  # as the OOM killer or a power cut would: nothing is cleaned up
    dead.wait()
    [stale] = temp_files(out)
    live = _hold_a_temporary(out)
    try:
        live_temps = set(temp_files(out)) - {stale}
        assert len(live_temps) == 1
        save(tmp_path / "a.png", textured_image((8, 8, 3)))
        result = run_downpool("shrink", tmp_path / "a.png", "-o", out / "a.png", "--skip-existing")
        assert result.returncode == 0, result.stderr
        assert "removed 1 temporary file left by a run that was killed" in result.stderr
        assert set(temp_files(out)) == live_temps  # the live one is still there
    finally:
        live.kill()
        live.wait()


def test_ctrl_c_during_start_up_prints_the_summary_and_exits_130(tmp_path):
    """Once Python's own start-up is over (site has run), a Ctrl-C at any moment of the
    command's start-up ends with the summary and 130, never a traceback. The test knows
    when site is done from a sitecustomize that writes to a pipe."""
    source = save(tmp_path / "a.png", textured_image((8, 8, 3)))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\nfd = int(os.environ['SITE_DONE_FD'])\nos.write(fd, b'x')\nos.close(fd)\n")
    for delay in (0.01, 0.02, 0.03, 0.05, 0.08, 0.12):
        read_end, write_end = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
                   SITE_DONE_FD=str(write_end))
        process = subprocess.Popen([*downpool_command(), "shrink", str(source), "-o",
                                    str(tmp_path / "out.png"), "--overwrite"], env=env,
                                   pass_fds=(write_end,), stderr=subprocess.PIPE, text=True)
        os.close(write_end)
        assert os.read(read_end, 1) == b"x"
        os.close(read_end)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        if process.returncode == 0:
            continue  # it had finished already
        assert process.returncode == 130, (delay, stderr)
        no_traceback(stderr)
        assert "interrupted" in stderr and " done, " in stderr, stderr
    assert temp_files(tmp_path) == []



def test_ctrl_c_while_the_kernel_thread_starts_exits_130(tmp_path):
    """A Ctrl-C that arrives inside the start of the thread that loads Numba (a window of
    microseconds that the test above hit once in CI) still ends with the summary and 130.
    A sitecustomize sends the signal from within Thread.start."""
    source = save(tmp_path / "a.png", textured_image((8, 8, 3)))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, threading\n"
        "start = threading.Thread.start\n"
        "def interrupted_start(self):\n"
        "    if self.name == 'downpool-numba':\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    start(self)\n"
        "threading.Thread.start = interrupted_start\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([*downpool_command(), "shrink", str(source), "-o", str(tmp_path / "out.png")],
                            env=env, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 130, result.stderr
    no_traceback(result.stderr)
    assert "interrupted" in result.stderr, result.stderr
    assert not (tmp_path / "out.png").exists()
    assert temp_files(tmp_path) == []

# --- folders, concurrent runs, memory --------------------------------------------------------


def _as_nobody() -> bool:
    """Whether this test process can run the command as an unprivileged user."""
    if os.geteuid() != 0:
        return False
    try:
        subprocess.run([*downpool_command(), "--version"], check=True, capture_output=True,
                       preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)), timeout=60)
    except (subprocess.CalledProcessError, OSError):
        return False
    return True


def test_an_unreadable_folder_is_an_error_and_the_exit_status_is_1(tmp_path):
    tree = tmp_path / "tree"
    save(tree / "a.png", textured_image((8, 8, 3)))
    locked = tree / "locked"
    save(locked / "b.png", textured_image((8, 8, 3)))
    tree.chmod(0o755)
    tmp_path.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    locked.chmod(0o000)
    try:
        if os.geteuid() == 0 and not _as_nobody():
            pytest.skip("running as root, and the command cannot run as nobody here: "
                        "see test_unreadable_folders_are_reported_by_the_planner")
        preexec = (lambda: (os.setgid(65534), os.setuid(65534))) if os.geteuid() == 0 else None
        for args in ([tree, "-r"], [locked]):
            result = subprocess.run([*downpool_command(), "shrink", *map(str, args), "-o", str(out),
                                     "--skip-existing"], capture_output=True, text=True,
                                    preexec_fn=preexec, timeout=120)
            assert result.returncode == 1, result.stderr
            assert f"downpool: error: {locked}: cannot read this folder: Permission denied" in result.stderr
            no_traceback(result.stderr)
    finally:
        locked.chmod(0o755)


def test_unreadable_folders_are_reported_by_the_planner(tmp_path, monkeypatch):
    """The same case for any user, root included: listing the folder fails as it would."""
    from downpool.cli_shrink import plan_tasks

    tree = tmp_path / "tree"
    save(tree / "a.png", textured_image((8, 8, 3)))
    save(tree / "locked" / "b.png", textured_image((8, 8, 3)))
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    for given, found in ((tree, ["a.png"]), (tree / "locked", [])):
        tasks, refused, warnings = plan_tasks([str(given)], str(tmp_path / "out"), True, None,
                                              "avg", None)
        assert [Path(t.source).name for t in tasks] == found
        assert [(r.source, r.status, r.message) for r in refused] == [
            (str(tree / "locked"), "failed", "cannot read this folder: Permission denied")]
        assert warnings == []  # not "no image files in folder"


def test_two_runs_into_one_folder_with_skip_existing_both_succeed(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    _batch(folder, count=24, side=64)
    args = [*downpool_command(), "shrink", str(folder), "-o", str(out), "--method", "avg",
            "--skip-existing", "-q"]
    runs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(120), run.stderr.read()) for run in runs]
    done = skipped = 0
    for code, stderr in results:
        assert code == 0, stderr
        [line] = [l for l in stderr.splitlines() if " done, " in l]
        numbers = [int(word) for word in line.replace(",", "").split() if word.isdigit()]
        done, skipped = done + numbers[0], skipped + numbers[1]
        assert numbers[2] == 0, stderr  # failed
    assert done == 24 and skipped == 24  # each file made once, and skipped by the other run
    for i in range(24):
        name = f"img{i:02d}.png"
        np.testing.assert_array_equal(load(out / name)[0],
                                      downpool.downscale(load(folder / name)[0], "avg"))
    assert temp_files(out) == []


def _declared_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares a huge RGBA image (its data stops at once)."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
                     + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b""))
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory limits read from /proc")
def test_an_image_too_big_for_the_memory_left_is_refused_up_front_and_the_batch_goes_on(tmp_path):
    """A 3.9 MB PNG that decoded to 992 megapixels, under the 1-gigapixel --max-pixels,
    once got the process killed and took every other file of the batch with it. Streamed,
    such a file needs about its output: a 4-gigapixel one still does not fit."""
    import resource

    folder = tmp_path / "in"
    folder.mkdir()
    _declared_png(folder / "bomb.png", 64000, 62000)  # 3968 MP: a 1984 MP RGBA output, 7.9 GB
    pixels = textured_image((16, 16, 3), seed=3)
    save(folder / "good.png", pixels)

    def limit() -> None:  # the same on any machine: 6 GiB of data for the process
        resource.setrlimit(resource.RLIMIT_DATA, (6 * 2**30, resource.RLIM_INFINITY))

    result = subprocess.run([*downpool_command(), "shrink", str(folder), "-o", str(tmp_path / "out"),
                             "--method", "avg", "--max-pixels", "4000000000"], capture_output=True,
                            text=True, preexec_fn=limit, timeout=120)
    assert result.returncode == 1, result.stderr
    no_traceback(result.stderr)
    [error] = [l for l in result.stderr.splitlines() if l.startswith("downpool: error: ")]
    assert error.startswith(f"downpool: error: {folder / 'bomb.png'}: 64000x62000 image needs about ")
    assert "of memory to pool, more than the " in error
    assert summary(result).startswith("downpool: 1 done, 0 skipped, 1 failed")
    np.testing.assert_array_equal(load(tmp_path / "out" / "good.png")[0], downpool.downscale(pixels, "avg"))

    result = run_downpool("shrink", folder / "good.png", "--max-memory", "1K")
    assert result.returncode == 1 and "above --max-memory 1.0 KiB" in result.stderr
    result = run_downpool("shrink", folder / "good.png", "--max-memory", "0", "--overwrite")
    assert result.returncode == 0, result.stderr


_PESTERED_CAPTURE = """
import os, signal, sys, threading, time
from downpool import interrupts
from downpool.native_stderr import capture
before = os.fstat(2).st_ino
interrupts.raise_on_stop_signals()
done = threading.Event()

def pester():
    while not done.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.0002)

thread = threading.Thread(target=pester, daemon=True)
stops, end = 0, time.monotonic() + 1.0
while True:
    try:  # a Stopped may land anywhere in here, outside the inner try too
        if not thread.is_alive() and not done.is_set():
            thread.start()
        while time.monotonic() < end:
            try:
                with capture():
                    os.write(2, b"caught\\n")
            except interrupts.Stopped:
                stops += 1
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        break
    except interrupts.Stopped:
        stops += 1
done.set()
thread.join()
print(stops, os.fstat(2).st_ino == before)
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks")
def test_stop_signals_never_leave_stderr_captured():
    """A SIGTERM between capturing descriptor 2 (libtiff's messages) and the ``try`` that
    puts it back once sent an interrupted batch's summary into the capture file: CI saw
    exit 143 with nothing on stderr.  Signals every 0.2 ms for a second: with the old
    capture, fd 2 was left redirected in every run tried."""
    result = subprocess.run([sys.executable, "-c", _PESTERED_CAPTURE], capture_output=True,
                            text=True, timeout=60)
    stops, restored = result.stdout.split()
    assert int(stops) > 100  # the signals did land
    assert restored == "True"


def test_threads_opening_files_at_once_never_meet_pillows_pixel_limit(tmp_path):
    """open_image lifts Pillow's process-wide limit around its open: two threads once
    interleaved, and one opened a huge declared image under the limit the other restored
    (a DecompressionBombError, reported as an internal error, in a threaded batch)."""
    from concurrent.futures import ThreadPoolExecutor

    from downpool import io as image_io

    huge = _declared_png(tmp_path / "huge.png", 20000, 20000)  # 400 MP, above Pillow's 179 MP
    small = save(tmp_path / "small.png", textured_image((8, 8, 3)))

    def open_header(path: Path) -> tuple[int, int]:
        with image_io.open_image(path, max_pixels=None) as opened:
            return opened.header.width, opened.header.height

    paths = [huge, small] * 1000
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns inside the few lines that matter
    try:
        with ThreadPoolExecutor(4) as pool:
            sizes = list(pool.map(open_header, paths))
    finally:
        sys.setswitchinterval(switch)
    assert sizes == [(20000, 20000), (8, 8)] * 1000
