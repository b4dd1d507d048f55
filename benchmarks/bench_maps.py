"""Map stage throughput and memory against a bare loop, as ratios.

Run: ``python -m benchmarks.bench_maps [--cells 20000] [--memory 10000 100000]``. Prints
markdown tables; the figures in benchmarks/README.md come from it.

- cells/s of :func:`eocausal.workflows.maps.build_map` (chip + encode + predict + support,
  every export written) against a bare loop in one process that does the same read (one
  rasterio window per cell), encode (``encode_chips``), predict (``predict_cate``) and
  nearest-trial-unit search, with nothing written; in this process, and on a LocalCluster
  of 1 and 2 workers (start-up excluded: the cluster is warmed first); bare loop and map
  runs alternate, and each side's median over ``--repeats`` is reported;
- peak resident memory of a whole map at two grid sizes, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

SCENE_PX, PIXEL_M, CHIP = 1024, 10.0, 16
CONFIG = {
    "name": "bench-maps", "seed": 0,
    "simulate": {"n_units": 1000, "scene_size": SCENE_PX, "pixel_size": PIXEL_M,
                 "chip_size": CHIP, "seed": 1},
    "units": {"covariates": ["x1", "x2", "x3"]},
    "chips": {"size": CHIP, "units_per_chunk": 1024},
    "encoder": {"name": "rcf", "options": {"n_features": 64, "mode": "empirical"}},
    "estimator": {"design": "rct", "propensity": 0.5, "n_components": 10, "n_estimators": 100},
    "map": {"enabled": False}, "compute": {"scheduler": "synchronous"},
}


def make_run(out: Path, nodata: bool = True) -> Path:
    """A simulated study run; ``nodata=False`` unsets the scene's nodata value first, so
    chips take ingestion's maskless fast path (no GDAL mask read per chip)."""
    from eocausal.simulator.simulate import simulate
    from eocausal.workflows.config import config_from_dict
    from eocausal.workflows.runner import run_config

    # The world lives beside the run: a run directory holds only what eocausal wrote.
    world = simulate(out.with_name(f"{out.name}_world"), **CONFIG["simulate"])
    if not nodata:
        for scene in world.scene_paths:
            with rasterio.open(scene, "r+") as dst:
                dst.nodata = None
    config = {k: v for k, v in CONFIG.items() if k != "simulate"}
    config["units"] = {**config["units"], "path": str(world.units_path)}
    config["imagery"] = {"paths": [str(p) for p in world.scene_paths]}
    run_config(config_from_dict(config), out, progress=False)
    return out


def spacing_for(n_cells: int) -> float:
    """Spacing (m) giving about ``n_cells`` cells inside the scene, chips fully inside."""
    side = (SCENE_PX - 2 * CHIP) * PIXEL_M
    return side / math.sqrt(n_cells)


def region_for(run: Path) -> str:
    """The scene's extent less a chip on every side, as a lon/lat bbox."""
    import geopandas as gpd
    import shapely

    scene = next(run.with_name(f"{run.name}_world").glob("scene_*.tif"))
    with rasterio.open(scene) as src:
        b = src.bounds
        inset = CHIP * PIXEL_M
        box = gpd.GeoSeries([shapely.box(b.left + inset, b.bottom + inset, b.right - inset,
                                         b.top - inset)], crs=src.crs).to_crs(4326)
    # The inner lon/lat box of the rotated projected box keeps every cell inside the scene.
    x0, y0, x1, y1 = box.total_bounds
    return f"{x0 + 0.0005},{y0 + 0.0005},{x1 - 0.0005},{y1 - 0.0005}"


def bare_loop(run: Path, settings) -> tuple[float, int, np.ndarray]:
    """Seconds for read + encode + predict + support of every cell, nothing written."""
    import geopandas as gpd
    from eocausal.models.features.encode import encode_chips
    from eocausal.workflows.maps.predict import (
        covariate_means,
        load_run_model,
        reduce_features,
        support_reference,
    )
    from eocausal.workflows.maps.region import lay_grid, read_region
    from eocausal.workflows.paths import RunPaths
    from sklearn.neighbors import NearestNeighbors

    paths = RunPaths(run)
    start = time.perf_counter()
    model = load_run_model(paths, device="cpu")
    scene = model.store.attrs["sources"][0]["path"]
    grid = lay_grid(read_region(settings.region), settings.spacing, max_cells=10**7)
    used = gpd.read_file(paths.effects)["unit_id"]
    reference, _ = support_reference(model, used, settings.support_quantile)
    nn = NearestNeighbors(n_neighbors=1).fit(reference)
    cov = covariate_means(paths, model.model)
    names = model.model.feature_names_in_
    cates = []
    with rasterio.open(scene) as src:
        inverse = ~src.transform
        nodata = src.nodata
        xy = grid.xy()
        for lo in range(0, len(xy), settings.cells_per_task):
            part = xy[lo:lo + settings.cells_per_task]
            chips = np.empty((len(part), src.count, CHIP, CHIP), dtype=src.dtypes[0])
            for i, (x, y) in enumerate(part):
                col, row = inverse @ (x, y)
                chips[i] = src.read(window=Window(math.floor(col) - CHIP // 2,
                                                  math.floor(row) - CHIP // 2, CHIP, CHIP))
            # Validity as a hand-written loop computes it: a pixel is valid where any band
            # differs from the nodata value.
            valid = None if nodata is None else (chips != nodata).any(axis=1)
            feats = encode_chips(chips, model.encoder, valid=valid, mean=model.mean,
                                 std=model.std, batch_size=settings.batch_size, device="cpu")
            covs = pd.DataFrame({k: np.full(len(part), v) for k, v in cov.items()})
            cate, _, _ = model.model.predict_cate(pd.DataFrame(feats, columns=names), covs)
            nn.kneighbors(reduce_features(model.model, feats.astype(np.float64)))
            cates.append(cate)
    return time.perf_counter() - start, len(xy), np.concatenate(cates)


def eocausal_map(run: Path, settings, mapper=None) -> tuple[float, int, np.ndarray]:
    from eocausal.workflows.maps import build_map
    from eocausal.workflows.paths import RunPaths

    shutil.rmtree(run / "maps", ignore_errors=True)
    start = time.perf_counter()
    result = build_map(RunPaths(run), settings, mapper=mapper, echo=lambda m: None)
    seconds = time.perf_counter() - start
    return seconds, result.summary["n_cells"], result.map_cells.column("cate").astype(float)


def throughput(run: Path, n_cells: int, repeats: int, workers_list: list[int]) -> list[dict]:
    from eocausal.workflows.cluster import partition_mapper
    from eocausal.workflows.maps import MapSettings

    settings = MapSettings(region=region_for(run), spacing=spacing_for(n_cells), device="cpu",
                           max_cells=10**7)
    rows = []
    bare = []
    ours = []
    for _ in range(repeats):  # interleaved: the machine's load hits both alike
        bare.append(bare_loop(run, settings))
        ours.append(eocausal_map(run, settings))
    tb, to = _median([b[0] for b in bare]), _median([o[0] for o in ours])
    n, cb, co = bare[0][1], bare[0][2], ours[0][2]
    ok = np.isfinite(co)
    assert ok.mean() > 0.99 and np.allclose(cb[ok], co[ok], rtol=1e-4, atol=1e-5), \
        "the bare loop and the map stage disagree"
    rows.append({"comparison": "build_map in this process vs bare loop", "cells": n,
                 "baseline": n / tb, "eocausal": n / to})
    for workers in workers_list:
        with partition_mapper("local", workers, progress=False) as mapper:
            # Start the cluster, and import torch/econml on every worker, outside the timing.
            warm = settings.model_copy(update={"spacing": spacing_for(400), "cells_per_task": 64})
            eocausal_map(run, warm, mapper)
            base, times = [], []
            for _ in range(repeats):
                base.append(bare_loop(run, settings)[0])
                times.append(eocausal_map(run, settings, mapper)[0])
        rows.append({"comparison": f"build_map on a LocalCluster, {workers} worker(s) vs bare "
                     "loop (start-up and imports excluded)", "cells": n,
                     "baseline": n / _median(base), "eocausal": n / _median(times)})
    return rows


def _median(values: list[float]) -> float:
    return float(np.median(values))


def _memory_child(run: str, n_cells: int) -> None:
    import threading

    import psutil
    from eocausal.workflows.maps import MapSettings, build_map
    from eocausal.workflows.maps.predict import load_run_model
    from eocausal.workflows.paths import RunPaths

    load_run_model(RunPaths(run), device="cpu")  # imports and encoder rebuilt before "before"
    process = psutil.Process()
    before = process.memory_info().rss / 2**20
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss / 2**20)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    settings = MapSettings(region=region_for(Path(run)), spacing=spacing_for(n_cells),
                           device="cpu", max_cells=10**7)
    result = build_map(RunPaths(run), settings, echo=lambda m: None)
    done.set()
    thread.join()
    print(json.dumps({"cells": result.summary["n_cells"], "before": before, "peak": peak[0]}))


def memory(run: Path, sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_maps", "--child", str(run),
                              str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--no-nodata", action="store_true",
                        help="unset the scene's nodata value (ingestion's maskless fast path)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _memory_child(args.child[0], int(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run", nodata=not args.no_nodata)
        print("| comparison | cells | baseline cells/s | eocausal cells/s | ratio |")
        print("|---|---|---|---|---|")
        for r in throughput(run, args.cells, args.repeats, args.workers):
            print(f"| {r['comparison']} | {r['cells']:,} | {r['baseline']:,.0f} | "
                  f"{r['eocausal']:,.0f} | {r['eocausal'] / r['baseline']:.2f} |", flush=True)
        if args.memory:
            print("\n| cells | RSS before map (MB) | peak RSS during map (MB) | growth (MB) |")
            print("|---|---|---|---|")
            for r in memory(run, args.memory):
                print(f"| {r['cells']:,} | {r['before']:.0f} | {r['peak']:.0f} | "
                      f"{r['peak'] - r['before']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
