"""Agreement of the default (fast) R_i with the exact one along a BILD run (issue #25, part 1).

A BILD run at the default settings (``bild.mode: fast``) on a config's data; at every step on
which phi is updated, before the update, the data part of R_i is computed both ways on the same
batch, D_v batch and weights: exact (double backward through the virtual step, eq. 6i) and fast
(central difference along grad J_v), both with the run's ``bild.relative``. Reported: the
Spearman rank correlation over the batch at each such step, its mean and minimum over the run, the
Pearson correlation likewise, and (with ``relative``) the Spearman correlation of the default R_i
with the paper's exact one (l_i rather than log l_i), the size of that deviation.

    python benchmarks/bild_agreement.py --config configs/bild/aod-net-claim.yaml --steps 300 \\
        --out docs/bild/agreement-aod-net.json
    python benchmarks/bild_agreement.py --config configs/bild/griddehazenet-claim.yaml --steps 60 \\
        --set batch_size=8 --out docs/bild/agreement-griddehazenet.json

The configs' ``bild:`` sections are replaced by the defaults (``--set`` adds overrides after).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from hazefree.training import BildConfig, Trainer, load_config


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (no ties expected in real-valued R_i)."""
    ra, rb = (x.argsort().argsort().double() for x in (a, b))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def run(args) -> dict:
    defaults = [f"bild.{k}={json.dumps(v)}" for k, v in vars(BildConfig()).items() if k != "enabled"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, overrides=[*defaults, "bild.enabled=true", f"steps={args.steps}",
                                                  f"seed={args.seed}", f"out={json.dumps(tmp)}", *args.set])
        tr = Trainer(cfg, progress=False)
        bild, rows = tr.bild, []
        for step in range(cfg.steps):
            batch = tr.sampler.batch(step, 0)
            if step % bild.every == 0:
                val = bild.val_batches.batch(step, 0)
                with torch.no_grad():
                    w = bild.log_weights(batch).exp()
                state = torch.get_rng_state()
                exact, _ = bild.exact_data_part(batch, val, w, tr._lr())
                fast, _ = bild.fast_data_part(batch, val, tr._lr())
                torch.set_rng_state(state)  # the run itself is the same as without the comparison
                pearson = float(torch.corrcoef(torch.stack([exact.double(), fast.double()]))[0, 1])
                row = {"step": step, "spearman": spearman(exact, fast), "pearson": pearson}
                if bild.relative:  # also against the paper's R_i (l_i, not log l_i): the deviation's size
                    bild.relative = False
                    paper, _ = bild.exact_data_part(batch, val, w, tr._lr())
                    bild.relative = True
                    row["spearman_vs_paper"] = spearman(paper, fast)
                torch.set_rng_state(state)
                rows.append(row)
            bild.step(batch, step, 0, tr._lr())
            for s in tr.schedulers.values():
                s.step()
            tr.step += 1
    sp = [r["spearman"] for r in rows]
    pe = [r["pearson"] for r in rows]
    paper = [r["spearman_vs_paper"] for r in rows if "spearman_vs_paper" in r]
    return {"config": args.config, "model": cfg.model, "crop": cfg.data.crop, "batch_size": cfg.batch_size,
            "steps": cfg.steps, "seed": cfg.seed, "overrides": args.set, "bild": vars(cfg.bild),
            "compared_steps": len(rows), "spearman_mean": statistics.fmean(sp), "spearman_min": min(sp),
            "pearson_mean": statistics.fmean(pe), "pearson_min": min(pe),
            **({"spearman_vs_paper_mean": statistics.fmean(paper), "spearman_vs_paper_min": min(paper)} if paper else {}),
            "per_step": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--out", help="write the result here (JSON)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = run(args)
    print(json.dumps({k: v for k, v in res.items() if k != "per_step"}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
