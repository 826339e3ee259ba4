"""How far a model's ONNX graph is from the model: the largest difference of J and t, graph
(run the way examples/onnx_dehaze.py runs it) against ``hazefree.Dehazer``, on one photo at its
own size and resized to a few others (odd, unequal sides; larger and smaller than the working size).

    python benchmarks/onnx_parity.py guided-pix2pix ../shared/data/rtts/hazy/BJ_Baidu_544.jpeg
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import hazefree
from hazefree import cli
from hazefree.io import read_image

SIZES = [(301, 419), (480, 640), (200, 700)]


def _example():
    spec = importlib.util.spec_from_file_location("onnx_dehaze", Path(__file__).parents[1] / "examples" / "onnx_dehaze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", help="a method name or a weights file")
    p.add_argument("photo", type=Path)
    args = p.parse_args(argv)
    import onnxruntime as ort

    example = _example()
    photo = read_image(args.photo).rgb
    dehazer = hazefree.Dehazer(args.method)
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "model.onnx"
        if cli.main(["export", args.method, "-o", str(graph)]) != 0:
            return 1
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        print("| H x W | max abs J | max abs t |\n|---|---:|---:|")
        for size in [tuple(photo.shape[-2:]), *SIZES]:
            image = F.interpolate(photo, size=size, mode="bilinear", antialias=True).clamp(0, 1)
            with torch.no_grad():
                want = dehazer(image)
            got = example.dehaze(session, image[0].permute(1, 2, 0).numpy())
            j = float(np.abs(got["clear"] - want.clear.numpy()).max())
            t = float(np.abs(got["transmission"] - want.transmission.numpy()).max())
            print(f"| {size[0]} x {size[1]} | {j:.2g} | {t:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
