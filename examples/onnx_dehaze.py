"""Dehaze a photo with a graph written by ``hazefree export``, without PyTorch or hazefree.

Needs only NumPy, Pillow, OpenCV and onnxruntime. The graph computes everything but the airlight
A (see docs/deployment.md), or, for a model with a learned airlight head (the shipped
guided-pix2pix), the estimates that head reads; :func:`airlight` computes each here exactly as
:func:`hazefree.physics.estimate_airlight` does, for the estimators named in the graph's metadata.

Usage:
    hazefree export guided-pix2pix --format onnx -o gp2p.onnx
    python examples/onnx_dehaze.py gp2p.onnx hazy.jpg clear.png
"""

from __future__ import annotations

import json
import math
import sys

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

MIN_AIRLIGHT = 1e-3  # no airlight channel below this (hazefree.physics.MIN_AIRLIGHT)
TOP_FRACTION = 1e-3  # the brightest 0.1 % of pixels
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the k largest values; among equal values the lowest indices, the
    rule of hazefree.physics (a partition finds the k-th value; ties fill up in index order)."""
    kth = np.partition(values, values.size - k)[values.size - k]
    above, tied = values > kth, values == kth
    return np.flatnonzero(above | (tied & (np.cumsum(tied) <= k - np.count_nonzero(above))))


def airlight(rgb: np.ndarray, method: str) -> np.ndarray:
    """Airlight A (3,) of an H x W x 3 float32 image in [0, 1].

    ``max_luma``: mean colour of the top 0.1 % of pixels by luma. ``dark_channel``: among the top
    0.1 % by dark channel (min over colours, then a 15 x 15 min filter clipped at the border), the
    mean colour of the brightest 10 % by luma; ``dark_channel_brightest``: the single brightest.
    """
    h, w, _ = rgb.shape
    flat = rgb.reshape(-1, 3)
    luma = (rgb[..., 0] * np.float32(LUMA[0]) + rgb[..., 1] * np.float32(LUMA[1]) + rgb[..., 2] * np.float32(LUMA[2]))
    luma = luma.reshape(-1)
    k = max(1, math.ceil(TOP_FRACTION * h * w))
    if method == "max_luma":
        picked = _top(luma, k)
    elif method in ("dark_channel", "dark_channel_brightest"):
        # erode's default border is the largest value, so the window is clipped at the border
        dark = cv2.erode(rgb.min(axis=2), np.ones((15, 15), np.uint8)).reshape(-1)
        candidates = _top(dark, k)
        m = max(1, math.ceil((0.1 if method == "dark_channel" else 0.0) * k))
        picked = candidates[_top(luma[candidates], m)]
    else:
        raise ValueError(f"unknown airlight method {method!r}")
    return np.clip(flat[picked].mean(axis=0, dtype=np.float32), MIN_AIRLIGHT, 1.0).astype(np.float32)


def graph_inputs(session: ort.InferenceSession, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's inputs for an H x W x 3 float32 image in [0, 1]: the image, and the airlight
    (or, for a learned airlight head, the estimates it reads) computed as the metadata says."""
    feed = {"hazy": np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])}
    meta = session.get_modelmeta().custom_metadata_map
    inputs = {i.name for i in session.get_inputs()}
    if "airlight" in inputs:
        feed["airlight"] = airlight(rgb, meta["airlight_method"]).reshape(1, 3, 1, 1)
    if "airlight_estimates" in inputs:  # a learned airlight head: it reads these estimates, in order
        methods = json.loads(meta["airlight_estimates"])
        feed["airlight_estimates"] = np.concatenate([airlight(rgb, m) for m in methods])[None]
    return feed


def dehaze(session: ort.InferenceSession, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Run the graph on an H x W x 3 float32 image in [0, 1]; returns its outputs by name
    (``clear`` 1 x 3 x H x W, and ``transmission`` 1 x 1 x H x W and ``airlight`` where the graph
    has them)."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, graph_inputs(session, rgb))))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("Usage:")[1].strip(), file=sys.stderr)
        return 2
    model, source, target = argv
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rgb = np.asarray(Image.open(source).convert("RGB"), dtype=np.float32) / 255.0
    clear = dehaze(session, rgb)["clear"][0].transpose(1, 2, 0)
    Image.fromarray((clear * 255.0 + 0.5).astype(np.uint8)).save(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
