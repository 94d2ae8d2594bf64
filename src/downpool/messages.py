"""The lines the commands print about a file: one line each, with what libraries said.

- :func:`one_line` writes control characters (a newline or an escape sequence
  in a file name) as escapes, so that a crafted name cannot print a line of
  its own, a fake summary say, or move the cursor.
- :func:`caught` collects the Python warnings raised and what C libraries
  (libtiff, libjpeg) print on descriptor 2 while one file is read and written.
- :func:`fold` puts those words into the file's error, or makes them its
  warnings: libvips' log of a file it failed to decode and libtiff's lines
  say why it failed.

Pure Python: the commands import it before any codec.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Iterator

__all__ = ["one_line", "caught", "Caught", "fold"]

#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with each control character as its escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@dataclasses.dataclass
class Caught:
    """What :func:`caught` collected: ``messages`` (Python warnings, one line each) and
    ``native`` (lines written on descriptor 2), filled when the block ends."""

    messages: list[str] = dataclasses.field(default_factory=list)
    native: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def caught() -> Iterator[Caught]:
    """Collect the warnings and C libraries' lines of the block (one file, in one thread).

    Every warning is recorded ("always"), except Numba's pedantic self-check
    that compiling a kernel can raise (:data:`downpool.numba_warnings.NUMBA_SCOPE_WARNING`).
    """
    import warnings

    from .native_stderr import capture
    from .numba_warnings import NUMBA_SCOPE_WARNING

    words = Caught()
    recorded: list = []
    native: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as recorded, capture() as native:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", message=NUMBA_SCOPE_WARNING)
            yield words
    finally:
        words.messages.extend(" ".join(str(w.message).split()) for w in recorded)
        words.native.extend(native)


def fold(error: str | None, messages: list[str], native: list[str],
         ) -> tuple[str | None, tuple[str, ...]]:
    """The file's error (None where it did not fail) and its warnings, with the words added.

    Pillow hands libtiff a stream it names "tempfile.tif": its lines are
    said to be libtiff's.  Where the file failed, libvips' log (warnings that
    start with "libvips: ") goes inside the error's parenthesis
    ("... damaged (libpng read error; IDAT: CRC error)"), and the C
    libraries' lines after it; else they are warnings.  Repeats are said once.
    """
    native = [line.replace("tempfile.tif: ", "libtiff: ", 1) for line in native]
    messages = list(messages)
    if error is not None:
        logged = [m.removeprefix("libvips: ").removeprefix("VIPS: ") for m in messages
                  if m.startswith("libvips: ")]
        messages = [m for m in messages if not m.startswith("libvips: ")]
        if logged:
            words = "; ".join(dict.fromkeys(logged))
            error = f"{error[:-1]}; {words})" if error.endswith(")") else f"{error} ({words})"
        if native:
            error = f"{error} ({'; '.join(native)})"
    else:
        messages += native
    return error, tuple(dict.fromkeys(messages))
