"""Image files in and out: the only place where pixels are decoded, encoded or converted.

Modules: :mod:`~hazefree.io.reading` (decoding), :mod:`~hazefree.io.writing` (encoding),
:mod:`~hazefree.io.png_format` (PNG chunks, 16-bit gray + alpha, ICC profiles; pypng),
:mod:`~hazefree.io.atomic` (atomic writes), :mod:`~hazefree.io.paths` (finding and naming files)
and :mod:`~hazefree.io.formats` (formats, limits, records, errors). Everything is imported from
``hazefree.io``.

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

from .atomic import atomic_write
from .formats import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    SUPPORTED_FORMATS,
    ArrayLike,
    ImageData,
    ImageReadError,
    ImageReadWarning,
    PathLike,
    RawImage,
)
from .paths import find_images, output_extension, output_path_for, transmission_path_for
from .reading import probe_image, read_image, read_pixels
from .writing import quantize, write_image, write_pixels

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
