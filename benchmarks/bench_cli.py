"""Wall time and peak memory of ``downpool shrink`` next to plain Pillow and pyvips scripts.

Suite ``photos``, each job run as a fresh process, as a user would run them:

1. One 24-megapixel JPEG (6000x4000), halved: ``downpool shrink -k 2`` (avg,
   the same 2x2 box as Pillow's ``reduce(2)``, and softpool, the default
   method) against a Pillow script that opens the file, calls ``reduce(2)``
   and saves at the same JPEG quality.
2. A batch of 200 small JPEGs (640x480): ``downpool shrink`` with ``-j 1``
   and ``-j 2``, against the same Pillow script looping over the files.

Suite ``files`` (issue 16's targets), next to a pyvips script (sequential
access, ``shrink(2, 2)``, the same JPEG quality) and the Pillow loop:

3. 24 photos of 4032x3024 JPEG, halved with softpool: downpool's default
   ``-j`` (one thread per CPU), ``-j 1``, and with ``--processes`` worker
   processes.
4. One 12000x12000 RGB TIFF (uncompressed, strips of 8 rows as libvips writes
   it) and one 6000x6000 RGBA PNG, halved with softpool; and a 64x64 file of
   each kind, so that the marginal time (big minus small) of each tool can be
   compared without its start-up.

Wall time includes process start-up (for downpool: importing NumPy and
loading Numba's cached kernels, about a second); the median of ``--repeat``
runs is reported.  Peak memory is the largest resident set of the process
tree, from ``wait4`` (for ``-j 2``: the largest single process, not the sum;
the floor is the ~10 MiB of the launcher that starts each run).

Usage::

    python benchmarks/bench_cli.py             # full sizes, 3 repeats
    python benchmarks/bench_cli.py --quick     # small sizes: a smoke test
    python benchmarks/bench_cli.py --suite files --repeat 3

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

PYVIPS_SCRIPT = """
import sys
from pathlib import Path
import pyvips
out = Path(sys.argv[1])
for name in sys.argv[2:]:
    target = out / Path(name).name if out.is_dir() else out
    options = "[Q={quality}]" if target.suffix == ".jpg" else ""
    image = pyvips.Image.new_from_file(name, access="sequential")
    image.shrink(2, 2).write_to_file(str(target) + options)
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


def make_tiled(path: Path, width: int, height: int, bands: int, seed: int) -> None:
    """A big photo-like file written by libvips: a 1500x1500 photo tiled, plus an alpha ramp."""
    if path.exists():
        return
    import pyvips

    tile = path.with_name(f"tile{seed}.png")
    make_photo(tile.with_suffix(".jpg"), 1500, 1500, seed)
    photo = pyvips.Image.new_from_file(str(tile.with_suffix(".jpg")))
    image = photo.replicate(-(-width // 1500), -(-height // 1500)).crop(0, 0, width, height)
    if bands == 4:
        alpha = (pyvips.Image.xyz(width, height)[0] * (255 / max(width - 1, 1))).cast("uchar")
        image = image.bandjoin(alpha)
    partial = path.with_name(path.name + ".part" + path.suffix)
    image.write_to_file(str(partial))
    partial.rename(path)


def photo_rows(args, work: Path, downpool: list[str], results: Path, common: list[str]):
    big_size = (1200, 800) if args.quick else (6000, 4000)
    batch_count, batch_size = (20, (160, 120)) if args.quick else (200, (640, 480))
    batch = work / "batch"
    batch.mkdir(parents=True, exist_ok=True)
    big = work / "big.jpg"
    make_photo(big, *big_size, seed=0)
    for i in range(batch_count):
        make_photo(batch / f"img{i:03d}.jpg", *batch_size, seed=i + 1)
    pillow = [sys.executable, "-c", PILLOW_SCRIPT]
    for folder in ("pillow", "j1", "j2"):
        (results / folder).mkdir()
    megapixels = big_size[0] * big_size[1] / 1e6
    return [
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


def file_rows(args, work: Path, downpool: list[str], results: Path, common: list[str]):
    photos_count, photo_size = (6, (1008, 756)) if args.quick else (24, (4032, 3024))
    tiff_side, png_side = (3000, 1500) if args.quick else (12000, 6000)
    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for i in range(photos_count):
        make_photo(photos / f"photo{i:02d}.jpg", *photo_size, seed=100 + i)
    files = {
        "tiff": (work / f"rgb{tiff_side}.tif", tiff_side, 3),
        "tiff-small": (work / "rgb64.tif", 64, 3),
        "png": (work / f"rgba{png_side}.png", png_side, 4),
        "png-small": (work / "rgba64.png", 64, 4),
    }
    for path, side, bands in files.values():
        make_tiled(path, side, side, bands, seed=7)
    pillow = [sys.executable, "-c", PILLOW_SCRIPT]
    pyvips_ = [sys.executable, "-c", PYVIPS_SCRIPT]
    for folder in ("photos_pillow", "photos_pyvips", "photos_default", "photos_j1", "photos_p"):
        (results / folder).mkdir()
    listed = sorted(map(str, photos.glob("*.jpg")))
    label = f"{photos_count} x {photo_size[0]}x{photo_size[1]} JPEG"
    rows = [
        (f"{label}: Pillow loop (reduce(2))", pillow + [str(results / "photos_pillow"), *listed]),
        (f"{label}: pyvips script (shrink(2, 2))",
         pyvips_ + [str(results / "photos_pyvips"), *listed]),
        (f"{label}: downpool shrink, default -j (softpool)",
         downpool + ["shrink", str(photos), "-o", str(results / "photos_default"), *common]),
        (f"{label}: downpool shrink -j 1 (softpool)",
         downpool + ["shrink", str(photos), "-o", str(results / "photos_j1"), "-j", "1",
                     *common]),
    ]
    if args.processes:
        rows.append((f"{label}: downpool shrink -j {os.cpu_count()} --processes (softpool)",
                     downpool + ["shrink", str(photos), "-o", str(results / "photos_p"),
                                 "-j", str(os.cpu_count()), "--processes", *common]))
    for key, (path, side, bands) in files.items():
        kind = f"{side}x{side} {'RGB TIFF' if bands == 3 else 'RGBA PNG'}"
        rows.append((f"{kind}: pyvips script (shrink(2, 2))",
                     pyvips_ + [str(results / f"{key}_pyvips{path.suffix}"), str(path)]))
        rows.append((f"{kind}: downpool shrink -k 2 (softpool)",
                     downpool + ["shrink", str(path), "-o", str(results / f"{key}{path.suffix}"),
                                 "-k", "2", *common]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="small images: a smoke test")
    parser.add_argument("--suite", choices=("photos", "files", "all"), default="all")
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    parser.add_argument("--processes", action="store_true",
                        help="files suite: also run the batch with -j CPUs --processes "
                             "(a checkout before the threaded batch has no such flag)")
    parser.add_argument("--downpool", help="the downpool command to measure (default: this "
                        "Python's), e.g. another checkout's venv/bin/downpool")
    args = parser.parse_args()

    work = args.workdir / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    downpool = [args.downpool] if args.downpool else downpool_command()
    results = work / "results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    common = ["--quality", str(QUALITY), "--overwrite", "-q"]
    rows = []
    if args.suite in ("photos", "all"):
        rows += photo_rows(args, work, downpool, results, common)
    if args.suite in ("files", "all"):
        rows += file_rows(args, work, downpool, results, common)
    warm = work / "warm.jpg"
    make_photo(warm, 64, 48, seed=99)
    # One untimed run first, so that Numba's cache is in place and files are in the page cache.
    subprocess.run(downpool + ["shrink", str(warm), "-o", str(results / "warm.jpg"), *common],
                   check=True, capture_output=True)
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
