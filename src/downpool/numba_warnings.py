"""The Numba warning downpool hides, by its message.

Pure Python, so that the command can filter it in a file's warnings before
Numba is imported.
"""

__all__ = ["NUMBA_SCOPE_WARNING"]

#: The message of a pedantic Numba self-check ("variable ... is not in scope")
#: that compiling the block kernels raises; the code is right, so it is
#: filtered (:mod:`downpool.numba_idioms`, and ``shrink``'s per-file capture).
#: The leading ``.*``: where colorama is installed, Numba wraps its messages in
#: terminal markup ("\x1b[1m..."), and a warnings filter matches from the
#: message's start.
NUMBA_SCOPE_WARNING = r".*variable '.*' is not in scope"
