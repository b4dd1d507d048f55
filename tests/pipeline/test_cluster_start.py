"""The embedded LocalCluster: workers skip the driver's script; the driver works until they are up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    with open(sys.argv[1], "a") as marks:  # one line per execution of this script
        marks.write(f"{os.getpid()}\\n")

    def main():
        from eocausal.workflows.cluster import partition_mapper
        with partition_mapper(sys.argv[2], 2, progress=False) as mapper:
            assert mapper.n_workers == 2
            mapper.wait_started()  # before this, the driver runs tasks itself
            pids = set(mapper(lambda _: os.getpid(), list(range(20))))
            assert len(pids) >= 1 and os.getpid() not in pids
            print(sorted(abs(x) for x in mapper(abs, [-3, -2, -1])))

    if __name__ == "__main__":
        main()
""")


@pytest.mark.parametrize("scheduler", ["local", "processes"])
def test_spawned_workers_skip_the_main_script(tmp_path, scheduler):
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT)
    marks = tmp_path / "marks.txt"
    proc = subprocess.run([sys.executable, str(script), str(marks), scheduler],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[1, 2, 3]"
    # Without the fix, spawn runs the script once more in each of the two workers.
    assert len(marks.read_text().split()) == 1


def test_tasks_run_in_the_driver_until_the_workers_are_up():
    from eocausal.workflows.cluster import partition_mapper

    with partition_mapper("local", 1, progress=False) as mapper:
        # Started in the background, the cluster cannot be up before the first task ends.
        results = mapper(lambda x: (x, os.getpid()), list(range(40)))
        assert [r[0] for r in results] == list(range(40))  # in task order, wherever run
        assert results[0][1] == os.getpid()
        mapper.wait_started()
        assert all(pid != os.getpid() for _, pid in mapper(lambda x: (x, os.getpid()), [1, 2]))
        # dask's stack-sampling profiler holds the GIL every 10 ms: off on embedded workers
        profiling = mapper._dask_client().run(
            lambda: __import__("dask").config.get("distributed.worker.profile.enabled"))
        assert list(profiling.values()) == [False]
        # and glibc's own malloc trimming, not dask's 64 KiB threshold (3x slower copies)
        trim = mapper._dask_client().run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert list(trim.values()) == [None]


FORKED_WORKERS = """
import json, os, sys
from eocausal.workflows.cluster import WORKER_PRELOAD, partition_mapper

with partition_mapper("local", 2, progress=False) as mapper:
    mapper.wait_started()
    parents = mapper._dask_client().run(os.getppid)
    loaded = mapper._dask_client().run(
        lambda: [m for m in WORKER_PRELOAD if m != "lz4" and m not in sys.modules])
print(json.dumps({"parents": list(parents.values()), "loaded": list(loaded.values()),
                  "me": os.getpid()}))
"""


def test_embedded_workers_fork_from_one_preloaded_server():
    """In a fresh process (a forkserver already running, as the process pool's, keeps its
    own preload): both LocalCluster workers fork from one server that imported
    WORKER_PRELOAD."""
    import json
    import multiprocessing
    import subprocess

    import pytest

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver on this platform: workers are spawned")
    proc = subprocess.run([sys.executable, "-c", FORKED_WORKERS], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    # both workers are children of one forkserver, not spawned by the driver
    assert len(seen["parents"]) == 2 and len(set(seen["parents"])) == 1
    assert seen["me"] not in seen["parents"]
    assert seen["loaded"] == [[], []]
