"""Report stage: gather every stage's numbers into summary.json and write report.html.

Each stage leaves its own JSON (estimates.json, evaluation.json, maps/map.json); this stage
joins them with the counts of used and skipped units, the comparison with the simulated
truth, and the timings from the manifest, so summary.json is the one file a reader opens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from eocausal.workflows.context import StageContext
from eocausal.workflows.stages.estimate import json_ready, write_json

__all__ = ["build_summary", "report_outputs", "report_settings", "report_stage",
           "truth_comparison"]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def report_settings(config: Any) -> dict[str, Any]:
    u = config.units
    return {"name": config.name, "outcome_label": u.outcome_label,
            "outcome_units": u.outcome_units, "truth": None if config.truth is None else
            str(config.truth)}


def report_outputs(ctx: StageContext) -> list[Path]:
    return [ctx.paths.summary, ctx.paths.report]


def truth_comparison(truth_path: Path | None, estimates: dict[str, Any],
                     effects: pd.DataFrame) -> dict[str, Any] | None:
    """Estimates against the simulator's truth over the units used (its estimand)."""
    if truth_path is None or not Path(truth_path).exists():
        return None
    import numpy as np
    from eocausal.models.evaluation.truth import compare_with_truth

    truth = pd.read_parquet(truth_path)
    info = json.loads(Path(truth_path).with_name("truth.json").read_text())
    merged = effects[["unit_id"]].astype(str).merge(
        truth[["unit_id", "cate"]].astype({"unit_id": str}), on="unit_id", how="left")
    true_ate = float(merged["cate"].mean())
    fit = {**estimates, "cate": effects["cate"].to_numpy(dtype=float)}
    comparison = compare_with_truth(fit, true_ate, merged["cate"].to_numpy(dtype=np.float64))
    comparison["true_ate"] = true_ate
    comparison["true_ate_all_units"] = float(info["ate"])
    return comparison


def build_summary(ctx: StageContext, timings: dict[str, float]) -> dict[str, Any]:
    """summary.json: the headline estimate, the evaluation, the map, counts and timings."""
    import geopandas as gpd

    paths, config = ctx.paths, ctx.config
    estimates = _read_json(paths.estimates) or {}
    evaluation = _read_json(paths.evaluation)
    map_summary = _read_json(paths.map_summary)
    skipped = pd.read_csv(paths.skipped) if paths.skipped.exists() else pd.DataFrame()
    effects = gpd.read_file(paths.effects) if paths.effects.exists() else None
    figures = dict(estimates.get("figures") or {})
    for png in sorted((paths.clusters / "figures").glob("*.png")) if paths.clusters.is_dir() \
            else []:
        if not png.is_symlink():
            figures[f"clusters_{png.stem}"] = str(png.relative_to(paths.root))
    for part in (evaluation, map_summary):
        figures.update((part or {}).get("figures") or {})
    reasons = (skipped["reason"].astype(str).str.split(":").str[0].value_counts().to_dict()
               if len(skipped) else {})
    summary = {
        "name": config.name,
        "outcome": {"column": config.units.outcome, "label": config.units.outcome_label,
                    "units": config.units.outcome_units},
        **estimates,
        "n_units": len(ctx.units()),
        "n_skipped": len(skipped),
        "skip_reasons": reasons,
        "encoder": config.encoder.name,
        "heterogeneity": evaluation,
        "panel": estimates.get("panel"),
        "targeting": (evaluation or {}).get("targeting"),
        "clusters": _read_json(paths.clusters / "clusters.json"),
        "feature_sets": (evaluation or {}).get("feature_sets"),
        "map": map_summary,
        "truth": (None if effects is None else
                  truth_comparison(config.truth, estimates, effects)),
        "figures": figures,
        "timings_seconds": timings,
    }
    return json_ready(summary)


def report_stage(ctx: StageContext) -> dict[str, Any]:
    from eocausal.workflows.report import write_report

    timings = {} if ctx.manifest is None else ctx.manifest.timings()
    timings.pop("report", None)
    summary = build_summary(ctx, timings)
    write_json(ctx.paths.summary, summary)
    u = ctx.config.units
    page = write_report(ctx.paths, summary, title=ctx.config.name, outcome_label=u.outcome_label,
                        outcome_units=u.outcome_units)
    return {"summary": str(ctx.paths.summary), "report": str(page)}
