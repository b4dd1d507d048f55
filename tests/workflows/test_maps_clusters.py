"""A run with a clusters stage maps the cluster model too: p_cluster_k bands in effect.tif,
cluster columns in cells.parquet/gpkg, HTML layers; values equal predict_places on the same
cells' features."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from eocausal.models.features.encode import encode_range
from eocausal.models.heterogeneity.predict import predict_places
from eocausal.pipeline.store import open_store
from eocausal.workflows.config import config_from_dict
from eocausal.workflows.maps import validate_cog
from eocausal.workflows.maps.predict import load_run_model
from eocausal.workflows.maps.web import LAYER_NAMES
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.runner import run_config

from eocausal.errors import InputFileError

CONFIG = {
    "name": "clustered-map",
    "simulate": {"n_units": 400, "scene_size": 128, "chip_size": 16, "seed": 5,
                 "n_clusters": 2, "heterogeneity": 2.0},
    "chips": {"size": 16, "units_per_chunk": 128},
    "encoder": {"options": {"n_features": 32}},
    "estimator": {"propensity": 0.5, "n_components": 8, "n_estimators": 40},
    "evaluation": {"enabled": False},
    "clusters": {"k": 2, "epochs": 15, "cv": 2},
    "map": {"spacing": 60, "cells_per_task": 64},
    "compute": {"scheduler": "synchronous"},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clustermap") / "run"
    result = run_config(config_from_dict(CONFIG), out, progress=False)
    assert result.stages["clusters"] == "ran" and result.stages["map"] == "ran"
    return RunPaths(out)


def test_effect_tif_has_cluster_bands(run):
    ok, errors, _ = validate_cog(run.effect_tif)
    assert ok, errors
    with rasterio.open(run.effect_tif) as src:
        assert src.descriptions == ("cate", "cate_lo", "cate_hi", "support", "p_cluster_1",
                                    "p_cluster_2", "tau_cluster", "tau_cluster_lo",
                                    "tau_cluster_hi")
        data = src.read()
    probs = data[4:6]
    valid = np.isfinite(data[0])
    assert valid.sum() > 100
    # every predicted cell has probabilities in [0, 1] that sum to 1; nodata stays NaN
    assert np.isfinite(probs[:, valid]).all() and np.isnan(probs[:, ~valid]).all()
    assert (probs[:, valid] >= 0).all() and (probs[:, valid] <= 1).all()
    np.testing.assert_allclose(probs[:, valid].sum(axis=0), 1.0, atol=1e-5)
    lo, mean, hi = data[7][valid], data[6][valid], data[8][valid]
    assert (lo <= mean).all() and (mean <= hi).all()


def test_cells_equal_predict_places_on_the_same_features(run):
    """Each store chunk's cells get predict_places(model, their features, seed=chunk)."""
    cells = pd.read_parquet(run.cells_parquet)
    model = load_run_model(run, device="cpu")
    grid = open_store(run.grid_tiles) if run.grid_tiles.exists() else None
    assert model.clusters is not None and model.clusters.encoder == "features"
    assert grid is not None, "the map keeps its grid store for this comparison"
    step = grid.units_per_chunk
    seen = 0
    for chunk, start in enumerate(range(0, grid.n_units, step)):
        ids, feats = encode_range(grid, model.encoder, mean=model.mean, std=model.std,
                                  start=start, stop=min(start + step, grid.n_units),
                                  batch_size=256, device="cpu", log_dates=False)
        table = pd.DataFrame(feats, columns=[f"f{i}" for i in range(feats.shape[1])])
        table.insert(0, "unit_id", ids)
        expected = predict_places(model.clusters, table, seed=chunk).set_index("unit_id")
        got = cells.set_index("unit_id").reindex(expected.index).dropna(subset=["cate"])
        want = expected.loc[got.index]
        for k in (1, 2):
            np.testing.assert_allclose(got[f"p_cluster_{k}"], want[f"p_cluster_{k}"], rtol=1e-6)
        np.testing.assert_allclose(got["tau_cluster"], want["tau_mean"], rtol=1e-6)
        np.testing.assert_allclose(got["tau_cluster_lo"], want["tau_lo"], rtol=1e-6)
        np.testing.assert_array_equal(got["cluster"].astype(int), want["cluster"])
        seen += len(got)
    assert seen == int(np.isfinite(cells["cate"]).sum())


def test_map_json_names_the_clusters(run):
    import json

    assert json.loads(run.map_summary.read_text())["n_clusters"] == 2


def test_gpkg_and_html_carry_the_clusters(run):
    gpkg = gpd.read_file(run.cells_gpkg)
    assert {"p_cluster_1", "p_cluster_2", "cluster", "tau_cluster"} <= set(gpkg.columns)
    page = run.effect_html.read_text()
    assert LAYER_NAMES["cluster"] in page and LAYER_NAMES["cluster_effect"] in page
    assert "Most likely image cluster" in page


def test_tampered_cluster_model_is_refused(run, tmp_path):
    import shutil

    copy = RunPaths(tmp_path / "run")
    shutil.copytree(run.root, copy.root, ignore=shutil.ignore_patterns("maps"))
    with open(copy.cluster_model, "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputFileError, match="clusters stage wrote"):
        load_run_model(copy, device="cpu")


class _LoopMapper:
    """map_partitions as a plain loop: prediction tasks load the models from files, as on
    dask workers."""

    n_workers = 2

    def __call__(self, func, tasks):
        return [func(task) for task in tasks]


def test_cluster_columns_do_not_depend_on_how_cells_are_split(run, tmp_path):
    import shutil

    from eocausal.workflows.maps import MapSettings, build_map

    copy = RunPaths(tmp_path / "run")
    shutil.copytree(run.root, copy.root, ignore=shutil.ignore_patterns("maps"))
    settings = MapSettings(**{**CONFIG["map"], "prediction_tasks": 3})
    split = build_map(copy, settings, mapper=_LoopMapper(), echo=lambda m: None).cells
    whole = pd.read_parquet(run.cells_parquet)
    columns = ["cate", "p_cluster_1", "p_cluster_2", "tau_cluster", "tau_cluster_lo"]
    np.testing.assert_allclose(split[columns].to_numpy(dtype=float),
                               whole[columns].to_numpy(dtype=float), rtol=1e-6)


def test_cluster_layers_render_in_a_browser(run, tmp_path):
    from tests.workflows.test_browser import CHROMIUM, _open

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed")
    dom, console = _open(run.effect_html, tmp_path)
    assert console == []
    labels = {label.strip() for label in re.findall(r"<span> ([^<]+)</span>", dom)}
    assert set(LAYER_NAMES.values()) - {LAYER_NAMES["aggregates"], LAYER_NAMES["targets"]} <= labels
