"""``downscale`` with alpha or linear light, a strip of output rows at a time.

The strips must give the whole-image result bit for bit (every method, dtype
and geometry, partial windows, dpid's halo, stochastic draws by the whole
image's index), and must not make a full-size float copy of the image.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import downpool
from downpool import api
from downpool.geometry import area_axis, pooling_axis
from downpool.strips import plan_strips, rows_between, strip_span
from downpool.methods.stochastic import draw_base, uniform_draw, uniform_draw_after
from helpers import DTYPES, random_image
OPTIONS = [{"has_alpha": True}, {"linear": True}, {"has_alpha": True, "linear": True}]
#: Odd sizes (partial windows at the bottom), overlapping windows, area
#: boxes that straddle strips, and an output size.
GEOMETRIES = [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2}, {"scale": 0.37},
              {"size": (7, 11)}]
PARAMS = {"stochastic": [{"mode": "sample", "seed": 2**63 + 5}, {"mode": "expectation"}],
          "dpp": [{}, {"variant": "asym", "lam": 2.0}], "softpool": [{}, {"beta": 300.0}],
          "lp": [{}, {"p": 7.5}], "dpid": [{}, {"lam": 3.0}]}


def _stripped_and_whole(monkeypatch, image, method, strip_bytes=1, **kw):
    counts = []
    real = api.rows_between

    def counting(*args):
        counts.append(1)
        return real(*args)

    monkeypatch.setattr(api, "rows_between", counting)
    monkeypatch.setattr(api, "STRIP_BYTES", 1 << 50)
    whole = downpool.downscale(image, method, device="cpu", **kw)
    assert len(counts) == 1
    counts.clear()
    monkeypatch.setattr(api, "STRIP_BYTES", strip_bytes)
    stripped = downpool.downscale(image, method, device="cpu", **kw)
    return stripped, whole, len(counts)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method", sorted(downpool.METHODS))
def test_strips_equal_the_whole_image(monkeypatch, method, dtype):
    """One output row per strip against one strip, every option, geometry and parameter set."""
    if downpool.METHODS[method].labels:
        pytest.skip("a label method takes no alpha or linear light: downscale makes no strips")
    for shape, seed in [((37, 29, 4), 1), ((33, 31, 3), 2), ((25, 20, 2), 3)]:
        image = random_image(shape, dtype, seed)
        for geometry in GEOMETRIES:
            if method == "dpid" and "stride" in geometry:
                continue
            for params in PARAMS.get(method, [{}]):
                for options in OPTIONS:
                    if shape[2] == 2 and options.get("linear") and not options.get("has_alpha"):
                        continue  # covered by the other shapes
                    stripped, whole, n = _stripped_and_whole(
                        monkeypatch, image, method, **geometry, **params, **options)
                    out_rows = whole.shape[0]
                    assert n == out_rows  # every row its own strip
                    np.testing.assert_array_equal(
                        stripped, whole, err_msg=f"{shape} {geometry} {params} {options}")


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 12), channels=st.sampled_from([2, 4]),
       method=st.sampled_from(["softpool", "dpid", "stochastic", "dpp"]),
       geometry=st.sampled_from(GEOMETRIES), strip_bytes=st.integers(1, 6000),
       seed=st.integers(0, 2**32))
def test_any_strip_height_gives_the_whole_image(height, width, channels, method, geometry,
                                                strip_bytes, seed):
    if method == "dpid" and "stride" in geometry:
        geometry = {"kernel_size": 3}
    if "size" in geometry:
        geometry = {"size": (min(height, 7), min(width, 11))}
    image = random_image((height, width, channels), np.uint8, seed)
    params = {"mode": "sample", "seed": seed} if method == "stochastic" else {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        stripped, whole, _ = _stripped_and_whole(monkeypatch, image, method, strip_bytes,
                                                 has_alpha=True, **geometry, **params)
    np.testing.assert_array_equal(stripped, whole)


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 30), width=st.integers(1, 30), channels=st.sampled_from([1, 3, 4]),
       dtype=st.sampled_from(DTYPES), method=st.sampled_from(sorted(downpool.METHODS)),
       geometry=st.sampled_from(GEOMETRIES + [{"kernel_size": 4, "stride": 5}]),
       strip_bytes=st.integers(1, 3000), tile_columns=st.integers(1, 12),
       converted=st.booleans(), seed=st.integers(0, 2**32))
def test_tiles_of_columns_give_the_whole_image(height, width, channels, dtype, method, geometry,
                                               strip_bytes, tile_columns, converted, seed):
    """Tiles of output rows and columns (``Pooling.column_tiles``, ``pool_strip(columns=)``),
    each from its input rows and columns only: the whole image's bits, dpid's column of
    halo, area boxes that straddle tiles, the stochastic draws of the whole image, the
    whole image's blocks (a tile of the partial last window is not pooled as blocks)."""
    spec = downpool.METHODS[method]
    if spec.area_only and "stride" in geometry:
        geometry = {"kernel_size": 3}
    if "size" in geometry:
        geometry = {"size": (min(height, 7), min(width, 11))}
    image = random_image((height, width, channels), dtype, seed)
    options = ({"has_alpha": channels == 4, "linear": channels != 4}
               if converted and not spec.labels and channels > 1 else {})
    params = {"mode": "sample", "seed": seed} if method == "stochastic" else {}
    whole = downpool.downscale(image, method, device="cpu", **geometry, **options, **params)
    range_ = (0.0, 1.0) if image.dtype.kind == "u" else (float(image.min()), float(image.max()))
    pooling = api.Pooling(method, image.shape, image.dtype, range_, device="cpu", **geometry,
                          **options, **params)
    out = np.full(whole.shape, 7, dtype=whole.dtype)
    tiles = pooling.column_tiles(tile_columns)
    assert [t[:2] for t in tiles] == sorted(t[:2] for t in tiles)
    assert tiles[0][0] == 0 and tiles[-1][1] == whole.shape[1]
    for c_first, c_stop, x_start, x_end in tiles:
        for first, stop, in_start, in_end in pooling.strips(
                strip_bytes, tile=(c_stop - c_first, x_end - x_start)):
            part = image[in_start:in_end, x_start:x_end]
            out[first:stop, c_first:c_stop] = pooling.pool_strip(
                part, first, stop, in_start, columns=(c_first, c_stop, x_start))
    np.testing.assert_array_equal(out.view(np.uint8), whole.view(np.uint8))


def test_no_full_size_float_copy(monkeypatch):
    """Peak NumPy memory of an RGBA call with alpha: the strips' floats, not the image's.

    A float32 copy of the 1200x1000 RGBA image takes 19.2 MB; with 1 MB strips
    the call's peak is the uint8 output (1.2 MB) and a few strips.
    """
    image = random_image((1200, 1000, 4), np.uint8, 4)
    monkeypatch.setattr(api, "STRIP_BYTES", 1 << 20)
    downpool.downscale(image[:8, :8], "softpool", kernel_size=2, has_alpha=True, device="cpu")
    for options in OPTIONS:
        tracemalloc.start()
        try:
            downpool.downscale(image, "softpool", kernel_size=2, device="cpu", **options)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 5 * 2**20, (options, peak)


def test_working_bytes_counts_a_strip_not_the_image():
    full_copy = 3000 * 4000 * 4 * 4
    need = api.working_bytes((3000, 4000, 4), 1, (1500, 2000), has_alpha=True)
    assert 1500 * 2000 * 4 + api.STRIP_BYTES <= need < full_copy / 2
    # A thumbnail a row high: its one strip holds every input row.
    tall = api.working_bytes((3000, 4000, 4), 1, (1, 2000), has_alpha=True)
    assert tall >= 3000 * 4000 * 4 * 4


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), first=st.integers(0, 2**62), index=st.integers(0, 2**40))
def test_draw_base_continues_the_draws(seed, first, index):
    """A strip that starts at output index ``first`` draws what the whole image draws."""
    s = np.uint64(seed)
    assert uniform_draw_after(np.uint64(draw_base(s, first)), index) == uniform_draw(s, first + index)


def test_plan_strips_covers_every_row_within_budget():
    for axis in [pooling_axis(40, 3, 2), pooling_axis(40, 2, 5), area_axis(40, 13)]:
        end = axis.start + axis.count
        for halo in [0, 1]:
            for budget in [1, 150, 500, 10**9]:
                strips = plan_strips(axis.start, axis.count, halo, 10, 3, 2, budget)
                assert strips[0][0] == 0 and strips[-1][1] == axis.size
                assert all(a[1] == b[0] for a, b in zip(strips, strips[1:]))
                for first, stop in strips:
                    top, bottom = max(first - halo, 0), min(stop + halo, axis.size)
                    cost = ((end[bottom - 1] - axis.start[top]) * 10 + (stop - first) * 3
                            + (bottom - top) * 2)
                    assert cost <= budget or stop - first == 1
                if budget == 10**9:
                    assert len(strips) == 1


def test_rows_between_reads_only_the_strips_input_rows():
    axis = area_axis(40, 13)
    for first, stop in [(0, 1), (3, 7), (12, 13)]:
        top, bottom, in_start, in_end = strip_span(axis, first, stop, 1)
        part = rows_between(axis, top, bottom, in_start)
        assert part.start.min() == 0 and (part.start + part.count).max() == in_end - in_start
        np.testing.assert_array_equal(part.weight, axis.weight[top:bottom])
