"""A panel design through ``eocausal run`` (config ``panel`` section) and through
``eocausal estimate --design panel``: Mundlak covers the known effect, pooled is flagged."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from eocausal.simulator.panel import simulate_panel
from eocausal.workflows.cli import main
from eocausal.workflows.config import config_from_dict
from eocausal.workflows.runner import run_config


@pytest.fixture(scope="module")
def panel_world(tmp_path_factory):
    return simulate_panel(tmp_path_factory.mktemp("panel"), n_units=200, n_periods=4, seed=2)


def test_panel_run_through_the_stages(panel_world, tmp_path):
    config = config_from_dict({
        "name": "panel",
        "units": {"path": str(panel_world.units_path)},
        "imagery": {"paths": [str(p) for p in panel_world.scene_paths]},
        "chips": {"size": 16},
        "encoder": {"options": {"n_features": 32}},
        "panel": {"path": str(panel_world.panel_path), "covariates": ["x1"], "n_components": 8},
        "compute": {"scheduler": "synchronous"},
    })
    result = run_config(config, tmp_path / "run", progress=False)
    assert result.stages.get("evaluate") is None and result.stages.get("map") is None
    truth = json.loads(panel_world.truth_json_path.read_text())["effect"]
    estimates = result.summary["panel"]["estimates"]
    mundlak, pooled = estimates["mundlak"], estimates["pooled"]
    assert mundlak["lo"] <= truth <= mundlak["hi"]
    assert pooled["biased"] is True and abs(pooled["estimate"] - truth) > 3 * pooled["se"]
    assert result.summary["ate"] == pytest.approx(mundlak["estimate"])
    features = pd.read_parquet(tmp_path / "run" / "features.parquet")
    assert {"unit_id", "period"} <= set(features.columns) and features["period"].nunique() == 4
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Panel estimates" in page and "biased" in page
    again = run_config(config, tmp_path / "run", progress=False)
    assert set(again.stages.values()) == {"up to date"}


def test_panel_estimate_command(panel_world, tmp_path, capsys):
    rc = main(["estimate", "--units", str(panel_world.panel_path), "--design", "panel",
               "--period-column", "period", "--covariates", "x1", "--out", str(tmp_path / "e")])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert set(summary["panel"]["estimates"]) == {"mundlak", "first_difference", "within",
                                                  "pooled"}
    rc = main(["estimate", "--units", str(panel_world.panel_path), "--design", "panel",
               "--out", str(tmp_path / "f")])
    assert rc == 2 and "--period-column" in capsys.readouterr().err
