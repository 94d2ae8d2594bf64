"""Throughput of every method on the GPU, next to the GPU's copy bandwidth and the CPU kernels.

Run from the repository root, on a machine with a CUDA GPU and
``pip install -e ".[cuda]"``::

    python benchmarks/bench_gpu.py                      # 24 MP and 100 MP RGB uint8, k=2
    python benchmarks/bench_gpu.py --megapixels 24 --no-cpu --json gpu.json

For each image size and method the table gives input megapixels per second:

- ``kernel``: the kernels alone, with the image and the output already on
  the GPU (a job of device arrays, which :mod:`downpool.cuda` runs in place);
- ``call``: ``downscale(..., device="cuda")`` on a host array, with its one
  host-to-device copy of the image, its one device-to-host copy of the
  result and its allocations;
- ``cpu``: ``downscale(..., device="cpu")``, the Numba CPU kernels on all cores.

Each is the best of ``--repeat`` runs after a warm-up call (which compiles
the kernels).  Above the table, the same image's bytes copied device to
device (``d2d``: read and written once, the physical limit of a kernel that
reads the image once) and host to device (``h2d``), in MP/s and GB/s.

Without a usable CUDA GPU the script stops at once with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from source_trees import import_path  # noqa: E402

sys.path.insert(0, import_path(ROOT))

import downpool  # noqa: E402
from downpool.api import DeviceUnavailableError, _kernels  # noqa: E402

# The image, the cases and the timing rule are bench_kernels.py's, so that the
# GPU and CPU tables measure the same thing.
from bench_kernels import CASES, best_time, make_image  # noqa: E402


def device_job(image: np.ndarray, method: str, kernel_size: int, params: dict):
    """The :class:`downpool.core.PoolJob` that ``downscale`` makes, with device arrays.

    Returns the job and the ``pool_<method>`` function with its parameters bound.
    """
    from numba import cuda

    from downpool.core import PoolJob, check_image
    from downpool.geometry import plan_windows
    from downpool.methods import get_method, resolve_params
    from downpool import cuda as gpu

    spec = get_method(method)
    values = resolve_params(spec, params)
    arr, value_range = check_image(image)
    rows, cols = plan_windows(spec.name, spec.area_only, arr.shape[:2], kernel_size)
    channels = arr.shape[2]
    job = PoolJob(
        image=cuda.to_device(arr), in_scale=1.0 / 255.0, rows=rows, cols=cols,
        out=cuda.device_array((rows.size, cols.size, channels), dtype=arr.dtype),
        out_max=255.0, out_int=True, n_colour=channels, value_mode=1 if channels == 3 else 0,
        value_range=value_range,
    )
    pool = getattr(gpu, f"pool_{spec.name}")
    return job, lambda: pool(job, **values)


def copy_rates(image: np.ndarray, repeat: int) -> dict:
    """Seconds to copy ``image``'s bytes device to device and host to device."""
    from numba import cuda

    source = cuda.to_device(image)
    target = cuda.device_array_like(source)

    def d2d():
        target.copy_to_device(source)
        cuda.synchronize()

    def h2d():
        target.copy_to_device(image)
        cuda.synchronize()

    return {"d2d": best_time(d2d, repeat), "h2d": best_time(h2d, repeat)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[24.0, 100.0])
    parser.add_argument("--kernel-size", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cpu-repeat", type=int, default=2)
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU kernels")
    parser.add_argument("--methods", nargs="+", choices=[c[0] for c in CASES],
                        help="labels of the cases to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    try:
        _kernels("cuda")
    except DeviceUnavailableError as exc:
        print(f"bench_gpu.py: {exc}", file=sys.stderr)
        return 2
    from numba import cuda

    from downpool import cuda as gpu

    if gpu.SIMULATOR:
        print("bench_gpu.py: NUMBA_ENABLE_CUDASIM is set: the simulator is no GPU to time",
              file=sys.stderr)
        return 2

    device = cuda.get_current_device()
    name = getattr(device, "name", "unknown GPU")
    name = name.decode() if isinstance(name, bytes) else name
    print(f"GPU: {name} (compute capability {device.compute_capability}), "
          f"CPU: {platform.processor() or platform.machine()}, downpool {downpool.__version__}")
    cases = [c for c in CASES if args.methods is None or c[0] in args.methods]
    results = {"gpu": name, "kernel_size": args.kernel_size, "sizes": []}
    for megapixels in args.megapixels:
        image = make_image(megapixels, "uint8")
        mp = image.shape[0] * image.shape[1] / 1e6
        gb = image.nbytes / 1e9
        copies = copy_rates(image, args.repeat)
        print(f"\n{image.shape[1]}x{image.shape[0]} RGB uint8 ({mp:.1f} MP, {gb:.2f} GB), "
              f"k={args.kernel_size}")
        print(f"  d2d copy of the image: {mp / copies['d2d']:10.0f} MP/s  "
              f"({2 * gb / copies['d2d']:.0f} GB/s read + write)")
        print(f"  h2d copy of the image: {mp / copies['h2d']:10.0f} MP/s  "
              f"({gb / copies['h2d']:.1f} GB/s)")
        print(f"  {'method':24s} {'kernel MP/s':>12s} {'call MP/s':>12s} {'cpu MP/s':>12s}"
              f" {'kernel/d2d':>11s}")
        rows = []
        for label, method, params in cases:
            _, run_on_device = device_job(image, method, args.kernel_size, params)

            def kernel_only():
                run_on_device()
                cuda.synchronize()

            kernel_s = best_time(kernel_only, args.repeat)
            call_s = best_time(lambda: downpool.downscale(
                image, method, kernel_size=args.kernel_size, device="cuda", **params), args.repeat)
            cpu_s = None if args.no_cpu else best_time(lambda: downpool.downscale(
                image, method, kernel_size=args.kernel_size, device="cpu", **params),
                args.cpu_repeat)
            cpu_text = "-" if cpu_s is None else f"{mp / cpu_s:.0f}"
            print(f"  {label:24s} {mp / kernel_s:12.0f} {mp / call_s:12.0f} {cpu_text:>12s}"
                  f" {copies['d2d'] / kernel_s:10.0%}")
            rows.append({"method": label, "kernel_s": kernel_s, "call_s": call_s, "cpu_s": cpu_s})
            sys.stdout.flush()
        results["sizes"].append({"megapixels": mp, "shape": list(image.shape), "copies_s": copies,
                                 "methods": rows})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
