"""Wall time and peak memory of ``downpool shrink`` next to a plain Pillow script.

Two jobs, each run as a fresh process, as a user would run them:

1. One 24-megapixel JPEG (6000x4000), halved: ``downpool shrink -k 2`` (avg,
   the same 2x2 box as Pillow's ``reduce(2)``, and softpool, the default
   method) against a Pillow script that opens the file, calls ``reduce(2)``
   and saves at the same JPEG quality.
2. A batch of 200 small JPEGs (640x480): ``downpool shrink`` with ``-j 1``
   and ``-j 2``, against the same Pillow script looping over the files.

Wall time includes process start-up (for downpool: importing NumPy and
loading Numba's cached kernels, about a second); the median of ``--repeat``
runs is reported.  Peak memory is the largest resident set of the process
tree, from ``wait4`` (for ``-j 2``: the largest single process, not the sum;
the floor is the ~10 MiB of the launcher that starts each run).

Usage::

    python benchmarks/bench_cli.py             # full sizes, 3 repeats
    python benchmarks/bench_cli.py --quick     # small sizes: a smoke test

The images are made under ``benchmarks/out/`` (git-ignored) on the first run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
QUALITY = 90

PILLOW_SCRIPT = """
import sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[1])
for name in sys.argv[2:]:
    with Image.open(name) as image:
        image.reduce(2).save(out / Path(name).name if out.is_dir() else out, quality={quality})
""".format(quality=QUALITY)


def downpool_command() -> list[str]:
    script = shutil.which("downpool") or os.path.join(os.path.dirname(sys.executable), "downpool")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "downpool"]


def make_photo(path: Path, width: int, height: int, seed: int) -> None:
    """A photo-like JPEG: smooth gradients, some texture, sensor-like noise."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    phase = rng.uniform(0, 6.28, 3).astype(np.float32)
    channels = [
        110 + 70 * np.sin(6 * x + 3 * y + phase[c]) + 40 * np.cos(40 * x * y + phase[c])
        for c in range(3)
    ]
    pixels = np.stack(channels, axis=-1)
    pixels += rng.normal(0, 6, size=pixels.shape).astype(np.float32)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=QUALITY)


# A lean launcher that times one command and reports its peak RSS.  Measuring
# from this script directly would be wrong: at exec, Linux records the peak of
# the memory the child shared with its parent (fork or vfork), and this
# script holds a 24-megapixel float image while it makes the test files.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ,
                      file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def measure(command: list[str], repeat: int) -> tuple[float, float]:
    """Median wall seconds and largest peak RSS (MiB) of ``command`` over ``repeat`` runs."""
    walls, peaks = [], []
    for _ in range(repeat):
        run = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *command],
                             capture_output=True, text=True, check=True)
        wall, code, peak_kib = run.stdout.split()
        if int(code) != 0:
            raise SystemExit(f"failed ({code}): {' '.join(command)}\n{run.stderr}")
        walls.append(float(wall))
        peaks.append(int(peak_kib) / 1024)  # Linux reports KiB
    return statistics.median(walls), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="small images: a smoke test")
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    args = parser.parse_args()

    big_size = (1200, 800) if args.quick else (6000, 4000)
    batch_count, batch_size = (20, (160, 120)) if args.quick else (200, (640, 480))
    work = args.workdir / ("quick" if args.quick else "full")
    batch = work / "batch"
    batch.mkdir(parents=True, exist_ok=True)
    big = work / "big.jpg"
    make_photo(big, *big_size, seed=0)
    for i in range(batch_count):
        make_photo(batch / f"img{i:03d}.jpg", *batch_size, seed=i + 1)

    downpool = downpool_command()
    pillow = [sys.executable, "-c", PILLOW_SCRIPT]
    results = work / "results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    for folder in ("pillow", "j1", "j2"):
        (results / folder).mkdir()
    common = ["--quality", str(QUALITY), "--overwrite", "-q"]
    megapixels = big_size[0] * big_size[1] / 1e6
    rows = [
        (f"{megapixels:.0f} MP JPEG, halve: Pillow open + reduce(2) + save",
         pillow + [str(results / "big_pillow.jpg"), str(big)]),
        (f"{megapixels:.0f} MP JPEG: downpool shrink --method avg -k 2",
         downpool + ["shrink", str(big), "-o", str(results / "big_avg.jpg"), "--method", "avg",
                     "-k", "2", *common]),
        (f"{megapixels:.0f} MP JPEG: downpool shrink --method softpool -k 2",
         downpool + ["shrink", str(big), "-o", str(results / "big_softpool.jpg"), "-k", "2",
                     *common]),
        (f"{batch_count} x {batch_size[0]}x{batch_size[1]} JPEG: Pillow loop",
         pillow + [str(results / "pillow")] + sorted(map(str, batch.glob("*.jpg")))),
        (f"{batch_count} x {batch_size[0]}x{batch_size[1]} JPEG: downpool shrink -j 1 (softpool)",
         downpool + ["shrink", str(batch), "-o", str(results / "j1"), "-j", "1", *common]),
        (f"{batch_count} x {batch_size[0]}x{batch_size[1]} JPEG: downpool shrink -j 2 (softpool)",
         downpool + ["shrink", str(batch), "-o", str(results / "j2"), "-j", "2", *common]),
    ]
    # One untimed run first, so that Numba's cache is in place and files are in the page cache.
    subprocess.run(downpool + ["shrink", str(batch / "img000.jpg"), "-o", str(results / "warm.jpg"),
                               *common], check=True, capture_output=True)
    print(f"# downpool shrink benchmark: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, median of {args.repeat}")
    print()
    print("| job | wall (s) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    for label, command in rows:
        wall, peak = measure(command, args.repeat)
        print(f"| {label} | {wall:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
