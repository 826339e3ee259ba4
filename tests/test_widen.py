"""Widening a trained Guided-Pix2Pix U-Net: same output, live new channels, the tool's checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hazefree import models
from hazefree.training.widen import widen_guided_pix2pix

TINY = {"ngf": 4, "num_downs": 3, "radius": 4, "eps": 1e-3, "work_size": None}
TOOL = Path(__file__).resolve().parents[1] / "tools" / "widen_weights.py"


def _trained_like(head: bool = False, features: bool = True) -> models.GuidedPix2Pix:
    """A narrow model whose weights are all non-zero (so a misplaced copy shows)."""
    torch.manual_seed(0)
    net = models.create("guided-pix2pix", **TINY, airlight_head=head, airlight_head_features=features)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("head, features", [(False, True), (True, True), (True, False)])
def test_wide_model_computes_the_narrow_one(head, features):
    narrow = _trained_like(head, features)
    options = {**TINY, "ngf": 6, "airlight_head": head, "airlight_head_features": features}
    wide = widen_guided_pix2pix(narrow, models.create("guided-pix2pix", **options)).eval()
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    x = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    torch.testing.assert_close(b.coarse_transmission, a.coarse_transmission, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.airlight, a.airlight, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.clear, a.clear, rtol=0, atol=1e-5)


@pytest.mark.parametrize("wide_head", [{"airlight_head": False}, {"airlight_head": True, "airlight_head_features": False}])
def test_widening_keeps_the_kind_of_head(wide_head):
    narrow = _trained_like(head=True)  # a head that reads the U-Net's features
    with pytest.raises(ValueError, match="keeps the airlight head"):
        widen_guided_pix2pix(narrow, models.create("guided-pix2pix", **{**TINY, "ngf": 6}, **wide_head))


def test_new_channels_learn():
    # the zero weights from new channels into old ones must receive gradient, or the width is dead
    narrow = _trained_like()
    wide = widen_guided_pix2pix(narrow, models.create("guided-pix2pix", **{**TINY, "ngf": 6}))
    wide.train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    wide(x).clear.mean().backward()
    layer = wide.backbone.down[1][0]  # Conv2d 6 -> 12 channels; old: 4 -> 8
    assert torch.all(layer.weight[:8, 4:] == 0)
    assert layer.weight.grad[:8, 4:].abs().sum() > 0
    up = wide.backbone.head[1]  # ConvTranspose2d [up 6, skip 6] -> 1; old rows 0-3 and 6-9
    assert torch.all(up.weight[[4, 5, 10, 11]] == 0) and up.weight.grad[[4, 5, 10, 11]].abs().sum() > 0


def test_depth_must_match():
    narrow = _trained_like()
    with pytest.raises(ValueError, match="num_downs"):
        widen_guided_pix2pix(narrow, models.create("guided-pix2pix", **{**TINY, "ngf": 6, "num_downs": 4}))


def _tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_tool_writes_a_loadable_wider_file(tmp_path):
    src = tmp_path / "narrow.safetensors"
    models.save_weights(_trained_like(), src, "guided-pix2pix", TINY)
    out = tmp_path / "wide.safetensors"
    done = _tool(src, out, "--ngf", 8)
    assert done.returncode == 0, done.stderr
    wide = models.load_file(out)
    assert wide.backbone.down[0][0].out_channels == 8
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(wide(x).clear, models.load_file(src)(x).clear, rtol=0, atol=1e-5)


def test_tool_rejects_what_it_cannot_widen(tmp_path):
    src = tmp_path / "narrow.safetensors"
    models.save_weights(_trained_like(), src, "guided-pix2pix", TINY)
    done = _tool(src, tmp_path / "same.safetensors", "--ngf", 4)
    assert done.returncode == 2 and "not wider" in done.stderr and not (tmp_path / "same.safetensors").exists()
    aod = tmp_path / "aod.safetensors"
    models.save_weights(models.create("aod-net"), aod, "aod-net", {})
    done = _tool(aod, tmp_path / "x.safetensors", "--ngf", 8)
    assert done.returncode == 2 and "not Guided-Pix2Pix" in done.stderr
    done = _tool(tmp_path / "missing.safetensors", tmp_path / "x.safetensors", "--ngf", 8)
    assert done.returncode == 2 and "missing.safetensors" in done.stderr and "Traceback" not in done.stderr


AVERAGE = Path(__file__).resolve().parents[1] / "tools" / "average_weights.py"


def test_average_weights_is_the_mean_and_checks_its_members(tmp_path):
    nets = [models.create("guided-pix2pix", **TINY) for _ in range(2)]
    paths = [tmp_path / f"m{k}.safetensors" for k in range(2)]
    for net, path in zip(nets, paths):
        models.save_weights(net, path, "guided-pix2pix", TINY)
    out = tmp_path / "soup.safetensors"
    done = subprocess.run([sys.executable, str(AVERAGE), *map(str, paths), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    soup = models.load_file(out).state_dict()
    for k, v in soup.items():
        torch.testing.assert_close(v, (nets[0].state_dict()[k] + nets[1].state_dict()[k]) / 2)
    # members of another width (or model) are refused, and nothing is written
    wide = tmp_path / "wide.safetensors"
    models.save_weights(models.create("guided-pix2pix", **{**TINY, "ngf": 6}), wide, "guided-pix2pix", {**TINY, "ngf": 6})
    bad = subprocess.run([sys.executable, str(AVERAGE), str(paths[0]), str(wide), "--out", str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "wide.safetensors" in bad.stderr and not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("tool, args", [
    ("ship_weights.py", ["guided-pix2pix"]),
    ("average_weights.py", ["{bad}", "--out", "{out}"]),
    ("widen_weights.py", ["{out}", "--ngf", "8"]),
])
def test_weights_tools_name_an_unreadable_file_without_a_traceback(tmp_path, tool, args):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    out = tmp_path / "out.safetensors"
    path = Path(__file__).resolve().parents[1] / "tools" / tool
    argv = [str(bad), *(a.format(bad=bad, out=out) for a in args)]
    done = subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {bad}:") and "Traceback" not in done.stderr
    assert not out.exists()
