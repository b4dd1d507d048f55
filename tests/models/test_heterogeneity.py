"""The image-cluster model on small planted-cluster worlds: recovery, intervals, K choice,
seeding, label order, predictions at new places, outputs, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from eocausal.models.heterogeneity.fit import ClusterResult, fit_clusters, make_inputs
from eocausal.models.heterogeneity.outputs import write_cluster_outputs
from eocausal.models.heterogeneity.predict import predict_places
from eocausal.models.heterogeneity.settings import ClustersSettings, check_clusters_settings
from sklearn.metrics import adjusted_rand_score

from eocausal.errors import ConfigError, EstimationError
from tests.models.cluster_worlds import planted_world

FAST = {"epochs": 60, "batch_size": 32, "cv": 2, "n_predictive_draws": 100}


@pytest.fixture(scope="module")
def world() -> dict:
    w = planted_world(5, n_units=600, n_clusters=2, scene_size=256, chip_size=16)
    w["all_features"] = w["features"]
    w["features"] = w["features"][:, :6]  # band means: what the planted clusters are made of
    return w


def _inputs(w: dict):
    return make_inputs(w["unit_ids"], w["features"], w["treatment"], w["outcome"],
                       covariates=w["covariates"])


@pytest.fixture(scope="module")
def result(world: dict) -> ClusterResult:
    return fit_clusters(_inputs(world), ClustersSettings(k=2, **FAST))


def test_heldout_clusters_match_the_planted_ones(world: dict, result: ClusterResult) -> None:
    assert adjusted_rand_score(world["cluster"], result.units["cluster"]) >= 0.85


def test_cluster_effects_and_implied_ate_near_the_truth(world: dict, result: ClusterResult) -> None:
    # coverage is a statistical claim, measured over 20 seeds in benchmarks/bench_clusters.py
    c = result.clusters
    truth = np.sort(world["true_mu"])  # -2.13 and 3.87: a gap of 6
    np.testing.assert_allclose(c["mu"], truth, atol=0.3)
    assert abs(result.ate - world["ate"]) < 0.3
    assert (c["mu_lo"] < c["mu"]).all() and (c["mu"] < c["mu_hi"]).all()
    assert 0.1 < result.ate_hi - result.ate_lo < 0.8


def test_clusters_are_ordered_by_mu(result: ClusterResult) -> None:
    assert np.all(np.diff(result.clusters["mu"]) > 0)
    assert result.units["tau_mean"].corr(result.units["p_cluster_2"]) > 0.9


def test_two_clusters_fit_better_than_one_held_out(result: ClusterResult) -> None:
    assert result.heldout_loglik > result.heldout_loglik_one_cluster + 0.05


def test_per_unit_columns_and_intervals(result: ClusterResult) -> None:
    u = result.units
    assert list(u.columns) == ["unit_id", "p_cluster_1", "p_cluster_1_lo", "p_cluster_1_hi",
                               "p_cluster_2", "p_cluster_2_lo", "p_cluster_2_hi", "cluster",
                               "tau_mean", "tau_lo", "tau_hi"]
    np.testing.assert_allclose(u["p_cluster_1"] + u["p_cluster_2"], 1.0, atol=1e-6)
    assert (u["p_cluster_1_lo"] <= u["p_cluster_1"]).all() and (u["p_cluster_1"] <= u["p_cluster_1_hi"]).all()
    assert (u["tau_lo"] <= u["tau_mean"]).all() and (u["tau_mean"] <= u["tau_hi"]).all()


def test_same_seed_repeats_other_seed_differs(world: dict) -> None:
    small = {"epochs": 5, "n_predictive_draws": 20, "cv": 2}
    a = fit_clusters(_inputs(world), ClustersSettings(k=2, seed=1, **small), compare_one_cluster=False)
    b = fit_clusters(_inputs(world), ClustersSettings(k=2, seed=1, **small), compare_one_cluster=False)
    c = fit_clusters(_inputs(world), ClustersSettings(k=2, seed=2, **small), compare_one_cluster=False)
    pd.testing.assert_frame_equal(a.units, b.units)
    assert not np.allclose(a.units["tau_mean"], c.units["tau_mean"])


def test_auto_selection_table_follows_the_one_se_rule(world: dict) -> None:
    r = fit_clusters(_inputs(world), ClustersSettings(k="auto", k_range=(2, 3), epochs=3, cv=2,
                                                      n_predictive_draws=20),
                     compare_one_cluster=False)
    table = r.selection.set_index("k")
    assert list(table.index) == [2, 3] and table.loc[r.k, "gap_to_best"] <= table.loc[r.k, "gap_se"]
    # gaps are to the best candidate K (one whose every cluster holds units)
    assert table.loc[table["candidate"], "gap_to_best"].min() == 0.0
    assert r.clusters.shape[0] == r.k


def test_auto_picks_the_planted_k(world: dict) -> None:
    # with band means alone the outcome head misses Y(0) by 0.9 sd (roads, seen by the edge
    # features), and a small third cluster of badly fitted treated units won the held-out
    # likelihood by 0.02-0.04 per unit; with every feature K=2 wins by 0.24
    inputs = make_inputs(world["unit_ids"], world["all_features"], world["treatment"],
                         world["outcome"], covariates=world["covariates"])
    r = fit_clusters(inputs, ClustersSettings(k="auto", k_range=(2, 3), **FAST),
                     compare_one_cluster=False)
    assert r.k == 2
    assert list(r.selection["k"]) == [2, 3]


def test_auto_ignores_a_better_fit_from_a_cluster_no_image_holds(world: dict) -> None:
    # band means alone: the outcome head misses Y(0) (roads), and a third cluster that no
    # image has as its most probable (its share is the cluster-noise floor) gives the badly
    # fitted treated units density; it wins the held-out likelihood but holds no units
    r = fit_clusters(_inputs(world), ClustersSettings(k="auto", k_range=(2, 3), **FAST),
                     compare_one_cluster=False)
    table = r.selection.set_index("k")
    assert table.loc[3, "heldout_loglik"] > table.loc[2, "heldout_loglik"]
    assert table.loc[3, "smallest_cluster_units"] < 30 <= table.loc[2, "smallest_cluster_units"]
    assert r.k == 2 and list(table["candidate"]) == [True, False]


def test_predictions_at_new_places_follow_the_clusters(world: dict, result: ClusterResult) -> None:
    frame = pd.DataFrame(world["features"]).assign(unit_id=world["unit_ids"])
    places = predict_places(result.model, frame)
    assert len(places) == len(frame)
    mu = result.clusters["mu"].to_numpy()
    mixed = places["p_cluster_1"] * mu[0] + places["p_cluster_2"] * mu[1]
    np.testing.assert_allclose(places["tau_mean"], mixed, atol=0.1)
    assert adjusted_rand_score(world["cluster"], places["cluster"]) >= 0.85


def test_write_outputs(tmp_path, world: dict, result: ClusterResult) -> None:
    points = gpd.GeoDataFrame({"unit_id": world["unit_ids"]},
                              geometry=gpd.points_from_xy(world["world"].units["x"],
                                                          world["world"].units["y"]),
                              crs="EPSG:32636")
    written = write_cluster_outputs(result, tmp_path, geometry=points)
    summary = json.loads((tmp_path / "clusters.json").read_text())
    assert summary["k"] == 2
    assert [c["mu"] for c in summary["clusters"]] == pytest.approx(list(result.clusters["mu"]))
    assert summary["implied_ate"]["lo"] <= summary["implied_ate"]["estimate"] <= summary["implied_ate"]["hi"]
    effects = gpd.read_file(tmp_path / "effects.gpkg")
    assert effects.crs.to_epsg() == 32636 and len(effects) == len(world["unit_ids"])
    np.testing.assert_allclose(effects["tau_mean"], result.units["tau_mean"])
    assert written["effect_density"].stat().st_size > 1000


def test_k_too_large_for_n(world: dict) -> None:
    inputs = make_inputs(world["unit_ids"][:100], world["features"][:100],
                         world["treatment"][:100], world["outcome"][:100])
    with pytest.raises(ConfigError, match=r"K=4 clusters for 100 units .* use k <= 3"):
        fit_clusters(inputs, ClustersSettings(k=4))


def test_all_units_in_one_arm(world: dict) -> None:
    with pytest.raises(EstimationError, match="all 600 units are treated"):
        make_inputs(world["unit_ids"], world["features"], np.ones(600), world["outcome"])


@pytest.mark.parametrize(("values", "match"), [
    ({"k": 1}, r"k must be an int >= 2 or 'auto'; got 1"),
    ({"k": "auto", "k_range": (1, 4)}, r"k_range must start at 2 or more; got \(1, 4\)"),
])
def test_bad_settings(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_clusters_settings(**values)


def test_settings_import_no_torch() -> None:
    code = ("import sys; import eocausal.models.heterogeneity.settings; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_public_name_imports() -> None:
    import eocausal.models.heterogeneity as het

    for name in het.__all__:
        assert getattr(het, name) is not None, name


def test_observational_design_uses_a_crossfitted_propensity(world: dict) -> None:
    # treatment now depends on the first feature (the blue band): logistic propensity
    x0 = (world["features"][:, 0] - world["features"][:, 0].mean()) / world["features"][:, 0].std()
    rng = np.random.default_rng(0)
    t = (rng.uniform(size=x0.size) < 1 / (1 + np.exp(-x0))).astype(float)
    outcome = world["outcome"] - world["treatment"] * world["cate"] + t * world["cate"]
    inputs = make_inputs(world["unit_ids"], world["features"], t, outcome)
    r = fit_clusters(inputs, ClustersSettings(k=2, design="observational", **{**FAST, "epochs": 40}),
                     compare_one_cluster=False)
    assert r.info["design"] == "observational"
    np.testing.assert_allclose(r.clusters["mu"], np.sort(world["true_mu"]), atol=0.5)
