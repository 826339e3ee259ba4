"""hazefree.io.png_format (pypng): chunk checks with their messages, the 16-bit gray + alpha encoder
against a decoder written from the PNG specification, and the embedded ICC profile."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from hazefree.io import ImageReadError, read_image, write_image
from hazefree.io.png_format import encode_gray_alpha_16, insert_iccp


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk, by the specification's layout: length, type, body, CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(ctype + body)
        out.append((ctype, body))
        pos += 12 + length
    return out


def _png16(tmp_path, channels: int = 3):
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    write_image(path, torch.from_numpy(rng.random((1, 3, 40, 50), dtype=np.float32)), bit_depth=16)
    return path, path.read_bytes()


def _error(path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    return str(info.value)


class TestChunkChecks:
    def test_bad_crc(self, tmp_path):
        path, data = _png16(tmp_path)
        idat = data.index(b"IDAT")
        broken = bytearray(data)
        broken[idat + 10] ^= 0xFF  # a byte of the compressed pixels: the CRC no longer matches
        path.write_bytes(bytes(broken))
        assert _error(path) == f"{path}: corrupt PNG data (bad CRC in a IDAT chunk)"

    def test_cut_inside_a_chunk(self, tmp_path):
        path, data = _png16(tmp_path)
        path.write_bytes(data[: data.index(b"IDAT") + 20])
        assert _error(path) == f"{path}: truncated PNG data (the IDAT chunk is cut off)"

    def test_cut_before_iend(self, tmp_path):
        path, data = _png16(tmp_path)
        path.write_bytes(data[: data.index(b"IEND") - 4])  # every chunk whole, IEND missing
        assert _error(path) == f"{path}: truncated PNG data (the file ends before the IEND chunk)"

    def test_bad_signature(self, tmp_path):
        path, data = _png16(tmp_path)
        path.write_bytes(data[:4] + b"\x00\x00\x00\x00" + data[8:])
        assert "corrupt PNG" in _error(path)


def test_gray_alpha_16_against_the_specification():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 65536, (7, 5, 2), dtype=np.uint16)
    chunks = _chunks(encode_gray_alpha_16(pixels))
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour_type, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour_type) == (5, 7, 16, 4)  # 16-bit gray + alpha
    raw = zlib.decompress(b"".join(body for ctype, body in chunks if ctype == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(7, 1 + 5 * 2 * 2)
    assert (rows[:, 0] == 0).all()  # filter type 0 (none): the samples follow as they are
    decoded = rows[:, 1:].copy().view(">u2").reshape(7, 5, 2)
    np.testing.assert_array_equal(decoded, pixels)


def test_iccp_inserted_after_ihdr_and_read_by_pillow(tmp_path):
    path, data = _png16(tmp_path)
    icc = bytes(range(256)) * 3
    out = insert_iccp(data, icc)
    chunks = _chunks(out)
    assert [c for c, _ in chunks[:2]] == [b"IHDR", b"iCCP"]
    name, rest = chunks[1][1].split(b"\x00", 1)
    assert name == b"ICC profile" and rest[0] == 0 and zlib.decompress(rest[1:]) == icc
    assert [c for c in chunks if c[0] != b"iCCP"] == _chunks(data)  # nothing else changed
    path.write_bytes(out)
    with Image.open(path) as im:
        assert im.info["icc_profile"] == icc
