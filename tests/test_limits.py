"""Limit cases and invariants of every method, and stochastic sample mode's statistics.

Float tolerances are those of ``reference.assert_matches`` (1e-5) unless a
test states a bound of its own derived from the formula.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import downpool  # noqa: E402
from cases import DEFAULT_CASES  # noqa: E402
from helpers import DTYPES, random_image  # noqa: E402
from reference import (  # noqa: E402
    FLOAT_TOL,
    assert_matches,
    dtype_max,
    mode_downscale,
    plan,
    reference_downscale,
    smooth_guide,
    stochastic_probabilities,
    to_work,
    window,
    window_ranges,
)

METHODS = list(downpool.METHODS)
#: every method with its default parameters, plus the stochastic expectation mode
ALL_CASES = [(c.method, c.params) for c in DEFAULT_CASES]
ALL_IDS = [c.id for c in DEFAULT_CASES]
#: those that pool intensities: alpha and linear light apply
CONVERTED_CASES = [(c.method, c.params) for c in DEFAULT_CASES if not c.labels]
CONVERTED_IDS = [c.id for c in DEFAULT_CASES if not c.labels]


def downscale(image, method, **kw):
    return downpool.downscale(image, method, device="cpu", **kw)


def geoms_for(method):
    g = [{"kernel_size": 2}, {"kernel_size": (3, 2)}, {"size": (4, 5)}, {"scale": 0.45}]
    if method != "dpid":
        g += [{"kernel_size": 3, "stride": 2}, {"kernel_size": 2, "stride": 3}]
    return g


# ============================================================ stochastic sample

def pixel_in_window(out_px, cand, tol=0.0):
    """Index of a row of ``cand`` (n, C) equal to ``out_px`` (C,) in all channels, else None."""
    hit = np.all(np.abs(cand.astype(np.float64) - out_px.astype(np.float64)) <= tol, axis=1)
    return int(np.argmax(hit)) if hit.any() else None


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sample_copies_one_window_pixel(dtype, channels):
    """(a) Every output pixel is one of its window's pixels, all channels from the same one."""
    rng = np.random.default_rng(10)
    shape = (15, 17) if channels is None else (15, 17, channels)
    img = random_image(shape, dtype, rng)
    for geom in geoms_for("stochastic"):
        for seed in (0, 12345):
            out = downscale(img, "stochastic", seed=seed, **geom)
            assert out.dtype == img.dtype and out.ndim == img.ndim
            out3 = out if out.ndim == 3 else out[:, :, None]
            img3 = img if img.ndim == 3 else img[:, :, None]
            rows, cols = plan("stochastic", img.shape[:2], **geom)
            assert out3.shape[:2] == (len(rows), len(cols))
            for i in range(len(rows)):
                for j in range(len(cols)):
                    _, c, pos = window(to_work(img), rows, cols, i, j)
                    cand = img3[pos[:, 0], pos[:, 1]]
                    assert pixel_in_window(out3[i, j], cand) is not None, (geom, seed, i, j)


def test_sample_with_alpha_copies_one_pixel():
    """With premultiplied alpha the copied pixel comes back (up to rounding) and has alpha > 0."""
    rng = np.random.default_rng(11)
    img = random_image((12, 14, 4), np.float32, rng)
    img[..., 3] = np.where(rng.random((12, 14)) < 0.3, 0.0, 0.2 + 0.8 * img[..., 3])
    out = downscale(img, "stochastic", kernel_size=3, has_alpha=True)
    rows, cols = plan("stochastic", img.shape[:2], kernel_size=3)
    for i in range(len(rows)):
        for j in range(len(cols)):
            _, _, pos = window(to_work(img), rows, cols, i, j)
            cand = img[pos[:, 0], pos[:, 1]]
            if np.all(cand[:, 3] == 0):
                assert np.all(out[i, j] == 0)
            else:
                k = pixel_in_window(out[i, j], cand, tol=1e-6)
                assert k is not None and cand[k, 3] > 0, (i, j)


def test_sample_seeds():
    """(b) Same seed, same result; a different seed gives a different result."""
    rng = np.random.default_rng(12)
    img = random_image((64, 64, 3), np.uint8, rng)
    a = downscale(img, "stochastic", kernel_size=2, seed=7)
    assert np.array_equal(a, downscale(img, "stochastic", kernel_size=2, seed=7))
    assert not np.array_equal(a, downscale(img, "stochastic", kernel_size=2, seed=8))
    assert not np.array_equal(a, downscale(img, "stochastic", kernel_size=2, seed=2**64 - 1))
    # the default seed is 0
    assert np.array_equal(downscale(img, "stochastic", kernel_size=2),
                          downscale(img, "stochastic", kernel_size=2, seed=0))
    assert downpool.METHODS["stochastic"].params["seed"].default == 0
    assert downpool.METHODS["stochastic"].params["mode"].default == "sample"


def test_sample_independent_of_thread_count():
    """(c) The draw is a function of (seed, output index) only: 1 and 2 Numba threads agree."""
    rng = np.random.default_rng(13)
    img = random_image((96, 80, 4), np.float32, rng)
    before = numba.get_num_threads()
    try:
        results = []
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(n)
            results.append([downscale(img, "stochastic", **g, seed=3)
                            for g in ({"kernel_size": 2}, {"size": (33, 29)})])
            results[-1].append(downscale(img, "stochastic", kernel_size=2, has_alpha=True, seed=3))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[-1]):
        assert np.array_equal(a, b)


@functools.cache
def _block_exp():
    from downpool.methods.softpool import _exp_nonpositive

    return numba.njit(lambda v: _exp_nonpositive(v))


@settings(max_examples=300, deadline=None)
@given(x=st.one_of(st.floats(-800.0, 0.0), st.floats(-1e-300, 0.0),
                   st.sampled_from([0.0, -0.0, -708.0, -707.9999, -708.0001, -745.2, -1e300])))
def test_exp_of_block_softpool_matches_math_exp(x):
    """softpool's vectorisable e^x (block kernels, float input): within 1e-14 of
    math.exp down to -708, and 0 below, where the weight is < 1e-307 of the window's largest."""
    got = _block_exp()(x)
    if x >= -708.0:
        assert abs(got - math.exp(x)) <= 1e-14 * math.exp(x)
    else:
        assert got == 0.0


def test_exp2_of_float32_softpool_within_2_2e_7():
    """softpool's float32 2^x (block kernels with bounded exponents): within 2.2e-7
    relative of 2^x on a dense grid of the exponents it takes (|x| <= 8 / ln 2),
    at the ends of its stated range |x| <= 126, and at the rounding boundaries
    x = n +- 1/2."""
    from downpool.methods.softpool import _exp2_f32

    @numba.njit
    def powers(xs):
        out = np.empty_like(xs)
        for i in range(xs.size):
            out[i] = _exp2_f32(xs[i])
        return out

    halves = np.arange(-126, 126) + np.float32(0.5)
    xs = np.concatenate([np.linspace(-12.5, 12.5, 2_000_001), np.linspace(-126, 126, 100_001),
                         halves, np.nextafter(halves, 0), np.nextafter(halves, 200)])
    xs = xs.astype(np.float32)
    exact = 2.0 ** xs.astype(np.float64)
    error = np.abs(powers(xs) - exact) / exact
    assert error.max() <= 2.2e-7, (error.max(), xs[error.argmax()])


def _general_kernel_sample(image, seed, geometry, max_values=None):
    """Stochastic sample by the general kernel, in the image's own values: the kernel
    that every geometry can take.  ``max_values`` caps its buffer of selection
    values (default ``stochastic.SAMPLE_VALUES``); jobs whose windows need more take
    ``stochastic.sample_window``."""
    from downpool.methods import stochastic
    from downpool.core import PoolJob, check_image
    from downpool.geometry import plan_windows

    arr, value_range = check_image(image)
    rows, cols = plan_windows("stochastic", False, arr.shape[:2], **geometry)
    img = np.ascontiguousarray(arr if arr.ndim == 3 else arr[:, :, np.newaxis])
    channels = img.shape[2]
    job = PoolJob(image=img, in_scale=1.0, rows=rows, cols=cols,
                  out=np.full((rows.size, cols.size, channels), np.nan), out_max=1.0,
                  out_int=False, n_colour=channels, value_mode=1 if channels in (3, 4) else 0,
                  value_range=value_range)
    stochastic.stochastic_sample_kernel(*job.kernel_args(), stochastic.job_draws(job, seed),
                                        job.draw_row, job.value_mode, job.n_colour,
                                        stochastic.sample_kernel_form(job, max_values),
                                        0, rows.size)  # every output row
    return job.out.reshape(job.out.shape[:2] + arr.shape[2:])


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), channels=st.sampled_from([None, 1, 2, 3, 4]),
       blocks=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       extra=st.tuples(st.integers(0, 1), st.integers(0, 1)),
       geometry=st.sampled_from([{"kernel_size": 2}, {"kernel_size": 3},
                                 {"kernel_size": (2, 4)}]),
       zeros=st.sampled_from([0.0, 0.5, 0.9, 1.0]), seed=st.integers(0, 2**64 - 1),
       data=st.randoms(use_true_random=False))
def test_sample_block_kernels_pick_the_general_kernels_pixels(dtype, channels, blocks, extra,
                                                               geometry, zeros, seed, data):
    """The block kernels (halving with constant sizes, in passes; other blocks and the
    partial edge windows per window) pick, for every draw, the pixel the general
    kernel picks: with pixels of value 0 (no weight) and windows all 0 (uniform)."""
    k = geometry["kernel_size"]
    kh, kw = (k, k) if isinstance(k, int) else k
    shape = (blocks[0] * kh + extra[0], blocks[1] * kw + extra[1])
    if channels is not None:
        shape += (channels,)
    rng = np.random.default_rng(data.getrandbits(32))
    image = random_image(shape, dtype, rng)
    image[rng.random(shape[:2]) < zeros] = 0
    got = downscale(image, "stochastic", seed=seed, **geometry)
    np.testing.assert_array_equal(got, _general_kernel_sample(image, seed, geometry))


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(DTYPES), channels=st.sampled_from([None, 1, 2, 3, 4]),
       shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       fraction=st.tuples(st.floats(0.02, 1.0), st.floats(0.02, 1.0)),
       zeros=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 2**64 - 1),
       data=st.randoms(use_true_random=False))
def test_sample_general_kernel_buffered_values_pick_as_sample_window(dtype, channels, shape,
                                                                      fraction, zeros, seed,
                                                                      data):
    """The general kernel's selection values made once per output row (its pick over
    them) and computed per window (``stochastic.sample_window``, taken where the
    windows' rows would not fit the buffer) pick the same pixels, on area windows
    with fractional coverages."""
    if channels is not None:
        shape += (channels,)
    rng = np.random.default_rng(data.getrandbits(32))
    image = random_image(shape, dtype, rng)
    image[rng.random(shape[:2]) < zeros] = 0
    size = tuple(max(1, int(n * f)) for n, f in zip(shape[:2], fraction))
    buffered = _general_kernel_sample(image, seed, {"size": size})
    per_window = _general_kernel_sample(image, seed, {"size": size}, max_values=0)
    np.testing.assert_array_equal(buffered, per_window)
    np.testing.assert_array_equal(downscale(image, "stochastic", seed=seed, size=size), buffered)


@pytest.mark.parametrize("channels", [None, 2, 3, 4])
def test_sample_never_picks_zero_probability(channels):
    """(d) A window with one pixel of non-zero value v always gives that pixel.

    The other pixels have v = 0; with 4 channels (RGBA without has_alpha, v =
    luma of RGB) they carry a non-zero fourth channel, so picking them would show.
    """
    rng = np.random.default_rng(14)
    kh, kw = 3, 4
    nh, nw = 12, 10
    shape = (nh * kh, nw * kw) if channels is None else (nh * kh, nw * kw, channels)
    img = np.zeros(shape, np.float64)
    if channels == 4:
        img[..., 3] = rng.random(shape[:2])
    where = []
    for i in range(nh):
        for j in range(nw):
            y, x = i * kh + rng.integers(kh), j * kw + rng.integers(kw)
            val = rng.uniform(0.01, 1.0, size=() if channels is None else channels)
            img[y, x] = val
            where.append((i, j, y, x))
    for seed in range(5):
        out = downscale(img, "stochastic", kernel_size=(kh, kw), seed=seed)
        for i, j, y, x in where:
            assert np.array_equal(out[i, j], img[y, x]), (seed, i, j)


def _pattern_image(rng, period, tiles, channels=3, zero_value=False):
    """An image tiled with one ``period`` block of distinct pixels, and that block."""
    ph, pw = period
    block = rng.uniform(0.05, 1.0, size=(ph, pw, channels))
    if zero_value:  # v = luma of channels 0-2 is 0; channel 3 tells the pixels apart
        block[..., :3] = 0.0
        block[..., 3] = (1 + np.arange(ph * pw).reshape(ph, pw)) / (ph * pw + 1)
    img = np.tile(block, (tiles[0], tiles[1], 1))
    return img, block


def _chi_square_by_class(img, out, rows, cols, period, n_classes, channels, has_alpha=False):
    """Chi-square test of picks against ``c v / sum c v`` for windows of identical content.

    With has_alpha, v comes from the premultiplied colour and the picked
    pixel is recognised by its alpha (distinct within the block).
    """
    work = to_work(img)
    if has_alpha:
        work = work.copy()
        work[..., :-1] *= work[..., -1:]
    ph, pw = period
    # window (i, j) and (i + n_classes[0], j + ...) have the same content and coverage
    totals = {}
    for i in range(len(rows)):
        for j in range(len(cols)):
            a, c, pos = window(work, rows, cols, i, j)
            key = (i % n_classes[0], j % n_classes[1])
            probs = stochastic_probabilities(a, c, channels, has_alpha)
            if has_alpha:
                k = pixel_in_window(out[i, j, -1:], img[pos[:, 0], pos[:, 1], -1:], tol=1e-6)
            else:
                k = pixel_in_window(out[i, j], img[pos[:, 0], pos[:, 1]])
            assert k is not None
            rel = [(int(r) - int(pos[0, 0]), int(q) - int(pos[0, 1])) for r, q in pos]
            entry = totals.setdefault(key, {"probs": dict(zip(rel, probs)), "obs": {}})
            assert np.allclose([entry["probs"][r] for r in rel], probs)
            entry["obs"][rel[k]] = entry["obs"].get(rel[k], 0) + 1
    pvalues = []
    for key, e in totals.items():
        cells = list(e["probs"])
        p = np.array([e["probs"][r] for r in cells])
        obs = np.array([e["obs"].get(r, 0) for r in cells])
        assert np.all(obs[p == 0] == 0), f"class {key}: a zero-probability pixel was picked"
        keep = p > 0
        n = obs.sum()
        if keep.sum() > 1:
            stat = ((obs[keep] - n * p[keep]) ** 2 / (n * p[keep])).sum()
            pvalues.append(stats.chi2.sf(stat, keep.sum() - 1))
    return pvalues


@pytest.mark.parametrize("zero_value", [False, True], ids=["weighted", "all-zero-uniform"])
@pytest.mark.parametrize("geom", [{"kernel_size": 2}, {"kernel_size": (3, 2)}, {"size": (60, 60)}],
                         ids=["k2", "k3x2", "fractional"])
def test_sample_frequencies(geom, zero_value):
    """(e) Pick frequencies match ``c v / sum c v``; (f) all-zero windows: uniform by coverage.

    The image repeats one block, so windows of the same class (same content
    and coverages) are many; a deterministic seed makes the test reproducible.
    The 4-channel image is RGBA without has_alpha: v is the luma of RGB.  For
    (f), RGB is 0 everywhere and the fourth channel identifies the picked pixel.
    ``size=(60, 60)`` on 90x90 makes 1.5-pixel boxes: coverages 1 and 0.5.
    """
    rng = np.random.default_rng(15)
    if "size" in geom:
        period, tiles, classes = (3, 3), (30, 30), (2, 2)
    else:
        kh, kw = (geom["kernel_size"],) * 2 if np.isscalar(geom["kernel_size"]) else geom["kernel_size"]
        period, tiles, classes = (kh, kw), (90 // kh, 90 // kw), (1, 1)
    img, _ = _pattern_image(rng, period, tiles, channels=4, zero_value=zero_value)
    img = img.astype(np.float32)
    rows, cols = plan("stochastic", img.shape[:2], **geom)
    pvalues = []
    for seed in (1, 2):
        out = downscale(img, "stochastic", seed=seed, **geom)
        pvalues += _chi_square_by_class(img, out, rows, cols, period, classes, 4)
    assert pvalues and min(pvalues) > 1e-5, pvalues


@pytest.mark.parametrize("case", ["uint8-k2", "uint16-fractional", "rgba-has-alpha", "la-has-alpha",
                                  "two-channels"])
def test_sample_frequencies_other_inputs(case):
    """(e) for integer dtypes, premultiplied alpha (v from premultiplied colour) and 2 channels."""
    rng = np.random.default_rng(16)
    geom = {"size": (60, 60)} if "fractional" in case else {"kernel_size": 2}
    period, tiles, classes = ((3, 3), (30, 30), (2, 2)) if "fractional" in case else ((2, 2), (45, 45), (1, 1))
    channels = {"la-has-alpha": 2, "two-channels": 2}.get(case, 4 if "alpha" in case else 3)
    img, _ = _pattern_image(rng, period, tiles, channels=channels)
    has_alpha = "has-alpha" in case
    if has_alpha:  # distinct alphas identify the pixel
        n = period[0] * period[1]
        img[..., -1] = np.tile((0.3 + 0.7 * np.arange(1, n + 1) / n).reshape(period), tiles)
    if case.startswith("uint8"):
        img = np.round(img * 255).astype(np.uint8)
    elif case.startswith("uint16"):
        img = np.round(img * 65535).astype(np.uint16)
    rows, cols = plan("stochastic", img.shape[:2], **geom)
    pvalues = []
    for seed in (3, 4):
        out = downscale(img, "stochastic", seed=seed, has_alpha=has_alpha, **geom)
        pvalues += _chi_square_by_class(img, out, rows, cols, period, classes, channels, has_alpha)
    assert pvalues and min(pvalues) > 1e-5, pvalues


def test_sample_frequencies_single_channel_value():
    """(e) with 1 channel v is the value itself: for window [0.1, 0.2, 0.3, 0.4], p = v / 1."""
    block = np.array([[0.1, 0.2], [0.3, 0.4]])
    img = np.tile(block, (60, 60))
    out = downscale(img, "stochastic", kernel_size=2, seed=99)
    counts = np.array([(out == v).sum() for v in block.ravel()])
    assert counts.sum() == out.size
    stat, pvalue = stats.chisquare(counts, out.size * block.ravel() / block.sum())
    assert pvalue > 1e-5, counts


def test_sample_value_for_two_colour_channels_with_alpha_ignores_alpha():
    """SPEC 3: v is luma for RGB/RGBA (alpha ignored), else the mean of the (colour) channels.

    For an LA image (has_alpha) v is the premultiplied grey value: a pixel
    with grey 0 and alpha 1 never wins against one with grey > 0.
    """
    img = np.zeros((40, 40, 2))
    img[..., 1] = 1.0
    img[0::2, 0::2] = [0.5, 0.5]  # one pixel of each 2x2 window has v > 0
    out = downscale(img, "stochastic", kernel_size=2, has_alpha=True)
    assert np.allclose(out, [0.5, 0.5])


def test_sample_value_for_three_channels_with_alpha_ignores_alpha():
    img = np.zeros((40, 40, 3))
    img[..., 2] = 1.0                      # opaque black ...
    img[0::2, 0::2] = [0.5, 0.5, 0.5]      # ... and one half-transparent grey pixel per window
    for seed in range(3):
        out = downscale(img, "stochastic", kernel_size=2, has_alpha=True, seed=seed)
        # black has v = 0 (mean of its colour channels) and can never be drawn;
        # the grey pixel comes back un-premultiplied: colour 0.5, alpha 0.5
        assert np.allclose(out, [0.5, 0.5, 0.5]), np.unique(out.reshape(-1, 3), axis=0)


# ============================================================ limits of parameters

def _cases_unit(rng, shape=(14, 15, 3)):
    return [random_image(shape, d, rng) for d in DTYPES]


@pytest.mark.parametrize("geom", [{"kernel_size": 3}, {"kernel_size": 2, "stride": 1},
                                  {"size": (5, 4)}], ids=["k3", "k2s1", "size"])
def test_parameters_that_give_avg(geom):
    """softpool beta=0, lp p=1, dpp lam=0, dpp large alpha, dpid lam=0 (area) are avg."""
    rng = np.random.default_rng(20)
    for img in _cases_unit(rng):
        avg = reference_downscale(img, "avg", **geom)
        for method, params in [("softpool", {"beta": 0.0}), ("lp", {"p": 1.0}),
                               ("dpp", {"lam": 0.0}), ("dpp", {"lam": 0.0, "variant": "asym"}),
                               ("dpp", {"lam": 5.0, "alpha": 0.0}),  # control: not avg
                               ("dpp", {"lam": 1.0, "alpha": 1e7}),
                               ("dpp", {"lam": 2.0, "alpha": 1e7, "variant": "asym"})]:
            out = downscale(img, method, **geom, **params)
            if params.get("lam") == 5.0:
                if img.dtype.kind == "f":
                    assert np.abs(out - avg).max() > 1e-3, "dpp lam=5 should differ from avg"
                continue
            assert_matches(out, avg, img.dtype, what=f"{method} {params} {geom}")
        # kernel avg and softpool beta=0: the SPEC says 'exactly avg'
        a = downscale(img, "avg", **geom)
        s = downscale(img, "softpool", beta=0.0, **geom)
        if img.dtype.kind == "u":
            assert np.array_equal(a, s)
        else:
            assert np.allclose(a, s, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dpid_lam0_is_area_average(dtype):
    rng = np.random.default_rng(21)
    img = random_image((17, 14, 3), dtype, rng)
    for geom, size in [({"kernel_size": 3}, (6, 5)), ({"size": (7, 4)}, (7, 4)),
                       ({"scale": 0.3}, (5, 4)), ({"kernel_size": (4, 5)}, (5, 3))]:
        out = downscale(img, "dpid", lam=0.0, **geom)
        assert out.shape[:2] == size
        assert_matches(out, reference_downscale(img, "avg", size=size), img.dtype, what=str(geom))
        kernel_avg = downscale(img, "avg", size=size)
        assert np.abs(out.astype(float) - kernel_avg.astype(float)).max() <= (
            1 if img.dtype.kind == "u" else 1e-6)


@pytest.mark.parametrize("beta", [200.0, 1e3, 1e4])
def test_large_beta_approaches_max(beta):
    """|softpool - max| <= n / (e beta): each other pixel adds at most x e^(-beta x) (x = max - a)."""
    rng = np.random.default_rng(22)
    img = rng.random((15, 16, 3))
    work = to_work(img)
    for geom in [{"kernel_size": 3}, {"kernel_size": 3, "stride": 1}, {"size": (4, 4)}]:
        out = downscale(img, "softpool", beta=beta, **geom)
        mx = reference_downscale(img, "max", **geom)
        rows, cols = plan("softpool", img.shape[:2], **geom)
        for i in range(len(rows)):
            for j in range(len(cols)):
                a, c, _ = window(work, rows, cols, i, j)
                bound = c.sum() / (c[a.argmax(0)] * math.e * beta)
                assert np.all(out[i, j] <= mx[i, j] + 1e-12)
                assert np.all(mx[i, j] - out[i, j] <= bound + 1e-7), (geom, i, j)
    # on 8-bit data the other pixels are >= 1/255 below the max: e^(-1e4/255) ~ 1e-17
    u8 = rng.integers(0, 256, (15, 16, 3)).astype(np.uint8)
    if beta == 1e4:
        assert np.array_equal(downscale(u8, "softpool", beta=beta, kernel_size=3),
                              downscale(u8, "max", kernel_size=3))


@pytest.mark.parametrize("p", [100.0, 1000.0])
def test_large_p_approaches_max(p):
    """m (c_max / sum c)^(1/p) <= lp <= m, m the window maximum: lp -> max as p -> inf."""
    rng = np.random.default_rng(23)
    img = rng.random((15, 16, 3))
    for geom in [{"kernel_size": 3}, {"kernel_size": (2, 5), "stride": 1}, {"size": (4, 7)}]:
        out = downscale(img, "lp", p=p, **geom)
        mx = reference_downscale(img, "max", **geom)
        rows, cols = plan("lp", img.shape[:2], **geom)
        work = to_work(img)
        for i in range(len(rows)):
            for j in range(len(cols)):
                a, c, _ = window(work, rows, cols, i, j)
                low = mx[i, j] * (c[a.argmax(0)] / c.sum()) ** (1 / p)
                assert np.all(out[i, j] <= mx[i, j] * (1 + FLOAT_TOL))
                assert np.all(out[i, j] >= low * (1 - FLOAT_TOL))
    assert np.abs(downscale(img, "lp", p=1000.0, kernel_size=2) - reference_downscale(
        img, "max", kernel_size=2)[..., :]).max() <= math.log(4) / 1000 + 1e-5


def _extremum(a, c, variant):
    """Pixels the large-lam limit selects, their weight ratio to the runner-up, and the limit."""
    g = (c[:, None] * a).sum(0) / c.sum()
    x = a - g if variant == "sym" else np.maximum(a - g, 0.0)
    r = x * x + 1e-3
    top = r.max(0)
    return r, top, g


@pytest.mark.parametrize("variant", ["sym", "asym"])
def test_large_lam_dpp_approaches_extremum(variant):
    """dpp with alpha=0 and lam -> inf: asym -> max pooling, sym -> the value farthest from the mean.

    On data with levels 0.1 apart, the runner-up's weight relative to the
    winner's is ``(r2 / r1)^(lam/2)``; windows where that is not negligible
    (ties) are checked against the tie average instead.
    """
    rng = np.random.default_rng(24)
    img = rng.integers(0, 11, (16, 18, 3)) / 10.0
    lam = 400.0
    geom = {"kernel_size": 3}
    out = downscale(img, "dpp", lam=lam, variant=variant, **geom)
    assert np.all(np.isfinite(out))
    rows, cols = plan("dpp", img.shape[:2], **geom)
    work = to_work(img)
    checked = 0
    for i in range(len(rows)):
        for j in range(len(cols)):
            a, c, _ = window(work, rows, cols, i, j)
            r, top, _ = _extremum(a, c, variant)
            for ch in range(a.shape[1]):
                winners = r[:, ch] >= top[ch] * (1 - 1e-9)
                others = r[~winners, ch]
                lead = (others.max() / top[ch]) ** (lam / 2) * len(others) if others.size else 0.0
                limit = (c[winners] * a[winners, ch]).sum() / c[winners].sum()
                if lead < 1e-6:
                    assert out[i, j, ch] == pytest.approx(limit, abs=1e-5)
                    checked += 1
                if variant == "asym" and winners.sum() == 1 and lead < 1e-6:
                    assert out[i, j, ch] == pytest.approx(a[:, ch].max(), abs=1e-5)
    assert checked > 0.5 * out.size


def test_large_lam_dpid_approaches_extremum():
    """dpid with lam -> inf selects the pixel farthest (jointly over channels) from the smoothed guide."""
    rng = np.random.default_rng(25)
    img = rng.integers(0, 11, (16, 18, 3)) / 10.0
    size = (5, 6)  # 3.2 x 3 boxes
    lam = 400.0
    out = downscale(img, "dpid", lam=lam, size=size)
    rows, cols = plan("dpid", img.shape[:2], size=size)
    work = to_work(img)
    guide = np.array([[(lambda a, c: (c[:, None] * a).sum(0) / c.sum())(*window(work, rows, cols, i, j)[:2])
                       for j in range(size[1])] for i in range(size[0])])
    gs = smooth_guide(guide)
    checked = 0
    for i in range(size[0]):
        for j in range(size[1]):
            a, c, _ = window(work, rows, cols, i, j)
            d = np.sqrt(((a - gs[i, j]) ** 2).mean(1))
            win = d >= d.max() * (1 - 1e-9)
            lead = (d[~win].max() / d.max()) ** lam * (~win).sum() if (~win).any() else 0.0
            if lead < 1e-6:
                limit = (c[win, None] * a[win]).sum(0) / c[win].sum()
                assert np.allclose(out[i, j], limit, atol=1e-5)
                checked += 1
    assert checked > 0.5 * size[0] * size[1]


# ============================================================ invariants

CONSTANTS = {np.uint8: [0, 1, 137, 255], np.uint16: [0, 1, 40000, 65535],
             np.float32: [0.0, 0.3, 1.0, 1234.5], np.float64: [0.0, 1 / 3, 1.0, 1e6]}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method,params", ALL_CASES, ids=ALL_IDS)
def test_constant_image_stays_constant(method, params, dtype):
    """Every method maps a constant image to the same constant (every dtype, layout, geometry)."""
    for value in CONSTANTS[dtype]:
        for shape in [(11, 13), (11, 13, 1), (11, 13, 3), (11, 13, 4)]:
            img = np.full(shape, value, dtype=dtype)
            for geom in geoms_for(method)[:4] + [{"kernel_size": 1}]:
                out = downscale(img, method, **geom, **params)
                assert out.dtype == img.dtype and out.ndim == img.ndim
                if np.dtype(dtype).kind == "u":
                    assert np.all(out == value), (value, shape, geom, np.unique(out))
                else:
                    assert np.allclose(out, value, rtol=FLOAT_TOL, atol=0), (value, shape, geom)
    # negative constants for the methods that accept them
    if method not in ("lp", "stochastic") and np.dtype(dtype).kind == "f":
        img = np.full((9, 10, 3), -2.5, dtype)
        assert np.allclose(downscale(img, method, size=(4, 3), **params), -2.5, rtol=FLOAT_TOL)


def _extreme_params(method):
    return {"lp": [{"p": 0.05}, {"p": 1000.0}], "softpool": [{"beta": 1e4}],
            "dpp": [{"lam": 100.0}, {"lam": 100.0, "variant": "asym"}, {"alpha": 5.0, "lam": 3.0}],
            "dpid": [{"lam": 100.0}, {"lam": 0.5}],
            "stochastic": [{"mode": "expectation"}, {"seed": 5}]}.get(method, [])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method", METHODS)
def test_output_within_window_range(method, dtype):
    """Every output lies between its window's min and max, per channel.

    dpid: between the min and max of its box.  The SPEC guarantees this
    without alpha: the output is a weighted mean of the box's pixels with
    weights shared by all channels, except where sum w = 0, which for lam > 0
    means every d_q = 0, i.e. every box pixel *equals* Gs[p] (so Gs[p] is in
    range too).  With alpha it is not guaranteed: see
    test_dpid_alpha_fallback_is_smoothed_guide.
    """
    rng = np.random.default_rng(30)
    for layout in [(12, 17), (12, 17, 3)]:
        img = random_image(layout, dtype, rng)
        if np.dtype(dtype).kind == "f" and method not in ("lp", "stochastic"):
            img = (img * 20 - 10).astype(dtype)
        if method == "dpid":
            img[:6, :6] = img.reshape(-1)[0]  # flat patches: d = 0 in whole boxes
        scale = float(np.abs(to_work(img)).max())
        for geom in geoms_for(method):
            lo, hi = window_ranges(img, method, **geom)
            if img.ndim == 2:
                lo, hi = lo[..., 0], hi[..., 0]
            for params in [{}] + _extreme_params(method):
                out = downscale(img, method, **geom, **params).astype(np.float64)
                if np.dtype(dtype).kind == "u":
                    top = dtype_max(dtype)
                    ok = (out >= np.floor(lo * top + 0.5)) & (out <= np.floor(hi * top + 0.5))
                else:
                    tol = FLOAT_TOL * max(1.0, scale)
                    ok = (out >= lo - tol) & (out <= hi + tol)
                assert ok.all(), (geom, params, np.argwhere(~ok)[:3])


def test_dpid_alpha_fallback_is_smoothed_guide():
    """With has_alpha, dpid's output where sum w = 0 is Gs[p] in every channel, alpha included.

    Colour is 0 everywhere, so every d_q = 0 and every output is Gs[p]: the
    alpha channel is the 3x3-smoothed box mean of alpha, which may lie outside
    the box's own alpha range.  The kernel follows the SPEC here.
    """
    img = np.zeros((8, 8, 2), np.float32)
    img[:, :4, 1] = 1.0            # left half opaque, right half transparent
    out = downscale(img, "dpid", kernel_size=2, has_alpha=True)
    ref = reference_downscale(img, "dpid", kernel_size=2, has_alpha=True)
    assert_matches(out, ref, img.dtype)
    lo, hi = window_ranges(img, "dpid", kernel_size=2)
    assert (ref[..., 1] > hi[..., 1] + 0.1).any() and (ref[..., 1] < lo[..., 1] - 0.1).any()


@pytest.mark.parametrize("method,params", ALL_CASES, ids=ALL_IDS)
def test_identity(method, params):
    """k = 1 and size == input size are the identity, for every method, dtype and layout."""
    rng = np.random.default_rng(31)
    for dtype in DTYPES:
        for shape in [(9, 11), (9, 11, 1), (9, 11, 3), (9, 11, 4)]:
            img = random_image(shape, dtype, rng)
            geoms = [{"size": shape[:2]}, {"scale": 1.0}, {"kernel_size": 1}]
            if method != "dpid":
                geoms.append({"kernel_size": 1, "stride": 1})
            for geom in geoms:
                out = downscale(img, method, **geom, **params)
                if np.dtype(dtype) == np.float64:
                    # float64 input may pass through float32 arithmetic (SPEC 1)
                    assert np.allclose(out, img, rtol=1e-7, atol=0), (dtype, shape, geom)
                else:
                    assert np.array_equal(out, img), (dtype, shape, geom)


@pytest.mark.parametrize("method,params", ALL_CASES, ids=ALL_IDS)
def test_input_never_modified(method, params):
    """Also with has_alpha and linear, with views, non-contiguous and read-only arrays.

    Views (strided, reversed, Fortran order, a channel slice, a transposed
    plane) also give the reference's result.
    """
    rng = np.random.default_rng(32)
    for dtype in DTYPES:
        base = random_image((14, 12, 4), dtype, rng)
        views = [base, base[::2, ::-1], np.asfortranarray(base), base[..., :3], base[..., 0].T]
        for n, img in enumerate(views):
            snapshot = img.copy()
            kws = [{}, {"has_alpha": True, "linear": True}]
            if n == 0:
                kws += [{"has_alpha": True}, {"linear": True}]
            if downpool.METHODS[method].labels:
                kws = kws[:1]
            for kw in kws:
                if kw.get("has_alpha") and img.ndim == 2:
                    continue
                out = downscale(img, method, kernel_size=2, **kw, **params)
                assert np.array_equal(img, snapshot), kw
                assert not np.shares_memory(out, img)
                if n == 0:  # a read-only array is accepted and gives the same result
                    ro = img.copy()
                    ro.flags.writeable = False
                    assert np.array_equal(out, downscale(ro, method, kernel_size=2, **kw, **params))
            if downpool.METHODS[method].labels:
                assert np.array_equal(downscale(img, method, kernel_size=2),
                                      mode_downscale(img, kernel_size=2))
            elif not (method == "stochastic" and params.get("mode", "sample") == "sample"):
                check_kw = dict(kernel_size=2, **params)
                assert_matches(downscale(img, method, **check_kw),
                               reference_downscale(img, method, **check_kw), dtype,
                               what=f"view {n} strides {img.strides}")


def test_premultiplied_colour_can_leave_the_input_range():
    """A consequence of SPEC 4 with per-channel methods (not a kernel bug).

    Colour*alpha and alpha are pooled with *different* weights by the
    non-linear methods, so pooled colour / pooled alpha can exceed 1 on [0, 1]
    data: here dpp pulls alpha towards its outlier 0.2 but colour*alpha
    towards 0.5, giving 2.5.  Integer outputs are clipped.  Recorded so that
    a change of this behaviour (e.g. clamping colour to [0, 1]) is noticed.
    """
    img = np.array([[[1.0, 0.5], [0.0, 0.45]], [[0.0, 0.45], [0.0, 0.2]]])
    out = downscale(img, "dpp", lam=20.0, has_alpha=True)
    ref = reference_downscale(img, "dpp", lam=20.0, has_alpha=True)
    assert_matches(out, ref, img.dtype)
    assert out[0, 0, 0] == pytest.approx(2.5, abs=1e-4)
    u8 = downscale((img * 255).astype(np.uint8), "dpp", lam=20.0, has_alpha=True)
    assert u8[0, 0, 0] == 255


@pytest.mark.parametrize("method,params", CONVERTED_CASES, ids=CONVERTED_IDS)
def test_identity_with_alpha_and_linear(method, params):
    """k = 1 with linear=True and/or has_alpha: the identity up to rounding, except that
    colour becomes 0 where alpha is 0 (SPEC 4: 0 where the pooled alpha is 0)."""
    rng = np.random.default_rng(33)
    for dtype in DTYPES:
        img = random_image((7, 9, 4), dtype, rng)
        img[2, :, 3] = 0
        expected = img.copy()
        expected[2, :, :3] = 0
        for kw, exp in [({"linear": True}, img), ({"has_alpha": True}, expected),
                        ({"has_alpha": True, "linear": True}, expected)]:
            out = downscale(img, method, kernel_size=1, **kw, **params)
            if np.dtype(dtype).kind == "u":
                assert np.abs(out.astype(np.int64) - exp.astype(np.int64)).max() <= 1, kw
            else:
                assert np.allclose(out, exp, rtol=FLOAT_TOL, atol=FLOAT_TOL), kw
