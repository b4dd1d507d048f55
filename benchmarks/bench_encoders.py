"""Feature-stage throughput and memory against a bare model loop, and the linear probe table.

Run ``python -m benchmarks.bench_encoders`` (``--help`` for sizes). It ingests units at
seeded random points of the 6-band Sentinel-2 scene in ``../shared/data/imagery`` into a
tile store, then, for resnet18 and rcf:

* **throughput**: chips per second of :func:`models.features.encode_store` (read, decode,
  normalise, encode, collect) against a bare loop that calls the same model on the same
  batches already normalised in memory, in the same process; the ratio is stage / bare
  (target >= 0.9), the median of paired runs (see :func:`throughput`);
* **memory**: in a fresh process encoding a store of N1 and of N2 units, resident memory
  before encoding, the peak (the kernel's ``VmHWM``), what encoding added, the peak of
  numpy/Python allocations (``tracemalloc``) and the size of the output features, to show
  that only the output grows with N;
* **probe** (unless ``--skip-probe``): out-of-fold R2 of a ridge probe from each encoder's
  features to a simulated world's latent factors (:func:`models.probe.probe_world`).

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
from eocausal.models.features.encode import encode_store, prepare_encoder
from eocausal.models.features.loader import StoreBatches
from eocausal.models.features.probe import probe_world
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "imagery" / "sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif"
ENCODERS = ("resnet18", "rcf")


def make_store(path: Path, n_units: int, chip_size: int = 32, seed: int = 0) -> Path:
    """Ingest ``n_units`` seeded random points of the scene into a tile store at ``path``.

    A finished store of that size already at ``path`` (from an earlier run with the same
    ``--workdir``) is reused.
    """
    if (path / "zarr.json").exists() and open_store(path).group.attrs.get("band_mean"):
        if open_store(path).n_units == n_units:
            return path
    rng = np.random.default_rng(seed)
    with rasterio.open(SCENE) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    margin = chip_size * 20.0
    x = rng.uniform(left + margin, right - margin, n_units)
    y = rng.uniform(bottom + margin, top - margin, n_units)
    units = gpd.GeoDataFrame({"unit_id": [f"S{i:06d}" for i in range(n_units)]},
                             geometry=gpd.points_from_xy(x, y), crs=crs)
    ingest(units, [SCENE], path, chip_size=chip_size)
    return path


def _bare_batches(store_path: Path, batch_size: int) -> list[torch.Tensor]:
    store = open_store(store_path)
    data = StoreBatches(store, batch_size=batch_size, mean=store.band_mean, std=store.band_std)
    return [data[i].chips for i in range(len(data))]


def _time_bare(encoder: torch.nn.Module, batches: list[torch.Tensor]) -> tuple[float, float]:
    """Wall and CPU seconds of this process for the bare loop."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for x in batches:
            encoder(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def _time_stage(store_path: Path, encoder: torch.nn.Module, batch_size: int,
                num_workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of this process (workers' CPU not included) for the stage."""
    wall, cpu = time.perf_counter(), time.process_time()
    encode_store(store_path, encoder, batch_size=batch_size, device="cpu",
                 num_workers=num_workers)
    return time.perf_counter() - wall, time.process_time() - cpu


def throughput(store_path: Path, batch_size: int, repeats: int,
               workers: list[int]) -> list[dict[str, object]]:
    """Chips/s of the stage and of the bare loop, and their ratio, per encoder and workers.

    Each repeat times the bare loop and then the stage right after it, and the ratio is the
    median over repeats of these paired ratios: on a shared machine whose load drifts, a
    pair sees nearly the same load, while the best-of-N of each side may come from
    different minutes. The spread (min-max of paired ratios) is reported with it. With
    ``num_workers=0`` all of the stage's work is in this process, so the ratio of CPU
    seconds (``cpu_ratio``) measures its overhead even when other jobs share the cores.
    """
    n_units = open_store(store_path).n_units
    batches = _bare_batches(store_path, batch_size)
    rows = []
    for name in ENCODERS:
        encoder = prepare_encoder(store_path, name, seed=0).eval()
        _time_bare(encoder, batches[:2])  # warm up kernels and allocator
        for num_workers in workers:
            bare, stage = [], []
            for _ in range(repeats):
                bare.append(_time_bare(encoder, batches))
                stage.append(_time_stage(store_path, encoder, batch_size, num_workers))
            b, s = np.array(bare), np.array(stage)
            ratios = b[:, 0] / s[:, 0]
            cpu = float(np.median(b[:, 1] / s[:, 1])) if num_workers == 0 else "-"
            rows.append({"encoder": name, "num_workers": num_workers, "n_units": n_units,
                         "bare_chips_s": n_units / float(np.median(b[:, 0])),
                         "stage_chips_s": n_units / float(np.median(s[:, 0])),
                         "ratio": float(np.median(ratios)),
                         "ratio_range": f"{ratios.min():.2f}-{ratios.max():.2f}",
                         "cpu_ratio": cpu})
    return rows


def _proc_status_mib(key: str) -> float:
    """A ``/proc/self/status`` memory line in MiB (VmRSS: now; VmHWM: peak of this process).

    ``getrusage``'s max RSS would carry the parent's peak over fork and exec, so the
    kernel's per-process high-water mark is read instead.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _memory_child(store_path: str, name: str, batch_size: int) -> None:
    """In a fresh process: resident memory before encoding, peak after, and numpy's peak."""
    encoder = prepare_encoder(store_path, name, seed=0)
    with torch.inference_mode():  # let kernels and allocator warm up before "before"
        encoder(torch.zeros(2, open_store(store_path).n_bands, 32, 32))
    before = _proc_status_mib("VmRSS")
    tracemalloc.start()
    frame = encode_store(store_path, encoder, batch_size=batch_size, device="cpu")
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    peak = _proc_status_mib("VmHWM")
    output = frame.iloc[:, 1:].to_numpy().nbytes / 2**20
    print(json.dumps({"rss_before_mib": before, "rss_peak_mib": peak,
                      "added_mib": peak - before, "traced_peak_mib": traced_peak,
                      "output_mib": output}))


def memory(store_paths: dict[int, Path], batch_size: int) -> list[dict[str, object]]:
    rows = []
    for name in ENCODERS:
        for n_units, path in store_paths.items():
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_encoders", "--memory-child", str(path),
                 name, str(batch_size)], capture_output=True, text=True, check=True, cwd=ROOT)
            record = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"encoder": name, "n_units": n_units, **record})
    return rows


def probe_tables(workdir: Path, n_units: int) -> list[tuple[str, object]]:
    single = probe_world({"rcf gaussian": ("rcf", {}),
                          "rcf empirical": ("rcf", {"mode": "empirical"}),
                          "resnet18 random": ("resnet18", {})},
                         workdir / "probe_one", world={"n_units": n_units, "seed": 0},
                         device="cpu")
    three = probe_world({"rcf gaussian, first date": ("rcf", {}),
                         "sequence rcf mean": ("sequence", {"base": "rcf", "aggregate": "mean"}),
                         "sequence rcf mean_var": ("sequence", {"base": "rcf",
                                                                 "aggregate": "mean_var"}),
                         "sequence resnet18 mean": ("sequence", {"base": "resnet18"})},
                        workdir / "probe_three",
                        world={"n_units": n_units, "n_dates": 3, "noise": 3.0, "seed": 0},
                        device="cpu")
    return [("one date", single), ("three dates, noise=3", three)]


def _table(rows: list[dict[str, object]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else
                 f"{v:.0f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-units", type=int, default=2000, help="units for throughput")
    parser.add_argument("--memory-units", type=int, nargs=2, default=[1000, 5000])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--probe-units", type=int, default=1500)
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default torch's); 1 avoids OpenMP stalls when "
                             "other jobs share the cores")
    parser.add_argument("--memory-child", nargs=3, metavar=("STORE", "ENCODER", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        store, name, batch = args.memory_child
        _memory_child(store, name, int(batch))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_encoders_"))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"# Encoder benchmarks\n\n{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, CPU only; batch {args.batch_size}; store from {SCENE.name}; load "
          f"average at start {os.getloadavg()[0]:.1f}\n")
    store = make_store(workdir / f"tiles_{args.n_units}.zarr", args.n_units)
    print("## Throughput: feature stage vs bare model loop (chips/s)\n")
    print(_table(throughput(store, args.batch_size, args.repeats, args.workers)))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}\n")
    if not args.skip_memory:
        stores = {n: make_store(workdir / f"tiles_{n}.zarr", n) for n in args.memory_units}
        print("## Peak memory of a fresh process encoding N units (MiB)\n")
        print(_table(memory(stores, args.batch_size)) + "\n")
    if not args.skip_probe:
        print("## Linear probe: out-of-fold R2 of latent factors (spatial-block CV)\n")
        for title, frame in probe_tables(workdir, args.probe_units):
            rows = [{"encoder": label, **{k: float(v) for k, v in row.items()}}
                    for label, row in frame.iterrows()]
            for row in rows:
                row["n_features"] = int(row["n_features"])
            print(f"### {title}\n\n{_table(rows)}\n")


if __name__ == "__main__":
    main()
