"""Signals that stop the ``downpool`` command, as an exception that unwinds like Ctrl-C.

The console script (:mod:`downpool.console`) installs :func:`raise_on_stop_signals`
before it imports anything else.  SIGINT (Ctrl-C), SIGTERM (``kill``,
``timeout``, systemd, ``docker stop``) and SIGHUP (the terminal closed) then
raise :class:`Stopped`, so that every ``finally`` and ``except BaseException``
on the way out runs: temporary files are removed, the summary is printed.
:class:`Stopped` is not a ``KeyboardInterrupt``, so click, which turns that
into "Aborted!" and exit status 1, lets it through.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["Stopped", "STOP_SIGNALS", "INTERRUPTS", "raise_on_stop_signals", "ignore_stop_signals",
           "exit_status", "hold_stop_signals", "release_stop_signals"]

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class Stopped(BaseException):
    """A stop signal reached the command; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


#: What code that stops cleanly on Ctrl-C catches: a library caller's
#: KeyboardInterrupt, and the command's Stopped.
INTERRUPTS = (KeyboardInterrupt, Stopped)


#: The main thread's open :func:`hold_stop_signals`, and the first stop signal
#: that came meanwhile.  Blocking a signal on the main thread is not enough:
#: the kernel hands it to another thread, and Python still runs the handler
#: on the main thread at its next check, inside the step being held.
_held = 0
_pending: int | None = None


def _raise_stopped(signum: int, frame: object) -> None:
    global _pending
    if _held:
        _pending = _pending or signum
        return
    raise Stopped(signum)


def raise_on_stop_signals() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)


def exit_status(stop: BaseException) -> int:
    """The shell's status for a process stopped by a signal: 128 + its number (Ctrl-C: 130)."""
    return 128 + (stop.signum if isinstance(stop, Stopped) else signal.SIGINT)


def ignore_stop_signals() -> None:
    """Ignore further stop signals, where :func:`raise_on_stop_signals` set them up.

    Called once a batch has stopped and its summary is being printed, so that
    a second signal cannot cut the summary short.  A library caller's own
    handlers are left as they are.
    """
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is _raise_stopped:
            signal.signal(signum, signal.SIG_IGN)


def hold_stop_signals() -> object:
    """Hold the stop signals on this thread, for a step that must not be cut in two.

    They are blocked (so that processes started meanwhile inherit them
    blocked), and on the main thread :class:`Stopped` waits too.  Returns
    what :func:`release_stop_signals` takes.
    """
    global _held
    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        _held += 1
    mask = (signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            if hasattr(signal, "pthread_sigmask") else None)
    return on_main, mask


def release_stop_signals(held: object) -> None:
    """Undo :func:`hold_stop_signals`; a signal held meanwhile is raised here."""
    global _held, _pending
    on_main, mask = held  # type: ignore[misc]
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a blocked signal's handler runs here
    if on_main:
        _held -= 1
        if not _held and _pending is not None:
            signum, _pending = _pending, None
            raise Stopped(signum)
