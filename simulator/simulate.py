"""Write a simulated world to files the pipeline reads, with its truth beside them.

``simulate`` is what ``eocausal simulate`` and ``eocausal demo`` call: scenes as GeoTIFF,
units as a GeoPackage, and the truth (per-unit effects, the CATE surface, the ATE) kept in
separate files so an estimate can be scored against it. The same seed gives the same bytes,
so a simulated input can be checksummed in a run manifest like a real one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import rasterio
from eocausal.simulator.world import BASE_ATE, World, WorldSpec, make_world, true_cate_surface

from eocausal.errors import ConfigError

__all__ = ["SimulatedWorld", "scene_file_name", "simulate", "write_world"]

logger = logging.getLogger(__name__)

UNITS_FILE = "units.gpkg"
UNITS_LAYER = "units"
TRUTH_FILE = "truth.parquet"
TRUTH_JSON_FILE = "truth.json"
TRUTH_SURFACE_FILE = "truth_cate.tif"
UNIT_COLUMNS = ["unit_id", "treatment", "outcome", "x1", "x2", "x3"]
# GeoPackage stamps its metadata with the current time unless GDAL is told a fixed one.
_FIXED_DATE = "2000-01-01T00:00:00Z"
_GTIFF_PROFILE = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256,
                  "compress": "DEFLATE"}


@dataclass(frozen=True)
class SimulatedWorld:
    """Where :func:`simulate` wrote a world, its spec and its true ATE."""

    out_dir: Path
    scene_paths: list[Path]
    units_path: Path
    truth_path: Path
    truth_json_path: Path
    truth_surface_path: Path
    ate: float
    spec: WorldSpec


def scene_file_name(date: str) -> str:
    """File name of the scene acquired on ISO ``date``: ``scene_YYYYMMDD.tif``."""
    return f"scene_{date.replace('-', '')}.tif"


def _resolve_spec(spec: WorldSpec | None, overrides: dict[str, Any]) -> WorldSpec:
    """Apply keyword overrides to ``spec`` (or the defaults), naming any unknown key."""
    valid = [f.name for f in dataclasses.fields(WorldSpec)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(f"Unknown WorldSpec field(s) {unknown}. Valid fields: "
                          f"{', '.join(valid)}.")
    return WorldSpec(**overrides) if spec is None else dataclasses.replace(spec, **overrides)


def _write_scene(path: Path, world: World, t: int) -> None:
    """One date's bands as a tiled, DEFLATE GeoTIFF with nodata 0 and band descriptions."""
    _, n_bands, height, width = world.scenes.shape
    profile = dict(_GTIFF_PROFILE, count=n_bands, height=height, width=width,
                   dtype="uint16", nodata=0, predictor=2, crs=world.spec.crs,
                   transform=world.transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(world.scenes[t])
        dst.descriptions = world.band_names
        dst.update_tags(ACQUISITION_DATE=world.dates[t])


def _write_surface(path: Path, world: World) -> None:
    """The true CATE at every pixel, float32, on the scene grid."""
    surface = true_cate_surface(world).astype(np.float32)
    profile = dict(_GTIFF_PROFILE, count=1, height=surface.shape[0], width=surface.shape[1],
                   dtype="float32", predictor=3, crs=world.spec.crs, transform=world.transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(surface, 1)
        dst.descriptions = ("true_cate",)


@contextlib.contextmanager
def _gdal_config(**options: str) -> Iterator[None]:
    """Set pyogrio's GDAL config options for a block, then restore the previous values.

    pyogrio links its own GDAL, so ``rasterio.Env`` does not reach it.
    """
    previous = {key: pyogrio.get_gdal_config_option(key) for key in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(previous)


def _write_units(path: Path, world: World) -> None:
    """What a study would hold: one Point per unit with treatment, outcome and covariates."""
    units = world.units
    points = gpd.points_from_xy(units["x"], units["y"], crs=world.spec.crs)
    frame = gpd.GeoDataFrame(units[UNIT_COLUMNS].copy(), geometry=points)
    with _gdal_config(OGR_CURRENT_DATE=_FIXED_DATE):
        frame.to_file(path, layer=UNITS_LAYER, driver="GPKG", engine="pyogrio")


def _write_truth_table(path: Path, world: World) -> None:
    """Per-unit truth as Parquet, without a pandas index, so the bytes repeat."""
    table = pa.Table.from_pandas(world.truth, preserve_index=False)
    pq.write_table(table, path, compression="zstd")


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _truth_summary(world: World, files: dict[str, Any]) -> dict[str, Any]:
    """What ``truth.json`` holds: the estimands and how the world was made."""
    return {
        "ate": world.ate,  # a NaN naive contrast (a group is empty) is written as null
        "naive_difference_in_means": _finite_or_none(world.naive_difference_in_means),
        "base_ate": BASE_ATE,
        "cluster_effects": list(world.cluster_effects),
        "design": world.spec.design,
        "spec": dataclasses.asdict(world.spec),
        "band_names": list(world.band_names),
        "dates": list(world.dates),
        "factor_names": list(world.factor_names),
        "n_units": len(world.units),
        "n_treated": int(world.units["treatment"].sum()),
        "files": files,
    }


def write_world(world: World, out_dir: str | Path) -> SimulatedWorld:
    """Write an already simulated ``world`` into ``out_dir`` (created; files replaced).

    Writes ``scene_YYYYMMDD.tif`` per date (uint16 reflectance x 10000, nodata 0, band
    descriptions = band names, tag ``ACQUISITION_DATE``), ``units.gpkg`` (layer ``units``),
    ``truth.parquet``, ``truth.json`` and ``truth_cate.tif`` (float32 true CATE).

    Parameters
    ----------
    world : World
        From :func:`pipeline.world.make_world`.
    out_dir : str or Path
        Directory to write into.

    Returns
    -------
    written : SimulatedWorld
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene_paths = [out / scene_file_name(date) for date in world.dates]
    units_path, truth_path = out / UNITS_FILE, out / TRUTH_FILE
    json_path, surface_path = out / TRUTH_JSON_FILE, out / TRUTH_SURFACE_FILE
    for path in [*scene_paths, units_path, truth_path, json_path, surface_path]:
        path.unlink(missing_ok=True)  # a GeoPackage would otherwise gain a second layer

    for t, path in enumerate(scene_paths):
        _write_scene(path, world, t)
    _write_surface(surface_path, world)
    _write_units(units_path, world)
    _write_truth_table(truth_path, world)
    files = {"scenes": [p.name for p in scene_paths], "units": units_path.name,
             "units_layer": UNITS_LAYER, "truth": truth_path.name,
             "truth_surface": surface_path.name}
    text = json.dumps(_truth_summary(world, files), indent=2, sort_keys=True, allow_nan=False)
    json_path.write_text(text + "\n", encoding="utf-8")
    logger.info("Wrote a simulated world to %s: %d scene(s), %d units, true ATE %.4f",
                out, len(scene_paths), len(world.units), world.ate)
    return SimulatedWorld(out_dir=out, scene_paths=scene_paths, units_path=units_path,
                          truth_path=truth_path, truth_json_path=json_path,
                          truth_surface_path=surface_path, ate=world.ate, spec=world.spec)


def simulate(out_dir: str | Path, spec: WorldSpec | None = None,
             **overrides: Any) -> SimulatedWorld:
    """Simulate a world with known effects and write it, with its truth, to ``out_dir``.

    Same seed, same bytes: two calls with equal specs write byte-identical files.

    Parameters
    ----------
    out_dir : str or Path
        Directory to write into; created if missing, earlier outputs replaced.
    spec : WorldSpec, optional
        The world's settings; ``WorldSpec()`` when omitted.
    **overrides
        WorldSpec fields that replace those of ``spec``, e.g. ``n_units=300``.

    Returns
    -------
    written : SimulatedWorld
        Paths of the files written, the spec used and the true ATE.

    Raises
    ------
    ConfigError
        If an override names no WorldSpec field or a value is out of range.
    """
    return write_world(make_world(_resolve_spec(spec, overrides)), out_dir)
