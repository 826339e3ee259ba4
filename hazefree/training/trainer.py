"""The training loop shared by every model: batches, schedule, validation, atomic checkpoints,
resume, weight average, tqdm and TensorBoard, DDP under ``torchrun``."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..data import CropSampler, PairBank, find_pairs, source_labels
from ..models.weights import CheckpointError, atomic_write, load_state_strict, load_weights, save_weights
from .bild import Bild
from .config import TrainConfig, write_config
from .model import build_model, save_best
from .objectives import Objective, Pix2PixObjective, SupervisedObjective, make_scheduler
from .validation import load_training_data, validate_run


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def bild_split(cfg: TrainConfig, bank: PairBank, train_idx: list[int], val_idx: list[int]) -> tuple[list[int], CropSampler]:
    """(D_t, D_v) for BILD: the training indices that remain, and crops of D_v for the outer objective.

    D_v is ``bild.val_data``'s pairs; or ``bild.val_share`` of the training split's scenes from
    ``bild.val_sources`` (whole scenes, :meth:`PairBank.split`'s grouping), whose benchmark images
    form D_v and which leave D_t with their re-renders; else the run's validation split (whole
    scenes held out of training). Batch k of D_v depends on (seed, k, rank) only."""
    b = cfg.bild
    if b.val_data is not None and b.val_sources is not None:
        raise ValueError("bild.val_data and bild.val_sources both name BILD's D_v: give one")
    if b.val_sources is not None:
        labels = source_labels(dict.fromkeys(bank.sources))
        unknown = sorted(set(b.val_sources) - set(labels.values()))
        if unknown:
            raise ValueError(f"bild.val_sources names no training source: {', '.join(unknown)} "
                             f"(sources: {', '.join(sorted(set(labels.values())))})")
        wanted = set(b.val_sources)
        carved: list[int] = []
        seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
        for src, indices in bank.by_source(train_idx).items():
            if labels[src] in wanted:
                carved += bank.split_scenes(indices, b.val_share, seed)[1]
        out = set(carved)
        train_idx = [i for i in train_idx if i not in out]
        val_idx = [i for i in carved if not bank.rerendered[i]]
        if not val_idx:
            raise ValueError(f"bild.val_sources {b.val_sources}: no training scenes left for D_v")
    elif b.val_data is not None:
        bank = PairBank(find_pairs(b.val_data, cfg.data.pair_pattern).pairs, max_side=cfg.data.max_side,
                        allow_size_mismatch=cfg.data.allow_size_mismatch, skip_bad=cfg.data.skip_bad)
        val_idx = list(range(len(bank)))
    elif not val_idx:
        raise ValueError("BILD needs validation pairs: set data.val_fraction > 0 (--val-fraction) or --val-data DIR")
    return train_idx, CropSampler(bank, val_idx, cfg.data.crop, b.val_batch or cfg.batch_size, cfg.seed + 1,
                                  tuple(cfg.data.scale_range))


class Trainer:
    """The training loop shared by every model. See the module docstring."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        # checked before the data are loaded, which takes a minute on the full training set
        if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {cfg.ema_decay}")
        self.rank, self.world = _dist_info()
        self.out = Path(cfg.out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        if cfg.init:  # a checkpoint found by --resume replaces these weights below
            state, _ = load_weights(cfg.init)
            load_state_strict(self.model, state, cfg.init, cfg.init_new_modules)
        wrap = self._ddp if self.world > 1 else (lambda m: m)
        if cfg.objective == "pix2pix":
            self.objective: Objective = Pix2PixObjective(self.model, cfg, wrap)
        elif cfg.objective == "supervised":
            self.objective = SupervisedObjective(self.model, cfg, wrap)
        else:
            raise ValueError(f"unknown objective {cfg.objective!r}; choose pix2pix, supervised or airlight_head (train())")
        self.schedulers = {
            k: make_scheduler(o, cfg.optim, cfg.steps)
            for k, o in self.objective.optimizers().items()
        }
        self.bank, train_idx, self.val_idx = load_training_data(cfg)
        dv = None
        if cfg.bild.enabled:
            train_idx, dv = bild_split(cfg, self.bank, train_idx, self.val_idx)
        self.sampler = CropSampler(self.bank, train_idx, cfg.data.crop, cfg.batch_size, cfg.seed,
                                   tuple(cfg.data.scale_range), channel_shuffle=cfg.data.channel_shuffle,
                                   balance_sources=cfg.data.balance_sources,
                                   source_weights=cfg.data.source_weights or None)
        self.bild: Bild | None = None
        if cfg.bild.enabled:
            self.bild = Bild(self.objective, cfg, dv, self.world, n_images=len(self.bank))
        self.ema: AveragedModel | None = None
        if cfg.ema_decay is not None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
        self.step = 0
        self.best_psnr = float("-inf")
        if resume:
            self._resume()

    @staticmethod
    def _ddp(module: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(module)

    def _networks(self) -> dict[str, nn.Module]:
        """Everything a checkpoint holds weights of: the objective's networks and BILD's f_phi."""
        extra = {}
        if self.bild is not None:
            evidence = {"memory": self.bild.memory, "consistency": self.bild.consistency}
            extra = {"reweighter": self.bild.net, **{f"reweighter_{k}": m for k, m in evidence.items() if m is not None}}
        return {**self.objective.networks(), **extra}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        extra = {"reweighter": self.bild.opt} if self.bild is not None else {}
        return {**self.objective.optimizers(), **extra}

    def _evaluated(self) -> nn.Module:
        """The network that is validated and kept as best: the weight average if there is one."""
        return self.ema.module if self.ema is not None else self.model

    # checkpoints: RUN/checkpoints/step_000123/{<network>.safetensors, [ema.safetensors,] state.pt}
    def _ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        final = self._ckpt_dir() / f"step_{self.step:07d}"
        tmp = self._ckpt_dir() / f".tmp_step_{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, net in self._networks().items():
            save_weights(net, tmp / f"{name}.safetensors", model_name=self.cfg.model if net is self.model else None,
                         options=self.cfg.model_options if net is self.model else None)
        state = {
            "step": self.step,
            "best_psnr": self.best_psnr,
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "torch_rng": torch.get_rng_state(),
        }
        if self.ema is not None:
            save_weights(self.ema.module, tmp / "ema.safetensors", model_name=self.cfg.model,
                         options=self.cfg.model_options)
            state["ema_n_averaged"] = self.ema.n_averaged
        torch.save(state, tmp / "state.pt")
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a directory rename is atomic: a checkpoint is complete or absent
        for old in self._checkpoints()[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _checkpoints(self) -> list[Path]:
        if not self._ckpt_dir().is_dir():
            return []
        return sorted(p for p in self._ckpt_dir().glob("step_*") if (p / "state.pt").is_file())

    def _resume(self) -> None:
        ckpts = self._checkpoints()
        if not ckpts:
            if self.rank == 0:
                print(f"no checkpoint in {self._ckpt_dir()}; starting from step 0", file=sys.stderr)
            return
        last = ckpts[-1]
        if self.bild is not None and not (last / "reweighter.safetensors").is_file():
            raise CheckpointError(f"{last}: saved without BILD; resume it without --bild")
        for name, net in self._networks().items():
            state, _ = load_weights(last / f"{name}.safetensors")
            load_state_strict(net, state, last / f"{name}.safetensors")
        state = torch.load(last / "state.pt", map_location="cpu", weights_only=True)
        for k, o in self._optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        torch.set_rng_state(state["torch_rng"])
        if self.ema is not None:
            if "ema_n_averaged" not in state:
                raise CheckpointError(f"{last}: saved without a weight average; drop ema_decay to resume it")
            ema_state, _ = load_weights(last / "ema.safetensors")
            load_state_strict(self.ema.module, ema_state, last / "ema.safetensors")
            self.ema.n_averaged.copy_(state["ema_n_averaged"])
        self.step, self.best_psnr = int(state["step"]), float(state["best_psnr"])
        if self.bild is not None and self.rank == 0:
            self._trim_patch_weights()
        if self.rank == 0:
            print(f"resumed from {last} (step {self.step})", file=sys.stderr)

    def validate(self) -> dict[str, float]:
        """:func:`validate` of the validated network (the weight average if there is one)."""
        return validate_run(self._evaluated(), self.bank, self.val_idx, self.cfg.data)

    def _save_best(self, metrics: dict[str, float]) -> None:
        if self.rank != 0 or metrics.get("val_psnr", float("-inf")) <= self.best_psnr:
            return
        self.best_psnr = metrics["val_psnr"]
        save_best(self.out, self._evaluated(), self.cfg, self.step, metrics)

    def fit(self) -> dict[str, float]:
        """Train until ``cfg.steps``; returns the last logged losses and metrics."""
        cfg = self.cfg
        writer = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(self.out, cfg)
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step)
            val = self.bank.by_source(self.val_idx)
            labels = source_labels(val)
            print(f"{len(self.sampler.indices)} training images; validation on {len(self.val_idx)} "
                  f"({', '.join(f'{labels[k]} {len(v)}' for k, v in val.items()) or 'none'})", file=sys.stderr)
        if self.bild is not None and self.rank == 0 and self.step == 0:
            self._patch_weights_csv().unlink(missing_ok=True)  # rows of an earlier run in this folder
        bar = None
        if self.rank == 0 and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.model}", dynamic_ncols=True)
        self.model.train()
        last: dict[str, float] = {}
        t0 = time.time()
        while self.step < cfg.steps:
            batch = self.sampler.batch(self.step, self.rank)
            if self.bild is not None:
                losses, seen = self.bild.step(batch, self.step, self.rank, self._lr())
            else:
                losses = self.objective.step(batch)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for s in self.schedulers.values():
                s.step()
            self.step += 1
            last = dict(losses)
            if writer is not None and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                for k, v in losses.items():
                    writer.add_scalar(f"train/{k}", v, self.step)
                writer.add_scalar("train/lr", self._lr(), self.step)
                writer.add_scalar("train/steps_per_second", self.step / max(time.time() - t0, 1e-9), self.step)
            every = cfg.bild.weights_every or cfg.log_every
            if self.bild is not None and self.rank == 0 and (self.step % every == 0 or self.step == cfg.steps):
                self._log_patch_weights(writer, batch, seen)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                metrics = self.validate() if self.rank == 0 else {}
                last.update(metrics)
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(f"val/{k[4:]}", v, self.step)
                self._save_best(metrics)
            if writer is not None and (self.step % cfg.image_every == 0 or self.step == cfg.steps):
                self._log_images(writer, batch)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self._save_checkpoint()
                if self.world > 1:
                    dist.barrier()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        return last

    def _lr(self) -> float:
        """The current learning rate of the dehazing network (the generator's optimiser)."""
        return next(iter(self.objective.optimizers().values())).param_groups[0]["lr"]

    def _patch_weights_csv(self) -> Path:
        return self.out / "patch_weights.csv"

    def _log_patch_weights(self, writer, batch: dict[str, Tensor], seen) -> None:
        """patch_weights.csv rows (the weights the real update used) and TensorBoard summaries."""
        w = seen.new_weights
        path = self._patch_weights_csv()
        new = not path.is_file()
        with open(path, "a") as fh:
            if new:
                fh.write("step,image,source,y,x,h,w,weight\n")
            labels = source_labels(dict.fromkeys(self.bank.sources))
            for i, box, wi in zip(batch["index"].tolist(), batch["box"].tolist(), w.tolist()):
                fh.write(f"{self.step},{Path(self.bank.files[i]).name},{labels[self.bank.sources[i]]},"
                         f"{box[0]},{box[1]},{box[2]},{box[3]},{wi:.6g}\n")
        if writer is not None:
            writer.add_histogram("bild/weight_times_n", w * w.numel(), self.step)
            writer.add_scalar("bild/max_min_ratio", float(w.max() / w.min().clamp_min(1e-30)), self.step)
            writer.add_scalar("bild/r_scale", seen.scale, self.step)

    def _trim_patch_weights(self) -> None:
        """Drop rows written after the checkpoint a run resumes from (and a line cut by a kill)."""
        path = self._patch_weights_csv()
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        fields = lines[0].count(",") if lines else 0  # a file of an earlier version has no source column
        kept = lines[:1] + [ln for ln in lines[1:] if ln.count(",") == fields and ln.split(",", 1)[0].isdigit()
                            and int(ln.split(",", 1)[0]) <= self.step]
        atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(kept) + "\n"))

    @torch.no_grad()
    def _log_images(self, writer, batch: dict[str, Tensor]) -> None:
        g = self._evaluated()
        was_training = g.training
        g.eval()
        hazy, clear = batch["hazy"][:2], batch["clear"][:2]
        pred = g(hazy).clear
        g.train(was_training)
        grid = torch.cat([torch.cat([h, p, c], dim=-1) for h, p, c in zip(hazy, pred, clear)], dim=-2)
        writer.add_image("samples/hazy_pred_clear", grid.clamp(0, 1), self.step)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, float]:
    """Run a training job; under ``torchrun`` it joins the process group (gloo on CPU, NCCL on GPU).

    The config is checked first (:meth:`TrainConfig.validate`), before any data is read."""
    cfg.validate()
    if cfg.objective == "airlight_head":  # minutes on cached whole images: no checkpoints, no process group
        from .airlight import fit_airlight_head

        return fit_airlight_head(cfg, progress=progress)
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        return Trainer(cfg, resume=resume, progress=progress).fit()
    finally:
        if started:
            dist.destroy_process_group()
