"""``--airlight`` / ``Dehazer(..., airlight=...)`` takes effect for every method with an airlight
(a learned airlight head is bypassed) and is refused, with a reason, for every method without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hazefree import Dehazer, models
from hazefree.cli import main as cli_main
from hazefree.physics import AIRLIGHT_METHODS

# A scene where the estimators disagree, with answers known by construction: a small saturated
# patch (the brightest luma: max_luma's top 0.1 % of pixels) and a large flat grey region (the
# only place where the dark channel is high: the dark-channel rules' candidates).
PATCH, GREY = (0.9, 0.8, 0.7), 0.75
EXPECTED = {"max_luma": PATCH, "dark_channel": (GREY,) * 3, "dark_channel_brightest": (GREY,) * 3}


def _scene() -> torch.Tensor:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 0.4, (3, 64, 96)).astype(np.float32)
    image[:, 20:50, 50:90] = GREY
    image[:, 5:13, 5:13] = np.array(PATCH, np.float32)[:, None, None]
    return torch.from_numpy(image)[None]


SHIPPED = models.pretrained()
WITHOUT_AIRLIGHT = {"aod-net", "msbdn", "ffa-net", "griddehazenet"}


def test_every_method_is_covered():
    # the lists below must name every registered method, so a new one is not silently left out
    assert set(models.available()) == WITHOUT_AIRLIGHT | {"dcp", "dehazenet", "guided-pix2pix", "guided-pix2pix-paper"}
    assert set(SHIPPED) == {"dcp", "aod-net", "guided-pix2pix"}


@pytest.mark.parametrize("method", sorted(set(SHIPPED) - WITHOUT_AIRLIGHT))
@pytest.mark.parametrize("airlight", AIRLIGHT_METHODS)
def test_shipped_method_uses_the_given_estimator(method, airlight):
    image = _scene()
    out = Dehazer(method, airlight=airlight)(image)
    assert torch.allclose(out.airlight.flatten(), torch.tensor(EXPECTED[airlight]), atol=1e-6)
    if method == "guided-pix2pix":
        # the A reported is the A used: J = (I - A) / t + A, clipped (eq. 42)
        expected = ((image - out.airlight) / out.transmission + out.airlight).clamp(0, 1)
        assert torch.allclose(out.clear, expected, atol=1e-5)


def test_shipped_head_is_bypassed():
    """The shipped default has a learned airlight head: without the override its A is the head's,
    not an estimator's; with it, the estimator's."""
    image = _scene()
    net = Dehazer("guided-pix2pix").model
    assert net.airlight_head is not None
    default = Dehazer("guided-pix2pix")(image).airlight.flatten()
    for airlight, expected in EXPECTED.items():
        assert (default - torch.tensor(expected)).abs().max() > 0.01, airlight
    assert Dehazer("guided-pix2pix", airlight="max_luma").model.airlight_head is None


def test_weights_file_of_an_unshipped_method(tmp_path):
    # dehazenet ships no weights: a file written by training takes the override the same way
    path = tmp_path / "dehazenet.safetensors"
    torch.manual_seed(0)
    models.save_weights(models.create("dehazenet"), path, model_name="dehazenet")
    for airlight, expected in EXPECTED.items():
        out = Dehazer(str(path), airlight=airlight)(_scene())
        assert torch.allclose(out.airlight.flatten(), torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize("method", sorted(WITHOUT_AIRLIGHT))
def test_refused_without_an_airlight(method):
    with torch.device("meta"):
        net = models.create(method)
    with pytest.raises(ValueError, match=rf"method '{method}' has no airlight estimator to override.*"
                                         r"--airlight applies to dcp, dehazenet, guided-pix2pix, guided-pix2pix-paper"):
        models.override_airlight(net, "max_luma", method)


def test_paper_preset_with_a_head_takes_the_override():
    with torch.device("meta"):
        net = models.create("guided-pix2pix-paper", airlight_head=True, airlight_floor=0.01)
    models.override_airlight(net, "dark_channel", "guided-pix2pix-paper")
    assert (net.airlight, net.airlight_head, net.airlight_floor) == ("dark_channel", None, None)


def test_command_line(tmp_path, capsys):
    source = tmp_path / "in.png"
    Image.fromarray((_scene()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(source)
    out = tmp_path / "out"
    assert cli_main(["dehaze", str(source), "-o", str(out), "--method", "aod-net", "--airlight", "max_luma"]) == 2
    err = capsys.readouterr().err
    assert "error: method 'aod-net' has no airlight estimator to override" in err and "Traceback" not in err
    assert not out.exists()
    results = {}
    for airlight in (None, "max_luma"):
        folder = tmp_path / f"out-{airlight}"
        args = ["dehaze", str(source), "-o", str(folder), "--method", "guided-pix2pix"]
        assert cli_main(args + (["--airlight", airlight] if airlight else [])) == 0
        results[airlight] = np.asarray(Image.open(folder / "in.png"), np.float32)
    assert np.abs(results[None] - results["max_luma"]).mean() > 1.0  # levels: the override changed the result
