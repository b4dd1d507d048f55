"""Run every stage of a config into one run directory (see DESIGN.md, "the run directory").

Each stage is a function of the previous stage's files, so ``eocausal run`` and a notebook
call the same code; this module only wires them, times them, and records the manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from eocausal.models.effects.estimate import EffectModel, estimate_effects
from eocausal.models.evaluation.truth import compare_with_truth
from eocausal.models.features.encode import (
    encode_store,
    prepare_encoder,
    read_features,
    write_features,
)
from eocausal.pipeline.grid import region_grid
from eocausal.pipeline.imagery import describe_raster, expand_imagery
from eocausal.pipeline.ingest import IngestResult, ingest
from eocausal.pipeline.patches import ingest_patches
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, read_units
from eocausal.simulator.simulate import simulate
from eocausal.workflows.cluster import Mapper, partition_mapper
from eocausal.workflows.config import RunConfig
from eocausal.workflows.manifest import Manifest
from eocausal.workflows.maps import is_cog, plot_surface, write_cog
from eocausal.workflows.report import write_report
from tqdm.auto import tqdm

from eocausal.errors import ConfigError

__all__ = ["RunResult", "ingest_units", "run_config"]

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunResult:
    """Where a run put its outputs, and its headline numbers."""

    run_dir: Path
    summary: dict[str, Any]
    outputs: dict[str, Path]


def _columns(config: RunConfig) -> UnitColumns:
    u = config.units
    return UnitColumns(id=u.id, treatment=u.treatment, outcome=u.outcome,
                       covariates=tuple(u.covariates), group=u.group, lon=u.lon, lat=u.lat,
                       crs=u.crs)


def _progress_bar(desc: str, enabled: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=desc, unit="chip", disable=not enabled, leave=False)
        bar["bar"].update(done - bar["bar"].n)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return update, close


def _simulate_stage(config: RunConfig, run_dir: Path, manifest: Manifest, echo: Echo) -> None:
    with manifest.stage("simulate") as out:
        world = simulate(run_dir / "world", **(config.simulate or {}))
        config.units.path = world.units_path
        config.imagery.paths = [str(p) for p in world.scene_paths]
        config.truth = world.truth_path
        out.update(units=str(world.units_path), imagery=config.imagery.paths,
                   truth=str(world.truth_path), true_ate=world.ate)
    echo(f"simulated a world: {len(config.imagery.paths)} scene(s), units in {world.units_path}")


def ingest_units(config: RunConfig, store_path: Path, mapper: Mapper | None = None
                 ) -> tuple[gpd.GeoDataFrame, IngestResult]:
    """Read the config's units and cut their chips (or look up their patches) into a store."""
    if config.units.path is None:
        raise ConfigError("The config names no units file: set 'units.path' (or 'simulate').")
    units = read_units(config.units.path, _columns(config))
    if config.patches is not None:
        p = config.patches
        return units, ingest_patches(units, p.path, store_path, key_column=p.key_column,
                                     keys=p.keys, images=p.images,
                                     channels_last=p.channels_last, band_names=p.band_names,
                                     units_per_chunk=config.chips.units_per_chunk)
    if not config.imagery.paths:
        raise ConfigError("The config names no imagery: set 'imagery.paths', 'patches' or "
                          "'simulate'.")
    img, chips = config.imagery, config.chips
    result = ingest(units, img.paths, store_path, chip_size=chips.size, bands=img.bands,
                    min_valid_fraction=chips.min_valid_fraction,
                    units_per_chunk=chips.units_per_chunk, crs=img.crs,
                    resolution=img.resolution, resampling=img.resampling, dates=img.dates,
                    polygons=chips.polygons, apply_scale_offset=img.apply_scale_offset,
                    map_partitions=mapper)
    return units, result


def _ingest_stage(config: RunConfig, run_dir: Path, manifest: Manifest, echo: Echo,
                  mapper: Mapper) -> gpd.GeoDataFrame:
    with manifest.stage("ingest") as out:
        units, result = ingest_units(config, run_dir / "tiles.zarr", mapper)
        manifest.inputs["units"] = str(config.units.path)
        result.skipped.to_csv(run_dir / "skipped_units.csv", index=False)
        manifest.inputs["imagery"] = open_store(result.store_path).attrs["sources"]
        out.update(store=str(result.store_path), n_units=len(units), n_usable=result.n_usable,
                   n_skipped=len(result.skipped), skipped=str(run_dir / "skipped_units.csv"),
                   chunks_written=result.n_tasks_run, chunks_total=result.n_tasks_total)
    echo(f"ingested {result.n_usable} of {len(units)} units into {result.store_path} "
         f"({len(result.skipped)} skipped, listed in skipped_units.csv)")
    return units


def _encode_stage(config: RunConfig, run_dir: Path, manifest: Manifest, echo: Echo,
                  progress: bool) -> Any:
    enc = config.encoder
    with manifest.stage("encode") as out:
        store = open_store(run_dir / "tiles.zarr")
        encoder = prepare_encoder(store, enc.name, options=enc.options, weights=enc.weights,
                                  seed=config.seed)
        update, close = _progress_bar("encode", progress)
        try:
            frame = encode_store(store, encoder, batch_size=enc.batch_size, device=enc.device,
                                 progress=update, num_workers=enc.num_workers)
        finally:
            close()
        path = write_features(frame, run_dir / "features.parquet", frame.attrs["eocausal"])
        out.update(features=str(path), n_features=encoder.n_features)
    echo(f"encoded {len(frame)} chips with {enc.name} -> {encoder.n_features} features")
    return encoder


def _estimation_table(units: gpd.GeoDataFrame, run_dir: Path) -> gpd.GeoDataFrame:
    """Units that have a usable chip, joined with their features, in units-file order."""
    features, _ = read_features(run_dir / "features.parquet")
    store = open_store(run_dir / "tiles.zarr")
    usable = set(store.unit_ids[np.asarray(store.group["usable"][:])])
    table = units[units["unit_id"].isin(usable)].merge(features, on="unit_id", how="inner")
    return table


def _estimate_stage(config: RunConfig, units: gpd.GeoDataFrame, run_dir: Path,
                    manifest: Manifest, echo: Echo) -> tuple[Any, gpd.GeoDataFrame]:
    est = config.estimator
    with manifest.stage("estimate") as out:
        table = _estimation_table(units, run_dir)
        feature_cols = [c for c in table.columns if c.startswith("f") and c[1:].isdigit()]
        covariates = table[config.units.covariates] if config.units.covariates else None
        groups = table["group"].to_numpy() if "group" in table else None
        estimates = estimate_effects(
            table[feature_cols], table["treatment"].to_numpy(), table["outcome"].to_numpy(),
            covariates=covariates, design=est.design, propensity=est.propensity,
            method=est.method, n_components=est.n_components, n_estimators=est.n_estimators,
            min_samples_leaf=est.min_samples_leaf, cv=est.cv, groups=groups,
            random_state=config.seed,
        )
        effects = table[["unit_id", "treatment", "outcome", "geometry"]].copy()
        effects["cate"] = estimates.cate
        effects["cate_lo"] = estimates.cate_lo
        effects["cate_hi"] = estimates.cate_hi
        effects = gpd.GeoDataFrame(effects, geometry="geometry", crs=units.crs)
        effects.to_file(run_dir / "effects.gpkg", layer="effects", driver="GPKG")
        estimates.model.save(run_dir / "estimator.joblib")
        out.update(effects=str(run_dir / "effects.gpkg"),
                   estimator=str(run_dir / "estimator.joblib"), n_used=estimates.n_used)
    echo(f"ATE {estimates.ate:.3f} (95% CI {estimates.ate_lo:.3f} to {estimates.ate_hi:.3f}), "
         f"n={estimates.n_used}, method {est.method}")
    return estimates, effects


def _map_stage(config: RunConfig, run_dir: Path, manifest: Manifest, encoder: Any,
               effects: gpd.GeoDataFrame, echo: Echo, progress: bool,
               mapper: Mapper) -> dict[str, Any]:
    maps = run_dir / "maps"
    with manifest.stage("map") as out:
        source = describe_raster(expand_imagery(config.imagery.paths)[0], checksum=False)
        size = config.chips.size
        grid = region_grid(source, stride=config.map.stride or max(1, size // 2), margin=size // 2)
        img = config.imagery
        result = ingest(grid.units, img.paths, maps / "grid_tiles.zarr", chip_size=size,
                        bands=img.bands, min_valid_fraction=config.chips.min_valid_fraction,
                        units_per_chunk=config.chips.units_per_chunk, crs=img.crs,
                        resolution=img.resolution, resampling=img.resampling, dates=img.dates,
                        apply_scale_offset=img.apply_scale_offset, map_partitions=mapper)
        study = open_store(run_dir / "tiles.zarr")
        update, close = _progress_bar("encode grid", progress)
        try:
            frame = encode_store(open_store(result.store_path), encoder,
                                 batch_size=config.encoder.batch_size,
                                 device=config.encoder.device, progress=update,
                                 mean=study.band_mean, std=study.band_std)
        finally:
            close()
        model = EffectModel.load(run_dir / "estimator.joblib")
        cells = grid.units.merge(frame, on="unit_id", how="inner")
        feature_cols = [c for c in frame.columns if c != "unit_id"]
        covariates = _covariate_means(config, effects, run_dir, len(cells))
        cate, _, _ = model.predict_cate(cells[feature_cols], covariates)
        surface = np.full(grid.shape, np.nan, dtype=np.float32)
        surface[cells["row"].to_numpy(), cells["col"].to_numpy()] = cate
        cog = write_cog(maps / "cate.tif", surface, transform=grid.transform, crs=grid.crs)
        truth_surface = _truth_on_grid(config, grid)
        points = np.column_stack([effects.to_crs(grid.crs).geometry.x,
                                  effects.to_crs(grid.crs).geometry.y])
        png = plot_surface(maps / "cate.png", surface, extent=grid.extent, points=points,
                           title=f"Predicted CATE ({config.encoder.name} + {config.estimator.method})",
                           truth=truth_surface)
        out.update(cog=str(cog), png=str(png), cells=int(np.isfinite(surface).sum()),
                   is_cog=is_cog(cog))
        map_eval: dict[str, Any] = {"grid_shape": list(grid.shape),
                                    "cells_predicted": int(np.isfinite(surface).sum())}
        if truth_surface is not None:
            ok = np.isfinite(surface) & np.isfinite(truth_surface)
            from scipy.stats import spearmanr

            map_eval["spearman_with_true_surface"] = float(
                spearmanr(surface[ok], truth_surface[ok]).statistic)
    echo(f"mapped CATE on a {grid.shape[0]}x{grid.shape[1]} grid -> {cog}, {png}")
    return map_eval


def _covariate_means(config: RunConfig, effects: gpd.GeoDataFrame, run_dir: Path,
                     n: int) -> pd.DataFrame | None:
    """Tabular covariates are unknown off the trial: grid cells get the trial's means."""
    if not config.units.covariates:
        return None
    units = read_units(config.units.path, _columns(config))
    means = units[config.units.covariates].mean()
    return pd.DataFrame({c: np.full(n, means[c]) for c in config.units.covariates})


def _truth_on_grid(config: RunConfig, grid: Any) -> np.ndarray | None:
    """The simulator's true CATE surface averaged onto the map grid, when it exists."""
    if config.truth is None:
        return None
    path = Path(config.truth).with_name("truth_cate.tif")
    if not path.exists():
        return None
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    out = np.full(grid.shape, np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        reproject(rasterio.band(src, 1), out, dst_transform=grid.transform, dst_crs=grid.crs,
                  resampling=Resampling.average, dst_nodata=np.nan)
    return out


def _truth_comparison(config: RunConfig, estimates: Any, effects: gpd.GeoDataFrame) -> dict | None:
    if config.truth is None:
        return None
    truth = pd.read_parquet(config.truth)
    info = json.loads(Path(config.truth).with_name("truth.json").read_text())
    merged = effects[["unit_id"]].merge(truth[["unit_id", "cate"]], on="unit_id", how="left")
    # The estimand is the ATE over the units used, so compare with their true mean effect.
    true_ate = float(merged["cate"].mean())
    comparison = compare_with_truth(estimates, true_ate, merged["cate"].to_numpy())
    comparison["true_ate"] = true_ate
    comparison["true_ate_all_units"] = float(info["ate"])
    return comparison


def run_config(config: RunConfig, run_dir: str | Path, *, echo: Echo | None = None,
               progress: bool = True) -> RunResult:
    """Run every stage of ``config`` into ``run_dir`` and return the summary.

    Stages: simulate (when the config has a ``simulate`` section), ingest, encode, estimate,
    map. ``manifest.json`` is rewritten after each stage.
    """
    echo = echo or (lambda message: log.info(message))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(run_dir, config.model_dump(mode="json"),
                        seeds={"run": config.seed,
                               "simulate": int((config.simulate or {}).get("seed", 0))})
    if config.simulate is not None:
        _simulate_stage(config, run_dir, manifest, echo)
        manifest.config = config.model_dump(mode="json")
    with partition_mapper(config.compute.scheduler, config.compute.workers,
                          progress=progress) as mapper:
        units = _ingest_stage(config, run_dir, manifest, echo, mapper)
        encoder = _encode_stage(config, run_dir, manifest, echo, progress)
        estimates, effects = _estimate_stage(config, units, run_dir, manifest, echo)
        if config.map.enabled and config.patches is not None:
            echo("no map: pre-cut patches carry no georeferenced scene to predict over")
        map_eval = (_map_stage(config, run_dir, manifest, encoder, effects, echo, progress,
                               mapper)
                    if config.map.enabled and config.patches is None else None)
    n_skipped = len(pd.read_csv(run_dir / "skipped_units.csv"))
    summary = {
        **estimates.summary(),
        "n_units": len(units),
        "n_skipped": n_skipped,
        "encoder": config.encoder.name,
        "map": map_eval,
        "truth": _truth_comparison(config, estimates, effects),
        "timings_seconds": manifest.timings(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    write_report(run_dir)
    manifest.write()
    outputs = {name: run_dir / name for name in
               ("manifest.json", "tiles.zarr", "skipped_units.csv", "features.parquet",
                "effects.gpkg", "estimator.joblib", "summary.json", "report.html")}
    if map_eval is not None:
        outputs.update({"maps/cate.tif": run_dir / "maps" / "cate.tif",
                        "maps/cate.png": run_dir / "maps" / "cate.png"})
    return RunResult(run_dir, summary, outputs)

