"""Map stage: predicted effects on a grid over the scene, as a COG and a PNG.

The map is a prediction, not an interpolation: grid cells are chipped from the imagery,
encoded with the study's fitted encoder and band statistics, and scored by the saved model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from eocausal.workflows.context import StageContext
from eocausal.workflows.progress import progress_bar
from eocausal.workflows.stages.estimate import load_effect_model, write_json

from eocausal.files import atomic_path

__all__ = ["map_enabled", "map_outputs", "map_settings", "map_stage"]


def map_enabled(config: Any) -> bool:
    return bool(config.map.enabled) and config.patches is None and config.panel is None


def map_settings(config: Any) -> dict[str, Any]:
    return {"map": config.map.model_dump(mode="json"),
            "imagery": config.imagery.model_dump(mode="json"),
            "chips": config.chips.model_dump(mode="json")}


def map_outputs(ctx: StageContext) -> list[Path]:
    p = ctx.paths
    return [p.cate_tif, p.cate_png, p.map_summary]


def _effects(ctx: StageContext) -> Any:
    result = ctx.cached("effects")
    if result is not None:
        return result.effects
    import geopandas as gpd

    return gpd.read_file(ctx.paths.effects)


def _covariate_means(ctx: StageContext, n: int) -> pd.DataFrame | None:
    """Tabular covariates are unknown off the trial: grid cells get the trial's means."""
    covariates = list(ctx.config.units.covariates)
    if not covariates:
        return None
    means = ctx.units()[covariates].mean()
    return pd.DataFrame({c: np.full(n, means[c]) for c in covariates})


def _truth_on_grid(config: Any, grid: Any) -> np.ndarray | None:
    """The simulator's true CATE surface averaged onto the map grid, when it exists."""
    if config.truth is None:
        return None
    path = Path(config.truth).with_name("truth_cate.tif")
    if not path.exists():
        return None
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    out = np.full(grid.shape, np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        reproject(rasterio.band(src, 1), out, dst_transform=grid.transform, dst_crs=grid.crs,
                  resampling=Resampling.average, dst_nodata=np.nan)
    return out


def _estimator_checksum(ctx: StageContext) -> str | None:
    """The checksum the estimate stage recorded for estimator.joblib (this run's manifest)."""
    if ctx.manifest is None:
        return None
    record = ctx.manifest.stages.get("estimate") or ctx.manifest.previous("estimate") or {}
    return (record.get("outputs") or {}).get("estimator_sha256")


def map_stage(ctx: StageContext) -> dict[str, Any]:
    """Chip, encode and score a grid over the first raster; write maps/cate.tif and .png."""
    from eocausal.models.features.encode import encode_store
    from eocausal.pipeline.grid import region_grid
    from eocausal.pipeline.imagery import describe_raster, expand_imagery
    from eocausal.pipeline.ingest import ingest
    from eocausal.workflows.maps import is_cog, plot_surface, write_cog

    config, paths = ctx.config, ctx.paths
    source = describe_raster(expand_imagery(config.imagery.paths)[0], checksum=False)
    size = config.chips.size
    grid = region_grid(source, stride=config.map.stride or max(1, size // 2), margin=size // 2)
    img = config.imagery
    result = ingest(grid.units, img.paths, paths.grid_tiles, chip_size=size, bands=img.bands,
                    min_valid_fraction=config.chips.min_valid_fraction,
                    units_per_chunk=config.chips.units_per_chunk, crs=img.crs,
                    resolution=img.resolution, resampling=img.resampling, dates=img.dates,
                    apply_scale_offset=img.apply_scale_offset, map_partitions=ctx.mapper)
    study = ctx.store()
    with progress_bar("encode grid", ctx.progress) as update:
        frame = encode_store(result.store, ctx.encoder(), batch_size=config.encoder.batch_size,
                             device=config.encoder.device, progress=update,
                             mean=study.band_mean, std=study.band_std)
    model = load_effect_model(paths.estimator, _estimator_checksum(ctx))
    cells = grid.units.merge(frame, on="unit_id", how="inner")
    feature_cols = [c for c in frame.columns if c != "unit_id"]
    cate, _, _ = model.predict_cate(cells[feature_cols], _covariate_means(ctx, len(cells)))
    surface = np.full(grid.shape, np.nan, dtype=np.float32)
    surface[cells["row"].to_numpy(), cells["col"].to_numpy()] = cate
    with atomic_path(paths.cate_tif) as tmp:
        write_cog(tmp, surface, transform=grid.transform, crs=grid.crs)
    cog = paths.cate_tif
    truth_surface = _truth_on_grid(config, grid)
    effects = _effects(ctx).to_crs(grid.crs)
    points = np.column_stack([effects.geometry.x, effects.geometry.y])
    with atomic_path(paths.cate_png) as tmp:
        plot_surface(tmp, surface, extent=grid.extent, points=points,
                     title=f"Predicted CATE ({config.encoder.name} + {config.estimator.method})",
                     truth=truth_surface)
    png = paths.cate_png
    summary: dict[str, Any] = {"grid_shape": list(grid.shape),
                               "cells_predicted": int(np.isfinite(surface).sum()),
                               "figures": {"cate_map": str(Path(png).relative_to(paths.root))}}
    if truth_surface is not None:
        from scipy.stats import spearmanr

        ok = np.isfinite(surface) & np.isfinite(truth_surface)
        summary["spearman_with_true_surface"] = float(
            spearmanr(surface[ok], truth_surface[ok]).statistic)
    write_json(paths.map_summary, summary)
    ctx.echo(f"mapped CATE on a {grid.shape[0]}x{grid.shape[1]} grid -> {cog}, {png}")
    return {"cog": str(cog), "png": str(png), "cells": summary["cells_predicted"],
            "is_cog": is_cog(cog)}
