"""The ``downpool`` console script: stop signals handled first, then the command.

Everything between the interpreter's start and the command is kept small
(``import downpool`` imports nothing), so that a Ctrl-C or a SIGTERM in the
first moments also ends with a summary line and the signal's exit status
(130, 143, 129), not a traceback.  What Python does before any of its code
runs (its own start-up and ``site``) cannot be handled by a Python program.
"""

from __future__ import annotations

import sys
import time

__all__ = ["main"]


def _hold_standard_descriptors() -> None:
    """Point descriptors 0-2 that are closed (``2>&-``) at /dev/null: the job is done all
    the same, only the messages are lost.

    Else the first files opened get those numbers: what libtiff writes to
    descriptor 2 would land in one (an output's temporary file, a chunk of a
    pyramid), and the capture of C libraries' lines
    (:mod:`downpool.native_stderr`), which swaps descriptor 2 itself, fails.
    Python starts with ``sys.stderr`` None then: it gets the new descriptor.
    """
    import os

    for fd in (0, 1, 2):  # in order: each open takes the lowest free number, this one
        try:
            os.fstat(fd)
        except OSError:
            try:
                os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if fd == 2:
                sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace",
                                  closefd=False)
            elif fd == 1:
                sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace",
                                  closefd=False)


def main() -> None:
    """Run the ``downpool`` command (``downpool.cli.main``) under :mod:`downpool.interrupts`."""
    from .interrupts import Stopped, exit_status, raise_on_stop_signals

    start = time.perf_counter()
    _hold_standard_descriptors()
    raise_on_stop_signals()
    try:
        from .cli import main as command

        command(prog_name="downpool")
    except Stopped as stop:
        words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
        if words[:1] == ["shrink"]:
            # Before the batch began (or after it ended): nothing was half done.
            message = (f"downpool: 0 done, 0 skipped, 0 failed in {time.perf_counter() - start:.1f} s; "
                       "interrupted before the batch began")
        else:
            message = "downpool: interrupted"
        try:
            print(message, file=sys.stderr)
        except Exception:  # noqa: BLE001 - stderr gone (a closed terminal): exit all the same
            pass
        sys.exit(exit_status(stop))
