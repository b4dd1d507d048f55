"""Planning in slices: the same chips as planning every unit at once, in bytes a unit."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from eocausal.pipeline.imagery import describe_raster
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.partition import DateSource
from eocausal.pipeline.plan import plan_chips
from eocausal.pipeline.points import UnitPoints, read_unit_points
from eocausal.pipeline.store import open_store
from eocausal.pipeline.target import make_target_grid, plan_access
from rasterio.windows import Window

from tests.conftest import SENTINEL2


def _scene_points(n: int, seed: int, margin: float = -40) -> tuple[np.ndarray, object]:
    """Points over the scene and up to ``-margin`` pixels beyond it (some outside)."""
    rng = np.random.default_rng(seed)
    with rasterio.open(SENTINEL2) as src:
        cols = rng.uniform(margin, src.width - margin, n)
        rows = rng.uniform(margin, src.height - margin, n)
        xs, ys = src.transform @ (cols, rows)
        return np.column_stack([xs, ys]), src.crs


def _dates(grid):
    source = describe_raster(SENTINEL2)
    access = plan_access(source, grid)
    return [[DateSource(access, source.width, source.height, source.nodata, source.scales,
                        source.offsets)]]


def test_plan_in_slices_equals_the_whole_array_plan(data_dir, monkeypatch):
    import eocausal.pipeline.plan as plan_module

    xy, crs = _scene_points(5_000, seed=4)
    grid = make_target_grid([describe_raster(SENTINEL2)])
    ids = np.array([f"u{i}" for i in range(len(xy))])
    whole = plan_chips(len(xy), ids.__getitem__, xy.__getitem__, grid, 32, _dates(grid))
    monkeypatch.setattr(plan_module, "SLICE_ROWS", 333)  # many slices, a short last one
    sliced = plan_chips(len(xy), ids.__getitem__, xy.__getitem__, grid, 32, _dates(grid))
    np.testing.assert_array_equal(sliced.keep, whole.keep)
    np.testing.assert_array_equal(sliced.outside, whole.outside)
    assert sliced.fingerprint(a=1) == whole.fingerprint(a=1)
    # outside units are exactly those whose 32-px window misses the 512-px scene
    windows = grid.windows(xy, 32)
    misses = ((windows[:, 0] >= 512) | (windows[:, 0] + 32 <= 0)
              | (windows[:, 1] >= 512) | (windows[:, 1] + 32 <= 0))
    np.testing.assert_array_equal(whole.outside, np.flatnonzero(misses))
    assert 0 < misses.sum() < len(xy)
    # the kept units walk the curve: consecutive chips are near neighbours (~8 px apart
    # on average here), not the ~340 px of the file's random order
    def median_step(order):
        return np.median(np.abs(np.diff(windows[order], axis=0)).sum(axis=1))

    assert median_step(whole.keep) < median_step(np.sort(whole.keep)) / 10


def test_planning_holds_a_few_bytes_a_unit(data_dir):
    n = 300_000
    xy, crs = _scene_points(n, seed=5, margin=20)
    points = UnitPoints.from_ids(np.array([f"u{i:06d}" for i in range(n)]), xy, crs)
    grid = make_target_grid([describe_raster(SENTINEL2)])
    dates = _dates(grid)
    tracemalloc.start()
    try:
        def added_peak(step):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            out = step()
            return out, tracemalloc.get_traced_memory()[1] - before

        plan, planned = added_peak(lambda: plan_chips(
            n, points.ids, lambda rows: points.centres(grid.crs, rows), grid, 32, dates))
        _, fingerprinted = added_peak(lambda: plan.fingerprint(chip=32))
    finally:
        tracemalloc.stop()
    # per unit: curve keys and their argsort (8 bytes each) and a flag, plus a few MB of
    # per-slice temporaries whatever n; planning every unit at once held each unit's
    # windows (16 bytes) and the kept windows and ids copied again
    slice_temporaries = 8 << 20
    assert planned < 20 * n + slice_temporaries, planned / n
    assert fingerprinted < slice_temporaries, fingerprinted / n
    assert points.id_bytes.dtype == np.dtype("S7")  # a byte a character, not four


def test_tasks_carry_no_windows_and_cut_the_chips_of_a_direct_read(tmp_path, data_dir):
    xy, crs = _scene_points(3_000, seed=6, margin=20)
    points = UnitPoints.from_ids(np.array([f"u{i}" for i in range(len(xy))]), xy, crs)
    seen = []

    def mapper(func, tasks):
        seen.extend(tasks)
        return map(func, tasks)

    result = ingest(points, [SENTINEL2], tmp_path / "s.zarr", chip_size=32,
                    units_per_chunk=400, map_partitions=mapper)
    assert seen and all(t.windows is None for t in seen)
    assert [len(t) for t in seen] == [400] * 7 + [200]
    store = open_store(result.store_path)
    ids = store.unit_ids
    rows = {u: i for i, u in enumerate(points.unit_id)}
    with rasterio.open(SENTINEL2) as src:
        for k in [0, 399, 400, 1234, 2999]:
            x, y = xy[rows[ids[k]]]
            col, row = ~src.transform @ (x, y)
            window = Window(int(np.floor(col)) - 16, int(np.floor(row)) - 16, 32, 32)
            np.testing.assert_array_equal(store.chips[k, 0], src.read(window=window))
            np.testing.assert_allclose(store.centres[k], (x, y))


def test_utf8_ids_survive_the_byte_columns(tmp_path, data_dir):
    xy, crs = _scene_points(40, seed=7, margin=-60)
    ids = [f"ménage-{i}" if i % 3 else f"村{i}" for i in range(40)]
    table = pa.table({"unit_id": ids, "lon": xy[:, 0], "lat": xy[:, 1]})
    pq.write_table(table, tmp_path / "u.parquet")
    from eocausal.pipeline.units import UnitColumns

    points = read_unit_points(tmp_path / "u.parquet", UnitColumns(crs=crs.to_string()))
    assert points.unit_id.tolist() == ids
    assert points.ids(np.array([3, 1])).tolist() == [ids[3], ids[1]]
    result = ingest(points, [SENTINEL2], tmp_path / "s.zarr", chip_size=32)
    store = open_store(result.store_path)
    kept = set(store.unit_ids) | set(result.skipped["unit_id"])
    assert kept == set(ids)
    assert 0 < len(result.skipped) < 40
    reasons = result.skipped["reason"].str
    assert (reasons.startswith("outside imagery") | reasons.startswith("too few valid")).all()
    assert set(result.skipped["unit_id"]) <= set(ids)  # text, as written, from both lists
    assert isinstance(result.skipped, pd.DataFrame)


def test_a_duplicate_utf8_id_is_named_as_text(tmp_path):
    ids = ["é1", "b2", "é1"]
    pq.write_table(pa.table({"unit_id": ids, "lon": [30.0, 31.0, 32.0], "lat": [0.0, 1.0, 2.0]}),
                   tmp_path / "u.parquet")
    from eocausal.errors import UnitsError

    with pytest.raises(UnitsError, match=r"duplicate ids: é1 \(rows 0, 2\)"):
        read_unit_points(tmp_path / "u.parquet")


def test_a_task_reopens_a_store_replaced_at_the_same_path(tmp_path):
    from eocausal.pipeline.partition import _task_store
    from eocausal.pipeline.store import create_store

    def make(n):
        return create_store(tmp_path / "s.zarr", unit_ids=[f"u{i}" for i in range(n)],
                            n_dates=1, band_names=["b"], chip_size=4, dtype="uint8",
                            crs="EPSG:32618", pixel_size=10.0, dates=[None],
                            centres=np.zeros((n, 2)), units_per_chunk=2)

    make(6)
    first = _task_store(str(tmp_path / "s.zarr"))
    assert _task_store(str(tmp_path / "s.zarr")) is first  # opened once per process
    make(10)  # a new ingestion replaces the store: its metadata file is new
    second = _task_store(str(tmp_path / "s.zarr"))
    assert second is not first and second.n_units == 10
    # the ids and centres may be chunked coarser than the chips, but read the same
    assert second.unit_ids.tolist() == [f"u{i}" for i in range(10)]
    assert second.array("unit_id").chunks[0] % second.units_per_chunk == 0


def test_store_arrays_skip_the_fill_value_scan_whoever_opens_them(tmp_path):
    """zarr fixes an array's config when it is opened; a task that first touches ``chips``
    for its dtype must still write without scanning every chunk for fill values."""
    from eocausal.pipeline.store import create_store

    create_store(tmp_path / "s.zarr", unit_ids=[f"u{i}" for i in range(6)], n_dates=1,
                 band_names=["b"], chip_size=4, dtype="uint8", crs="EPSG:32618",
                 pixel_size=10.0, dates=[None], centres=np.zeros((6, 2)), units_per_chunk=2)
    store = open_store(tmp_path / "s.zarr")
    for name in ("chips", "valid", "valid_fraction", "partition_stats"):
        assert store.array(name).config.write_empty_chunks, name
    # an all-fill chunk is still written (a done chunk of nodata keeps its file)
    store.write_units(0, np.zeros((2, 1, 1, 4, 4), np.uint8), np.zeros((2, 1, 4, 4), bool))
    assert (tmp_path / "s.zarr" / "chips" / "c.0.0.0.0.0").is_file()


def test_chunk_files_lie_flat_in_one_folder_per_array(tmp_path, data_dir):
    xy, crs = _scene_points(500, seed=8, margin=20)
    points = UnitPoints.from_ids(np.array([f"u{i}" for i in range(len(xy))]), xy, crs)
    result = ingest(points, [SENTINEL2], tmp_path / "s.zarr", chip_size=16, units_per_chunk=100)
    for name in ("chips", "valid", "valid_fraction", "partition_stats", "unit_id",
                 "centre_xy"):
        folder = result.store_path / name
        chunk_files = sorted(p.name for p in folder.iterdir() if p.name != "zarr.json")
        assert chunk_files and all(p.startswith("c.") for p in chunk_files), name
        assert not any((folder / p).is_dir() for p in chunk_files), name
    assert len(list((result.store_path / "chips").glob("c.*"))) == 5
    # and the layout reads back through xarray as the design asks
    xr = pytest.importorskip("xarray")
    with xr.open_zarr(result.store_path, consolidated=True) as ds:
        np.testing.assert_array_equal(ds["chips"].values, open_store(result.store_path).chips[:])


def test_reused_memory_is_not_faulted_in_again():
    """After ``reuse_freed_memory`` a freed chunk-sized buffer is reused, not mapped afresh:
    the second allocation of the same size costs (almost) no page faults."""
    import resource
    import sys

    from eocausal.memory import reuse_freed_memory

    if not sys.platform.startswith("linux") or not reuse_freed_memory():
        pytest.skip("glibc's mallopt is needed")
    np.ones(8 << 20, dtype=np.uint8)  # faulted in once, then freed onto the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(8 << 20, dtype=np.uint8)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 50, f"{faults} page faults for a reused 8 MiB buffer (~500 if mapped afresh)"


def test_reuse_freed_memory_tries_the_c_library_once(monkeypatch):
    """Every ingestion task calls ``reuse_freed_memory``; where there is no glibc it must not
    load a C library again for each task."""
    import ctypes

    from eocausal import memory

    loads = []

    def no_glibc(name):
        loads.append(name)
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(memory, "_reusing", [None])
    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    assert [memory.reuse_freed_memory() for _ in range(3)] == [False, False, False]
    assert loads == ["libc.so.6"]
