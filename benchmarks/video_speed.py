"""Video dehazing speed, decode and encode included (issue #26; docs/video.md).

For each method and size, a clip of --frames frames (a pan across a hazy photo, x264) is dehazed
by hazefree.video (stabilised, the default) and, as the same-run reference, frame by frame
(VideoOptions(stabilize=False): the same decode, Dehazer call per frame and encode). Prints frames
per second of both and their ratio, with the machine and its load.

    cd benchmarks && python video_speed.py [--frames 30] [--threads 2] [--sizes 1280x720,1920x1080]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model, load_average
from PIL import Image

from hazefree.api import Dehazer
from hazefree.flicker import make_pan
from hazefree.video import VideoOptions, dehaze_video_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "ohaze" / "hazy" / "41_outdoor.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--methods", default="guided-pix2pix,dcp")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    print(f"{cpu_model()}, {args.threads} torch thread(s), torch {torch.__version__}, load {load_average()}")
    print(f"{'method':<16} {'size':<10} {'stabilised fps':>15} {'per-frame fps':>14} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            scale = max(h / image.shape[0], (w + 4 * args.frames) / image.shape[1], 1.0)
            src = image if scale == 1.0 else np.asarray(
                Image.fromarray(image).resize((round(image.shape[1] * scale) + 1, round(image.shape[0] * scale) + 1)))
            clip = make_pan(src, Path(tmp) / f"{size}.mp4", (w, h), args.frames, 4)
            for method in args.methods.split(","):
                dehazer = Dehazer(method)
                fps = {}
                for stabilize in (True, False):
                    start = time.perf_counter()
                    dehaze_video_file(dehazer, clip, Path(tmp) / "out.mp4", VideoOptions(stabilize=stabilize))
                    fps[stabilize] = args.frames / (time.perf_counter() - start)
                print(f"{method:<16} {size:<10} {fps[True]:15.2f} {fps[False]:14.2f} {fps[True] / fps[False]:6.2f}",
                      flush=True)
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()
