"""Regenerate docs/before_after.jpg, the picture at the top of the README.

It runs the README's first command on its sample photo (``hazefree dehaze <sample> -o <tmp>``, the
shipped default method), then places the photo and the result side by side, each captioned with
its haze density (:func:`hazefree.evaluation.haze_density`; lower is clearer).

Usage:
    python tools/readme_picture.py [--sample hazefree/samples/girls.jpg] [--out docs/before_after.jpg]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hazefree import cli
from hazefree.api import default_method
from hazefree.evaluation import Tile, _to_uint8, haze_density, make_grid
from hazefree.io import atomic_write, read_image

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=REPO / "hazefree" / "samples" / "girls.jpg")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "before_after.jpg")
    parser.add_argument("--height", type=int, default=360, help="height of each picture in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if cli.main(["dehaze", str(args.sample), "-o", tmp]) != 0:
            return 1
        hazy = read_image(args.sample).rgb
        clear = read_image(Path(tmp) / args.sample.name).rgb
    tiles = [
        Tile(_to_uint8(hazy), f"hazy photo ({args.sample.name}): haze density {haze_density(hazy).item():.3f}"),
        Tile(_to_uint8(clear), f"hazefree dehaze ({default_method()}): haze density {haze_density(clear).item():.3f}"),
    ]
    picture = make_grid([tiles], tile_height=args.height)
    atomic_write(args.out, lambda path: picture.save(path, format="JPEG", quality=90))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
