"""RATE against a hand computation and against the true CATE ranking."""

from __future__ import annotations

import numpy as np
import pytest
from eocausal.models.effects.crossfit import crossfit_nuisances, make_folds
from eocausal.models.evaluation.rate import rank_average_treatment_effect, toc_curve

from eocausal.errors import EstimationError
from tests.models.worlds import small_world

# Eight units. Sorted by priority (0.9, 0.8, ..., 0.1) their scores are 4, 5, 3, 2, 1, 0, -1, -2.
PRIORITIES = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6])
SCORES = np.array([4.0, -2.0, 1.0, 3.0, 0.0, 5.0, -1.0, 2.0])
# ATE = 12 / 8 = 1.5; running means 4, 4.5, 4, 3.5, 3, 2.5, 2, 1.5; so
TOC = np.array([2.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0])
AUTOC = TOC.sum() / 8  # 13 / 8 = 1.625
QINI = np.sum(np.arange(1, 9) / 8 * TOC) / 8  # 41 / 64 = 0.640625


def test_hand_example_values_written_out() -> None:
    assert AUTOC == 1.625 and QINI == 0.640625


@pytest.mark.parametrize(("target", "expected"), [("AUTOC", 1.625), ("QINI", 0.640625)])
def test_rate_equals_hand_computation(target: str, expected: float) -> None:
    result = rank_average_treatment_effect(SCORES, PRIORITIES, target=target, n_bootstrap=0)
    assert result.estimate == pytest.approx(expected, abs=1e-12)
    assert result.se == 0.0


def test_toc_on_grid_equals_hand_computation() -> None:
    # q n = 2, 4, 6, 8 units: TOC 3.0, 2.0, 1.0, 0.0
    toc = toc_curve(SCORES, PRIORITIES, q=[0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(toc["estimate"], [3.0, 2.0, 1.0, 0.0], atol=1e-12)


def test_toc_uses_a_fraction_of_the_next_unit() -> None:
    # q = 0.3: 2.4 units, (4 + 5 + 0.4 * 3) / 2.4 - 1.5 = 2.75
    toc = toc_curve(SCORES, PRIORITIES, q=[0.3, 1.0])
    assert toc["estimate"].iloc[0] == pytest.approx(2.75, abs=1e-12)


def test_tied_priorities_share_their_mean_score() -> None:
    # Units 5 and 3 (scores 5 and 3) tie at 0.8: both count as 4, so the sorted scores are
    # 4, 4, 4, 2, 1, 0, -1, -2 and TOC = 2.5, 2.5, 2.5, 2, 1.5, 1, 0.5, 0; AUTOC = 12.5 / 8.
    tied = PRIORITIES.copy()
    tied[3] = 0.8
    result = rank_average_treatment_effect(SCORES, tied, n_bootstrap=0)
    assert result.estimate == pytest.approx(12.5 / 8, abs=1e-12)


def test_only_the_order_of_priorities_matters() -> None:
    a = rank_average_treatment_effect(SCORES, PRIORITIES, n_bootstrap=50, random_state=3)
    b = rank_average_treatment_effect(SCORES, np.exp(5 * PRIORITIES), n_bootstrap=50, random_state=3)
    assert (a.estimate, a.se) == (b.estimate, b.se)


def test_toc_at_one_is_zero_with_zero_error() -> None:
    rng = np.random.default_rng(0)
    result = rank_average_treatment_effect(rng.normal(size=200), rng.normal(size=200), n_bootstrap=30)
    assert result.toc["estimate"].iloc[-1] == 0.0 and result.toc["se"].iloc[-1] == 0.0


def test_bootstrap_same_seed_repeats_other_seed_differs() -> None:
    rng = np.random.default_rng(1)
    scores, prio = rng.normal(size=300), rng.normal(size=300)
    first = rank_average_treatment_effect(scores, prio, n_bootstrap=40, random_state=7)
    again = rank_average_treatment_effect(scores, prio, n_bootstrap=40, random_state=7)
    other = rank_average_treatment_effect(scores, prio, n_bootstrap=40, random_state=8)
    assert first.se == again.se and first.se != other.se
    assert first.estimate == other.estimate


def test_clustered_bootstrap_widens_errors_of_duplicated_units() -> None:
    # Every unit twice: treating copies as independent understates the error by about sqrt(2).
    rng = np.random.default_rng(2)
    scores, prio = rng.normal(size=400), rng.normal(size=400)
    doubled, doubled_prio = np.repeat(scores, 2), np.repeat(prio, 2)
    naive = rank_average_treatment_effect(doubled, doubled_prio, n_bootstrap=300, random_state=0)
    clustered = rank_average_treatment_effect(doubled, doubled_prio, n_bootstrap=300,
                                              clusters=np.repeat(np.arange(400), 2), random_state=0)
    assert 1.2 < clustered.se / naive.se < 1.7


@pytest.fixture(scope="module")
def rct_scores() -> tuple[np.ndarray, np.ndarray]:
    """AIPW scores of a 1,500-unit trial world and its true CATE."""
    w = small_world(1, n_units=1500)
    X = np.hstack([w["features"], w["covariates"]])
    t, y = w["treatment"], w["outcome"]
    nuisances = crossfit_nuisances(X, t, y, folds=make_folds(t, cv=3), propensity=0.5)
    return nuisances.dr_scores(t, y), w["cate"]


def test_true_cate_priorities_give_clearly_positive_rate(rct_scores) -> None:
    scores, cate = rct_scores
    result = rank_average_treatment_effect(scores, cate, n_bootstrap=200)
    assert result.estimate > 0.6  # 1.02 (se 0.06) at seed 1
    assert result.lo > 0.0 and result.pvalue < 1e-6


def test_random_priorities_give_rate_near_zero(rct_scores) -> None:
    scores, _ = rct_scores
    prio = np.random.default_rng(0).normal(size=scores.size)
    for target in ("AUTOC", "QINI"):
        result = rank_average_treatment_effect(scores, prio, target=target, n_bootstrap=200)
        assert abs(result.estimate) < 3 * result.se  # AUTOC 0.05 (se 0.06) at seed 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": "AUC"}, "target must be 'AUTOC' or 'QINI'; got 'AUC'"),
    ({"q": [0.5, 0.9]}, r"q must increase strictly within \(0, 1\] and end at 1"),
    ({"clusters": np.zeros(8)}, "half-sample bootstrap needs at least 4 clusters; got 1"),
])
def test_bad_settings_raise(kwargs, message) -> None:
    with pytest.raises(EstimationError, match=message):
        rank_average_treatment_effect(SCORES, PRIORITIES, **kwargs)


def test_length_mismatch_and_nan_raise() -> None:
    with pytest.raises(EstimationError, match=r"same length; got shapes \(8,\) and \(7,\)"):
        rank_average_treatment_effect(SCORES, PRIORITIES[:7])
    with pytest.raises(EstimationError, match="must be finite"):
        rank_average_treatment_effect(np.r_[SCORES[:7], np.nan], PRIORITIES)
