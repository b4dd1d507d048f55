"""The clusters stage inside a run: clusters/ outputs, cluster columns joined into
effects.gpkg, the report's section, and a rerun that is up to date."""

from __future__ import annotations

import json

import geopandas as gpd
from eocausal.workflows.config import config_from_dict
from eocausal.workflows.runner import run_config


def test_clusters_stage_in_a_run(tmp_path):
    config = config_from_dict({
        "name": "clustered",
        "simulate": {"n_units": 400, "scene_size": 128, "chip_size": 16, "seed": 5,
                     "n_clusters": 2, "heterogeneity": 2.0},
        "chips": {"size": 16},
        "encoder": {"options": {"n_features": 32}},
        "estimator": {"propensity": 0.5, "n_components": 8, "n_estimators": 40},
        "evaluation": {"enabled": False},
        "clusters": {"k": 2, "epochs": 15, "cv": 2},
        "map": {"enabled": False},
        "compute": {"scheduler": "synchronous"},
    })
    out = tmp_path / "run"
    result = run_config(config, out, progress=False)
    assert result.stages["clusters"] == "ran"
    clusters = json.loads((out / "clusters" / "clusters.json").read_text())
    assert clusters["k"] == 2 and len(clusters["clusters"]) == 2
    effects = gpd.read_file(out / "effects.gpkg")
    assert {"cate", "p_cluster_1", "p_cluster_2", "cluster", "tau_mean"} <= set(effects.columns)
    probs = effects[["p_cluster_1", "p_cluster_2"]].sum(axis=1)
    assert ((probs - 1).abs() < 1e-3).all()
    assert result.summary["clusters"]["k"] == 2
    page = (out / "report.html").read_text()
    assert "Image clusters and their effects" in page
    again = run_config(config, out, progress=False)
    assert again.stages["clusters"] == "up to date"
