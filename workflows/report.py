"""``report.html``: one offline page a decision-maker can read, built from the run's summary.

It leads with one plain sentence per finding, in the outcome's own name and units, then the
tables and figures behind them: the ATE by method, the distribution of CATE, TOC/RATE,
GATES and calibration, clusters, sensitivity, the maps and skipped units. Raw keys get a
human label and a one-line explanation. Figures come only from ``summary["figures"]``
(name -> path relative to the run directory), embedded as base64 so the page travels
alone; a path that leaves the run directory (``..``, absolute, or through a symlink) is
refused, never followed.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from eocausal.workflows.paths import RunPaths

from eocausal.files import atomic_write_text

__all__ = ["LABELS", "findings", "write_report"]

log = logging.getLogger(__name__)

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:4px 9px;
text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd;
margin:.4em 0}.muted{color:#666;font-size:.92em}.findings li{margin:.35em 0}
.explain{color:#666;font-size:.85em;display:block}figure{margin:1em 0}figcaption{color:#555}
"""

# key -> (human label, one-line explanation)
LABELS: dict[str, tuple[str, str]] = {
    "ate": ("Average effect (ATE)", "Mean effect of the programme over the units used."),
    "ate_lo": ("95% interval, low", ""), "ate_hi": ("95% interval, high", ""),
    "ate_se": ("Standard error of the ATE", "Uncertainty of the average effect."),
    "method": ("Estimator", "How the effects were estimated."),
    "design": ("Design", "rct: treatment assigned at random; observational: it was not."),
    "n_used": ("Units used", "Units with a usable image chip, in the estimate."),
    "n_units": ("Units in the study", ""),
    "n_skipped": ("Units skipped", "Units without a usable image (see skipped_units.csv)."),
    "encoder": ("Image encoder", "Turns each image chip into features."),
    "ate_source": ("Where the ATE comes from", "The learner's own average, or AIPW."),
    "cate_interval": ("Per-unit intervals from", "blb: bootstrap of little bags; none: not available."),
    "propensity_used": ("Assignment probability", "Known share treated in the trial."),
    "outcome_r2": ("Outcome model R²", "Out-of-fold share of outcome variance the images explain."),
    "treatment_accuracy": ("Treatment model accuracy", "Out-of-fold; near the larger arm's share in a trial."),
    "ate_error": ("Error of the ATE", "Estimate minus the simulated true ATE."),
    "abs_ate_error": ("Absolute error of the ATE", ""),
    "interval_covers_truth": ("Interval covers the truth", "Whether the 95% interval contains the true ATE."),
    "spearman_cate": ("Rank correlation of CATE with truth", "1: the model orders units exactly as the truth does."),
    "pearson_cate": ("Correlation of CATE with truth", ""),
    "root_pehe": ("Root PEHE", "Typical error of the per-unit effects against the truth (lower is better)."),
    "naive_ate_error": ("Error of the difference in means", "The same error for a naive comparison of arms."),
    "bias_removed_fraction": ("Share of the naive bias removed", "1: all of the naive comparison's bias is gone."),
    "true_ate": ("True ATE (units used)", "From the simulation."),
    "true_ate_all_units": ("True ATE (all units)", "From the simulation."),
    "estimate": ("Estimate", ""), "se": ("Standard error", ""), "lo": ("95% low", ""),
    "hi": ("95% high", ""), "pvalue": ("p-value", "Chance of a value this far from zero if there were none."),
    "n_bootstrap": ("Bootstrap replicates", ""), "target": ("Weighting", ""),
    "slope": ("Calibration slope", "1: predicted differences in effect are borne out; 0: no signal."),
    "slope_se": ("Slope standard error", ""), "slope_pvalue": ("Slope p-value", ""),
    "difference": ("Top minus bottom group", "Effect in the highest-predicted fifth minus the lowest."),
    "n_cells": ("Cells in the region", ""), "n_predicted": ("Cells with a prediction", ""),
    "n_nodata": ("Cells without imagery (nodata)", ""),
    "n_extrapolated": ("Cells outside the trial's support", "Their images look unlike any trial unit's."),
    "share_extrapolated": ("Share extrapolated", ""),
    "spacing_m": ("Cell size (m)", ""), "crs": ("Map projection", ""), "region": ("Region", ""),
    "mean_cate": ("Mean predicted effect", ""), "grid_shape": ("Grid (rows, columns)", ""),
    "support_threshold": ("Support distance threshold", "Feature-space distance beyond which a cell is flagged."),
    "cells_predicted": ("Cells with a prediction", ""),
    "spearman_with_true_surface": ("Rank correlation with the true map", "From the simulation."),
    "gain_vs_random": ("Gain over random targeting", "Per place, treating the ranked top share instead of the same number at random."),
    "gain_vs_all": ("Gain over treating everyone", "Per place; negative: treating everyone does better."),
    "value": ("Effect per place under the rule", ""), "share": ("Share of places treated", ""),
    "gain_vs_random_lo": ("Gain over random, 95% low", ""),
    "gain_vs_random_hi": ("Gain over random, 95% high", ""),
    "gain_vs_all_lo": ("Gain over treating everyone, 95% low", ""),
    "gain_vs_all_hi": ("Gain over treating everyone, 95% high", ""),
    "mean_effect_treated": ("Mean effect among those chosen", ""),
    "budget": ("Budget", "Places to treat next: a count, or a share of the mapped cells."),
    "n_targets": ("Places chosen", "The best-predicted cells inside the trial's support (targets.csv)."),
    "outcome_units": ("Outcome units", ""),
    "value_se": ("Standard error of the effect per place", ""),
    "value_lo": ("Effect per place, 95% low", ""), "value_hi": ("Effect per place, 95% high", ""),
    "gain_vs_random_se": ("Standard error of the gain over random", ""),
    "gain_vs_all_se": ("Standard error of the gain over treating everyone", ""),
    "k": ("Number of image clusters", ""),
    "n_clusters": ("Image clusters mapped", "effect.tif has each cluster's probability and the cluster model's effect."),
    "implied_ate": ("Average effect implied by the clusters", "Mean of the clusters' effects, weighted by how many places fall in each."),
    "heldout_loglik_per_unit": ("Held-out fit with these clusters", "Log-likelihood per unit on held-out folds; higher is better."),
    "heldout_loglik_per_unit_one_cluster": ("Held-out fit with one cluster", "Below the line above: the clusters predict outcomes better than one common effect."),
    "cv": ("Cross-fitting folds", ""), "n_bootstrap_replicates": ("Bootstrap replicates", ""),
    "aggregate_errors": ("Errors of cells in a polygon", "shared: taken as moving together (valid for any correlation)."),
}

METHOD_NAMES = {
    "difference_in_means": "Difference in means (no adjustment)",
    "ipw": "Inverse propensity weighting (IPW)", "aipw": "Doubly robust (AIPW)",
    "linear_dml": "Double machine learning, linear (LinearDML)",
    "dr_learner": "Doubly robust learner (DR-learner)", "causal_forest": "Causal forest (DML)",
    "forest_dr_learner": "Forest DR-learner", "x_learner": "X-learner",
    "t_learner": "T-learner", "s_learner": "S-learner",
}


def _label(key: str) -> tuple[str, str]:
    return LABELS.get(key, (key.replace("_", " ").capitalize(), ""))


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) for v in value):
            return _frame_table(pd.DataFrame(list(value)))
        return html.escape(", ".join(str(v) if isinstance(v, str) else _fmt(v) for v in value))
    if isinstance(value, dict):
        return _table(value)
    return html.escape(str(value))


def _table(rows: dict[str, Any]) -> str:
    body = []
    for key, value in rows.items():
        if value is None:
            continue
        label, explain = _label(str(key))
        note = f"<span class='explain'>{html.escape(explain)}</span>" if explain else ""
        body.append(f"<tr><th>{html.escape(label)}{note}</th><td>{_fmt(value)}</td></tr>")
    return f"<table>{''.join(body)}</table>" if body else ""


def _frame_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(_label(str(c))[0])}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{rows}</table>"


def _figure(paths: RunPaths, name: str, rel: str) -> str:
    """Embed one listed figure; refuse paths that leave the run directory."""
    root = paths.root.resolve()
    candidate = paths.root / rel
    if Path(rel).is_absolute() or candidate.is_symlink() or not candidate.resolve().is_relative_to(root):
        log.warning("Figure %r at %r is outside the run directory; not embedded", name, rel)
        return ""
    if not candidate.is_file():
        log.warning("Figure %r at %r does not exist; not embedded", name, rel)
        return ""
    mime = "image/svg+xml" if candidate.suffix.lower() == ".svg" else "image/png"
    data = base64.b64encode(candidate.read_bytes()).decode()
    caption = html.escape(name.replace("_", " "))
    return (f"<figure data-figure='{html.escape(name)}'><img alt='{caption}' "
            f"src='data:{mime};base64,{data}'><figcaption>{caption}</figcaption></figure>")


def _change(value: float, label: str, units: str) -> str:
    verb = "raised" if value > 0 else "lowered"
    return f"{verb} {label} by {abs(value):.2f} {units}".rstrip()


def findings(summary: dict[str, Any], *, outcome_label: str | None = None,
             outcome_units: str | None = None) -> list[str]:
    """One plain sentence per finding, in the outcome's name and units."""
    label = outcome_label or "the outcome"
    units = outcome_units or ""
    out = []
    ate, lo, hi = (_num(summary.get(k)) for k in ("ate", "ate_lo", "ate_hi"))
    n = summary.get("n_used")
    if ate is not None:
        across = f"Across the {n:,} units" if isinstance(n, int) else "Across the units"
        if lo is not None and hi is not None and lo <= 0 <= hi:
            out.append(f"{across} the programme changed {label} by {ate:+.2f} {units} on "
                       f"average, but the 95% interval ({lo:.2f} to {hi:.2f}) includes zero: "
                       "the data do not show an effect.".replace("  ", " "))
        else:
            interval = f" (95% interval {lo:.2f} to {hi:.2f})" if lo is not None else ""
            out.append(f"{across} the programme {_change(ate, label, units)}{interval}.")
    het = summary.get("heterogeneity") or {}
    autoc = het.get("rate_autoc") or {}
    if _num(autoc.get("estimate")) is not None and _num(autoc.get("lo")) is not None:
        if autoc["lo"] > 0:
            out.append("The effect differs between places in a way the images can predict: "
                       f"units ranked first gained more than average (RATE {autoc['estimate']:.2f}, "
                       f"95% interval {autoc['lo']:.2f} to {autoc['hi']:.2f}).")
        else:
            out.append("The images do not reliably tell who gains more: the ranking's RATE "
                       f"({autoc['estimate']:.2f}, 95% interval {autoc['lo']:.2f} to "
                       f"{autoc['hi']:.2f}) includes zero.")
    mapped = summary.get("map") or {}
    if _num(mapped.get("mean_cate")) is not None:
        share = _num(mapped.get("share_extrapolated")) or 0.0
        out.append(f"Over the {mapped.get('n_predicted', 0):,} mapped cells the predicted effect "
                   f"averages {mapped['mean_cate']:.2f} {units}; {share:.0%} of them look unlike any "
                   "trial unit, so their predictions are extrapolations.".replace("  ", " "))
    target = (mapped.get("targeting") if mapped else None) or summary.get("targeting") or {}
    if _num(target.get("gain_vs_random")) is not None:
        out.append(f"Treating the {target['share']:.0%} of places ranked highest gains "
                   f"{target['gain_vs_random']:.2f} {units} per place over treating as many at "
                   f"random (95% interval {target['gain_vs_random_lo']:.2f} to "
                   f"{target['gain_vs_random_hi']:.2f}).".replace("  ", " "))
    skipped, total = summary.get("n_skipped"), summary.get("n_units")
    if isinstance(skipped, int) and isinstance(total, int) and skipped:
        out.append(f"{skipped:,} of {total:,} units had no usable image and were left out.")
    truth = summary.get("truth") or {}
    if _num(truth.get("true_ate")) is not None and ate is not None:
        covers = "covers" if truth.get("interval_covers_truth") else "misses"
        out.append(f"In this simulation the true effect is {truth['true_ate']:.2f}; the estimate "
                   f"is off by {ate - truth['true_ate']:+.2f} and its interval {covers} it.")
    return out


def _ate_methods(summary: dict[str, Any]) -> str:
    rows = []
    est = (summary.get("ate_estimators") or {}).get("estimates") or {}
    for name, e in est.items():
        rows.append({"method": METHOD_NAMES.get(name, name), "estimate": e.get("estimate"),
                     "lo": e.get("lo"),
                     "hi": e.get("hi"), "n_used": e.get("n_used"), "note": e.get("note", "")})
    if not rows and _num(summary.get("ate")) is not None:
        method = summary.get("method")
        rows.append({"method": METHOD_NAMES.get(method, method), "estimate": summary.get("ate"),
                     "lo": summary.get("ate_lo"), "hi": summary.get("ate_hi"),
                     "n_used": summary.get("n_used"), "note": "main estimate"})
        naive = summary.get("naive") or {}
        if naive:
            rows.append({"method": "difference in means", "estimate": naive.get("estimate"),
                         "lo": naive.get("lo"), "hi": naive.get("hi"),
                         "n_used": summary.get("n_used"), "note": "naive comparison of arms"})
    return _frame_table(pd.DataFrame(rows)) if rows else ""


def _cate_distribution(paths: RunPaths) -> str:
    if not paths.effects.exists():
        return ""
    import geopandas as gpd

    cate = gpd.read_file(paths.effects, columns=["cate"], ignore_geometry=True)["cate"]
    q = cate.quantile([0.05, 0.25, 0.5, 0.75, 0.95])
    return _frame_table(pd.DataFrame({"5%": [q.iloc[0]], "25%": [q.iloc[1]], "median": [q.iloc[2]],
                                      "75%": [q.iloc[3]], "95%": [q.iloc[4]],
                                      "share above zero": [float((cate > 0).mean())]}))


def _heterogeneity(het: dict[str, Any]) -> str:
    parts = []
    for key, title in (("rate_autoc", "RATE with AUTOC weights (power when few gain)"),
                       ("rate_qini", "RATE with Qini weights (power when gains are diffuse)")):
        if het.get(key):
            parts.append(f"<h3>{title}</h3>{_table(het[key])}")
    if het.get("blp"):
        parts.append(f"<h3>Calibration (best linear predictor)</h3>{_table(het['blp'])}")
    gates = het.get("gates") or {}
    if gates.get("table"):
        parts.append("<h3>Effect by predicted group (GATES)</h3>"
                     + _frame_table(pd.DataFrame(gates["table"])))
    return "".join(parts)


def _clusters(value: dict[str, Any]) -> str:
    """The cluster model's table with its own column names (``share`` is the share of places
    in the cluster here, not a share treated), then its headline numbers."""
    if not value.get("clusters"):
        return _table(value)
    rows = pd.DataFrame(value["clusters"])
    names = {"cluster": "Cluster", "mu": "Mean effect", "mu_lo": "95% low", "mu_hi": "95% high",
             "sigma": "Spread of effects (sd)", "share": "Share of places"}
    table = ""
    if len(rows):
        table = _frame_table(rows[[c for c in names if c in rows]].rename(columns=names))
    implied = value.get("implied_ate") or {}
    headline = {"k": value.get("k"), "heldout_loglik_per_unit": value.get("heldout_loglik_per_unit"),
                "heldout_loglik_per_unit_one_cluster":
                    value.get("heldout_loglik_per_unit_one_cluster")}
    if implied:
        headline["implied_ate"] = (f"{_fmt(implied.get('estimate'))} (95% interval "
                                   f"{_fmt(implied.get('lo'))} to {_fmt(implied.get('hi'))})")
    return (table + _table(headline) + "<p class='muted'>Settings and the choice of K: "
            "clusters/clusters.json.</p>")


def _aggregates(paths: RunPaths) -> str:
    path = paths.maps / "aggregates.csv"
    if not path.exists():
        return ""
    frame = pd.read_csv(path)
    names = {"name": "Area", "n_cells": "Cells", "mean_cate": "Mean effect",
             "mean_cate_lo": "95% low", "mean_cate_hi": "95% high",
             "share_extrapolated": "Share extrapolated"}
    frame = frame[[c for c in names if c in frame]].rename(columns=names)
    return ("<h3>Mean effect by area</h3><p class='muted'>Mean predicted effect over each "
            "area's mapped cells; the interval takes the cells' errors as shared inside the "
            "area (aggregates.csv).</p>" + _frame_table(frame))


def _skipped(paths: RunPaths) -> str:
    if not paths.skipped.exists():
        return ""
    frame = pd.read_csv(paths.skipped)
    if not len(frame):
        return "<p>No unit was skipped.</p>"
    reasons = frame["reason"].astype(str).str.split(":").str[0].value_counts()
    return (_table({k: int(v) for k, v in reasons.items()})
            + "<p class='muted'>Every skipped unit and its reason: skipped_units.csv.</p>")


def write_report(paths: RunPaths | str | Path, summary: dict[str, Any] | None = None, *,
                 title: str | None = None, outcome_label: str | None = None,
                 outcome_units: str | None = None) -> Path:
    """Write ``report.html`` for a run and return its path.

    Reads ``summary`` defensively: each section appears only when its keys do. Figures are
    those of ``summary["figures"]`` only. The legacy call ``write_report(run_dir)`` (today's
    runner) reads ``summary.json`` and embeds the runner's ``maps/cate.png``.
    """
    if not isinstance(paths, RunPaths):
        paths = RunPaths(Path(paths))
    if summary is None:
        summary = json.loads(paths.summary.read_text())
        if "figures" not in summary and paths.cate_png.exists():
            summary = {**summary, "figures": {"cate_map": str(paths.cate_png.relative_to(paths.root))}}
    title = title or f"eocausal run: {paths.root.name}"
    figures = {str(k): str(v) for k, v in (summary.get("figures") or {}).items()}
    used: set[str] = set()

    def figs(*needles: str) -> str:
        chosen = [n for n in figures if n not in used and any(s in n for s in needles)]
        used.update(chosen)
        return "".join(_figure(paths, n, figures[n]) for n in chosen)

    parts = [f"<h1>{html.escape(title)}</h1>"]
    sentences = findings(summary, outcome_label=outcome_label, outcome_units=outcome_units)
    if sentences:
        parts.append("<h2>Findings</h2><ul class='findings'>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>")
    parts.append("<h2>Average treatment effect, by method</h2>" + _ate_methods(summary))
    main = {k: summary.get(k) for k in ("design", "method", "ate_source", "encoder", "n_units",
                                        "n_used", "n_skipped", "propensity_used")}
    parts.append(_table({**main, **(summary.get("nuisance_scores") or {})}))
    distribution = _cate_distribution(paths)
    parts.append("<h2>How the effect varies between units</h2>"
                 "<p class='muted'>Estimated effect per unit (CATE), quantiles over the units "
                 f"used{f', in {html.escape(outcome_units)}' if outcome_units else ''}.</p>"
                 + distribution + figs("cate", "distribution"))
    if summary.get("heterogeneity"):
        parts.append("<h2>Does the ranking find who gains most? (TOC, RATE, GATES)</h2>"
                     + _heterogeneity(summary["heterogeneity"]) + figs("toc", "qini", "gates",
                                                                       "calibration"))
    if summary.get("sensitivity"):
        sens = dict(summary["sensitivity"])
        sentence = sens.pop("sentence", None)
        parts.append("<h2>How strong would a hidden confounder have to be?</h2>"
                     + (f"<p>{html.escape(sentence)}</p>" if sentence else "")
                     + _table({k: v for k, v in sens.items() if not isinstance(v, list | dict)})
                     + figs("sensitivity"))
    sets = (summary.get("feature_sets") or {}).get("feature_sets")
    if sets:
        parts.append("<h2>Images, tabular covariates, or both?</h2><p class='muted'>The same "
                     "learner on covariates only, image features only, and both: ATE and the "
                     "held-out ranking metrics, with standard errors.</p>"
                     + _frame_table(pd.DataFrame(sets)) + figs("feature_sets"))
    panel = summary.get("panel")
    if panel:
        rows = pd.DataFrame(list((panel.get("estimates") or {}).values()))
        parts.append("<h2>Panel estimates</h2>" + _frame_table(rows))
        if "biased" in rows and rows["biased"].fillna(False).astype(bool).any():
            parts.append("<p>Pooled DML ignores the panel: it lies several standard errors "
                         "from the correlated-random-effects (Mundlak) estimate, biased by the "
                         "units' fixed local character.</p>")
    for key, heading in (("clusters", "Image clusters and their effects"),):
        if summary.get(key):
            value = summary[key]
            body = _clusters(value) if isinstance(value, dict) else _fmt(value)
            parts.append(f"<h2>{heading}</h2>{body}{figs(key, 'salience' if key == 'clusters' else key)}")
    if summary.get("truth"):
        parts.append("<h2>Against the simulated truth</h2>" + _table(summary["truth"]))
    if summary.get("map"):
        mapped = {k: v for k, v in summary["map"].items() if k not in ("outputs", "targeting")}
        link = ""
        if (paths.maps / "effect.html").exists():
            link = "<p><a href='maps/effect.html'>Open the interactive map (maps/effect.html)</a></p>"
        target = summary["map"].get("targeting")
        parts.append("<h2>Effect map</h2>" + link + _table(mapped) + figs("map", "effect")
                     + _aggregates(paths)
                     + (f"<h3>Where to go next</h3>{_table(target)}" if target else ""))
    if summary.get("targeting") and not (summary.get("map") or {}).get("targeting"):
        target = dict(summary["targeting"])
        rules = target.pop("rules", None)
        parts.append("<h2>Where to go next</h2>" + _table(target)
                     + ("<p>A rule a reader can state (shallow policy tree):</p><ul>"
                        + "".join(f"<li>{html.escape(r)}</li>" for r in rules) + "</ul>"
                        if rules else ""))
    parts.append("<h2>Skipped units</h2>" + _skipped(paths))
    rest = figs("")
    if rest:
        parts.append("<h2>Other figures</h2>" + rest)
    if summary.get("timings_seconds"):
        parts.append("<h2>Time per stage (seconds)</h2>"
                     + _table({k: v for k, v in summary["timings_seconds"].items()}))
    parts.append("<p class='muted'>Config, package versions, seeds and input checksums: "
                 "manifest.json.</p>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"{''.join(parts)}</body></html>")
    atomic_write_text(paths.report, page)
    return paths.report
