"""``downpool shrink`` decodes plain files in bands through libvips: the same bits as the whole image.

The in-process tests call the command's per-file function with tiny bands and
strips, so that band edges, strip edges and window edges fall everywhere;
the end-to-end ones run the installed command on files big enough to come in
several bands.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import downpool
from cli_helpers import load, read_png, run_downpool, save, write_png
from downpool import cli_shrink
from downpool import io as image_io
from helpers import textured_image

_FILE_KINDS = {
    "png-rgb": ("png", (3,), np.uint8),
    "png-rgba": ("png", (4,), np.uint8),
    "png-gray": ("png", (), np.uint8),
    "png-gray16": ("png", (), np.uint16),
    "png-rgba16": ("png", (4,), np.uint16),
    "tiff-rgb": ("tif", (3,), np.uint8),
    "tiff-la": ("tif", (2,), np.uint8),
}


def _write(path, pixels):
    if pixels.dtype == np.uint16 and pixels.ndim == 3:
        write_png(path, pixels)
    elif path.suffix == ".tif":
        mode = {2: "LA", 3: "RGB"}.get(pixels.shape[2] if pixels.ndim == 3 else 0)
        Image.fromarray(pixels, mode).save(path, compression="tiff_lzw")
    else:
        save(path, pixels)


def _read(path):
    return read_png(path)[0] if path.suffix == ".png" and _is_png16_colour(path) else load(path)[0]


def _is_png16_colour(path):
    head = path.read_bytes()[:29]
    return head[24] == 16 and head[25] in (2, 4, 6)


_GEOMETRIES = st.one_of(
    st.builds(lambda k, s: {"kernel_size": k, "stride": s}, st.integers(1, 4), st.integers(1, 4)),
    st.builds(lambda h, w: {"size": (h, w)}, st.integers(1, 9), st.integers(1, 9)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(_FILE_KINDS)), height=st.integers(9, 40),
       width=st.integers(9, 23), method=st.sampled_from(sorted(downpool.METHODS)),
       geometry=_GEOMETRIES, linear=st.booleans(), band_rows=st.integers(1, 7),
       strip_rows=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_streamed_file_equals_downscale_on_the_whole_image(tmp_path_factory, monkeypatch, kind,
                                                           height, width, method, geometry,
                                                           linear, band_rows, strip_rows, seed):
    ext, channels, dtype = _FILE_KINDS[kind]
    folder = tmp_path_factory.mktemp("stream")
    pixels = textured_image((height, width, *channels), dtype=dtype, seed=seed)
    source = folder / f"in.{ext}"
    _write(source, pixels)
    monkeypatch.setattr(image_io, "STREAM_MIN_BYTES", 0)
    with image_io.open_image(source) as opened:
        assert opened.streamed
    row_bytes = pixels[0].nbytes
    monkeypatch.setattr(cli_shrink, "BAND_BYTES", band_rows * row_bytes)
    # A strip's budget of a few input rows (the smallest strip is one output row).
    monkeypatch.setattr(cli_shrink, "STREAM_STRIP_BYTES", strip_rows * row_bytes * 4)
    labels = downpool.METHODS[method].labels  # no alpha or linear light: alpha is a label
    has_alpha = len(channels) == 1 and channels[0] in (2, 4) and not labels
    linear = linear and not labels
    if "size" in geometry:
        geometry = {"size": (min(geometry["size"][0], height), min(geometry["size"][1], width))}
    elif downpool.METHODS[method].area_only:
        geometry = {"kernel_size": geometry["kernel_size"], "stride": None}
    settings_ = cli_shrink.Settings(method=method, params={}, linear=linear, overwrite=True,
                                    **_settings_geometry(geometry))
    target = folder / f"out.{ext}"
    result = cli_shrink.shrink_file(cli_shrink.Task(str(source), str(target)), settings_)
    assert result.status == "done", result.message
    expected = downpool.downscale(pixels, method, has_alpha=has_alpha, linear=linear, **geometry)
    np.testing.assert_array_equal(_read(target), expected)


def _settings_geometry(geometry):
    if "size" in geometry:
        return {"size": geometry["size"]}
    return {"kernel_size": geometry["kernel_size"], "stride": geometry["stride"]}


def test_read_image_and_open_image_bands_agree_and_bands_are_read_once(tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "STREAM_MIN_BYTES", 0)
    pixels = textured_image((37, 21, 4), seed=2)
    save(tmp_path / "a.png", pixels)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "a.png").pixels, pixels)
    with image_io.open_image(tmp_path / "a.png") as opened:
        assert opened.streamed and opened.shape == (37, 21, 4) and opened.has_alpha
        bands = list(opened.bands(5))
        assert [b.shape[0] for b in bands] == [5] * 7 + [2]
        np.testing.assert_array_equal(np.concatenate(bands), pixels)
        with pytest.raises(RuntimeError, match="read once"):
            list(opened.bands(5))


@pytest.mark.parametrize("name, make", [
    ("palette", lambda p: Image.fromarray(textured_image((9, 8, 3))).quantize(8).save(p)),
    ("cmyk", lambda p: Image.fromarray(textured_image((9, 8, 3))).convert("CMYK").save(p)),
    ("rotated", lambda p: _rotated_jpeg(p)),
])
def test_files_libvips_would_read_otherwise_are_decoded_whole_by_pillow(tmp_path, name, make):
    path = tmp_path / (f"{name}.png" if name == "palette" else f"{name}.jpg")
    make(path)
    with image_io.open_image(path) as opened:
        assert not opened.streamed
        image = opened.read()
    assert image.mode == "RGB"
    if name == "rotated":
        # EXIF orientation 6 on 9x8 (H x W) stored pixels: read upright, 8x9, and the EXIF
        # block kept with its orientation reset to 1
        assert image.pixels.shape == (8, 9, 3)
        assert image.exif is not None
        exif = Image.Exif()
        exif.load(image.exif)
        assert exif.get(0x0112) == 1
    else:
        assert image.pixels.shape == (9, 8, 3)
        assert image.exif is None  # the palette PNG and the CMYK JPEG carry no EXIF


def _rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(textured_image((9, 8, 3))).save(path, exif=exif.tobytes())


def test_a_big_file_through_the_command_in_several_bands(tmp_path):
    """3.1 MB of samples a band: this RGBA PNG and 16-bit TIFF come in 3 and 5 bands."""
    rgba = textured_image((1203, 1001, 4), seed=7)
    save(tmp_path / "big.png", rgba)
    gray16 = textured_image((2011, 999), dtype=np.uint16, seed=8)
    Image.fromarray(gray16).save(tmp_path / "big16.tif", compression="tiff_adobe_deflate")
    for method in ("softpool", "dpid"):
        result = run_downpool("shrink", tmp_path / "big.png", tmp_path / "big16.tif", "-o",
                              tmp_path / method, "--method", method, "-k", "3", "--linear", "-q")
        assert result.returncode == 0, result.stderr
        np.testing.assert_array_equal(
            load(tmp_path / method / "big.png")[0],
            downpool.downscale(rgba, method, kernel_size=3, has_alpha=True, linear=True))
        np.testing.assert_array_equal(
            load(tmp_path / method / "big16.tif")[0],
            downpool.downscale(gray16, method, kernel_size=3, linear=True))


def test_truncated_jpeg_and_png_in_a_batch_are_errors_and_leave_no_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo = textured_image((768, 1024, 3), seed=3)  # above STREAM_MIN_BYTES: libvips decodes
    Image.fromarray(photo).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[:len(data) * 2 // 3])
    save(folder / "whole.png", photo)
    data = (folder / "whole.png").read_bytes()
    (folder / "cut.png").write_bytes(data[:len(data) // 2])
    for name in ("whole.jpg", "whole.png"):
        with image_io.open_image(folder / name) as opened:
            assert opened.streamed
    result = run_downpool("shrink", folder, "-o", tmp_path / "out", "--method", "avg")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = sorted(line for line in result.stderr.splitlines() if "error:" in line)
    assert len(errors) == 2
    assert errors[0] == (f"downpool: error: {folder / 'cut.jpg'}: truncated JPEG file: the image "
                         "data ends early")
    assert errors[1].startswith(f"downpool: error: {folder / 'cut.png'}: truncated PNG file")
    assert "downpool: 2 done, 0 skipped, 2 failed" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["whole.jpg", "whole.png"]
    np.testing.assert_array_equal(load(tmp_path / "out" / "whole.png")[0],
                                  downpool.downscale(photo, "avg"))


def test_a_streamed_png_with_a_damaged_image_data_checksum_is_an_error(tmp_path):
    """Our scan leaves the image data's CRCs of a streamed PNG to libvips (libpng), which
    refuses a wrong one, even where only the checksum's bytes are damaged (Pillow's
    decoder would read that file); the scan still checks them on Pillow's path."""
    photo = textured_image((768, 1024, 3), seed=4)  # above STREAM_MIN_BYTES
    for name, big in [("big.png", photo), ("small.png", photo[:64, :64])]:
        save(tmp_path / name, big)
        data = bytearray((tmp_path / name).read_bytes())
        idat = data.index(b"IDAT")
        length = int.from_bytes(data[idat - 4:idat], "big")
        data[idat + 4 + length] ^= 0x01  # the first IDAT's CRC, not its data
        (tmp_path / name).write_bytes(bytes(data))
    with image_io.open_image(tmp_path / "big.png") as opened:
        assert opened.streamed
    with pytest.raises(OSError, match="the checksum of its IDAT chunk is wrong"):
        with image_io.open_image(tmp_path / "small.png"):
            pass
    result = run_downpool("shrink", tmp_path / "big.png", tmp_path / "small.png", "-o",
                          tmp_path / "out", "--method", "avg")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = sorted(line for line in result.stderr.splitlines() if "error:" in line)
    assert errors[0].startswith(f"downpool: error: {tmp_path / 'big.png'}: corrupt PNG file: ")
    assert "CRC error" in errors[0] and "error in tile" not in result.stderr
    assert "warning" not in result.stderr  # libvips' log is part of the error
    assert errors[1] == (f"downpool: error: {tmp_path / 'small.png'}: corrupt PNG file: the "
                         "checksum of its IDAT chunk is wrong (the data was damaged)")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_streamed_image_keeps_its_metadata(tmp_path):
    from cli_helpers import srgb_icc_profile

    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    pixels = textured_image((1024, 768, 3), seed=5)
    icc = srgb_icc_profile()
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95, icc_profile=icc, dpi=(300, 300),
                                 exif=exif.tobytes())
    with image_io.open_image(tmp_path / "a.jpg") as opened:
        assert opened.streamed
    result = run_downpool("shrink", tmp_path / "a.jpg", "-o", tmp_path / "b.jpg")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "b.jpg") as out:
        assert out.size == (384, 512)
        assert out.info.get("icc_profile") == icc
        assert out.info.get("dpi") == (300, 300)
        assert out.getexif().get(0x010F) == "Camera maker"


def test_interlaced_16_bit_colour_png_written_by_libvips_is_read_exactly(tmp_path, monkeypatch):
    import pyvips

    monkeypatch.setattr(image_io, "STREAM_MIN_BYTES", 0)
    pixels = textured_image((37, 21, 3), dtype=np.uint16, seed=5)
    image = pyvips.Image.new_from_array(pixels).copy(interpretation="rgb16")
    image.pngsave(str(tmp_path / "interlaced.png"), interlace=True)
    with image_io.open_image(tmp_path / "interlaced.png") as opened:
        assert opened.streamed
        loaded = opened.read()
    assert loaded.mode == "RGB;16"
    np.testing.assert_array_equal(loaded.pixels, pixels)


def test_small_images_are_decoded_whole_where_libvips_costs_more_than_it_saves(tmp_path):
    """A batch of small JPEGs went 2 ms a file slower through libvips (benchmarks/results.md)."""
    limit = image_io.STREAM_MIN_BYTES
    side = int((limit / 3) ** 0.5)
    save(tmp_path / "small.png", textured_image((side - 1, side, 3), seed=1))
    save(tmp_path / "large.png", textured_image((side + 1, side, 3), seed=1))
    with image_io.open_image(tmp_path / "small.png") as small:
        assert not small.streamed
    with image_io.open_image(tmp_path / "large.png") as large:
        assert large.streamed
