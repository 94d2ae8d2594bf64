"""How much memory this process may still take before the system kills it.

``downpool shrink`` refuses an image whose working memory would not fit, up
front and with a one-line error, instead of being killed by the kernel's
out-of-memory killer half way through a batch (which loses every file after
it, and the summary).  The limit is the smallest of what applies:

- the system's available memory (``MemAvailable`` in ``/proc/meminfo``);
- the control group's limit less its usage (cgroup v2 ``memory.max``, v1
  ``memory.limit_in_bytes``): a container's or a systemd unit's limit;
- the process's own limits less what it uses (``RLIMIT_AS`` against its
  virtual size, ``RLIMIT_DATA`` against its data size: ``ulimit -v``, ``-d``).

Where none can be read (not Linux), nothing is refused on these grounds.
"""

from __future__ import annotations

import os
import re

__all__ = ["available_bytes", "parse_size", "format_bytes", "memory_limit", "over_the_limit",
           "PROCESS_BASE_BYTES"]

#: What a downpool process holds before any image (Python, NumPy, Numba and the
#: kernels, Dask where it is used): left out of what ``--max-memory auto`` gives.
PROCESS_BASE_BYTES = 250 * 2**20

_CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _proc_field(path: str, field: str) -> int | None:
    """A ``Name:   N kB`` field of a /proc file, in bytes."""
    text = _read(path)
    match = re.search(rf"^{field}:\s+(\d+)\s*kB", text or "", re.MULTILINE)
    return int(match[1]) * 1024 if match else None


def _cgroup_room() -> int | None:
    """The process's control group limit less its usage, where a limit is set."""
    text = _read("/proc/self/cgroup") or ""
    rooms = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], parts[2].strip()
        if controllers == "":  # cgroup v2: the limits of every ancestor apply
            folder = os.path.join(_CGROUP_ROOT, path.lstrip("/"))
            while True:
                limit, usage = _read(os.path.join(folder, "memory.max")), _read(os.path.join(folder, "memory.current"))
                if limit and usage and limit.strip() != "max":
                    rooms.append(int(limit) - int(usage))
                if os.path.normpath(folder) == _CGROUP_ROOT or folder == "/":
                    break
                folder = os.path.dirname(folder)
        elif "memory" in controllers.split(","):  # cgroup v1
            folder = os.path.join(_CGROUP_ROOT, "memory", path.lstrip("/"))
            limit = _read(os.path.join(folder, "memory.limit_in_bytes"))
            usage = _read(os.path.join(folder, "memory.usage_in_bytes"))
            if limit and usage and int(limit) < 2**60:
                rooms.append(int(limit) - int(usage))
    return min(rooms) if rooms else None


def _rlimit_rooms() -> list[int]:
    try:
        import resource
    except ImportError:
        return []
    rooms = []
    for limit_name, field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        limit = getattr(resource, limit_name, None)
        if limit is None:
            continue
        soft, _ = resource.getrlimit(limit)
        used = _proc_field("/proc/self/status", field)
        if soft != resource.RLIM_INFINITY and used is not None:
            rooms.append(soft - used)
    return rooms


def available_bytes() -> int | None:
    """The most memory this process can take now without being refused or killed, or None."""
    rooms = [room for room in (_proc_field("/proc/meminfo", "MemAvailable"), _cgroup_room())
             if room is not None]
    rooms += _rlimit_rooms()
    return max(0, min(rooms)) if rooms else None


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


#: The largest size taken: more than any machine has (and than a float counts exactly).
MAX_SIZE = 2**60


def parse_size(text: str) -> int:
    """``"2G"``, ``"500M"``, ``"1.5g"``, ``"4096"`` -> bytes (binary units; ``B``/``iB`` optional).

    The number is read exactly (a decimal, not a float), and a size above
    :data:`MAX_SIZE` (1 EiB) is a ``ValueError``, not an overflow.
    """
    from decimal import Decimal

    match = re.fullmatch(r"\s*(\d{1,30}(?:\.\d{1,30})?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        if re.fullmatch(r"\s*\d{31,}.*", text):
            raise ValueError(f"{text[:20]}... is more than 1 EiB (use 0 for no limit)")
        raise ValueError(f"expected a size such as 4G, 500M or 1.5G; got {text!r}")
    size = int(Decimal(match[1]) * _UNITS[match[2]])
    if size > MAX_SIZE:
        raise ValueError(f"{text.strip()} is more than 1 EiB (use 0 for no limit)")
    return size


def format_bytes(count: float) -> str:
    """``1536 * 2**20`` -> ``"1.5 GiB"``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


def memory_limit(option: str, shares: int = 1, processes: int = 1) -> tuple[int | None, bool]:
    """The bytes each of ``shares`` images in flight may take, from ``--max-memory``, and
    whether it was "auto" (None: no limit).

    "auto": what the system has left (:func:`available_bytes`) less
    :data:`PROCESS_BASE_BYTES` for each of ``processes`` processes, divided
    between the ``shares``; a size (:func:`parse_size`; 0: no limit) is each
    one's.  A bad size is a ``ValueError``.
    """
    if option.strip().lower() != "auto":
        return (parse_size(option) or None), False
    available = available_bytes()
    if available is None:
        return None, True
    return max(0, available - PROCESS_BASE_BYTES * processes) // shares, True


def over_the_limit(limit: int, is_auto: bool, jobs: int = 1, advice: tuple[str, ...] = ()) -> str:
    """How a refusal says the memory it needs is over ``limit``: "above --max-memory X", or,
    for "auto", "more than the X this run has[, shared by N files at a time (-j)]; free
    memory[, use a smaller -j][, advice] or set --max-memory"."""
    if not is_auto:
        return f"above --max-memory {format_bytes(limit)}"
    shared = f", shared by {jobs} files at a time (-j)" if jobs > 1 else ""
    steps = ["free memory", *(["use a smaller -j"] if jobs > 1 else []), *advice]
    return (f"more than the {format_bytes(limit)} this run has{shared}; {', '.join(steps)} "
            "or set --max-memory")
