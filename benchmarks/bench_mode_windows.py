"""``mode`` with large overlapping windows: the counted form (8- and 16-bit labels) next to
the sorted form (the same labels as float32, which still sort each window), in one run.

Usage::

    python benchmarks/bench_mode_windows.py [--side 300] [--kernel 200] [--repeat 3]

The image is ``side`` x ``side`` RGB with 5 labels; ``-k kernel --stride 1``.
Each form's first call (compiling) is on a 30x30 crop and not timed; the
median of ``--repeat`` calls is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import downpool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=300)
    parser.add_argument("--kernel", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    labels = np.random.default_rng(1).integers(0, 5, (args.side, args.side, 3))
    images = {"uint8 (counted)": (labels * 60).astype(np.uint8),
              "uint16 (counted)": (labels * 9000).astype(np.uint16),
              "float32 (sorted)": (labels * 60).astype(np.float32)}
    geometry = {"kernel_size": args.kernel, "stride": 1}
    print(f"{args.side}x{args.side} RGB labels, -k {args.kernel} --stride 1, "
          f"median of {args.repeat}")
    for name, image in images.items():
        downpool.downscale(image[:30, :30], "mode", kernel_size=6, stride=1, device="cpu")
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            downpool.downscale(image, "mode", device="cpu", **geometry)
            times.append(time.perf_counter() - start)
        print(f"| {name} | {statistics.median(times):.2f} s |", flush=True)


if __name__ == "__main__":
    main()
