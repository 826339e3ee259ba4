"""Data-parallel training keeps the ranks in step: after N steps under ``torchrun`` (2 processes,
gloo) every rank holds the same parameters (the model's and BILD's reweighter f_phi), and they
differ from a single process trained on rank 0's batches alone (which is what a rank would hold
if its gradients were not averaged with the other rank's)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import make_paired_dataset

REPO = Path(__file__).resolve().parents[1]

# Runs a Trainer (under torchrun or alone) and saves every network's parameters of this rank.
DRIVER = """
import os, sys
import torch
import torch.distributed as dist
from hazefree.training.config import load_config
from hazefree.training.trainer import Trainer

cfg, out = load_config(sys.argv[1]), sys.argv[2]
world = int(os.environ.get("WORLD_SIZE", "1"))
if world > 1:
    dist.init_process_group("gloo")
trainer = Trainer(cfg, progress=False)
trainer.fit()
rank = dist.get_rank() if world > 1 else 0
state = {name: {k: v.detach().clone() for k, v in net.state_dict().items()}
         for name, net in trainer._networks().items()}
torch.save(state, os.path.join(out, f"rank{rank}-of-{world}.pt"))
if world > 1:
    dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, bild: dict, processes: int) -> list[dict]:
    data = tmp_path / "data"
    if not data.exists():
        make_paired_dataset(data, 6, 40)
    cfg = {
        "model": "aod-net", "steps": 3, "batch_size": 2, "val_every": 3, "checkpoint_every": 3, "threads": 1,
        "out": str(tmp_path / f"run-{processes}"), "data": {"paired": [str(data)], "crop": 32, "val_fraction": 0.34},
        "bild": bild,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "driver.py").write_text(DRIVER)
    out = tmp_path / f"params-{processes}"
    out.mkdir()
    launcher = [] if processes == 1 else [
        "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={_free_port()}"]
    cmd = [sys.executable, *launcher, str(tmp_path / "driver.py"), str(tmp_path / "cfg.yaml"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}-of-{processes}.pt", weights_only=True) for r in range(processes)]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("bild", [
    {"enabled": False},
    {"enabled": True},
    # the evidence of bild.memory and bild.consistency counts every rank's batch
    {"enabled": True, "memory": True, "consistency": True, "alpha": 0.5, "every": 1},
], ids=["plain", "bild", "bild-evidence"])
def test_ranks_agree_and_differ_from_one_process(tmp_path, bild):
    rank0, rank1 = _run(tmp_path, bild, 2)
    (alone,) = _run(tmp_path, bild, 1)
    networks = {"model"} | ({"reweighter"} if bild["enabled"] else set())
    networks |= {f"reweighter_{k}" for k in ("memory", "consistency") if bild.get(k)}
    assert networks <= set(rank0), set(rank0)
    for name in networks:
        assert _same(rank0[name], rank1[name]), f"{name}: the ranks' parameters differ after 3 steps"
    # the averaged gradients moved the model elsewhere than rank 0's batches alone would have
    assert not _same(rank0["model"], alone["model"])
    for name in networks - {"model"}:
        assert not _same(rank0[name], alone[name]), name
