"""``report.html``: one self-contained page with what a reader of a run needs.

Estimates with intervals, the comparison with the truth when the inputs were simulated,
how many units were used and skipped (and why), and every figure of the run directory,
embedded as base64 PNG so the page can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

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
    if isinstance(value, (list, dict)):
        return html.escape(json.dumps(value, default=str))
    return html.escape(str(value))


def _table(rows: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
                   for k, v in rows.items() if v is not None)
    return f"<table>{body}</table>"


def _image(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' " \
           f"src='data:image/png;base64,{data}'>"


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` from the files of a finished run directory."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    parts = [f"<h1>eocausal run: {html.escape(run_dir.name)}</h1>"]
    naive = summary.get("naive") or {}
    parts.append("<h2>Average treatment effect</h2>")
    parts.append(_table({
        "method": summary.get("method"), "design": summary.get("design"),
        "ATE": summary.get("ate"),
        "95% interval": f"[{summary.get('ate_lo', float('nan')):.4g}, "
                        f"{summary.get('ate_hi', float('nan')):.4g}]",
        "difference in means (naive)": naive.get("estimate"),
        "units used": summary.get("n_used"), "units skipped": summary.get("n_skipped"),
        "encoder": summary.get("encoder"),
    }))
    if summary.get("truth"):
        parts.append("<h2>Against the simulated truth</h2>")
        parts.append(_table(summary["truth"]))
    if summary.get("map"):
        parts.append("<h2>Effect map</h2>")
        parts.append(_table(summary["map"]))
    for png in sorted(run_dir.rglob("*.png")):
        parts.append(_image(png, str(png.relative_to(run_dir))))
    skipped = run_dir / "skipped_units.csv"
    if skipped.exists():
        frame = pd.read_csv(skipped)
        if len(frame):
            reasons = frame["reason"].str.split(":").str[0].value_counts()
            parts.append("<h2>Skipped units</h2>")
            parts.append(_table({k: int(v) for k, v in reasons.items()}))
            parts.append("<p class='muted'>Every skipped unit and its reason is in "
                         "skipped_units.csv.</p>")
    parts.append("<h2>Timings (seconds)</h2>")
    parts.append(_table(summary.get("timings_seconds", {})))
    parts.append("<p class='muted'>Config, versions, seeds and input checksums: "
                 "manifest.json.</p>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>eocausal report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    out = run_dir / "report.html"
    out.write_text(page)
    return out
