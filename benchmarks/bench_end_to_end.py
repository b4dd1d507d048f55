"""Ingestion end to end, as a user runs it: process start to exit, workers, remote COGs, memory.

Run: ``python -m benchmarks.bench_end_to_end [--units 100000] [--repeats 3]``. Every figure
is a ratio against a bare baseline measured in the same run, repeats interleaved, medians
reported (the machine is shared: say so when quoting). Prints markdown tables.

1. ``eocausal ingest`` (a fresh process, start to exit) against a bare script (a fresh
   process that reads the units file and every window with plain rasterio into one array),
   with ``--scheduler synchronous``, with 1 and 2 workers of the default process pool and
   of a dask LocalCluster (``--scheduler local``); the same with a
   direct call of ``eocausal.pipeline.ingest.ingest`` timed inside a fresh process, so the
   library's speed shows independently of the CLI's imports; and the CLI's import time.
2. ``eocausal encode --encoder resnet18`` of a 20,000-unit store against a bare torch
   script (fresh processes, start to exit).
3. Remote COGs over a local HTTP server (byte ranges, ``--latency`` seconds per request to
   emulate an object store): ``ingest`` from the URL against a bare sequential rasterio loop
   over the same URL, chips checked identical.
4. Peak RSS of a fresh process ingesting 10,000 .. 1,000,000 units (and of each worker),
   by a direct ``ingest()`` call on a GeoDataFrame and by the ``eocausal ingest`` command
   (VmHWM at exit), which reads a points file with the lean reader.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EOCAUSAL_DATA") or next(
    (p for p in (ROOT.parent / "shared" / "data", ROOT.parents[1] / "shared" / "data")
     if p.exists()), ROOT.parent / "shared" / "data"))  # a worktree sits one level deeper
SENTINEL2 = DATA / "imagery/sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif"
CHIP = 32
PY = sys.executable
CLI = str(Path(sys.executable).with_name("eocausal"))

def peak_rss_mb() -> float:
    """This process's peak resident memory (MB) from /proc's VmHWM.

    Not ``ru_maxrss``: Linux carries that across fork+exec, so a child started from a big
    benchmark process reports the parent's size as its own floor.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PEAK = "[int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]"

BARE = textwrap.dedent("""
    import sys
    import geopandas as gpd, numpy as np, rasterio
    from rasterio.windows import Window
    units = gpd.read_parquet(sys.argv[1])
    xy = np.column_stack([units.geometry.x, units.geometry.y])
    with rasterio.open(sys.argv[2]) as src:
        out = np.empty((len(xy), src.count, CHIP, CHIP), dtype=src.dtypes[0])
        inverse = ~src.transform
        for i, (x, y) in enumerate(xy):
            col, row = inverse @ (x, y)
            out[i] = src.read(window=Window(int(col) - CHIP // 2, int(row) - CHIP // 2, CHIP, CHIP))
""").replace("CHIP", str(CHIP))

DIRECT = textwrap.dedent("""
    import json, resource, sys, time
    def main():
        t0 = time.perf_counter()
        from eocausal.pipeline.ingest import ingest
        from eocausal.pipeline.units import read_units
        units = read_units(sys.argv[1])
        workers = int(sys.argv[4])
        t1 = time.perf_counter()
        if workers > 1:
            import os
            from eocausal.workflows.cluster import partition_mapper
            with partition_mapper("processes", workers, progress=False) as mapper:
                ingest(units, [sys.argv[2]], sys.argv[3], chip_size=CHIP, map_partitions=mapper)
                t2 = time.perf_counter()
                peaks = dict(mapper(lambda _: (os.getpid(), PEAK), list(range(8 * workers))))
        else:
            ingest(units, [sys.argv[2]], sys.argv[3], chip_size=CHIP)
            t2 = time.perf_counter()
            peaks = {}
        print(json.dumps({"setup": t1 - t0, "ingest": t2 - t1, "workers_rss": list(peaks.values()),
                          "rss": PEAK}))
    if __name__ == "__main__":
        main()
""").replace("CHIP", str(CHIP)).replace("PEAK", PEAK)


def make_units(n: int, seed: int = 0, source: Path = SENTINEL2, margin: int = CHIP):
    """Random points inside ``source`` (no edge effects in either loop), as a GeoDataFrame."""
    import geopandas as gpd
    import rasterio

    rng = np.random.default_rng(seed)
    with rasterio.open(source) as src:
        cols = rng.uniform(margin, src.width - margin, n)
        rows = rng.uniform(margin, src.height - margin, n)
        xs, ys = src.transform @ (cols, rows)
        crs = src.crs
    return gpd.GeoDataFrame(
        {"unit_id": [f"u{i:07d}" for i in range(n)], "treatment": np.arange(n) % 2,
         "outcome": np.zeros(n)}, geometry=gpd.points_from_xy(xs, ys), crs=crs)


STEAL: list[float] = []  # per _wall run: CPU seconds the hypervisor took from this VM


def _steal_seconds() -> float:
    """System-wide steal time so far (``/proc/stat``; 0 where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return float(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    # Every run starts with no dirty pages left by the one before: the kernel's writeback of
    # a previous 1.2 GB store otherwise takes CPU from whichever run comes next (with two
    # workers on two cores, up to a third of the run).
    os.sync()
    time.sleep(1)
    steal = _steal_seconds()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    STEAL.append(_steal_seconds() - steal)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {proc.stderr[-2000:]}")
    return wall, proc.stdout


def cli_rows(n: int, repeats: int, work: Path) -> tuple[list[tuple], dict]:
    """Start-to-exit walls (median of interleaved repeats) of bare, CLI and direct runs."""
    units = work / f"units_{n}.parquet"
    make_units(n).to_parquet(units)
    bare_py = work / "bare.py"
    bare_py.write_text(BARE)
    direct_py = work / "direct.py"
    direct_py.write_text(DIRECT)
    runs: dict[str, list[float]] = {}
    steals: dict[str, list[float]] = {}
    inside: dict[str, list[dict]] = {"direct_1": [], "direct_2": []}

    def record(name: str, wall: float) -> None:
        runs.setdefault(name, []).append(wall)
        steals.setdefault(name, []).append(round(STEAL[-1], 2))

    def cli(name: str, options: list[str]) -> None:
        out = work / f"{name}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        record(name, _wall([CLI, "ingest", "--units", str(units), "--imagery", str(SENTINEL2),
                            "--out", str(out), *options])[0])
        shutil.rmtree(out, ignore_errors=True)  # no run leaves 1.2 GB in the page cache

    pairs: list[float] = []
    for repeat in range(repeats):
        record("bare", _wall([PY, str(bare_py), str(units), str(SENTINEL2)])[0])
        # The two runs compared for the second worker are adjacent, in alternating order: this
        # VM's speed drifts by tens of percent within minutes, which a ratio of medians over
        # runs minutes apart takes for the code.
        pair = [("cli_w1", ["--workers", "1"]), ("cli_2", ["--workers", "2"])]
        for name, options in pair if repeat % 2 == 0 else pair[::-1]:
            cli(name, options)
        pairs.append(runs["cli_w1"][-1] / runs["cli_2"][-1])
        for name, options in (("dask_w1", ["--scheduler", "local", "--workers", "1"]),
                              ("dask_w2", ["--scheduler", "local", "--workers", "2"]),
                              ("cli_1", ["--scheduler", "synchronous"])):
            cli(name, options)
        for workers in (1, 2):
            out = work / f"direct_{workers}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            wall, stdout = _wall([PY, str(direct_py), str(units), str(SENTINEL2), str(out),
                                  str(workers)])
            record(f"direct_{workers}", wall)
            inside[f"direct_{workers}"].append(json.loads(stdout.strip().splitlines()[-1]))
            shutil.rmtree(out, ignore_errors=True)
        record("import_cli", _wall([PY, "-c", "import eocausal.workflows.cli"])[0]
               - _wall([PY, "-c", "pass"])[0])
    med = {k: statistics.median(v) for k, v in runs.items()}
    call = {k: statistics.median(r["ingest"] for r in v) for k, v in inside.items()}
    rows = [
        ("`eocausal ingest`, 1 process (synchronous)", n, med["bare"], med["cli_1"]),
        ("`eocausal ingest --workers 1` (process pool, the default)", n, med["bare"],
         med["cli_w1"]),
        ("`eocausal ingest --workers 2` (process pool, the default)", n, med["bare"],
         med["cli_2"]),
        ("`eocausal ingest --scheduler local --workers 1` (dask LocalCluster)", n, med["bare"],
         med["dask_w1"]),
        ("`eocausal ingest --scheduler local --workers 2` (dask LocalCluster)", n, med["bare"],
         med["dask_w2"]),
        ("direct `ingest()` call, 1 process, start to exit", n, med["bare"], med["direct_1"]),
        ("direct `ingest()` call, 2 workers, start to exit", n, med["bare"], med["direct_2"]),
    ]
    extra = {
        "2 workers vs 1 worker (process pool), CLI start to exit, median of adjacent pairs":
            statistics.median(pairs),
        "2 workers vs 1 worker (process pool), CLI start to exit, ratio of medians":
            med["cli_w1"] / med["cli_2"],
        "2 workers vs 1 worker (LocalCluster), CLI start to exit":
            med["dask_w1"] / med["dask_w2"],
        "2 workers vs 1 process (synchronous), CLI start to exit": med["cli_1"] / med["cli_2"],
        "2 workers vs 1, direct start to exit": med["direct_1"] / med["direct_2"],
        "2 workers vs 1, inside the ingest() call": call["direct_1"] / call["direct_2"],
        "ingest() call alone, 1 process (s)": call["direct_1"],
        "ingest() call alone, 2 workers (s)": call["direct_2"],
        "import eocausal.workflows.cli (s)": med["import_cli"],
        "worker peak RSS (MB)": max((max(r["workers_rss"]) for r in inside["direct_2"]),
                                    default=0.0),
        "raw": {"wall": runs, "steal": steals, "pairs": [round(p, 3) for p in pairs]},
    }
    return rows, extra


def _mosaic_cog(work: Path) -> Path:
    """A 2048 x 2048 COG (the scene tiled 4 x 4) in 64-px tiles: sparse chips hit fresh tiles,
    as units scattered over a full 10,980-px Sentinel-2 scene do."""
    import rasterio

    from benchmarks.range_server import write_cog

    with rasterio.open(SENTINEL2) as src:
        pixels = np.tile(src.read(), (1, 4, 4))
        profile = src.profile | {"width": 2048, "height": 2048, "tiled": True,
                                 "blockxsize": 256, "blockysize": 256}
        descriptions = src.descriptions
    big = work / "mosaic.tif"
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(pixels)
        dst.descriptions = descriptions
    (work / "www").mkdir(exist_ok=True)
    return write_cog(big, work / "www" / "mosaic_20160112.tif", blocksize=64)


def remote_rows(n: int, repeats: int, latency: float, work: Path) -> list[tuple]:
    """chips/s of ingest from a COG URL vs a bare sequential loop over the same URL."""
    import rasterio
    from eocausal.pipeline.ingest import ingest
    from eocausal.pipeline.remote import REMOTE_GDAL_ENV
    from eocausal.pipeline.store import open_store
    from eocausal.pipeline.units import UnitColumns, validate_units
    from rasterio.windows import Window

    from benchmarks.range_server import serve_directory_process

    cog = _mosaic_cog(work)
    units = validate_units(make_units(n, seed=3, source=cog), UnitColumns())
    xy = np.column_stack([units.geometry.x, units.geometry.y])
    rows = []
    for lat in sorted({0.0, latency}):
        bare_t, ours_t = [], []
        with serve_directory_process(work / "www", latency=lat) as url:
            href = f"{url}/{cog.name}"
            for _ in range(repeats):
                start = time.perf_counter()  # bare: one dataset, windows one after another
                with rasterio.Env(**REMOTE_GDAL_ENV), rasterio.open(href) as src:
                    bare = np.empty((n, src.count, CHIP, CHIP), dtype=src.dtypes[0])
                    inverse = ~src.transform
                    for i, (x, y) in enumerate(xy):
                        col, row = inverse @ (x, y)
                        bare[i] = src.read(window=Window(int(col) - CHIP // 2,
                                                         int(row) - CHIP // 2, CHIP, CHIP))
                bare_t.append(time.perf_counter() - start)
                out = work / "remote.zarr"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                ingest(units, [href], out, chip_size=CHIP, resume=False)
                ours_t.append(time.perf_counter() - start)
            chips = open_store(out).read_units(list(units["unit_id"])).chips[:, 0]
            same = bool(np.array_equal(chips, bare))
        b, o = statistics.median(bare_t), statistics.median(ours_t)
        rows.append((f"COG over local HTTP, {lat * 1000:.0f} ms a request", n, n / b, n / o,
                     b / o, same))
    return rows


def memory_rows(sizes: list[int], work: Path) -> list[tuple]:
    """Peak RSS of a fresh process ingesting ``n`` units (units made in that process)."""
    rows = []
    for n in sizes:
        store = work / f"mem_{n}.zarr"
        code = (
            "import sys, time;"
            f"sys.path.insert(0, {str(ROOT)!r});"
            "from benchmarks.bench_end_to_end import make_units, SENTINEL2;"
            "from eocausal.pipeline.units import UnitColumns, validate_units;"
            "from eocausal.pipeline.ingest import ingest;"
            f"u = validate_units(make_units({n}), UnitColumns());"
            "from benchmarks.bench_end_to_end import peak_rss_mb;"
            "base = peak_rss_mb();"
            "t = time.perf_counter();"
            f"ingest(u, [SENTINEL2], {str(store)!r}, chip_size={CHIP});"
            "t = time.perf_counter() - t;"
            "print(base, peak_rss_mb(), t)"
        )
        _, stdout = _wall([PY, "-c", code])
        base, peak, seconds = map(float, stdout.split())
        shutil.rmtree(store, ignore_errors=True)
        rows.append((n, base, peak, seconds))
    return rows


BARE_ENCODE = textwrap.dedent("""
    import sys
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq, torch, torchvision, zarr
    from torch import nn
    group = zarr.open_group(sys.argv[1], mode="r")
    chips = group["chips"]
    mean = np.asarray(group.attrs["band_mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(group.attrs["band_std"], dtype=np.float32)[:, None, None]
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(chips.shape[2], 64, 7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    net.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, chips.shape[0], 256):
            x = (np.asarray(chips[s:s + 256, 0], dtype=np.float32) - mean) / std
            out.append(net(torch.from_numpy(x)).numpy())
    feats = np.concatenate(out)
    table = {"unit_id": np.asarray(group["unit_id"][:])}
    table.update({f"f{i}": feats[:, i] for i in range(feats.shape[1])})
    pq.write_table(pa.table(table), sys.argv[2])
""")


def encode_rows(n: int, repeats: int, work: Path) -> list[tuple]:
    """``eocausal encode --encoder resnet18`` against a bare torch script, start to exit.

    The bare script opens the same store with zarr, normalises with the store's band
    statistics, runs torchvision's resnet18 (6-band first conv, no head) in batches of 256
    and writes a Parquet table of the features: the command's work without its checks.
    """
    from eocausal.pipeline.ingest import ingest

    store = work / f"encode_{n}.zarr"
    ingest(make_units(n), [SENTINEL2], store, chip_size=CHIP)
    bare_py = work / "bare_encode.py"
    bare_py.write_text(BARE_ENCODE)
    walls: dict[str, list[float]] = {"bare": [], "cli": []}
    for _ in range(repeats):
        walls["bare"].append(_wall([PY, str(bare_py), str(store), str(work / "bare.parquet")])[0])
        walls["cli"].append(_wall([CLI, "encode", str(store), "--encoder", "resnet18", "--out",
                                   str(work / "cli.parquet")])[0])
    shutil.rmtree(store, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(json.dumps(walls), file=sys.stderr)
    return [("`eocausal encode --encoder resnet18`", n, med["bare"], med["cli"])]


CLI_PEAK = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('VMHWM', PEAK, file=sys.stderr))\n"
    "sys.argv = ['eocausal', *sys.argv[1:]]\n"
    "from eocausal.workflows.cli import main\n"
    "main()\n"
).replace("PEAK", PEAK)


def memory_cli_rows(sizes: list[int], work: Path, scheduler: str = "synchronous"
                    ) -> list[tuple]:
    """Peak RSS (VmHWM at exit) and wall of the ``eocausal ingest`` command itself.

    The command is what users run: it reads the units file (a GeoParquet of points here)
    with the lean points reader, as ``eocausal ingest`` does.
    """
    rows = []
    for n in sizes:
        units = work / f"mem_units_{n}.parquet"
        _wall([PY, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r});"
               "from benchmarks.bench_end_to_end import make_units;"
               f"make_units({n}).to_parquet({str(units)!r})"])
        store = work / f"mem_cli_{n}.zarr"
        start = time.perf_counter()
        proc = subprocess.run([PY, "-c", CLI_PEAK, "ingest", "--units", str(units), "--imagery",
                               str(SENTINEL2), "--out", str(store), "--chip-size", str(CHIP),
                               *([] if scheduler == "auto" else ["--scheduler", scheduler])],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        peak = float(proc.stderr.split("VMHWM")[-1].split()[0])
        shutil.rmtree(store, ignore_errors=True)
        units.unlink()
        rows.append((n, peak, wall))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--remote-units", type=int, default=5_000)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--memory-sizes", default="10000,100000,1000000")
    parser.add_argument("--memory-schedulers", default="synchronous",
                        help="comma list of --scheduler values for the memory-cli rows "
                        "(the driver's peak; 'auto' runs the default LocalCluster)")
    parser.add_argument("--encode-units", type=int, default=20_000)
    parser.add_argument("--skip", default="", help="comma list of: cli, encode, remote, memory, "
                        "memory-cli")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    try:
        if "cli" not in skip:
            rows, extra = cli_rows(args.units, args.repeats, work)
            print("| run | units | bare loop, start to exit (s) | eocausal (s) | ratio |")
            print("|---|---|---|---|---|")
            for name, n, bare, ours in rows:
                print(f"| {name} | {n:,} | {bare:.2f} | {ours:.2f} | {bare / ours:.2f} |")
            print()
            for key, value in extra.items():
                if key != "raw":
                    print(f"- {key}: {value:.2f}")
            print(json.dumps(extra["raw"]), file=sys.stderr)
            print()
        if "encode" not in skip:
            print("| run | chips | bare torch loop, start to exit (s) | eocausal (s) | ratio |")
            print("|---|---|---|---|---|")
            for name, n, bare, ours in encode_rows(args.encode_units, args.repeats, work):
                print(f"| {name} | {n:,} | {bare:.2f} | {ours:.2f} | {bare / ours:.2f} |")
            print()
        if "remote" not in skip:
            rows = remote_rows(args.remote_units, args.repeats, args.latency, work)
            print("| remote COG | units | bare sequential chips/s | eocausal chips/s | ratio "
                  "| identical chips |")
            print("|---|---|---|---|---|---|")
            for name, n, b, o, ratio, same in rows:
                print(f"| {name} | {n:,} | {b:,.0f} | {o:,.0f} | {ratio:.2f} | {same} |")
            print()
        if "memory" not in skip:
            sizes = [int(s) for s in args.memory_sizes.split(",") if s]
            print("| units | RSS before ingest (MB) | peak RSS (MB) | growth (MB) | ingest (s) |")
            print("|---|---|---|---|---|")
            for n, base, peak, seconds in memory_rows(sizes, work):
                print(f"| {n:,} | {base:,.0f} | {peak:,.0f} | {peak - base:,.0f} | "
                      f"{seconds:.1f} |")
            print()
        if "memory-cli" not in skip:
            sizes = [int(s) for s in args.memory_sizes.split(",") if s]
            print("| units | scheduler | `eocausal ingest` peak RSS (MB) | start to exit (s) |")
            print("|---|---|---|---|")
            for scheduler in args.memory_schedulers.split(","):
                for n, peak, wall in memory_cli_rows(sizes, work, scheduler):
                    print(f"| {n:,} | {scheduler} | {peak:,.0f} | {wall:.1f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
