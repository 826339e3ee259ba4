"""Robustness guarantees: hostile tensors, degenerate images, killed training runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hazefree
from hazefree import models
from hazefree.models.weights import load_weights
from hazefree.physics import add_haze, remove_haze

TINY = {"ngf": 4, "num_downs": 3, "radius": 4, "eps": 1e-3, "work_size": None}


def _methods():
    torch.manual_seed(0)
    nets = {"dcp": models.create("dcp").eval(),
            "guided-pix2pix (random init)": models.create("guided-pix2pix").eval()}
    if models.has_pretrained("guided-pix2pix"):
        nets["guided-pix2pix (shipped)"] = models.load("guided-pix2pix")
    return nets


def _contents():
    g = torch.Generator().manual_seed(0)
    sky = torch.ones(1, 3, 40, 60)
    sky[..., 25:, :] = torch.rand(1, 3, 15, 60, generator=g) * 0.5
    return {
        "black": torch.zeros(1, 3, 40, 60),
        "white": torch.ones(1, 3, 40, 60),
        "grey": torch.full((1, 3, 40, 60), 0.5),
        "saturated sky": sky,
        "noise": torch.rand(1, 3, 40, 60, generator=g),
        "1x1": torch.rand(1, 3, 1, 1, generator=g),
        "1x500": torch.rand(1, 3, 1, 500, generator=g),
        "500x2": torch.rand(1, 3, 500, 2, generator=g),
    }


@pytest.mark.parametrize("content", list(_contents()))
def test_degenerate_images_give_finite_valid_output(content):
    image = _contents()[content]
    for name, net in _methods().items():
        with torch.no_grad():
            out = net(image)
        assert out.clear.shape == image.shape, name
        assert torch.isfinite(out.clear).all(), f"{name} on {content}: non-finite pixels"
        assert out.clear.min() >= 0 and out.clear.max() <= 1, name
        if content in ("white", "grey"):
            # a flat image has no haze structure to remove: it must not turn black
            assert out.clear.mean() > 0.2, f"{name} turned a {content} image dark"


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((1, 3, 8, 8), float("nan")), "NaN or Inf"),
        (torch.full((1, 3, 8, 8), float("inf")), "NaN or Inf"),
        (torch.full((1, 3, 8, 8), 1.5), r"\[0, 1\]"),
        (torch.full((1, 3, 8, 8), -0.1), r"\[0, 1\]"),
        (torch.rand(1, 4, 8, 8), "3 channels"),
        (torch.rand(8, 8), "N x C x H x W"),
        (torch.zeros(1, 3, 0, 8), "empty"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), "floating-point"),
    ],
)
def test_api_rejects_bad_tensors(bad, message):
    with pytest.raises(ValueError, match=message):
        hazefree.dehaze(bad, method="dcp")


def test_api_unknown_airlight():
    with pytest.raises(ValueError, match="unknown airlight method"):
        hazefree.dehaze(torch.rand(3, 8, 8), method="dcp", airlight="brightest")


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 24), w=st.integers(1, 24),
    t_min=st.floats(0.01, 0.5), seed=st.integers(0, 2**16),
)
def test_scattering_model_properties(h, w, t_min, seed):
    g = torch.Generator().manual_seed(seed)
    clear = torch.rand(1, 3, h, w, generator=g)
    t = torch.rand(1, 1, h, w, generator=g) * (1 - t_min) + t_min
    a = torch.rand(3, generator=g) * 0.5 + 0.5
    hazy = add_haze(clear, t, a)
    assert hazy.shape == clear.shape and torch.isfinite(hazy).all()
    assert 0 <= hazy.min() and hazy.max() <= 1
    back = remove_haze(hazy, t, a, t_min=t_min)
    assert torch.isfinite(back).all() and 0 <= back.min() and back.max() <= 1
    torch.testing.assert_close(back, clear, atol=1e-4, rtol=0)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**16), kind=st.sampled_from(["rand", "flat", "binary"]))
def test_dcp_property(h, w, seed, kind):
    g = torch.Generator().manual_seed(seed)
    if kind == "rand":
        x = torch.rand(1, 3, h, w, generator=g)
    elif kind == "flat":
        x = torch.full((1, 3, h, w), float(torch.rand(1, generator=g)))
    else:
        x = (torch.rand(1, 3, h, w, generator=g) > 0.5).float()
    out = models.create("dcp")(x)
    assert out.clear.shape == x.shape and torch.isfinite(out.clear).all()
    assert 0 <= out.clear.min() and out.clear.max() <= 1
    assert ((out.transmission >= 0) & (out.transmission <= 1)).all()


def _tiny_dataset(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "hazy").mkdir(parents=True)
    (root / "clear").mkdir(parents=True)
    for i in range(4):
        clear = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(clear).save(root / "clear" / f"{i}.png")
        Image.fromarray((clear * 0.6 + 90).astype(np.uint8)).save(root / "hazy" / f"{i}.png")
    return root


def _train_cmd(data: Path, out: Path, steps: int, resume: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "hazefree", "train", "guided-pix2pix", "--data", str(data),
           "--steps", str(steps), "--out", str(out), "--no-progress",
           "--set", f"model_options={json.dumps(TINY)}", "--set", "ndf=4", "--set", "data.crop=32",
           "--set", "batch_size=2", "--set", "val_every=1000", "--set", "checkpoint_every=5",
           "--set", "threads=1", "--set", "keep_checkpoints=100"]
    return cmd + list(extra) + (["--resume"] if resume else [])


@pytest.mark.slow
@pytest.mark.parametrize("bild", [False, True], ids=["plain", "bild"])
def test_sigkill_then_resume_reaches_the_same_weights(tmp_path, bild):
    """Kill a training process at a random moment; --resume loses at most the steps since the
    last checkpoint and ends with exactly the weights of an uninterrupted run (with --bild: also
    the reweighting network's, and the same patch_weights.csv)."""
    data = _tiny_dataset(tmp_path / "data")
    extra = ("--bild", "--val-fraction", "0.25") if bild else ()
    networks = ["generator", "discriminator"] + (["reweighter"] if bild else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 40
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(data, ref, steps, extra=extra), check=True, env=env, capture_output=True, timeout=300)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(data, run, steps, extra=extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "checkpoints").glob("step_0000010")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert ckpts, "the run was killed before its first checkpoint"
    for c in ckpts:  # every checkpoint on disk is complete
        assert {p.name for p in c.iterdir()} == {f"{n}.safetensors" for n in networks} | {"state.pt"}
    subprocess.run(_train_cmd(data, run, steps, resume=True, extra=extra), check=True, env=env, capture_output=True, timeout=300)
    final = f"step_{steps:07d}"
    for name in networks:
        a = load_weights(ref / "checkpoints" / final / f"{name}.safetensors")[0]
        b = load_weights(run / "checkpoints" / final / f"{name}.safetensors")[0]
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"
    if bild:
        assert (run / "patch_weights.csv").read_text() == (ref / "patch_weights.csv").read_text()


def test_large_image_at_working_resolution():
    """A 12-megapixel photo: the U-Net runs at its working size, t and J come back at full size."""
    torch.manual_seed(0)
    net = models.create("guided-pix2pix").eval()
    y = torch.linspace(0, 1, 3000).view(1, 1, 3000, 1)
    x = torch.linspace(0, 1, 4000).view(1, 1, 1, 4000)
    image = torch.cat([0.6 + 0.3 * y * x, 0.5 + 0.4 * x.expand(1, 1, 3000, 4000), 0.7 - 0.2 * y.expand(1, 1, 3000, 4000)], 1)
    with torch.no_grad():
        out = net(image)
    assert out.coarse_transmission.shape[-2:] == (384, 512)
    assert out.clear.shape == image.shape and out.transmission.shape == (1, 1, 3000, 4000)
    assert torch.isfinite(out.clear).all() and 0 <= out.clear.min() and out.clear.max() <= 1
