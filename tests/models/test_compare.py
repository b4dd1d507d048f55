"""Held-out heterogeneity evaluation, the method comparison table and the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eocausal.models.effects.diagnostics import overlap_summary
from eocausal.models.evaluation import plots
from eocausal.models.evaluation.compare import compare_methods, evaluate_heterogeneity
from matplotlib.figure import Figure

from eocausal.errors import EstimationError
from tests.models.worlds import small_world

SETTINGS = {"n_components": None, "n_estimators": 100, "n_jobs": 2, "n_bootstrap": 100}


@pytest.fixture(scope="module")
def trial() -> dict:
    return small_world(1, n_units=1500)


@pytest.fixture(scope="module")
def report(trial):
    return evaluate_heterogeneity(trial["features"], trial["treatment"], trial["outcome"],
                                  covariates=trial["covariates"], propensity=0.5, **SETTINGS)


def test_held_out_cate_correlates_with_truth(trial, report) -> None:
    assert np.isfinite(report.priorities).all()
    assert np.corrcoef(report.priorities, trial["cate"])[0, 1] > 0.7  # 0.82 at seed 1


def test_rate_autoc_and_qini_significantly_positive(report) -> None:
    # seed 1: AUTOC 0.81 (se 0.06), Qini 0.26 (se 0.02); the true CATE ranking gives 1.02
    assert report.autoc.lo > 0 and report.autoc.estimate > 0.5
    assert report.qini.lo > 0


def test_blp_slope_near_one_and_gates_increase(report) -> None:
    assert 0.7 < report.blp.slope < 1.4  # 1.07 (se 0.08)
    assert report.blp.slope_pvalue < 1e-6
    estimates = report.gates.table["estimate"].to_numpy()
    assert estimates[-1] - estimates[0] > 1.5
    assert report.gates.difference["lo"] > 0


def test_report_summary_is_json_ready(report) -> None:
    summary = json.loads(json.dumps(report.summary()))
    assert summary["rate_autoc"]["target"] == "AUTOC"
    assert len(summary["gates"]["table"]["estimate"]) == 5


def test_no_heterogeneity_gives_rate_near_zero() -> None:
    w = small_world(6, n_units=1000, heterogeneity=0.0)
    result = evaluate_heterogeneity(w["features"], w["treatment"], w["outcome"], propensity=0.5,
                                    method="dr_learner", **SETTINGS)
    assert abs(result.autoc.estimate) < 3 * result.autoc.se


def test_grouped_evaluation_clusters_the_bootstrap() -> None:
    w = small_world(7, n_units=800)
    groups = np.arange(800) // 20
    result = evaluate_heterogeneity(w["features"], w["treatment"], w["outcome"], propensity=0.5,
                                    method="dr_learner", groups=groups, **SETTINGS)
    assert result.autoc.se > 0 and result.blp is not None


def test_compare_methods_table(trial) -> None:
    table = compare_methods(trial["features"][:600], trial["treatment"][:600], trial["outcome"][:600],
                            methods=["dr_learner", "t_learner"], propensity=0.5,
                            true_cate=trial["cate"][:600], **SETTINGS)
    assert list(table.index) == ["dr_learner", "t_learner"]
    for column in ("ate", "ate_lo", "ate_hi", "autoc", "autoc_se", "qini", "blp_slope", "root_pehe"):
        assert table[column].notna().all(), column
    assert table.loc["t_learner", "ate_source"] == "aipw"
    assert (table["autoc"] > 0).all()


def test_compare_methods_rejects_unknown_method(trial) -> None:
    with pytest.raises(EstimationError, match="unknown method 'grf'; choose one of"):
        compare_methods(trial["features"], trial["treatment"], trial["outcome"], methods=["grf"])


def test_figures_render_and_save(report, tmp_path) -> None:
    rng = np.random.default_rng(0)
    e = rng.uniform(0.1, 0.9, 300)
    figures = {
        "toc": plots.plot_toc({"AUTOC": report.autoc, "Qini": report.qini}),
        "gates": plots.plot_gates(report.gates),
        "calibration": plots.plot_calibration(report.gates),
        "overlap": plots.plot_overlap(overlap_summary((rng.uniform(size=300) < e).astype(int), e)),
    }
    assert all(isinstance(f, Figure) for f in figures.values())
    paths = plots.save_figures(figures, tmp_path / "figures")
    assert [p.name for p in paths] == ["toc.png", "gates.png", "calibration.png", "overlap.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
