"""``shrink --to-srgb``: pixels converted from the embedded profile, the output tagged sRGB.

The reference is Little CMS through Pillow's ImageCms (relative
colorimetric), independent of libvips, which does the conversion.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

import downpool
from cli_helpers import run_downpool
from helpers import smooth_image


def _libvips_profile(name: str) -> bytes:
    import pyvips

    lab = pyvips.Image.black(1, 1, bands=3).copy(interpretation="lab")
    return bytes(lab.icc_export(output_profile=name).get("icc-profile-data"))


def _description(icc: bytes) -> str:
    return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()


def _lcms_to_srgb(pixels: np.ndarray, icc: bytes) -> np.ndarray:
    image = Image.fromarray(pixels)
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    srgb = ImageCms.createProfile("sRGB")
    return np.asarray(ImageCms.profileToProfile(
        image, source, srgb, renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC))


# libvips streams PNG and JPEG; Pillow decodes a palette PNG and a BMP whole.
@pytest.mark.parametrize("ext", ["png", "jpg", "palette.png", "bmp"])
def test_a_p3_tagged_image_is_converted_to_srgb_and_tagged_so(tmp_path, ext):
    pixels = smooth_image((40, 36, 3), seed=2)
    pixels[:8, :8] = (0, 255, 0)  # a P3 green, outside sRGB: clipped
    p3 = _libvips_profile("p3")
    source = tmp_path / f"p3.{ext}"
    options = {"quality": 100, "subsampling": 0} if ext == "jpg" else {}
    if ext != "bmp":
        options["icc_profile"] = p3
    picture = Image.fromarray(pixels)
    (picture.quantize(96) if ext == "palette.png" else picture).save(source, **options)
    decoded = np.asarray(Image.open(source).convert("RGB"))
    if ext == "bmp":  # BMP holds no profile here: an untagged image is taken as sRGB
        expected_pixels = decoded
    else:
        expected_pixels = _lcms_to_srgb(decoded, p3)

    # Written as PNG, so that only the input is lossy.
    result = run_downpool("shrink", source, "-o", tmp_path / "out.png", "--to-srgb",
                          "--method", "avg")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.png") as out:
        written = np.asarray(out.convert("RGB")).astype(float)
        icc = out.info.get("icc_profile")
    assert icc is not None and "sRGB" in _description(icc)  # the untagged BMP too
    expected = downpool.downscale(expected_pixels, "avg")
    error = np.abs(written - expected)  # two colour engines, each rounding once
    assert error.max() <= 2 and error.mean() <= 0.75
    if ext != "bmp":  # converted: not the P3 numbers pooled as they were
        assert np.abs(written - downpool.downscale(decoded, "avg")).max() > 8


def test_without_to_srgb_the_profile_and_numbers_are_kept(tmp_path):
    pixels = smooth_image((20, 18, 3), seed=3)
    p3 = _libvips_profile("p3")
    Image.fromarray(pixels).save(tmp_path / "p3.png", icc_profile=p3)
    result = run_downpool("shrink", tmp_path / "p3.png", "-o", tmp_path / "out.png",
                          "--method", "avg")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert out.info.get("icc_profile") == p3
        np.testing.assert_array_equal(np.asarray(out), downpool.downscale(pixels, "avg"))


def test_an_untagged_gray_image_stays_gray_and_untagged(tmp_path):
    gray = smooth_image((24, 20, 1), seed=4)[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    result = run_downpool("shrink", tmp_path / "gray.png", "-o", tmp_path / "out.png",
                          "--to-srgb", "--method", "avg")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "L" and "icc_profile" not in out.info
        np.testing.assert_array_equal(np.asarray(out), downpool.downscale(gray, "avg"))


@pytest.mark.parametrize("ext", ["jpg", "tif"])
def test_a_cmyk_image_goes_through_its_profile(tmp_path, ext):
    """Without --to-srgb CMYK becomes RGB by Pillow's formula, its profile dropped; with it,
    through the profile (checked against Little CMS)."""
    cmyk_profile = _libvips_profile("cmyk")
    cmyk = Image.fromarray(smooth_image((30, 28, 3), seed=8)).convert("CMYK")
    source = tmp_path / f"cmyk.{ext}"
    cmyk.save(source, icc_profile=cmyk_profile, **({"quality": 100} if ext == "jpg" else {}))
    with Image.open(source) as decoded:
        assert decoded.mode == "CMYK" and decoded.info.get("icc_profile") == cmyk_profile
        expected_pixels = np.asarray(ImageCms.profileToProfile(
            decoded, ImageCms.ImageCmsProfile(io.BytesIO(cmyk_profile)),
            ImageCms.createProfile("sRGB"), outputMode="RGB",
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC))
        naive = np.asarray(decoded.convert("RGB"))
    result = run_downpool("shrink", source, "-o", tmp_path / "out.png", "--to-srgb",
                          "--method", "avg")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "RGB" and "sRGB" in _description(out.info["icc_profile"])
        written = np.asarray(out).astype(float)
    error = np.abs(written - downpool.downscale(expected_pixels, "avg"))
    assert error.max() <= 2 and error.mean() <= 0.75
    assert np.abs(written - downpool.downscale(naive, "avg")).max() > 8


def test_an_untagged_cmyk_image_gets_libvips_fallback_profile(tmp_path):
    import pyvips

    Image.fromarray(smooth_image((30, 28, 3), seed=9)).convert("CMYK").save(
        tmp_path / "cmyk.jpg", quality=100)
    result = run_downpool("shrink", tmp_path / "cmyk.jpg", "-o", tmp_path / "out.png",
                          "--to-srgb", "--method", "avg")
    assert result.returncode == 0, result.stderr
    # What vipsthumbnail does with it: libvips' own CMYK profile, then sRGB.
    expected = pyvips.Image.new_from_file(str(tmp_path / "cmyk.jpg")).icc_transform(
        "srgb", input_profile="cmyk", intent="relative").numpy()
    with Image.open(tmp_path / "out.png") as out:
        assert "sRGB" in _description(out.info["icc_profile"])
        np.testing.assert_array_equal(np.asarray(out), downpool.downscale(expected, "avg"))
