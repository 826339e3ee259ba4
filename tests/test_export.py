"""ONNX export (hazefree/export.py, `hazefree export`): onnxruntime against hazefree.Dehazer on a real photo."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SHARED_DATA

import hazefree
from hazefree import cli, models
from hazefree.io import read_image

REPO = Path(__file__).resolve().parents[1]
PHOTO = SHARED_DATA / "rtts" / "hazy" / "BJ_Baidu_544.jpeg"  # 690 x 436
# Every model usable without a weights file (shipped weights, or none needed: dcp); the default
# model is among them.
EXPORTED = models.pretrained()

needs_photo = pytest.mark.skipif(not PHOTO.is_file(), reason="../shared/data is not available")


def _example():
    """examples/onnx_dehaze.py, the caller-side recipe documented in docs/deployment.md."""
    spec = importlib.util.spec_from_file_location("onnx_dehaze", REPO / "examples" / "onnx_dehaze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    """Each model exported once through the command line."""
    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name in EXPORTED:
        paths[name] = out / f"{name}.onnx"
        assert cli.main(["export", name, "--format", "onnx", "-o", str(paths[name])]) == 0
    return paths


def test_exported_set_covers_the_shipped_models():
    assert hazefree.default_method() in EXPORTED
    assert {"guided-pix2pix", "aod-net", "dcp"} <= set(EXPORTED)


def _check_against_dehazer(graph: Path, method: str, atol: float = 1e-4, airlight_atol: float = 1e-5) -> None:
    """onnxruntime with the example's caller-side airlight against hazefree.Dehazer(method)."""
    import onnxruntime as ort

    example = _example()
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    dehazer = hazefree.Dehazer(method)
    assert meta["method"] == dehazer.method
    photo = read_image(PHOTO).rgb
    # The photo's own size (larger than Guided-Pix2Pix's 512 working size: resized in the graph)
    # and a smaller one (no resize), each with odd and unequal sides.
    for size in [photo.shape[-2:], (301, 419)]:
        image = F.interpolate(photo, size=tuple(size), mode="bilinear", antialias=True).clamp(0, 1)
        expected = dehazer(image)
        rgb = image[0].permute(1, 2, 0).numpy()
        got = example.dehaze(session, rgb)
        assert got["clear"].shape == tuple(expected.clear.shape)
        np.testing.assert_allclose(got["clear"], expected.clear.numpy(), rtol=0, atol=atol)
        if expected.transmission is None:
            assert set(got) == {"clear"}
            continue
        np.testing.assert_allclose(got["transmission"], expected.transmission.numpy(), rtol=0, atol=atol)
        # the example computed A (or the head's estimates) itself: the same estimator, the same tie rule
        if "airlight" in got:  # a head: its estimators are listed, no single one is named
            assert meta["airlight_method"] == "" and json.loads(meta["airlight_estimates"])
            airlight = got["airlight"]
        else:
            assert json.loads(meta["airlight_estimates"]) == []
            airlight = example.airlight(rgb, meta["airlight_method"])
        np.testing.assert_allclose(airlight.flatten(), expected.airlight.flatten().numpy(), rtol=0, atol=airlight_atol)


@pytest.mark.slow
@needs_photo
@pytest.mark.parametrize("name", EXPORTED)
def test_onnxruntime_matches_dehazer(graphs, name):
    _check_against_dehazer(graphs[name], name)


@pytest.mark.slow
@needs_photo
def test_airlight_head_is_in_the_graph(tmp_path, capsys):
    # a trained-looking head (last layer not zero), so that A is the head's, not the reference's
    torch.manual_seed(0)
    options = {"ngf": 4, "num_downs": 4, "work_size": 256, "airlight": "dark_channel_brightest", "airlight_head": True}
    net = models.create("guided-pix2pix", **options)
    torch.nn.init.normal_(net.airlight_head.mlp[-1].weight, std=0.5)
    weights = tmp_path / "headed.safetensors"
    models.save_weights(net, weights, "guided-pix2pix", options)
    graph = tmp_path / "headed.onnx"
    assert cli.main(["export", str(weights), "-o", str(graph)]) == 0
    assert "the caller computes airlight_estimates with max_luma, dark_channel" in capsys.readouterr().out
    _check_against_dehazer(graph, str(weights))


@pytest.mark.slow
@needs_photo
@pytest.mark.parametrize("variant", ["image", "region", "fog"])
def test_haze_gate_is_in_the_graph(tmp_path, variant):
    # a gate that moves g with the image (a trained-looking last layer), with the airlight cap: the
    # photo (resized to 256) and the 301 x 419 image take different patch and opening radii; with a
    # region gate of 3 x 3 cells (stage 13), of two members, that moves g cell by cell too; or a
    # cautious gate of three members with a fog detector between their minimum and median (stage 15)
    torch.manual_seed(0)
    options = {"ngf": 4, "num_downs": 4, "work_size": 256, "airlight": "dark_channel_brightest",
               "airlight_head": True, "haze_gate": True, "prior_airlight_window": 0.03}
    if variant == "region":
        options |= {"region_cells": 3, "region_members": 2}
    if variant == "fog":
        options |= {"gate_members": 3, "gate_fog": True}
    net = models.create("guided-pix2pix", **options)
    torch.nn.init.normal_(net.airlight_head.mlp[-1].weight, std=0.5)
    gates = [*net.haze_gate.members, net.haze_gate.fog] if variant == "fog" else [net.haze_gate]
    if variant == "region":
        gates += net.region_gate.gate.members
    for gate in gates:
        torch.nn.init.normal_(gate.mlp[-1].weight, std=0.5)
        torch.nn.init.zeros_(gate.mlp[-1].bias)
    weights = tmp_path / "gated.safetensors"
    models.save_weights(net, weights, "guided-pix2pix", options)
    graph = tmp_path / "gated.onnx"
    assert cli.main(["export", str(weights), "-o", str(graph)]) == 0
    # A_g = (1 - g) A + g A_prior: this random gate is steep, so float32 rounding in its whole-image
    # input statistics moves A_g by up to 1.5e-5 (measured); J and t stay within 1e-4
    _check_against_dehazer(graph, str(weights), airlight_atol=3e-5)


@needs_photo
@pytest.mark.parametrize("method", ["max_luma", "dark_channel", "dark_channel_brightest"])
def test_example_airlight_matches_physics_on_tied_ranks(method):
    """8-bit photos tie on most ranks; both sides pick the lowest pixel indices among ties."""
    from hazefree.physics import estimate_airlight

    example = _example()
    for path in sorted((SHARED_DATA / "real_hazy_classic" / "hazy").iterdir())[:6]:
        image = read_image(path).rgb
        expected = estimate_airlight(image, method).flatten().numpy()
        got = example.airlight(image[0].permute(1, 2, 0).numpy(), method)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=str(path))


def test_top_indices_breaks_ties_by_index():
    from hazefree.physics import _top_indices

    values = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2, 0.2]])
    assert _top_indices(values, 3).tolist() == [[0, 1, 3], [0, 1, 2]]
    assert _top_indices(values, 1).tolist() == [[1], [0]]


def test_working_size_rounds_half_up_and_keeps_small_images():
    from hazefree.models.guided_pix2pix import working_size

    assert working_size(300, 420, 512) == (300, 420)
    assert working_size(1080, 1920, 512) == (288, 512)
    assert working_size(437, 1024, 512) == (219, 512)  # 218.5 -> 219
    assert working_size(1, 5000, 512) == (1, 512)


def test_airlight_floor_is_refused_not_dropped():
    from hazefree.export import graph_module

    with pytest.raises(ValueError, match="airlight_floor is not supported"):
        graph_module(models.create("guided-pix2pix", ngf=4, num_downs=3, airlight_floor=0.01))


def test_export_unknown_or_unsupported_model_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["export", "aod-net", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert cli.main(["export", "no-such-model", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "unknown method 'no-such-model'" in capsys.readouterr().err
    weights = tmp_path / "ffa.safetensors"
    torch.manual_seed(0)
    models.save_weights(models.create("dehazenet"), weights, model_name="dehazenet")
    assert cli.main(["export", str(weights), "-o", str(tmp_path / "y.onnx")]) == 2
    assert "ONNX export supports" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))


def test_import_hazefree_loads_no_optional_runtime():
    code = (
        "import sys, hazefree, hazefree.cli, hazefree.export, hazefree.distributed; "
        "hazefree.cli.build_parser(); "
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
@needs_photo
def test_example_script_writes_the_dehazed_photo(graphs, tmp_path):
    example = _example()
    target = tmp_path / "clear.png"
    assert example.main([str(graphs["guided-pix2pix"]), str(PHOTO), str(target)]) == 0
    written = read_image(target).rgb
    expected = hazefree.Dehazer("guided-pix2pix")(read_image(PHOTO).rgb).clear
    assert written.shape == expected.shape
    assert (written - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit rounding only
