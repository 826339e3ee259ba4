"""The haze gate (issue #24, stage 11): its blend against NumPy, the model with g pinned at 0 and 1,
the gate's tables and its fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import grey_opening, minimum_filter
from helpers import hazy_ramp

from hazefree import models
from hazefree.models.haze_gate import CautiousGate, blend_prior
from hazefree.models.weights import save_weights
from hazefree.physics import estimate_airlight, opened_maximum
from hazefree.training.gate import (
    GateConfig,
    GateData,
    balance_collections,
    fit_fog,
    fit_gate,
    gate_table,
    interpolate,
)

TINY = {"ngf": 4, "num_downs": 3, "radius": 4, "eps": 1e-3, "work_size": None,
        "airlight": "dark_channel_brightest", "airlight_head": True, "airlight_head_features": False}


def _pin(net: torch.nn.Module, g: float) -> torch.nn.Module:
    """``net``'s gate made constant: g = 0 or 1 (saturated sigmoid)."""
    with torch.no_grad():
        net.haze_gate.mlp[-1].weight.zero_()
        net.haze_gate.mlp[-1].bias.fill_(100.0 if g == 1 else -100.0)
    return net


def test_blend_is_optical_depth_interpolation():
    rng = np.random.default_rng(0)
    t0, tp = rng.uniform(0.05, 1, (2, 1, 1, 5, 5))
    a, ap = rng.uniform(0.5, 1, (2, 1, 3, 1, 1))
    for g in (0.0, 0.3, 1.0, 1.5):  # beyond 1 (stage 14): deeper than the prior, A stays the prior's
        t, ab = blend_prior(*(torch.from_numpy(v) for v in (t0, a, tp, ap)), torch.tensor(g, dtype=torch.float64))
        tau = -np.log(t0) + g * np.maximum(0.0, np.log(t0) - np.log(tp))
        np.testing.assert_allclose(t.numpy(), np.exp(-tau), rtol=1e-12)
        w = min(g, 1.0)
        np.testing.assert_allclose(ab.numpy(), (1 - w) * a + w * ap, rtol=1e-12)


def test_gate_at_zero_is_the_network_and_at_one_takes_the_prior():
    torch.manual_seed(0)
    plain = models.create("guided-pix2pix", **TINY).eval()
    gated = models.create("guided-pix2pix", **TINY, haze_gate=True).eval()
    gated.load_state_dict(plain.state_dict(), strict=False)
    hazy = hazy_ramp()
    with torch.no_grad():
        ref = plain(hazy)
        assert torch.equal(_pin(gated, 0)(hazy).clear, ref.clear)
        strong = _pin(gated, 1)(hazy)
    # g = 1, independently: He et al.'s t = 1 - 0.95 min-filter(min_c I / A) with a 15 px window
    # (no rescale: the tiny model runs at full size), the smaller of it and the network's t0, A of DCP.
    a_dcp = estimate_airlight(hazy, "dark_channel")
    img = (hazy / a_dcp)[0].numpy().min(axis=0)
    t_dcp = 1 - 0.95 * minimum_filter(img, size=15, mode="nearest")
    t0 = ref.coarse_transmission[0, 0].numpy()
    np.testing.assert_allclose(strong.coarse_transmission[0, 0].numpy(), np.minimum(t0, t_dcp), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(strong.airlight.flatten().numpy(), a_dcp.flatten().numpy(), rtol=1e-6)
    assert strong.clear.mean() < ref.clear.mean()  # more haze removed: a darker result


def test_interpolate_matches_numpy():
    rng = np.random.default_rng(1)
    table = rng.random((6, 11))
    g = rng.random(6)
    got = interpolate(torch.from_numpy(table), torch.from_numpy(g)).numpy()
    want = [np.interp(gi, np.linspace(0, 1, 11), row) for gi, row in zip(g, table)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # a grid up to 1.5 (stage 14)
    table, g = rng.random((6, 16)), 1.5 * rng.random(6)
    got = interpolate(torch.from_numpy(table), torch.from_numpy(g), top=1.5).numpy()
    want = [np.interp(gi, np.linspace(0, 1.5, 16), row) for gi, row in zip(g, table)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_fit_separates_images_that_need_different_strengths():
    # two kinds of image, told apart by their first input: one's loss is least at g = 0, the other's at g = 1
    gen = torch.Generator().manual_seed(0)
    n = 64
    kind = torch.arange(n) % 2
    inputs = torch.rand(n, 27, generator=gen)
    inputs[:, 0] = kind + 0.1 * torch.rand(n, generator=gen)
    grid = torch.linspace(0, 1, 11)
    loss = torch.where(kind[:, None] == 1, 1 - grid, grid)
    data = GateData(inputs, loss, torch.zeros_like(loss), torch.full((n,), 1 / n), ["a"] * n)
    gate, history = fit_gate(data, GateConfig(steps=400, lr=1e-2))
    g = gate(inputs).flatten()
    assert history[-1] < 0.1 * history[0]
    assert g[kind == 1].min() > 0.8 and g[kind == 0].max() < 0.2
    # relative: errors that are not zero at g = 0, one kind's ten times the other's, still told apart
    data = data._replace(loss=torch.where(kind[:, None] == 1, 10 - 5 * grid, 0.1 + 0.1 * grid))
    gate, _ = fit_gate(data, GateConfig(steps=3000, lr=1e-2, loss="relative"))
    g = gate(inputs).flatten()
    assert g[kind == 1].min() > 0.8 and g[kind == 0].max() < 0.2


def test_relative_loss_weighs_well_restored_images_as_much_as_hard_ones():
    # ten hard images gain 0.02 of L1 at g = 1 (0.20 -> 0.18), one easy image loses 0.004 (0.01 -> 0.014):
    # by L1 the strength wins, relative to each image's own error (-10 % x 10 against +40 %) too,
    # but with two easy images per hard one the relative loss keeps g = 0
    grid = torch.linspace(0, 1, 11)
    hard = 0.20 - 0.02 * grid
    easy = 0.01 + 0.004 * grid
    inputs = torch.zeros(30, 27)
    loss = torch.stack([hard] * 10 + [easy] * 20)
    data = GateData(inputs, loss, torch.zeros_like(loss), torch.full((30,), 1 / 30), ["a"] * 30)
    g_l1 = fit_gate(data, GateConfig(steps=300, lr=1e-2))[0](inputs).mean()
    g_rel = fit_gate(data, GateConfig(steps=300, lr=1e-2, loss="relative"))[0](inputs).mean()
    assert g_l1 > 0.9 and g_rel < 0.1


def test_table_targets(tmp_path):
    torch.manual_seed(0)
    net = _pin(models.create("guided-pix2pix", **TINY, haze_gate=True).eval(), 0)
    hazy = hazy_ramp(1)
    cfg = GateConfig(grid=5)
    with torch.no_grad():
        own = net(hazy).clear
    paired = gate_table(net, hazy, own, cfg)
    assert paired.loss[0] < 1e-6 and paired.loss[-1] > 1e-3  # the pair's target is the g = 0 output
    real = gate_table(net, hazy, None, cfg)
    chosen = int(real.loss.argmin())
    assert real.loss[chosen] == 0 and real.clipped[chosen] <= real.clipped[0] + cfg.real_clip_allowance
    later = real.clipped[chosen + 1 :]
    assert all(c > real.clipped[0] + cfg.real_clip_allowance for c in later)  # the strongest allowed
    # the gated model round-trips through a weights file
    path = tmp_path / "gated.safetensors"
    save_weights(net, path, "guided-pix2pix", {**TINY, "haze_gate": True})
    with torch.no_grad():
        assert torch.equal(models.load_file(path)(hazy).clear, own)


def test_interpolate_clamps_outside_the_grid():
    table = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    got = interpolate(table, torch.tensor([-0.5, 1.5]))
    assert torch.equal(got, torch.tensor([0.0, 3.0]))


def test_opened_maximum_matches_scipy():
    rng = np.random.default_rng(2)
    image = rng.random((2, 3, 30, 41))
    image[0, :, 5, 7] = 3.0  # a lamp smaller than the window: gone after the opening
    got = opened_maximum(torch.from_numpy(image), 5).numpy()
    want = np.array([[grey_opening(ch, size=5, mode="nearest").max() for ch in img] for img in image])
    np.testing.assert_allclose(got[..., 0, 0], want, rtol=1e-12)
    assert got[0].max() < 1.0


def test_prior_airlight_capped_by_the_opening():
    torch.manual_seed(0)
    net = _pin(models.create("guided-pix2pix", **TINY, haze_gate=True, prior_airlight_window=0.5).eval(), 1)
    hazy = hazy_ramp(2)
    # a 16 x 16 lamp where the haze is densest: larger than DCP's 15 px patch, so it lifts DCP's A,
    # smaller than the 25 px opening (0.5 x 48 px), so the cap ignores it
    hazy[..., 2:18, 0:16] = 1.0
    with torch.no_grad():
        out = net(hazy)
    a_dcp = estimate_airlight(hazy, "dark_channel").flatten().numpy()
    cap = np.array([grey_opening(ch, size=25, mode="nearest").max() for ch in hazy[0].numpy()])
    assert (a_dcp > cap + 0.05).any()  # the lamp lifts DCP's A
    np.testing.assert_allclose(out.airlight.flatten().numpy(), np.minimum(a_dcp, cap), rtol=1e-6)


def test_cautious_gate_takes_strength_only_where_every_fold_asks():
    # kind-1 images (best at g = 1) come from one scene only: the member fitted without that scene
    # has never seen them, so the minimum stays low there; kind 1 spread over many scenes is cleared
    gen = torch.Generator().manual_seed(3)
    n = 200
    kind = (torch.arange(n) % 4 == 0).long()
    inputs = torch.rand(n, 27, generator=gen)
    inputs[:, :5] = kind[:, None] + 0.1 * torch.rand(n, 5, generator=gen)
    grid = torch.linspace(0, 1, 11)
    loss = torch.where(kind[:, None] == 1, 1 - grid, grid)
    spread = [f"s{i}" for i in range(n)]
    lonely = [("lonely" if k else f"s{i}") for i, k in enumerate(kind.tolist())]
    cfg = GateConfig(steps=1500, lr=1e-2, members=4)
    for scenes, cleared in ((spread, True), (lonely, False)):
        data = GateData(inputs, loss, torch.zeros_like(loss), torch.full((n,), 1 / n), ["a"] * n, scenes)
        gate, _ = fit_gate(data, cfg)
        assert isinstance(gate, CautiousGate) and len(gate.members) == 4
        g = gate(inputs).flatten()
        members = torch.stack([m(inputs).flatten() for m in gate.members])
        assert torch.equal(g, members.amin(dim=0))
        assert g[kind == 0].max() < 0.2
        assert (g[kind == 1].min() > 0.7) if cleared else (g[kind == 1].max() < 0.2)


def test_gate_beyond_the_prior(tmp_path):
    # gate_max 1.5 (stage 14), the gate saturated: half as deep again as the deeper of t0 and DCP's t,
    # DCP's A; the option round-trips through a weights file
    torch.manual_seed(0)
    options = {**TINY, "haze_gate": True, "gate_max": 1.5}
    net = _pin(models.create("guided-pix2pix", **options).eval(), 1)
    plain = models.create("guided-pix2pix", **TINY).eval()
    plain.load_state_dict(net.state_dict(), strict=False)
    hazy = hazy_ramp(4)
    a_dcp = estimate_airlight(hazy, "dark_channel")
    t_dcp = 1 - 0.95 * minimum_filter((hazy / a_dcp)[0].numpy().min(axis=0), size=15, mode="nearest")
    with torch.no_grad():
        t0 = plain(hazy).coarse_transmission[0, 0].numpy()
        out = net(hazy)
    deeper = np.maximum(np.minimum(t0, t_dcp), 1e-3)
    np.testing.assert_allclose(out.coarse_transmission[0, 0].numpy(), t0 ** -0.5 * deeper**1.5, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.airlight.flatten().numpy(), a_dcp.flatten().numpy(), rtol=1e-6)
    path = tmp_path / "deep.safetensors"
    save_weights(net, path, "guided-pix2pix", options)
    with torch.no_grad():
        assert torch.equal(models.load_file(path)(hazy).clear, out.clear)



def _gate_numpy(gate: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """A :class:`HazeGate`'s output (N), its MLP evaluated in NumPy."""
    x = ((inputs - gate.shift) / gate.scale).double().numpy()
    w0, b0, w1, b1 = (p.detach().double().numpy() for p in (*gate.mlp[0].parameters(), *gate.mlp[2].parameters()))
    return gate.top / (1 + np.exp(-(np.maximum(x @ w0.T + b0, 0) @ w1.T + b1)[:, 0]))


def test_fog_gate_moves_from_the_members_minimum_to_their_median():
    # stage 15: g = min + p (median - min), p the fog detector's; p pinned at 0 is the plain cautious gate
    torch.manual_seed(1)
    inputs = torch.randn(64, 27)
    for k in (5, 4):  # an even K takes the lower middle member
        gate = CautiousGate(k, fog=True).eval()
        with torch.no_grad():
            for m in [*gate.members, gate.fog]:
                torch.nn.init.normal_(m.mlp[-1].weight, std=1.0)
                torch.nn.init.normal_(m.mlp[-1].bias, std=1.0)
            g = gate(inputs).flatten().double().numpy()
        each = np.sort(np.stack([_gate_numpy(m, inputs) for m in gate.members]), axis=0)
        low, middle = each[0], each[(k - 1) // 2]
        p = _gate_numpy(gate.fog, inputs)
        assert p.min() < 0.3 and p.max() > 0.7 and (middle - low).max() > 0.1  # nothing degenerate
        np.testing.assert_allclose(g, low + p * (middle - low), rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            gate.fog.mlp[-1].weight.zero_()
            for bias, expected in ((-100.0, low), (100.0, middle)):
                gate.fog.mlp[-1].bias.fill_(bias)
                np.testing.assert_allclose(gate(inputs).flatten().double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_fog_detector_weighs_the_two_classes_equally():
    # one informative input, N(0, 1) on 950 paired rows and N(1, 1) on 50 real photos: with the classes
    # weighed equally the posterior is sigmoid(x - 1/2) (equal variances), 1/2 at x = 1/2 whatever
    # the classes' sizes; by count alone it would be sigmoid(x - 1/2 + ln(50 / 950)), 0.05 there
    gen = torch.Generator().manual_seed(0)
    n_real, n_pair = 50, 950
    real = torch.arange(n_real + n_pair) < n_real
    inputs = torch.randn(n_real + n_pair, 27, generator=gen)
    inputs[:, 0] += real.float()
    sources = ["real_unpaired" if r else "sots_outdoor" for r in real.tolist()]
    zeros = torch.zeros(len(sources), 11)
    data = GateData(inputs, zeros, zeros, torch.full((len(sources),), 1 / len(sources)), sources, sources)
    detector, history = fit_fog(data, GateConfig(steps=1500, weight_decay=1e-2, hidden=4))
    assert history[-1] < history[0]
    probe = torch.zeros(7, 27)
    probe[:, 0] = torch.linspace(-1.0, 2.0, 7)
    with torch.no_grad():
        p = detector(probe).flatten().numpy()
    assert abs(p[3] - 0.5) < 0.15 and (np.diff(p) > 0).all()


def test_balance_collections_shares_the_real_weight_by_collection():
    # 2 paired rows of weight 0.1, then 6 DAWN photos, 3 RIDCP and 1 PTTD of 0.08 each (real total 0.8):
    # balanced, each collection holds 0.8 / 3, spread over its photos; the paired rows keep 0.1
    scenes = ["sots_outdoor/1", "sots_outdoor/2", *(f"real_unpaired/dawn_foggy-{i:03d}" for i in range(6)),
              *(f"real_unpaired/ridcp_{n}_input" for n in ("a", "b", "c")), "real_unpaired/pttd_BJ_Baidu_1"]
    sources = ["sots_outdoor"] * 2 + ["real_unpaired"] * 10
    weight = torch.tensor([0.1, 0.1] + [0.08] * 10)
    zeros = torch.zeros(12, 11)
    data = GateData(torch.zeros(12, 27), zeros, zeros, weight, sources, scenes)
    out = balance_collections(data).weight.numpy()
    third = 0.8 / 3
    expected = np.array([0.1, 0.1] + [third / 6] * 6 + [third / 3] * 3 + [third])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="no real photos"):
        balance_collections(data._replace(sources=["sots_outdoor"] * 12))


def test_fit_gate_with_fog(tmp_path):
    # the tables' real photos (source real_unpaired) want g = 1, the paired images g = 0, and an input
    # tells them apart: the fitted fog gate reads them, and the option round-trips through a file
    gen = torch.Generator().manual_seed(2)
    n = 120
    real = torch.arange(n) % 3 == 0
    inputs = torch.rand(n, 27, generator=gen)
    inputs[:, 0] += 2 * real.float()
    grid = torch.linspace(0, 1, 11)
    loss = torch.where(real[:, None], 1 - grid, grid)
    sources = ["real_unpaired" if r else "sots_outdoor" for r in real.tolist()]
    data = GateData(inputs, loss, torch.zeros_like(loss), torch.full((n,), 1 / n), sources, [f"s{i}" for i in range(n)])
    with pytest.raises(ValueError, match="members > 1"):
        fit_gate(data, GateConfig(fog=True))
    gate, _ = fit_gate(data, GateConfig(steps=1500, lr=1e-2, members=3, fog=True))
    assert gate.fog is not None
    with torch.no_grad():
        p = gate.fog(inputs).flatten()
    assert p[real].min() > 0.9 and p[~real].max() < 0.1
    torch.manual_seed(0)
    options = {**TINY, "haze_gate": True, "gate_members": 3, "gate_fog": True}
    net = models.create("guided-pix2pix", **options).eval()
    net.haze_gate = gate
    path = tmp_path / "fog.safetensors"
    save_weights(net, path, "guided-pix2pix", options)
    hazy = hazy_ramp(4)
    with torch.no_grad():
        assert torch.equal(models.load_file(path)(hazy).clear, net(hazy).clear)
    with pytest.raises(ValueError, match="gate_members > 1"):
        models.create("guided-pix2pix", **TINY, haze_gate=True, gate_fog=True)
