"""What ``downpool shrink --fast-load`` costs in SSIM, and what it saves in time.

The sample images are saved as JPEG (quality 95; alpha composited on white)
and shrunk by ``-k 4`` and ``-k 8`` with each method, with and without
``--fast-load``, through the installed command (PNG outputs).  Each output Y
is scored as ``downpool compare`` scores it (``downpool.compare``): Y is
upsampled back (bicubic, aligned with the pooling grid) and compared with the
decoded JPEG X; and the fast output is compared with the full-decode output
directly.  Then a 24-megapixel JPEG (``bench_cli.make_photo``) is shrunk by 8
with softpool both ways, median wall time of ``--repeat`` runs.

Usage::

    python benchmarks/fast_load.py [--repeat 3] [--methods avg,softpool,dpid]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_cli import downpool_command, make_photo  # noqa: E402

from downpool.compare import resize_float, ssim_psnr, to_unit_float  # noqa: E402


def _jpegs(folder: Path) -> list[Path]:
    made = []
    for path in sorted((HERE.parent / "sample_images").glob("*.*g")):
        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA"):
                white = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(white, image.convert("RGBA"))
            target = folder / f"{path.stem}.jpg"
            image.convert("RGB" if image.mode != "L" else "L").save(target, quality=95)
            made.append(target)
    return made


def _shrink(inputs: Path, out: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([*downpool_command(), "shrink", str(inputs), "-o", str(out), "-q",
                    "--format", "png", "--name", "{stem}.png", "--overwrite", *args], check=True)
    return time.perf_counter() - start


def _against_original(x: np.ndarray, y: np.ndarray, k: int) -> float:
    h, w = x.shape[:2]
    box = (0.0, 0.0, w / k, h / k)  # output pixel j covers input [j*k, j*k + k)
    return ssim_psnr(x, resize_float(y, (h, w), Image.Resampling.BICUBIC, box=box))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="avg,max,softpool,dpp,dpid")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        inputs = work / "in"
        inputs.mkdir()
        jpegs = _jpegs(inputs)
        print("| method | k | SSIM vs original, full decode | with --fast-load | "
              "SSIM fast vs full output |")
        print("|---|---|---|---|---|")
        for method in args.methods.split(","):
            for k in (4, 8):
                full, fast = work / f"full_{method}_{k}", work / f"fast_{method}_{k}"
                _shrink(inputs, full, "-k", str(k), "--method", method)
                _shrink(inputs, fast, "-k", str(k), "--method", method, "--fast-load")
                scores = []
                for jpeg in jpegs:
                    with Image.open(jpeg) as decoded:
                        x = to_unit_float(np.asarray(decoded))
                    name = f"{jpeg.stem}.png"
                    y_full = to_unit_float(np.asarray(Image.open(full / name)))
                    y_fast = to_unit_float(np.asarray(Image.open(fast / name)))
                    channel = -1 if y_full.ndim == 3 else None
                    scores.append((_against_original(x, y_full, k), _against_original(x, y_fast, k),
                                   structural_similarity(y_full, y_fast, data_range=1,
                                                         channel_axis=channel)))
                means = np.mean(scores, axis=0)
                print(f"| {method} | {k} | {means[0]:.4f} | {means[1]:.4f} | {means[2]:.4f} |")
        big = work / "big.jpg"
        make_photo(big, 6000, 4000, seed=0)
        print(f"\n24 MP JPEG, -k 8 softpool, median of {args.repeat} (wall s, with start-up):")
        walls = {"full": [], "fast": []}
        for _ in range(args.repeat):  # alternated
            walls["full"].append(_shrink(big, work / "big_full.png", "-k", "8"))
            walls["fast"].append(_shrink(big, work / "big_fast.png", "-k", "8", "--fast-load"))
        full, fast = (statistics.median(walls[key]) for key in ("full", "fast"))
        print(f"full decode {full:.2f} s, --fast-load {fast:.2f} s, ratio {fast / full:.2f}")


if __name__ == "__main__":
    main()
