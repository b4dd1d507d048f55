"""Where parallel work runs: in this process, on worker processes of this machine, or on dask.

Stages in ``pipeline``/``models`` take a ``map_partitions(func, tasks)`` callable and never
see dask; this module builds that callable from the config's ``compute`` section so the same
code runs on a laptop (in this process, or on a process pool sized to the machine: see
:mod:`eocausal.workflows.process_pool`), on a dask LocalCluster (``"local"``), or on an
existing dask scheduler (``--scheduler tcp://host:8786``, for example one started by
dask-jobqueue on SLURM/PBS).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from eocausal.workflows.process_pool import (
    ProcessPool,
    ignore_ctrl_c,
    start_forkserver,
    workers_skip_main,
)

__all__ = ["AUTO_MIN_TASKS", "POOL_SCHEDULERS", "Mapper", "partition_mapper", "quiet_dask_logging"]

log = logging.getLogger(__name__)

Mapper = Callable[[Callable[[Any], Any], list[Any]], Iterable[Any]]

# Below this many tasks, starting worker processes costs more than it saves.
AUTO_MIN_TASKS = 16
# Schedulers that name this machine's own worker processes, not a dask cluster.
POOL_SCHEDULERS = (None, "processes")


def _size(task: Any) -> int:
    try:
        return len(task)
    except TypeError:
        return 1


def _warm_up() -> None:
    import eocausal.pipeline.partition  # noqa: F401


def quiet_dask_logging(verbose: bool | None = None) -> None:
    """Keep dask's INFO lines (client connects, worker starts) out of a user's terminal.

    distributed installs its own INFO-level handler on import; its loggers are set to WARNING
    here unless ``verbose`` (default: the root logger is at DEBUG, as ``eocausal -v`` sets).
    """
    if verbose is None:
        verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    level = logging.DEBUG if verbose else logging.WARNING
    for name in ("distributed", "distributed.client", "distributed.scheduler",
                 "distributed.worker", "distributed.nanny", "distributed.core",
                 "distributed.http.proxy"):
        logging.getLogger(name).setLevel(level)


# How the embedded LocalCluster's workers differ from dask's defaults (a user's own cluster,
# --scheduler ADDRESS, keeps its configuration):
# - no statistical profiler: it samples every worker thread's stack each 10 ms holding the
#   GIL; on ingestion tasks it cost ~25% of the workers' speed (100,000 units on 2 workers:
#   9.0-10.3 s with it, 7.5 s without);
# - glibc's own malloc trimming instead of dask's MALLOC_TRIM_THRESHOLD_=65536, which also
#   turns off glibc's dynamic mmap threshold: every chunk-sized array became a fresh mmap,
#   and numpy copies of chunks ran 3x slower in a worker than in the driver (0.61 s against
#   0.20 s for 200 copies of a 7.7 MB chunk).
EMBEDDED_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
DASK_TRIM_THRESHOLD = "65536"


def _unset_dask_trim_threshold() -> None:
    """A nanny writes its pre-spawn variables into this process's environment, which later
    workers inherit: drop dask's trim threshold if an earlier cluster left it here."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") == DASK_TRIM_THRESHOLD:
        del os.environ["MALLOC_TRIM_THRESHOLD_"]


# Modules every embedded worker imports before its first task; with the forkserver they are
# imported once, in the server, and each worker forks with them loaded.
WORKER_PRELOAD = ("distributed", "numpy", "pandas", "lz4", "eocausal.pipeline.partition")


def _embedded_config() -> dict[str, Any]:
    """``EMBEDDED_WORKER_CONFIG``, plus a forkserver start where the platform has one."""
    import multiprocessing

    config: dict[str, Any] = dict(EMBEDDED_WORKER_CONFIG)
    if "forkserver" in multiprocessing.get_all_start_methods():
        config["distributed.worker.multiprocessing-method"] = "forkserver"
    return config


def _start_forkserver() -> None:
    """Start the forkserver (importing ``WORKER_PRELOAD``) before this process imports dask.

    dask spawns each worker as a fresh interpreter that imports dask, numpy, rasterio and zarr
    (about a second of CPU each, taken from the cores the driver plans on, times the worker
    count); a forkserver imports them once, on another core while this process imports
    distributed and builds the LocalCluster, and forks every worker from it. A forked worker
    exits without tearing its interpreter down (closing 2 workers: 0.04 s against 0.23 s).
    """
    start_forkserver(WORKER_PRELOAD)


class _Runner:
    """Runs task lists in this process, on a process pool or on dask, starting workers only
    when needed."""

    def __init__(self, scheduler: str | None, workers: int | None, desc: str,
                 progress: bool, stack: contextlib.ExitStack) -> None:
        self.scheduler, self.workers, self.desc = scheduler, workers, desc
        self.progress, self.stack = progress, stack
        self.client: Any = None
        self._starting: concurrent.futures.Future | None = None
        self.pool: ProcessPool | None = None
        if scheduler in POOL_SCHEDULERS:
            self.pool = ProcessPool(workers or os.cpu_count() or 1)
            stack.push(self._close_pool)

    def _close_pool(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # after an error or Ctrl-C, running tasks are stopped, not waited for
        self.pool.close(interrupted=exc_type is not None)

    @property
    def n_workers(self) -> int:
        """Workers that tasks will run on, so stages can size chunks before they start."""
        if self.scheduler == "synchronous":
            return 1
        if self.scheduler in (*POOL_SCHEDULERS, "local"):
            return self.workers or os.cpu_count() or 1
        return len(self._dask_client().scheduler_info().get("workers", {})) or 1

    def _in_process(self, n_tasks: int) -> bool:
        return self.scheduler == "synchronous" or (
            self.scheduler is None and n_tasks < AUTO_MIN_TASKS and not self.pool.started)

    def prepare(self, n_tasks: int) -> None:
        """Start the workers in a background thread when ``n_tasks`` will need them.

        Worker processes take a second or more to start (a forkserver importing the task's
        modules, or fresh interpreters importing dask); starting them while the driver still
        plans (creating the store, building tasks) takes that time off the critical path.
        """
        if not self._in_process(n_tasks):
            self._begin()

    def _begin(self) -> None:
        if self.pool is not None:
            self.pool.start()
        elif self.client is None and self._starting is None:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dask-start")
            self._starting = pool.submit(self._start_client)
            pool.shutdown(wait=False)

    def wait_started(self) -> None:
        """Let a background start finish (so closing the mapper closes what it started)."""
        if self.pool is not None and self.pool.started:
            with contextlib.suppress(Exception):
                self.pool.wait_ready()
        if self._starting is not None:
            with contextlib.suppress(Exception):
                self._starting.result()

    def _bar(self, tasks: list[Any]) -> Any:
        from tqdm.auto import tqdm  # imported on first use: it pulls in asyncio

        total = sum(_size(t) for t in tasks)
        return tqdm(total=total, desc=self.desc, unit="chip", disable=not self.progress,
                    leave=False)

    def _dask_client(self) -> Any:
        if self.client is None:
            self._begin()
            self.client = self._starting.result()
            log.info("dask client: %s", self.client)
        return self.client

    def _start_client(self) -> Any:
        local = self.scheduler == "local"
        if local:
            _start_forkserver()
        from dask.distributed import Client, LocalCluster

        quiet_dask_logging()
        if local:
            import dask

            n_workers = self.workers or os.cpu_count() or 1
            with workers_skip_main(), dask.config.set(_embedded_config()):
                _unset_dask_trim_threshold()
                cluster = LocalCluster(
                    n_workers=n_workers, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR,
                )
            self.stack.callback(cluster.close)
            client = Client(cluster)
        else:
            client = Client(self.scheduler, timeout="30s")
        # Closed by callback, not as a context manager: a Client entered in this (starting)
        # thread could not be exited from the caller's thread.
        self.stack.callback(client.close)
        # Import the ingestion task's modules (rasterio, zarr) on every worker now, not
        # inside the first task of each.
        client.run(_warm_up)
        if local:
            client.run(ignore_ctrl_c)
        return client

    def _workers_up(self) -> bool:
        if self.pool is not None:
            return self.pool.ready()
        return self.client is not None or self._starting is None or self._starting.done()

    def __call__(self, func: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
        in_process = self._in_process(len(tasks)) and self._starting is None
        with self._bar(tasks) as bar:
            if in_process:
                results = []
                for task in tasks:
                    results.append(func(task))
                    bar.update(_size(task))
                return results
            self._begin()
            results: list[Any] = [None] * len(tasks)
            first = 0
            # Until the workers are up, this process runs tasks itself, so their start-up
            # (a forkserver's imports, or a cluster's) is off the critical path.
            while first < len(tasks) and not self._workers_up():
                results[first] = func(tasks[first])
                bar.update(_size(tasks[first]))
                first += 1
            if first == len(tasks):
                return results
            if self.pool is not None:
                for index, result in self.pool.map_unordered(func, tasks[first:], self.desc):
                    results[first + index] = result
                    bar.update(_size(tasks[first + index]))
                return results
            from dask.distributed import as_completed

            client = self._dask_client()
            futures = client.map(func, tasks[first:], pure=False)
            order = {f.key: first + i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                index = order[future.key]
                results[index] = future.result()
                bar.update(_size(tasks[index]))
            return results


@contextlib.contextmanager
def partition_mapper(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    desc: str = "chips",
    progress: bool = True,
) -> Iterator[Mapper]:
    """Yield ``map_partitions(func, tasks) -> results in task order``, with a progress bar.

    Parameters
    ----------
    scheduler : str, optional
        ``None`` (the embedded default): worker processes of this machine (a process pool,
        one worker per core), started the first time a stage has at least
        ``AUTO_MIN_TASKS`` tasks and reused after; smaller stages run in this process.
        ``"processes"``: always that pool. ``"synchronous"``: always in this process.
        ``"local"``: a dask LocalCluster (dask's scheduler, retries of a task whose worker
        died). Anything else: the address of a running dask scheduler.
    workers : int, optional
        Worker processes of the pool or LocalCluster (default: one per core).

    The mapper has ``n_workers`` (stages size their chunks with it) and ``prepare(n_tasks)``
    (stages call it as soon as they know their task count, and workers that will be
    needed start in the background). ``"local"`` and ``"processes"`` start theirs at once.
    """
    with contextlib.ExitStack() as stack:
        runner = _Runner(scheduler, workers, desc, progress, stack)
        if scheduler in ("local", "processes"):
            runner.prepare(AUTO_MIN_TASKS)
        try:
            yield runner
        finally:
            runner.wait_started()
