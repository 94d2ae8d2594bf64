"""The Python interface of SPEC sections 1, 2 and 5: validation, shapes, dtypes, errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import downpool
from downpool.geometry import area_axis, pooling_axis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import DTYPES, random_image  # noqa: E402
from reference import DEFAULTS as SPEC_DEFAULTS  # noqa: E402  (SPEC section 3, written once)


# --- METHODS ----------------------------------------------------------------


def test_methods_registry_lists_the_spec_methods_and_defaults():
    assert list(downpool.METHODS) == ["avg", "max", "lp", "softpool", "stochastic", "dpp", "dpid",
                                      "mode"]
    defaults = {name: spec.defaults for name, spec in downpool.METHODS.items()}
    assert defaults == SPEC_DEFAULTS
    for spec in downpool.METHODS.values():
        assert spec.description and spec.summary
        for param in spec.params.values():
            assert param.doc and param.allowed


def test_methods_registry_is_read_only():
    with pytest.raises(TypeError):
        downpool.METHODS["new"] = downpool.METHODS["avg"]  # type: ignore[index]


# --- shapes and dtypes ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", list(downpool.METHODS))
def test_result_keeps_dtype_and_ndim(method, dtype):
    for shape in [(9, 7), (9, 7, 1), (9, 7, 3), (9, 7, 4), (9, 7, 5)]:
        out = downpool.downscale(random_image(shape, dtype), method, kernel_size=2)
        assert out.dtype == dtype
        assert out.shape == (5, 4) + shape[2:]


@pytest.mark.parametrize("method", list(downpool.METHODS))
def test_input_is_never_modified(method):
    options = [(False, False), (True, False), (False, True), (True, True)]
    if downpool.METHODS[method].labels:  # no alpha or linear light
        options = options[:1]
    for has_alpha, linear in options:
        img = random_image((8, 10, 4), np.uint8)
        before = img.copy()
        downpool.downscale(img, method, kernel_size=3, has_alpha=has_alpha, linear=linear)
        np.testing.assert_array_equal(img, before)
    f = random_image((8, 10, 3), np.float32)
    before = f.copy()
    downpool.downscale(f, method, scale=0.5)
    np.testing.assert_array_equal(f, before)


def test_non_contiguous_and_big_endian_inputs_are_accepted():
    img = random_image((12, 16, 3), np.float64)
    view = img[::2, ::-1]  # strided, negative step
    expected = downpool.downscale(np.ascontiguousarray(view), "softpool", kernel_size=2)
    np.testing.assert_array_equal(downpool.downscale(view, "softpool", kernel_size=2), expected)
    u16 = random_image((6, 6), np.uint16)
    swapped = u16.astype(">u2")
    out = downpool.downscale(swapped, "avg", kernel_size=2)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, downpool.downscale(u16, "avg", kernel_size=2))


def test_default_method_is_softpool_and_default_geometry_is_k2():
    img = random_image((6, 9, 3), np.float64)
    out = downpool.downscale(img)
    np.testing.assert_array_equal(out, downpool.downscale(img, "softpool", kernel_size=2))
    assert out.shape == (3, 5, 3)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40),
    kh=st.integers(1, 7), kw=st.integers(1, 7),
    sh=st.integers(1, 7), sw=st.integers(1, 7),
)
def test_pooling_geometry_follows_the_spec_formula(h, w, kh, kw, sh, sw):
    for n, k, s in [(h, kh, sh), (w, kw, sw)]:
        ax = pooling_axis(n, k, s)
        expected = math.ceil((n - k) / s) + 1 if n >= k else 1
        if (expected - 1) * s >= n:  # a last window past the edge (stride > k) is dropped
            expected -= 1
        assert ax.size == expected
        assert (ax.count >= 1).all()
        for i in range(ax.size):
            assert ax.start[i] == i * s
            assert ax.start[i] + ax.count[i] == min(i * s + k, n)
            np.testing.assert_allclose(ax.weight[i, : ax.count[i]], 1.0 / ax.count[i])
    img = np.zeros((h, w), np.float32)
    out = downpool.downscale(img, "avg", kernel_size=(kh, kw), stride=(sh, sw))
    assert out.shape == (pooling_axis(h, kh, sh).size, pooling_axis(w, kw, sw).size)


@settings(max_examples=80, deadline=None)
@given(n_in=st.integers(1, 300), data=st.data())
def test_area_geometry_coverage_is_exact_box_overlap(n_in, data):
    n_out = data.draw(st.integers(1, n_in))
    ax = area_axis(n_in, n_out)
    box = n_in / n_out
    covered = np.zeros(n_in)
    for i in range(n_out):
        lo, hi = i * box, (i + 1) * box
        q = np.arange(ax.start[i], ax.start[i] + ax.count[i])
        overlap = np.minimum(hi, q + 1) - np.maximum(lo, q)
        assert (overlap > 0).all(), "every listed pixel has coverage > 0"
        # No pixel just outside the listed range touches the box.
        assert ax.start[i] == math.floor(lo + 1e-12) or ax.start[i] == math.floor(lo)
        np.testing.assert_allclose(ax.weight[i, : ax.count[i]], overlap / box, rtol=0, atol=1e-12)
        covered[q] += overlap
    np.testing.assert_allclose(covered, 1.0)  # each input pixel is shared out exactly once


def test_scale_rounds_each_axis_and_keeps_at_least_one_pixel():
    img = np.zeros((100, 7), np.uint8)
    assert downpool.downscale(img, "avg", scale=0.25).shape == (25, 2)
    assert downpool.downscale(img, "avg", scale=0.01).shape == (1, 1)
    assert downpool.downscale(img, "avg", scale=1.0).shape == (100, 7)


def test_dpid_kernel_size_means_ceil_division_size():
    img = random_image((11, 7, 3), np.uint8)
    out = downpool.downscale(img, "dpid", kernel_size=(2, 3))
    assert out.shape == (6, 3, 3)
    np.testing.assert_array_equal(out, downpool.downscale(img, "dpid", size=(6, 3)))


def test_kernel_larger_than_image_gives_one_partial_window():
    img = random_image((3, 2), np.float64)
    out = downpool.downscale(img, "max", kernel_size=5)
    assert out.shape == (1, 1)
    assert out[0, 0] == img.max()


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(method="nope"), ["unknown method", "'nope'", "softpool"]),
        (dict(method="softpool", gamma=1), ["softpool", "'gamma'", "beta"]),
        (dict(method="avg", beta=1.0), ["avg", "'beta'", "none"]),
        (dict(method="softpool", beta=-1), ["softpool", "'beta'", ">= 0"]),
        (dict(method="softpool", beta=float("nan")), ["softpool", "'beta'", "finite"]),
        (dict(method="softpool", beta="big"), ["softpool", "'beta'"]),
        (dict(method="softpool", beta=True), ["softpool", "'beta'"]),
        (dict(method="lp", p=0), ["lp", "'p'", "> 0"]),
        (dict(method="lp", p=float("inf")), ["lp", "'p'", "finite"]),
        (dict(method="dpp", lam=-0.5), ["dpp", "'lam'", ">= 0"]),
        (dict(method="dpp", alpha=-1.0), ["dpp", "'alpha'", ">= 0"]),
        (dict(method="dpp", variant="left"), ["dpp", "'variant'", "'sym', 'asym'"]),
        (dict(method="dpid", lam=-1.0), ["dpid", "'lam'", ">= 0"]),
        (dict(method="stochastic", mode="random"), ["stochastic", "'mode'", "'sample'"]),
        (dict(method="stochastic", seed=-1), ["stochastic", "'seed'", "2**64"]),
        (dict(method="stochastic", seed=1.5), ["stochastic", "'seed'", "integer"]),
        (dict(method="dpid", kernel_size=2, stride=1), ["dpid", "stride", "area"]),
        (dict(method="avg", kernel_size=2, size=(2, 2)), ["avg", "kernel_size and size"]),
        (dict(method="avg", size=(2, 2), scale=0.5), ["avg", "size and scale"]),
        (dict(method="avg", scale=0.5, stride=1), ["avg", "stride"]),
        (dict(method="avg", size=(9, 2)), ["avg", "larger", "only downscales"]),
        (dict(method="softpool", scale=1.5), ["softpool", "scale", "(0, 1]"]),
        (dict(method="softpool", scale=0), ["softpool", "scale", "(0, 1]"]),
        (dict(method="max", kernel_size=0), ["max", "kernel_size", "positive"]),
        (dict(method="max", kernel_size=(2, 2, 2)), ["max", "kernel_size"]),
        (dict(method="max", kernel_size=2.0), ["max", "kernel_size"]),
        (dict(method="max", stride=(1, 0)), ["max", "stride"]),
        (dict(method="max", size=(0, 3)), ["max", "size"]),
        (dict(method="max", device="tpu"), ["device", "'tpu'"]),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_problem(kwargs, words):
    img = np.zeros((8, 8, 3), np.uint8)
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "max")
    with pytest.raises(ValueError) as info:
        downpool.downscale(img, method, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    "image, error, words",
    [
        (np.zeros((4, 4), bool), TypeError, ["bool", "uint8"]),
        (np.zeros((4, 4), np.int64), TypeError, ["int64"]),
        (np.zeros((4, 4), np.float16), TypeError, ["float16"]),
        (np.zeros((4, 4), np.complex128), TypeError, ["complex128"]),
        (np.array([[object()]]), TypeError, ["object"]),
        (np.float64(1.0), ValueError, ["0-D"]),
        (np.zeros(5), ValueError, ["1-D"]),
        (np.zeros((2, 2, 2, 2)), ValueError, ["4-D"]),
        (np.zeros((0, 4)), ValueError, ["empty axis"]),
        (np.zeros((4, 4, 0)), ValueError, ["empty axis"]),
        (np.array([[0.0, np.nan]]), ValueError, ["NaN"]),
        (np.array([[0.0, np.inf]], np.float32), ValueError, ["infinite"]),
        (np.array([[0.0, -np.inf]]), ValueError, ["infinite"]),
    ],
)
def test_bad_images_raise(image, error, words):
    with pytest.raises(error) as info:
        downpool.downscale(image, "avg", kernel_size=1)
    for word in words:
        assert word in str(info.value)


_SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 5e-324, -5e-324, 1e-310, 1.1754944e-38, 3.4e38, -3.4e38,
                   1.7976931348623157e308, -1.7976931348623157e308, np.nan, np.inf, -np.inf]


@settings(max_examples=300, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]),
       values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                 st.sampled_from(_SPECIAL_FLOATS)), min_size=1, max_size=40),
       threads=st.integers(1, 3))
def test_one_pass_float_range_matches_numpy(dtype, values, threads):
    """downpool.value_range.float_range (one pass over the bits, split between threads)
    against NumPy's min, max and isfinite: every sign, zero, subnormal,
    extreme, NaN and inf, in float32 and float64."""
    import warnings

    from downpool.value_range import float_range

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float64 values beyond float32
        image = np.array(values, dtype=dtype).reshape(1, -1)
    got = float_range(image, threads)
    if not np.isfinite(image).all():
        assert got is None
    else:
        assert got == (float(image.min()), float(image.max()))
        # -0.0 and 0.0 compare equal; the result is one of the image's values.
        assert np.signbit(got[0]) in set(np.signbit(image[image == got[0]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_float_images_take_the_one_pass_range(dtype):
    """Images of 2^20 values and more take the threaded one-pass range: NaN and
    inf anywhere in them are refused, and their range is NumPy's."""
    from downpool.core import _ONE_PASS_RANGE, check_image

    rng = np.random.default_rng(5)
    image = rng.uniform(-3.0, 2.0, (1024, 1100)).astype(dtype)
    assert image.size >= _ONE_PASS_RANGE
    assert check_image(image)[1] == (float(image.min()), float(image.max()))
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((0, 0), (511, 600), (1023, 1099)):
            broken = image.copy()
            broken[where] = bad
            with pytest.raises(ValueError, match="NaN or infinite"):
                downpool.downscale(broken, "avg", kernel_size=2)


@pytest.mark.parametrize("method", ["lp", "stochastic"])
def test_negative_input_is_rejected_where_the_method_needs_non_negative(method):
    img = np.full((4, 4), 0.5)
    img[2, 1] = -0.25
    with pytest.raises(ValueError, match=rf"^{method}: needs non-negative values.*-0\.25"):
        downpool.downscale(img, method)
    for other in ["avg", "max", "softpool", "dpp", "dpid"]:
        assert np.isfinite(downpool.downscale(img, other)).all()


def test_has_alpha_needs_two_channels():
    with pytest.raises(ValueError, match="has_alpha"):
        downpool.downscale(np.zeros((4, 4), np.uint8), "avg", has_alpha=True)


def test_cuda_device_is_a_clear_error_and_auto_is_cpu():
    img = random_image((4, 4), np.float32)
    with pytest.raises(downpool.DeviceUnavailableError, match="no usable CUDA GPU"):
        downpool.downscale(img, "avg", device="cuda")
    np.testing.assert_array_equal(
        downpool.downscale(img, "avg", device="auto"), downpool.downscale(img, "avg", device="cpu")
    )


def test_importing_downpool_does_not_import_numba():
    code = "import sys, downpool, downpool.cli; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
