"""A Dask pyramid of a big zarr array: downpool next to ``dask.array.coarsen(np.mean)``.

A ``--size`` x ``--size`` RGB uint8 array (default 20000: 1.2 GB) is made
once, chunk by chunk, and stored as zarr under ``benchmarks/out/``.  Each job
then writes a 6-level pyramid of it (level 0 copied, each level 2x2 of the
one above, every level stored as OME-NGFF by the same writer and read back
for the next) on a fresh ``distributed.LocalCluster`` of 1 or 2 worker
processes (one thread each) on 127.0.0.1:

- ``downpool.dask.pyramid`` with ``avg`` and with ``dpid``;
- the same levels made by ``dask.array.coarsen(np.mean, ..., trim_excess=True)``
  and cast back to uint8 (what ``xarray.coarsen().mean()`` computes), the
  comparison of the issue.

Reported: median wall seconds of ``--repeat`` runs, and the largest peak RSS
of a worker process (``ru_maxrss``, asked of each worker after the job).

Usage::

    python benchmarks/bench_dask.py [--size 20000] [--repeat 3] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LEVELS = 6


def _make(path: Path, side: int, chunk: int = 1024) -> None:
    import dask.array as da

    if path.exists():
        return

    def block(block_info=None):
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        rng = np.random.default_rng(y0 * 7919 + x0)
        y, x = np.mgrid[y0:y1, x0:x1]
        base = 128 + 60 * np.sin(x / 97.0) * np.cos(y / 131.0)
        pixels = base[:, :, None] + rng.normal(0, 20, (y1 - y0, x1 - x0, 3))
        return np.clip(pixels, 0, 255).astype(np.uint8)

    chunks = ((chunk,) * (side // chunk) + ((side % chunk,) if side % chunk else ()),) * 2
    array = da.map_blocks(block, dtype=np.uint8, chunks=(*chunks, (3,)))
    partial = path.with_name(path.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    array.to_zarr(str(partial))
    partial.rename(path)


def _coarsen_pyramid(array, store: str, chunks: int):
    import dask.array as da

    from downpool.dask import NgffWriter

    writer = NgffWriter(store, array.shape, array.dtype, LEVELS, chunks, "mean", "coarsen", {})
    level = writer.write(0, array)
    for i in range(1, LEVELS):
        mean = da.coarsen(np.mean, level, {0: 2, 1: 2}, trim_excess=True)
        level = writer.write(i, mean.round().astype(np.uint8))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _job(kind: str, source: Path, workers: int, chunks: int) -> tuple[float, float]:
    import dask.array as da
    from distributed import Client, LocalCluster

    import downpool.dask as dd

    with tempfile.TemporaryDirectory(dir=HERE / "out") as work, \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address=":0",
                         memory_limit=None) as cluster, Client(cluster) as client:
        # Each worker imports downpool and loads the kernels before the clock starts.
        client.run(lambda: dd.downscale(np.zeros((8, 8, 3), np.uint8), kind if kind != "mean"
                                        else "avg", kernel_size=2).compute())
        array = da.from_zarr(str(source))
        store = str(Path(work) / "out.zarr")
        start = time.perf_counter()
        if kind == "mean":
            _coarsen_pyramid(array, store, chunks)
        else:
            dd.pyramid(array, kind, levels=LEVELS, chunks=chunks, store=store)
        wall = time.perf_counter() - start
        peak = max(client.run(_peak_mib).values())
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--chunks", type=int, default=512)
    args = parser.parse_args()
    (HERE / "out").mkdir(exist_ok=True)
    source = HERE / "out" / f"rgb{args.size}.zarr"
    _make(source, args.size)
    print(f"# {args.size}x{args.size} RGB uint8 zarr (chunks 1024) to a {LEVELS}-level pyramid, "
          f"stored in {args.chunks}-pixel chunks; median of {args.repeat}\n")
    print("| job | workers | wall (s) | peak RSS per worker (MiB) |")
    print("|---|--:|--:|--:|")
    for workers in (int(w) for w in args.workers.split(",")):
        for kind in ("mean", "avg", "dpid"):
            runs = [_job(kind, source, workers, args.chunks) for _ in range(args.repeat)]
            label = ("dask.array.coarsen(np.mean)" if kind == "mean"
                     else f"downpool.dask.pyramid {kind}")
            print(f"| {label} | {workers} | {statistics.median(r[0] for r in runs):.2f} | "
                  f"{max(r[1] for r in runs):.0f} |", flush=True)


if __name__ == "__main__":
    main()
