"""PNG specifics, through pypng: checking a file's chunks before it is decoded, the 16-bit gray +
alpha encoder that neither Pillow nor OpenCV has, and embedding an ICC profile in the 16-bit PNGs
OpenCV writes (which has no option for one)."""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path

import numpy as np
import png as pypng

from .formats import ImageReadError

SIGNATURE = pypng.signature


def check_chunks(path: Path, data: bytes) -> dict[bytes, bytes]:
    """Check a PNG's chunk structure and CRCs up to IEND (pypng's chunk reader); return the last
    chunk of each type but IDAT, whose payloads are not kept. A truncated or corrupt file gets a
    clear message here instead of a libpng error on stderr, and an eXIf chunk after the pixel data
    is found too.

    Raises:
        ImageReadError: bad signature, a cut-off file or chunk, or a bad CRC.
    """
    if not data.startswith(SIGNATURE):
        raise ImageReadError(path, "corrupt PNG signature")
    chunks: dict[bytes, bytes] = {}
    try:
        for ctype, body in pypng.Reader(bytes=data).chunks():
            if ctype != b"IDAT":
                chunks[ctype] = body
    except pypng.ChunkError as exc:
        # pypng says which check failed only in its message: "Checksum error in IDAT chunk: ...",
        # "Chunk b'IDAT' too short for ...", "No more chunks." (the file ends before IEND)
        text = str(exc.args[0]) if exc.args else ""  # str(exc) prefixes the class name
        kind = re.search(r"(?:in |b')([A-Za-z]{4})", text)
        name = kind.group(1) if kind else "a"
        if text.startswith("Checksum error"):
            raise ImageReadError(path, f"corrupt PNG data (bad CRC in a {name} chunk)") from None
        if kind and "too short" in text:
            raise ImageReadError(path, f"truncated PNG data (the {name} chunk is cut off)") from None
        raise ImageReadError(path, "truncated PNG data (the file ends before the IEND chunk)") from None
    except pypng.FormatError as exc:  # e.g. the file ends inside a chunk's length and type
        detail = exc.args[0] if exc.args else type(exc).__name__
        raise ImageReadError(path, f"truncated or corrupt PNG data ({detail})") from None
    return chunks


def encode_gray_alpha_16(pixels: np.ndarray) -> bytes:
    """An H x W x 2 uint16 gray + alpha image as a 16-bit PNG (colour type 4), with pypng."""
    height, width = pixels.shape[:2]
    writer = pypng.Writer(width, height, greyscale=True, alpha=True, bitdepth=16, compression=6)
    # rows packed as pypng's write_packed takes them: big-endian samples, as PNG stores them
    rows = pixels.astype(">u2").reshape(height, width * 2).view(np.uint8)
    buffer = io.BytesIO()
    writer.write_packed(buffer, (row.tobytes() for row in rows))
    return buffer.getvalue()


def insert_iccp(data: bytes, icc_profile: bytes) -> bytes:
    """``data`` (a PNG) with an iCCP chunk holding ``icc_profile`` right after IHDR (it must precede
    PLTE and IDAT); any iCCP or sRGB chunk it had is dropped (a PNG may hold one of them).

    The chunks are read and written by pypng. Their body is written here because no library
    builds it (pypng has no iCCP support; Pillow writes one only for the 8-bit images it encodes):
    a profile name, a NUL, compression method 0 and the zlib-compressed profile (PNG spec 11.3.3.3).
    """
    body = b"ICC profile\x00\x00" + zlib.compress(icc_profile)
    out = []
    for ctype, chunk in pypng.Reader(bytes=data).chunks():
        if ctype in (b"iCCP", b"sRGB"):
            continue
        out.append((ctype, chunk))
        if ctype == b"IHDR":
            out.append((b"iCCP", body))
    buffer = io.BytesIO()
    pypng.write_chunks(buffer, out)
    return buffer.getvalue()
