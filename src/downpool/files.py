"""Putting finished file contents in place without damaging anything.

Regular files are written atomically: the bytes go to a temporary file in the
target's folder, which is flushed, then renamed to the target, so the target
is either untouched or whole, whatever happens.  Nothing is ever renamed over
something that is not a regular file:

- a FIFO or a character device (``/dev/null``, a terminal) is a stream: the
  bytes are written into it, and it stays what it is;
- a symbolic link is written through: its target is replaced (atomically, in
  the target's folder) and the link is kept;
- a folder, a block device or a socket is refused.

Temporary files are named ``.<target name>.<pid>-<host>-<random>.downpool-tmp``,
so that a later run can tell one left behind by a process that died (a
``kill -9``, a power cut) from one that another run is writing now, and
remove only the former (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import secrets
import shutil
import socket
import stat
import time
from typing import BinaryIO, Callable

__all__ = ["TEMP_SUFFIX", "OutputRefused", "output_is_stream", "put_file", "temp_file_name",
           "remove_stale_temporaries"]

TEMP_SUFFIX = ".downpool-tmp"

# As tempfile.mkstemp opens its files: new, private, not through a symlink.
_TEMP_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_STREAM_FLAGS = os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)

# Names are at most 255 bytes on common filesystems; the temporary name adds
# about 40 to the target's.
_MAX_NAME_BYTES = 200
_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()
_TEMP_NAME = re.compile(r"\.(\d+)-([0-9a-f]{6})-[0-9a-f]{6}" + re.escape(TEMP_SUFFIX) + "$")
# Before process ids were part of the name: ".<name>.<8 hex>.downpool-tmp".
_OLD_TEMP_NAME = re.compile(r"\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
_STALE_ELSEWHERE_SECONDS = 24 * 3600  # another host's, or an old version's, temporary


class OutputRefused(OSError):
    """The output path is something downpool does not write to (a folder, a device, a socket)."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def output_is_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` (after symbolic links) is a FIFO or a character device."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def temp_file_name(target: str) -> str:
    """A fresh temporary name for ``target``, in its folder."""
    folder, name = os.path.split(target)
    encoded = name.encode("utf-8", "surrogateescape")[:_MAX_NAME_BYTES]
    short = encoded.decode("utf-8", "ignore") if len(encoded) < len(name.encode("utf-8", "surrogateescape")) else name
    return os.path.join(folder, f".{short}.{os.getpid()}-{_HOST}-{secrets.token_hex(3)}{TEMP_SUFFIX}")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _rename_no_clobber(source: str, target: str) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (``FileExistsError``)."""
    try:
        # link() fails if the target exists, so no other writer is clobbered.
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links: check, then rename (a small race).
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "File exists", target) from None
        os.replace(source, target)
        return
    os.unlink(source)


def _write_stream(path: str, data: bytes) -> None:
    fd = os.open(path, _STREAM_FLAGS)
    with os.fdopen(fd, "wb", buffering=0) as stream:
        view = memoryview(data)
        while view:
            written = stream.write(view)
            view = view[written:]


def _collected(write: Callable[[BinaryIO], None]) -> bytes:
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def put_file(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None],
             replace: bool = True) -> None:
    """Put ``data`` at ``path``: atomically for a regular file, into it for a stream.

    Parameters
    ----------
    path : str or path-like
        The target.  See the module docstring for FIFOs, devices and links.
    data : bytes or callable
        The whole file, or a function that writes it into the seekable
        binary file it is given, which it may read back (the temporary file,
        so that a big file is never held in memory; for a FIFO or device, a
        buffer written there once the function returns).
    replace : bool
        Replace an existing regular file.  If False and one exists at the
        target (even one that appeared while writing), ``FileExistsError`` is
        raised and nothing is replaced.  Streams are written either way.

    Raises
    ------
    OutputRefused
        The target is a folder, a block device or a socket.
    OSError
        The folder is missing or not writable, the disk is full ...; the
        error names ``path``, never the temporary file.
    """
    path = os.fspath(path)
    target = path
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
        if os.path.islink(path):  # a dangling link: create what it points to
            target = os.path.realpath(path)
    if mode is not None:
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            _write_stream(path, _collected(data) if callable(data) else data)
            return
        if not stat.S_ISREG(mode):
            raise OutputRefused(errno.EINVAL, f"is {_kind(mode)}; downpool writes regular files, "
                                              "FIFOs and character devices", path)
        target = os.path.realpath(path)
    temp_path = None
    try:
        # Not tempfile.mkstemp: a Ctrl-C raised as its open() returns would
        # leave a file whose name we never got. Here the name is known first.
        for _ in range(100):
            temp_path = temp_file_name(target)
            try:
                fd = os.open(temp_path, _TEMP_FLAGS, 0o600)
                break
            except FileExistsError:
                temp_path = None  # another writer's file, not ours to remove
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary file name", target)
        with os.fdopen(fd, "w+b") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # The file is made private (0600); an output gets the usual mode.
        os.chmod(temp_path, 0o666 & ~_current_umask())
        if replace:
            try:
                current = os.lstat(target).st_mode
            except FileNotFoundError:
                current = None
            if current is not None and not stat.S_ISREG(current):
                # Something else took the target's place while we wrote.
                raise OutputRefused(errno.EINVAL, f"is now {_kind(current)}; not replaced", path)
            os.replace(temp_path, target)
        else:
            _rename_no_clobber(temp_path, target)
    except BaseException as exc:
        if temp_path is not None:
            try:
                os.unlink(temp_path)
            except OSError:  # gone already (renamed), or never made
                pass
        if isinstance(exc, OSError) and exc.filename is not None and exc.filename in (temp_path, target):
            exc.filename = path
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    try:  # a process that died and is not yet reaped (a zombie) writes no more
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files (and ``pyramid``'s temporary folders) that runs which died
    left in ``folder``; return their paths.

    A temporary of this host whose process is gone is stale; one of another
    host (a shared folder), or one named by an earlier version of downpool,
    is stale once it is a day old (a folder only where it is this host's).  A live
    run's temporary is left alone.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        folder_kind = stat.S_ISDIR(info.st_mode)  # a pyramid being written (downpool pyramid)
        if not (stat.S_ISREG(info.st_mode) or folder_kind):
            continue
        match = _TEMP_NAME.search(name)
        if match and match[2] == _HOST:
            stale = not _alive(int(match[1]))
        elif folder_kind:  # another host's may still be written: its mtime says too little
            continue
        elif match or _OLD_TEMP_NAME.search(name):
            stale = now - info.st_mtime > _STALE_ELSEWHERE_SECONDS
        else:
            continue
        if stale:
            try:
                if folder_kind:
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(entry.path)
            except OSError:
                pass
    return removed
