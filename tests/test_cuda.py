"""The CUDA kernels of :mod:`downpool.cuda` against the CPU kernels, method by method.

Run in their own process, on the CPU, under Numba's CUDA simulator (which
must be switched on before Numba is first imported)::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -p no:cacheprovider tests/test_cuda.py

On a machine with a usable CUDA GPU, the same tests run unchanged on the GPU
(without the variable).  Elsewhere the kernel tests skip themselves; the
device-selection tests and the PTX compile test run wherever numba-cuda is
installed.  Images are tiny: the simulator runs one Python thread per output
pixel.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec

import numpy as np
import pytest

import downpool
from downpool import cpu
from downpool.api import _kernels
from downpool.core import PoolJob, check_image, dtype_max
from downpool.geometry import plan_windows
from downpool.methods import get_method, resolve_params
from downpool.strips import plan_strips

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES  # noqa: E402
from helpers import DTYPES, random_image  # noqa: E402

HAS_NUMBA_CUDA = find_spec("numba_cuda") is not None


def _gpu_unavailable_reason() -> str | None:
    if not HAS_NUMBA_CUDA:
        return "numba-cuda is not installed"
    from downpool import cuda as gpu

    reason = gpu.unavailable_reason()
    return None if reason is None else f"no CUDA GPU and no simulator ({reason})"


GPU_REASON = _gpu_unavailable_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=str(GPU_REASON))
needs_numba_cuda = pytest.mark.skipif(not HAS_NUMBA_CUDA, reason="numba-cuda is not installed")

#: (method, params): every case of tests/cases.py, the ends of every parameter range
#: of SPEC section 3 among them.
METHOD_CASES = [(c.method, c.params) for c in CASES]
CONVERTED_CASES = [(c.method, c.params) for c in CASES if not c.labels]
CONVERTED_IDS = [c.id for c in CASES if not c.labels]
CASE_IDS = [c.id for c in CASES]

#: Geometries on a 12x11 image: integer kernels, rectangular, overlapping
#: strides, strides larger than the kernel, partial edge windows, area sizes.
GEOMETRIES = [
    {"kernel_size": 2},
    {"kernel_size": (3, 2), "stride": (2, 3)},
    {"kernel_size": 5},
    {"size": (5, 4)},
    {"scale": 0.3},
]
GEOMETRY_IDS = ["k2", "k3x2-s2x3", "k5", "size5x4", "scale0.3"]


def _applies(method: str, geometry: dict) -> bool:
    """dpid takes no stride (SPEC section 3)."""
    return not (method == "dpid" and "stride" in geometry)


def _job(image: np.ndarray, method: str, geometry: dict, has_alpha: bool = False) -> PoolJob:
    """The job :func:`downpool.downscale` would make, writing float64 working values (a
    label method: stored values, in the image's dtype)."""
    spec = get_method(method)
    arr, value_range = check_image(image, labels=spec.labels)
    rows, cols = plan_windows(spec.name, spec.area_only, arr.shape[:2], **geometry)
    img = np.ascontiguousarray(arr if arr.ndim == 3 else arr[:, :, np.newaxis])
    channels = img.shape[2]
    n_colour = channels - 1 if has_alpha else channels
    return PoolJob(
        image=img, in_scale=1.0 / dtype_max(arr.dtype), rows=rows, cols=cols,
        out=np.full((rows.size, cols.size, channels), np.nan), out_max=1.0, out_int=False,
        n_colour=n_colour, value_mode=1 if channels in (3, 4) and n_colour >= 3 else 0,
        value_range=value_range,
    )


def _pool(module, job: PoolJob, method: str, params: dict, **options) -> np.ndarray:
    """Run ``module``'s kernel for ``method`` on a fresh output; return it."""
    if get_method(method).labels:
        run = dataclasses.replace(job, out=np.zeros(job.out.shape, job.image.dtype), out_int=False)
    else:
        run = job.with_output(np.full(job.out.shape, np.nan))
    values = resolve_params(get_method(method), params)
    getattr(module, f"pool_{method}")(run, **values, **options)
    return run.out


@pytest.fixture(scope="module")
def gpu():
    from downpool import cuda as gpu_module

    return gpu_module


# --- results equal the CPU's ------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
@pytest.mark.parametrize(("method", "params"), METHOD_CASES, ids=CASE_IDS)
def test_working_values_equal_the_cpu(gpu, method, params, geometry, dtype):
    """Every method, geometry, dtype and parameter range: within 1e-5 of the CPU on [0, 1] data."""
    if not _applies(method, geometry):
        pytest.skip("dpid takes no stride")
    job = _job(random_image((12, 11, 3), dtype), method, geometry)
    expected = _pool(cpu, job, method, params)
    result = _pool(gpu, job, method, params)
    assert np.isfinite(result).all()
    if get_method(method).labels or (method == "stochastic" and params["mode"] == "sample"):
        # Same draw, same pixel: the copied values are the same numbers.
        np.testing.assert_array_equal(result, expected)
    else:
        np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("method", "params"), METHOD_CASES, ids=CASE_IDS)
def test_downscale_on_cuda_equals_cpu(method, params, dtype):
    """Through the API, in the output dtype: floats within 1e-5, integers within one step.

    One step, because a working value within rounding error of a half step
    may round either way; the working values agree within 1e-5 (above).
    """
    for shape in [(12, 11), (12, 11, 2), (12, 11, 4)]:
        image = random_image(shape, dtype, seed=len(shape))
        expected = downpool.downscale(image, method, kernel_size=3, device="cpu", **params)
        result = downpool.downscale(image, method, kernel_size=3, device="cuda", **params)
        assert result.dtype == expected.dtype and result.shape == expected.shape
        if get_method(method).labels:
            np.testing.assert_array_equal(result, expected)
        elif np.dtype(dtype).kind == "u":
            assert np.abs(result.astype(np.int64) - expected.astype(np.int64)).max() <= 1
        else:
            np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize(("method", "params"), METHOD_CASES, ids=CASE_IDS)
def test_frames_on_cuda_equal_cpu(method, params):
    """SPEC section 6's 3-D windows on the GPU: 5 frames, overlapping time windows of 2
    and a partial last one of 3, an integer and an area geometry."""
    floats = np.stack([random_image((8, 6, 3), np.float32, seed=t) for t in range(5)])
    if get_method(method).labels:
        floats = np.round(floats * 3)
    # uint8 frames are pooled several windows per call (downpool.frames)
    for frames in (floats, np.round(floats * 80).astype(np.uint8)):
        for kw in [dict(time_kernel=2, time_stride=1, kernel_size=2),
                   dict(time_kernel=3, size=(3, 4))]:
            expected = downpool.downscale_frames(frames, method, device="cpu", **kw, **params)
            result = downpool.downscale_frames(frames, method, device="cuda", **kw, **params)
            assert result.shape == expected.shape
            if get_method(method).labels or method == "stochastic" and params["mode"] == "sample":
                np.testing.assert_array_equal(result, expected)
            elif frames.dtype == np.uint8:
                assert np.abs(result.astype(np.int64) - expected).max() <= 1
            else:
                np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize(("method", "params"), [("stochastic", {"mode": "sample", "seed": 3}),
                                                ("dpid", {}), ("mode", {})],
                         ids=["sample", "dpid", "mode"])
def test_tiles_of_columns_on_cuda_equal_the_whole_image(method, params):
    """A tile of output columns (downpool.dask's tasks): the draws by the whole image's
    output index, dpid's column of halo, on the GPU as on the CPU."""
    from downpool.api import Pooling

    image = random_image((13, 17, 3), np.uint8, seed=9)
    whole = downpool.downscale(image, method, kernel_size=2, device="cuda", **params)
    pooling = Pooling(method, image.shape, image.dtype, (0.0, 1.0), kernel_size=2,
                      device="cuda", **params)
    out = np.zeros_like(whole)
    for c_first, c_stop, x_start, x_end in pooling.column_tiles(4):
        for first, stop, in_start, in_end in pooling.strips(1, tile=(c_stop - c_first,
                                                                     x_end - x_start)):
            out[first:stop, c_first:c_stop] = pooling.pool_strip(
                image[in_start:in_end, x_start:x_end], first, stop, in_start,
                columns=(c_first, c_stop, x_start))
    np.testing.assert_array_equal(out, whole)


@needs_gpu
@pytest.mark.parametrize(("method", "params"), CONVERTED_CASES, ids=CONVERTED_IDS)
def test_alpha_and_linear_light_on_cuda_equal_cpu(method, params):
    image = random_image((10, 9, 4), np.float32, seed=3)
    for has_alpha, linear in [(True, False), (False, True), (True, True)]:
        kw = dict(size=(4, 4), has_alpha=has_alpha, linear=linear, **params)
        np.testing.assert_allclose(downpool.downscale(image, method, device="cuda", **kw),
                                   downpool.downscale(image, method, device="cpu", **kw),
                                   rtol=0, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize(("method", "params"), [("stochastic", {"mode": "sample", "seed": 9}),
                                                ("dpid", {}), ("softpool", {})],
                         ids=["sample", "dpid", "softpool"])
def test_alpha_in_strips_on_cuda_equals_one_strip(monkeypatch, method, params):
    """``downscale``'s strips of converted rows (downpool.strips) on the GPU: the draws
    continue from each strip's first row, dpid's halo rows are dropped."""
    from downpool import api

    image = random_image((13, 9, 4), np.uint8, seed=8)
    kw = dict(kernel_size=2, has_alpha=True, device="cuda", **params)
    whole = downpool.downscale(image, method, **kw)
    monkeypatch.setattr(api, "STRIP_BYTES", 1)
    np.testing.assert_array_equal(downpool.downscale(image, method, **kw), whole)
    cpu_result = downpool.downscale(image, method, **{**kw, "device": "cpu"})
    assert np.abs(whole.astype(np.int64) - cpu_result).max() <= 1


@needs_gpu
@pytest.mark.parametrize("method", ["softpool", "lp", "dpp", "dpid", "stochastic"])
def test_float_extremes_equal_the_cpu(gpu, method):
    """Float inputs far outside [0, 1]: relative agreement, no overflow."""
    image = random_image((9, 8, 3), np.float64, seed=5) * 1e300
    params = {"softpool": {"beta": 1e4}, "lp": {"p": 1000.0}, "dpp": {"lam": 100.0},
              "dpid": {"lam": 60.0}, "stochastic": {"mode": "expectation"}}[method]
    job = _job(image, method, {"size": (4, 3)})
    expected = _pool(cpu, job, method, params)
    result = _pool(gpu, job, method, params)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=0)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.float32])
def test_mode_on_label_images_equals_the_cpu(dtype):
    """Few labels, so that windows tie (uint32 labels past 65535 too); area windows weigh
    their pixels by exact coverage on the GPU as on the CPU."""
    rng = np.random.default_rng(5)
    labels = (rng.integers(0, 3, size=(12, 11, 2)) * 70_000).astype(dtype)
    for geometry in [{"kernel_size": 2}, {"kernel_size": (3, 2), "stride": (2, 3)},
                     {"size": (5, 4)}, {"size": (2, 2)}, {"kernel_size": 6}]:
        np.testing.assert_array_equal(
            downpool.downscale(labels, "mode", device="cuda", **geometry),
            downpool.downscale(labels, "mode", device="cpu", **geometry))


@needs_gpu
def test_stochastic_sample_picks_the_cpu_pixels_for_every_seed():
    image = random_image((12, 12, 3), np.uint8, seed=7)
    for seed in [0, 1, 99, 2**64 - 1]:
        for geometry in [{"kernel_size": 3}, {"size": (5, 7)}]:
            np.testing.assert_array_equal(
                downpool.downscale(image, "stochastic", seed=seed, device="cuda", **geometry),
                downpool.downscale(image, "stochastic", seed=seed, device="cpu", **geometry))


@needs_gpu
@pytest.mark.parametrize("size", [(1, 1), (1, 5), (6, 1), (2, 2), (2, 11)])
def test_dpid_guide_smoothing_at_one_and_two_pixel_edges(gpu, size):
    """The [1 2 1] smoothing's border cases: an axis of length 1 or 2, also across strips."""
    job = _job(random_image((12, 11, 3), np.uint16, seed=4), "dpid", {"size": size})
    for lam in [0.0, 1.0]:
        expected = _pool(cpu, job, "dpid", {"lam": lam})
        for max_bytes in [None, 1]:
            np.testing.assert_allclose(_pool(gpu, job, "dpid", {"lam": lam}, max_bytes=max_bytes),
                                       expected, rtol=0, atol=1e-5)


@needs_numba_cuda
def test_entry_points_match_the_cpu_ones(gpu):
    """Same names and parameters as downpool.cpu, plus the keyword-only ``max_bytes``."""
    import inspect

    for name in [n for n in cpu.__all__ if n.startswith("pool_")]:
        cpu_params = list(inspect.signature(getattr(cpu, name)).parameters)
        gpu_params = list(inspect.signature(getattr(gpu, name)).parameters)
        assert gpu_params == cpu_params + ["max_bytes"], name


# --- strips ------------------------------------------------------------------------------------


def _strip_count(gpu, job: PoolJob, method: str, max_bytes: float) -> int:
    """Strips ``_run`` makes for ``job`` under ``max_bytes`` (same cost formula)."""
    height, width, channels = job.image.shape
    out_w = job.out.shape[1]
    guided = method == "dpid"
    guide_row = out_w * channels * 8
    return len(plan_strips(job.rows.start, job.rows.count, 1 if guided else 0,
                               width * channels * job.image.itemsize,
                               out_w * channels * 8 + (guide_row if guided else 0),
                               guide_row if guided else 0, max_bytes))


@needs_gpu
@pytest.mark.parametrize(("method", "params"), [
    ("avg", {}), ("max", {}), ("softpool", {}), ("stochastic", {"mode": "sample", "seed": 5}),
    ("stochastic", {"mode": "expectation"}), ("dpp", {}), ("dpid", {}), ("dpid", {"lam": 0.0}),
    ("mode", {}),
], ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("geometry", [
    {"kernel_size": 3, "stride": 2},  # overlapping windows span strip edges
    {"size": (5, 4)},                  # fractional coverage spans strip edges
    {"size": (12, 11)},                # identity (one input row per output row)
], ids=["k3-s2", "size5x4", "identity"])
def test_strips_give_the_unstripped_result(gpu, method, params, geometry):
    """Images larger than the device memory budget: strips of output rows, same result.

    dpid's smoothed guide needs the guide rows above and below a strip.
    """
    if not _applies(method, geometry):
        pytest.skip("dpid takes no stride")
    job = _job(random_image((12, 11, 3), np.uint8, seed=11), method, geometry)
    whole = _pool(gpu, job, method, params)
    counts = set()
    for max_bytes in [1, 400, 900, 1800, 4000]:
        counts.add(_strip_count(gpu, job, method, max_bytes))
        np.testing.assert_array_equal(_pool(gpu, job, method, params, max_bytes=max_bytes), whole)
    # One row per strip, and strips of several rows.
    assert max(counts) == job.rows.size and any(1 < n < job.rows.size for n in counts)


# --- transfers ---------------------------------------------------------------------------------


def _record_copies(monkeypatch) -> list:
    """Record host/device copies from now on: ``(kind, dtype, size)`` per copy.

    kind is ``"table"`` for ``cuda.to_device`` (whatever it does inside, which
    on a real GPU includes ``copy_to_device``), ``"in"`` for
    ``copy_to_device`` and ``"out"`` for ``copy_to_host``.
    """
    from numba import cuda

    array_type = type(cuda.device_array(1))
    copies = []
    inside_to_device = []

    def to_device(original):
        def wrapper(host, *args, **kwargs):
            copies.append(("table", host.dtype, host.size))
            inside_to_device.append(True)
            try:
                return original(host, *args, **kwargs)
            finally:
                inside_to_device.pop()
        return wrapper

    def copy(kind, original):
        def wrapper(self, host=None, *args, **kwargs):
            if not inside_to_device:
                copies.append((kind, None if host is None else host.dtype,
                               None if host is None else host.size))
            return original(self, host, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(cuda, "to_device", to_device(cuda.to_device))
    monkeypatch.setattr(array_type, "copy_to_device", copy("in", array_type.copy_to_device))
    monkeypatch.setattr(array_type, "copy_to_host", copy("out", array_type.copy_to_host))
    return copies


@needs_gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("method", ["avg", "stochastic", "dpid"])
def test_one_copy_each_way_in_the_image_dtype(gpu, monkeypatch, method, dtype):
    """The input goes to the device once, in its own dtype; the output comes back once."""
    image = random_image((12, 11, 3), dtype)
    copies = _record_copies(monkeypatch)
    result = downpool.downscale(image, method, kernel_size=2, device="cuda")
    monkeypatch.undo()
    assert [c for c in copies if c[0] == "in"] == [("in", np.dtype(dtype), image.size)]
    assert [c for c in copies if c[0] == "out"] == [("out", np.dtype(dtype), result.size)]
    # The rest is the six window tables (start, count, weight per axis).
    assert [c[1] for c in copies if c[0] == "table"] == [np.dtype(np.int64)] * 2 + [
        np.dtype(np.float64)] + [np.dtype(np.int64)] * 2 + [np.dtype(np.float64)]


# --- device selection --------------------------------------------------------------------------


def test_cuda_without_numba_cuda_names_what_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    with pytest.raises(downpool.DeviceUnavailableError) as info:
        _kernels("cuda")
    message = str(info.value)
    assert "numba-cuda is not installed" in message and "downpool[cuda]" in message
    assert "\n" not in message
    assert _kernels("auto") is cpu


@needs_numba_cuda
def test_auto_is_cuda_only_on_a_real_gpu(gpu, capsys):
    chosen = _kernels("auto")
    if gpu.SIMULATOR or GPU_REASON is not None:
        assert chosen is cpu
    else:
        assert chosen is gpu
    assert capsys.readouterr() == ("", "")


@needs_numba_cuda
def test_cuda_without_a_gpu_is_a_one_line_error(gpu):
    if GPU_REASON is None:
        pytest.skip("a CUDA GPU (or the simulator) is usable here")
    with pytest.raises(downpool.DeviceUnavailableError, match="no usable CUDA GPU") as info:
        downpool.downscale(np.zeros((2, 2), np.uint8), "avg", device="cuda")
    assert "\n" not in str(info.value)


# --- compiling for the real target ---------------------------------------------------------------

_PTX_SCRIPT = textwrap.dedent(r"""
    import os, shutil, subprocess, sys, tempfile
    from pathlib import Path
    import numpy as np
    from numba import cuda, typeof
    from numba.cuda.cudadrv import nvvm
    if not nvvm.is_available():
        sys.exit(77)
    # Compiling a kernel that calls other functions asks the current device
    # for its compute capability, which needs a GPU; name one (sm_80) instead.
    import numba.cuda.dispatcher as dispatcher
    class Device:
        compute_capability = (8, 0)
    dispatcher.get_current_device = lambda: Device
    from downpool import cuda as gpu

    ptxas = shutil.which("ptxas")
    if ptxas is None:
        try:
            import nvidia.cuda_nvcc
            found = Path(nvidia.cuda_nvcc.__path__[0]) / "bin" / "ptxas"
            ptxas = str(found) if found.exists() else None
        except ImportError:
            pass
    # Every dtype with 3 channels; the channel count is only a constant, so
    # 1 channel is compiled for one dtype.
    for channels, dtypes in [(3, [np.uint8, np.uint16, np.float32, np.float64]), (1, [np.uint8])]:
        kernels = vars(gpu.kernels(channels))
        assert sorted(kernels) == sorted(
            ["avg", "max", "lp", "softpool", "expectation", "sample", "dpp", "dpid", "mode",
             "smooth"])
        for dtype in dtypes:
            table, count, weight = np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros((2, 2))
            out = np.zeros((2, 2, channels), dtype)
            lead = [np.zeros((4, 4, channels), dtype), 1.0, table, count, weight, 0,
                    table, count, weight, out, 255.0, True]
            trailing = {
                "avg": [], "max": [], "lp": [2.0], "softpool": [4.4], "expectation": [1.0],
                "sample": [0, 2, np.uint64(1), 1, channels], "dpp": [0.0, 1.0, False],
                "dpid": [np.zeros((2, 2, channels)), channels, 1.0],
                "mode": [np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64)],
            }
            for name, extra in trailing.items():
                # The window kernels take their parameters as one tuple.
                args = lead + ([tuple(extra)] if name in gpu._WINDOWS else extra)
                ptx, _ = cuda.compile_ptx(kernels[name].py_func, tuple(typeof(a) for a in args),
                                          cc=(8, 0))
                if ptxas:  # assemble for sm_80: the PTX is valid machine code
                    with tempfile.TemporaryDirectory() as tmp:
                        src = os.path.join(tmp, "k.ptx")
                        Path(src).write_text(ptx)
                        subprocess.run([ptxas, "-arch=sm_80", src, "-o", src + ".cubin"],
                                       check=True, capture_output=True)
                print(name, np.dtype(dtype).name, channels, len(ptx))
        # uint32: label images, for mode alone.
        lead[0], lead[9] = np.zeros((4, 4, channels), np.uint32), np.zeros((2, 2, channels), np.uint32)
        args = lead + trailing["mode"]
        cuda.compile_ptx(kernels["mode"].py_func, tuple(typeof(a) for a in args), cc=(8, 0))
        print("mode uint32", channels)
        guide = np.zeros((3, 2, channels))
        cuda.compile_ptx(kernels["smooth"].py_func,
                         tuple(typeof(a) for a in [guide, 0, 0, 3, guide]), cc=(8, 0))
    print("ptxas" if ptxas else "no ptxas")
""")


@needs_gpu
def test_every_kernel_compiles_to_ptx_for_a_real_gpu():
    """Every kernel, every dtype, for sm_80, with NVVM and no GPU (not the simulator).

    The simulator runs the kernels as Python; this compiles them, and the
    shared window functions they call, for the real target, in a process
    without the simulator.  It runs where the other kernel tests run (in the
    simulator's process, or on a GPU), is skipped where numba-cuda finds no
    NVVM (install ``numba-cuda[cu12]``), and also assembles the PTX with
    ``ptxas`` where that is installed.
    """
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600)
    if result.returncode == 77:
        pytest.skip("numba-cuda finds no NVVM (CUDA toolkit)")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("\n") == 5 * 9 + 2 + 1


@needs_gpu
@pytest.mark.parametrize("method", ["avg", "dpid", "stochastic"])
def test_device_resident_job_is_not_copied(gpu, monkeypatch, method):
    """A job whose image and out are device arrays runs in place (the benchmark's kernel timing)."""
    from numba import cuda

    job = _job(random_image((12, 11, 3), np.uint8), method, {"size": (5, 4)})
    expected = _pool(gpu, job, method, {})
    d_image, d_out = cuda.to_device(job.image), cuda.device_array(job.out.shape)
    resident = dataclasses.replace(job, image=d_image, out=d_out)
    copies = _record_copies(monkeypatch)
    getattr(gpu, f"pool_{method}")(resident, **resolve_params(get_method(method), {}))
    monkeypatch.undo()
    assert [c[0] for c in copies] == ["table"] * 6
    np.testing.assert_array_equal(d_out.copy_to_host(), expected)


def test_auto_skips_numba_cuda_where_linux_shows_no_nvidia_driver(monkeypatch):
    """``auto`` need not import numba.cuda (0.7 s) where no NVIDIA driver is present;
    ``cuda`` still asks numba-cuda, so its error names what is missing."""
    from downpool import api

    monkeypatch.setattr(api.sys, "platform", "linux")
    seen = []
    monkeypatch.setattr(api.os.path, "exists", lambda path: seen.append(path) or False)
    assert api._nvidia_driver_may_be_present() is False
    assert "/proc/driver/nvidia/version" in seen and "/dev/dxg" in seen
    assert _kernels("auto") is cpu
    monkeypatch.setattr(api.os.path, "exists", lambda path: path == "/dev/dxg")  # WSL 2
    assert api._nvidia_driver_may_be_present() is True
    monkeypatch.setattr(api.sys, "platform", "win32")
    assert api._nvidia_driver_may_be_present() is True
