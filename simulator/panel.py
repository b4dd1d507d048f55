"""A simulated panel: units photographed and surveyed over several periods, with a fixed local
character that the images only partly show and that drives treatment uptake.

The design of Fuhr and Papies (2024) on imagery. Each unit ``i`` has a unit effect
``alpha_i = unit_effect * (sqrt(visible) * b_i + sqrt(1 - visible) * h_i)``: ``b_i`` is its
standardized built-up share, which every scene shows, and ``h_i`` a trait no pixel shows.
Every period ``t`` has its own scene: the world's scene for that date (with its phenology)
times ``1 + brightness * g_t``, where ``g_t`` is a fresh smooth field (moisture, haze, a
harvest), so features vary within units and carry a time-varying confounder ``z_it`` (the
standardized chip mean of ``g_t``). Then

``P(D_it = 1) = expit(uptake * alpha_i / unit_effect + 0.75 z_it + r_t)``
``Y_it = effect D_it + alpha_i + z_it + 0.5 x1_it + 0.3 t + noise e_it``

with ``r_t`` a roll-out trend from -1 to 1. Pooled DML, adjusting for one period's pixels,
keeps the part of ``alpha_i`` the pixels miss and is biased upwards; the Mundlak, within
and first-difference estimators remove ``alpha_i`` whatever its visibility.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from eocausal.simulator.simulate import scene_file_name
from eocausal.simulator.world import WorldSpec, band_names, make_world
from scipy import ndimage, special

from eocausal.errors import ConfigError

__all__ = ["PanelSpec", "PanelWorld", "SimulatedPanel", "make_panel", "simulate_panel",
           "write_panel"]

PANEL_FILE = "panel.parquet"
UNITS_FILE = "units.gpkg"
TRUTH_FILE = "truth.parquet"
TRUTH_JSON_FILE = "truth.json"
_STREAMS = ("fields", "units", "treatment", "outcome")


@dataclass(frozen=True)
class PanelSpec:
    """Settings of a simulated panel (validated on construction, :class:`ConfigError`)."""

    n_units: int = 300
    n_periods: int = 5
    effect: float = 1.0
    unit_effect: float = 2.0
    visible: float = 0.5
    uptake: float = 1.5
    brightness: float = 0.15
    noise: float = 1.0
    scene_size: int = 256
    chip_size: int = 16
    pixel_size: float = 10.0
    n_bands: int = 4
    start_date: str = "2019-06-30"
    date_step_days: int = 365
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"n_units": self.n_units >= 10, "n_periods": self.n_periods >= 2,
                  "visible": 0.0 <= self.visible <= 1.0, "unit_effect": self.unit_effect > 0,
                  "uptake": self.uptake >= 0, "brightness": 0 <= self.brightness < 1,
                  "noise": self.noise >= 0, "effect": math.isfinite(self.effect)}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"PanelSpec.{name}={getattr(self, name)!r} is out of range "
                                  "(n_units >= 10, n_periods >= 2, visible in [0, 1], "
                                  "unit_effect > 0, uptake >= 0, brightness in [0, 1)).")

    def world_spec(self) -> WorldSpec:
        """The static world the panel's scenes start from (one scene per period)."""
        return WorldSpec(n_units=self.n_units, scene_size=self.scene_size,
                         pixel_size=self.pixel_size, n_bands=self.n_bands,
                         n_dates=self.n_periods, chip_size=self.chip_size,
                         start_date=self.start_date, date_step_days=self.date_step_days,
                         noise=self.noise, seed=self.seed)


@dataclass(frozen=True, eq=False)
class PanelWorld:
    """A simulated panel in memory.

    ``scenes`` (T, C, H, W) uint16; ``table``: the long units table a study would hold
    (``unit_id``, ``period``, ``x``, ``y``, ``treatment``, ``outcome``, ``x1``); ``truth``:
    per unit-period ``alpha``, ``visible_part``, ``z_time``, ``propensity``, ``y0``, ``y1``.
    """

    spec: PanelSpec
    scenes: np.ndarray
    dates: list[str]
    band_names: tuple[str, ...]
    transform: Affine
    crs: str
    table: pd.DataFrame
    truth: pd.DataFrame
    effect: float


@dataclass(frozen=True)
class SimulatedPanel:
    """Where :func:`write_panel` wrote a panel."""

    out_dir: Path
    scene_paths: list[Path]
    units_path: Path
    panel_path: Path
    truth_path: Path
    truth_json_path: Path
    effect: float


def _standardize(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / (v.std() or 1.0)


def make_panel(spec: PanelSpec | None = None, **overrides: Any) -> PanelWorld:
    """Simulate a panel with a known constant effect; same seed, same panel."""
    spec = PanelSpec() if spec is None else spec
    if overrides:
        valid = [f.name for f in dataclasses.fields(PanelSpec)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ConfigError(f"Unknown PanelSpec field(s) {unknown}. Valid fields: "
                              f"{', '.join(valid)}.")
        spec = dataclasses.replace(spec, **overrides)
    world = make_world(spec.world_spec())
    seeds = np.random.SeedSequence([spec.seed, 13]).spawn(len(_STREAMS))
    rng = {k: np.random.default_rng(s) for k, s in zip(_STREAMS, seeds, strict=True)}
    n, n_t, size = spec.n_units, spec.n_periods, spec.scene_size
    rows, cols = world.units["row"].to_numpy(), world.units["col"].to_numpy()

    scenes = np.empty_like(world.scenes)
    z = np.empty((n, n_t))
    for t in range(n_t):
        g = ndimage.gaussian_filter(rng["fields"].standard_normal((size, size)),
                                    spec.chip_size, mode="reflect")
        g = (g - g.mean()) / g.std()
        gain = 1.0 + spec.brightness * np.clip(g, -3, 3)
        scenes[t] = np.clip(np.rint(world.scenes[t] * gain[None]), 1, 10000).astype(np.uint16)
        z[:, t] = ndimage.uniform_filter(g, spec.chip_size, mode="reflect")[rows, cols]
    z = _standardize(z)
    built = _standardize(world.truth["z_built_up"].to_numpy())
    hidden = rng["units"].standard_normal(n)
    visible_part = math.sqrt(spec.visible) * built
    alpha = spec.unit_effect * (visible_part + math.sqrt(1 - spec.visible) * hidden)
    trend = np.linspace(-1.0, 1.0, n_t)
    logit = spec.uptake * (alpha / spec.unit_effect)[:, None] + 0.75 * z + trend[None]
    propensity = special.expit(logit)
    d = (rng["treatment"].uniform(size=(n, n_t)) < propensity).astype(np.int64)
    x1 = rng["outcome"].standard_normal((n, n_t))
    y0 = (alpha[:, None] + z + 0.5 * x1 + 0.3 * np.arange(n_t)[None]
          + spec.noise * rng["outcome"].standard_normal((n, n_t)))
    y1 = y0 + spec.effect
    outcome = np.where(d == 1, y1, y0)

    dates = world.dates
    unit_ids = np.repeat(world.units["unit_id"].to_numpy(), n_t)
    table = pd.DataFrame({
        "unit_id": unit_ids, "period": np.tile(dates, n),
        "x": np.repeat(world.units["x"].to_numpy(), n_t),
        "y": np.repeat(world.units["y"].to_numpy(), n_t),
        "treatment": d.ravel(), "outcome": outcome.ravel(), "x1": x1.ravel(),
    })
    truth = pd.DataFrame({
        "unit_id": unit_ids, "period": np.tile(dates, n),
        "alpha": np.repeat(alpha, n_t), "visible_part": np.repeat(visible_part, n_t),
        "z_time": z.ravel(), "propensity": propensity.ravel(),
        "y0": y0.ravel(), "y1": y1.ravel(),
    })
    scenes.flags.writeable = False
    return PanelWorld(spec=spec, scenes=scenes, dates=dates, band_names=band_names(spec.n_bands),
                      transform=world.transform, crs=world.spec.crs, table=table, truth=truth,
                      effect=float(spec.effect))


def write_panel(panel: PanelWorld, out_dir: str | Path) -> SimulatedPanel:
    """Write scenes (``scene_YYYYMMDD.tif``), ``units.gpkg`` (one point per unit),
    ``panel.parquet`` (the long table), ``truth.parquet`` and ``truth.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, n_bands, height, width = panel.scenes.shape
    profile = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "DEFLATE", "predictor": 2, "count": n_bands, "height": height,
               "width": width, "dtype": "uint16", "nodata": 0, "crs": panel.crs,
               "transform": panel.transform}
    scene_paths = []
    for t, date in enumerate(panel.dates):
        path = out / scene_file_name(date)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(panel.scenes[t])
            dst.descriptions = panel.band_names
            dst.update_tags(ACQUISITION_DATE=date)
        scene_paths.append(path)
    first = panel.table.drop_duplicates("unit_id")
    units = gpd.GeoDataFrame({"unit_id": first["unit_id"].to_numpy()},
                             geometry=gpd.points_from_xy(first["x"], first["y"]), crs=panel.crs)
    units_path = out / UNITS_FILE
    units_path.unlink(missing_ok=True)
    units.to_file(units_path, layer="units", driver="GPKG", engine="pyogrio")
    panel_path, truth_path, json_path = out / PANEL_FILE, out / TRUTH_FILE, out / TRUTH_JSON_FILE
    panel.table.to_parquet(panel_path, index=False)
    panel.truth.to_parquet(truth_path, index=False)
    summary = {"design": "panel", "effect": panel.effect, "dates": panel.dates,
               "spec": dataclasses.asdict(panel.spec), "n_units": panel.spec.n_units,
               "n_unit_periods": len(panel.table),
               "files": {"scenes": [p.name for p in scene_paths], "units": UNITS_FILE,
                         "panel": PANEL_FILE, "truth": TRUTH_FILE}}
    json_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return SimulatedPanel(out_dir=out, scene_paths=scene_paths, units_path=units_path,
                          panel_path=panel_path, truth_path=truth_path, truth_json_path=json_path,
                          effect=panel.effect)


def simulate_panel(out_dir: str | Path, spec: PanelSpec | None = None,
                   **overrides: Any) -> SimulatedPanel:
    """Simulate a panel and write it with its truth to ``out_dir``."""
    return write_panel(make_panel(spec, **overrides), out_dir)
