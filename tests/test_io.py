"""Tests for hazefree.io: decoding every supported format/mode/bit depth, errors, atomic writes."""

from __future__ import annotations

import io as _io
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import SHARED_DATA
from PIL import Image, ImageOps

from hazefree import io as hio
from hazefree.io import (
    DEFAULT_MAX_PIXELS,
    ImageData,
    ImageReadError,
    ImageReadWarning,
    find_images,
    output_path_for,
    read_image,
    transmission_path_for,
    write_image,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _u8(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _u16(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 65536, (h, w, c), dtype=np.uint16)


def _hwc(t: torch.Tensor) -> np.ndarray:
    """1 x C x H x W tensor -> H x W x C array."""
    return t[0].permute(1, 2, 0).numpy()


def _levels(t: torch.Tensor, top: int) -> np.ndarray:
    """Tensor in [0, 1] -> integer levels (exact for values read from a file)."""
    return np.rint(_hwc(t).astype(np.float64) * top).astype(np.int64)


def _cv2_write(path: Path, rgb_or_gray: np.ndarray) -> Path:
    """Write with OpenCV (the only encoder here that writes 16-bit colour); input is RGB(A)/gray."""
    a = rgb_or_gray
    if a.ndim == 3 and a.shape[2] >= 3:
        a = a[:, :, [2, 1, 0, 3][: a.shape[2]]]
    ok, data = cv2.imencode(path.suffix, np.ascontiguousarray(a))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _insert_chunk_after_ihdr(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]


def _exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# ------------------------------------------------------------------------------ 8-bit round trips


class TestRead8Bit:
    @pytest.mark.parametrize("ext", [".png", ".tif", ".bmp", ".webp"])
    def test_lossless_rgb_exact(self, tmp_path, ext):
        pixels = _u8(7, 5, 3)
        path = tmp_path / f"a{ext}"
        options = {"lossless": True} if ext == ".webp" else {}
        Image.fromarray(pixels).save(path, **options)
        img = read_image(path)
        assert img.rgb.shape == (1, 3, 7, 5) and img.rgb.dtype == torch.float32
        assert img.bit_depth == 8 and not img.gray and img.alpha is None
        assert img.format == {".png": "PNG", ".tif": "TIFF", ".bmp": "BMP", ".webp": "WEBP"}[ext]
        np.testing.assert_array_equal(_levels(img.rgb, 255), pixels)

    @pytest.mark.parametrize("ext,fmt", [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
    def test_lossy_matches_pillow_decode(self, tmp_path, ext, fmt):
        path = tmp_path / f"a{ext}"
        Image.fromarray(_u8(16, 24, 3)).save(path, quality=90)
        img = read_image(path)
        assert img.format == fmt and img.rgb.shape == (1, 3, 16, 24)
        np.testing.assert_array_equal(_levels(img.rgb, 255), np.asarray(Image.open(path).convert("RGB")))

    @pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp"])
    def test_gray_8bit(self, tmp_path, ext):
        gray = _u8(6, 9, 1)[:, :, 0]
        path = tmp_path / f"g{ext}"
        Image.fromarray(gray).save(path)
        img = read_image(path)
        assert img.gray and img.bit_depth == 8 and img.rgb.shape == (1, 3, 6, 9)
        expected = np.asarray(Image.open(path))
        for c in range(3):  # gray is repeated over the three channels
            np.testing.assert_array_equal(_levels(img.rgb, 255)[:, :, c], expected)

    def test_bilevel_png_is_gray(self, tmp_path):
        bits = _u8(5, 11, 1)[:, :, 0] > 127
        Image.fromarray(bits).save(tmp_path / "b.png")
        img = read_image(tmp_path / "b.png")
        assert img.gray and img.bit_depth == 8
        np.testing.assert_array_equal(_levels(img.rgb, 255)[:, :, 0], bits * 255)

    def test_rgba_alpha_exact(self, tmp_path):
        pixels = _u8(4, 6, 4)
        Image.fromarray(pixels).save(tmp_path / "a.png")
        img = read_image(tmp_path / "a.png")
        assert img.alpha.shape == (1, 1, 4, 6) and img.alpha.dtype == torch.float32
        np.testing.assert_array_equal(_levels(img.alpha, 255)[:, :, 0], pixels[:, :, 3])
        np.testing.assert_array_equal(_levels(img.rgb, 255), pixels[:, :, :3])

    def test_gray_alpha(self, tmp_path):
        pixels = _u8(4, 6, 2)
        Image.fromarray(pixels).save(tmp_path / "la.png")
        img = read_image(tmp_path / "la.png")
        assert img.gray and img.alpha is not None
        np.testing.assert_array_equal(_levels(img.alpha, 255)[:, :, 0], pixels[:, :, 1])
        np.testing.assert_array_equal(_levels(img.rgb, 255)[:, :, 1], pixels[:, :, 0])

    def test_palette_png_becomes_rgb(self, tmp_path):
        im = Image.fromarray(_u8(8, 8, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        im.save(tmp_path / "p.png")
        img = read_image(tmp_path / "p.png")
        assert not img.gray and img.alpha is None
        np.testing.assert_array_equal(_levels(img.rgb, 255), np.asarray(im.convert("RGB")))

    def test_palette_with_transparency_becomes_rgba(self, tmp_path):
        im = Image.fromarray(_u8(8, 8, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        index = np.asarray(im)[0, 0]
        im.save(tmp_path / "p.png", transparency=int(index))
        img = read_image(tmp_path / "p.png")
        assert img.alpha is not None
        alpha = _levels(img.alpha, 255)[:, :, 0]
        np.testing.assert_array_equal(alpha == 0, np.asarray(im) == index)

    def test_rgb_colour_key_becomes_alpha(self, tmp_path):
        pixels = _u8(5, 5, 3)
        key = tuple(int(v) for v in pixels[2, 3])
        Image.fromarray(pixels).save(tmp_path / "t.png", transparency=key)
        img = read_image(tmp_path / "t.png")
        assert img.alpha is not None and _levels(img.alpha, 255)[2, 3, 0] == 0
        assert (_levels(img.alpha, 255) == 0).sum() == (pixels == key).all(axis=2).sum()

    def test_cmyk_jpeg_becomes_rgb(self, tmp_path):
        cmyk = Image.fromarray(_u8(10, 12, 3)).convert("CMYK")
        cmyk.save(tmp_path / "c.jpg", quality=95)
        img = read_image(tmp_path / "c.jpg")
        assert img.rgb.shape == (1, 3, 10, 12) and not img.gray
        expected = np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB"))
        np.testing.assert_array_equal(_levels(img.rgb, 255), expected)

    def test_exif_rotated_jpeg(self, tmp_path):
        # Orientation 6: the stored 10 x 4 (w x h) image is displayed rotated 90 degrees clockwise.
        Image.fromarray(_u8(4, 10, 3)).save(tmp_path / "r.jpg", exif=_exif_bytes(6), quality=95)
        img = read_image(tmp_path / "r.jpg")
        assert img.rgb.shape == (1, 3, 10, 4)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "r.jpg")))
        np.testing.assert_array_equal(_levels(img.rgb, 255), expected)

    @pytest.mark.parametrize("orientation", range(1, 9))
    def test_every_exif_orientation_matches_pillow(self, tmp_path, orientation):
        Image.fromarray(_u8(3, 5, 3)).save(tmp_path / "o.png", exif=_exif_bytes(orientation))
        img = read_image(tmp_path / "o.png")
        expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
        np.testing.assert_array_equal(_levels(img.rgb, 255), expected)

    def test_animated_gif_first_frame_with_warning(self, tmp_path):
        frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
        frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
        with pytest.warns(ImageReadWarning, match="2 frames"):
            img = read_image(tmp_path / "anim.gif")
        assert img.format == "GIF" and img.rgb.shape == (1, 3, 4, 6)
        np.testing.assert_array_equal(_levels(img.rgb, 255)[0, 0], [255, 0, 0])

    def test_still_gif_no_warning(self, tmp_path):
        Image.new("RGB", (3, 3), (0, 255, 0)).save(tmp_path / "still.gif")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            img = read_image(tmp_path / "still.gif")
        np.testing.assert_array_equal(_levels(img.rgb, 255)[1, 1], [0, 255, 0])

    def test_icc_profile_kept(self, tmp_path):
        icc = b"not-a-real-profile-but-opaque-bytes" * 3
        Image.fromarray(_u8(4, 4, 3)).save(tmp_path / "i.png", icc_profile=icc)
        assert read_image(tmp_path / "i.png").icc_profile == icc


# ------------------------------------------------------------------------------ 16-bit round trips


class TestRead16Bit:
    @pytest.mark.parametrize("ext", [".png", ".tif"])
    @pytest.mark.parametrize("channels", [3, 4])
    def test_16bit_colour_exact(self, tmp_path, ext, channels):
        pixels = _u16(5, 7, channels)
        img = read_image(_cv2_write(tmp_path / f"a{ext}", pixels))
        assert img.bit_depth == 16 and not img.gray and img.rgb.dtype == torch.float32
        np.testing.assert_array_equal(_levels(img.rgb, 65535), pixels[:, :, :3])
        if channels == 4:
            np.testing.assert_array_equal(_levels(img.alpha, 65535)[:, :, 0], pixels[:, :, 3])
        else:
            assert img.alpha is None

    @pytest.mark.parametrize("ext", [".png", ".tif"])
    def test_16bit_gray_exact(self, tmp_path, ext):
        gray = _u16(6, 3, 1)[:, :, 0]
        img = read_image(_cv2_write(tmp_path / f"g{ext}", gray))
        assert img.bit_depth == 16 and img.gray and img.alpha is None
        for c in range(3):
            np.testing.assert_array_equal(_levels(img.rgb, 65535)[:, :, c], gray)

    def test_16bit_gray_pillow_written(self, tmp_path):
        gray = _u16(4, 5, 1)[:, :, 0]
        Image.fromarray(gray).save(tmp_path / "g.png")  # mode I;16
        img = read_image(tmp_path / "g.png")
        assert img.bit_depth == 16 and img.gray
        np.testing.assert_array_equal(_levels(img.rgb, 65535)[:, :, 0], gray)

    def test_16bit_gray_alpha_round_trip(self, tmp_path):
        pixels = _u16(3, 4, 2)
        rgb = torch.from_numpy(pixels[:, :, 0].astype(np.float32) / 65535)[None, None].expand(1, 3, -1, -1)
        alpha = torch.from_numpy(pixels[:, :, 1].astype(np.float32) / 65535)[None, None]
        path = write_image(tmp_path / "la.png", rgb, alpha, bit_depth=16, gray=True)
        data = path.read_bytes()
        assert data[24] == 16 and data[25] == 4  # IHDR: 16-bit, colour type 4 (gray + alpha)
        img = read_image(path)
        assert img.gray and img.bit_depth == 16
        np.testing.assert_array_equal(_levels(img.rgb, 65535)[:, :, 0], pixels[:, :, 0])
        np.testing.assert_array_equal(_levels(img.alpha, 65535)[:, :, 0], pixels[:, :, 1])

    def test_16bit_png_exif_orientation(self, tmp_path):
        pixels = _u16(2, 5, 3)
        png = _cv2_write(tmp_path / "a.png", pixels).read_bytes()
        (tmp_path / "r.png").write_bytes(_insert_chunk_after_ihdr(png, _png_chunk(b"eXIf", _exif_bytes(6))))
        img = read_image(tmp_path / "r.png")
        assert img.bit_depth == 16 and img.rgb.shape == (1, 3, 5, 2)
        np.testing.assert_array_equal(_levels(img.rgb, 65535), np.rot90(pixels, -1))

    def test_real_16bit_depth_png(self):
        path = SHARED_DATA / "rgbd_sensor" / "depth" / "esanet_sample.png"
        if not path.is_file():
            pytest.skip("shared data not available")
        img = read_image(path)
        assert img.bit_depth == 16 and img.gray and img.rgb.shape == (1, 3, 424, 512)
        np.testing.assert_array_equal(_levels(img.rgb, 65535)[:, :, 0], np.asarray(Image.open(path)))


# ----------------------------------------------------------------------------------------- errors


class TestReadErrors:
    def _error(self, path, **kwargs) -> str:
        with pytest.raises(ImageReadError) as info:
            read_image(path, **kwargs)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert isinstance(info.value, ValueError)
        return message

    def test_missing(self, tmp_path):
        assert "no such file" in self._error(tmp_path / "nope.png")

    def test_directory(self, tmp_path):
        assert "directory" in self._error(tmp_path)

    def test_zero_bytes(self, tmp_path):
        (tmp_path / "empty.png").write_bytes(b"")
        assert "empty file" in self._error(tmp_path / "empty.png")

    def test_text_named_jpg(self, tmp_path):
        (tmp_path / "notes.jpg").write_text("this is not a picture\n")
        assert "not an image file" in self._error(tmp_path / "notes.jpg")

    @pytest.mark.parametrize(
        "head,fmt", [(b"\x89PNG\r\n\x1a\n\x00\x00", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF89a", "GIF")]
    )
    def test_truncated_header(self, tmp_path, head, fmt):
        (tmp_path / "h.img").write_bytes(head)
        assert f"truncated or corrupt {fmt} header" in self._error(tmp_path / "h.img")

    def test_unsupported_format(self, tmp_path):
        Image.fromarray(_u8(4, 4, 3)).save(tmp_path / "a.ppm")
        assert "unsupported image format PPM" in self._error(tmp_path / "a.ppm")

    @pytest.mark.parametrize("ext", [".png", ".jpg"])
    def test_truncated_8bit(self, tmp_path, ext):
        buf = _io.BytesIO()
        Image.fromarray(_u8(64, 64, 3)).save(buf, format="PNG" if ext == ".png" else "JPEG")
        data = buf.getvalue()
        (tmp_path / f"t{ext}").write_bytes(data[: len(data) // 2])
        assert "truncated" in self._error(tmp_path / f"t{ext}")

    def test_truncated_16bit_png(self, tmp_path):
        data = _cv2_write(tmp_path / "a.png", _u16(32, 32, 3)).read_bytes()
        (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
        assert "truncated" in self._error(tmp_path / "t.png")

    def test_corrupt_16bit_png_crc(self, tmp_path):
        data = bytearray(_cv2_write(tmp_path / "a.png", _u16(32, 32, 3)).read_bytes())
        data[60] ^= 0xFF  # inside the IDAT payload
        (tmp_path / "c.png").write_bytes(bytes(data))
        assert "corrupt" in self._error(tmp_path / "c.png")

    def test_32bit_float_tiff_refused(self, tmp_path):
        Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / "f.tif")
        assert "floating-point" in self._error(tmp_path / "f.tif")

    @staticmethod
    def _bomb(path: Path, width: int, height: int) -> Path:
        """A PNG of a few dozen bytes whose header claims width x height pixels."""
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\0" * 64)
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b"")
        )
        return path

    def test_decompression_bomb_refused_from_header(self, tmp_path):
        path = self._bomb(tmp_path / "bomb.png", 50_000, 50_000)
        message = self._error(path)
        assert "2,500,000,000 pixels" in message and f"{DEFAULT_MAX_PIXELS:,}" in message

    def test_small_max_pixels(self, tmp_path):
        Image.fromarray(_u8(10, 10, 3)).save(tmp_path / "a.png")
        assert "more than the limit of 99" in self._error(tmp_path / "a.png", max_pixels=99)
        assert read_image(tmp_path / "a.png", max_pixels=100).rgb.shape == (1, 3, 10, 10)
        assert read_image(tmp_path / "a.png", max_pixels=None).rgb.shape == (1, 3, 10, 10)

    def test_pillow_limit_does_not_preempt_ours(self, tmp_path):
        # 190 MP: above Pillow's own error threshold (~179 MP) but below our default limit, so the
        # file gets past the size check and fails as the corrupt file it is, not as a "bomb".
        saved = Image.MAX_IMAGE_PIXELS
        path = self._bomb(tmp_path / "big.png", 19_000, 10_000)
        message = self._error(path)
        assert "truncated" in message and "pixels" not in message
        assert Image.MAX_IMAGE_PIXELS == saved  # restored after reading

    def test_error_is_picklable(self):
        import pickle

        err = pickle.loads(pickle.dumps(ImageReadError("a.png", "broken")))
        assert str(err) == "a.png: broken" and err.problem == "broken"


# ---------------------------------------------------------------------------------------- writing


def _tensor(pixels: np.ndarray, top: int) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / top).permute(2, 0, 1)[None]


class TestWrite:
    @pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
    def test_lossless_8bit_round_trip(self, tmp_path, ext):
        pixels = _u8(5, 9, 3)
        write_image(tmp_path / f"a{ext}", _tensor(pixels, 255))
        img = read_image(tmp_path / f"a{ext}")
        assert img.bit_depth == 8
        np.testing.assert_array_equal(_levels(img.rgb, 255), pixels)

    @pytest.mark.parametrize("ext", [".jpg", ".webp"])
    def test_lossy_8bit_close(self, tmp_path, ext):
        smooth = np.linspace(0, 1, 32 * 32 * 3, dtype=np.float32).reshape(1, 3, 32, 32)
        write_image(tmp_path / f"a{ext}", torch.from_numpy(smooth))
        img = read_image(tmp_path / f"a{ext}")
        assert img.rgb.shape == (1, 3, 32, 32)
        assert (img.rgb - torch.from_numpy(smooth)).abs().mean() < 0.02

    @pytest.mark.parametrize("ext", [".png", ".tif"])
    @pytest.mark.parametrize("channels", [3, 4])
    def test_16bit_kept(self, tmp_path, ext, channels):
        pixels = _u16(6, 4, channels)
        alpha = _tensor(pixels[:, :, 3:], 65535) if channels == 4 else None
        write_image(tmp_path / f"a{ext}", _tensor(pixels[:, :, :3], 65535), alpha, bit_depth=16)
        raw = cv2.imdecode(np.fromfile(tmp_path / f"a{ext}", np.uint8), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        img = read_image(tmp_path / f"a{ext}")
        assert img.bit_depth == 16
        np.testing.assert_array_equal(_levels(img.rgb, 65535), pixels[:, :, :3])
        if channels == 4:
            np.testing.assert_array_equal(_levels(img.alpha, 65535)[:, :, 0], pixels[:, :, 3])

    @pytest.mark.parametrize("ext", [".png", ".tif"])
    def test_16bit_gray_kept(self, tmp_path, ext):
        gray = _u16(5, 5, 1)
        write_image(tmp_path / f"g{ext}", _tensor(gray, 65535), bit_depth=16, gray=True)
        raw = cv2.imdecode(np.fromfile(tmp_path / f"g{ext}", np.uint8), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.ndim == 2
        np.testing.assert_array_equal(raw, gray[:, :, 0])

    @pytest.mark.parametrize("ext", [".jpg", ".webp", ".bmp"])
    def test_16bit_to_8bit_formats(self, tmp_path, ext):
        write_image(tmp_path / f"a{ext}", torch.full((1, 3, 4, 4), 0.5), bit_depth=16)
        img = read_image(tmp_path / f"a{ext}")
        assert img.bit_depth == 8
        assert abs(float(img.rgb.mean()) - 128 / 255) < 2 / 255

    @pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp"])
    def test_gray_written_as_one_channel(self, tmp_path, ext):
        gray = _u8(4, 6, 1)
        rgb = _tensor(np.repeat(gray, 3, axis=2), 255)
        write_image(tmp_path / f"g{ext}", rgb, gray=True)
        with Image.open(tmp_path / f"g{ext}") as im:
            assert im.mode == "L"
        img = read_image(tmp_path / f"g{ext}")
        assert img.gray
        if ext != ".jpg":
            np.testing.assert_array_equal(_levels(img.rgb, 255)[:, :, 0], gray[:, :, 0])

    @pytest.mark.parametrize("ext", [".png", ".tif", ".webp", ".bmp"])
    @pytest.mark.parametrize("gray", [False, True])
    def test_alpha_exact(self, tmp_path, ext, gray):
        pixels = _u8(5, 6, 4)
        alpha = _tensor(pixels[:, :, 3:], 255)
        options = {}
        write_image(tmp_path / f"a{ext}", _tensor(pixels[:, :, :3], 255), alpha, gray=gray, **options)
        img = read_image(tmp_path / f"a{ext}")
        if ext == ".webp":  # lossy colour, but alpha is stored losslessly by WebP
            assert img.alpha is not None
        np.testing.assert_array_equal(_levels(img.alpha, 255)[:, :, 0], pixels[:, :, 3])

    def test_rounding_to_nearest_and_clipping(self, tmp_path):
        values = torch.tensor([[[[10.49 / 255, 10.51 / 255, -0.3, 1.7]]]]).expand(1, 3, 1, 4)
        write_image(tmp_path / "r.png", values)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png"))[0, :, 0], [10, 11, 0, 255])

    def test_size_kept_and_numpy_input(self, tmp_path):
        write_image(tmp_path / "n.png", np.zeros((3, 1, 5000), np.float32))
        assert Image.open(tmp_path / "n.png").size == (5000, 1)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite_refused(self, tmp_path, bad):
        x = torch.rand(1, 3, 4, 4)
        x[0, 1, 2, 3] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            write_image(tmp_path / "x.png", x)
        a = torch.rand(1, 1, 4, 4)
        a[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="alpha contains NaN or Inf"):
            write_image(tmp_path / "x.png", torch.rand(1, 3, 4, 4), a)
        assert not (tmp_path / "x.png").exists()

    @pytest.mark.parametrize(
        ("name", "image", "kwargs", "error", "match"),
        [
            ("x.png", (1, 2, 4, 4), {}, ValueError, "channels"),
            ("x.png", (2, 3, 4, 4), {}, ValueError, "one image"),
            ("x.png", (1, 3, 4, 4), {"alpha": (1, 1, 4, 5)}, ValueError, "alpha must be"),
            ("x.png", None, {}, TypeError, None),
            ("x.png", (1, 3, 4, 4), {"bit_depth": 12}, ValueError, "bit_depth"),
            ("x.xyz", (1, 3, 4, 4), {}, ValueError, "extension"),
            ("x.gif", (1, 3, 4, 4), {}, ValueError, "GIF"),
            ("x.jpg", (1, 3, 4, 4), {"alpha": (1, 1, 4, 4)}, ValueError, "alpha"),
        ],
    )
    def test_input_checks(self, tmp_path, name, image, kwargs, error, match):
        image = [[0.5]] if image is None else torch.rand(*image)
        kwargs = {k: torch.rand(*v) if k == "alpha" else v for k, v in kwargs.items()}
        with pytest.raises(error, match=match):
            write_image(tmp_path / name, image, **kwargs)
        assert list(tmp_path.iterdir()) == []

    def test_explicit_format(self, tmp_path):
        write_image(tmp_path / "x.dat", torch.rand(1, 3, 4, 4), format="png")
        assert read_image(tmp_path / "x.dat").format == "PNG"

    @pytest.mark.parametrize("ext,bit_depth", [(".png", 8), (".png", 16), (".jpg", 8)])
    def test_icc_profile_written(self, tmp_path, ext, bit_depth):
        icc = b"opaque icc profile bytes" * 4
        write_image(tmp_path / f"a{ext}", torch.rand(1, 3, 4, 4), bit_depth=bit_depth, icc_profile=icc)
        img = read_image(tmp_path / f"a{ext}")
        assert img.icc_profile == icc and img.bit_depth == bit_depth


class TestAtomicWrite:
    def test_no_temp_files_left(self, tmp_path):
        write_image(tmp_path / "sub" / "a.png", torch.rand(1, 3, 4, 4))
        write_image(tmp_path / "sub" / "a.png", torch.rand(1, 3, 4, 4))  # replace
        assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]

    def test_failure_leaves_target_untouched(self, tmp_path, monkeypatch):
        target = tmp_path / "a.png"
        write_image(target, torch.zeros(1, 3, 4, 4))
        before = target.read_bytes()

        def disk_full(fd):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", disk_full)  # fails after the new data has been written
        with pytest.raises(OSError, match="No space"):
            write_image(target, torch.ones(1, 3, 4, 4))
        assert target.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["a.png"]

    def test_failed_rename_leaves_no_partial_file(self, tmp_path, monkeypatch):
        def refuse(src, dst):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(PermissionError):
            write_image(tmp_path / "new.png", torch.zeros(1, 3, 4, 4))
        assert list(tmp_path.iterdir()) == []

    def test_permissions_follow_umask(self, tmp_path):
        if os.name != "posix":
            pytest.skip("POSIX permissions")
        mask = os.umask(0o022)
        try:
            write_image(tmp_path / "a.png", torch.zeros(1, 3, 2, 2))
        finally:
            os.umask(mask)
        assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644

    def test_weights_module_uses_the_same_helper(self):
        from hazefree.models import weights

        assert weights.atomic_write is hio.atomic_write


# ------------------------------------------------------------------------------- finding, naming


class TestFindImages:
    def _tree(self, root: Path) -> None:
        names = ["b.png", "a.JPG", "sub/c.TiFf", "sub/deeper/d.webp", "notes.txt", ".hidden.png"]
        names.append(".git/e.png")
        for rel in names:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"x")

    def test_recursive_sorted_case_insensitive(self, tmp_path):
        self._tree(tmp_path)
        found = find_images([tmp_path])
        assert [f.relative_to(tmp_path).as_posix() for f, _ in found] == [
            "a.JPG", "b.png", "sub/c.TiFf", "sub/deeper/d.webp"
        ]
        assert all(root == tmp_path for _, root in found)

    def test_not_recursive(self, tmp_path):
        self._tree(tmp_path)
        assert [f.name for f, _ in find_images([tmp_path], recursive=False)] == ["a.JPG", "b.png"]

    def test_files_taken_as_given_and_deduplicated(self, tmp_path):
        self._tree(tmp_path)
        found = find_images([tmp_path / "notes.txt", tmp_path / "b.png", tmp_path])
        assert found[0] == (tmp_path / "notes.txt", tmp_path)
        assert [f.name for f, _ in found].count("b.png") == 1 and len(found) == 5

    def test_exclude(self, tmp_path):
        self._tree(tmp_path)
        found = find_images([tmp_path], exclude=[tmp_path / "sub"])
        assert [f.name for f, _ in found] == ["a.JPG", "b.png"]

    def test_empty_folder_is_an_error(self, tmp_path):
        (tmp_path / "only.txt").write_text("x")
        with pytest.raises(ImageReadError, match="no image files"):
            find_images([tmp_path])

    def test_missing_path_is_an_error(self, tmp_path):
        with pytest.raises(ImageReadError, match="no such file or directory"):
            find_images([tmp_path / "nope"])


class TestOutputPaths:
    def test_mirrors_structure_with_suffix(self, tmp_path):
        assert output_path_for(Path("in/a/b.JPG"), Path("in"), Path("out"), "_d") == Path("out/a/b_d.JPG")

    def test_gif_and_unknown_become_png(self):
        assert output_path_for(Path("in/x.gif"), Path("in"), Path("out")) == Path("out/x.png")
        assert output_path_for(Path("in/x.GIF"), Path("in"), Path("out")) == Path("out/x.png")
        assert output_path_for(Path("in/x.raw"), Path("in"), Path("out")) == Path("out/x.png")

    def test_outside_root_uses_name(self):
        assert output_path_for(Path("/elsewhere/x.tif"), Path("in"), Path("out")) == Path("out/x.tif")

    def test_transmission_path(self):
        assert transmission_path_for(Path("out/a/b_d.jpg")) == Path("out/a/b_d_transmission.png")


@pytest.mark.parametrize(
    "rel", ["sots_indoor/hazy/1400_1.png", "rtts/hazy/BJ_Baidu_544.jpeg", "real_hazy_classic/hazy/canyon.png"]
)
def test_real_samples(rel):
    path = SHARED_DATA / rel
    if not path.is_file():
        pytest.skip("shared data not available")
    img = read_image(path)
    assert isinstance(img, ImageData) and img.bit_depth == 8 and not img.gray
    with Image.open(path) as im:
        assert img.size == (im.size[1], im.size[0])
    assert torch.isfinite(img.rgb).all() and 0 <= img.rgb.min() and img.rgb.max() <= 1
