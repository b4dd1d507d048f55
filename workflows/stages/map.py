"""Map stage: predicted effects over a region, exported for policymakers (see workflows.maps).

The map is a prediction, not an interpolation: grid cells are chipped from the imagery,
encoded with the study's fitted encoder and band statistics, and scored by the saved model
(:func:`eocausal.workflows.maps.build_map`, which ``eocausal map`` calls too). For simulated
inputs the stage also compares the predicted surface with the true one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from eocausal.workflows.context import StageContext
from eocausal.workflows.stages.estimate import write_json

__all__ = ["map_enabled", "map_outputs", "map_settings", "map_stage"]


def map_enabled(config: Any) -> bool:
    return bool(config.map.enabled) and config.patches is None and config.panel is None


def map_settings(config: Any) -> dict[str, Any]:
    return {"map": config.map.model_dump(mode="json"),
            "imagery": config.imagery.model_dump(mode="json"),
            "chips": config.chips.model_dump(mode="json"),
            "labels": [config.name, config.units.outcome_label, config.units.outcome_units]}


def map_outputs(ctx: StageContext) -> list[Path]:
    p = ctx.paths
    return [p.effect_tif, p.effect_png, p.effect_html, p.cells_parquet, p.map_summary]


def _spearman_with_truth(config: Any, effect_tif: Path) -> float | None:
    """Rank correlation of the predicted surface with the simulator's true CATE surface."""
    if config.truth is None:
        return None
    truth_tif = Path(config.truth).with_name("truth_cate.tif")
    if not truth_tif.exists():
        return None
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from scipy.stats import spearmanr

    with rasterio.open(effect_tif) as src:
        predicted = src.read(1)
        truth = np.full(predicted.shape, np.nan, dtype=np.float32)
        with rasterio.open(truth_tif) as true_src:
            reproject(rasterio.band(true_src, 1), truth, dst_transform=src.transform,
                      dst_crs=src.crs, resampling=Resampling.average, dst_nodata=np.nan)
    ok = np.isfinite(predicted) & np.isfinite(truth)
    if ok.sum() < 3:
        return None
    return float(spearmanr(predicted[ok], truth[ok]).statistic)


def map_stage(ctx: StageContext) -> dict[str, Any]:
    """Build the map of the run's config (``map`` section) into maps/."""
    from eocausal.workflows.maps import build_map

    config, paths = ctx.config, ctx.paths
    u = config.units
    outcome = u.outcome_label or "the outcome"
    result = build_map(paths, config.map, mapper=ctx.mapper, progress=ctx.progress,
                       echo=ctx.echo, title=f"Predicted effect on {outcome} ({config.name})",
                       outcome_label=u.outcome_label, outcome_units=u.outcome_units)
    summary = dict(result.summary)
    summary["spearman_with_true_surface"] = _spearman_with_truth(config, paths.effect_tif)
    summary["figures"] = {"effect_map": str(paths.effect_png.relative_to(paths.root))}
    write_json(paths.map_summary, summary)
    return {"n_predicted": summary["n_predicted"], "n_cells": summary["n_cells"],
            "outputs": summary.get("outputs")}
