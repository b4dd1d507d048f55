"""What a user feels at the command line: start-up, memory of a command, and a cached rerun.

Run: ``python -m benchmarks.bench_commands [--units 20000] [--repeats 5]``. Each figure is
measured on a fresh process, start to exit:

- ``eocausal --help`` and ``eocausal ingest --help`` (median of repeats), next to a bare
  ``python -c pass`` as the baseline;
- peak resident memory of ``eocausal ingest`` of N units of the shared Sentinel-2 scene in
  one process (``--scheduler synchronous``), sampled every 20 ms, against the same process
  importing nothing but rasterio and geopandas;
- ``eocausal demo`` run twice into one directory: the second run skips every stage.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.bench_ingest import make_units

EOCAUSAL = [sys.executable, "-m", "eocausal.workflows.cli"]
SENTINEL2 = Path(__file__).resolve().parents[2] / "shared/data/imagery" / \
    "sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif"


def _wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Peak RSS of a command's process tree (MB) and its wall time (s)."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.02)
    if proc.returncode:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return peak / 2**20, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bare = _wall([sys.executable, "-c", "pass"], args.repeats)
    help_top = _wall([*EOCAUSAL, "--help"], args.repeats)
    help_ingest = _wall([*EOCAUSAL, "ingest", "--help"], args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        units_path = Path(tmp) / "units.gpkg"
        make_units(args.units).to_file(units_path)
        base_rss, _ = _peak_rss_mb([sys.executable, "-c", "import rasterio, geopandas, zarr"])
        rss, ingest_s = _peak_rss_mb([*EOCAUSAL, "ingest", "--units", str(units_path),
                                      "--imagery", str(SENTINEL2), "--out",
                                      str(Path(tmp) / "tiles.zarr"), "--scheduler",
                                      "synchronous"])
        demo = [*EOCAUSAL, "demo", "--out", str(Path(tmp) / "demo")]
        first = _wall(demo, 1)
        second = _wall(demo, 1)
    print("| command | seconds, start to exit | baseline `python -c pass` |")
    print("|---|---|---|")
    print(f"| `eocausal --help` | {help_top:.2f} | {bare:.2f} |")
    print(f"| `eocausal ingest --help` | {help_ingest:.2f} | {bare:.2f} |")
    print()
    print("| command | peak RSS (MB) | baseline: import rasterio, geopandas, zarr (MB) | seconds |")
    print("|---|---|---|---|")
    print(f"| `eocausal ingest`, {args.units:,} units, in-process | {rss:.0f} | {base_rss:.0f} "
          f"| {ingest_s:.1f} |")
    print()
    print("| `eocausal demo` (2,000 units) | seconds |")
    print("|---|---|")
    print(f"| first run | {first:.1f} |")
    print(f"| second run, every stage up to date | {second:.1f} |")


if __name__ == "__main__":
    main()
