"""Which real hazy photos a method turns into night scenes: FADE, clipped share and brightness ratio.

For every photo of a ``hazy/`` folder (or a folder of photos), each method's output is scored by
FADE (:func:`hazefree.metrics.fade.fade`), the clipped-pixel share and the brightness ratio
(:func:`hazefree.evaluation.no_reference.brightness_ratio`: output over input mean luma). Printed:
per method the means, how many outputs keep under ``--dark`` (0.25) of their input's brightness,
and those photos with their FADE. FADE counts darkness as clarity, so a method can look clearer
than another by darkening; this makes it visible.

``--airlight-cap K`` adds, for each method that returns t and A, a variant ``METHOD+capK``: its own t
with A capped per channel by the brightest value of the photo after a K x K grey opening (min then
max filter), which removes light sources smaller than K px (headlights) and keeps extended bright
regions (fog, sky). A prototype for issue #24's next step, not a shipped option.

    cd benchmarks && python real_darkening.py ../../shared/data/train/real_unpaired --methods dcp,guided-pix2pix
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hazefree.evaluation.no_reference import brightness_ratio, clipped_share
from hazefree.io import IMAGE_EXTENSIONS, read_image
from hazefree.metrics.fade import fade
from hazefree.models import load
from hazefree.physics import opened_maximum, remove_haze


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a folder of hazy photos, or one with a hazy/ sub-folder")
    p.add_argument("--methods", default="dcp,guided-pix2pix")
    p.add_argument("--dark", type=float, default=0.25, help="brightness ratio below which an output counts as darkened")
    p.add_argument("--airlight-cap", type=int, metavar="K", help="also score each method with A capped (docstring)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="write every score here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.folder / "hazy" if (args.folder / "hazy").is_dir() else args.folder
    photos = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        print(f"error: {root}: no images", file=sys.stderr)
        return 2
    scores: dict[str, dict[str, list]] = {}
    k = args.airlight_cap
    for method in args.methods.split(","):
        model = load(method).eval()
        for path in photos:
            hazy = read_image(path).rgb
            with torch.no_grad():
                res = model(hazy)
                outs = {method: res.clear}
                if k and res.transmission is not None and res.airlight is not None:
                    a = torch.minimum(res.airlight, opened_maximum(hazy, k))
                    outs[f"{method}+cap{k}"] = remove_haze(hazy, res.transmission, a, t_min=model.t_min)
            for name, out in outs.items():
                out = out.clamp(0.0, 1.0)
                rows = scores.setdefault(name, {"photo": [], "fade": [], "clipped": [], "brightness": []})
                rows["photo"].append(path.name)
                rows["fade"].append(float(fade(out)[0]))
                rows["clipped"].append(float(clipped_share(out)[0]))
                rows["brightness"].append(float(brightness_ratio(out, hazy)[0]))
    print(f"{len(photos)} photos of {root}; darkened: brightness ratio < {args.dark}")
    for method, rows in scores.items():
        dark = [k for k, b in enumerate(rows["brightness"]) if b < args.dark]
        print(f"{method}: FADE {np.mean(rows['fade']):.3f}, clipped {100 * np.mean(rows['clipped']):.2f} %, "
              f"brightness ratio {np.mean(rows['brightness']):.3f} (min {np.min(rows['brightness']):.3f}), "
              f"darkened {len(dark)}")
        for k in dark:
            others = ", ".join(f"{m} {scores[m]['brightness'][k]:.2f}" for m in scores if m != method)
            print(f"  {rows['photo'][k]}: ratio {rows['brightness'][k]:.3f}, FADE {rows['fade'][k]:.3f} ({others})")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
