"""``downpool.RowDownscaler``: rows fed in bands give ``downscale``'s result, bit for bit."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import downpool
from downpool import RowDownscaler
from helpers import DTYPES, random_image
GEOMETRIES = [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2}, {"scale": 0.37},
              {"kernel_size": (2, 3), "stride": (3, 1)}]


def _value_range(image):
    return (float(image.min()), float(image.max())) if image.dtype.kind == "f" else None


def _streamed(image, method, bands, max_bytes, reuse=False, **kw):
    """Feed ``image`` in bands of the given heights (the rest in one), through one reused
    buffer where ``reuse``, and join what comes out."""
    pooler = RowDownscaler(image.shape, image.dtype, method, value_range=_value_range(image),
                           max_bytes=max_bytes, device="cpu", **kw)
    parts, row = [], 0
    buffer = np.empty_like(image)
    for height in [*bands, image.shape[0]]:
        band = image[row:row + height]
        if reuse:
            view = buffer[:band.shape[0]]
            view[...] = band
            band = view
        parts.append(pooler.feed(band))
        if reuse:
            buffer[...] = 0  # the next read overwrites the buffer
        row += height
        if row >= image.shape[0]:
            break
    pooler.close()
    assert pooler.rows_out == pooler.out_shape[0]
    out = np.concatenate(parts)
    assert out.shape == pooler.out_shape
    return out


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), height=st.integers(1, 30), width=st.integers(1, 9),
       channels=st.sampled_from([None, 1, 3, 4]), method=st.sampled_from(sorted(downpool.METHODS)),
       geometry=st.sampled_from(GEOMETRIES), options=st.sampled_from(
           [{}, {"has_alpha": True}, {"linear": True}]),
       bands=st.lists(st.integers(0, 7), max_size=8), max_bytes=st.integers(1, 4000),
       reuse=st.booleans(), seed=st.integers(0, 2**32))
def test_bands_give_the_whole_image(dtype, height, width, channels, method, geometry, options,
                                    bands, max_bytes, reuse, seed):
    if method == "dpid" and "stride" in geometry:
        geometry = {"kernel_size": 3}
    if options.get("has_alpha") and channels in (None, 1):
        channels = 4
    shape = (height, width) if channels is None else (height, width, channels)
    image = random_image(shape, dtype, seed, lo=-1.0, hi=2.0)
    params = {"seed": seed} if method == "stochastic" else {}
    if downpool.METHODS[method].labels:
        options = {}  # labels: no alpha or linear light
        image = image // 5 * 5 if image.dtype.kind == "u" else np.round(image * 3)  # ties
    if method in ("lp", "stochastic") and image.dtype.kind == "f":
        image = np.abs(image)
    kw = {**geometry, **options, **params}
    expected = downpool.downscale(image, method, device="cpu", **kw)
    np.testing.assert_array_equal(_streamed(image, method, bands, max_bytes, reuse, **kw), expected)


@pytest.mark.parametrize("method", sorted(downpool.METHODS))
def test_every_method_on_a_real_image_in_bands(method):
    from PIL import Image

    with Image.open("sample_images/astronaut.png") as im:
        image = np.asarray(im.convert("RGBA"))[:101, :77].copy()
    for options in [{}] if downpool.METHODS[method].labels else [{}, {"has_alpha": True,
                                                                     "linear": True}]:
        kw = {"kernel_size": 2, **options}
        expected = downpool.downscale(image, method, device="cpu", **kw)
        np.testing.assert_array_equal(_streamed(image, method, [5, 16, 1], 20000, **kw), expected)


def test_memory_stays_with_the_strips():
    """4000x1000 RGBA rows made band by band: the pooler keeps a strip's rows, not the image.

    The image would take 16 MB, its float32 copy 64 MB; the output 4 MB.
    """
    pooler = RowDownscaler((4000, 1000, 4), np.uint8, "softpool", kernel_size=2,
                           has_alpha=True, max_bytes=1 << 20, device="cpu")
    rng = np.random.default_rng(0)
    # The first band compiles (or loads) the kernels.
    out_rows = pooler.feed(rng.integers(0, 256, (8, 1000, 4), dtype=np.uint8)).shape[0]
    tracemalloc.start()
    try:
        for _ in range(3992 // 16 - 1):
            out_rows += pooler.feed(rng.integers(0, 256, (16, 1000, 4), dtype=np.uint8)).shape[0]
        out_rows += pooler.feed(rng.integers(0, 256, (24, 1000, 4), dtype=np.uint8)).shape[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pooler.close()
    assert out_rows == 2000
    assert peak < 3 * 2**20, peak


def test_bad_bands_are_errors():
    pooler = RowDownscaler((6, 4, 3), np.uint8, "avg", kernel_size=2, device="cpu")
    with pytest.raises(ValueError, match=r"shape \(n, 4, 3\)"):
        pooler.feed(np.zeros((2, 5, 3), np.uint8))
    with pytest.raises(TypeError, match="must be uint8"):
        pooler.feed(np.zeros((2, 4, 3), np.uint16))
    pooler.feed(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="only 4 came"):
        pooler.close()
    with pytest.raises(ValueError, match="has 6 rows; 4 came before these 3"):
        pooler.feed(np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="need value_range"):
        RowDownscaler((6, 4), np.float32, "avg", kernel_size=2)
    floats = RowDownscaler((6, 4), np.float32, "avg", kernel_size=2, value_range=(0, 1))
    with pytest.raises(ValueError, match="outside value_range"):
        floats.feed(np.full((2, 4), 2.0, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        floats.feed(np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        RowDownscaler((6, 4), np.float32, "lp", kernel_size=2, value_range=(-1, 1))
    with pytest.raises(TypeError, match="int32"):
        RowDownscaler((6, 4), np.int32, "avg", kernel_size=2)


def test_wider_value_range_stays_within_the_spec():
    image = random_image((20, 18, 3), np.float32, 5, lo=-1.0, hi=2.0)
    expected = downpool.downscale(image, "softpool", kernel_size=2, device="cpu")
    pooler = RowDownscaler(image.shape, image.dtype, "softpool", kernel_size=2,
                           value_range=(-10.0, 10.0), device="cpu")
    out = pooler.feed(image)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
