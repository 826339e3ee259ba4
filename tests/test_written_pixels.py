"""What ``hazefree dehaze`` writes is what the model computed: written pixels, read back by another
library (OpenCV, rasterio), match the in-memory result within one quantisation step, for 8- and
16-bit PNG, TIFF and GeoTIFF, whole and tiled, band by band.

Whole images are compared with :class:`hazefree.Dehazer` on the same input. Tiled images are
compared with the same tiled run written as a float32 GeoTIFF, which stores the computed values
without quantisation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hazefree import Dehazer, cli

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

H, W = 150, 190
TOP = {8: 255, 16: 65535}


def _levels(bits: int) -> np.ndarray:
    """An H x W x 3 hazy scene whose three colour channels differ (a band swap shows)."""
    rng = np.random.default_rng(1)
    depth = np.linspace(0.2, 0.9, W)[None, :, None]
    scene = rng.random((6, 8, 3)).repeat(25, axis=0).repeat(24, axis=1)[:H, :W] * np.array([1.0, 0.6, 0.3])
    hazy = np.clip(scene * (1 - depth) + np.array([0.9, 0.8, 0.7]) * depth + rng.normal(0, 0.01, (H, W, 3)), 0, 1)
    return (hazy * TOP[bits]).round().astype(np.uint16 if bits == 16 else np.uint8)


def _write_plain(path: Path, levels: np.ndarray) -> None:
    assert cv2.imwrite(str(path), levels[:, :, ::-1])  # OpenCV stores BGR


def _read_plain(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]


def _write_geotiff(path: Path, values: np.ndarray) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype=values.dtype.name,
                       crs="EPSG:32633", transform=from_origin(500000, 4600000, 10, 10)) as ds:
        ds.write(values.transpose(2, 0, 1))


def _read_geotiff(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read().transpose(1, 2, 0)


def _dehaze(tmp_path: Path, src: Path, tile: int, name: str) -> Path:
    out = tmp_path / f"out-{name}"
    assert cli.main(["dehaze", str(src), "-o", str(out), "--method", "dcp", "--tile", str(tile)]) == 0
    return out / src.name


def _in_memory(levels: np.ndarray, bits: int) -> np.ndarray:
    rgb = torch.from_numpy(levels.astype(np.float32) / TOP[bits]).permute(2, 0, 1)[None]
    return Dehazer("dcp")(rgb).clear[0].permute(1, 2, 0).numpy()


def _assert_within_one_step(written: np.ndarray, expected: np.ndarray, bits: int) -> None:
    assert written.shape == expected.shape and written.dtype == (np.uint16 if bits == 16 else np.uint8)
    error = np.abs(written.astype(np.float64) - expected.astype(np.float64) * TOP[bits])
    assert error.max() <= 0.5 + 1e-3 * TOP[bits] / 255, f"up to {error.max():.2f} levels off"  # float noise
    # per channel: no band is another's
    for c in range(3):
        assert np.abs(written[..., c] / TOP[bits] - expected[..., c]).mean() < 1 / TOP[bits]


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_whole_plain_files(tmp_path, ext, bits):
    levels = _levels(bits)
    src = tmp_path / f"scene{ext}"
    _write_plain(src, levels)
    written = _read_plain(_dehaze(tmp_path, src, 0, "whole"))
    _assert_within_one_step(written, _in_memory(levels, bits), bits)


@pytest.mark.parametrize("bits", [8, 16])
def test_whole_geotiff(tmp_path, bits):
    levels = _levels(bits)
    src = tmp_path / "scene.tif"
    _write_geotiff(src, levels)
    written = _read_geotiff(_dehaze(tmp_path, src, 0, "whole"))
    _assert_within_one_step(written, _in_memory(levels, bits), bits)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("kind", ["png", "geotiff"])
def test_tiled(tmp_path, kind, bits):
    levels = _levels(bits)
    # the reference: the same tiled run on the same values, stored as floats (no quantisation)
    reference_src = tmp_path / "float" / "scene.tif"
    reference_src.parent.mkdir()
    _write_geotiff(reference_src, (levels.astype(np.float64) / TOP[bits]).astype(np.float32))
    expected = _read_geotiff(_dehaze(tmp_path, reference_src, 64, "float"))
    assert expected.dtype == np.float32 and np.abs(expected - levels / TOP[bits]).mean() > 0.02  # dehazed
    if kind == "png":  # the "array" route: decoded whole, dehazed and written tile by tile
        src = tmp_path / "scene.png"
        _write_plain(src, levels)
        written = _read_plain(_dehaze(tmp_path, src, 64, "tiled"))
    else:  # the "raster" route: read and written by windows
        src = tmp_path / "scene.tif"
        _write_geotiff(src, levels)
        written = _read_geotiff(_dehaze(tmp_path, src, 64, "tiled"))
    _assert_within_one_step(written, expected, bits)
