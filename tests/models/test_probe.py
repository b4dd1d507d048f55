"""Linear probes: the ridge probe against a closed form, and encoders on a simulated world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from eocausal.models.features.probe import linear_probe, probe_world, spatial_blocks
from sklearn.model_selection import KFold


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors gain nothing from threads; on a shared machine OpenMP barriers stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _closed_form_r2(x: np.ndarray, y: np.ndarray, alpha: float, folds) -> float:
    """Standardise on the training fold, ridge by the normal equations, R2 out of fold."""
    predicted = np.empty_like(y)
    for train, test in folds:
        mu, sd = x[train].mean(0), x[train].std(0)
        a = (x[train] - mu) / sd
        b = (x[test] - mu) / sd
        coef = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ (y[train] - y[train].mean()))
        predicted[test] = b @ coef + y[train].mean()
    return 1 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def test_probe_equals_ridge_by_the_normal_equations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    y = x @ rng.normal(size=6) + rng.normal(size=200)
    got = linear_probe(x, pd.DataFrame({"z": y}), alphas=np.array([3.0]), random_state=1)
    folds = KFold(5, shuffle=True, random_state=1).split(x)
    assert got["z"] == pytest.approx(_closed_form_r2(x, y, 3.0, folds), abs=1e-10)


def test_probe_scores_signal_high_and_noise_near_zero():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 2))
    features = np.column_stack([z @ rng.normal(size=(2, 10)), rng.normal(size=(300, 5))])
    r2 = linear_probe(features, pd.DataFrame({"signal": z[:, 0], "noise": rng.normal(size=300)}))
    assert r2["signal"] > 0.99
    assert r2["noise"] < 0.05


def test_spatial_blocks_cut_the_extent_into_a_grid():
    xy = np.array([[0, 0], [0.99, 0.99], [0.5, 0.1], [0.26, 0.76], [1, 1]])
    assert spatial_blocks(xy, 2).tolist() == [0, 3, 2, 1, 3]


def test_random_features_recover_the_worlds_landscape(tmp_path):
    r2 = probe_world({"rcf": ("rcf", {"n_features": 64})}, tmp_path,
                     world={"n_units": 240, "scene_size": 160, "seed": 1}, cv=3, n_blocks=3,
                     device="cpu")
    assert list(r2.columns[:4]) == ["z_built_up", "z_vegetation", "z_water", "z_roads"]
    assert r2.loc["rcf", "z_built_up"] > 0.8 and r2.loc["rcf", "z_vegetation"] > 0.8
    assert r2.loc["rcf", "n_features"] == 64


@pytest.mark.slow
def test_every_encoder_recovers_the_landscape(tmp_path):
    single = probe_world({"rcf gaussian": ("rcf", {}), "rcf empirical": ("rcf", {"mode": "empirical"}),
                          "resnet18 random": ("resnet18", {})},
                         tmp_path / "one", world={"n_units": 1000, "seed": 0}, device="cpu")
    sequence = probe_world({"sequence rcf mean": ("sequence", {"base": "rcf"})},
                           tmp_path / "three", world={"n_units": 1000, "n_dates": 3, "seed": 0},
                           device="cpu")
    assert (single["mean"] > 0.6).all() and (sequence["mean"] > 0.6).all()
