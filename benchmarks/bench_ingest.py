"""Ingestion throughput and memory against a bare rasterio loop, as ratios.

Run: ``python -m benchmarks.bench_ingest [--units 5000] [--big 100000]``. Prints a markdown
table; the figures in benchmarks/README.md come from it.

- chips/s of ``pipeline.ingest.ingest`` (one process, store writes and statistics included)
  against a bare loop that reads the same windows from the same file with rasterio;
- the speed-up of a 2-worker LocalCluster over one process (cluster start-up excluded);
- peak resident memory of a whole ingestion at two sizes, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EOCAUSAL_DATA") or next(
    (p for p in (ROOT.parent / "shared" / "data", ROOT.parents[1] / "shared" / "data")
     if p.exists()), ROOT.parent / "shared" / "data"))  # a worktree sits one level deeper
SENTINEL2 = DATA / "imagery/sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif"
CHIP = 32


def make_units(n: int, seed: int = 0) -> gpd.GeoDataFrame:
    """Random points well inside the Sentinel-2 scene (no edge effects in either loop)."""
    from eocausal.pipeline.units import UnitColumns, validate_units

    rng = np.random.default_rng(seed)
    with rasterio.open(SENTINEL2) as src:
        cols = rng.uniform(CHIP, src.width - CHIP, n)
        rows = rng.uniform(CHIP, src.height - CHIP, n)
        xs, ys = src.transform @ (cols, rows)
        crs = src.crs
    frame = gpd.GeoDataFrame(
        {"unit_id": [f"u{i:07d}" for i in range(n)], "treatment": np.zeros(n, int),
         "outcome": np.zeros(n)}, geometry=gpd.points_from_xy(xs, ys), crs=crs)
    return validate_units(frame, UnitColumns())


def bare_loop(units: gpd.GeoDataFrame) -> float:
    """Seconds to read every unit's window with plain rasterio into one array."""
    xy = np.column_stack([units.geometry.x, units.geometry.y])
    start = time.perf_counter()
    with rasterio.open(SENTINEL2) as src:
        out = np.empty((len(xy), src.count, CHIP, CHIP), dtype=src.dtypes[0])
        inverse = ~src.transform
        for i, (x, y) in enumerate(xy):
            col, row = inverse @ (x, y)
            window = Window(int(col) - CHIP // 2, int(row) - CHIP // 2, CHIP, CHIP)
            out[i] = src.read(window=window)
    return time.perf_counter() - start


def pipeline_run(units: gpd.GeoDataFrame, out: Path, mapper=None) -> float:
    """Seconds for a fresh ingestion into ``out`` (any old store is removed untimed)."""
    from eocausal.pipeline.ingest import ingest

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    ingest(units, [SENTINEL2], out, chip_size=CHIP, resume=False, map_partitions=mapper)
    return time.perf_counter() - start


def peak_memory_mb(n: int, workdir: Path) -> tuple[float, float]:
    """Peak RSS of a fresh process that ingests ``n`` units (units built in that process)."""
    store = workdir / f"mem_{n}.zarr"
    code = (
        f"import sys; from pathlib import Path; sys.path.insert(0, {str(ROOT)!r});"
        "from benchmarks.bench_ingest import make_units, pipeline_run;"
        "from benchmarks.bench_end_to_end import peak_rss_mb;"
        f"u = make_units({n}); base = peak_rss_mb();"
        f"pipeline_run(u, Path({str(store)!r}));"
        "print(base, peak_rss_mb())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    base, peak = map(float, proc.stdout.split())
    shutil.rmtree(store, ignore_errors=True)
    return base, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=20000)
    parser.add_argument("--parallel-units", type=int, default=40000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from eocausal.workflows.cluster import partition_mapper

    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    rows = []
    units = make_units(args.units)
    bare = min(bare_loop(units) for _ in range(args.repeats))
    ours = min(pipeline_run(units, work / "one.zarr") for _ in range(args.repeats))
    rows.append(("1 process vs bare rasterio loop", args.units, args.units / bare,
                 args.units / ours, bare / ours))

    big = make_units(args.parallel_units, seed=1)
    one = min(pipeline_run(big, work / "p1.zarr") for _ in range(2))
    with partition_mapper("local", 2, progress=False) as mapper:
        mapper(len, [[0]] * 2)  # start the cluster before timing; the first run warms workers
        two = min(pipeline_run(big, work / "p2.zarr", mapper) for _ in range(2))
    rows.append(("2 workers vs 1 process", args.parallel_units, args.parallel_units / one,
                 args.parallel_units / two, one / two))

    memory = {n: peak_memory_mb(n, work) for n in (args.small, args.big)}
    shutil.rmtree(work, ignore_errors=True)

    print("| comparison | units | baseline chips/s | eocausal chips/s | ratio |")
    print("|---|---|---|---|---|")
    for name, n, base_rate, our_rate, ratio in rows:
        print(f"| {name} | {n:,} | {base_rate:,.0f} | {our_rate:,.0f} | {ratio:.2f} |")
    print()
    print("| units | RSS before ingest (MB) | peak RSS during ingest (MB) | growth (MB) |")
    print("|---|---|---|---|")
    for n, (base, peak) in memory.items():
        print(f"| {n:,} | {base:,.0f} | {peak:,.0f} | {peak - base:,.0f} |")
    print(json.dumps({"rows": rows, "memory": memory}), file=sys.stderr)


if __name__ == "__main__":
    main()
