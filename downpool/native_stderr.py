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
from typing import Iterator

__all__ = ["capture"]


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect what is written to file descriptor 2 inside the block, as stripped lines.

    The list it yields is filled when the block ends.  Python's own
    ``sys.stderr`` is flushed first, so nothing written before is caught.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())
    finally:
        os.close(saved)
