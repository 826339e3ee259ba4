"""tools/select_real_haze.py's rule (issue #24): which candidate is feasible, which one is chosen,
and whether it ships, on hand-made scores and on the recorded scores of stages 13 and 14."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    import sys

    sys.path.insert(0, str(REPO / "tools"))  # the tool imports tools/_common.py as a script does
    try:
        spec = importlib.util.spec_from_file_location("select_real_haze", REPO / "tools" / "select_real_haze.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "tools"))
    return module


def _row(val_psnr: float, fade: float, clipped: float = 0.002, darkened: int = 1) -> dict:
    return {"val_psnr": val_psnr, "fade": fade, "clipped": clipped, "darkened": darkened}


ROWS = {
    "shipped": _row(20.50, 1.00),
    "gain_db/1": _row(20.60, 0.97),  # feasible; gains 0.10 dB, not 5 % of FADE
    "gain_db/2": _row(20.62, 0.99),  # feasible, higher FADE than its run's first
    "low_psnr/1": _row(20.30, 0.80),  # below 20.40
    "clips/1": _row(20.70, 0.80, clipped=0.006),  # over 0.5 %
    "dark/1": _row(20.70, 0.80, darkened=3),  # over 2 darkened photos
    "step_back/1": _row(20.44, 0.90),  # 0.06 dB below the shipped model
    "murkier/1": _row(20.80, 1.01),  # FADE above the shipped model's
}


def _runs(*names: str) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for name in names:
        runs.setdefault(name.split("/")[0], []).append(name)
    return runs


def test_feasibility_and_choice(tool):
    stage13 = tool.Rule(min_psnr=20.40, factor=0.95, max_darkened=2, step_back=0.05, psnr_gain=0.10)
    verdict = tool.decide(ROWS, _runs(*[n for n in ROWS if n != "shipped"]), stage13)
    assert verdict["choices"] == {"gain_db": "gain_db/1"}  # the lower FADE of its run's feasible ones
    assert verdict["best"] == "gain_db/1" and verdict["ship"] is True  # by its +0.10 dB
    # without the PSNR gain clause it does not ship: 0.97 > 0.95 x 1.00
    assert tool.decide(ROWS, _runs("gain_db/1"), tool.Rule(20.40, 0.95, 2, 0.05, None))["ship"] is False
    # without the step-back clause, 0.06 dB below the shipped model and a murkier one are feasible
    loose = tool.Rule(min_psnr=20.40, factor=0.95, max_darkened=2)
    verdict = tool.decide(ROWS, _runs("step_back/1", "murkier/1", "dark/1"), loose)
    assert verdict["choices"] == {"step_back": "step_back/1", "murkier": "murkier/1"}
    assert verdict["best"] == "step_back/1" and verdict["ship"] is True  # 0.90 <= 0.95
    # darkening counts only with max_darkened
    assert tool.decide(ROWS, _runs("dark/1"), tool.Rule(20.40, 0.95))["choices"] == {"dark": "dark/1"}
    # nothing feasible: no verdict to ship
    assert tool.decide(ROWS, _runs("low_psnr/1", "clips/1"), stage13) == {"choices": {}, "ship": None}


@pytest.mark.parametrize("stage, choices, ship", [
    ("13", ["gate-stage13/seed0.safetensors", "gate-stage13/seed1.safetensors"], False),
    ("14", [], None),
])
def test_recorded_verdicts(tool, stage, choices, ship):
    recorded = json.loads((REPO / "docs" / "stage11" / f"sel_stage{stage}.json").read_text())
    rows = recorded["scores"]
    names = [n for n in rows if n.startswith(f"gate-stage{stage}/")]
    rule = tool.Rule(min_psnr=20.40, factor=0.95, max_darkened=2, step_back=0.05, psnr_gain=0.10)
    verdict = tool.decide(rows, {n: [n] for n in names}, rule)
    assert sorted(verdict["choices"]) == choices and verdict["ship"] is ship
    assert verdict["choices"] == recorded["verdict"]["choices"]
