"""Writing image files, atomically: :func:`write_image` (float tensors or arrays) and
:func:`write_pixels` (integer pixels), and :func:`quantize`."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import png_format
from .atomic import atomic_write
from .formats import _EXTENSION_FORMATS, _SIXTEEN_BIT_FORMATS, IMAGE_EXTENSIONS, SUPPORTED_FORMATS, ArrayLike, PathLike


def write_image(
    path: PathLike,
    rgb: ArrayLike,
    alpha: ArrayLike | None = None,
    bit_depth: int = 8,
    gray: bool = False,
    format: str | None = None,
    icc_profile: bytes | None = None,
) -> Path:
    """Write an image atomically: the file appears complete or not at all.

    Values are clipped to [0, 1] and rounded to the nearest level. PNG and TIFF keep 16 bits;
    JPEG, WebP and BMP are 8-bit formats, so ``bit_depth=16`` is written as 8 bits there. WebP has
    no gray mode (gray is stored as RGB); JPEG cannot store alpha (ValueError). A 16-bit gray +
    alpha TIFF is stored as RGBA with three equal channels (the encoder has no 2-channel mode).
    The ICC profile is embedded in every format except BMP and 16-bit TIFF.

    Args:
        path: destination; its folder is created. The format follows the extension unless
            ``format`` ("PNG", "JPEG", "TIFF", "WEBP", "BMP") is given. GIF is not written.
        rgb: 1 x C x H x W or C x H x W tensor or array in [0, 1], C = 3 (colour) or 1 (gray).
        alpha: optional 1 x 1 x H x W, 1 x H x W or H x W alpha in [0, 1].
        bit_depth: 8 or 16.
        gray: store one channel: a 3-channel ``rgb`` is reduced to BT.601 luma.
        format: explicit output format; None to infer it from the extension.
        icc_profile: colour profile to embed (e.g. :attr:`ImageData.icc_profile`).

    Returns:
        The path written.

    Raises:
        ValueError: NaN/Inf values, bad shapes, an unknown format or extension, alpha in JPEG.
        TypeError: ``rgb`` or ``alpha`` is not a tensor or array.
        OSError: the file cannot be written (the destination is then left as it was).
    """
    path = Path(path)
    fmt = _output_format(path, format)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    depth = bit_depth if fmt in _SIXTEEN_BIT_FORMATS else 8
    colour = _as_float_array(rgb, "rgb")  # C x H x W
    if colour.shape[0] not in (1, 3):
        raise ValueError(f"rgb must have 1 or 3 channels, got {colour.shape[0]}")
    if gray and colour.shape[0] == 3:
        from ..ops import rgb_to_gray

        colour = rgb_to_gray(torch.from_numpy(colour)[None])[0].numpy()
    planes = [colour]
    if alpha is not None:
        a = _as_float_array(alpha, "alpha")
        if a.shape[0] != 1 or a.shape[1:] != colour.shape[1:]:
            raise ValueError(f"alpha must be 1 x {colour.shape[1]} x {colour.shape[2]}, got {tuple(a.shape)}")
        planes.append(a)
    pixels = quantize(np.concatenate(planes, axis=0).transpose(1, 2, 0), depth)  # H x W x C
    return write_pixels(path, pixels, format=fmt, icc_profile=icc_profile)


def write_pixels(
    path: PathLike, pixels: np.ndarray, format: str | None = None, icc_profile: bytes | None = None
) -> Path:
    """Write H x W x C integer pixels (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; uint8, or uint16
    for 16-bit PNG/TIFF) atomically, as :func:`write_image` does after quantizing."""
    path = Path(path)
    fmt = _output_format(path, format)
    depth = 16 if pixels.dtype == np.uint16 else 8
    if pixels.dtype not in (np.uint8, np.uint16) or (depth == 16 and fmt not in _SIXTEEN_BIT_FORMATS):
        raise ValueError(f"{path}: cannot write {pixels.dtype} pixels as {fmt} (uint8, or uint16 for PNG/TIFF)")
    data = _encode(pixels, fmt, depth, icc_profile)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def _output_format(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = format.upper()
        fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    else:
        fmt = _EXTENSION_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"{path}: cannot tell the output format from the extension {path.suffix!r}; "
                f"use one of {', '.join(sorted(set(IMAGE_EXTENSIONS) - {'.gif'}))} or pass format="
            )
    if fmt == "GIF":
        raise ValueError(f"{path}: writing GIF is not supported (256 colours); write PNG instead")
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"unsupported output format {format!r}; choose PNG, JPEG, TIFF, WEBP or BMP")
    return fmt


def _as_float_array(x: ArrayLike, name: str) -> np.ndarray:
    """A C x H x W float32 array from a (1 x) C x H x W (or H x W) tensor or array, checked finite."""
    if isinstance(x, Tensor):
        arr = x.detach().to("cpu", torch.float32).numpy()
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
            raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
        arr = x.astype(np.float32)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"{name} must hold one image, got a batch of {arr.shape[0]}")
        arr = arr[0]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 1 x C x H x W or C x H x W, got shape {tuple(x.shape)}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return arr


def quantize(values: np.ndarray, depth: int) -> np.ndarray:
    """Float values in [0, 1] (clipped) to the nearest uint8 (depth 8) or uint16 (depth 16) level."""
    top = 65535.0 if depth == 16 else 255.0
    # floor(x + 0.5): round half up, so that v / top maps back to exactly v.
    levels = np.floor(np.clip(values, 0.0, 1.0) * top + 0.5)
    return levels.astype(np.uint16 if depth == 16 else np.uint8)


def _encode(pixels: np.ndarray, fmt: str, depth: int, icc_profile: bytes | None) -> bytes:
    """Encode H x W x C integer pixels (C: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) to file bytes."""
    channels = pixels.shape[2]
    if fmt == "JPEG" and channels in (2, 4):
        raise ValueError("JPEG cannot store an alpha channel; write PNG, TIFF or WebP instead")
    if depth == 16:
        if fmt == "PNG" and channels == 2:
            data = png_format.encode_gray_alpha_16(pixels)
        else:
            if channels == 2:  # 16-bit gray + alpha TIFF: no 2-channel encoder, store as RGBA
                pixels = pixels[:, :, [0, 0, 0, 1]]
            data = _cv2_encode(pixels, ".png" if fmt == "PNG" else ".tiff")
        if fmt == "PNG" and icc_profile:
            data = png_format.insert_iccp(data, icc_profile)
        return data
    if fmt == "BMP" and channels in (2, 4):
        # Pillow writes 32-bit BMPs without an alpha mask (read back as RGB); OpenCV keeps it.
        return _cv2_encode(pixels[:, :, [0, 0, 0, 1]] if channels == 2 else pixels, ".bmp")
    im = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    options: dict = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 95  # outputs are final images: keep artefacts well below the haze detail
    if fmt == "TIFF":
        options["compression"] = "tiff_deflate"
    if icc_profile and fmt != "BMP":
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _cv2_encode(pixels: np.ndarray, ext: str) -> bytes:
    import cv2  # deferred: slow to import, and only some formats and depths need it

    if pixels.shape[2] >= 3:
        pixels = pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]  # RGB(A) -> OpenCV's BGR(A)
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(pixels))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} image as {ext}")
    return encoded.tobytes()
