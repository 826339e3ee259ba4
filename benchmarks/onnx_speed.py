"""Benchmark: onnxruntime against PyTorch, seconds per 1080p photo, for every exported model.

Each model is exported with ``hazefree.export.export_onnx`` (the graph of ``hazefree export``) and
run by onnxruntime's CPU provider with as many intra-op threads as torch uses. The reference is
``hazefree.Dehazer`` (PyTorch) on the same photo in the same run: the ratio column is onnxruntime
time / PyTorch time, so numbers from machines of different speed or load stay comparable. The
onnxruntime time includes the airlight the caller computes (examples/onnx_dehaze.py, NumPy +
OpenCV); the graph alone is reported too.

Usage:
    python benchmarks/onnx_speed.py [--methods guided-pix2pix,aod-net,dcp] [--size 1920x1080]
        [--repeats 3] [--threads 2] [--image PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_model, load_average, median_ms  # benchmarks/machine.py

import hazefree
from hazefree import models
from hazefree.export import export_onnx
from hazefree.io import read_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "real_hazy_classic" / "hazy" / "girls.jpg"


def _example():
    spec = importlib.util.spec_from_file_location("onnx_dehaze", REPO / "examples" / "onnx_dehaze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated (default: every model usable without a weights file)")
    parser.add_argument("--size", default="1920x1080", help="W x H of the photo")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a hazy photo")
    args = parser.parse_args(argv)
    methods = args.methods.split(",") if args.methods else models.pretrained()
    w, h = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    photo = read_image(args.image).rgb
    image = F.interpolate(photo, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    rgb = np.ascontiguousarray(image[0].permute(1, 2, 0).numpy())
    example = _example()

    print(f"Machine: {cpu_model()}, {torch.get_num_threads()} torch threads, {args.threads} onnxruntime "
          f"intra-op threads; load average (1/5/15 min) at start: {load_average()}")
    print(f"Versions: Python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}, hazefree {hazefree.__version__}")
    print(f"Input: {args.image} resized to {w} x {h}; median of {args.repeats} runs after a warm-up; "
          "ratio = onnxruntime (with airlight) / PyTorch.")
    print()
    print("| model | PyTorch s | onnxruntime s (graph + airlight) | graph only s | ratio | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        for name in methods:
            path = export_onnx(name, Path(tmp) / f"{name}.onnx").path
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            dehazer = hazefree.Dehazer(name)
            feed = example.graph_inputs(session, rgb)
            t_torch = median_ms(lambda: dehazer(image), args.repeats) / 1e3
            t_ort = median_ms(lambda: example.dehaze(session, rgb), args.repeats) / 1e3
            t_graph = median_ms(lambda: session.run(None, feed), args.repeats) / 1e3
            diff = np.abs(example.dehaze(session, rgb)["clear"] - dehazer(image).clear.numpy()).max()
            print(f"| {name} | {t_torch:.3f} | {t_ort:.3f} | {t_graph:.3f} | {t_ort / t_torch:.2f} | {diff:.1e} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
