"""AVIF (Pillow's own codec) and HEIC (pillow-heif) in and out of ``downpool shrink``.

The inputs are written by the real libraries; the outputs are read back by
them, not by downpool.  Both formats are lossy, so pixels are compared with
``downscale`` of the decoded input within a small error.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import downpool
from cli_helpers import run_downpool, save, srgb_icc_profile
from helpers import smooth_image, textured_image

pillow_heif = pytest.importorskip("pillow_heif")
pillow_heif.register_heif_opener()

_FORMATS = {"avif": "AVIF", "heic": "HEIF"}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0112] = orientation
    return exif.tobytes()


def _decoded(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.mark.parametrize("ext", sorted(_FORMATS))
@pytest.mark.parametrize("channels", [3, 4])
def test_round_trip_keeps_pixels_profile_and_exif(tmp_path, ext, channels):
    pixels = smooth_image((48, 38, channels), seed=3)
    source = tmp_path / f"in.{ext}"
    icc = srgb_icc_profile()
    Image.fromarray(pixels).save(source, format=_FORMATS[ext], quality=95, icc_profile=icc,
                                 exif=_exif(1))
    result = run_downpool("shrink", source, "-o", tmp_path / f"out.{ext}", "--method", "avg")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / f"out.{ext}") as out:
        assert out.format == _FORMATS[ext] and out.size == (19, 24)
        assert out.mode == ("RGBA" if channels == 4 else "RGB")
        assert out.info.get("icc_profile") == icc
        assert out.getexif().get(0x010F) == "TestCam"
        written = np.asarray(out).astype(float)
    expected = downpool.downscale(_decoded(source), "avg", has_alpha=channels == 4)
    assert np.abs(written - expected).mean() < 3.0


@pytest.mark.parametrize("ext", sorted(_FORMATS))
def test_exif_rotated_input_is_turned_upright_and_written_as_orientation_1(tmp_path, ext):
    pixels = smooth_image((40, 24, 3), seed=4)
    pixels[:6, :6] = 255  # a white corner, top left as stored
    source = tmp_path / f"in.{ext}"
    Image.fromarray(pixels).save(source, format=_FORMATS[ext], quality=95, exif=_exif(6))
    result = run_downpool("shrink", source, "-o", tmp_path / f"out.{ext}", "--method", "max")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / f"out.{ext}") as out:
        assert out.size == (20, 12)  # 40 rows stored, shown 40 wide: turned a quarter
        assert out.getexif().get(0x0112, 1) == 1
        upright = np.asarray(out)
    # Orientation 6 shows the stored top-left corner at the top right.
    assert upright[:2, -2:].min() > 200 and upright[:2, :2].max() < 200


def test_a_batch_converts_to_avif_and_heic_with_their_extensions(tmp_path):
    folder = tmp_path / "in"
    for i in range(3):
        save(folder / f"photo{i}.jpg", smooth_image((32, 40, 3), seed=i), quality=95)
    for fmt, ext in (("avif", ".avif"), ("heic", ".heic")):
        out = tmp_path / fmt
        result = run_downpool("shrink", folder, "-o", out, "--format", fmt, "--quality", "80",
                              "--method", "avg")
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in out.iterdir()) == [f"photo{i}{ext}" for i in range(3)]
        for i in range(3):
            with Image.open(out / f"photo{i}{ext}") as image:
                assert image.format == _FORMATS[fmt] and image.size == (20, 16)
    # Folders are walked for them as inputs too.
    for fmt in ("avif", "heic"):
        again = run_downpool("shrink", tmp_path / fmt, "-o", tmp_path / f"png-{fmt}",
                             "--format", "png")
        assert again.returncode == 0, again.stderr
        assert again.stderr.startswith("downpool: 3 done, 0 skipped, 0 failed")


def test_heif_above_8_bits_is_refused_not_reduced(tmp_path):
    pixels = (textured_image((16, 12, 3), dtype=np.uint16, seed=1) >> 6) << 6  # 10 significant bits
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(12, 16), data=pixels.tobytes())
    heif.save(tmp_path / "ten.heic", quality=-1)
    with Image.open(tmp_path / "ten.heic") as check:
        assert check.info.get("bit_depth", 8) > 8
    result = run_downpool("shrink", tmp_path / "ten.heic")
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("downpool: error:")]
    assert "-bit HEIF" in error and "does not drop bits silently" in error
