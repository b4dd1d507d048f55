"""Ingest, encode and map through a real dask cluster (a scheduler and two worker processes
on 127.0.0.1) give the same results as the in-process run."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from eocausal.models.features.encode import read_features
from eocausal.models.features.parts import encode_store_parts
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, read_units
from eocausal.workflows.cluster import partition_mapper
from eocausal.workflows.maps import MapSettings, build_map
from eocausal.workflows.maps.predict import load_run_model
from eocausal.workflows.paths import RunPaths

from tests.workflows.maprun import make_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` + two ``dask worker`` processes; yields the scheduler address."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    logs = tmp_path_factory.mktemp("dask")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard"], env=env,
        stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
             "--nthreads", "1", "--no-dashboard", "--name", f"w{i}",
             "--local-directory", str(logs / f"w{i}")], env=env,
            stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
    try:
        from dask.distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for proc in procs[::-1]:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return RunPaths(make_run(tmp_path_factory.mktemp("dask_run")))


def test_ingest_through_the_cluster_equals_in_process(cluster, run, tmp_path):
    units = read_units(run.world / "units.gpkg", UnitColumns(covariates=("x1", "x2", "x3")))
    scene = next(run.world.glob("scene_*.tif"))
    with partition_mapper(cluster, progress=False) as mapper:
        result = ingest(units, [scene], tmp_path / "tiles.zarr", chip_size=16,
                        units_per_chunk=128, map_partitions=mapper)
    ours, reference = open_store(result.store_path), open_store(run.tiles)
    # dask's INFO lines (client connected...) stay out of the user's terminal.
    assert logging.getLogger("distributed.client").getEffectiveLevel() >= logging.WARNING
    assert result.n_tasks_run == reference.n_chunks == 5  # the work really was split
    np.testing.assert_array_equal(ours.unit_ids, reference.unit_ids)
    np.testing.assert_array_equal(ours.chips[:], reference.chips[:])
    np.testing.assert_array_equal(ours.valid[:], reference.valid[:])
    np.testing.assert_allclose(ours.band_mean, reference.band_mean)


def test_encode_parts_through_the_cluster_equal_in_process(cluster, run, tmp_path):
    model = load_run_model(run)
    with partition_mapper(cluster, progress=False) as mapper:
        path = encode_store_parts(run.tiles, model.encoder, parts_dir=tmp_path / "parts",
                                  n_parts=4, map_partitions=mapper, out=tmp_path / "f.parquet",
                                  device="cpu", torch_threads=1)
    ours, meta = read_features(path)
    reference, ref_meta = read_features(run.features)
    pd.testing.assert_frame_equal(ours, reference, check_exact=False, rtol=1e-5)
    assert meta["encoder"] == ref_meta["encoder"]


def test_map_through_the_cluster_equals_in_process(cluster, run, tmp_path):
    other = RunPaths(tmp_path / "run")
    shutil.copytree(run.root, other.root, ignore=shutil.ignore_patterns("maps"))
    settings = MapSettings(spacing=80, cells_per_task=128, device="cpu")
    local = build_map(run, settings, echo=lambda m: None)
    start = time.perf_counter()
    with partition_mapper(cluster, progress=False) as mapper:
        remote = build_map(other, settings, mapper=mapper, echo=lambda m: None)
    assert time.perf_counter() - start < 120
    assert len(local.cells) > 128 * 3  # several prediction tasks
    cols = ["unit_id", "cate", "cate_lo", "cate_hi", "support_distance", "extrapolated"]
    pd.testing.assert_frame_equal(remote.cells[cols], local.cells[cols], check_exact=False,
                                  rtol=1e-5)
