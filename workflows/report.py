"""``report.html``: one self-contained page with what a reader of a run needs.

Estimates with intervals, the ATE table by method, the held-out heterogeneity checks (RATE,
BLP, GATES), the comparison with the truth when the inputs were simulated, how many units
were used and skipped (and why), and the figures the stages wrote, embedded as base64 PNG so
the page can be mailed or archived on its own. Only figures listed in ``summary["figures"]``
are embedded, and only from inside the run directory.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from eocausal.workflows.paths import RunPaths

from eocausal.files import atomic_write_text

__all__ = ["write_report"]

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:left}th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
.muted{color:#777}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return html.escape(json.dumps(value, default=str))
    return html.escape(str(value))


def _table(rows: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                   for k, v in rows.items() if v is not None)
    return f"<table>{body}</table>"


def _grid(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(paths: RunPaths, relative: str, title: str) -> str:
    root = paths.root.resolve()
    target = (paths.root / relative)
    if target.is_symlink() or not target.resolve().is_relative_to(root) or not target.is_file():
        return ""
    data = base64.b64encode(target.read_bytes()).decode()
    return (f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{data}'>")


def _interval(summary: dict[str, Any]) -> str:
    lo, hi = summary.get("ate_lo"), summary.get("ate_hi")
    return "" if lo is None or hi is None else f"[{lo:.4g}, {hi:.4g}]"


def write_report(paths: RunPaths, summary: dict[str, Any], *, title: str,
                 outcome_label: str | None = None, outcome_units: str | None = None) -> Path:
    """Write ``report.html`` from a run's summary (see ``workflows.stages.report``)."""
    outcome = outcome_label or (summary.get("outcome") or {}).get("column") or "the outcome"
    units = f" {outcome_units}" if outcome_units else ""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if summary.get("ate") is not None:
        parts.append(
            f"<p>Across the {summary.get('n_used')} units with a usable image, the programme "
            f"changed {html.escape(outcome)} by {summary['ate']:.3g}{html.escape(units)} on "
            f"average (95% interval {summary['ate_lo']:.3g} to {summary['ate_hi']:.3g}).</p>")
    naive = summary.get("naive") or {}
    parts.append("<h2>Average treatment effect</h2>")
    parts.append(_table({
        "method": summary.get("method"), "design": summary.get("design"),
        "ATE": summary.get("ate"), "95% interval": _interval(summary),
        "difference in means (naive)": naive.get("estimate"),
        "units used": summary.get("n_used"), "units skipped": summary.get("n_skipped"),
        "encoder": summary.get("encoder"),
    }))
    table = (summary.get("ate_estimators") or {}).get("estimates") or {}
    if table:
        parts.append("<h2>ATE by estimator</h2>")
        parts.append(_grid(list(table.values()), ["method", "estimate", "se", "lo", "hi",
                                                  "n_used", "note"]))
    panel = summary.get("panel")
    if panel:
        parts.append("<h2>Panel estimates</h2>")
        rows = list((panel.get("estimates") or {}).values())
        parts.append(_grid(rows, ["method", "estimate", "se", "lo", "hi", "n_units",
                                  "n_unit_periods", "biased"]))
        if any(r.get("biased") for r in rows):
            parts.append("<p>Pooled DML ignores the panel: it lies several standard errors from "
                         "the correlated-random-effects (Mundlak) estimate and is biased by the "
                         "units' fixed character.</p>")
    het = summary.get("heterogeneity")
    if het:
        parts.append("<h2>Heterogeneity, held out</h2>")
        blp = het.get("blp") or {}
        parts.append(_table({
            "RATE AUTOC": (het.get("rate_autoc") or {}).get("estimate"),
            "AUTOC standard error": (het.get("rate_autoc") or {}).get("se"),
            "RATE Qini": (het.get("rate_qini") or {}).get("estimate"),
            "Qini standard error": (het.get("rate_qini") or {}).get("se"),
            "BLP slope (1 = well calibrated)": blp.get("slope"),
            "BLP slope standard error": blp.get("slope_se"),
        }))
    if summary.get("truth"):
        parts.append("<h2>Against the simulated truth</h2>")
        parts.append(_table(summary["truth"]))
    if summary.get("map"):
        parts.append("<h2>Effect map</h2>")
        parts.append(_table({k: v for k, v in summary["map"].items() if k != "figures"}))
    for name, relative in (summary.get("figures") or {}).items():
        parts.append(_image(paths, relative, name.replace("_", " ")))
    reasons = summary.get("skip_reasons") or {}
    if reasons:
        parts.append("<h2>Skipped units</h2>")
        parts.append(_table(reasons))
        parts.append("<p class='muted'>Every skipped unit and its reason is in "
                     "skipped_units.csv.</p>")
    parts.append("<h2>Timings (seconds)</h2>")
    parts.append(_table(summary.get("timings_seconds", {})))
    parts.append("<p class='muted'>Config, versions, seeds and input checksums: "
                 "manifest.json.</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"{''.join(parts)}</body></html>")
    return atomic_write_text(paths.report, page)
