"""Flicker of video dehazing on a lossless pan across a real hazy photo (issue #26; docs/video.md).

Makes a 1280 x 720 pan (x264 crf 0) across ../shared/data/ohaze/hazy/41_outdoor.jpg, dehazes it
frame by frame and with temporal stabilisation (hazefree.video), for the default model and DCP,
at crf 0 so that the codec adds nothing, and prints global and local flicker (hazefree.flicker)
with the input's own (the floor) and the run's timing and machine.

    cd benchmarks && python video_flicker.py [--frames 40] [--step 4] [--image PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hazefree.api import Dehazer
from hazefree.flicker import make_pan, pan_flicker
from hazefree.video import VideoOptions, dehaze_video_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "ohaze" / "hazy" / "41_outdoor.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--methods", default="guided-pix2pix,dcp")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    with tempfile.TemporaryDirectory() as tmp:
        pan = make_pan(image, Path(tmp) / "pan.mp4", (1280, 720), args.frames, args.step)
        floor = pan_flicker(pan, args.step)
        print(f"pan: {args.image.name}, 1280 x 720, {args.frames} frames, {args.step} px/frame, x264 crf 0")
        print(f"{'method':<16} {'mode':<12} {'global':>7} {'local':>7} {'s/frame':>8}")
        print(f"{'input':<16} {'-':<12} {floor.global_:7.3f} {floor.local:7.3f}")
        for method in args.methods.split(","):
            dehazer = Dehazer(method)
            for mode, stabilize in (("per-frame", False), ("stabilised", True)):
                out = Path(tmp) / f"{method}-{mode}.mp4"
                start = time.perf_counter()
                dehaze_video_file(dehazer, pan, out, VideoOptions(crf=0, stabilize=stabilize))
                seconds = (time.perf_counter() - start) / args.frames
                f = pan_flicker(out, args.step)
                print(f"{method:<16} {mode:<12} {f.global_:7.3f} {f.local:7.3f} {seconds:8.3f}", flush=True)
    from machine import cpu_model, load_average  # benchmarks/machine.py

    print(f"{cpu_model()}, {torch.get_num_threads()} torch thread(s), {torch.__version__}, load {load_average()}")


if __name__ == "__main__":
    main()
