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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["partition_mapper"]

log = logging.getLogger(__name__)

Mapper = Callable[[Callable[[Any], Any], list[Any]], Iterable[Any]]


def _with_progress(results: Iterable[Any], total: int, desc: str, enabled: bool) -> list[Any]:
    return list(tqdm(results, total=total, desc=desc, unit="task", disable=not enabled,
                     leave=False))


@contextlib.contextmanager
def partition_mapper(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    desc: str = "tasks",
    progress: bool = True,
) -> Iterator[Mapper]:
    """Yield ``map_partitions(func, tasks) -> results in task order``.

    Parameters
    ----------
    scheduler : str, optional
        ``None`` or ``"synchronous"``: run in this process (no start-up cost; the default
        for small runs). ``"local"``: start a LocalCluster with ``workers`` processes (default:
        one per core). Anything else: the address of a running dask scheduler.
    workers : int, optional
        Worker processes for ``"local"``.
    """
    if scheduler in (None, "synchronous"):
        yield lambda func, tasks: _with_progress(map(func, tasks), len(tasks), desc, progress)
        return
    from dask.distributed import Client, LocalCluster, as_completed

    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            n_workers = workers or os.cpu_count() or 1
            cluster = stack.enter_context(LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
            ))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler, timeout="30s"))
        log.info("dask client: %s", client)

        def run(func: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
            futures = client.map(func, tasks, pure=False)
            order = {f.key: i for i, f in enumerate(futures)}
            results: list[Any] = [None] * len(futures)
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc,
                               unit="task", disable=not progress, leave=False):
                results[order[future.key]] = future.result()
            return results

        yield run
