"""Start-up wall time of ``downpool`` commands with a warm Numba cache, next to the floor
of any program that loads a cached Numba function.

Run from the repository root, with ``downpool`` installed::

    python benchmarks/bench_startup.py            # 7 rounds
    python benchmarks/bench_startup.py --repeat 15

Each command runs as a fresh process, as a user would run it, after one run
that fills the cache; the rounds alternate between the commands, so that a
shared machine's drift reaches them alike, and the best and median of each
are printed.

The floor is a script that imports NumPy and Numba the way ``downpool shrink``
does (without Numba's probe for SciPy's BLAS, which ``shrink`` skips) and
calls one trivial cached ``@njit`` function: what remains of a ``shrink`` above
it is downpool's own start-up, the kernel's loading and the image's I/O.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_images" / "astronaut.png"

# The floor: Numba loaded as ``downpool.cli_shrink._import_numba_without_scipy``
# loads it, then one cached function.
_FLOOR_MODULE = '''
import importlib, sys
sys.modules["scipy"] = None
importlib.import_module("numba.np.arraymath")
del sys.modules["scipy"]
import numpy as np
from numba import njit


@njit(cache=True)
def total(x):
    return x.sum()
'''

_FLOOR_SCRIPT = "import floor_probe, numpy; floor_probe.total(numpy.ones(3))"


def run_time(command: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "floor_probe.py").write_text(_FLOOR_MODULE)
        env = dict(os.environ, PYTHONPATH=tmp + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = str(Path(tmp, "out.png"))
        downpool = [sys.executable, "-m", "downpool"]
        commands = {"`downpool --help`": downpool + ["--help"]}
        for method in ("softpool", "avg", "dpid"):
            commands[f"`downpool shrink astronaut.png --method {method}` (512x512)"] = (
                downpool + ["shrink", str(SAMPLE), "-o", out, "--method", method, "--overwrite",
                            "-q"])
        commands["floor: import Numba (as `shrink` does), call one cached `@njit` function"] = [
            sys.executable, "-c", _FLOOR_SCRIPT]
        for command in commands.values():
            run_time(command, env)  # fills the caches
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.repeat):
            for label, command in commands.items():
                times[label].append(run_time(command, env))

    print(f"# Python {sys.version.split()[0]}, {os.cpu_count()} cores; "
          f"{args.repeat} alternated rounds after a warm-up run")
    print()
    print("| command | best (s) | median (s) |")
    print("|---|---:|---:|")
    for label, values in times.items():
        print(f"| {label} | {min(values):.2f} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
