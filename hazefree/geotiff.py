"""GeoTIFF (and large plain TIFF) reading and writing by windows, with rasterio.

The raster is never in memory as a whole: :class:`RasterReader` reads windows and
:class:`RasterWriter` writes them into a new file with the source's profile, so the output keeps
the georeferencing (CRS, transform, GCPs), nodata, data type, band order and count, block layout
(tiled or striped, block size), compression, interleaving, colour interpretation, band
descriptions and dataset tags. Only the three colour bands are replaced; every other band
(alpha, near infrared, ...) is copied window by window, untouched.

Bands: the colour bands are those marked red, green and blue, else the first three; a raster
with one or two bands is gray (a second band marked alpha, or any other one, passes through).
Samples: uint8 and uint16 are scaled by 255 and 65535; float32 and float64 are taken as values in
[0, 1] (clipped). Other sample types are refused.

Nodata: a pixel whose colour bands all equal the nodata value keeps that value in the output.

rasterio is an optional dependency (the ``geo`` extra); it is imported when first needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io import ImageReadError
from .tiling import TileResult, Window

__all__ = ["RasterReader", "RasterWriter", "is_geotiff", "rasterio_env"]

_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_SCALES = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0, "float64": 1.0}
# GDAL's block cache defaults to 5 % of the machine's memory; windowed reads need a few blocks.
_GDAL_CACHE_MB = 256


def _rasterio():
    try:
        import rasterio
    except ImportError:
        raise ImportError(
            "reading and writing GeoTIFFs needs rasterio: pip install 'hazefree[geo]'"
        ) from None
    return rasterio


def rasterio_env():
    """A rasterio environment with a bounded block cache and without GDAL's side files (.aux.xml)."""
    return _rasterio().Env(GDAL_CACHEMAX=_GDAL_CACHE_MB, GDAL_PAM_ENABLED="NO")


def is_tiff(path: Path) -> bool:
    """Whether the file starts with a TIFF or BigTIFF signature."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_SIGNATURES
    except OSError:
        return False


# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEOTIFF_TAGS = (33550, 33922, 34264, 34735)


def is_geotiff(path: Path) -> bool:
    """Whether ``path`` is a TIFF with georeferencing (a CRS, a geotransform or GCPs).

    Raises:
        ImageReadError: the file carries GeoTIFF tags but rasterio is not installed (read as a
            plain TIFF, its georeferencing would be lost without a word).
    """
    if not is_tiff(path):
        return False
    try:
        rasterio = _rasterio()
    except ImportError:
        if set(_first_ifd_tags(path)) & set(_GEOTIFF_TAGS):
            raise ImageReadError(
                path, "a GeoTIFF, whose georeferencing is kept only with rasterio: pip install 'hazefree[geo]'"
            ) from None
        return False
    with rasterio_env(), warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as ds:
                return ds.crs is not None or not ds.transform.is_identity or bool(ds.gcps[0])
        except rasterio.errors.RasterioError:
            return False


def _first_ifd_tags(path: Path) -> list[int]:
    """The tag numbers of a TIFF's first image directory (classic or BigTIFF), [] if unreadable."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(16)
            order = "<" if head[:2] == b"II" else ">"
            big = struct.unpack(order + "H", head[2:4])[0] == 43
            f.seek(struct.unpack(order + "Q", head[8:16])[0] if big else struct.unpack(order + "I", head[4:8])[0])
            count_size, entry_size = (8, 20) if big else (2, 12)
            (count,) = struct.unpack(order + ("Q" if big else "H"), f.read(count_size))
            entries = f.read(min(count, 4096) * entry_size)
    except (OSError, struct.error):
        return []
    return [struct.unpack(order + "H", entries[i : i + 2])[0] for i in range(0, len(entries) - 1, entry_size)]


class RasterReader:
    """A TIFF opened for windowed reading; use as a context manager.

    Attributes:
        size: (height, width).
        colour: 1-based indexes of the colour bands (three, or one for gray).
        gray: the raster has one colour band.
    """

    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        rasterio = _rasterio()
        self.path = Path(path)
        self._env = rasterio_env()
        self._env.__enter__()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.ds = rasterio.open(self.path)
        except rasterio.errors.RasterioError as exc:
            self._env.__exit__(None, None, None)
            raise ImageReadError(self.path, f"cannot read TIFF ({_first_line(exc)})") from None
        try:
            self._check(max_pixels)
        except BaseException:
            self.close()
            raise
        self.size = (self.ds.height, self.ds.width)
        self.dtype = self.ds.dtypes[0]
        self.scale = _SCALES[self.dtype]
        self.nodata = self.ds.nodata
        self.colour = self._colour_bands()
        self.gray = len(self.colour) == 1

    def _check(self, max_pixels: int | None) -> None:
        ds = self.ds
        if max_pixels and ds.width * ds.height > max_pixels:
            raise ImageReadError(
                self.path,
                f"image is {ds.width} x {ds.height} = {ds.width * ds.height:,} pixels, more than the limit "
                f"of {max_pixels:,} (max_pixels); raise the limit only for files you trust",
            )
        kinds = set(ds.dtypes)
        if len(kinds) != 1 or next(iter(kinds)) not in _SCALES:
            raise ImageReadError(
                self.path, f"unsupported TIFF samples {'/'.join(sorted(kinds))} (uint8, uint16, float32, float64)"
            )

    def _colour_bands(self) -> tuple[int, ...]:
        from rasterio.enums import ColorInterp

        interp = list(self.ds.colorinterp)
        wanted = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        if all(c in interp for c in wanted):
            return tuple(interp.index(c) + 1 for c in wanted)
        if self.ds.count >= 3 and ColorInterp.palette not in interp:
            return (1, 2, 3)
        if interp[0] == ColorInterp.palette:
            raise ImageReadError(self.path, "palette TIFFs are not supported by the windowed reader")
        return (1,)

    @property
    def other_bands(self) -> tuple[int, ...]:
        """1-based indexes of the bands that pass through (all but the colour bands)."""
        return tuple(i for i in range(1, self.ds.count + 1) if i not in self.colour)

    def read_bands(self, indexes: tuple[int, ...], window: Window) -> np.ndarray:
        """The stored values of ``indexes`` in ``window``, len(indexes) x h x w."""
        from rasterio.windows import Window as RioWindow

        try:
            return self.ds.read(list(indexes), window=RioWindow(window.left, window.top, window.width, window.height))
        except Exception as exc:  # rasterio raises its own types for corrupt blocks
            raise ImageReadError(self.path, f"truncated or corrupt TIFF data ({_first_line(exc)})") from None

    def read_array(self, window: Window) -> np.ndarray:
        """h x w x 3 float32 RGB in [0, 1] of ``window`` (a gray raster repeated over 3 channels)."""
        values = self.read_bands(self.colour, window).astype(np.float32)
        if self.scale != 1.0:
            values *= np.float32(1.0 / self.scale)
        else:
            np.clip(values, 0.0, 1.0, out=values)
            np.nan_to_num(values, copy=False, nan=0.0)
        if self.gray:
            values = np.repeat(values, 3, axis=0)
        return values.transpose(1, 2, 0)

    def read(self, window: Window) -> Tensor:
        """1 x 3 x h x w float32 RGB of ``window``."""
        return torch.from_numpy(np.ascontiguousarray(self.read_array(window))).permute(2, 0, 1)[None]

    def nodata_mask(self, window: Window) -> np.ndarray | None:
        """h x w bool: pixels whose colour bands all hold the nodata value (None without nodata)."""
        if self.nodata is None:
            return None
        values = self.read_bands(self.colour, window)
        if np.isnan(self.nodata):
            return np.isnan(values).all(axis=0)
        return (values == self.nodata).all(axis=0)

    def close(self) -> None:
        self.ds.close()
        self._env.__exit__(None, None, None)

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RasterWriter:
    """A new TIFF at ``path`` with the profile of ``reader``'s raster, written window by window;
    a context manager that closes it. Callers write into the temporary file of
    :func:`hazefree.io.atomic_write`, so that the output appears complete or not at all.
    """

    def __init__(self, path: Path, reader: RasterReader) -> None:
        rasterio = _rasterio()
        self.path, self.reader = Path(path), reader
        src = reader.ds
        profile = dict(src.profile)
        profile["driver"] = "GTiff"
        if src.width * src.height * src.count * np.dtype(reader.dtype).itemsize > 2**32 - 2**28:
            profile["BIGTIFF"] = "YES"  # a classic TIFF ends at 4 GB
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self.ds = rasterio.open(self.path, "w", **profile)
        try:
            self.ds.colorinterp = src.colorinterp
            if src.gcps[0]:
                self.ds.gcps = src.gcps
            self.ds.update_tags(**src.tags())
            for i in range(1, src.count + 1):
                self.ds.update_tags(i, **src.tags(i))
                if src.descriptions[i - 1]:
                    self.ds.set_band_description(i, src.descriptions[i - 1])
        except BaseException:
            self.ds.close()
            raise

    def write(self, window: Window, result: TileResult) -> None:
        """Write the dehazed colour of ``window`` (and copy the other bands there)."""
        from rasterio.windows import Window as RioWindow

        reader = self.reader
        clear = result.clear[0]
        if reader.gray:
            from .ops import rgb_to_gray

            clear = rgb_to_gray(result.clear)[0]
        values = _to_stored(clear.numpy(), reader.dtype)
        mask = reader.nodata_mask(window)
        if mask is not None:
            values[:, mask] = np.asarray(reader.nodata).astype(values.dtype)
        rio_window = RioWindow(window.left, window.top, window.width, window.height)
        self.ds.write(values, indexes=list(reader.colour), window=rio_window)
        if reader.other_bands:
            others = reader.read_bands(reader.other_bands, window)
            self.ds.write(others, indexes=list(reader.other_bands), window=rio_window)

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.ds.close()


def _to_stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """C x h x w floats in [0, 1] to the raster's sample type (round half up, as io.quantize)."""
    if dtype in ("float32", "float64"):
        return np.clip(values, 0.0, 1.0).astype(dtype)
    top = _SCALES[dtype]
    return np.floor(np.clip(values, 0.0, 1.0) * top + 0.5).astype(dtype)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
