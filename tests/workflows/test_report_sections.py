"""Report sections a reader stumbled on: the cluster table (once shown as escaped markup),
method names, and the map's per-area table."""

from __future__ import annotations

import pandas as pd
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.report import write_report

SUMMARY = {
    "ate": 0.7, "ate_lo": 0.4, "ate_hi": 1.0, "n_used": 400, "n_units": 400,
    "ate_estimators": {"estimates": {"aipw": {"estimate": 0.71, "lo": 0.4, "hi": 1.02,
                                              "n_used": 400, "note": "influence function"}}},
    "clusters": {"k": 2, "clusters": [
        {"cluster": 1, "mu": -1.25, "mu_lo": -1.46, "mu_hi": -1.05, "sigma": 0.43, "share": 0.3},
        {"cluster": 2, "mu": 1.72, "mu_lo": 1.53, "mu_hi": 1.91, "sigma": 0.41, "share": 0.7}],
        "implied_ate": {"estimate": 0.76, "lo": 0.62, "hi": 0.91},
        "heldout_loglik_per_unit": -0.94, "heldout_loglik_per_unit_one_cluster": -1.0},
    "map": {"n_cells": 441, "n_predicted": 440},
}


def test_cluster_table_methods_and_areas(tmp_path):
    paths = RunPaths(tmp_path)
    paths.maps.mkdir(parents=True)
    pd.DataFrame({"name": ["West", "East"], "n_cells": [230, 210], "mean_cate": [0.75, 1.04],
                  "mean_cate_lo": [-0.16, 0.05], "mean_cate_hi": [1.66, 2.02],
                  "share_extrapolated": [0.07, 0.08]}).to_csv(paths.aggregates_csv, index=False)
    page = write_report(paths, SUMMARY, title="t").read_text()
    assert "&lt;table" not in page  # nested tables are tables, not escaped text
    assert "<th>Share of places</th>" in page and "<th>Mean effect</th>" in page
    assert "<td>-1.25</td>" in page and "<td>0.7</td>" in page
    assert "0.76 (95% interval 0.62 to 0.91)" in page
    assert "Doubly robust (AIPW)" in page and ">aipw<" not in page
    assert "Mean effect by area" in page and "<td>West</td>" in page and "<td>230</td>" in page
