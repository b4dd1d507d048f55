"""The embedded default: a stage's tasks on a process pool of this machine (no dask).

Real ingestion through it equals the in-process one pixel for pixel; the driver works until
a worker is up; workers fork from one preloaded server; a failing task, a dying worker and
Ctrl-C each end the command promptly with the right message and no worker left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, validate_units
from eocausal.workflows.cluster import AUTO_MIN_TASKS, partition_mapper
from eocausal.workflows.process_pool import FORKSERVER_EXIT, POOL_PRELOAD, WorkerDiedError

from tests.conftest import SENTINEL2


def _pid_of(x):
    return x, os.getpid()


def _fail_on_seven(x):
    if x == 7:
        raise ValueError("task 7 has a bad window")
    time.sleep(0.05)
    return x


def _die_on_three(x):
    if x == 3:
        os._exit(9)  # as the kernel's OOM killer would end it: no exception, no cleanup
    time.sleep(0.05)
    return x


def test_ingest_on_the_pool_equals_in_process(tmp_path, data_dir):
    rng = np.random.default_rng(11)
    with rasterio.open(SENTINEL2) as src:
        xs, ys = src.transform @ (rng.uniform(0, 512, 1500), rng.uniform(0, 512, 1500))
        crs = src.crs
    units = validate_units(gpd.GeoDataFrame(
        {"unit_id": [f"u{i:05d}" for i in range(1500)], "treatment": 0, "outcome": 0.0},
        geometry=gpd.points_from_xy(xs, ys), crs=crs), UnitColumns())
    here = ingest(units, [SENTINEL2], tmp_path / "here.zarr", chip_size=16,
                  units_per_chunk=50)
    with partition_mapper(None, 2, progress=False) as mapper:
        pooled = ingest(units, [SENTINEL2], tmp_path / "pool.zarr", chip_size=16,
                        units_per_chunk=50, map_partitions=mapper)
        assert mapper.pool.started  # 30 tasks: the default used the pool
    assert pooled.n_tasks_run == 30 >= AUTO_MIN_TASKS
    a, b = open_store(here.store_path), open_store(pooled.store_path)
    np.testing.assert_array_equal(a.unit_ids, b.unit_ids)
    np.testing.assert_array_equal(a.chips[:], b.chips[:])
    np.testing.assert_array_equal(a.valid[:], b.valid[:])
    np.testing.assert_allclose(a.band_mean, b.band_mean)


def test_driver_works_until_a_worker_is_up_then_workers_take_over():
    import multiprocessing

    with partition_mapper("processes", 2, progress=False) as mapper:
        assert mapper.n_workers == 2
        # The pool starts in the background: the first task cannot wait for it.
        results = mapper(lambda x: (x, os.getpid()), list(range(30)))
        assert [r[0] for r in results] == list(range(30))  # task order, wherever run
        assert results[0][1] == os.getpid()
        mapper.wait_started()
        results = mapper(_pid_of, list(range(40)))
        assert [r[0] for r in results] == list(range(40))
        assert os.getpid() not in {pid for _, pid in results}
        if "forkserver" in multiprocessing.get_all_start_methods():
            loaded = mapper(lambda _: [m for m in (*POOL_PRELOAD, FORKSERVER_EXIT)
                                       if m not in sys.modules], [0])
            parents = {p for p in mapper(lambda _: os.getppid(), list(range(20)))}
            assert loaded == [[]]  # forked with the task modules imported
            assert len(parents) == 1 and os.getpid() not in parents  # one forkserver


def test_the_forkserver_ends_without_a_teardown():
    """The server's exit skips teardown (atexit handlers registered before it, module
    clean-up), which held the driver's stdout and stderr open 0.3 s after it ended."""
    script = ("import atexit; atexit.register(print, 'teardown ran'); "
              f"import {FORKSERVER_EXIT}; print('served', flush=True)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "served\n", "")


def test_failing_task_raises_its_own_error_in_the_driver():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="task 7 has a bad window"):
        with partition_mapper("processes", 2, progress=False) as mapper:
            mapper.wait_started()
            mapper(_fail_on_seven, list(range(200)))
    assert time.perf_counter() - start < 30  # the other 192 tasks were not waited for


def test_a_worker_that_dies_is_reported_with_what_to_do():
    with pytest.raises(WorkerDiedError, match="rerun the same command to resume"):
        with partition_mapper("processes", 2, progress=False) as mapper:
            mapper.wait_started()
            mapper(_die_on_three, list(range(40)))


CTRL_C = textwrap.dedent("""
    import os, signal, sys, threading, time
    from eocausal.workflows.cluster import partition_mapper

    def sleep_long(x):
        time.sleep(60)
        return x

    if __name__ == "__main__":
        with partition_mapper("processes", 2, progress=False) as mapper:
            mapper.wait_started()
            print(" ".join(map(str, mapper.pool.pids())), flush=True)
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                mapper(sleep_long, list(range(8)))
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                raise SystemExit(130)
""")


def test_ctrl_c_stops_running_tasks_at_once(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(CTRL_C)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    took = time.perf_counter() - start
    assert proc.returncode == 130, proc.stderr[-2000:]
    pids, said = proc.stdout.split("\n")[:2]
    assert said == "interrupted"
    assert took < 30, f"waited {took:.0f} s for 60-second tasks after Ctrl-C"
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr
    for pid in map(int, pids.split()):  # no worker left running
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in _state(pid)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((line for line in status if line.startswith("State:")), "").lower()
    except OSError:
        return "zombie"
