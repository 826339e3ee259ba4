"""Image files in and out: the only place where pixels are decoded, encoded or converted.

Reading (:func:`read_image`) turns any supported file into an :class:`ImageData`: a 1 x 3 x H x W
float32 tensor in [0, 1] plus what is needed to write the result back the same way (alpha, bit
depth, gray, ICC profile). Writing (:func:`write_image`) does the reverse, atomically.

Supported files:
    PNG, JPEG (also multi-picture MPO: first picture), TIFF (first page), WebP (first frame),
    BMP and GIF (first frame; an animated file gives an :class:`ImageReadWarning`). Pixel modes:
    gray (1, 2, 4, 8 or 16 bit), gray + alpha, RGB, RGBA (8 or 16 bit), palette (-> RGB or RGBA),
    CMYK and YCbCr (-> RGB). 32-bit integer and floating-point samples are refused.

    Pillow decodes 16-bit colour PNG/TIFF to 8 bits, so 16-bit PNG and TIFF files are decoded by
    OpenCV instead; Pillow still parses their header (size, EXIF orientation, ICC profile).

Safety:
    The pixel count is checked against ``max_pixels`` (:data:`DEFAULT_MAX_PIXELS`, 200 MP) from the
    header, before any pixel data is decoded, so a small file that claims a huge size (a
    decompression bomb) is refused cheaply. Pillow's own limit is lifted while hazefree reads, so
    the limit users see and configure is this one. Every failure is an :class:`ImageReadError`
    (a ValueError) with a one-line message naming the file.

Example:
    >>> img = read_image("photo.jpg")
    >>> img.rgb.shape, img.bit_depth, img.gray
    (torch.Size([1, 3, 480, 640]), 8, False)
    >>> write_image("out/photo.jpg", img.rgb, img.alpha, img.bit_depth, img.gray)
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "ImageData",
    "ImageReadError",
    "ImageReadWarning",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "RawImage",
    "read_image",
    "read_pixels",
    "probe_image",
    "write_image",
    "write_pixels",
    "quantize",
    "find_images",
    "output_path_for",
    "transmission_path_for",
    "atomic_write",
]

PathLike = Union[str, os.PathLike]
ArrayLike = Union[Tensor, np.ndarray]

# Guard against decompression bombs: 200 megapixels covers every camera and most stitched
# panoramas (a 200 MP RGB image is already 2.4 GB as float32). Callers raise it per call.
DEFAULT_MAX_PIXELS = 200_000_000

# Formats we read, as Pillow names them; MPO (multi-picture JPEG from some cameras) reads as JPEG.
SUPPORTED_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF")
_FORMAT_ALIASES = {"MPO": "JPEG"}
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")

# Extension -> format of the file written under that name (lower-case keys).
_EXTENSION_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".gif": "GIF",
}
IMAGE_EXTENSIONS: frozenset[str] = frozenset(_EXTENSION_FORMATS)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112

# Serialises reads, during which two process-wide settings are changed and restored: Pillow's
# MAX_IMAGE_PIXELS (see _pillow_limit_lifted) and OpenCV's log level (see _decode_16bit).
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image file that cannot be read; ``str(err)`` is ``"<path>: <problem>"`` on one line."""

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the source said
        super().__init__(f"{path}: {self.problem}")

    def __reduce__(self):  # keep the two-argument constructor picklable (multiprocessing)
        return (type(self), (self.path, self.problem))


class ImageReadWarning(UserWarning):
    """A file was read, but not all of it: e.g. only the first frame of an animated GIF."""


@dataclass(frozen=True, eq=False)
class ImageData:
    """A decoded image and what is needed to write a result back in the same form.

    Attributes:
        rgb: 1 x 3 x H x W float32 tensor in [0, 1] (gray sources are repeated over 3 channels).
        alpha: 1 x 1 x H x W float32 tensor in [0, 1], or None; stored exactly (v / 255 or
            v / 65535), so writing it back at the same bit depth reproduces the file's values.
        bit_depth: 8 or 16, the sample depth of the file (1-, 2- and 4-bit gray count as 8).
        gray: True if the file has a single colour channel (with or without alpha).
        format: the file's format as Pillow names it: "PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF".
        path: the file read.
        icc_profile: the embedded ICC colour profile, or None.
    """

    rgb: Tensor
    alpha: Tensor | None
    bit_depth: int
    gray: bool
    format: str
    path: Path
    icc_profile: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.rgb.shape[-2]), int(self.rgb.shape[-1])


# --------------------------------------------------------------------------------------- reading


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


@dataclass(frozen=True, eq=False)
class RawImage:
    """Decoded integer pixels: what :func:`read_image` converts to float, for callers that keep
    a large image as 1 or 2 bytes per sample and convert it piece by piece.

    Attributes:
        pixels: H x W x C uint8 or uint16 array, C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
        bit_depth, gray, format, path, icc_profile: as in :class:`ImageData`.
    """

    pixels: np.ndarray
    bit_depth: int
    gray: bool
    format: str
    path: Path
    icc_profile: bytes | None = None


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
    if data.startswith(_PNG_SIGNATURE[:4]):
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
        # Walk the chunks first: a truncated or corrupt file gets a clear message here instead of
        # a libpng error on stderr, and an eXIf chunk after the pixel data is found too.
        chunks = _png_chunks(path, data)
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


def _png_chunks(path: Path, data: bytes) -> dict[bytes, bytes]:
    """Check a PNG's chunk structure and CRCs up to IEND; return the last chunk of each type.

    IDAT payloads are not kept (only their CRCs are checked), so this is cheap next to decoding.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ImageReadError(path, "corrupt PNG signature")
    view = memoryview(data)
    chunks: dict[bytes, bytes] = {}
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise ImageReadError(path, "truncated PNG data (the file ends before the IEND chunk)")
        length, ctype = struct.unpack(">I4s", view[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ImageReadError(path, f"truncated PNG data (the {ctype.decode('latin-1')} chunk is cut off)")
        body = view[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", view[end - 4 : end])
        if zlib.crc32(body, zlib.crc32(ctype)) != crc:
            raise ImageReadError(path, f"corrupt PNG data (bad CRC in a {ctype.decode('latin-1')} chunk)")
        if ctype != b"IDAT":
            chunks[ctype] = bytes(body)
        if ctype == b"IEND":
            return chunks
        pos = end


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


# --------------------------------------------------------------------------------------- writing


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
        from .ops import rgb_to_gray

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
            data = _encode_png16_gray_alpha(pixels)
        else:
            if channels == 2:  # 16-bit gray + alpha TIFF: no 2-channel encoder, store as RGBA
                pixels = pixels[:, :, [0, 0, 0, 1]]
            data = _cv2_encode(pixels, ".png" if fmt == "PNG" else ".tiff")
        if fmt == "PNG" and icc_profile:
            data = _png_insert_iccp(data, icc_profile)
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
    import cv2  # deferred: see _decode_16bit

    if pixels.shape[2] >= 3:
        pixels = pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]  # RGB(A) -> OpenCV's BGR(A)
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(pixels))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} image as {ext}")
    return encoded.tobytes()


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(ctype))
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _encode_png16_gray_alpha(pixels: np.ndarray) -> bytes:
    """A 16-bit gray + alpha PNG (colour type 4), which neither OpenCV nor Pillow writes."""
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(height, width * 2).view(np.uint8)  # big-endian bytes
    # Filter type 0 (none) on every row: a zero byte in front of each row.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


def _png_insert_iccp(data: bytes, icc_profile: bytes) -> bytes:
    """Insert an iCCP chunk right after IHDR (it must precede PLTE and IDAT)."""
    end_of_ihdr = len(_PNG_SIGNATURE) + 12 + 13
    body = b"ICC profile\x00\x00" + zlib.compress(icc_profile)  # name, NUL, method 0 (deflate)
    return data[:end_of_ihdr] + _png_chunk(b"iCCP", body) + data[end_of_ihdr:]


def atomic_write(path: PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    A crash at any moment leaves either the old file or the new one, never a partial file; on an
    error the temporary file is removed. The new file gets the usual permissions (0666 minus the
    umask), not the private 0600 of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    os.close(fd)
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------- finding, naming


def find_images(
    paths: Iterable[PathLike], recursive: bool = True, exclude: Sequence[PathLike] = ()
) -> list[tuple[Path, Path]]:
    """Image files named by ``paths`` (files or folders), as (file, root) pairs.

    A file is taken as given, whatever its extension, with its parent folder as root. A folder is
    its root: it is scanned (recursively unless ``recursive=False``) for files with an image
    extension (:data:`IMAGE_EXTENSIONS`, any case), sorted; hidden files and folders (a name
    starting with ".") and anything under ``exclude`` are skipped. Duplicates keep the first entry.

    Raises:
        ImageReadError: a path does not exist, or a folder holds no image files.
    """
    excluded = [Path(p).resolve() for p in exclude]
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            candidates = p.rglob("*") if recursive else p.iterdir()
            files = sorted(
                f
                for f in candidates
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.is_file()
                and not any(f.resolve().is_relative_to(x) for x in excluded)
            )
            if not files:
                where = "in this folder or below" if recursive else "in this folder"
                looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
                raise ImageReadError(p, f"no image files {where} (looked for {looked_for})")
            pairs = [(f, p) for f in files]
        elif p.exists():
            pairs = [(p, p.parent)]
        else:
            raise ImageReadError(p, "no such file or directory")
        for f, root in pairs:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append((f, root))
    return found


def output_extension(input_path: PathLike) -> str:
    """Extension of the output for ``input_path``: its own, except GIF and unknown ones -> ".png"."""
    suffix = Path(input_path).suffix
    fmt = _EXTENSION_FORMATS.get(suffix.lower())
    return suffix if fmt is not None and fmt != "GIF" else ".png"


def output_path_for(input_path: PathLike, input_root: PathLike, out_dir: PathLike, suffix: str = "") -> Path:
    """Where the result for ``input_path`` goes: its path relative to ``input_root``, under ``out_dir``.

    The name gets ``suffix`` before the extension; the extension is kept, except that GIF (a
    palette format) and unknown extensions become ".png".

    Example:
        >>> output_path_for("in/a/b.gif", "in", "out", "_clear")
        PosixPath('out/a/b_clear.png')
    """
    input_path = Path(input_path)
    try:
        relative = input_path.relative_to(input_root)
    except ValueError:
        relative = Path(input_path.name)
    return Path(out_dir) / relative.parent / f"{relative.stem}{suffix}{output_extension(input_path)}"


def transmission_path_for(output_path: PathLike) -> Path:
    """``<stem>_transmission.png`` beside an output image."""
    output_path = Path(output_path)
    return output_path.with_name(f"{output_path.stem}_transmission.png")
