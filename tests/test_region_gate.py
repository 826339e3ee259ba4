"""The region gate (issue #24, stage 13): its cells and inputs against NumPy, its per-pixel blend
with A kept at the image's g, its tables row by cell, and its fit."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import minimum_filter
from helpers import hazy_ramp

from hazefree import models
from hazefree.models.haze_gate import GATE_FEATURES, RegionGate, blend_prior, cell_views, region_inputs
from hazefree.models.haze_statistics import depth_statistics
from hazefree.physics import estimate_airlight
from hazefree.training.gate import GateConfig, GateData, fit_gate, gate_table

TINY = {"ngf": 4, "num_downs": 3, "radius": 4, "eps": 1e-3, "work_size": None,
        "airlight": "dark_channel_brightest", "airlight_head": True, "airlight_head_features": False,
        "haze_gate": True, "region_cells": 3}


def _pin(gate: torch.nn.Module, g: float) -> None:
    """Every member of ``gate`` made constant: g = 0 or 1 (saturated sigmoid)."""
    members = getattr(gate, "members", [gate])
    with torch.no_grad():
        for m in members:
            m.mlp[-1].weight.zero_()
            m.mlp[-1].bias.fill_(100.0 if g == 1 else -100.0)


def _bilinear(cells: np.ndarray, h: int, w: int) -> np.ndarray:
    """Half-pixel-centred bilinear resize of a small 2-D array, edges held (align_corners=False)."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    (y0, y1, fy), (x0, x1, fx) = axis(cells.shape[0], h), axis(cells.shape[1], w)
    rows = cells[y0] * (1 - fy)[:, None] + cells[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def test_cell_views_are_the_cells_in_row_major_order():
    x = torch.rand(2, 4, 3 * 64, 3 * 64, dtype=torch.float64)  # already the views' size: no resampling
    views = cell_views(x, 3)
    assert views.shape == (18, 4, 64, 64)
    for n in range(2):
        for i in range(3):
            for j in range(3):
                want = x[n, :, 64 * i : 64 * (i + 1), 64 * j : 64 * (j + 1)]
                torch.testing.assert_close(views[9 * n + 3 * i + j], want, rtol=0, atol=1e-12)


def test_region_inputs_hold_the_image_row_and_each_cells_statistics():
    rng = np.random.default_rng(0)
    low = rng.random((1, 3, 128, 128))
    t0 = rng.permutation(128 * 128).reshape(1, 1, 128, 128) / (128 * 128)  # no ties
    tp = rng.permutation(128 * 128).reshape(1, 1, 128, 128) / (128 * 128)
    inputs, g = rng.random((1, GATE_FEATURES)), np.full((1, 1, 1, 1), 0.3)
    got = region_inputs(*(torch.from_numpy(v) for v in (inputs, g, low, t0, tp)), 2).numpy()
    assert got.shape == (1, 4, GATE_FEATURES + 1 + 18)
    for k in range(4):
        np.testing.assert_array_equal(got[0, k, :GATE_FEATURES], inputs[0])
        assert got[0, k, GATE_FEATURES] == 0.3
        i, j = divmod(k, 2)
        cell = (slice(None), slice(None), slice(64 * i, 64 * (i + 1)), slice(64 * j, 64 * (j + 1)))
        for offset, t in ((GATE_FEATURES + 1, t0), (GATE_FEATURES + 10, tp)):
            colour, tc = low[cell][0].reshape(3, -1), t[cell][0, 0].ravel()
            haziest, clearest = np.argsort(tc)[:40], np.argsort(tc)[-40:]  # 1 % of the 64 x 64 cell
            want = np.concatenate([colour[:, haziest].mean(1), [tc[haziest].mean()],
                                   colour[:, clearest].mean(1), [tc[clearest].mean()], [tc.mean()]])
            np.testing.assert_allclose(got[0, k, offset : offset + 9], want, rtol=1e-10)
    # the cells' statistics are depth_statistics of the cell, whatever the cell's size
    np.testing.assert_allclose(got[0, 0, GATE_FEATURES + 1 : GATE_FEATURES + 10],
                               depth_statistics(torch.from_numpy(low[..., :64, :64]), torch.from_numpy(t0[..., :64, :64]))[0].numpy())


def test_region_gate_sets_t_per_pixel_and_a_by_the_image():
    torch.manual_seed(0)
    net = models.create("guided-pix2pix", **TINY).eval()
    plain = models.create("guided-pix2pix", **{k: v for k, v in TINY.items() if k not in ("haze_gate", "region_cells")})
    plain.load_state_dict(net.state_dict(), strict=False)
    hazy = hazy_ramp()
    a_dcp = estimate_airlight(hazy, "dark_channel")
    t_dcp = 1 - 0.95 * minimum_filter((hazy / a_dcp)[0].numpy().min(axis=0), size=15, mode="nearest")
    with torch.no_grad():
        ref = plain.eval()(hazy)
        t0 = ref.coarse_transmission[0, 0].numpy()
        # the image's g at 0, the cells' at 1: the prior's depth with the network's A
        _pin(net.haze_gate, 0), _pin(net.region_gate.gate, 1)
        out = net(hazy)
        np.testing.assert_allclose(out.coarse_transmission[0, 0].numpy(), np.minimum(t0, t_dcp), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.airlight, ref.airlight)
        # the image's g at 1, the cells' at 0: the network's depth with the prior's A
        _pin(net.haze_gate, 1), _pin(net.region_gate.gate, 0)
        out = net(hazy)
        np.testing.assert_allclose(out.coarse_transmission[0, 0].numpy(), t0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.airlight.flatten().numpy(), a_dcp.flatten().numpy(), rtol=1e-6)
        # a 3 x 3 map of g: t blended per pixel by its bilinear interpolation
        cells = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.9, 0.1], [1.0, 0.0, 0.4]])
        net.region_gate.forward = lambda inputs: cells.view(1, 1, 3, 3)
        out = net(hazy)
    g = _bilinear(cells.numpy(), 48, 48)
    want = t0 ** (1 - g) * np.maximum(np.minimum(t0, t_dcp), 1e-3) ** g
    np.testing.assert_allclose(out.coarse_transmission[0, 0].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.airlight.flatten().numpy(), a_dcp.flatten().numpy(), rtol=1e-6)


def test_region_tables_score_each_cell_of_the_models_own_output():
    torch.manual_seed(0)
    net = models.create("guided-pix2pix", **{**TINY, "region_cells": 2}).eval()
    _pin(net.haze_gate, 0)
    with torch.no_grad():  # the network's A well apart from the prior's, which the tables must not take
        net.airlight_head.mlp[-1].bias.fill_(-0.5)
    hazy, clear = hazy_ramp(1), hazy_ramp(2)
    cfg = GateConfig(grid=3, cells=2)
    table = gate_table(net, hazy, clear, cfg)
    assert table.inputs.shape == (4, GATE_FEATURES + 19) and table.loss.shape == (4, 3)
    for g, col in ((0, 0), (1, 2)):  # the table at g is the model with every cell pinned at g
        _pin(net.region_gate.gate, g)
        with torch.no_grad():
            out = net(hazy).clear
        for k, (ys, xs) in enumerate([(slice(0, 24), slice(0, 24)), (slice(0, 24), slice(24, 48)),
                                      (slice(24, 48), slice(0, 24)), (slice(24, 48), slice(24, 48))]):
            want = float((out[..., ys, xs] - clear[..., ys, xs]).abs().mean())
            assert abs(float(table.loss[k, col]) - want) < 1e-6
    real = gate_table(net, hazy, None, cfg)  # each cell against its own teacher
    for k in range(4):
        chosen = int(real.loss[k].argmin())
        assert real.loss[k, chosen] == 0 and real.clipped[k, chosen] <= real.clipped[k, 0] + cfg.real_clip_allowance
        assert all(c > real.clipped[k, 0] + cfg.real_clip_allowance for c in real.clipped[k, chosen + 1 :])


def test_region_fit_tells_cells_apart_and_round_trips(tmp_path):
    # rows are cells: those whose cell statistics (the first local inputs) are high want g = 1
    gen = torch.Generator().manual_seed(0)
    n, f = 270, GATE_FEATURES + 19
    kind = (torch.arange(n) % 3 == 0).long()
    inputs = torch.rand(n, f, generator=gen)
    inputs[:, GATE_FEATURES + 1 : GATE_FEATURES + 6] = kind[:, None] + 0.1 * torch.rand(n, 5, generator=gen)
    grid = torch.linspace(0, 1, 11)
    loss = torch.where(kind[:, None] == 1, 1 - grid, grid)
    scenes = [f"s{i // 9}" for i in range(n)]
    data = GateData(inputs, loss, torch.zeros_like(loss), torch.full((n,), 1 / n), ["a"] * n, scenes)
    gate, _ = fit_gate(data, GateConfig(steps=1500, lr=1e-2, cells=3, members=2))
    assert isinstance(gate, RegionGate) and gate.cells == 3
    g = gate(inputs.view(30, 9, f))
    assert g.shape == (30, 1, 3, 3)
    g = g.flatten()
    # two members, each fitted on half the scenes, over 45 noise inputs: a few rows stray
    assert (g[kind == 1] > 0.5).float().mean() > 0.95 and (g[kind == 0] < 0.5).float().mean() > 0.95
    # in a model, saved and loaded
    net = models.create("guided-pix2pix", **{**TINY, "region_members": 2}).eval()
    net.region_gate = gate
    path = tmp_path / "region.safetensors"
    models.save_weights(net, path, "guided-pix2pix", {**TINY, "region_members": 2})
    hazy = hazy_ramp(3)
    with torch.no_grad():
        torch.testing.assert_close(models.load_file(path)(hazy).clear, net(hazy).clear, rtol=0, atol=0)


def test_blend_takes_the_airlights_g_apart():
    t0, tp = torch.full((1, 1, 2, 2), 0.8), torch.full((1, 1, 2, 2), 0.2)
    a, ap = torch.full((1, 3, 1, 1), 0.6), torch.full((1, 3, 1, 1), 1.0)
    t, ab = blend_prior(t0, a, tp, ap, torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 1, 1))
    torch.testing.assert_close(t, tp) and torch.testing.assert_close(ab, a)
