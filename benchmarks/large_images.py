"""Benchmark: peak memory of `hazefree dehaze` against image size, tiled and whole.

Each run is a separate process, `/usr/bin/time -v python -m hazefree dehaze IMAGE ...`, whose
"Maximum resident set size" is the peak RSS. Test images are a real hazy photo mirrored and
repeated to the size (written by windows, so the generator itself stays small), as a tiled,
uncompressed TIFF (read and written by windows with rasterio) or a JPEG (decoded whole by Pillow).
The reference row of each method is the same image dehazed whole (`--tile 0`) in the same run,
where that fits the machine.

A second table checks that tiling does not change the result where the preview really is a
reduced copy: an image larger than the untiled limit is dehazed whole and tiled (default tile)
and the mean absolute difference is reported in 8-bit levels; a crop across a tile boundary of
the tiled result is saved for the docs (`--crop`).

Usage:
    python benchmarks/large_images.py [--sizes 1,4,16,64,400] [--methods guided-pix2pix,dcp]
        [--formats tif,jpg] [--whole-up-to 16] [--agreement 6000x4500] [--crop docs/tile_seam.png]
        [--workdir /tmp/hazefree-large]
    python benchmarks/large_images.py --sizes "" --crop docs/tile_seam.png   # the agreement table only
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import (  # benchmarks/machine.py (scripts run from this folder)
    cpu_model,
    load_average,
)
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (a worktree may sit one level deeper)
PHOTO = next(
    (q / "shared" / "data" / "real_hazy_classic" / "hazy" / "canyon.png" for q in ROOT.parents
     if (q / "shared" / "data").is_dir()),
    ROOT.parent / "shared" / "data" / "real_hazy_classic" / "hazy" / "canyon.png",
)


def _pattern(photo: Path) -> np.ndarray:
    """The photo and its mirror images as a 2 x 2 block that repeats without hard edges."""
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    row = np.concatenate([rgb, rgb[:, ::-1]], axis=1)
    return np.concatenate([row, row[::-1]], axis=0)


def _rows(pattern: np.ndarray, top: int, height: int, width: int) -> np.ndarray:
    ph, pw = pattern.shape[:2]
    ys = (np.arange(top, top + height) % ph)[:, None]
    xs = (np.arange(width) % pw)[None, :]
    return pattern[ys, xs]


def make_image(path: Path, megapixels: float, pattern: np.ndarray) -> tuple[int, int]:
    """A 4:3 image of about ``megapixels`` MP (a square one for 400, the 20000 x 20000 mosaic)."""
    if megapixels == 400:
        h = w = 20000
    else:
        h = int(round(math.sqrt(megapixels * 1e6 * 3 / 4)))
        w = int(round(h * 4 / 3))
    if path.exists():
        return h, w
    tmp = path.with_name("tmp_" + path.name)
    if path.suffix == ".tif":
        import rasterio
        from rasterio.windows import Window

        profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, interleave="pixel", BIGTIFF="IF_SAFER")
        with rasterio.open(tmp, "w", **profile) as ds:
            for top in range(0, h, 512):
                n = min(512, h - top)
                ds.write(_rows(pattern, top, n, w).transpose(2, 0, 1), window=Window(0, top, w, n))
    else:
        Image.fromarray(_rows(pattern, 0, h, w)).save(tmp, format="JPEG", quality=92)
    tmp.rename(path)
    return h, w


def peak_rss(args: list[str]) -> tuple[float, float]:
    """(peak RSS in GB, wall seconds) of a command run under /usr/bin/time -v."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return kb / 1024**2, seconds


def dehaze_cmd(image: Path, out: Path, method: str, tile: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "hazefree", "dehaze", str(image), "-o", str(out), "--method", method,
           "--max-pixels", "0", "--overwrite"]
    return cmd + (["--tile", tile] if tile is not None else [])


def agreement(workdir: Path, size: str, methods: list[str], pattern: np.ndarray, crop: Path | None) -> None:
    from hazefree.io import read_image
    from hazefree.tiling import auto_tile

    w, h = (int(v) for v in size.split("x"))
    image = workdir / f"agree_{w}x{h}.png"
    if not image.exists():
        Image.fromarray(_rows(pattern, 0, h, w)).save(image)
    tile = auto_tile(h, w)
    print(f"\n### Tiled against whole, {w} x {h} PNG (default tile {tile}; preview 1/{math.ceil(max(h, w) / 2048)})\n")
    print("| method | MAD (8-bit levels) | max abs diff (levels) | pixels differing by > 1 level |")
    print("|---|---:|---:|---:|")
    for method in methods:
        outs = {}
        for name, t in (("whole", "0"), ("tiled", None)):
            out = workdir / f"agree_{method}_{name}"
            peak_rss(dehaze_cmd(image, out, method, t))
            outs[name] = read_image(out / image.name, max_pixels=None).rgb[0].numpy() * 255
        diff = np.abs(outs["whole"] - outs["tiled"])
        print(f"| {method} | {diff.mean():.3f} | {diff.max():.0f} | {(diff > 1.5).mean() * 100:.3f} % |")
        if crop is not None and method == methods[0]:
            save_crop(crop, outs["whole"], outs["tiled"], tile, method)


def save_crop(crop: Path, whole: np.ndarray, tiled: np.ndarray, tile: int, method: str) -> None:
    """Whole | tiled | |difference| x 20 around the corner of four tiles (at the centre of each panel).

    The crop (384 x 256) avoids the mirror lines of the test pattern (multiples of 600 and 450).
    """
    y, x = tile, tile
    rows, cols = slice(y - 128, y + 128), slice(x - 192, x + 192)
    diff = np.abs(whole[:, rows, cols] - tiled[:, rows, cols]) * 20
    gap = np.full((3, 256, 8), 255.0)
    panels = np.concatenate([whole[:, rows, cols], gap, tiled[:, rows, cols], gap, diff], axis=2)
    crop.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(panels + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(crop, optimize=True)
    print(f"\n(crop {crop}: {method} whole | tiled | |difference| x 20, rows {y - 128}..{y + 128}, "
          f"columns {x - 192}..{x + 192}; four tiles meet at the centre of each panel)\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,4,16,64,400", help="megapixels")
    p.add_argument("--methods", default="guided-pix2pix,dcp")
    p.add_argument("--formats", default="tif,jpg", help="tif (windowed) and/or jpg (decoded whole)")
    p.add_argument("--jpg-up-to", type=float, default=64, help="largest JPEG size (MP)")
    p.add_argument("--whole-up-to", type=float, default=16, help="largest size also run whole (MP)")
    p.add_argument("--agreement", default="6000x4500", help="W x H of the agreement test ('' to skip)")
    p.add_argument("--crop", type=Path, default=None, help="save a crop across a tile boundary here")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/hazefree-large"))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pattern = _pattern(PHOTO)
    methods = args.methods.split(",")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average {load_average()}; "
          f"Python {platform.python_version()}")
    print("\n| image | MP | method | tile | peak RSS (GB) | wall (s) |")
    print("|---|---:|---|---|---:|---:|")
    for fmt in filter(None, args.formats.split(",")):
        for mp in (float(s) for s in args.sizes.split(",") if s):
            if fmt == "jpg" and mp > args.jpg_up_to:
                continue
            image = args.workdir / f"img_{mp:g}mp.{fmt}"
            h, w = make_image(image, mp, pattern)
            for method in methods:
                runs = [("auto", None)] + ([("0 (whole)", "0")] if mp <= args.whole_up_to else [])
                for label, tile in runs:
                    out = args.workdir / f"out_{method}"
                    gb, s = peak_rss(dehaze_cmd(image, out, method, tile))
                    print(f"| {w} x {h} {fmt.upper()} | {h * w / 1e6:.0f} | {method} | {label} | {gb:.2f} | {s:.0f} |",
                          flush=True)
                    for f in out.glob("*"):
                        f.unlink()
    if args.agreement:
        agreement(args.workdir, args.agreement, methods, pattern, args.crop)
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
