"""What :mod:`hazefree.io` reads and writes: formats, extensions, the pixel limit, the decoded
image records (:class:`ImageData`, :class:`RawImage`) and the read error and warning."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from torch import Tensor

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


# Video containers (hazefree.video), known here so that finding and naming files needs no video
# import: input extension -> (output extension, FFmpeg muxer). AVI and WebM cannot hold H.264 with
# exact timestamps, so their results are written as Matroska.
_CONTAINERS = {
    ".mp4": (".mp4", "mp4"),
    ".m4v": (".m4v", "mp4"),
    ".mov": (".mov", "mov"),
    ".mkv": (".mkv", "matroska"),
    ".avi": (".mkv", "matroska"),
    ".webm": (".mkv", "matroska"),
}
VIDEO_EXTENSIONS: frozenset[str] = frozenset(_CONTAINERS)


def is_video(path: PathLike) -> bool:
    """True if ``path`` has a video extension (:data:`VIDEO_EXTENSIONS`, any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def video_output_extension(path: PathLike) -> str:
    """The output extension for a video input: its own, except AVI and WebM -> ".mkv"."""
    return _CONTAINERS[Path(path).suffix.lower()][0]
