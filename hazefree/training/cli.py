"""``hazefree train``: the sub-command's parser and its handler."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings

import torch

from .. import models
from .config import load_config
from .trainer import train
from .validation import load_training_data, validate_run


def add_train_parser(subparsers) -> None:
    """Register ``hazefree train`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "train",
        help="train a registry model",
        description="Train MODEL; values come from the model's defaults, then --config, then the flags.",
    )
    p.add_argument("model", help="registry name, e.g. guided-pix2pix")
    p.add_argument("--config", help="YAML file mapped onto hazefree.training.TrainConfig")
    p.add_argument("--data", nargs="+", help="paired dataset folder(s) (replaces data.paired)")
    p.add_argument("--synthetic", nargs="+", help="clear+depth folder(s) (replaces data.synthetic)")
    p.add_argument("--steps", type=int, help="total number of optimisation steps")
    p.add_argument("--out", help="run folder (checkpoints, best.safetensors, tensorboard/)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set optim.lr=2e-4 (repeatable)")
    p.add_argument("--ddu", type=int, metavar="S", help="wrap the model in the DDU down-up module: it runs at 1/S size")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-size-mismatch", action="store_true",
                   help="centre-crop pairs whose hazy and clear sizes differ by more than a border of "
                        "hazefree.data.MAX_CROP_BORDER px per side (default: refuse them; data.allow_size_mismatch)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable or truncated images, naming each and how many remain "
                        "(default: stop at the first; data.skip_bad)")
    b = p.add_argument_group("BILD", "bi-level patch reweighting (docs/bild.md); also the config's bild: section")
    b.add_argument("--bild", action="store_true", help="train with BILD's patch reweighting")
    b.add_argument("--bild-alpha", type=float, metavar="A",
                   help="entropy weight against the per-batch normalised validation signal (bild.alpha)")
    held_out = b.add_mutually_exclusive_group()
    held_out.add_argument("--val-fraction", type=float, metavar="F",
                          help="fraction of the training scenes held out for validation (data.val_fraction)")
    held_out.add_argument("--val-data", metavar="DIR",
                          help="a folder of trusted pairs for BILD's outer objective (bild.val_data)")
    p.add_argument("--validate", metavar="WEIGHTS",
                   help="no training: score WEIGHTS on the config's validation split and print the metrics "
                        "(model options: the config's, else those recorded in WEIGHTS)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    for flag, key in ((args.bild, "bild.enabled"), (args.allow_size_mismatch, "data.allow_size_mismatch"),
                      (args.skip_bad, "data.skip_bad")):
        if flag:
            overrides.append(f"{key}=true")
    for key, value in (("steps", args.steps), ("out", args.out), ("bild.alpha", args.bild_alpha),
                       ("data.val_fraction", args.val_fraction), ("ddu", args.ddu)):
        if value is not None:
            overrides.append(f"{key}={value}")
    for key, value in (("data.paired", args.data), ("data.synthetic", args.synthetic), ("bild.val_data", args.val_data)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if args.model not in models.MODELS:
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(models.available())}")
    cfg = load_config(args.config, args.model, overrides)  # checks every key before any data is read
    with _warnings_as_lines():
        return _run(args, cfg)


@contextlib.contextmanager
def _warnings_as_lines():
    """Show warnings (a skipped file, a cropped pair) as ``warning: <message>`` lines on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *_args, **_kw: print(f"warning: {message}", file=sys.stderr)
        yield


def _run(args: argparse.Namespace, cfg) -> int:
    if args.validate is not None:
        # the same held-out images and metric that chose each run's best.safetensors, so weights
        # from different runs or stages can be compared on one split
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # options recorded with the weights (e.g. an inference radius chosen later) unless the config sets them
        net = models.load_file(args.validate, model=cfg.model, **cfg.model_options)
        bank, _, val_idx = load_training_data(cfg)
        print(json.dumps({"weights": args.validate, **validate_run(net, bank, val_idx, cfg.data)}))
        return 0
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"step": cfg.steps, **{k: round(v, 5) for k, v in result.items()}}))
    return 0
