"""A killed ingestion resumes: only unfinished chunks are redone, and the result is identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import read_units

from eocausal.errors import RasterReadError
from tests.conftest import ROOT, SENTINEL2

N_UNITS, PER_CHUNK = 1500, 50

SCRIPT = textwrap.dedent("""
    import sys, time
    import geopandas as gpd
    from eocausal.pipeline.ingest import ingest
    from eocausal.pipeline.units import UnitColumns, validate_units

    units_path, out = sys.argv[1], sys.argv[2]
    units = validate_units(gpd.read_file(units_path), UnitColumns())

    def slow_loop(func, tasks):  # the test's own pacing, so the kill lands mid-run
        for task in tasks:
            yield func(task)
            time.sleep(0.05)

    ingest(units, [sys.argv[3]], out, chip_size=16, units_per_chunk=PER_CHUNK,
           map_partitions=slow_loop)
""").replace("PER_CHUNK", str(PER_CHUNK))


@pytest.fixture(scope="module")
def units_file(tmp_path_factory):
    import geopandas as gpd
    import rasterio

    rng = np.random.default_rng(5)
    with rasterio.open(SENTINEL2) as src:
        b = src.bounds
        frame = gpd.GeoDataFrame(
            {"unit_id": [f"v{i:05d}" for i in range(N_UNITS)],
             "treatment": rng.integers(0, 2, N_UNITS), "outcome": rng.normal(size=N_UNITS)},
            geometry=gpd.points_from_xy(rng.uniform(b.left, b.right, N_UNITS),
                                        rng.uniform(b.bottom, b.top, N_UNITS)), crs=src.crs)
    path = tmp_path_factory.mktemp("units") / "units.gpkg"
    frame.to_file(path)
    return path


def _assert_same_store(a, b):
    for name in ("chips", "valid", "unit_id", "centre_xy", "valid_fraction", "usable"):
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:], err_msg=name)
    assert a.attrs["band_mean"] == b.attrs["band_mean"]


def test_kill_minus_nine_then_resume_equals_an_uninterrupted_run(tmp_path, units_file, data_dir):
    script = tmp_path / "ingest_script.py"
    script.write_text(SCRIPT)
    killed = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(units_file), str(killed),
                             str(SENTINEL2)], env=env)
    stats_dir = killed / "partition_stats"  # one done-marker file per chunk: c.<chunk>.0.0

    def n_done() -> int:
        return len([f for f in os.listdir(stats_dir) if f.startswith("c.")]) if (
            stats_dir.exists()) else 0

    deadline = time.time() + 120
    while time.time() < deadline and n_done() < 5:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done_at_kill = n_done()
    n_chunks = -(-N_UNITS // PER_CHUNK)
    assert 5 <= n_done_at_kill < n_chunks, "the kill should land mid-run"

    units = read_units(units_file)
    resumed = ingest(units, [SENTINEL2], killed, chip_size=16, units_per_chunk=PER_CHUNK)
    assert resumed.n_tasks_total == n_chunks
    assert resumed.n_tasks_run <= n_chunks - n_done_at_kill + 1
    fresh = ingest(units, [SENTINEL2], tmp_path / "fresh.zarr", chip_size=16,
                   units_per_chunk=PER_CHUNK)
    assert fresh.n_tasks_run == n_chunks
    _assert_same_store(open_store(killed), open_store(fresh.store_path))


def test_a_finished_store_is_not_redone(tmp_path, units_file, data_dir):
    units = read_units(units_file).head(200)
    first = ingest(units, [SENTINEL2], tmp_path / "s.zarr", chip_size=8, units_per_chunk=64)
    again = ingest(units, [SENTINEL2], tmp_path / "s.zarr", chip_size=8, units_per_chunk=64)
    assert first.n_tasks_run == 4 and again.n_tasks_run == 0
    changed = ingest(units, [SENTINEL2], tmp_path / "s.zarr", chip_size=12, units_per_chunk=64)
    assert changed.n_tasks_run == 4 and open_store(changed.store_path).chip_size == 12


def test_failed_run_leaves_an_existing_store_intact(tmp_path, units_file, data_dir):
    units = read_units(units_file).head(100)
    good = ingest(units, [SENTINEL2], tmp_path / "s.zarr", chip_size=8)
    before = open_store(good.store_path).chips[:]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(SENTINEL2.read_bytes()[:50_000])
    with pytest.raises(RasterReadError, match="broken.tif"):
        ingest(units, [broken], tmp_path / "s.zarr", chip_size=8)
    np.testing.assert_array_equal(open_store(good.store_path).chips[:], before)


def test_a_store_killed_while_being_created_is_replaced_on_rerun(tmp_path, units_file, data_dir,
                                                                 monkeypatch):
    """A kill between the first and the last metadata write of a new store must not leave a
    folder that a rerun takes for a stranger's (and refuses to replace)."""
    import zarr
    from eocausal.pipeline import store as store_module

    units = read_units(units_file).head(60)
    out = tmp_path / "s.zarr"

    def killed(self, *args, **kwargs):  # dies where the store's attributes would be written
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(zarr.core.attributes.Attributes, "update", killed)
        with pytest.raises(KeyboardInterrupt):
            ingest(units, [SENTINEL2], out, chip_size=8)
    assert not out.exists() and store_module.staging_path(out).is_dir()
    result = ingest(units, [SENTINEL2], out, chip_size=8)
    assert result.n_usable == 60 and not store_module.staging_path(out).exists()
    np.testing.assert_array_equal(open_store(out).chips[:].shape[0], 60)
