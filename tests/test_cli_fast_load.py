"""``downpool shrink --fast-load``: JPEG and WebP decoded at 1/2, 1/4 or 1/8, then pooled.

The expected pixels are made here from the libraries' own scaled decoders
(pyvips' ``shrink``/``scale`` load options, Pillow's ``draft``) and
``downpool.downscale``; outputs are written as PNG so that they compare bit
for bit.  The choice of scale and the geometry left to the pooling are checked
with hypothesis against the rules: the largest of 8, 4, 2 that leaves at least
2x, and the output size of the image decoded at full size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import pyvips
from hypothesis import assume, given, settings as hsettings, strategies as st
from PIL import Image, ImageOps

import downpool
from cli_helpers import run_downpool
from helpers import smooth_image
from downpool.cli_shrink import Settings


def _read(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _shrink(source, target, *args):
    result = run_downpool("shrink", source, "-o", target, "-q", "--overwrite", *args)
    assert result.returncode == 0, result.stderr
    return _read(target)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 301x203 JPEG and WebP (odd sizes: the decoders round the scaled size differently)."""
    folder = tmp_path_factory.mktemp("fast")
    pixels = smooth_image((203, 301, 3), seed=5)
    Image.fromarray(pixels).save(folder / "in.jpg", quality=92)
    Image.fromarray(pixels).save(folder / "in.webp", quality=92)
    return folder


@pytest.mark.parametrize("method", ["avg", "softpool", "max"])
def test_jpeg_at_k8_is_the_method_on_the_quarter_decode(photo, tmp_path, method):
    out = _shrink(photo / "in.jpg", tmp_path / "out.png", "-k", "8", "--method", method,
                  "--fast-load")
    whole = _shrink(photo / "in.jpg", tmp_path / "whole.png", "-k", "8", "--method", method)
    quarter = pyvips.Image.new_from_file(str(photo / "in.jpg"), shrink=4).numpy()
    assert quarter.shape[:2] == (50, 75)  # libvips rounds the scaled size down
    # ceil(75 / 2) = 38 = ceil(301 / 8), but ceil(50 / 2) = 25 < ceil(203 / 8) = 26:
    # the rows are pooled to the full decode's 26 as areas.
    expected = downpool.downscale(quarter, method, size=(26, 38))
    assert out.shape == whole.shape == (26, 38, 3)
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, whole)  # it did decode smaller


def test_webp_width_is_pooled_to_the_same_size_from_the_scaled_decode(photo, tmp_path):
    out = _shrink(photo / "in.webp", tmp_path / "out.png", "--width", "30", "--method", "dpid",
                  "--fast-load")
    # 30 wide x 20 high: 301 >= 2 * 4 * 30 and 203 >= 2 * 4 * 20, not for 8.
    scaled = pyvips.Image.new_from_file(str(photo / "in.webp"), scale=1 / 4).numpy()
    np.testing.assert_array_equal(out, downpool.downscale(scaled, "dpid", size=(20, 30)))


def test_turned_jpeg_is_scaled_by_pillow_then_turned(tmp_path):
    pixels = smooth_image((120, 200, 3), seed=6)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored on its side
    image.save(tmp_path / "in.jpg", quality=92, exif=exif)
    out = _shrink(tmp_path / "in.jpg", tmp_path / "out.png", "-k", "4", "--method", "avg",
                  "--fast-load")
    with Image.open(tmp_path / "in.jpg") as decoded:
        decoded.draft("RGB", (100, 60))
        half = np.asarray(ImageOps.exif_transpose(decoded))
    assert half.shape == (100, 60, 3)
    np.testing.assert_array_equal(out, downpool.downscale(half, "avg", kernel_size=2))


def test_k2_and_png_are_decoded_whole(photo, tmp_path):
    """Nothing is left to pool after 1/2 of a 2x shrink; a PNG has no scaled decoder."""
    for source, args in ((photo / "in.jpg", ("-k", "2")), (photo / "in.webp", ("--scale", "0.4"))):
        np.testing.assert_array_equal(
            _shrink(source, tmp_path / "a.png", *args, "--fast-load"),
            _shrink(source, tmp_path / "b.png", *args))
    Image.open(photo / "in.jpg").save(tmp_path / "in.png")
    np.testing.assert_array_equal(
        _shrink(tmp_path / "in.png", tmp_path / "c.png", "-k", "8", "--fast-load"),
        _shrink(tmp_path / "in.png", tmp_path / "d.png", "-k", "8"))


def spec_output_size(geometry: dict, shape: tuple[int, int]) -> tuple[int, int]:
    """SPEC section 2, written here apart from downpool: ``size`` as given; ``scale``
    ``max(1, round(n * scale))``; kernel k, stride s: ``ceil((n - k) / s) + 1`` windows
    (1 where n < k), less a last window that would start past the edge (README,
    "Decisions where the SPEC is silent"), so at most ``ceil(n / s)``."""
    if "size" in geometry:
        return tuple(geometry["size"])
    if "scale" in geometry:
        return tuple(max(1, round(n * geometry["scale"])) for n in shape)
    k = geometry["kernel_size"]
    s = geometry["stride"] or k
    return tuple(min(math.ceil((n - k) / s) + 1 if n >= k else 1, math.ceil(n / s))
                 for n in shape)


def _settings(geometry: dict) -> Settings:
    return Settings(method="avg", params={}, fast_load=True, **geometry)


_GEOMETRIES = st.one_of(
    st.builds(lambda k, s: {"kernel_size": k, "stride": s}, st.integers(1, 40),
              st.one_of(st.none(), st.integers(1, 40))),
    st.builds(lambda f: {"scale": f}, st.floats(0.01, 1.0)),
    st.builds(lambda w: {"width": w}, st.integers(1, 400)),
    st.builds(lambda h, w: {"size": (h, w)}, st.integers(1, 300), st.integers(1, 400)),
)


@hsettings(max_examples=300, deadline=None)
@given(geometry=_GEOMETRIES, height=st.integers(1, 3000), width=st.integers(400, 3000),
       rounding=st.sampled_from([math.floor, math.ceil, round]))
def test_scale_leaves_2x_and_the_output_size_is_kept(geometry, height, width, rounding):
    settings = _settings(geometry)
    full = settings.geometry((height, width))
    out = spec_output_size(full, (height, width))
    assume(out[0] <= height and out[1] <= width)  # else refused: larger than the input
    factor = settings.load_factor((height, width))
    assert factor in (1, 2, 4, 8)
    kernel = "kernel_size" in full
    def leaves_2x(f):
        if kernel:
            k = full["kernel_size"]
            return full["stride"] in (None, k) and k % f == 0 and k // f >= 2
        return height >= 2 * f * out[0] and width >= 2 * f * out[1]
    assert factor == 1 or leaves_2x(factor)
    assert not any(leaves_2x(f) for f in (8, 4, 2) if f > factor)  # the largest
    loaded = tuple(max(1, rounding(n / factor)) for n in (height, width))
    pooled = settings.loaded_geometry((height, width), loaded, factor)
    assert spec_output_size(pooled, loaded) == out  # the full decode's size, from the scaled one
    if kernel and "kernel_size" in pooled:
        assert pooled["kernel_size"] * factor == full["kernel_size"]
    if factor == 1:
        assert pooled == full
