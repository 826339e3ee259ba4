"""Reading image files: :func:`read_image` (float tensors), :func:`read_pixels` (integer pixels) and
:func:`probe_image` (the size from the header)."""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import png_format
from .formats import (
    _FORMAT_ALIASES,
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    ImageData,
    ImageReadError,
    ImageReadWarning,
    PathLike,
    RawImage,
)

_EXIF_ORIENTATION = 0x0112

# Serialises reads, during which two process-wide settings are changed and restored: Pillow's
# MAX_IMAGE_PIXELS (see _pillow_limit_lifted) and OpenCV's log level (see _decode_16bit).
_PILLOW_LIMIT_LOCK = threading.Lock()


def read_image(
    path: PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    warn: Callable[[str], None] | None = None,
) -> ImageData:
    """Decode an image file to an :class:`ImageData`, with its EXIF orientation applied.

    Args:
        path: the image file.
        max_pixels: refuse images with more than this many pixels (checked from the header before
            decoding); None or 0 disables the check.
        warn: called with the message instead of issuing an :class:`ImageReadWarning` (the
            warnings module's filters are process-wide, so threads that read report this way).

    Returns:
        The decoded image; see :class:`ImageData`.

    Raises:
        ImageReadError: missing or empty file, not an image, unsupported format or pixel mode,
            truncated or corrupt data, or more than ``max_pixels`` pixels.

    Warns:
        ImageReadWarning: the file holds several frames or pages; only the first one is read.
    """
    raw = read_pixels(path, max_pixels, warn)
    return _to_image_data(raw.path, raw.pixels, raw.bit_depth, raw.gray, raw.format, raw.icc_profile)


def read_pixels(
    path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, warn: Callable[[str], None] | None = None
) -> RawImage:
    """Decode an image file to integer pixels (:class:`RawImage`); see :func:`read_image`."""
    path = Path(path)
    data = _read_bytes(path)
    with _pillow_limit_lifted():
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            sniffed = _sniff_format(data)
            if sniffed is not None:  # the right signature, but Pillow could not parse the header
                raise ImageReadError(path, f"truncated or corrupt {sniffed} header") from None
            raise ImageReadError(
                path, f"not an image file, or an image format that is not supported ({_supported()})"
            ) from None
        except Exception as exc:  # Pillow raises many types for a bad header (SyntaxError, struct.error, ...)
            raise ImageReadError(path, f"corrupt image header ({_describe(exc)})") from None
        with im:
            fmt = _FORMAT_ALIASES.get(im.format, im.format)
            if fmt not in SUPPORTED_FORMATS:
                raise ImageReadError(path, f"unsupported image format {im.format} ({_supported()})")
            _check_pixels(path, im.size, max_pixels)
            try:
                bit_depth = _stored_bit_depth(path, im, fmt, data)
                _warn_if_multiframe(path, im, fmt, warn)
                if bit_depth == 16:
                    pixels, gray, orientation = _decode_16bit(path, im, fmt, data)
                else:
                    pixels, gray, orientation = _decode_pillow(path, im)
                icc = im.info.get("icc_profile") or None
            except ImageReadError:
                raise
            except MemoryError:
                problem = f"not enough memory to decode {im.size[0]} x {im.size[1]} pixels"
                raise ImageReadError(path, problem) from None
            except Exception as exc:
                raise ImageReadError(path, f"truncated or corrupt {fmt} data ({_describe(exc)})") from None
    return RawImage(_apply_orientation(pixels, orientation), bit_depth, gray, fmt, path, icc)


def probe_image(path: PathLike) -> tuple[int, int] | None:
    """(height, width) of an image file as :func:`read_image` would return it (EXIF orientation
    applied), from its header alone; None if the header cannot be parsed (read_image says why)."""
    with _pillow_limit_lifted():
        try:
            with Image.open(path) as im:
                width, height = im.size
                try:
                    orientation = _exif_orientation(im.getexif())
                except Exception:
                    orientation = 1
        except Exception:
            return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _supported() -> str:
    return "supported: PNG, JPEG, TIFF, WebP, BMP, GIF"


def _sniff_format(data: bytes) -> str | None:
    """The supported format whose file signature ``data`` starts with, if any."""
    if data.startswith(png_format.SIGNATURE[:4]):
        return "PNG"
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"GIF8"):
        return "GIF"
    return None  # BMP's two-byte "BM" is too weak a signature to call a text file a broken BMP


def _describe(exc: BaseException) -> str:
    """First line of an exception's message, or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_bytes(path: Path) -> bytes:
    # The whole file is read once: the header checks, Pillow and OpenCV all work on these bytes.
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or _describe(exc)})") from None
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    return data


@contextlib.contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    """Disable Pillow's decompression-bomb limit while hazefree reads (it applies its own).

    Pillow's limit is a process-wide setting (about 89 MP with a warning, an error above 179 MP)
    and it would pre-empt ``max_pixels`` with a different message and threshold. It is restored
    on exit; the lock keeps concurrent hazefree reads from restoring it under each other.
    """
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageReadError(path, f"invalid image size {width} x {height}")
    if max_pixels and width * height > max_pixels:
        raise ImageReadError(
            path,
            f"image is {width} x {height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (max_pixels); raise the limit only for files you trust",
        )


def _stored_bit_depth(path: Path, im: Image.Image, fmt: str, data: bytes) -> int:
    """8 or 16: the sample depth stored in the file, read from the header."""
    if fmt == "PNG":
        # IHDR is always the first chunk: signature(8) length(4) "IHDR"(4) width(4) height(4) depth(1)
        if len(data) < 26 or data[12:16] != b"IHDR":
            raise ImageReadError(path, "corrupt PNG header (no IHDR chunk)")
        return 16 if data[24] == 16 else 8
    if fmt == "TIFF":
        bits = im.tag_v2.get(258, 1)  # BitsPerSample: one value, or one per sample
        bits = max(bits) if isinstance(bits, tuple) else int(bits)
        sample_format = im.tag_v2.get(339, 1)  # 1 unsigned, 2 signed, 3 float
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        if sample_format not in (1, None) or bits > 16:
            kind = {2: "signed integer", 3: "floating-point"}.get(sample_format, "unsigned integer")
            problem = f"unsupported TIFF samples: {bits}-bit {kind} (8- or 16-bit unsigned only)"
            raise ImageReadError(path, problem)
        return 16 if bits > 8 else 8
    return 8  # JPEG, WebP, BMP and GIF store at most 8 bits per sample


def _warn_if_multiframe(path: Path, im: Image.Image, fmt: str, warn: Callable[[str], None] | None) -> None:
    # An animated GIF/WebP or multi-page TIFF is read as its first frame rather than refused:
    # that is what users dehazing a still expect, and the warning says what was dropped.
    if getattr(im, "is_animated", False):
        what = "pages" if fmt == "TIFF" else "frames"
        message = f"{path}: {fmt} file with {im.n_frames} {what}; only the first is used"
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, ImageReadWarning, stacklevel=4)
        im.seek(0)


def _exif_orientation(exif: Image.Exif) -> int:
    value = exif.get(_EXIF_ORIENTATION, 1)
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _decode_pillow(path: Path, im: Image.Image) -> tuple[np.ndarray, bool, int]:
    """8-bit path: (H x W x C uint8 with C in 1..4, gray, EXIF orientation)."""
    im.load()
    try:
        orientation = _exif_orientation(im.getexif())
    except Exception:  # a malformed EXIF block should not make the pixels unreadable
        orientation = 1
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or im.has_transparency_data else "RGB")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        # A tRNS colour key (one transparent gray level or colour) becomes a real alpha channel.
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageReadError(path, f"unsupported pixel mode {mode!r}")
    pixels = np.asarray(im)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, im.mode in ("L", "LA"), orientation


def _decode_16bit(path: Path, im: Image.Image, fmt: str, data: bytes) -> tuple[np.ndarray, bool, int]:
    """16-bit PNG/TIFF path through OpenCV: (H x W x C uint16 RGB(A) or gray(+alpha), gray, orientation)."""
    import cv2  # deferred: only 16-bit files need it, and it is slow to import

    if fmt == "PNG":
        chunks = png_format.check_chunks(path, data)  # a clear message for a cut or corrupt file
        color_type = data[25]
        gray = color_type in (0, 4)  # 0 gray, 4 gray + alpha
        orientation = 1
        if b"eXIf" in chunks:
            exif = Image.Exif()
            exif.load(chunks[b"eXIf"])
            orientation = _exif_orientation(exif)
    else:
        photometric = im.tag_v2.get(262, 2)
        gray = photometric in (0, 1)  # WhiteIsZero, BlackIsZero
        orientation = _exif_orientation(im.getexif())
    # OpenCV logs libtiff warnings (e.g. for the RGBA TIFFs it writes itself, which lack an
    # ExtraSamples tag) to stderr; failures are reported by the None result instead.
    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(log_level)
    if pixels is None:
        raise ImageReadError(path, f"truncated or corrupt 16-bit {fmt} data (OpenCV could not decode it)")
    if pixels.dtype != np.uint16:
        raise ImageReadError(path, f"unsupported 16-bit {fmt} sample type {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (3, 4):
        pixels = pixels[:, :, [2, 1, 0, 3][:channels]]  # OpenCV's BGR(A) -> RGB(A)
        if gray:
            # OpenCV expands gray + alpha to BGRA; the three colour channels are equal.
            pixels = pixels[:, :, [0, 3]] if channels == 4 else pixels[:, :, :1]
    elif channels not in (1, 2):
        raise ImageReadError(path, f"unsupported 16-bit {fmt} with {channels} channels")
    return pixels, pixels.shape[2] <= 2, orientation


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1-8 to an H x W x C array (the same result as ImageOps.exif_transpose)."""
    if orientation == 2:
        pixels = pixels[:, ::-1]
    elif orientation == 3:
        pixels = pixels[::-1, ::-1]
    elif orientation == 4:
        pixels = pixels[::-1]
    elif orientation == 5:
        pixels = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        pixels = np.rot90(pixels, -1)
    elif orientation == 7:
        pixels = pixels.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        pixels = np.rot90(pixels, 1)
    return np.ascontiguousarray(pixels)


def _to_image_data(
    path: Path, pixels: np.ndarray, bit_depth: int, gray: bool, fmt: str, icc: bytes | None
) -> ImageData:
    scale = np.float32(65535.0 if bit_depth == 16 else 255.0)
    values = torch.from_numpy(pixels.astype(np.float32) / scale).permute(2, 0, 1).unsqueeze(0)
    colour_channels = 1 if gray else 3
    colour = values[:, :colour_channels]
    rgb = colour.expand(-1, 3, -1, -1) if gray else colour
    alpha = values[:, colour_channels:].contiguous() if values.shape[1] > colour_channels else None
    return ImageData(rgb.contiguous(), alpha, bit_depth, gray, fmt, path, icc)
