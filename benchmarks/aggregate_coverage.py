"""Coverage of the map's aggregate intervals (mean effect per polygon) over simulated worlds.

Run: ``python -m benchmarks.aggregate_coverage [--seeds 20] [--csv FILE]``. Per seed: simulate
a world with a known, spatially correlated true CATE surface, run ingest -> encode -> estimate
-> map with the scene cut into a 3 x 3 grid of polygons as the aggregate file, and compare
each polygon's 95% interval with the true mean CATE over the same cells (the truth surface
read at each predicted cell's centre). The map's default interval takes the cells' errors as
shared inside a polygon (``mean s_i``); the same cells also give the neighbour-kernel model
(``aggregate_cells(..., errors="neighbour")``) and independent cells (``sqrt(sum s_i^2) / n``).
Prints a markdown table; benchmarks/README.md records it.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from scipy import stats

Z = float(stats.norm.ppf(0.975))
GRID = 3  # polygons per side

CONFIG = {
    "name": "aggregate-coverage",
    "chips": {"size": 16, "units_per_chunk": 256},
    "encoder": {"name": "rcf", "options": {"n_features": 64, "mode": "empirical"}},
    "estimator": {"design": "rct", "propensity": 0.5, "n_components": 10, "n_estimators": 200},
    "evaluation": {"enabled": False},
    "compute": {"scheduler": "synchronous"},
}


def _polygons(scene: Path, out: Path) -> Path:
    with rasterio.open(scene) as src:
        b, crs = src.bounds, src.crs
    xs = np.linspace(b.left, b.right, GRID + 1)
    ys = np.linspace(b.bottom, b.top, GRID + 1)
    shapes = [shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1])
              for j in range(GRID) for i in range(GRID)]
    frame = gpd.GeoDataFrame({"name": [f"block {k + 1}" for k in range(len(shapes))]},
                             geometry=shapes, crs=crs)
    path = out / "blocks.gpkg"
    frame.to_file(path, driver="GPKG")
    return path


def one_seed(seed: int, work: Path, n_units: int, scene_size: int) -> pd.DataFrame:
    from eocausal.simulator.simulate import simulate
    from eocausal.workflows.config import config_from_dict
    from eocausal.workflows.runner import run_config

    world = simulate(work / f"world{seed}", n_units=n_units, scene_size=scene_size,
                     chip_size=16, seed=seed)
    blocks = _polygons(world.scene_paths[0], work)
    config = {**CONFIG, "seed": seed,
              "units": {"path": str(world.units_path)},
              "imagery": {"paths": [str(p) for p in world.scene_paths]},
              "map": {"spacing": 40.0, "aggregate": str(blocks), "by": "name"}}
    run = work / f"run{seed}"
    run_config(config_from_dict(config), run, progress=False)
    cells = gpd.read_parquet(run / "maps" / "cells.parquet")
    cells = cells[np.isfinite(cells["cate"])]
    with rasterio.open(world.truth_surface_path) as src:
        xy = cells.to_crs(src.crs).geometry
        cells["truth"] = [v[0] for v in src.sample(zip(xy.x, xy.y, strict=True))]
    polygons = gpd.read_file(blocks).to_crs(cells.crs)
    joined = gpd.sjoin(cells, polygons[["name", "geometry"]], predicate="within")
    from eocausal.workflows.maps import aggregate_cells

    aggregates = pd.read_csv(run / "maps" / "aggregates.csv")
    shape = tuple(json.loads((run / "maps" / "map.json").read_text())["grid_shape"])
    neighbour = aggregate_cells(cells, gpd.read_file(blocks), "name", shape=shape,
                                errors="neighbour").set_index("name")
    rows = []
    for _, agg in aggregates.iterrows():
        members = joined[joined["name"] == agg["name"]]
        se = (members["cate_hi"] - members["cate_lo"]).to_numpy() / (2 * Z)
        n = len(members)
        truth = float(members["truth"].mean())
        independent = Z * math.sqrt(float(np.sum(se ** 2))) / n
        mean = float(agg["mean_cate"])
        kernel = neighbour.loc[agg["name"]]
        kernel_half = float(kernel["mean_cate_hi"] - kernel["mean_cate_lo"]) / 2
        rows.append({
            "seed": seed, "name": agg["name"], "n_cells": n, "truth": truth, "mean": mean,
            "lo": agg["mean_cate_lo"], "hi": agg["mean_cate_hi"],
            "r": agg["neighbour_correlation"],
            "covered": bool(agg["mean_cate_lo"] <= truth <= agg["mean_cate_hi"]),
            "half_width": float(agg["mean_cate_hi"] - agg["mean_cate_lo"]) / 2,
            "covered_independent": abs(mean - truth) <= independent,
            "half_independent": independent,
            "covered_neighbour": abs(mean - truth) <= kernel_half,
            "half_neighbour": kernel_half,
            "error": mean - truth,
        })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--n-units", type=int, default=600)
    parser.add_argument("--scene-size", type=int, default=192)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    frames = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            frames.append(one_seed(seed, Path(tmp), args.n_units, args.scene_size))
        if args.csv:
            pd.concat(frames).to_csv(args.csv, index=False)
        print(f"seed {seed}: covered {frames[-1]['covered'].mean():.2f}", flush=True)
    table = pd.concat(frames, ignore_index=True)
    print(f"\n{len(table)} polygons over {table['seed'].nunique()} seeds "
          f"(mean {table['n_cells'].mean():.0f} cells each, mean r {table['r'].mean():.2f}; "
          f"RMSE of the polygon mean {math.sqrt((table['error'] ** 2).mean()):.3f})\n")
    print("| interval | coverage | mean half-width |")
    print("|---|---|---|")
    for label, cov, half in (("map default: errors shared in the polygon", "covered",
                              "half_width"),
                             ("neighbour kernel r^d", "covered_neighbour", "half_neighbour"),
                             ("independent cells", "covered_independent", "half_independent")):
        print(f"| {label} | {table[cov].mean():.3f} | {table[half].mean():.3f} |")


if __name__ == "__main__":
    main()
