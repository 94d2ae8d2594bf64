"""Every method's kernel against the independent float64 reference in ``reference.py``.

Tolerances are stated once, in ``reference.assert_matches``: floats within
1e-5 relative/absolute (absolute part scaled by the data's magnitude), integers
within 1 unit of the rounded float64 result.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import downpool  # noqa: E402
from cases import REFERENCE_CASES  # noqa: E402
from helpers import DTYPES, random_image  # noqa: E402
from reference import (  # noqa: E402
    area_axis,
    assert_matches,
    dtype_max,
    mode_downscale,
    plan,
    reference_downscale,
    to_work,
)

#: hypothesis examples per method; DOWNPOOL_TEST_EXAMPLES=500 for a deeper, random search.
#: The default run is derandomized (the same examples every time, no example database).
EXAMPLES = int(os.environ.get("DOWNPOOL_TEST_EXAMPLES", "40"))
DERANDOMIZE = "DOWNPOOL_TEST_EXAMPLES" not in os.environ

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_images")

LAYOUTS = ["2d", 1, 3, 4]  # (H, W) or (H, W, C)

#: (method, params) of the deterministic cases (tests/cases.py); stochastic
#: sample mode is tested statistically in test_limits.py.
METHOD_CASES = [(c.method, c.params) for c in REFERENCE_CASES]
CASE_IDS = [c.id for c in REFERENCE_CASES]
#: The cases that pool intensities, which alpha and linear light apply to.
CONVERTED_CASES = [(c.method, c.params) for c in REFERENCE_CASES if not c.labels]
CONVERTED_IDS = [c.id for c in REFERENCE_CASES if not c.labels]

#: Geometry keyword sets on a 13x17 image: identity, integer kernels, a
#: rectangular one, overlapping strides, strides larger than the kernel (gaps),
#: partial edge windows, a kernel larger than the image, fractional-coverage
#: sizes and scales.
GEOMETRIES = [
    {"kernel_size": 1},
    {"kernel_size": 2},
    {"kernel_size": 3},
    {"kernel_size": (2, 3)},
    {"kernel_size": 2, "stride": 1},
    {"kernel_size": 3, "stride": 2},
    {"kernel_size": 2, "stride": 3},
    {"kernel_size": (3, 2), "stride": (1, 4)},
    {"kernel_size": 20},
    {"size": (5, 7)},
    {"size": (13, 6)},
    {"size": (1, 1)},
    {"scale": 0.37},
    {},
]


def downscale(image, method, **kw):
    return downpool.downscale(image, method, device="cpu", **kw)


def geometry_ok(method, geom):
    """dpid always uses the area geometry and rejects ``stride``."""
    return not (method == "dpid" and "stride" in geom)


def check(image, method, params, geom, *, data_scale=1.0, has_alpha=False, linear=False, tol=None):
    """Run the kernel and the reference and compare them (a label method bit for bit)."""
    before = image.copy()
    out = downscale(image, method, has_alpha=has_alpha, linear=linear, **geom, **params)
    assert np.array_equal(image, before), "the input was modified"
    if downpool.METHODS[method].labels:
        expected = mode_downscale(image, **geom)
        assert out.dtype == image.dtype and out.shape == expected.shape
        bad = np.argwhere(out.view(np.uint8) != expected.view(np.uint8)) if out.dtype.kind == "f" \
            else np.argwhere(out != expected)
        assert bad.size == 0, (f"{method} {geom} {image.dtype} {image.shape}: {len(bad)} values "
                               f"differ; first at {tuple(bad[0])}")
        return out, expected
    ref = reference_downscale(image, method, has_alpha=has_alpha, linear=linear, **geom, **params)
    extra = {} if tol is None else {"tol": tol}
    assert_matches(out, ref, image.dtype, data_scale=data_scale,
                   what=f"{method} {params} {geom} {image.dtype} {image.shape}", **extra)
    return out, ref


# ------------------------------------------------------- the reference itself --

@settings(max_examples=300, deadline=None, derandomize=True)
@given(shape=st.tuples(st.integers(1, 60), st.integers(1, 60)),
       method=st.sampled_from(["avg", "dpid"]),
       geometry=st.one_of(
           st.builds(lambda k, s: {"kernel_size": k, "stride": s},
                     st.one_of(st.integers(1, 70), st.tuples(st.integers(1, 70), st.integers(1, 70))),
                     st.one_of(st.none(), st.integers(1, 70))),
           st.builds(lambda f: {"scale": f}, st.floats(0.001, 1.0)),
           st.builds(lambda h, w: {"size": (h, w)}, st.integers(1, 60), st.integers(1, 60))))
def test_output_size_without_windows_is_the_reference_plans(shape, method, geometry):
    """``geometry.output_size`` (what ``shrink`` sizes its checks with, without building
    windows) gives the reference plan's window counts, strides past the kernel included."""
    from downpool.geometry import output_size

    assume(not (method == "dpid" and geometry.get("stride") is not None))
    assume(all(n <= m for n, m in zip(geometry.get("size", shape), shape)))
    rows, cols = plan(method, shape, **geometry)
    assert output_size(shape, **geometry, method=method) == (len(rows), len(cols))


def test_area_coverage_by_supersampling():
    """The reference's fractional coverages equal an average over a supersampled image.

    Repeating every input pixel ``out`` times turns the box
    ``[i*n/out, (i+1)*n/out)`` into the whole pixels ``[i*n, (i+1)*n)``.
    """
    rng = np.random.default_rng(1)
    for n, n_out in [(13, 5), (17, 7), (10, 10), (9, 1), (7, 6)]:
        x = rng.random(n)
        ax = area_axis(n, n_out)
        super_ = np.repeat(x, n_out)
        for i in range(n_out):
            expected = super_[i * n:(i + 1) * n].mean()
            got = (ax.cov[i] * x[ax.idx[i]]).sum() / ax.cov[i].sum()
            assert got == pytest.approx(expected, rel=1e-12)
            assert ax.cov[i].sum() == pytest.approx(n / n_out, rel=1e-12)
            assert np.all(ax.cov[i] > 0) and np.all(ax.cov[i] <= 1)


def test_reference_softpool_matches_naive_formula():
    """The max-subtracted softpool equals the naive formula where that does not overflow."""
    rng = np.random.default_rng(2)
    a = rng.random((9, 3))
    c = rng.random(9) + 0.1
    beta = 7.0
    naive = (c[:, None] * np.exp(beta * a) * a).sum(0) / (c[:, None] * np.exp(beta * a)).sum(0)
    from reference import pool_dpp, pool_lp, pool_softpool

    assert np.allclose(pool_softpool(a, c, beta), naive, rtol=1e-13)
    p = 3.5
    assert np.allclose(pool_lp(a, c, p), ((c[:, None] * a**p).sum(0) / c.sum()) ** (1 / p), rtol=1e-13)
    g = (c[:, None] * a).sum(0) / c.sum()
    w = c[:, None] * (0.2 + ((a - g) ** 2 + 1e-3) ** (2.5 / 2))
    assert np.allclose(pool_dpp(a, c, 0.2, 2.5, "sym"), (w * a).sum(0) / w.sum(0), rtol=1e-13)


# ------------------------------------------------------ random arrays --

@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: f"C{v}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method,params", METHOD_CASES, ids=CASE_IDS)
def test_random_arrays_every_geometry(method, params, dtype, layout):
    """3-channel images get every geometry; the other layouts alternate halves of the list."""
    rng = np.random.default_rng(abs(hash((method, str(params), np.dtype(dtype).name, layout))) % 2**32)
    image = random_image((13, 17), dtype, rng, layout=layout, extremes=True)
    li = LAYOUTS.index(layout)
    for gi, geom in enumerate(GEOMETRIES):
        if layout != 3 and (gi + li) % 2:
            continue
        if geometry_ok(method, geom):
            check(image, method, params, geom)


#: Block geometries (windows that tile the image), which take downpool's block
#: kernels: halving of grey and RGB images is compiled with constant sizes
#: (12x16 even, 13x17 with partial edge windows made by the run-time kernel);
#: other blocks run with run-time sizes (4x4 blocks, 10x10 blocks of a
#: 20x30 image, as with --scale 0.1), some methods in passes along the row
#: for the full windows and window by window for the partial ones (14x18, k=4).
BLOCK_CASES = [((12, 16), {"kernel_size": 2}), ((13, 17), {"kernel_size": 2}),
               ((12, 16), {"size": (6, 8)}), ((12, 16), {"kernel_size": 4}),
               ((14, 18), {"kernel_size": 4}), ((20, 30), {"size": (2, 3)})]


@pytest.mark.parametrize("layout", ["2d", 1, 3, 4], ids=lambda v: f"C{v}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method,params", METHOD_CASES + [("dpid", {"lam": 3.0}),
                                                          ("dpp", {"lam": 0.0})],
                         ids=CASE_IDS + ["dpid-lam=3.0", "dpp-lam=0.0"])
def test_block_kernels(method, params, dtype, layout):
    """The block kernels -- constant and run-time sizes, and the partial windows at
    the edges -- against the reference, for every dtype and channel count."""
    rng = np.random.default_rng(abs(hash((method, str(params), np.dtype(dtype).name, layout, 7)))
                                % 2**32)
    for shape, geom in BLOCK_CASES:
        if method == "dpid" and "kernel_size" in geom and shape[0] % geom["kernel_size"]:
            continue  # dpid's size from k would not divide the image: not blocks
        check(random_image(shape, dtype, rng, layout=layout, extremes=True), method, params, geom)


@pytest.mark.parametrize("method,params", METHOD_CASES, ids=CASE_IDS)
def test_large_window_accumulation(method, params):
    """One window of 48x48 = 2304 pixels, and windows 80 rows tall: the float32
    accumulators keep 1e-5 relative accuracy."""
    rng = np.random.default_rng(3)
    image = (0.5 + 0.5 * rng.random((48, 48, 3))).astype(np.float32)
    check(image, method, params, {"kernel_size": 48})
    check(image, method, params, {"size": (1, 1)})
    check(image, method, params, {"size": (3, 2)})
    # Windows of 80 rows: row passes sum in chunks of 64 rows (float32 for
    # 8/16-bit input), folded into float64.
    tall = (0.5 + 0.5 * rng.random((160, 12, 3))).astype(np.float32)
    check(tall, method, params, {"size": (2, 3)})
    for dtype in (np.uint8, np.uint16):
        check((tall * np.iinfo(dtype).max).astype(dtype), method, params, {"size": (2, 3)})


# ------------------------------------------------------ extreme parameters --

def _range_cases():
    """(name, image, data_scale) for the value-range tests."""
    rng = np.random.default_rng(4)
    shape = (11, 14, 3)
    return [
        ("f64-unit", rng.random(shape), 1.0),
        ("f32-unit", rng.random(shape).astype(np.float32), 1.0),
        ("u8", random_image(shape[:2], np.uint8, rng, layout=3, extremes=True), 1.0),
        ("u16", random_image(shape[:2], np.uint16, rng, layout=3, extremes=True), 1.0),
        ("f64-1e6", rng.uniform(-1e6, 1e6, shape), 1e6),
        ("f32-1e6", rng.uniform(-1e6, 1e6, shape).astype(np.float32), 1e6),
        ("f64-offset", 1e6 + rng.random(shape), 1e6),
        ("f64-tiny", 1e-6 * rng.random(shape), 1e-6),
    ]


RANGE_CASES = _range_cases()
EXTREME_GEOMS = [{"kernel_size": 3}, {"kernel_size": 3, "stride": 2}, {"size": (4, 5)}]


@pytest.mark.parametrize("beta", [0.0, 1e-3, 4.4, 60.0, 1e3, 1e4])
@pytest.mark.parametrize("case", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_softpool_any_beta_any_range(case, beta):
    _, image, scale = case
    for geom in EXTREME_GEOMS:
        check(image, "softpool", {"beta": beta}, geom, data_scale=scale)


def _softpool_f32_cases():
    """(name, image, beta, data_scale, whether softpool's float32 block kernel takes it).

    The float32 kernel takes constant blocks (k=2 on grey and RGB uint8,
    uint16 and float32) where beta * (hi - lo) / 2 <= 8, beta * max|a| <= 16
    and the values' magnitude is in [1e-30, 1e30]; odd sizes add its partial
    windows.
    """
    rng = np.random.default_rng(31)
    cases = []
    for dtype in (np.uint8, np.uint16):
        for layout, shape in [(3, (12, 16)), (1, (13, 17)), ("2d", (9, 6)), (3, (15, 11))]:
            image = random_image(shape, dtype, rng, layout=layout, extremes=True)
            for beta, used in [(4.4, True), (16.0, True), (16.001, False)]:
                cases.append((f"{np.dtype(dtype).name}-{layout}-{shape}-beta{beta}", image, beta,
                              1.0, used))
    for name, lo, hi, beta, used in [
        ("unit", 0.0, 1.0, 16.0, True),
        ("signed", -5.0, 3.0, 2.0, True),
        ("offset", 10.0, 11.0, 1.45, True),
        ("far-offset", 1e3, 1e3 + 1.0, 15.9, False),
        ("1e30", -9e29, 9e29, 8e-30, True),
        ("3e30", 0.0, 3e30, 1e-30, False),
        ("1e-30", 0.0, 1e-30, 1.5e31, True),
        ("1e-31", 0.0, 1e-31, 1e31, False),
        ("wide", 0.0, 1.0, 16.5, False),
    ]:
        for layout, shape in [(3, (12, 16)), ("2d", (11, 13))]:
            image = random_image(shape, np.float32, rng, layout=layout, extremes=True, lo=lo, hi=hi)
            # Windows that hold both ends of the range: weights e^-8 and e^8 side by side.
            image[::3, ::2] = np.float32(lo)
            image[1::3, 1::2] = np.float32(hi)
            scale = float(np.abs(image.astype(np.float64)).max())
            cases.append((f"float32-{name}-{layout}-{shape}", image, beta, scale, used))
    return cases


SOFTPOOL_F32_CASES = _softpool_f32_cases()


@pytest.mark.parametrize("case", SOFTPOOL_F32_CASES, ids=[c[0] for c in SOFTPOOL_F32_CASES])
def test_softpool_float32_kernel_within_its_bounds(case, monkeypatch):
    """softpool's float32 block kernel (weights centred on the range's middle, no window
    maximum) against the float64 reference, at and past the bounds where it is
    taken, and that it is taken exactly there."""
    from downpool.methods import softpool

    _, image, beta, scale, used = case
    variants = []
    run_blocks = softpool.run_blocks

    def spy(plan, kernel, image, out, params, variant=0, **options):
        variants.append(variant)
        return run_blocks(plan, kernel, image, out, params, variant, **options)

    monkeypatch.setattr(softpool, "run_blocks", spy)
    check(image, "softpool", {"beta": beta}, {"kernel_size": 2}, data_scale=scale)
    assert (variants == [softpool.FLOAT32]) == used, variants


NONNEG_CASES = [c for c in RANGE_CASES if c[0] in ("f64-unit", "f32-unit", "u8", "u16", "f64-tiny")]
NONNEG_CASES.append(("f64-0-1e6", np.random.default_rng(5).uniform(0, 1e6, (11, 14, 3)), 1e6))


def _with_zero_windows(image):
    """Zero the top-left 3x3 block and one pixel, so some windows are all zero."""
    image = image.copy()
    image[:3, :3] = 0
    image[5, 7] = 0
    return image


@pytest.mark.parametrize("p", [0.01, 0.5, 1.0, 2.0, 10.0, 100.0, 1000.0])
@pytest.mark.parametrize("case", NONNEG_CASES, ids=[c[0] for c in NONNEG_CASES])
def test_lp_any_p(case, p):
    _, image, scale = case
    image = _with_zero_windows(image)
    for geom in EXTREME_GEOMS:
        check(image, "lp", {"p": p}, geom, data_scale=scale)


@pytest.mark.parametrize("scale", [3.4e38, 1e-37])
def test_lp_default_p_on_float32_near_the_ends_of_its_range(scale):
    """lp's default p = 2 over 2x2 blocks of float32 sums the squares in float64
    without the window maximum: no overflow near float32's largest value, and no
    loss near its smallest normal one."""
    image = (scale * np.random.default_rng(9).random((8, 9, 3))).astype(np.float32)
    image[:2, :2] = 0  # an all-zero window
    check(image, "lp", {}, {"kernel_size": 2}, data_scale=scale)


@pytest.mark.parametrize("case", NONNEG_CASES, ids=[c[0] for c in NONNEG_CASES])
def test_stochastic_expectation_ranges(case):
    _, image, scale = case
    image = _with_zero_windows(image)
    for geom in EXTREME_GEOMS:
        check(image, "stochastic", {"mode": "expectation"}, geom, data_scale=scale)


@pytest.mark.parametrize("variant", ["sym", "asym"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1e3])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 4.0, 30.0, 100.0])
@pytest.mark.parametrize("case", RANGE_CASES[:4], ids=[c[0] for c in RANGE_CASES[:4]])
def test_dpp_any_lam_alpha(case, lam, alpha, variant):
    _, image, scale = case
    for geom in EXTREME_GEOMS[1:]:
        check(image, "dpp", {"lam": lam, "alpha": alpha, "variant": variant}, geom, data_scale=scale)


@pytest.mark.parametrize("variant", ["sym", "asym"])
@pytest.mark.parametrize("lam", [0.0, 1.0, 100.0])
@pytest.mark.parametrize("case", RANGE_CASES[4:], ids=[c[0] for c in RANGE_CASES[4:]])
def test_dpp_large_ranges(case, lam, variant):
    """Values far outside [0, 1]: eps^2 stays 1e-3 in working units; no NaN/inf for lam up to 100."""
    _, image, scale = case
    for geom in EXTREME_GEOMS:
        check(image, "dpp", {"lam": lam, "variant": variant}, geom, data_scale=scale)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 4.0, 30.0, 100.0])
@pytest.mark.parametrize("case", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_dpid_any_lam(case, lam):
    _, image, scale = case
    for geom in [{"kernel_size": 3}, {"size": (4, 5)}, {"scale": 0.6}]:
        check(image, "dpid", {"lam": lam}, geom, data_scale=scale)


def _magnitude_cases():
    rng = np.random.default_rng(8)
    shape = (8, 9, 3)
    return [
        ("f64-1e300", 1e300 * rng.random(shape), 1e300),
        ("f64-pm1e200", 1e200 * rng.uniform(-1, 1, shape), 1e200),
        ("f64-1e-300", 1e-300 * rng.random(shape), 1e-300),
        ("f32-pm3e38", (3e38 * rng.uniform(-1, 1, shape)).astype(np.float32), 3e38),
        ("f32-1e-30", (1e-30 * rng.random(shape)).astype(np.float32), 1e-30),
        ("f64-1e308", 1.7e308 * rng.random(shape), 1.7e308),
    ]


MAGNITUDE_CASES = _magnitude_cases()


@pytest.mark.parametrize("method,params", METHOD_CASES + [
    ("lp", {"p": 1000.0}), ("softpool", {"beta": 1e4}), ("dpp", {"lam": 100.0, "alpha": 2.0}),
    ("dpp", {"lam": 100.0, "variant": "asym"}), ("dpid", {"lam": 100.0})], ids=lambda v: str(v))
@pytest.mark.parametrize("case", MAGNITUDE_CASES, ids=[c[0] for c in MAGNITUDE_CASES])
def test_extreme_magnitudes(case, method, params):
    """Float data near the ends of the dtype's range: finite, and 1e-5 relative to the data;
    signed data to lp or stochastic is a ValueError."""
    _, image, scale = case
    for geom in [{"kernel_size": 2}, {"size": (3, 4)}]:
        if method in ("lp", "stochastic") and image.min() < 0:
            # SPEC 3: lp and stochastic need non-negative values.
            with pytest.raises(ValueError, match=f"^{method}: needs non-negative values"):
                downscale(image, method, **geom, **params)
            continue
        check(image, method, params, geom, data_scale=scale)


# ------------------------------------------------------ real images --

@functools.lru_cache(maxsize=None)
def sample_image(name):
    from PIL import Image

    with Image.open(os.path.join(SAMPLES, name)) as im:
        return np.asarray(im).copy()


def crops():
    """(id, uint8 crop) of every sample image: a 32x40 region with detail."""
    out = []
    for name, (y, x) in [("astronaut.png", (150, 200)), ("camera.png", (100, 220)),
                         ("chelsea.png", (120, 180)), ("coffee.png", (200, 250)),
                         ("rocket.jpg", (180, 300)), ("logo.png", (230, 230))]:
        out.append((name, y, x))
    return out


def as_dtype(img_u8, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return img_u8
    if dtype == np.uint16:
        return img_u8.astype(np.uint16) * 257
    return (img_u8 / 255.0).astype(dtype)


REAL_GEOMS = [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2}, {"size": (9, 13)},
              {"scale": 0.3}]


SAMPLE_CASES = [(c, d) for c in crops() for d in DTYPES
                if d == np.uint8 or c[0] in ("astronaut.png", "camera.png", "logo.png")]


@pytest.mark.parametrize("crop,dtype", SAMPLE_CASES,
                         ids=[f"{c[0]}-{np.dtype(d).name}" for c, d in SAMPLE_CASES])
def test_sample_images(crop, dtype):
    """Crops of the real images (all as uint8; RGB, L and RGBA also in the other dtypes)."""
    name, y, x = crop
    img = as_dtype(sample_image(name)[y:y + 32, x:x + 40], dtype)
    has_alpha = img.ndim == 3 and img.shape[2] == 4
    for method, params in METHOD_CASES:
        for geom in REAL_GEOMS:
            if geometry_ok(method, geom):
                # A label method takes alpha as one more channel of labels.
                check(img, method, params, geom,
                      has_alpha=has_alpha and not downpool.METHODS[method].labels)


# ------------------------------------------------------ alpha and linear light --

ALPHA_GEOMS = [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2}, {"size": (4, 6)}]


def alpha_image(rng, dtype, channels):
    """Random colour with an alpha channel that has fully transparent regions."""
    img = random_image((10, 13), dtype, rng, layout=channels, extremes=True)
    top = dtype_max(img.dtype)
    a = img[..., -1]
    a[:4, :4] = 0          # whole windows transparent
    a[6, ::2] = 0          # scattered transparent pixels
    a[8:, 10:] = top       # opaque corner
    return img


@pytest.mark.parametrize("channels", [2, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method,params", CONVERTED_CASES, ids=CONVERTED_IDS)
def test_premultiplied_alpha(method, params, dtype, channels):
    rng = np.random.default_rng(6)
    img = alpha_image(rng, dtype, channels)
    for geom in ALPHA_GEOMS:
        if geometry_ok(method, geom):
            out, ref = check(img, method, params, geom, has_alpha=True)
            # where the pooled alpha is 0, the colour is 0
            assert np.all(out[ref[..., -1] == 0][..., :-1] == 0)


@pytest.mark.parametrize("has_alpha", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("method,params", CONVERTED_CASES, ids=CONVERTED_IDS)
def test_linear_light(method, params, dtype, has_alpha):
    rng = np.random.default_rng(7)
    img = (alpha_image(rng, dtype, 4) if has_alpha
           else random_image((10, 13), dtype, rng, layout=3, extremes=True))
    for geom in ALPHA_GEOMS:
        if geometry_ok(method, geom):
            check(img, method, params, geom, has_alpha=has_alpha, linear=True)


def test_linear_light_differs_from_encoded():
    """Averaging black and white in linear light gives sRGB ~0.735, not 0.5."""
    img = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    assert downscale(img, "avg", kernel_size=(1, 2))[0, 0, 0] == pytest.approx(0.5)
    assert downscale(img, "avg", kernel_size=(1, 2), linear=True)[0, 0, 0] == pytest.approx(
        1.055 * 0.5 ** (1 / 2.4) - 0.055, rel=1e-6)


# ------------------------------------------------------ hypothesis --

@st.composite
def images(draw, nonneg=True, max_side=24):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS + [2, 5]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    img = random_image((h, w), dtype, rng, layout=layout, extremes=True)
    if np.dtype(dtype).kind == "f" and not nonneg and draw(st.booleans()):
        img = (img * 200 - 100).astype(dtype)
    if draw(st.booleans()):  # some flat regions
        img[: h // 2, : w // 2] = img.reshape(-1)[0]
    return img


@st.composite
def geometries(draw, shape, area_only=False):
    h, w = shape
    kind = draw(st.sampled_from(["default", "kernel", "stride", "size", "scale"]))
    if kind == "default":
        return {}
    if kind in ("kernel", "stride"):
        kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        geom = {"kernel_size": (kh, kw) if kh != kw or draw(st.booleans()) else kh}
        if kind == "stride" and not area_only:
            geom["stride"] = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
        return geom
    if kind == "size":
        return {"size": (draw(st.integers(1, h)), draw(st.integers(1, w)))}
    return {"scale": draw(st.floats(0.01, 1.0))}


PARAMS = {
    "avg": st.just({}),
    "max": st.just({}),
    "lp": st.fixed_dictionaries({"p": st.one_of(st.floats(0.05, 20.0), st.floats(20.0, 1000.0))}),
    "softpool": st.fixed_dictionaries({"beta": st.one_of(st.just(0.0), st.floats(0.0, 50.0),
                                                         st.floats(50.0, 1e4))}),
    "stochastic": st.just({"mode": "expectation"}),
    "dpp": st.fixed_dictionaries({"alpha": st.one_of(st.just(0.0), st.floats(0.0, 100.0)),
                                  "lam": st.one_of(st.floats(0.0, 5.0), st.floats(5.0, 100.0)),
                                  "variant": st.sampled_from(["sym", "asym"])}),
    "dpid": st.fixed_dictionaries({"lam": st.one_of(st.just(0.0), st.floats(0.0, 5.0),
                                                    st.floats(5.0, 100.0))}),
    "mode": st.just({}),
}


def as_labels(img, n_labels, wide=False):
    """``img`` reduced to ``n_labels`` values of its dtype (uint32 labels with ``wide``)."""
    rank = np.floor(to_work(img).reshape(img.shape) / max(float(np.abs(to_work(img)).max()), 1e-300)
                    * (n_labels - 0.5)).astype(np.int64)
    if wide:
        return (rank * 1_000_003).astype(np.uint32)
    if img.dtype.kind == "f":
        return (rank * 0.37 - 0.5).astype(img.dtype)
    return (rank * (int(dtype_max(img.dtype)) // max(n_labels, 1))).astype(img.dtype)


@pytest.mark.parametrize("method", list(PARAMS))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_against_reference(method, data):
    nonneg = method in ("lp", "stochastic")
    img = data.draw(images(nonneg=nonneg))
    geom = data.draw(geometries(img.shape[:2], area_only=method == "dpid"))
    params = data.draw(PARAMS[method])
    if downpool.METHODS[method].labels:
        # Few labels, so that windows tie; uint32 too.
        img = as_labels(img, data.draw(st.integers(1, 5)), data.draw(st.booleans()))
        check(img, method, params, geom)
        return
    has_alpha = img.ndim == 3 and img.shape[2] >= 2 and data.draw(st.booleans())
    scale = float(np.abs(to_work(img)).max()) if img.dtype.kind == "f" else 1.0
    scale = scale or 1.0
    if has_alpha and img.dtype.kind == "f":
        # alpha is a fraction: keep the data in [0, 1] for the premultiplied path
        img = np.abs(img) / max(1.0, scale)
        scale = 1.0
    check(img, method, params, geom, data_scale=scale, has_alpha=has_alpha)


def test_scale_uses_python_round():
    """``scale`` gives ``max(1, round(n * scale))`` per axis, Python's round (half to even)."""
    img = np.zeros((10, 30), np.float32)
    assert downscale(img, "avg", scale=0.25).shape == (round(2.5), round(7.5))  # (2, 8)
    assert downscale(img, "avg", scale=0.01).shape == (1, 1)
    assert downscale(img, "dpid", kernel_size=3).shape == (math.ceil(10 / 3), 10)


# ------------------------------------------------------ regressions --
# Kernel bugs these tests found (recorded as strict xfails in dd88bc0, fixed in 3d6011c).

@pytest.mark.parametrize("dtype,p", [(np.uint8, p) for p in (2, 100, 128, 140, 150, 200, 216, 217, 1000)]
                         + [(np.uint16, p) for p in (2, 50, 64, 70, 80, 100, 108, 109, 1000)])
def test_lp_dark_integer_windows(dtype, p):
    """lp with large p on dark integer images (values a few units above 0) and a constant 1.

    The integer-input table of a^p once reached p*ln(max) < 1200, past where
    (1/max)^p underflows float64 (~708 subnormal, ~745 zero): dark windows came
    out 0 for uint8 p in (~134, 216.5) and uint16 p in (~67, 108.2).
    """
    rng = np.random.default_rng(41)
    hi = 3 if dtype == np.uint8 else 40
    img = rng.integers(0, hi + 1, (12, 13, 3)).astype(dtype)
    img[0, 0] = np.iinfo(dtype).max
    for geom in [{"kernel_size": 2}, {"size": (5, 4)}]:
        check(img, "lp", {"p": float(p)}, geom)
    ones = np.ones((4, 4), dtype)
    assert np.array_equal(downscale(ones, "lp", p=float(p)), np.ones((2, 2), dtype))


def test_softpool_huge_values_small_beta():
    """The one-pass softpool (beta*(hi-lo)/2 <= 600) once summed e^(beta*(a-mid))*a unscaled:
    up to e^600*a, which overflowed float64 for |a| above ~5e47."""
    img = np.array([[0.0, 1e300]])
    check(img, "softpool", {"beta": 1e-297}, {"kernel_size": (1, 2)}, data_scale=1e300)
    rng = np.random.default_rng(42)
    for scale, beta in [(1e300, 5e-298), (1e60, 1.18e-57)]:
        img = scale * rng.random((6, 7, 2))
        check(img, "softpool", {"beta": beta}, {"kernel_size": 2}, data_scale=scale)


def test_dpid_values_near_float64_max():
    """dpid's guide smoothing once summed 2g + g[-1] + g[+1] before renormalising: NaN above ~4.5e307."""
    img = np.full((4, 4), 1e308)
    img[0, 0] = 0.5e308
    check(img, "dpid", {}, {"kernel_size": 2}, data_scale=1e308)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE)
@given(width=st.integers(1, 40), channels=st.sampled_from([1, 2, 3, 4]), data=st.data())
def test_column_taps_sum_each_window_in_order(width, channels, data):
    """The horizontal pass of the separable kernels and of dpp's and dpid's general kernels
    (``PoolJob.column_taps`` and ``separable.pool_columns``) gives each window's
    coverage-weighted sum with its columns added in order: the bits of a plain
    float64 loop over the window, for area windows, overlapping and gapped ones
    and partial windows at the edge (whose taps past the count are clamped to the
    image and add exact zeros)."""
    from downpool import geometry, separable
    from downpool.core import PoolJob

    if data.draw(st.booleans()):
        cols = geometry.area_axis(width, data.draw(st.integers(1, width)))
    else:
        k = data.draw(st.integers(1, width + 2))
        cols = geometry.pooling_axis(width, k, data.draw(st.integers(1, k + 2)))
    rows = geometry.area_axis(1, 1)
    image = np.zeros((1, width, channels))
    out = np.zeros((1, cols.size, channels))
    job = PoolJob(image, 1.0, rows, cols, out, 1.0, False, channels, 0, (0.0, 1.0))
    rng = np.random.default_rng(width * 10 + channels)
    row = rng.random(width * channels) * 2 - 0.5
    pooled = np.empty(cols.size * channels)
    separable.pool_columns(row, *job.column_taps(), pooled)
    expected = np.empty_like(pooled)
    for j in range(cols.size):
        for c in range(channels):
            acc = 0.0
            for s in range(cols.count[j]):
                acc += float(cols.weight[j, s]) * float(row[(cols.start[j] + s) * channels + c])
            expected[j * channels + c] = acc
    assert np.array_equal(pooled, expected)


# ------------------------------------------------------ mode: label images --

def label_image(rng, shape, dtype, n_labels, channels=None):
    """Labels ``0 .. n_labels - 1`` spread over the dtype's range (uint32 past 65535)."""
    if channels is not None:
        shape = (*shape, channels)
    rank = rng.integers(0, n_labels, size=shape)
    dtype = np.dtype(dtype)
    if dtype == np.uint32:
        return (rank * 40_000_000 + 7).astype(dtype)
    if dtype.kind == "u":
        return (rank * (int(dtype_max(dtype)) // n_labels)).astype(dtype)
    return (rank * -1.5e3 + 0.25).astype(dtype)


LABEL_DTYPES = DTYPES + [np.uint32]


@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["2d", 1, 3, 4], ids=lambda v: f"C{v}")
def test_mode_on_label_images(dtype, layout):
    """Few labels, so that windows tie: every geometry, the block kernels (k=2 on 1 and
    3 channels with constant sizes, their partial edges), and windows large enough
    for the sorted form."""
    rng = np.random.default_rng(11)
    channels = None if layout == "2d" else layout
    for n_labels in (2, 3, 50):
        for shape in [(13, 17), (12, 16)]:
            image = label_image(rng, shape, dtype, n_labels, channels)
            for geom in GEOMETRIES + [{"kernel_size": 5}, {"kernel_size": (7, 4)},
                                      {"size": (2, 3)}]:
                if geom.get("size", (0, 0))[0] <= shape[0]:
                    check(image, "mode", {}, geom)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(dtype=st.sampled_from([np.uint8, np.uint16]), n_labels=st.sampled_from([2, 3, 7, 300]),
       shape=st.tuples(st.integers(5, 22), st.integers(5, 22)),
       channels=st.sampled_from([None, 1, 2, 3]), seed=st.integers(0, 2**16),
       geometry=st.one_of(
           st.builds(lambda k, s: {"kernel_size": k, "stride": s},
                     st.tuples(st.integers(5, 9), st.integers(5, 9)), st.integers(1, 4)),
           st.builds(lambda h, w: {"size": (h, w)}, st.integers(1, 4), st.integers(1, 4))))
def test_mode_counts_8_and_16_bit_labels_in_large_windows(dtype, n_labels, shape, channels,
                                                         seed, geometry):
    """Windows of 25 pixels or more, overlapping or of fractional coverage, on 8- and
    16-bit labels (the counted form), the dtype's extremes among them: the reference's
    mode bit for bit."""
    assume(all(n <= m for n, m in zip(geometry.get("size", shape), shape)))
    rng = np.random.default_rng(seed)
    image = label_image(rng, shape, dtype, min(n_labels, int(dtype_max(dtype)) + 1), channels)
    image.reshape(-1)[rng.integers(0, image.size, 4)] = dtype_max(dtype)  # the table's last entry
    check(image, "mode", {}, geometry)


def test_mode_ties_are_exact_on_area_coverage():
    """size (2, 2) of a 3x3 image weighs window (0, 0)'s pixels 4, 2, 2 and 1 ninths."""
    image = np.array([[5, 7, 0], [7, 9, 0], [0, 0, 0]], np.uint8)
    assert downscale(image, "mode", size=(2, 2))[0, 0] == 5  # 4/9 against 2/9 + 2/9: the smaller
    image[0, 0] = 8
    assert downscale(image, "mode", size=(2, 2))[0, 0] == 7
    image[1, 1] = 7  # 5/9
    image[0, 0] = 2
    assert downscale(image, "mode", size=(2, 2))[0, 0] == 7


def test_mode_takes_signed_zeros_as_one_value():
    """-0.0 == 0.0: one value, given as its first pixel in row-major order."""
    image = np.array([[-0.0, 0.0], [1.0, 2.0]], np.float32)
    out = downscale(image, "mode", kernel_size=2)
    assert out[0, 0] == 0.0 and np.signbit(out[0, 0])
    check(np.tile(image, (3, 5)), "mode", {}, {"size": (2, 3)})


def test_mode_refuses_alpha_linear_and_takes_uint32_alone():
    image = np.zeros((4, 4, 2), np.uint8)
    with pytest.raises(ValueError, match="mode: pools labels.*has_alpha does not apply"):
        downscale(image, "mode", has_alpha=True)
    with pytest.raises(ValueError, match="mode: pools labels.*linear does not apply"):
        downscale(image, "mode", linear=True)
    labels = np.arange(16, dtype=np.uint32).reshape(4, 4) * 300_000
    assert downscale(labels, "mode").dtype == np.uint32
    with pytest.raises(TypeError, match=r"uint32 is not supported.*\(uint32 with mode\)"):
        downscale(labels, "avg")
