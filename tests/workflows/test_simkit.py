"""The simulation kit: studies deterministic by seed, bias removed falling with coarser pixels
and a hidden confounder, summaries against hand computations, and the dask path."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from eocausal.workflows.simkit import (
    StudySpec,
    plot_grid,
    run_grid,
    run_study,
    simulation_grid,
    summarise_grid,
)

from eocausal.errors import ConfigError

TINY = {"n_units": 200, "scene_size": 64, "n_estimators": 40}


def _removed(rows: list[dict], method: str = "aipw") -> float:
    row = next(r for r in rows if r["method"] == method)
    return 1 - abs(row["estimate"] - row["truth"]) / abs(row["naive"] - row["truth"])


@pytest.fixture(scope="module")
def studies() -> dict[str, list[dict]]:
    return {"fine": run_study(StudySpec(pixel_size=10, visibility=1.0, seed=0)),
            "coarse": run_study(StudySpec(pixel_size=160, visibility=1.0, seed=0)),
            "hidden": run_study(StudySpec(pixel_size=10, visibility=0.0, seed=0))}


def test_bias_removed_falls_with_coarser_pixels_and_a_hidden_confounder(studies) -> None:
    fine, coarse, hidden = (_removed(studies[k]) for k in ("fine", "coarse", "hidden"))
    assert fine > 0.7  # 10 m pixels show the built-up confounder: most bias removed
    assert coarse < fine - 0.1  # 160 m pixels blur it
    assert abs(hidden) < 0.15  # no pixel shows it: nothing to remove
    for method in ("ipw", "linear_dml", "causal_forest"):
        assert _removed(studies["fine"], method) > _removed(studies["hidden"], method) + 0.5


def test_a_study_repeats_by_seed() -> None:
    a, b = run_study(StudySpec(seed=3, **TINY)), run_study(StudySpec(seed=3, **TINY))
    c = run_study(StudySpec(seed=4, **TINY))
    assert a == b
    assert [r["estimate"] for r in a] != [r["estimate"] for r in c]
    assert [r["method"] for r in a] == ["ipw", "aipw", "linear_dml", "causal_forest"]


def test_summary_matches_a_hand_computation() -> None:
    rows = pd.DataFrame({"design": "observational", "n_units": 100, "visibility": 1.0,
                         "pixel_size": 10.0, "method": "aipw", "seed": [0, 1, 2, 3],
                         "truth": 1.0, "naive": [3.0, 3.0, 2.0, 3.0],
                         "estimate": [1.5, 0.5, 1.0, 2.0], "se": 0.3,
                         "lo": [1.0, 0.2, 0.5, 1.8], "hi": [2.0, 0.8, 1.5, 2.2]})
    out = summarise_grid(rows).iloc[0]
    removed = np.array([0.75, 0.75, 1.0, 0.5])
    assert out["bias_removed"] == pytest.approx(removed.mean())
    half = 1.959964 * removed.std(ddof=1) / 2
    assert out["bias_removed_lo"] == pytest.approx(removed.mean() - half)
    assert out["coverage"] == pytest.approx(0.5)  # seeds 0 and 2 cover 1.0
    assert out["coverage_lo"] < 0.5 < out["coverage_hi"]
    assert out["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25 + 0 + 1) / 4))
    trial = summarise_grid(rows.assign(design="rct")).iloc[0]
    assert math.isnan(trial["bias_removed"])


def test_grid_runs_on_dask_with_the_same_numbers() -> None:
    specs = simulation_grid(pixel_sizes=(10, 160), visibilities=(1.0,), n_units=(200,),
                            seeds=[0], scene_size=64, n_estimators=40)
    here = run_grid(specs, scheduler="synchronous")
    on_dask = run_grid(specs, scheduler="local", workers=1)
    pd.testing.assert_frame_equal(here, on_dask)
    assert len(here) == 2 * 4 and set(here["pixel_size"]) == {10.0, 160.0}


def test_plot_has_one_panel_per_visibility(tmp_path) -> None:
    summary = pd.DataFrame({"design": "observational", "n_units": 100,
                            "visibility": [1.0, 1.0, 0.0, 0.0], "pixel_size": [10.0, 20.0] * 2,
                            "method": "aipw", "bias_removed": [0.9, 0.8, 0.1, 0.0],
                            "bias_removed_lo": [0.8, 0.7, 0.0, -0.1],
                            "bias_removed_hi": [1.0, 0.9, 0.2, 0.1]})
    fig = plot_grid(summary, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0 and len(fig.axes) == 2


@pytest.mark.parametrize("field, value, match", [
    ("pixel_size", 30, "pixel_size must be 10 m times"), ("visibility", -0.1, "visibility"),
    ("design", "panel", "design must be")])
def test_bad_study_spec_is_refused(field: str, value, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        StudySpec(**{field: value})
    with pytest.raises(ConfigError, match="grid is empty"):
        run_grid([])
