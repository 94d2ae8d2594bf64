"""What C libraries (libtiff, libjpeg, libpng) print, caught instead of mixed into ours.

libtiff writes its warnings and errors straight to file descriptor 2.  In a
batch, and worse with ``-j`` workers, those bytes land in the middle of
downpool's own lines.  :func:`capture` points descriptor 2 at a temporary
file while one file is decoded and encoded, and hands back the lines, which
the command reports as that file's warnings, or adds to its error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import Iterator

from .interrupts import hold_stop_signals, release_stop_signals

__all__ = ["capture", "LOCK"]

#: Held while descriptor 2 points elsewhere: a batch's threads capture one
#: at a time, and the command's own lines (summary, warnings, progress bar)
#: wait, so that they are never caught as a file's words.
LOCK = threading.RLock()


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect what is written to file descriptor 2 inside the block, as stripped lines.

    The list it yields is filled when the block ends.  Python's own
    ``sys.stderr`` is flushed first, so nothing written before is caught.
    Descriptor 2 is swapped and put back with the stop signals held
    (:func:`~downpool.interrupts.hold_stop_signals`): a SIGTERM raised
    between the swap and the ``try`` (or on the way into the ``finally``)
    once left it pointing at the temporary file, and the interrupted batch's
    summary went there instead of to the terminal.
    """
    with LOCK:
        with _captured() as lines:
            yield lines


@contextlib.contextmanager
def _captured() -> Iterator[list[str]]:
    lines: list[str] = []
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    saved = sink = None
    held = hold_stop_signals()
    try:
        saved = os.dup(2)
        sink = tempfile.TemporaryFile()
        os.dup2(sink.fileno(), 2)
        release_stop_signals(held)  # a signal held until now is raised here, inside the try
        yield lines
    finally:
        held = None
        try:
            held = hold_stop_signals()
        finally:  # put back even where a signal came just before the hold
            try:
                _put_back(saved, sink, lines)
            finally:
                if held is not None:
                    release_stop_signals(held)


def _put_back(saved: int | None, sink, lines: list[str]) -> None:
    """Point descriptor 2 at ``saved`` again and add what ``sink`` caught to ``lines``."""
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
    if sink is not None:
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
        sink.close()
        lines.extend(line.strip() for line in text.splitlines() if line.strip())
