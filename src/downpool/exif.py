"""Metadata blocks carried from an input file to its output: EXIF, XMP and IPTC.

An EXIF block is kept as the bytes it came in, with its orientation (and its
pixel dimensions) patched where they are stored.  Decoding it into tags and
encoding it again, as Pillow would, loses the whole block when one odd tag
will not re-encode (a resolution stored as text, say), and can break maker
notes whose offsets point into the block; patching changes only the values.

XMP may repeat the orientation and the pixel dimensions; they are patched in
its text.  IPTC-IIM travels as its raw records, in the containers JPEG
(Photoshop's APP13 segment) and TIFF (tag 33723) give it.
"""

from __future__ import annotations

import re
import struct
from typing import Any, BinaryIO

__all__ = ["EXIF_PREFIX", "patch_exif", "patch_xmp", "iptc_from_photoshop",
           "photoshop_app13", "extend_tiff_first_ifd"]

EXIF_PREFIX = b"Exif\x00\x00"

_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
_SHORT, _LONG = 3, 4
_MAX_ENTRIES = 4096

_IPTC_RESOURCE = 0x0404
_PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"


class _Tiff:
    """Bounds-checked reads and writes of a TIFF structure (an EXIF block) in a bytearray."""

    def __init__(self, data: bytearray):
        self.data = data
        if data[:4] == b"II*\x00":
            self.order = "<"
        elif data[:4] == b"MM\x00*":
            self.order = ">"
        else:
            raise ValueError("no TIFF header")

    def unpack(self, fmt: str, offset: int) -> Any:
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > len(self.data):
            raise ValueError("offset outside the block")
        return struct.unpack_from(self.order + fmt, self.data, offset)[0]

    def entries(self, ifd: int) -> dict[int, tuple[int, int, int]]:
        """tag -> (entry offset, type, count) of the IFD at ``ifd``."""
        count = self.unpack("H", ifd)
        if count > _MAX_ENTRIES:
            raise ValueError("implausible IFD")
        found = {}
        for i in range(count):
            entry = ifd + 2 + 12 * i
            tag, kind, n = self.unpack("H", entry), self.unpack("H", entry + 2), self.unpack("I", entry + 4)
            found[tag] = (entry, kind, n)
        return found

    def set_number(self, entry: tuple[int, int, int], value: int) -> None:
        offset, kind, count = entry
        if count != 1 or kind not in (_SHORT, _LONG) or (kind == _SHORT and value > 0xFFFF):
            raise ValueError("not a single SHORT or LONG")
        packed = struct.pack(self.order + ("H" if kind == _SHORT else "I"), value)
        self.data[offset + 8:offset + 8 + len(packed)] = packed


def patch_exif(block: bytes, *, orientation: int | None = None,
               pixel_size: tuple[int, int] | None = None) -> bytes | None:
    """``block`` with its orientation and Exif pixel dimensions set, the rest byte for byte.

    Parameters
    ----------
    block : bytes
        An EXIF block: a TIFF structure, with or without the ``Exif\\0\\0`` prefix.
    orientation : int, optional
        The new IFD0 orientation; a block without one needs none.
    pixel_size : (int, int), optional
        (width, height) for the Exif IFD's PixelXDimension and
        PixelYDimension, where the block has them.

    Returns
    -------
    bytes or None
        The patched block, with the ``Exif\\0\\0`` prefix; None where the block
        is malformed or stores the orientation in a form that cannot be patched.
    """
    body = bytearray(block[len(EXIF_PREFIX):] if block.startswith(EXIF_PREFIX) else block)
    try:
        tiff = _Tiff(body)
        ifd0 = tiff.entries(tiff.unpack("I", 4))
        if orientation is not None and _ORIENTATION in ifd0:
            tiff.set_number(ifd0[_ORIENTATION], orientation)
        if pixel_size is not None and _EXIF_IFD in ifd0:
            exif_ifd = tiff.entries(tiff.unpack("I", ifd0[_EXIF_IFD][0] + 8))
            for tag, value in ((_PIXEL_X, pixel_size[0]), (_PIXEL_Y, pixel_size[1])):
                if tag in exif_ifd:
                    try:
                        tiff.set_number(exif_ifd[tag], value)
                    except ValueError:
                        pass  # an odd dimension tag: left as it was, not worth the block
    except (ValueError, struct.error):
        return None
    return EXIF_PREFIX + bytes(body)


# XMP states the orientation as tiff:Orientation and the pixel size as
# exif:PixelXDimension / PixelYDimension, as an attribute or as an element.
_XMP_FIELDS = {"orientation": b"tiff:Orientation", "width": b"exif:PixelXDimension",
               "height": b"exif:PixelYDimension"}


def patch_xmp(xmp: bytes, *, orientation: int | None = None,
              pixel_size: tuple[int, int] | None = None) -> bytes:
    """``xmp`` with its orientation and pixel dimensions, where present, set to the given values."""
    values = {"orientation": orientation}
    if pixel_size is not None:
        values["width"], values["height"] = pixel_size
    for key, name in _XMP_FIELDS.items():
        value = values.get(key)
        if value is None:
            continue
        number = str(int(value)).encode()
        xmp = re.sub(rb"(" + re.escape(name) + rb"\s*=\s*[\"'])\s*\d+\s*([\"'])",
                     lambda m: m[1] + number + m[2], xmp)
        xmp = re.sub(rb"(<" + re.escape(name) + rb">)\s*\d+\s*(</" + re.escape(name) + rb">)",
                     lambda m: m[1] + number + m[2], xmp)
    return xmp


def iptc_from_photoshop(resources: Any) -> bytes | None:
    """The IPTC-IIM records from Pillow's parsed Photoshop resources (``info["photoshop"]``)."""
    if isinstance(resources, dict):
        data = resources.get(_IPTC_RESOURCE)
        if isinstance(data, (bytes, bytearray)) and data:
            return bytes(data)
    return None


def photoshop_app13(iptc: bytes) -> bytes:
    """A JPEG APP13 segment (marker included) holding ``iptc`` as Photoshop's IPTC resource."""
    padded = iptc + (b"\0" if len(iptc) % 2 else b"")
    resource = b"8BIM" + struct.pack(">H", _IPTC_RESOURCE) + b"\0\0" + struct.pack(">I", len(iptc)) + padded
    payload = _PHOTOSHOP_HEADER + resource
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("IPTC data too long for one JPEG segment")
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def extend_tiff_first_ifd(stream: BinaryIO, tags: Any, sub_ifds: dict[int, dict[int, Any]]) -> None:
    """Add tags and Exif/GPS sub-IFDs to the first IFD of the TIFF file in ``stream``.

    libvips and libtiff, which write the pixels, have no place for EXIF's
    descriptive tags and sub-IFDs.  They are appended to the finished file,
    with a copy of its first IFD that has them; the header then points at
    the copy, and the old IFD stays as unused bytes.  Every other value keeps
    its offset, so nothing else moves, and only the end of the file is
    written: a big file is not read back.

    Parameters
    ----------
    stream : binary file
        A classic (not Big) TIFF file, seekable, readable and writable.
    tags : PIL.TiffImagePlugin.ImageFileDirectory_v2
        First-IFD tags to add (they replace tags of the same number).
    sub_ifds : dict
        Pointer tag (0x8769 Exif, 0x8825 GPS) -> that IFD's tags and values,
        as Pillow's ``Image.Exif.get_ifd`` gives them.
    """
    from PIL import TiffImagePlugin

    stream.seek(0)
    header = stream.read(8)
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(header[:4])
    if order is None or len(header) < 8:
        raise ValueError("not a classic TIFF file")
    # Encoded once first, so that a tag that will not encode raises before
    # anything is written.
    ours = TiffImagePlugin.ImageFileDirectory_v2(prefix=header[:2])  # the file's byte order
    for tag in tags:
        ours[tag] = tags[tag]
        ours.tagtype[tag] = tags.tagtype[tag]
    subs = {}
    for tag, values in sub_ifds.items():
        if values:
            subs[tag] = TiffImagePlugin.ImageFileDirectory_v2(prefix=header[:2])
            for key, value in values.items():
                subs[tag][key] = value
    for ifd in (ours, *subs.values()):
        ifd.tobytes(0)
    first = struct.unpack(order + "I", header[4:8])[0]
    stream.seek(first)
    count = struct.unpack(order + "H", stream.read(2))[0]
    table = stream.read(12 * count + 4)
    entries = {struct.unpack_from(order + "H", table, 12 * i)[0]: table[12 * i:12 * i + 12]
               for i in range(count)}
    next_ifd = table[12 * count:]
    end = stream.seek(0, 2)

    def append(ifd: Any) -> tuple[int, bytes]:
        """Write ``ifd`` (with its values) at the end: its offset and its entries."""
        nonlocal end
        if end % 2:
            stream.write(b"\0")
            end += 1
        block = ifd.tobytes(end)
        stream.write(block)
        offset, end = end, end + len(block)
        n = struct.unpack_from(order + "H", block)[0]
        return offset, block[2:2 + 12 * n]

    if len(ours):
        _, added = append(ours)
        for i in range(0, len(added), 12):
            entries[struct.unpack_from(order + "H", added, i)[0]] = added[i:i + 12]
    for tag, ifd in subs.items():
        offset, _ = append(ifd)
        entries[tag] = struct.pack(order + "HHII", tag, _LONG, 1, offset)
    if end % 2:
        stream.write(b"\0")
        end += 1
    stream.write(struct.pack(order + "H", len(entries)))
    stream.write(b"".join(entries[tag] for tag in sorted(entries)) + next_ifd)
    stream.seek(4)
    stream.write(struct.pack(order + "I", end))
    stream.seek(0, 2)
