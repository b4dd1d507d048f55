"""The shipped Uganda config runs end to end on the real RCT, with folds grouped by image."""

from __future__ import annotations

import json

import geopandas as gpd
from eocausal.workflows.config import load_config
from eocausal.workflows.runner import run_config

from tests.conftest import ROOT


def test_uganda_config_runs_with_grouped_folds(tmp_path, data_dir):
    config = load_config(ROOT / "configs" / "uganda_yop.yaml")
    assert config.units.group == "image_key" and config.patches is not None
    result = run_config(config, tmp_path / "uganda", progress=False)
    summary = json.loads((tmp_path / "uganda" / "summary.json").read_text())
    assert summary["n_used"] == 2082 and summary["n_skipped"] == 0
    # The file's difference in means is about +0.74 SD; an RCT estimate should agree.
    assert 0.55 < summary["ate"] < 0.95 and summary["ate_lo"] < 0.74 < summary["ate_hi"]
    assert abs(summary["naive"]["estimate"] - 0.74) < 0.02
    effects = gpd.read_file(tmp_path / "uganda" / "effects.gpkg")
    assert len(effects) == 2082 and effects.crs.to_epsg() == 4326
    assert result.summary["map"] is None
