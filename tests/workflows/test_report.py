"""report.html: plain findings first, human labels, only the listed figures, safe paths."""

from __future__ import annotations

import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from eocausal.workflows.paths import RunPaths  # noqa: E402
from eocausal.workflows.report import findings, write_report  # noqa: E402

SUMMARY = {
    "ate": 0.75, "ate_lo": 0.59, "ate_hi": 0.89, "method": "causal_forest", "design": "rct",
    "n_used": 2082, "n_units": 2100, "n_skipped": 18, "encoder": "rcf",
    "naive": {"estimate": 0.7, "se": 0.1, "lo": 0.5, "hi": 0.9},
    "truth": {"true_ate": 0.8, "interval_covers_truth": True, "root_pehe": 0.4,
              "bias_removed_fraction": 0.9},
    "timings_seconds": {"ingest": 1.0},
}


def _png(path, colour):
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.set_facecolor(colour)
    fig.savefig(path)
    plt.close(fig)
    return path


@pytest.fixture()
def run(tmp_path):
    paths = RunPaths(tmp_path / "run")
    (paths.root / "figures").mkdir(parents=True)
    pd.DataFrame({"unit_id": ["a", "b"], "reason": ["outside imagery: x", "too few valid: y"]}
                 ).to_csv(paths.skipped, index=False)
    return paths


def test_leads_with_one_plain_sentence_per_finding():
    lines = findings(SUMMARY, outcome_label="consumption", outcome_units="SD")
    assert lines[0] == ("Across the 2,082 units the programme raised consumption by 0.75 SD "
                        "(95% interval 0.59 to 0.89).")
    assert "18 of 2,100 units had no usable image and were left out." in lines
    assert any("true effect is 0.80" in s and "covers it" in s for s in lines)


def test_an_interval_across_zero_says_no_effect_was_shown():
    lines = findings({"ate": -0.1, "ate_lo": -0.3, "ate_hi": 0.1, "n_used": 50},
                     outcome_label="yield", outcome_units="t/ha")
    assert "includes zero" in lines[0] and "yield" in lines[0] and "-0.10 t/ha" in lines[0]


def test_embeds_only_listed_figures_and_refuses_paths_out_of_the_run(run, tmp_path):
    listed = _png(run.figures / "toc.png", "red")
    _png(run.figures / "unlisted.png", "blue")
    outside = _png(tmp_path / "secret.png", "green")
    (run.figures / "link.png").symlink_to(outside)
    summary = {**SUMMARY, "figures": {"toc": "figures/toc.png", "escape": "../secret.png",
                                      "absolute": str(outside), "link": "figures/link.png"},
               "heterogeneity": {"rate_autoc": {"target": "AUTOC", "estimate": 0.2, "se": 0.05,
                                                "lo": 0.1, "hi": 0.3, "pvalue": 0.001}}}
    page = write_report(run, summary, title="Cash transfers", outcome_label="consumption",
                        outcome_units="SD").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert images == [base64.b64encode(listed.read_bytes()).decode()]
    assert "data-figure='toc'" in page and "unlisted" not in page


def test_raw_keys_get_labels_and_sections_appear_when_present(run):
    summary = {**SUMMARY, "clusters": {"n_clusters": 3}, "sensitivity": {"rv": 0.2},
               "ate_estimators": {"estimates": {
                   "aipw": {"method": "aipw", "estimate": 0.7, "se": 0.1, "lo": 0.5, "hi": 0.9,
                            "n_used": 2082, "note": ""},
                   "ipw": {"method": "ipw", "estimate": 0.8, "se": 0.2, "lo": 0.4, "hi": 1.2,
                           "n_used": 2082, "note": "Hajek"}}}}
    page = write_report(run, summary, title="T", outcome_label=None, outcome_units=None).read_text()
    assert "Root PEHE" in page and "root_pehe" not in page
    assert "Share of the naive bias removed" in page and "bias_removed_fraction" not in page
    assert "<td>Doubly robust (AIPW)</td>" in page
    assert "<td>Inverse propensity weighting (IPW)</td>" in page
    assert "Image clusters and their effects" in page and "hidden confounder" in page
    assert "Outside imagery" in page and "Skipped units" in page
    assert "<script" not in page and "http" not in page  # offline, nothing to fetch


def test_a_minimal_summary_still_gives_a_page(run):
    page = write_report(run, {}, title="Empty run").read_text()
    assert "<h1>Empty run</h1>" in page and "Findings" not in page


def test_targeting_section_with_its_rule(run):
    summary = {**SUMMARY, "targeting": {"share": 0.2, "gain_vs_random": 0.1,
                                        "gain_vs_random_lo": 0.05, "gain_vs_random_hi": 0.15,
                                        "rules": ["if ndvi > 0.3: treat"]}}
    page = write_report(run, summary, title="T", outcome_units="SD").read_text()
    assert "Where to go next" in page and "if ndvi &gt; 0.3: treat" in page
    assert "Gain over random targeting" in page
    assert "Treating the 20% of places ranked highest gains 0.10 SD per place" in page
