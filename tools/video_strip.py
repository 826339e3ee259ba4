"""The README's video picture: frames of a pan across a hazy photo, before (top) and after (bottom)
``hazefree.dehaze_video`` with the default model (docs/video_strip.jpg).

    python tools/video_strip.py [--image PATH] [-o docs/video_strip.jpg]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from hazefree.flicker import make_pan
from hazefree.video import dehaze_video

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO.parent / "shared" / "data" / "ohaze" / "hazy" / "41_outdoor.jpg")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "video_strip.jpg")
    parser.add_argument("--frames", type=int, default=9)
    args = parser.parse_args()
    import av

    photo = Image.open(args.image).convert("RGB")
    photo = np.asarray(photo.resize((960, round(960 * photo.height / photo.width))))
    with tempfile.TemporaryDirectory() as tmp:
        step = (photo.shape[1] - 640) // (args.frames - 1) // 2 * 2
        clip = make_pan(photo, Path(tmp) / "pan.mp4", (640, 360), args.frames, step)
        dehaze_video(clip, Path(tmp) / "out.mp4")
        rows = []
        for path in (clip, Path(tmp) / "out.mp4"):
            with av.open(str(path)) as c:
                frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            picked = [frames[i] for i in (0, len(frames) // 2, len(frames) - 1)]
            rows.append(np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0)), constant_values=255) for f in picked], axis=1))
    strip = Image.fromarray(np.concatenate(rows, axis=0))
    strip = strip.resize((strip.width // 2, strip.height // 2), Image.LANCZOS)
    strip.save(args.output, quality=88)
    print(f"wrote {args.output} ({strip.width} x {strip.height})")


if __name__ == "__main__":
    main()
