"""Salience of a CNN-trained cluster model lands on the landscape factor that makes the cluster.

Each planted world (two clusters) has a tied factor: the one whose chip coverage differs
most, in sd, between its clusters. On the chips the model assigns to the cluster richer in
that factor, the test compares, within each chip, the mean salience magnitude on the pixels
of each factor (factor map > 0.5) with that off them, from the simulator's own factor maps;
chips where a factor covers under 5% or over 95% of the pixels say nothing about it.

Measured over 16 seeds (``python -m benchmarks.salience_seeds --seeds 0-15``, table in
benchmarks/README.md): the clusters were found (ARI > 0.75) in 11. In 9 of those 11 the
tied factor's on/off ratio was over 1.5 (the two misses are the water-tied worlds: 1.10 and
1.09, with vegetation at 2.23 and 1.38). It was the single highest factor in only 4 of the
11; roads, which drive Y(0) in the simulator, were highest in 3. So the test checks the
claim that held (the tied factor is clearly salient), not that it is the most salient one,
which is the claim that failed in stop 19. It runs seed 1 (vegetation-tied).
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
    w = planted_world(1, n_units=600, n_clusters=2, scene_size=256, chip_size=16, chips=True)
    inputs = make_inputs(w["unit_ids"], w["chips"], w["treatment"], w["outcome"])
    model = fit_model(inputs, ClustersSettings(k=2, encoder="cnn", epochs=60, hidden=16))
    return w, model


def tied_factor(w: dict) -> str:
    """The factor whose chip coverage differs most (in sd) between the planted clusters."""
    cover = w["factors"].mean(axis=(2, 3))  # (N, F)
    z = (cover - cover.mean(0)) / cover.std(0)
    gap = np.abs(z[w["cluster"] == 0].mean(0) - z[w["cluster"] == 1].mean(0))
    return FACTOR_NAMES[int(gap.argmax())]


def test_planted_world_ties_its_clusters_to_vegetation(fitted) -> None:
    w, _ = fitted
    assert tied_factor(w) == "vegetation"


def _on_off_ratios(magnitude: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    """Median over chips of (mean salience on the factor's pixels) / (mean off them)."""
    out = {}
    for f, name in enumerate(FACTOR_NAMES):
        on = factors[:, f] > 0.5
        cover = on.mean(axis=(1, 2))
        use = np.flatnonzero((cover > 0.05) & (cover < 0.95))
        ratios = [magnitude[i][on[i]].mean() / magnitude[i][~on[i]].mean() for i in use]
        out[name] = float(np.median(ratios)) if ratios else float("nan")
    return out


def test_salience_lands_on_the_tied_factor(fitted) -> None:
    w, model = fitted
    assert model.net.cluster_encoder is not None  # 'auto' gives a cnn model its own
    draws = model.draws(w["chips"], n_draws=30)
    assigned = draws.probs.mean(0).argmax(1) + 1
    assert adjusted_rand_score(w["cluster"], assigned) > 0.75  # the CNN found the clusters
    tied = tied_factor(w)
    cover = w["factors"][:, FACTOR_NAMES.index(tied)].mean(axis=(1, 2))
    richer = max((1, 2), key=lambda k: cover[assigned == k].mean())
    rows = np.flatnonzero(assigned == richer)
    salience = cluster_salience(model, w["chips"][rows], richer)
    assert salience.shape == w["chips"][rows].shape
    ratios = _on_off_ratios(np.abs(salience).sum(axis=(1, 2)), w["factors"][rows])
    assert ratios[tied] > 1.5, ratios


def test_salience_needs_a_cnn_model() -> None:
    w = planted_world(10, n_units=120, n_clusters=2, scene_size=128, chip_size=16)
    inputs = make_inputs(w["unit_ids"], w["features"], w["treatment"], w["outcome"])
    model = fit_model(inputs, ClustersSettings(k=2, epochs=1))
    with pytest.raises(ConfigError, match="salience needs a model trained end to end on chips"):
        cluster_salience(model, np.zeros((1, 1, 6, 16, 16), np.float32), 1)
