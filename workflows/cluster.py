"""Where parallel work runs: in this process, on an embedded LocalCluster, or on a cluster.

Stages in ``pipeline``/``models`` take a ``map_partitions(func, tasks)`` callable and never
see dask; this module builds that callable from the config's ``compute`` section so the same
code runs on a laptop, a LocalCluster sized to the machine, or an existing scheduler
(``--scheduler tcp://host:8786``, for example one started by dask-jobqueue on SLURM/PBS).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["AUTO_MIN_TASKS", "Mapper", "partition_mapper", "quiet_dask_logging"]

log = logging.getLogger(__name__)

Mapper = Callable[[Callable[[Any], Any], list[Any]], Iterable[Any]]

# Below this many tasks, starting worker processes (about 2-3 s) costs more than it saves.
AUTO_MIN_TASKS = 16


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


def _size(task: Any) -> int:
    try:
        return len(task)
    except TypeError:
        return 1


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with SIGINT ignored: Ctrl-C in a terminal reaches the whole
    process group, and the workers would each print tracebacks. This process alone handles
    it and closes the cluster in order (a process that starts with SIGINT ignored keeps it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Runner:
    """Runs task lists in this process or on dask, starting a LocalCluster only when needed."""

    def __init__(self, scheduler: str | None, workers: int | None, desc: str,
                 progress: bool, stack: contextlib.ExitStack) -> None:
        self.scheduler, self.workers, self.desc = scheduler, workers, desc
        self.progress, self.stack = progress, stack
        self.client: Any = None

    def _bar(self, tasks: list[Any]) -> Any:
        from tqdm.auto import tqdm  # imported on first use: it pulls in asyncio

        total = sum(_size(t) for t in tasks)
        return tqdm(total=total, desc=self.desc, unit="chip", disable=not self.progress,
                    leave=False)

    def _dask_client(self) -> Any:
        if self.client is None:
            from dask.distributed import Client, LocalCluster

            quiet_dask_logging()

            if self.scheduler in (None, "local"):
                n_workers = self.workers or os.cpu_count() or 1
                with _workers_ignore_ctrl_c():
                    cluster = self.stack.enter_context(LocalCluster(
                        n_workers=n_workers, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=logging.ERROR,
                    ))
                self.client = self.stack.enter_context(Client(cluster))
            else:
                self.client = self.stack.enter_context(Client(self.scheduler, timeout="30s"))
            log.info("dask client: %s", self.client)
        return self.client

    @property
    def n_workers(self) -> int:
        """Worker processes the tasks would run on (1 in this process); starts no cluster
        that is not running yet unless the scheduler names one."""
        if self.scheduler == "synchronous" or (self.scheduler is None and self.client is None):
            return 1
        return max(1, len(self._dask_client().scheduler_info().get("workers", {})))

    def __call__(self, func: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
        in_process = self.scheduler == "synchronous" or (
            self.scheduler is None and len(tasks) < AUTO_MIN_TASKS and self.client is None)
        with self._bar(tasks) as bar:
            if in_process:
                results = []
                for task in tasks:
                    results.append(func(task))
                    bar.update(_size(task))
                return results
            from dask.distributed import as_completed

            client = self._dask_client()
            futures = client.map(func, tasks, pure=False)
            order = {f.key: i for i, f in enumerate(futures)}
            results = [None] * len(futures)
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
        ``None`` (the embedded default): a LocalCluster sized to the machine, started the
        first time a stage has at least ``AUTO_MIN_TASKS`` tasks and reused after; smaller
        stages run in this process. ``"synchronous"``: always in this process. ``"local"``:
        always a LocalCluster. Anything else: the address of a running dask scheduler.
    workers : int, optional
        Worker processes of the LocalCluster (default: one per core).
    """
    with contextlib.ExitStack() as stack:
        yield _Runner(scheduler, workers, desc, progress, stack)
