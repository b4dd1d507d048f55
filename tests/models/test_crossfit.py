"""Folds that respect groups and space, cluster-robust errors, cross-fitted nuisances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eocausal.models.effects.crossfit import (
    cluster_se,
    crossfit_nuisances,
    make_folds,
    spatial_blocks,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from eocausal.errors import EstimationError


def test_spatial_blocks_by_hand() -> None:
    x = np.array([5.0, 15.0, 95.0, 105.0, 5.0, 250.0])
    y = np.array([5.0, 95.0, 5.0, 5.0, 150.0, 5.0])
    # 100 m blocks: (0,0) (0,0) (0,0) (1,0) (0,1) (2,0), numbered by first appearance
    np.testing.assert_array_equal(spatial_blocks(x, y, 100.0), [0, 0, 0, 1, 2, 3])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e5, 1e5), st.floats(-1e5, 1e5)), min_size=1, max_size=40),
       st.floats(1.0, 5e4))
def test_spatial_blocks_group_exactly_the_same_cells(points, size) -> None:
    x, y = np.array(points).T
    blocks = spatial_blocks(x, y, size)
    cells = list(zip(np.floor(x / size), np.floor(y / size), strict=True))
    for i in range(len(cells)):
        for j in range(len(cells)):
            assert (blocks[i] == blocks[j]) == (cells[i] == cells[j])


@pytest.mark.parametrize("size", [0.0, -5.0, math.nan])
def test_spatial_blocks_rejects_bad_size(size) -> None:
    with pytest.raises(EstimationError, match="block_size must be a positive number"):
        spatial_blocks([0.0], [0.0], size)


def test_spatial_blocks_rejects_nan_coordinates() -> None:
    with pytest.raises(EstimationError, match=r"NaN or infinite for 1 units \(first rows \[1\]\)"):
        spatial_blocks([0.0, np.nan], [0.0, 1.0], 10.0)


def test_grouped_folds_keep_groups_together_and_cover_units() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 600)
    t = rng.binomial(1, 0.4, 600)
    folds = make_folds(t, cv=4, groups=groups, random_state=0)
    tests = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(600))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])


def test_folds_are_stratified_by_treatment() -> None:
    t = np.r_[np.ones(50), np.zeros(250)].astype(int)
    for _, test in make_folds(t, cv=5, random_state=1):
        assert t[test].sum() == 10


def test_same_seed_same_folds_other_seed_other_folds() -> None:
    t = np.tile([0, 1], 100)
    first, again, other = (make_folds(t, cv=3, random_state=s) for s in (4, 4, 5))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


def test_fewer_groups_than_folds_raises() -> None:
    with pytest.raises(EstimationError, match="groups has 2 distinct labels, fewer than cv=3 folds"):
        make_folds(np.tile([0, 1], 10), cv=3, groups=np.repeat([0, 1], 10))


def test_fold_without_an_arm_raises() -> None:
    # group 0 holds every treated unit: the training split of its fold has none
    t = np.r_[np.ones(10), np.zeros(20)].astype(int)
    groups = np.r_[np.zeros(10), np.repeat([1, 2], 10)]
    with pytest.raises(EstimationError, match="training split of fold .* holds only control units"):
        make_folds(t, cv=3, groups=groups)


def test_cluster_se_by_hand() -> None:
    phi = np.array([1.0, -1.0, 2.0, -2.0, 3.0, -3.0])
    # unclustered: sqrt(sum phi^2 * n / (n - 1)) / n = sqrt(28 * 6 / 5) / 6
    assert cluster_se(phi) == pytest.approx(math.sqrt(28 * 6 / 5) / 6)
    # clusters {0,2,4} and {1,3,5} sum to 6 and -6: sqrt(72 * 2 / 1) / 6 = 2
    assert cluster_se(phi, [0, 1, 0, 1, 0, 1]) == pytest.approx(2.0)


def test_cluster_se_without_clusters_is_the_standard_error_of_the_mean() -> None:
    phi = np.random.default_rng(3).normal(size=500)
    assert cluster_se(phi) == pytest.approx(phi.std(ddof=1) / math.sqrt(500))


def test_crossfit_nuisances_are_out_of_fold_and_scored() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 3))
    t = rng.binomial(1, 1 / (1 + np.exp(-X[:, 0])))
    y = X[:, 1] + t * (1 + X[:, 2]) + rng.normal(size=800)
    nu = crossfit_nuisances(X, t, y, folds=make_folds(t, cv=3), outcome_model="linear",
                            propensity_model="logistic")
    assert np.isfinite(nu.mu0).all() and np.isfinite(nu.e).all()
    assert 0.6 < nu.scores["propensity_auc"] < 0.8  # logit slope 1 on N(0, 1): AUC about 0.7
    assert nu.scores["outcome_r2"] > 0.5
    assert abs(nu.dr_scores(t, y).mean() - 1.0) < 0.15
    assert nu.scores["propensity_log_loss"] < math.log(2)


def test_known_propensity_is_used_as_given() -> None:
    rng = np.random.default_rng(1)
    X, t = rng.normal(size=(200, 2)), np.tile([0, 1], 100)
    nu = crossfit_nuisances(X, t, rng.normal(size=200), folds=make_folds(t, cv=2), propensity=0.3)
    assert np.all(nu.e == 0.3) and nu.propensity_known
    assert nu.scores["propensity_auc"] is None
