"""End-to-end tests of what ``downpool shrink`` keeps of real files, and what it refuses.

Each case is a file the test makes itself, with Pillow or by hand where
Pillow would not write it (a text resolution in EXIF, RGB565 BMP, signed
16-bit TIFF, damaged PNG chunks), run through the installed command.  Pixels
are compared with ``downpool.downscale`` on the array the file holds.
"""

from __future__ import annotations

import io
import struct
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin, TiffImagePlugin

import downpool
from cli_helpers import (downpool_command, exif_block, load, no_traceback, png_chunk, png_chunks,
                         read_png, run_downpool, save, temp_files, write_bmp565, write_tiff)
from downpool.exif import photoshop_app13
from helpers import textured_image


def _errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("downpool: error: ")]


# --- transparency as a key colour (tRNS) -------------------------------------------------


def test_trns_key_colour_becomes_alpha_in_gray_rgb_16_bit_and_low_bit_pngs(tmp_path):
    """Transparency given as one key colour is pooled as alpha, not averaged in."""
    gray = textured_image((12, 16), seed=1)
    gray[:4] = 7
    save(tmp_path / "gray.png", gray, transparency=7)
    rgb = textured_image((12, 16, 3), seed=2)
    rgb[:, :5] = (1, 2, 3)
    save(tmp_path / "rgb.png", rgb, transparency=(1, 2, 3))
    gray16 = textured_image((12, 16), dtype=np.uint16, seed=3)
    gray16[6:] = 300
    save(tmp_path / "gray16.png", gray16, transparency=300)
    bits = textured_image((12, 16), seed=4) > 100
    Image.fromarray(bits).convert("1").save(tmp_path / "bilevel.png", transparency=0)
    # A 2-bit gray PNG: samples 0..3 decode to 0, 85, 170, 255; the key is 2 (170).
    two_bit = np.random.default_rng(5).integers(0, 4, (12, 16))
    packed = b"".join(b"\0" + bytes(int("".join(f"{v:02b}" for v in row[x:x + 4]), 2)
                                     for x in range(0, 16, 4)) for row in two_bit)
    header = struct.pack(">IIBBBBB", 16, 12, 2, 0, 0, 0, 0)
    (tmp_path / "gray2.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"tRNS", struct.pack(">H", 2))
        + png_chunk(b"IDAT", zlib.compress(packed)) + png_chunk(b"IEND", b""))

    result = run_downpool("shrink", tmp_path, "-o", tmp_path / "out", "--method", "avg", "-q")
    assert result.returncode == 0, result.stderr

    def keyed(pixels, key):
        match = pixels == key if pixels.ndim == 2 else (pixels == key).all(axis=2)
        alpha = np.where(match, 0, np.iinfo(pixels.dtype).max).astype(pixels.dtype)
        return np.dstack([pixels, alpha])

    cases = {
        "gray.png": (keyed(gray, 7), "LA"),
        "rgb.png": (keyed(rgb, np.array([1, 2, 3])), "RGBA"),
        "bilevel.png": (keyed(np.where(bits, 255, 0).astype(np.uint8), 0), "LA"),
        "gray2.png": (keyed((two_bit * 85).astype(np.uint8), 170), "LA"),
    }
    for name, (source, mode) in cases.items():
        out, image = load(tmp_path / "out" / name)
        assert image.mode == mode, name
        np.testing.assert_array_equal(out, downpool.downscale(source, "avg", has_alpha=True),
                                      err_msg=name)
    out, _ = read_png(tmp_path / "out" / "gray16.png")  # 16-bit gray + alpha: downpool's own PNG
    assert out.dtype == np.uint16 and out.shape == (6, 8, 2)
    np.testing.assert_array_equal(out, downpool.downscale(keyed(gray16, 300), "avg", has_alpha=True))
    # The key colour does not leak into the visible pixels next to it.
    rgb_out, _ = load(tmp_path / "out" / "rgb.png")
    assert np.all(rgb_out[:, :2, 3] == 0) and np.all(rgb_out[:, 2, 3] == 128)  # half of 255, up


# --- EXIF, XMP, IPTC, resolution, PNG chunks -----------------------------------------------


def _ascii(text: str) -> tuple[int, bytes]:
    data = text.encode() + b"\0"
    return len(data), data


def test_exif_with_a_tag_pillow_cannot_encode_is_kept_whole_with_orientation_patched(tmp_path):
    """A resolution stored as text (type ASCII) once made the whole EXIF block vanish."""
    entries = [(0x010F, 2, *_ascii("Canon")), (0x0110, 2, *_ascii("EOS R5")),
               (0x0112, 3, 1, struct.pack(">H", 6)), (0x011A, 2, *_ascii("300")),
               (0x0132, 2, *_ascii("2020:01:02 03:04:05")), (0x8298, 2, *_ascii("(c) someone"))]
    block = exif_block(entries)
    stored = textured_image((12, 20, 3), seed=6)
    for name in ("cam.jpg", "cam.png", "cam.webp"):
        Image.fromarray(stored).save(tmp_path / name, exif=block, quality=95, lossless=True)
    result = run_downpool("shrink", tmp_path / "cam.jpg", tmp_path / "cam.png", tmp_path / "cam.webp",
                          "--method", "max")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    for name in ("cam_max.jpg", "cam_max.png", "cam_max.webp"):
        with Image.open(tmp_path / name) as image:
            tags = image.getexif()
            assert image.size == (6, 10), name  # turned upright (orientation 6), then halved
            assert tags[0x0112] == 1, name
            assert (tags[0x010F], tags[0x0110], tags[0x0132], tags[0x8298]) == (
                "Canon", "EOS R5", "2020:01:02 03:04:05", "(c) someone"), name
            assert tags[0x011A] == "300", name  # the odd tag too, as it was
            raw = image.info["exif"]
        # Byte for byte, apart from the orientation value.
        assert raw.removeprefix(b"Exif\x00\x00").replace(struct.pack(">HHIH", 0x0112, 3, 1, 1),
                                                         struct.pack(">HHIH", 0x0112, 3, 1, 6)) \
            == block.removeprefix(b"Exif\x00\x00"), name
    out, _ = load(tmp_path / "cam_max.png")
    np.testing.assert_array_equal(out, downpool.downscale(np.rot90(stored, -1), "max"))


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       b'xmlns:exif="http://ns.adobe.com/exif/1.0/" tiff:Orientation="6" '
       b'exif:PixelXDimension="20" exif:PixelYDimension="12"><dc:title xmlns:dc="http://purl.org/'
       b'dc/elements/1.1/">downpool test</dc:title></rdf:Description></rdf:RDF></x:xmpmeta>')
IPTC = b"\x1c\x02\x05\x00\x0ddownpool test\x1c\x02\x74\x00\x0b(c) someone"


def _camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0112] = 6
    exif.get_ifd(0x8769).update({0x9003: "2020:01:02 03:04:05", 0xA002: 20, 0xA003: 12})
    return exif.tobytes()


def test_xmp_iptc_dpi_and_exif_subifd_are_kept_in_jpeg_and_tiff(tmp_path):
    stored = textured_image((12, 20, 3), seed=7)
    Image.fromarray(stored).save(tmp_path / "photo.jpg", quality=95, exif=_camera_exif(), xmp=XMP,
                                 dpi=(300, 300), extra=photoshop_app13(IPTC))
    result = run_downpool("shrink", tmp_path / "photo.jpg", "--method", "avg")
    assert result.returncode == 0, result.stderr
    result = run_downpool("shrink", tmp_path / "photo.jpg", "--method", "avg", "--format", "tiff")
    assert result.returncode == 0, result.stderr
    for name in ("photo_avg.jpg", "photo_avg.tif"):
        with Image.open(tmp_path / name) as image:
            image.load()
            assert image.size == (6, 10), name
            assert image.info["dpi"] == pytest.approx((300, 300)), name
            xmp = image.info["xmp"]
            tags = image.getexif()
            sub = tags.get_ifd(0x8769)
            iptc = (image.info["photoshop"][0x0404] if name.endswith(".jpg")
                    else image.tag_v2[33723])
            compression = image.info.get("compression")
        assert b'tiff:Orientation="1"' in xmp and b"downpool test" in xmp, name
        assert b'exif:PixelXDimension="6"' in xmp and b'exif:PixelYDimension="10"' in xmp, name
        assert tags[0x010F] == "Canon" and tags[0x0112] == 1, name
        assert (sub[0x9003], sub[0xA002], sub[0xA003]) == ("2020:01:02 03:04:05", 6, 10), name
        assert iptc.rstrip(b"\0") == IPTC, name
    # A JPEG's TIFF is compressed losslessly (Deflate), and still has its Exif sub-IFD.
    assert compression == "tiff_adobe_deflate"


def test_png_colour_chunks_text_and_xmp_are_kept_and_an_unfit_format_warns(tmp_path):
    stored = textured_image((12, 20, 3), seed=8)
    info = PngImagePlugin.PngInfo()
    gamma = struct.pack(">I", 45455)
    chroma = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    info.add(b"gAMA", gamma)
    info.add(b"cHRM", chroma)
    info.add_text("Comment", "kept as it was")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    Image.fromarray(stored).save(tmp_path / "lit.png", pnginfo=info, dpi=(150, 150))
    Image.fromarray(stored).save(tmp_path / "photo.jpg", extra=photoshop_app13(IPTC))
    result = run_downpool("shrink", tmp_path / "lit.png", tmp_path / "photo.jpg", "--format", "png",
                          "--method", "avg")
    assert result.returncode == 0, result.stderr
    chunks = dict(png_chunks(tmp_path / "lit_avg.png"))
    assert chunks[b"gAMA"] == gamma and chunks[b"cHRM"] == chroma
    assert chunks[b"tEXt"] == b"Comment\0kept as it was"
    assert chunks[b"pHYs"] == struct.pack(">IIB", 5906, 5906, 1)  # 150 dpi, as stored (per metre)
    assert b'tiff:Orientation="1"' in chunks[b"iTXt"] and b"downpool test" in chunks[b"iTXt"]
    kinds = [kind for kind, _ in png_chunks(tmp_path / "lit_avg.png")]
    assert kinds.index(b"gAMA") < kinds.index(b"IDAT") and kinds.count(b"iTXt") == 1
    # PNG has no place for IPTC: the file is written, and the loss is said.
    assert (f"downpool: warning: {tmp_path / 'photo.jpg'}: IPTC metadata not written: PNG has no "
            "place for it") in result.stderr
    assert (tmp_path / "photo_avg.png").exists()

    result = run_downpool("shrink", tmp_path / "lit.png", "--strip", "--name", "{stem}_bare{ext}")
    assert result.returncode == 0, result.stderr
    assert {kind for kind, _ in png_chunks(tmp_path / "lit_bare.png")} == {b"IHDR", b"IDAT", b"IEND"}


def test_tiff_compression_is_kept_where_it_can_be_and_otherwise_lossless(tmp_path):
    """A G4 fax once came out uncompressed at 1000 times its size."""
    page = np.zeros((400, 300), bool)
    page[40:60, 20:280] = True  # a black bar on a white page
    page[100:300:8, 30:270] = True
    Image.fromarray(~page).convert("1").save(tmp_path / "fax.tif", compression="group4")
    photo = textured_image((40, 30, 3), seed=9)
    for compression in ("tiff_lzw", "packbits", "raw"):
        Image.fromarray(photo).save(tmp_path / f"{compression}.tif", compression=compression)
    # Pillow cannot write a compressed TIFF with an Exif sub-IFD (nor could downpool, before it
    # appended them: see the JPEG-to-TIFF test); an uncompressed one keeps its own.
    Image.fromarray(photo).save(tmp_path / "exif_raw.tif", exif=_camera_exif())
    result = run_downpool("shrink", tmp_path, "-o", tmp_path / "out", "--method", "avg", "-q")
    assert result.returncode == 0, result.stderr

    def opened(name):
        with Image.open(tmp_path / "out" / name) as image:
            image.load()
            return image.info["compression"], np.asarray(image), image.getexif()

    compression, fax, _ = opened("fax.tif")
    # Pooled gray levels are not 1-bit: CCITT cannot hold them, Deflate (lossless) can.
    assert compression == "tiff_adobe_deflate"
    expected = downpool.downscale(np.where(page, 0, 255).astype(np.uint8), "avg")
    np.testing.assert_array_equal(fax, expected)
    assert (tmp_path / "out" / "fax.tif").stat().st_size < 20 * (tmp_path / "fax.tif").stat().st_size
    for name in ("tiff_lzw", "packbits", "raw"):
        compression, pixels, _ = opened(f"{name}.tif")
        assert compression == name
        np.testing.assert_array_equal(pixels, downpool.downscale(photo, "avg"))
    compression, pixels, tags = opened("exif_raw.tif")
    assert compression == "raw" and tags[0x010F] == "Canon" and tags[0x0112] == 1
    np.testing.assert_array_equal(pixels, downpool.downscale(np.rot90(photo, -1), "avg"))
    assert tags.get_ifd(0x8769)[0x9003] == "2020:01:02 03:04:05"


# --- samples that were wrongly refused --------------------------------------------------------


def test_rgb565_bmp_and_signed_16_bit_gray_tiff_are_read(tmp_path):
    rng = np.random.default_rng(10)
    red, green, blue = rng.integers(0, 32, (6, 10)), rng.integers(0, 64, (6, 10)), rng.integers(0, 32, (6, 10))
    write_bmp565(tmp_path / "rgb565.bmp", red, green, blue)
    positive = rng.integers(0, 30000, (8, 8)).astype(np.int16)
    write_tiff(tmp_path / "signed.tif", positive, signed=True)
    write_tiff(tmp_path / "negative.tif", rng.integers(-3000, 3000, (8, 8)).astype(np.int16),
               signed=True)
    result = run_downpool("shrink", tmp_path / "rgb565.bmp", tmp_path / "signed.tif",
                          tmp_path / "negative.tif", "--method", "avg")
    assert result.returncode == 1
    no_traceback(result)
    # Pillow spreads each 5- or 6-bit value over 8 bits (v * 255 // 31): no two values meet.
    decoded = np.dstack([(c * 255 // top).astype(np.uint8)
                         for c, top in ((red, 31), (green, 63), (blue, 31))])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb565.bmp")), decoded)
    out, image = load(tmp_path / "rgb565_avg.bmp")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(out, downpool.downscale(decoded, "avg"))
    out, image = load(tmp_path / "signed_avg.tif")
    assert image.mode == "I;16"
    np.testing.assert_array_equal(out, downpool.downscale(positive.astype(np.uint16), "avg"))
    [error] = _errors(result)
    assert error.startswith(f"downpool: error: {tmp_path / 'negative.tif'}: signed integer samples")
    assert "colour" not in error


# --- damaged and unsupported files ------------------------------------------------------------


def test_damaged_png_chunks_and_unsupported_formats_are_errors_in_words(tmp_path):
    good = textured_image((16, 16, 3), seed=11)
    save(tmp_path / "good.png", good)
    data = (tmp_path / "good.png").read_bytes()
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    crc_at = idat + 4 + length
    bad_crc = bytearray(data)
    bad_crc[crc_at] ^= 0xFF
    (tmp_path / "bad_crc.png").write_bytes(bytes(bad_crc))
    # The IDAT says it is longer than the file: a file cut short by a broken download.
    (tmp_path / "past_end.png").write_bytes(
        data[:idat - 4] + struct.pack(">I", length + 1000) + data[idat:crc_at + 4])
    (tmp_path / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200))
    (tmp_path / "cut.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\x0a")
    (tmp_path / "raw.cr3").write_bytes(b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom" + bytes(200))
    result = run_downpool("shrink", tmp_path / "bad_crc.png", tmp_path / "past_end.png",
                          tmp_path / "photo.heic", tmp_path / "cut.tif", tmp_path / "raw.cr3",
                          tmp_path / "good.png",
                          "--method", "avg")
    assert result.returncode == 1
    no_traceback(result)
    causes = {
        "bad_crc.png": "corrupt PNG file: the checksum of its IDAT chunk is wrong",
        "past_end.png": "truncated PNG file: its IDAT chunk runs past the end of the file",
        "photo.heic": "corrupt or truncated HEIC file: its header cannot be read",
        "cut.tif": "corrupt or truncated TIFF file",
        "raw.cr3": "Canon CR3 raw files are not supported (PNG, JPEG",
    }
    errors = _errors(result)
    assert len(errors) == len(causes), result.stderr
    for name, cause in causes.items():
        [line] = [e for e in errors if e.startswith(f"downpool: error: {tmp_path / name}: ")]
        assert cause in line, line
    assert sorted(p.name for p in tmp_path.glob("*_avg*")) == ["good_avg.png"]


def test_reading_a_pipe_gives_the_same_file_and_no_resource_warning(tmp_path):
    pixels = textured_image((10, 12, 3), seed=12)
    source = save(tmp_path / "a.png", pixels)
    # input= makes stdin a pipe, which cannot seek: it is read into memory first.
    result = subprocess.run([*downpool_command(), "shrink", "/dev/stdin", "-o", str(tmp_path / "out.png")],
                            input=source.read_bytes(), capture_output=True, timeout=120)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "warning" not in stderr.lower(), stderr
    np.testing.assert_array_equal(load(tmp_path / "out.png")[0], downpool.downscale(pixels))
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("jobs", [["-j", "2"], ["-j", "2", "--processes"]])
def test_libtiff_messages_stay_with_their_file_under_workers(tmp_path, jobs):
    """libtiff prints to the process's stderr; under -j its words once landed in the
    middle of downpool's own lines. They now go into that file's error."""
    photo = textured_image((64, 64, 3), seed=13)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    start = TiffImagePlugin.TiffImageFile(io.BytesIO(bytes(data))).tag_v2[273][0]
    for i in range(start + 40, start + 104):  # garble the compressed strip
        data[i] = (data[i] * 7 + 13) & 0xFF
    (tmp_path / "garbled.tif").write_bytes(bytes(data))
    for i in range(4):
        save(tmp_path / f"good{i}.png", textured_image((32, 32, 3), seed=i))
    result = run_downpool("shrink", tmp_path, "-o", tmp_path / "out", *jobs, "--method", "avg")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert all(line.startswith("downpool: ") for line in lines), result.stderr
    [error] = [line for line in lines if line.startswith("downpool: error: ")]
    assert error.startswith(f"downpool: error: {tmp_path / 'garbled.tif'}: corrupt TIFF file: "
                            "its image data is damaged (libtiff: ")
    assert len(list((tmp_path / "out").iterdir())) == 4


def test_an_output_size_above_the_input_is_said_in_width_x_height(tmp_path):
    save(tmp_path / "small.png", textured_image((2, 5, 3)))  # 5 wide, 2 high
    result = run_downpool("shrink", tmp_path / "small.png", "--size", "3x4")
    assert result.returncode == 1
    assert ("small.png: the output, 3x4, would be larger than the 5x2 input (width x height); "
            "downpool only downscales") in result.stderr
