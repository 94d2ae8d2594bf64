"""Peak memory of ``downpool shrink`` per image kind, next to the estimate its memory check uses.

``shrink`` refuses, before decoding, an image whose working memory would not
fit in what the system has left (``--max-memory auto``).  The estimate
(:func:`downpool.cli_shrink.memory_needed`) must not be below what a run
really takes, or an image could still get the batch killed.  For each image
kind (12 megapixels by default) and option, this runs ``shrink`` in a fresh
process and reports:

- the peak resident memory of the run (``wait4``; the smaller of two runs, so
  that compiling is not counted), less that of the same command on a 16x16 image (Python, NumPy, Numba and the cached kernels);
- the estimate for the image;
- their ratio (estimate / measured; at least 1 is safe);
- Pillow's own peak (open, ``reduce(2)``, save) on the same file, as the peer.

Usage::

    python benchmarks/bench_memory.py [--megapixels 12] [--quick]

Images are made under ``benchmarks/out/memory/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from bench_cli import downpool_command, measure
from PIL import Image

HERE = Path(__file__).resolve().parent

PILLOW_SCRIPT = """
import sys
from PIL import Image
with Image.open(sys.argv[1]) as image:
    image.reduce(2).save(sys.argv[2])
"""
# Pillow cannot reduce 16-bit gray (I;16) and reads 16-bit colour PNG as 8 bits.
PILLOW_KINDS = ("L 8-bit PNG", "RGB 8-bit PNG", "RGBA 8-bit PNG", "RGB JPEG")

OPTIONS = [
    ["--method", "avg"],
    ["--method", "dpid"],
    ["--method", "stochastic", "--scale", "0.3"],
    ["--method", "avg", "--linear"],
]


def peak_rss(command: list[str]) -> int:
    """Peak resident bytes of the process ``command`` runs (``bench_cli``'s launcher, ``wait4``)."""
    return int(measure(command, 1)[1] * 2**20)


def make_images(folder: Path, height: int, width: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 4), dtype=np.uint8)
    rgba = np.kron(tiles, np.ones((8, 8, 1), np.uint8))[:height, :width]
    images = {
        "L 8-bit PNG": ("l.png", rgba[..., 0], {}),
        "RGB 8-bit PNG": ("rgb.png", rgba[..., :3], {}),
        "RGBA 8-bit PNG": ("rgba.png", rgba, {}),
        "RGB JPEG": ("rgb.jpg", rgba[..., :3], {"quality": 90}),
        "L 16-bit PNG": ("l16.png", rgba[..., 0].astype(np.uint16) * 257, {}),
    }
    paths = {}
    for label, (name, pixels, options) in images.items():
        path = folder / name
        if not path.exists():
            Image.fromarray(pixels).save(path, **options)
        paths[label] = path
    for label, name, channels in (("RGB 16-bit PNG", "rgb16.png", 3), ("RGBA 16-bit PNG", "rgba16.png", 4)):
        path = folder / name
        if not path.exists():
            from downpool.png import write_png16

            with open(path, "wb") as stream:
                write_png16(stream, rgba[..., :channels].astype(np.uint16) * 257, None, None)
        paths[label] = path
    return paths


def estimate(path: Path, options: list[str]) -> int:
    """What the memory check of ``shrink OPTIONS`` estimates for ``path``."""
    from downpool.cli_shrink import Settings, memory_needed
    from downpool.io import read_image

    found = {}

    class Stop(Exception):
        pass

    def grab(header):
        found["header"] = header
        raise Stop

    try:
        read_image(path, before_decode=grab)
    except Stop:
        pass
    method = options[options.index("--method") + 1]
    scale = float(options[options.index("--scale") + 1]) if "--scale" in options else None
    settings = Settings(method=method, params={}, scale=scale, linear="--linear" in options)
    return memory_needed(found["header"], settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--quick", action="store_true", help="1 megapixel, two options")
    args = parser.parse_args()
    megapixels = 1.0 if args.quick else args.megapixels
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    out = HERE / "out" / "memory"
    images = make_images(out / f"{width}x{height}", height, width)
    tiny = out / "tiny.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tiny)
    command = downpool_command()
    # First run: compile or load the kernels, so that later runs measure a warm cache.
    for options in OPTIONS:
        peak_rss([*command, "shrink", str(tiny), "-o", str(out / "tiny_out.png"), "--overwrite", "-q", *options])
    floor = {tuple(o): peak_rss([*command, "shrink", str(tiny), "-o", str(out / "tiny_out.png"),
                                  "--overwrite", "-q", *o]) for o in OPTIONS}
    print(f"{width}x{height} images; peak RSS less that of a 16x16 image "
          f"({min(floor.values()) / 2**20:.0f}-{max(floor.values()) / 2**20:.0f} MiB)\n")
    print("| image | options | measured (MiB) | estimate (MiB) | estimate / measured | Pillow reduce(2) peak (MiB) |")
    print("|---|---|--:|--:|--:|--:|")
    options_list = OPTIONS[:2] if args.quick else OPTIONS
    for label, path in images.items():
        pillow = (peak_rss([sys.executable, "-c", PILLOW_SCRIPT, str(path), str(out / ("pil_" + path.name))])
                  if label in PILLOW_KINDS else None)
        for options in options_list:
            target = out / f"out_{path.stem}{path.suffix}"
            run = [*command, "shrink", str(path), "-o", str(target), "--overwrite", "-q",
                   "--max-memory", "0", *options]
            # The smaller of two runs: the first may compile kernels for this mode and dtype.
            measured = min(peak_rss(run), peak_rss(run)) - floor[tuple(options)]
            guess = estimate(path, options)
            print(f"| {label} | `{' '.join(options)}` | {measured / 2**20:.0f} | {guess / 2**20:.0f} | "
                  f"{guess / max(measured, 1):.2f} | {'-' if pillow is None else f'{pillow / 2**20:.0f}'} |",
                  flush=True)


if __name__ == "__main__":
    main()
