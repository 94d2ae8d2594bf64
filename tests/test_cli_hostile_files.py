"""``downpool shrink`` on hostile files (issue 29): damaged JPEGs that libjpeg decodes with a
grey part and only a warning, and files whose frames, pages, video frames or pipe bytes
would pass the memory and pixel limits unchecked.

Every file is made here by the real libraries (Pillow, PyAV), then damaged or shaped by a
few bytes; the command runs end to end in a subprocess.  The bombs are small in bytes and
the limits low.
"""

from __future__ import annotations

import io
import os
import struct
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cli_helpers import load, no_traceback, run_downpool, summary  # noqa: E402
from helpers import smooth_image  # noqa: E402


def _errors(result) -> dict[str, str]:
    """{file name: cause} of a run's error lines."""
    errors = {}
    for line in result.stderr.splitlines():
        if line.startswith("downpool: error: "):
            path, _, cause = line.removeprefix("downpool: error: ").partition(": ")
            errors[os.path.basename(path)] = cause
    return errors


def _warnings(result) -> dict[str, str]:
    warnings = {}
    for line in result.stderr.splitlines():
        if line.startswith("downpool: warning: "):
            path, _, cause = line.removeprefix("downpool: warning: ").partition(": ")
            warnings[os.path.basename(path)] = cause
    return warnings


# --- JPEG: damage that libjpeg only warns about ----------------------------------------------


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _scan_start(data: bytes) -> int:
    """Where the entropy-coded data of a baseline JPEG's (only) scan begins."""
    position = 2
    while True:
        marker = data[position + 1]
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if marker == 0xDA:
            return position + 2 + length
        position += 2 + length


def _segment(data: bytes, marker: int) -> int:
    """Where the first marker segment ``0xFF marker`` before the scan begins."""
    position = 2
    while data[position + 1] != marker:
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    return position


def _restart_markers(data: bytes) -> list[int]:
    start = _scan_start(data)
    return [i for i in range(start, len(data) - 1)
            if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7]


#: The two ways a JPEG is decoded: whole by Pillow (small: 96x128), and by libvips in
#: bands (from 2 MiB of samples: 1024x1024 RGB).
JPEG_SIZES = {"pillow": (96, 128), "streamed": (1024, 1024)}


@pytest.mark.parametrize("path", sorted(JPEG_SIZES))
def test_a_jpeg_with_missing_or_damaged_image_data_is_an_error_not_a_grey_picture(tmp_path, path):
    """Cut in half and ended with EOI (was: exit 0, the bottom half flat grey 128), a
    restart marker out of sequence, and a bad Huffman code in the last rows: libjpeg
    only warns about each and fills what it cannot decode with grey.  Each is now one
    line saying so, and nothing is written; the undamaged file still goes through."""
    h, w = JPEG_SIZES[path]
    pixels = smooth_image((h, w, 3), seed=1)
    good = _jpeg(pixels)
    with_restarts = _jpeg(pixels, restart_marker_blocks=4)
    marker = _restart_markers(with_restarts)[len(_restart_markers(with_restarts)) // 2]
    wrong_rst = bytearray(with_restarts)
    wrong_rst[marker + 1] = 0xD0 + (wrong_rst[marker + 1] - 0xD0 + 3) % 8
    # 32 one-bits: a code longer than any of the scan's tables hold.  libjpeg-turbo's
    # fast path decodes such a code silently as 0, its slow path (the last blocks,
    # near the end of the data) warns.
    end = len(good) - 300
    files = {
        "cut.jpg": good[:len(good) // 2] + b"\xff\xd9",
        "wrong_rst.jpg": bytes(wrong_rst),
        "bad_huffman.jpg": good[:end] + b"\xff\x00" * 4 + good[end:],
        "good.jpg": good,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = run_downpool("shrink", *(tmp_path / n for n in files), "-o", tmp_path / "out",
                          "--method", "avg", "-j", "1")
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    errors = _errors(result)
    assert set(errors) == {"cut.jpg", "wrong_rst.jpg", "bad_huffman.jpg"}, result.stderr
    assert errors["cut.jpg"].startswith("truncated JPEG file: the image data ends early"), errors
    assert "premature end of data segment" in errors["cut.jpg"]
    assert errors["wrong_rst.jpg"].startswith("corrupt JPEG file: its image data is damaged")
    assert "instead of RST" in errors["wrong_rst.jpg"]
    assert "bad Huffman code" in errors["bad_huffman.jpg"], errors
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.jpg"]
    assert summary(result).startswith("downpool: 1 done, 0 skipped, 3 failed")


def test_a_tiny_jpeg_whose_header_claims_4000x4000_is_an_error(tmp_path):
    """848 bytes whose frame header says 4000x4000 (was: a 2000x2000 grey image, exit 0):
    the image data ends after the first blocks."""
    data = bytearray(_jpeg(smooth_image((16, 16, 3), seed=2)))
    frame = _segment(bytes(data), 0xC0)
    data[frame + 5:frame + 9] = struct.pack(">HH", 4000, 4000)
    source = tmp_path / "claims.jpg"
    source.write_bytes(bytes(data))
    assert len(data) < 1000
    result = run_downpool("shrink", source, "-o", tmp_path / "out.jpg", "--method", "avg")
    no_traceback(result)
    assert result.returncode == 1
    assert _errors(result)["claims.jpg"].startswith("truncated JPEG file"), result.stderr
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.parametrize("path", sorted(JPEG_SIZES))
def test_jpegs_with_harmless_libjpeg_warnings_are_pooled_as_the_clean_file(tmp_path, path):
    """Bytes before a restart marker or before the end (libjpeg: "N extraneous bytes
    before marker"), an unknown JFIF version and a broken ICC segment: the pixels are
    whole, and the output is the clean file's, with a warning where libjpeg gave one."""
    h, w = JPEG_SIZES[path]
    pixels = smooth_image((h, w, 3), seed=3)
    good = _jpeg(pixels)
    with_restarts = _jpeg(pixels, restart_marker_blocks=4)
    marker = _restart_markers(with_restarts)[len(_restart_markers(with_restarts)) // 2]
    jfif = bytearray(good)
    jfif[_segment(good, 0xE0) + 9] = 3  # JFIF version 3.01
    icc = b"ICC_PROFILE\x00" + bytes([2, 1]) + bytes(64)  # part 2 of 1
    files = {
        "good.jpg": good,
        "restarts.jpg": with_restarts,
        "padded_restart.jpg": with_restarts[:marker] + b"\x00\x01\x02" + with_restarts[marker:],
        "padded_end.jpg": good[:-2] + b"\x00\x01\x02\x03" + good[-2:],
        "jfif3.jpg": bytes(jfif),
        "bad_icc.jpg": good[:2] + b"\xff\xe2" + struct.pack(">H", len(icc) + 2) + icc + good[2:],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = run_downpool("shrink", *(tmp_path / n for n in files), "-o", tmp_path / "out",
                          "--method", "avg", "--format", "png", "-j", "1")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    out = {name: load(tmp_path / "out" / name.replace(".jpg", ".png"))[0] for name in files}
    for name in ("padded_end.jpg", "jfif3.jpg", "bad_icc.jpg"):
        np.testing.assert_array_equal(out[name], out["good.jpg"], err_msg=name)
    np.testing.assert_array_equal(out["padded_restart.jpg"], out["restarts.jpg"])
    warnings = _warnings(result)
    assert "3 extraneous bytes before marker" in warnings["padded_restart.jpg"], result.stderr
    assert "harmless" in warnings["padded_restart.jpg"]
    assert "unknown JFIF revision number 3.01" in warnings["jfif3.jpg"], result.stderr


def test_a_streamed_jpeg_stops_at_its_damage_rather_than_after_the_grey_rest(tmp_path):
    """libvips reads a JPEG with fail_on="warning": the bands stop a strip after libjpeg's
    warning, not after the grey rows that follow it have been decoded and pooled."""
    import downpool.io

    good = _jpeg(smooth_image((1024, 1024, 3), seed=4))
    source = tmp_path / "cut.jpg"
    source.write_bytes(good[:len(good) // 3] + b"\xff\xd9")
    rows = 0
    with downpool.io.open_image(source) as image:
        assert image.streamed
        with pytest.raises(OSError, match="truncated JPEG file"):
            for band in image.bands(16):
                rows += band.shape[0]
    assert rows < 1024 // 2, rows


def test_other_formats_cut_short_on_pillows_path_are_errors(tmp_path):
    """A PNG whose one IDAT holds half the image data (its CRC right, then IEND), a GIF
    whose LZW data stops half way (then its terminator and trailer), a WebP cut with its
    RIFF size made to fit, an animated GIF cut in its second frame: each one line, no
    output."""
    import zlib

    pixels = smooth_image((96, 128, 3), seed=5)

    def encoded(image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    png = encoded(Image.fromarray(pixels), "PNG")
    at = png.index(b"IDAT")
    idat = png[at + 4:at + 4 + struct.unpack(">I", png[at - 4:at])[0]]
    gif = encoded(Image.fromarray(pixels).convert("P"), "GIF")
    descriptor = 13 + (3 << (gif[10] & 7) + 1 if gif[10] & 0x80 else 0)  # past the palette
    while gif[descriptor] == 0x21:  # extensions: their label, then sub-blocks
        descriptor += 2
        while gif[descriptor]:
            descriptor += 1 + gif[descriptor]
        descriptor += 1
    assert gif[descriptor] == 0x2C
    position, blocks = descriptor + 11, []
    while gif[position]:
        blocks.append(gif[position:position + 1 + gif[position]])
        position += 1 + gif[position]
    webp = encoded(Image.fromarray(pixels), "WEBP", quality=90)
    webp = bytearray(webp[:len(webp) // 2])
    webp[4:8] = struct.pack("<I", len(webp) - 8)
    frames = [Image.fromarray(smooth_image((96, 128, 3), seed=s)).convert("P") for s in range(3)]
    animation = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    files = {
        "short_idat.png": png[:at - 4] + chunk(b"IDAT", idat[:len(idat) // 2]) + chunk(b"IEND", b""),
        "short_lzw.gif": gif[:descriptor + 11] + b"".join(blocks[:len(blocks) // 2]) + b"\x00\x3b",
        "cut.webp": bytes(webp),
        "cut_animation.gif": animation[:int(len(animation) * 0.55)] + b"\x00\x3b",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = run_downpool("shrink", *(tmp_path / n for n in files), "-o", tmp_path / "out",
                          "--method", "avg", "-j", "1")
    no_traceback(result)
    assert result.returncode == 1
    errors = _errors(result)
    assert set(errors) == set(files), result.stderr
    for name, cause in errors.items():
        assert "truncated" in cause or "corrupt" in cause, (name, cause)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
