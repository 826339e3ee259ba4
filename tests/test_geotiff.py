"""GeoTIFFs through `hazefree dehaze`: read and written by windows with rasterio."""

from __future__ import annotations

import numpy as np
import pytest

from hazefree import cli
from hazefree.geotiff import RasterReader, is_geotiff
from hazefree.io import ImageReadError

rasterio = pytest.importorskip("rasterio")
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

H, W = 150, 190


def _geotiff(path, dtype="uint16", nodata=0, count=4, **profile):
    """A georeferenced hazy scene: RGB + (count - 3) extra bands, a nodata corner."""
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    depth = np.linspace(0.2, 0.9, W)[None, None, :]
    scene = rng.random((3, 6, 8)).repeat(25, axis=1).repeat(24, axis=2)[:, :H, :W]
    hazy = np.clip(scene * (1 - depth) + 0.85 * depth + rng.normal(0, 0.01, (3, H, W)), 0, 1)
    data = np.concatenate([(hazy * top).round(), rng.integers(1, top, (count - 3, H, W))]).astype(dtype)
    if nodata is not None:
        data[:3, :10, :12] = nodata
    options = dict(driver="GTiff", width=W, height=H, count=count, dtype=dtype, crs="EPSG:32633",
                   transform=from_origin(500000, 4600000, 10, 10), nodata=nodata, tiled=True,
                   blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(path, "w", **{**options, **profile}) as ds:
        ds.write(data)
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue] + [ColorInterp.undefined] * (count - 3)
        if count > 3:
            ds.set_band_description(4, "nir")
        ds.update_tags(SENSOR="test")
    return data


@pytest.mark.parametrize("tile", ["0", "64"])
def test_geotiff_keeps_georeferencing_and_extra_bands(tmp_path, capsys, tile):
    src = tmp_path / "scene.tif"
    data = _geotiff(src)
    assert is_geotiff(src)
    out = tmp_path / "out"
    code = cli.main(["dehaze", str(src), "-o", str(out), "--method", "dcp", "--tile", tile, "--save-transmission"])
    assert code == 0, capsys.readouterr().err
    with rasterio.open(src) as a, rasterio.open(out / "scene.tif") as b:
        assert b.crs == a.crs and b.transform == a.transform
        assert b.dtypes == a.dtypes and b.nodata == a.nodata and b.count == a.count
        assert b.block_shapes == a.block_shapes and b.compression == a.compression
        assert b.colorinterp == a.colorinterp and b.descriptions == a.descriptions
        assert b.tags()["SENSOR"] == "test"
        result = b.read()
    np.testing.assert_array_equal(result[3], data[3])  # the extra band passes through untouched
    assert (result[:3, :10, :12] == 0).all()  # nodata stays nodata
    assert np.abs(result[:3, 20:, 20:].astype(float) - data[:3, 20:, 20:]).mean() > 1000  # dehazed
    assert (out / "scene_transmission.png").is_file()


def test_geotiff_tiled_equals_whole(tmp_path, capsys):
    src = tmp_path / "scene.tif"
    _geotiff(src, dtype="uint8", nodata=None, count=3)
    results = []
    for tile in ("0", "48"):
        out = tmp_path / f"out{tile}"
        assert cli.main(["dehaze", str(src), "-o", str(out), "--tile", tile]) == 0, capsys.readouterr().err
        with rasterio.open(out / "scene.tif") as ds:
            results.append(ds.read().astype(int))
    assert np.abs(results[0] - results[1]).max() <= 1


def test_unsupported_samples_named(tmp_path, capsys):
    src = tmp_path / "s.tif"
    with rasterio.open(src, "w", driver="GTiff", width=8, height=8, count=3, dtype="int16", crs="EPSG:4326",
                       transform=from_origin(0, 8, 1, 1)) as ds:
        ds.write(np.zeros((3, 8, 8), np.int16))
    with pytest.raises(ImageReadError, match="unsupported TIFF samples int16"):
        RasterReader(src)
    code = cli.main(["dehaze", str(src), "-o", str(tmp_path / "o"), "--method", "dcp"])
    err = capsys.readouterr().err
    assert code == 1 and f"error: {src}: unsupported TIFF samples" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "s.tif").exists()


def test_plain_tiff_is_not_geotiff(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "p.tif")
    assert not is_geotiff(tmp_path / "p.tif")


def test_geotiff_without_rasterio_is_refused_by_name(tmp_path, capsys, monkeypatch):
    import hazefree.geotiff as geotiff

    src = tmp_path / "scene.tif"
    _geotiff(src, dtype="uint8", nodata=None, count=3)

    def missing():
        raise ImportError("no rasterio")

    monkeypatch.setattr(geotiff, "_rasterio", missing)
    code = cli.main(["dehaze", str(src), "-o", str(tmp_path / "o"), "--method", "dcp"])
    err = capsys.readouterr().err
    assert code == 1 and f"error: {src}: a GeoTIFF" in err and "hazefree[geo]" in err
    assert not (tmp_path / "o" / "scene.tif").exists()
