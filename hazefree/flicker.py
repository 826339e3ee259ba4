"""Flicker of a dehazed pan (issue #26): a window moved across a still photo, so that consecutive
frames show the same scene points shifted by a known step, and any change of a scene point's
output between frames is flicker.

For frames O_k, O_{k+1} (grey = mean of R, G, B, in grey levels 0-255) and a pan of ``step``
pixels to the right per frame, the overlap is O_k[:, step:] against O_{k+1}[:, :W - step]:

* global flicker = |mean(O_k overlap) - mean(O_{k+1} overlap)|;
* local flicker = mean over 16 x 16 blocks of |block mean in O_k - block mean in O_{k+1}|
  (blocks average out codec noise; a block that changes means the haze estimate changed).

Both are averaged over the consecutive pairs of the clip. Used by ``benchmarks/video_flicker.py``
and ``tests/test_video.py``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["Flicker", "make_pan", "pan_flicker", "frame_flicker"]

BLOCK = 16


class Flicker(NamedTuple):
    """Mean global and local flicker (grey levels) over the consecutive pairs, and the pair count."""

    global_: float
    local: float
    pairs: int


def make_pan(image: np.ndarray, path, size: tuple[int, int], frames: int, step: int, fps: int = 25) -> Path:
    """Write a lossless (x264 crf 0, 4:4:4) clip of ``frames`` frames of ``size`` (w, h), a window
    moving ``step`` pixels right per frame across the H x W x 3 uint8 ``image`` (from its left
    edge, vertically centred)."""
    import av

    w, h = size
    if image.shape[0] < h or image.shape[1] < w + step * (frames - 1):
        raise ValueError(f"image {image.shape[1]} x {image.shape[0]} is too small for the pan")
    top = (image.shape[0] - h) // 2
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        stream.options = {"crf": "0", "preset": "veryfast"}
        stream.codec_context.time_base = Fraction(1, fps)
        for k in range(frames):
            window = np.ascontiguousarray(image[top : top + h, k * step : k * step + w])
            frame = av.VideoFrame.from_ndarray(window, format="rgb24").reformat(format="yuv444p")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def frame_flicker(a: np.ndarray, b: np.ndarray, step: int) -> tuple[float, float]:
    """(global, local) flicker between consecutive H x W x 3 frames ``a`` and ``b`` of a pan."""
    ga = a.astype(np.float64).mean(axis=2)[:, step:]
    gb = b.astype(np.float64).mean(axis=2)[:, : b.shape[1] - step]
    h, w = (ga.shape[0] // BLOCK) * BLOCK, (ga.shape[1] // BLOCK) * BLOCK

    def blocks(g):
        return g[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean(axis=(1, 3))

    return abs(ga.mean() - gb.mean()), float(np.abs(blocks(ga) - blocks(gb)).mean())


def pan_flicker(path, step: int) -> Flicker:
    """Mean flicker of the decoded clip at ``path``, a pan of ``step`` pixels per frame."""
    import av

    total_g = total_l = 0.0
    pairs = 0
    previous = None
    with av.open(str(path)) as clip:
        for frame in clip.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            if previous is not None:
                g, l = frame_flicker(previous, rgb, step)
                total_g, total_l, pairs = total_g + g, total_l + l, pairs + 1
            previous = rgb
    if pairs == 0:
        raise ValueError(f"{path}: fewer than two frames")
    return Flicker(total_g / pairs, total_l / pairs, pairs)
