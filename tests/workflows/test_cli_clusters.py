"""``eocausal clusters`` end to end (features and tile store) and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from eocausal.pipeline.store import create_store
from eocausal.simulator.simulate import simulate
from eocausal.workflows.cli import main

from tests.models.cluster_worlds import planted_world


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """Units CSV and a features CSV of a 300-unit planted world."""
    root = tmp_path_factory.mktemp("clusters")
    w = planted_world(5, n_units=300, n_clusters=2, scene_size=256, chip_size=16)
    units = pd.DataFrame({"unit_id": w["unit_ids"], "treatment": w["treatment"],
                          "outcome": w["outcome"], "x1": w["covariates"][:, 0]})
    features = pd.DataFrame(w["features"][:, :6], columns=[f"f{i}" for i in range(6)])
    features.insert(0, "unit_id", w["unit_ids"])
    paths = {"units": root / "units.csv", "features": root / "features.csv", "root": root}
    units.to_csv(paths["units"], index=False)
    features.to_csv(paths["features"], index=False)
    units.assign(treatment=1).to_csv(root / "one_arm.csv", index=False)
    return paths


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["clusters", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_features_run_writes_the_cluster_outputs(tables, tmp_path, capsys) -> None:
    code, out, _ = _run(capsys, "--units", tables["units"], "--features", tables["features"],
                        "-k", "2", "--covariates", "x1", "--epochs", "30", "--batch-size", "32",
                        "--cv", "2", "--out", tmp_path)
    assert code == 0, out
    summary = json.loads((tmp_path / "clusters.json").read_text())
    mu = [c["mu"] for c in summary["clusters"]]
    assert mu == sorted(mu) and mu[1] - mu[0] > 4  # planted effects -2.13 and 3.87
    effects = gpd.read_file(tmp_path / "effects.gpkg")
    assert {"p_cluster_1", "p_cluster_2_hi", "cluster", "tau_mean", "tau_lo", "tau_hi"} <= set(effects.columns)
    assert len(effects) == 300
    assert (tmp_path / "figures" / "effect_density.png").is_file()
    assert "implied ATE" in out


def test_store_run_trains_the_cnn_and_draws_salience(tmp_path, capsys) -> None:
    world = simulate(tmp_path / "world", n_units=120, scene_size=128, chip_size=16,
                     n_clusters=2, seed=1)
    store = tmp_path / "tiles.zarr"
    assert main(["ingest", "--units", str(world.units_path), "--imagery",
                 *map(str, world.scene_paths), "--chip-size", "16", "--out", str(store)]) == 0
    code, out, err = _run(capsys, "--units", world.units_path, "--store", store, "-k", "2",
                          "--epochs", "2", "--cv", "2", "--out", tmp_path / "run")
    assert code == 0, err
    effects = gpd.read_file(tmp_path / "run" / "effects.gpkg")
    assert len(effects) == 120 and effects.crs is not None
    figures = {p.name for p in (tmp_path / "run" / "figures").iterdir()}
    assert {"salience_cluster1_typical.png", "salience_cluster2_uncertain.png"} <= figures


def _store(path: Path, ids: list[str]) -> Path:
    create_store(path, unit_ids=ids, n_dates=1, band_names=["b1"], chip_size=4, dtype="uint8",
                 crs="EPSG:32636", pixel_size=10.0, dates=[None], centres=np.zeros((len(ids), 2)))
    return path


@pytest.mark.parametrize(("case", "match"), [
    ("k_too_large", "K=20 clusters for 300 units leaves fewer than 30 units per cluster; use k <= 10"),
    ("one_arm", "all 300 units are treated"),
    ("no_shared_ids", "share no unit id"),
    ("auto_range_below_2", "k_range must start at 2 or more"),
    ("cluster_noise_too_big", "cluster_noise"),
])
def test_bad_input_is_one_line_exit_2(tables, tmp_path, capsys, case: str, match: str) -> None:
    units, extra = tables["units"], ["-k", "2"]
    source = ["--features", tables["features"]]
    if case == "k_too_large":
        extra = ["-k", "20"]
    elif case == "one_arm":
        units = tables["root"] / "one_arm.csv"
    elif case == "no_shared_ids":
        source = ["--store", _store(tmp_path / "other.zarr", ["Z1", "Z2", "Z3"])]
    elif case == "cluster_noise_too_big":
        extra = ["-k", "2", "--cluster-noise", "0.7"]
    else:
        extra = ["-k", "auto", "--k-range", "1", "4"]
    code, _, err = _run(capsys, "--units", units, *source, *extra, "--out", tmp_path / "o")
    assert code == 2
    assert match in err
    lines = err.splitlines()
    assert lines[-1].startswith("error: ") and match in lines[-1]
    assert sum(line.startswith("error") for line in lines) == 1 and "Traceback" not in err
