"""``downpool.dask`` and ``downpool pyramid``: Dask arrays and OME-Zarr pyramids.

Dask's result must be, bit for bit, ``downpool.downscale`` of the whole array
for any chunking (hypothesis draws the chunks, shapes, geometries and
methods); one test runs it on a real ``distributed`` cluster of two worker
processes on 127.0.0.1.  Pyramids are read back with zarr and with
ome-zarr-py's reader, and their metadata checked against the NGFF 0.4 model
of ``ome-zarr-models``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

import downpool
import downpool.io
from cases import DEFAULT_CASES
from cli_helpers import downpool_command, run_downpool
from helpers import DTYPES, random_image, textured_image

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
dd = pytest.importorskip("downpool.dask")

_METHOD_CASES = [c for c in DEFAULT_CASES]


def _chunks(draw, n: int) -> tuple[int, ...]:
    """A random split of ``n`` into chunks."""
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4))) if n > 1 else []
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


@st.composite
def _problems(draw):
    case = draw(st.sampled_from(_METHOD_CASES))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    dtype = draw(st.sampled_from(DTYPES + ([np.uint32] if case.labels else [])))
    kind = draw(st.sampled_from(["kernel", "size"] if case.method != "dpid" else ["size", "k"]))
    if kind == "kernel":
        k = draw(st.integers(1, 5))
        geometry = {"kernel_size": k, "stride": draw(st.one_of(st.none(), st.integers(1, 5)))}
    elif kind == "k":
        geometry = {"kernel_size": draw(st.integers(1, 5))}
    else:
        geometry = {"size": (draw(st.integers(1, h)), draw(st.integers(1, w)))}
    options = {}
    if not case.labels and channels in (3, 4) and draw(st.booleans()):
        options = {"has_alpha": channels == 4, "linear": channels == 3}
    shape = (h, w) if channels is None else (h, w, channels)
    chunks = tuple(_chunks(draw, n) for n in shape)
    budget = draw(st.sampled_from([None, 1, 4000]))
    return case, shape, dtype, geometry, options, chunks, budget


def _pixels(case, shape, dtype, seed):
    """Random pixels for ``case``: floats over [-1, 2) (over [0, 3) for lp and stochastic,
    which take no negative value), integer labels in 0..7 for a label method."""
    if case.labels and np.dtype(dtype).kind == "u":
        return np.random.default_rng(seed).integers(0, 8, shape, dtype=dtype)
    lo = 0.0 if case.method in ("lp", "stochastic") else -1.0
    return random_image(shape, dtype, seed, lo=lo, hi=lo + 3.0)


@settings(max_examples=60, deadline=None)
@given(problem=_problems(), seed=st.integers(0, 2**32 - 1))
def test_any_chunking_gives_downscale_bits(problem, seed):
    case, shape, dtype, geometry, options, chunks, budget = problem
    image = _pixels(case, shape, dtype, seed)
    expected = downpool.downscale(image, case.method, **geometry, **options, **case.params)
    lazy = dd.downscale(da.from_array(image, chunks=chunks), case.method, max_bytes=budget,
                        **geometry, **options, **case.params)
    assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), expected)


@settings(max_examples=40, deadline=None)
@given(problem=_problems(), t=st.integers(1, 5), kt=st.integers(1, 3),
       ts=st.one_of(st.none(), st.integers(1, 3)), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_frames_in_any_chunking_give_downscale_frames_bits(problem, t, kt, ts, data, seed):
    """(T, H, W[, C]) arrays with a time kernel: ``downscale_frames``' bits for any chunking,
    the time axis chunked too (SPEC section 6)."""
    case, shape, dtype, geometry, options, chunks, budget = problem
    frames = _pixels(case, (t, *shape), dtype, seed)
    expected = downpool.downscale_frames(frames, case.method, time_kernel=kt, time_stride=ts,
                                         **geometry, **options, **case.params)
    chunks = (_chunks(data.draw, t), *chunks)
    lazy = dd.downscale(da.from_array(frames, chunks=chunks), case.method, time_kernel=kt,
                        time_stride=ts, max_bytes=budget, **geometry, **options, **case.params)
    assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), expected)


def test_errors_come_at_once_or_when_computed():
    x = da.zeros((8, 8), dtype=np.float32, chunks=4)
    with pytest.raises(ValueError, match="larger than the input|downscales"):
        dd.downscale(x, "avg", size=(9, 9))
    with pytest.raises(TypeError, match="dtype"):
        dd.downscale(da.zeros((8, 8), dtype=np.int8, chunks=4), "avg")
    bad = da.from_array(np.array([[0.0, np.nan], [1.0, 2.0]], np.float32), chunks=1)
    with pytest.raises(ValueError, match="NaN"):
        dd.downscale(bad, "avg").compute()
    negative = da.from_array(-np.ones((4, 4), np.float32), chunks=2)
    with pytest.raises(ValueError, match="non-negative"):
        dd.downscale(negative, "lp").compute()
    with pytest.raises(ValueError, match="3-D .* or 4-D"):
        dd.downscale(x, "avg", time_kernel=2)
    with pytest.raises(ValueError, match="time_kernel must be a positive integer"):
        dd.downscale_frames(da.zeros((2, 4, 4), dtype=np.uint8), "avg", time_kernel=0)
    frames = np.zeros((3, 4, 4), np.float32)
    frames[2, 1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        dd.downscale_frames(da.from_array(frames, chunks=2), "avg", time_kernel=3).compute()


_CLUSTER_SCRIPT = """
import sys, numpy as np, dask.array as da
from distributed import Client, LocalCluster, wait
import downpool, downpool.dask as dd
image = np.random.default_rng(4).integers(0, 255, (301, 257, 3), dtype=np.uint8)
x = da.from_array(image, chunks=(64, 100, 3))
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                  dashboard_address=":0") as cluster, Client(cluster) as client:
    lazy = dd.downscale(x, "dpid", kernel_size=3, max_bytes=60000)
    tasks = lazy.to_delayed()  # the grid of tiles
    futures = client.compute(tasks.ravel().tolist())
    wait(futures)
    workers = {worker for who in client.who_has(futures).values() for worker in who}
    tiles = [future.result() for future in futures]
    grid = [[[tiles[r * tasks.shape[1] + c]] for c in range(tasks.shape[1])]
            for r in range(tasks.shape[0])]
    result = np.block(grid)
    assert tasks.shape[1] > 1, tasks.shape  # tiles of columns, not full-width strips
same = np.array_equal(result, downpool.downscale(image, "dpid", kernel_size=3))
print(len(workers), same)
"""


def test_a_real_cluster_of_two_workers_gives_the_same_bits():
    run = subprocess.run([sys.executable, "-c", _CLUSTER_SCRIPT], capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    workers, same = run.stdout.split()
    assert same == "True"
    assert int(workers) == 2  # the strips were spread over both


def _check_ngff(path, levels: int, channels: bool, stack: bool = False):
    """The group's metadata against NGFF 0.4's required fields, and ome-zarr-py's reading."""
    group = zarr.open_group(str(path), mode="r")
    [multiscale] = group.attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    names = [axis["name"] for axis in multiscale["axes"]]
    assert names == ["c"] * channels + ["z"] * stack + ["y", "x"]
    assert [d["path"] for d in multiscale["datasets"]] == [str(i) for i in range(levels)]
    for i, dataset in enumerate(multiscale["datasets"]):
        scale = dataset["coordinateTransformations"][0]
        assert scale["type"] == "scale" and scale["scale"][-2:] == [2.0 ** i] * 2
        assert group[str(i)].ndim == len(names)
    models = pytest.importorskip("ome_zarr_models.v04")
    models.Image.from_zarr(group)  # raises on anything the spec requires and is missing
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    [node, *_] = list(reader.Reader(io.parse_url(str(path)))())
    return [np.asarray(level) for level in node.data]


def test_pyramid_levels_are_downscale_of_the_level_above(tmp_path):
    image = textured_image((150, 97, 4), seed=3)
    store = tmp_path / "p.zarr"
    levels = dd.pyramid(da.from_array(image, chunks=(40, 50, 4)), "softpool", levels=4,
                        chunks=32, has_alpha=True, store=store, name="test")
    read = _check_ngff(store, 4, channels=True)
    expected = image
    for i, (level, stored) in enumerate(zip(levels, read)):
        assert level.shape == expected.shape
        np.testing.assert_array_equal(level.compute(), expected, err_msg=f"level {i}")
        np.testing.assert_array_equal(stored.transpose(1, 2, 0), expected)
        expected = downpool.downscale(expected, "softpool", kernel_size=2, has_alpha=True)
    assert dd.pyramid_levels((1000, 700), chunks=128) == [(1000, 700), (500, 350), (250, 175),
                                                         (125, 88)]
    assert dd.pyramid_levels((5, 3), min_size=1) == [(5, 3), (3, 2), (2, 1)]  # the smaller side
    assert dd.pyramid_levels((5, 3), levels=9)[-1] == (1, 1)  # and never below one pixel


def test_pyramid_command_streams_a_label_tiff(tmp_path):
    # 2.25 MB of samples: libvips decodes it a band at a time (io.STREAM_MIN_BYTES).
    labels = np.random.default_rng(5).integers(0, 6, (1500, 1499), dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "labels.tif")
    with downpool.io.open_image(tmp_path / "labels.tif") as opened:
        assert opened.streamed
    result = run_downpool("pyramid", tmp_path / "labels.tif", "-o", tmp_path / "labels.zarr",
                          "--method", "mode", "--chunks", "256")
    assert result.returncode == 0, result.stderr
    # Halved until the smaller side is at most --chunks.
    assert "4 levels (1499x1500, 750x750, 375x375, 188x188)" in result.stderr
    read = _check_ngff(tmp_path / "labels.zarr", 4, channels=False)
    expected = labels
    for stored in read:
        np.testing.assert_array_equal(stored, expected)
        assert set(np.unique(stored)) <= set(range(6))  # no label invented
        expected = downpool.downscale(expected, "mode", kernel_size=2)
    # Again: refused without --overwrite, and nothing half-written is left.
    again = run_downpool("pyramid", tmp_path / "labels.tif", "-o", tmp_path / "labels.zarr")
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "labels.zarr"]


def test_pyramid_command_from_a_zarr_array_and_its_errors(tmp_path):
    image = textured_image((90, 70, 3), seed=6)
    zarr.create_array(str(tmp_path / "in.zarr"), data=image, chunks=(30, 30, 3))
    result = run_downpool("pyramid", tmp_path / "in.zarr", "-o", tmp_path / "out.zarr",
                          "--method", "dpid", "--levels", "2", "--chunks", "16")
    assert result.returncode == 0, result.stderr
    read = _check_ngff(tmp_path / "out.zarr", 2, channels=True)
    np.testing.assert_array_equal(read[1].transpose(1, 2, 0),
                                  downpool.downscale(image, "dpid", kernel_size=2))
    (tmp_path / "not.png").write_bytes(b"no image here")
    bad = run_downpool("pyramid", tmp_path / "not.png", "-o", tmp_path / "bad.zarr")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "error" in bad.stderr
    assert not (tmp_path / "bad.zarr").exists()


def test_pyramid_command_from_a_folder_of_tiff_pages(tmp_path):
    pages = [textured_image((61, 47, 3), seed=10 + z) for z in range(3)]
    folder = tmp_path / "stack"
    folder.mkdir()
    for z, page in enumerate(pages):
        Image.fromarray(page).save(folder / f"page{z:02d}.tif")
    (folder / "notes.txt").write_text("not a page")
    result = run_downpool("pyramid", folder, "-o", tmp_path / "stack.zarr", "--method", "dpp",
                          "--levels", "3", "--chunks", "16")
    assert result.returncode == 0, result.stderr
    read = _check_ngff(tmp_path / "stack.zarr", 3, channels=True, stack=True)
    expected = pages
    for stored in read:
        assert stored.shape == (3, 3, *expected[0].shape[:2])  # c, z, y, x
        for z in range(3):
            np.testing.assert_array_equal(stored[:, z].transpose(1, 2, 0), expected[z])
        expected = [downpool.downscale(page, "dpp", kernel_size=2) for page in expected]
    Image.fromarray(textured_image((60, 47, 3))).save(folder / "page03.tif")
    bad = run_downpool("pyramid", folder, "-o", tmp_path / "bad.zarr")
    assert bad.returncode == 1 and "must agree" in bad.stderr and bad.stderr.count("\n") == 1


def test_without_the_extra_the_command_names_it(tmp_path):
    Image.fromarray(textured_image((20, 20, 3))).save(tmp_path / "a.png")
    blocked = ("import sys; sys.modules['dask'] = sys.modules['dask.array'] = None; "
               "from downpool.console import main; sys.argv[0] = 'downpool'; main()")
    run = subprocess.run([sys.executable, "-c", blocked, "pyramid", str(tmp_path / "a.png"),
                          "-o", str(tmp_path / "a.zarr")], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip() == ('downpool: error: downpool.dask needs Dask: '
                                  'pip install "downpool[dask]"')
    assert downpool_command()  # the installed command is what the other tests run
    assert json.dumps(dd.multiscales_metadata(1, None, "avg"))  # plain JSON


# --- batches on a cluster: downpool shrink --scheduler ---------------------------------


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def cluster(tmp_path):
    """A real scheduler and two workers (no nanny: a killed worker stays dead), each its
    own process, on 127.0.0.1; yields the scheduler's address and the workers."""
    distributed = pytest.importorskip("distributed")
    file = tmp_path / "scheduler.json"
    processes = [_spawn("scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--scheduler-file", str(file), "--no-dashboard")]
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [_spawn("worker", "--scheduler-file", str(file), "--nthreads", "1",
                          "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
                          "--name", f"w{i}") for i in range(2)]
        processes += workers
        with distributed.Client(scheduler_file=str(file), timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            address = client.scheduler.address
        yield address, workers
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_a_batch_survives_a_worker_killed_in_the_middle(tmp_path, cluster):
    address, workers = cluster
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    images = {}
    for i in range(14):
        images[f"img{i:02d}.png"] = textured_image((700, 600, 3), seed=20 + i)
        Image.fromarray(images[f"img{i:02d}.png"]).save(folder / f"img{i:02d}.png")
    process = subprocess.Popen([*downpool_command(), "shrink", str(folder), "-o", str(out),
                                "--method", "dpid", "--scale", "0.3", "--scheduler", address],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len([p for p in out.iterdir() if p.suffix == ".png"]) >= 2:
            break
        time.sleep(0.02)
    os.killpg(workers[0].pid, signal.SIGKILL)  # mid-batch: its file in flight is lost
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    assert "14 done, 0 skipped, 0 failed" in stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(images)  # no temporaries either
    for name, image in images.items():
        with Image.open(out / name) as written:
            np.testing.assert_array_equal(np.asarray(written),
                                          downpool.downscale(image, "dpid", scale=0.3))


def test_a_local_cluster_and_the_usage_errors(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(textured_image((40, 30, 3), seed=i)).save(folder / f"{i}.png")
    result = run_downpool("shrink", folder, "-o", tmp_path / "out", "--method", "avg",
                          "--scheduler", "local:2")
    assert result.returncode == 0, result.stderr
    assert "3 done" in result.stderr
    for i in range(3):
        with Image.open(tmp_path / "out" / f"{i}.png") as written:
            np.testing.assert_array_equal(
                np.asarray(written), downpool.downscale(textured_image((40, 30, 3), seed=i), "avg"))
    bad = run_downpool("shrink", folder, "--scheduler", "nowhere")
    assert bad.returncode == 2 and "tcp://HOST:PORT or local[:N]" in bad.stderr
    both = run_downpool("shrink", folder, "--scheduler", "local:2", "--processes")
    assert both.returncode == 2 and "contradict" in both.stderr
