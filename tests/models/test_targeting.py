"""Targeting under a budget: gains against random and treat-all, against a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from eocausal.models.evaluation.rate import toc_curve
from eocausal.models.evaluation.targeting import (
    budget_count,
    evaluate_targeting,
    fit_policy_tree,
    policy_rules,
    rank_places,
)

from eocausal.errors import EstimationError


def _world(seed: int, n: int = 4000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    tau = np.where(x[:, 0] > 0.5, 2.0, 0.2)
    scores = tau + rng.normal(0, 1.5, n)  # DR scores: unbiased, noisy per unit
    return x, tau, scores


@pytest.mark.parametrize("budget", [0.2, 800])
def test_gains_match_a_direct_computation(budget):
    x, tau, scores = _world(0)
    result = evaluate_targeting(scores, tau + 0.01 * x[:, 1], budget)
    k = 800
    top = np.argsort(-(tau + 0.01 * x[:, 1]), kind="stable")[:k]
    treat = np.zeros(tau.size)
    treat[top] = 1
    assert result.share == pytest.approx(0.2)
    assert result.gain_vs_random == pytest.approx(np.mean(scores * (treat - 0.2)))
    assert result.gain_vs_all == pytest.approx(np.mean(scores * (treat - 1)))
    assert result.value == pytest.approx(scores[top].sum() / tau.size)
    # The gain over random is q * TOC(q) of the TOC built for RATE.
    toc = toc_curve(scores, tau + 0.01 * x[:, 1], q=[0.2, 1.0])
    assert result.gain_vs_random == pytest.approx(0.2 * toc["estimate"][0], rel=1e-9)


def test_gains_recover_the_truth_within_their_intervals():
    x, tau, scores = _world(1)
    result = evaluate_targeting(scores, x[:, 0], 0.3)
    treat = np.zeros(tau.size)
    treat[np.argsort(-x[:, 0])[:1200]] = 1
    truth_random = np.mean(tau * (treat - 0.3))
    truth_all = np.mean(tau * (treat - 1))
    lo, hi = result.interval("gain_vs_random")
    assert lo < truth_random < hi and lo > 0  # targeting beats random here
    lo, hi = result.interval("gain_vs_all")
    assert lo < truth_all < hi and hi < 0  # treating everyone still gains more in total


def test_clustered_errors_are_wider_for_clustered_scores():
    rng = np.random.default_rng(2)
    clusters = np.repeat(np.arange(200), 20)
    scores = rng.normal(size=200)[clusters] * 2 + rng.normal(size=4000)
    prio = rng.normal(size=200)[clusters]
    plain = evaluate_targeting(scores, prio, 0.5)
    grouped = evaluate_targeting(scores, prio, 0.5, clusters=clusters)
    assert grouped.gain_vs_random_se > 2 * plain.gain_vs_random_se


def test_budget_count_and_ranking():
    assert budget_count(0.25, 40) == 10 and budget_count(7, 40) == 7 and budget_count(99, 5) == 5
    with pytest.raises(EstimationError, match="positive count or a share"):
        budget_count(0, 10)
    cate = np.array([0.1, 3.0, np.nan, 2.0, 5.0, 1.0])
    eligible = np.array([True, True, True, True, False, True])
    assert rank_places(cate, 3, eligible=eligible).tolist() == [1, 3, 5]
    assert rank_places(cate, 0.5, eligible=eligible).tolist() == [1, 3]  # half of 4 eligible


def test_policy_tree_splits_on_the_feature_that_drives_the_effect():
    rng = np.random.default_rng(3)
    n = 2000
    x = rng.normal(size=(n, 3))
    t = rng.integers(0, 2, n)
    tau = np.where(x[:, 1] > 0.0, 2.0, 0.0)
    y = x[:, 0] + t * tau + rng.normal(size=n)
    tree = fit_policy_tree(x, t, y, cost=1.0, max_depth=1)
    rules = policy_rules(tree, ["a", "b", "c"])
    assert len(rules) == 2 and all(" b " in r for r in rules)
    assert tree.predict(np.array([[0, 1.0, 0], [0, -1.0, 0]])).tolist() == [1, 0]


def test_bad_inputs_name_the_problem():
    with pytest.raises(EstimationError, match="same length"):
        evaluate_targeting([1.0, 2.0], [1.0], 1)
    with pytest.raises(EstimationError, match="finite"):
        evaluate_targeting([1.0, np.nan], [1.0, 2.0], 1)
