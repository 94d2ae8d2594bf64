"""Throughput of every downpool method next to Pillow's ``Image.reduce`` on the same image.

Run from the repository root::

    python benchmarks/bench_kernels.py                 # 24 MP RGB uint8, k=2, all methods
    python benchmarks/bench_kernels.py --dtype float32 --threads 1

The image is a real photograph (``sample_images/astronaut.png``) tiled to the
requested size, so timings are not those of noise.  MP/s counts input
megapixels per second; each figure is the best of ``--repeat`` runs after a
warm-up call, and each method's ratio is to Pillow runs interleaved with its
own, so that a shared machine's drift does not bias it.  Label methods
(``mode``) pool a single-channel label image instead (50 labels in regions,
as a segmentation map), next to Pillow's reduce of that image.  The
cases are those of ``tests/cases.py`` (each method at its defaults).  The table also
gives a plain copy of the image's bytes (the memory-bandwidth ceiling) and
each method's first-call time in a fresh process with an empty Numba cache
and with a warm one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_images" / "astronaut.png"

sys.path.insert(0, str(ROOT / "tests"))
from cases import DEFAULT_CASES  # noqa: E402

# (label, method, params)
CASES = [(c.id, c.method, c.params) for c in DEFAULT_CASES]


def make_labels(megapixels: float, dtype: str, odd: bool = False, labels: int = 50) -> np.ndarray:
    """A single-channel label image of the same size as :func:`make_image`'s: ``labels``
    values in regions of about 40x30 pixels (nearest-neighbour blocks of a random map),
    as a segmentation map is."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    if odd:
        width, height = width + 1, height + 1
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, labels, size=(-(-height // 30), -(-width // 40)))
    rows = np.minimum(np.arange(height) * coarse.shape[0] // height, coarse.shape[0] - 1)
    cols = np.minimum(np.arange(width) * coarse.shape[1] // width, coarse.shape[1] - 1)
    values = coarse[rows[:, None], cols[None, :]]
    step = {"uint8": 5, "uint16": 1300, "float32": 1, "float64": 1}[dtype]
    return np.ascontiguousarray((values * step).astype(dtype))


def make_image(megapixels: float, dtype: str, odd: bool = False) -> np.ndarray:
    """A 3:2 RGB image of about ``megapixels``, tiled from a sample photograph; with
    ``odd``, one row and one column more (6001x4001 for 24 MP)."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    if odd:
        width, height = width + 1, height + 1
    tile = np.asarray(Image.open(SAMPLE).convert("RGB"))
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    img = np.ascontiguousarray(np.tile(tile, reps)[:height, :width])
    if dtype == "uint16":
        return img.astype(np.uint16) * 257
    if dtype in ("float32", "float64"):
        return (img / 255.0).astype(dtype)
    return img


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up: compiles or loads the kernel, touches the memory
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_times(fns: list, repeat: int) -> list[float]:
    """:func:`best_time` of each function, their runs interleaved.

    On a shared machine the speed drifts over seconds; interleaving keeps a
    method and the baseline it is compared with in the same conditions.
    """
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for n, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[n] = min(best[n], time.perf_counter() - t0)
    return best


_FIRST_CALL = """
import time, numpy as np
import downpool
img = np.zeros(({height}, {width}, 3), np.{dtype})
t = time.perf_counter()
downpool.downscale(img, {method!r}, **{geometry!r}, **{params!r})
print(time.perf_counter() - t)
"""


def first_call_times(dtype: str, geometry: dict, shape: tuple[int, int],
                     cases: list) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds of each case's first call on a ``shape`` image in a fresh process:
    empty cache, then warm.

    Every case gets its own process and its own empty Numba cache, so a kernel
    that several methods share (the separable one) is compiled in each. An
    even ``shape`` at k=2 compiles the constant-size block kernel alone; an
    odd one also the kernel for the partial windows at its edges (and dpid,
    whose windows are then not blocks, its general kernels).
    """
    cold: dict[str, float] = {}
    warm: dict[str, float] = {}
    for label, method, params in cases:
        code = _FIRST_CALL.format(dtype=dtype, method=method, params=params, geometry=geometry,
                                  height=shape[0], width=shape[1])
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            for times in (cold, warm):
                out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                     capture_output=True, text=True).stdout
                times[label] = float(out.split()[-1])
    return cold, warm


_PEAK_MEMORY = """
import sys, numpy as np
sys.path.insert(0, {bench_dir!r})
from bench_kernels import make_image
import downpool
img = make_image({megapixels}, {dtype!r}, {odd!r})
# compile or load the kernels, on an image as odd or even as the timed one
downpool.downscale(img[:64 + {odd:d}, :64 + {odd:d}], {method!r}, {geometry}, **{params!r})
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS:")
out = downpool.downscale(img, {method!r}, {geometry}, **{params!r})
print(status("VmHWM:") - before, out.nbytes, img.nbytes)
"""


def peak_memory(method: str, params: dict, geometry: dict, megapixels: float,
                dtype: str, odd: bool = False) -> tuple[int, int, int]:
    """(peak RSS growth during one downscale call, output bytes, input bytes), in a fresh process.

    The input is made and the kernel loaded first; the kernel's peak is then
    measured from the resident size just before the call (Linux's VmHWM,
    reset through /proc/self/clear_refs).
    """
    geo = ", ".join(f"{k}={v!r}" for k, v in geometry.items())
    code = _PEAK_MEMORY.format(bench_dir=str(Path(__file__).parent), megapixels=megapixels,
                               dtype=dtype, method=method, geometry=geo, params=params, odd=odd)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    grown, out_bytes, in_bytes = map(int, out.split()[-3:])
    return grown, out_bytes, in_bytes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--dtype", default="uint8", choices=["uint8", "uint16", "float32", "float64"])
    parser.add_argument("-k", type=int, default=2)
    parser.add_argument("--odd", action="store_true",
                        help="one row and one column more (6001x4001 for 24 MP): windows k does "
                             "not divide (dpid's are then not blocks)")
    parser.add_argument("--scale", type=float, default=None,
                        help="time size=scale geometry instead of -k (Pillow reduces by round(1/scale))")
    parser.add_argument("--threads", type=int, default=None, help="Numba threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", default=None, help="comma-separated labels (default: all)")
    parser.add_argument("--no-first-call", action="store_true", help="skip the cold/warm start-up runs")
    parser.add_argument("--first-call-shape", default="64x64", metavar="HxW",
                        help="image of the start-up runs (default 64x64; odd sizes add edge kernels)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure each method's peak memory, in a fresh process")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import numba

    import downpool

    if args.threads:
        numba.set_num_threads(args.threads)
    img = make_image(args.megapixels, args.dtype, args.odd)
    mp = img.shape[0] * img.shape[1] / 1e6
    geometry = {"scale": args.scale} if args.scale else {"kernel_size": args.k}
    factor = round(1 / args.scale) if args.scale else args.k

    # Pillow's reduce works on 8-bit RGB (and float "F" single channel); compare
    # against the 8-bit reduce of the same picture, as a user's photo would be.
    pil = Image.fromarray(make_image(args.megapixels, "uint8", args.odd))
    t_pillow = best_time(lambda: pil.reduce(factor), args.repeat)
    buf = np.empty_like(img)
    t_copy = best_time(lambda: np.copyto(buf, img), args.repeat)

    cases = CASES
    if args.methods:
        wanted = set(args.methods.split(","))
        cases = [c for c in CASES if c[0] in wanted or c[1] in wanted]
    shape = tuple(int(n) for n in args.first_call_shape.lower().split("x"))
    cold, warm = (({}, {}) if args.no_first_call
                  else first_call_times(args.dtype, geometry, shape, cases))

    print(f"# downpool {downpool.__version__}: {img.shape[1]}x{img.shape[0]} RGB {args.dtype} "
          f"({mp:.1f} MP), {geometry}, {numba.get_num_threads()} Numba thread(s)")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}, "
          f"Pillow {Image.__version__}")
    print()
    mem_head = " peak memory above input (MB) | output (MB) |" if args.memory else ""
    print("| method | MP/s | x Pillow reduce | first call, empty cache (s) | first call, warm cache (s) |"
          + mem_head)
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if args.memory else ""))
    blank = " | |" if args.memory else ""
    print(f"| Pillow `Image.reduce({factor})` (uint8, 1 thread) | {mp / t_pillow:.0f} | 1.00 | | |{blank}")
    print(f"| copy of the image's bytes | {mp / t_copy:.0f} | {t_pillow / t_copy:.2f} | | |{blank}")
    rows = []
    labels = pil_labels = None
    for label, method, params in cases:
        source, base = img, pil
        if downpool.METHODS[method].labels:
            if labels is None:
                labels = make_labels(args.megapixels, args.dtype, args.odd)
                pil_labels = Image.fromarray(make_labels(args.megapixels, "uint8", args.odd))
            source, base = labels, pil_labels
            label += " (1-channel labels)"
        # Pillow is timed again, interleaved with each method: the ratio is that
        # of the two best runs taken side by side.
        t_base, t = best_times([lambda: base.reduce(factor),
                                lambda: downpool.downscale(source, method, **geometry, **params)],
                               args.repeat)
        c, w = cold.get(label), warm.get(label)
        mem = ""
        row = {"method": label, "mp_per_s": mp / t, "ratio_to_pillow": t_base / t,
               "pillow_mp_per_s": mp / t_base,
               "first_call_empty_cache_s": c, "first_call_warm_cache_s": w}
        if args.memory:
            grown, out_bytes, _ = peak_memory(method, params, geometry, args.megapixels, args.dtype,
                                              args.odd)
            mem = f" {grown / 1e6:.1f} | {out_bytes / 1e6:.1f} |"
            row.update(peak_growth_bytes=grown, output_bytes=out_bytes)
        print(f"| {label} | {mp / t:.0f} | {t_base / t:.2f} | "
              f"{'' if c is None else f'{c:.2f}'} | {'' if w is None else f'{w:.3f}'} |{mem}",
              flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"dtype": args.dtype, "geometry": geometry, "megapixels": mp,
                                         "threads": numba.get_num_threads(),
                                         "pillow_mp_per_s": mp / t_pillow, "copy_mp_per_s": mp / t_copy,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
