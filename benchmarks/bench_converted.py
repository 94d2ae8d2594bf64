"""Time and peak memory of ``downscale`` with alpha and linear light, per source tree.

``downscale`` converts an image with ``has_alpha`` or ``linear`` a strip of
output rows at a time.  This runs each (method, options) case in a fresh
process per tree, alternating the trees, on a 4000x3000 RGBA uint8 image of
random 8x8 tiles at k=2: a warm-up call on a 64x64 crop (compiling or loading
the kernels), then ``--repeat`` calls, and reports the best and median time
and the growth of peak RSS over the warm-up.

Usage::

    python benchmarks/bench_converted.py [--tree OLD_CHECKOUT] [--repeat 3]

``--tree`` adds another checkout (for example ``git worktree add /tmp/old REV``)
beside this one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from source_trees import import_path  # noqa: E402

CASE = """
import resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import downpool
method, options, repeat = sys.argv[2], eval(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
tiles = rng.integers(0, 256, (376, 501, 4), dtype=np.uint8)
image = np.kron(tiles, np.ones((8, 8, 1), np.uint8))[:3000, :4000].copy()
downpool.downscale(image[:64, :64], method, kernel_size=2, device="cpu", **options)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeat):
    start = time.perf_counter()
    downpool.downscale(image, method, kernel_size=2, device="cpu", **options)
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times.sort()
print(f"{times[0] * 1e3:.0f} / {times[len(times) // 2] * 1e3:.0f}, {(peak - base) / 1024:.0f}")
"""

CASES = [("avg", {"has_alpha": True}), ("avg", {"has_alpha": True, "linear": True}),
         ("softpool", {"has_alpha": True}), ("softpool", {"has_alpha": True, "linear": True}),
         ("dpid", {"has_alpha": True}), ("dpid", {"has_alpha": True, "linear": True})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="another checkout to time")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees = [*args.tree, str(HERE.parent)]
    print("| method, options | " + " | ".join(f"{t}: best / median (ms), peak (MiB)" for t in trees)
          + " |")
    print("|---|" + "---|" * len(trees))
    for method, options in CASES:
        cells = [subprocess.run([sys.executable, "-P", "-c", CASE, import_path(tree), method, repr(options),
                                 str(args.repeat)], capture_output=True, text=True,
                                check=True).stdout.strip() for tree in trees]
        label = ", ".join([method, *options])
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
