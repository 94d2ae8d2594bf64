"""Kernel speed and first calls of this checkout next to another one, alternated in one run.

Usage (from the repository root)::

    git worktree add /tmp/old da45d5a
    python benchmarks/bench_trees.py --tree /tmp/old                     # 24 MP RGB uint8, k=2
    python benchmarks/bench_trees.py --tree /tmp/old --odd --rounds 3    # 6001x4001
    python benchmarks/bench_trees.py --tree /tmp/old --scale 0.3 --first-calls

Every case of ``tests/cases.py`` at its defaults (and the label methods on a
label image) runs in a fresh process per tree and round, the trees taking
turns: a warm-up call (the kernel loaded from Numba's cache, or compiled),
then ``--repeat`` timed calls, whose best is kept; the table gives each
tree's median over the rounds of those bests, and their ratio.  With
``--first-calls``, each case's first call is also timed in a fresh process
with an empty Numba cache, per tree (a 64x64 image of the same geometry).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from cases import DEFAULT_CASES  # noqa: E402
from source_trees import import_path  # noqa: E402

TIMED = """
import sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, {bench!r})
import numpy as np
import downpool
from bench_kernels import make_image, make_labels
method, params, geometry, repeat = sys.argv[2], eval(sys.argv[3]), eval(sys.argv[4]), int(sys.argv[5])
assert downpool.__file__.startswith(sys.argv[1]), downpool.__file__
if method not in downpool.METHODS:
    sys.exit(print("nan"))
labels = getattr(downpool.METHODS[method], "labels", False)
image = (make_labels if labels else make_image)({megapixels}, {dtype!r}, {odd!r})
downpool.downscale(image, method, device="cpu", **geometry, **params)
best = float("inf")
for _ in range(repeat):
    start = time.perf_counter()
    downpool.downscale(image, method, device="cpu", **geometry, **params)
    best = min(best, time.perf_counter() - start)
print(best)
"""

FIRST = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import downpool
method, params, geometry = sys.argv[2], eval(sys.argv[3]), eval(sys.argv[4])
assert downpool.__file__.startswith(sys.argv[1]), downpool.__file__
if method not in downpool.METHODS:
    sys.exit(print("nan"))
shape = (64, 64) if getattr(downpool.METHODS[method], "labels", False) else (64, 64, 3)
image = np.zeros(shape, np.{dtype})
start = time.perf_counter()
downpool.downscale(image, method, device="cpu", **geometry, **params)
print(time.perf_counter() - start)
"""


def _run(code: str, tree: str, method: str, params: dict, geometry: dict, *extra: str,
         env: dict | None = None) -> float:
    # -P: this checkout's folder must not come before the tree on sys.path.
    out = subprocess.run([sys.executable, "-P", "-c", code, import_path(tree), method, repr(params),
                          repr(geometry), *extra], capture_output=True, text=True, check=True,
                         env=env, cwd=tempfile.gettempdir()).stdout
    return float(out.split()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", required=True, help="the other checkout")
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--dtype", default="uint8")
    parser.add_argument("--odd", action="store_true", help="one row and column more")
    parser.add_argument("--scale", type=float, default=None, help="scale geometry instead of -k")
    parser.add_argument("-k", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--first-calls", action="store_true")
    parser.add_argument("--methods", default=None, help="comma-separated methods")
    args = parser.parse_args(argv)
    trees = [args.tree, str(HERE.parent)]
    geometry = {"scale": args.scale} if args.scale else {"kernel_size": args.k}
    timed = TIMED.format(bench=str(HERE), megapixels=args.megapixels, dtype=args.dtype,
                         odd=args.odd)
    first = FIRST.format(dtype=args.dtype)
    print(f"# {args.megapixels:g} MP {args.dtype}{' odd' if args.odd else ''}, {geometry}: "
          f"best of {args.repeat} calls, median of {args.rounds} rounds alternating the trees")
    head = "| case | " + " | ".join(f"{t} (ms)" for t in trees) + " | ratio |"
    if args.first_calls:
        head += " " + " | ".join(f"{t} first call, empty cache (s)" for t in trees) + " |"
    print(head)
    print("|---|" + "---:|" * (len(trees) + 1 + (len(trees) if args.first_calls else 0)))
    for case in DEFAULT_CASES:
        if args.methods and case.method not in args.methods.split(","):
            continue
        times: dict[str, list[float]] = {t: [] for t in trees}
        for _ in range(args.rounds):
            for tree in trees:
                times[tree].append(_run(timed, tree, case.method, case.params, geometry,
                                        str(args.repeat)))
        medians = [statistics.median(times[t]) for t in trees]
        row = (f"| {case.id} | " + " | ".join(f"{m * 1e3:.1f}" for m in medians)
               + f" | {medians[1] / medians[0]:.2f} |").replace("nan", "–")
        if args.first_calls:
            cells = []
            for tree in trees:
                with tempfile.TemporaryDirectory() as cache:
                    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
                    cells.append(f"{_run(first, tree, case.method, case.params, geometry, env=env):.2f}")
            row += " " + " | ".join(cells) + " |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
