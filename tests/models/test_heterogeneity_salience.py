"""Salience of a CNN-trained cluster model lands on the landscape factor that makes the cluster.

In the planted world below (seed 10, two clusters) the low-effect cluster is the watery one:
its units' chips hold 0.7 more water (chip-mean fraction) than the others', while the other
factors differ by 0.3 or less. The gradient of that cluster's log-probability should then be
largest on water pixels: the test compares, within each chip, the mean salience magnitude on
the pixels of each factor (factor field > 0.5) with the chip's mean, from the simulator's
own factor maps.

Measured (2026-12-01): the CNN finds the clusters (ARI 0.93) but its salience peaks on road
pixels in every world tried (ratio 1.42-1.45 on roads against 0.80-0.91 on water, for
gradient magnitude; 1.92 against 1.15 for gradient x input): the thin, high-contrast roads
dominate the pixel gradient of a small ReLU CNN whatever the cluster is made of. The test
stays, marked as an expected failure, until the salience is made specific (SmoothGrad, or
salience on the factor scale).
"""

from __future__ import annotations

import numpy as np
import pytest
from eocausal.models.heterogeneity.fit import fit_model, make_inputs
from eocausal.models.heterogeneity.salience import cluster_salience
from eocausal.models.heterogeneity.settings import ClustersSettings
from eocausal.simulator.world import FACTOR_NAMES
from sklearn.metrics import adjusted_rand_score

from eocausal.errors import ConfigError
from tests.models.cluster_worlds import planted_world


@pytest.fixture(scope="module")
def fitted() -> tuple[dict, object]:
    w = planted_world(10, n_units=600, n_clusters=2, scene_size=256, chip_size=16, chips=True)
    inputs = make_inputs(w["unit_ids"], w["chips"], w["treatment"], w["outcome"])
    model = fit_model(inputs, ClustersSettings(k=2, encoder="cnn", epochs=60, hidden=16))
    return w, model


def _factor_ratios(magnitude: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    """Mean over chips of (mean salience on the factor's pixels) / (chip mean salience)."""
    out = {}
    for f, name in enumerate(FACTOR_NAMES):
        on = factors[:, f] > 0.5
        use = on.any(axis=(1, 2)) & (~on).any(axis=(1, 2))
        ratios = [magnitude[i][on[i]].mean() / magnitude[i].mean() for i in np.flatnonzero(use)]
        out[name] = float(np.mean(ratios)) if ratios else float("nan")
    return out


def test_planted_world_ties_one_cluster_to_water(fitted) -> None:
    w, _ = fitted
    z = np.array([[w["factors"][w["cluster"] == k, f].mean() for f in range(4)] for k in (0, 1)])
    gap = np.abs(z[0] - z[1])
    assert FACTOR_NAMES[int(gap.argmax())] == "water"


@pytest.mark.xfail(strict=True, reason="salience peaks on road edges, not on the tied factor "
                   "(water); see the module docstring")
def test_salience_is_highest_on_the_tied_factor(fitted) -> None:
    w, model = fitted
    draws = model.draws(w["chips"], n_draws=30)
    assigned = draws.probs.mean(0).argmax(1) + 1
    assert adjusted_rand_score(w["cluster"], assigned) > 0.8  # the CNN found the clusters
    water = w["factors"][:, FACTOR_NAMES.index("water")].mean(axis=(1, 2))
    tied = max((1, 2), key=lambda k: water[assigned == k].mean())
    salience = cluster_salience(model, w["chips"], tied, n_draws=16)
    assert salience.shape == w["chips"].shape
    ratios = _factor_ratios(np.abs(salience).sum(axis=(1, 2)), w["factors"])
    assert max(ratios, key=ratios.get) == "water", ratios
    assert ratios["water"] > 1.2, ratios


def test_salience_needs_a_cnn_model() -> None:
    w = planted_world(10, n_units=120, n_clusters=2, scene_size=128, chip_size=16)
    inputs = make_inputs(w["unit_ids"], w["features"], w["treatment"], w["outcome"])
    model = fit_model(inputs, ClustersSettings(k=2, epochs=1))
    with pytest.raises(ConfigError, match="salience needs a model trained end to end on chips"):
        cluster_salience(model, np.zeros((1, 1, 6, 16, 16), np.float32), 1)
