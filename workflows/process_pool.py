"""The embedded default: a stage's tasks on worker processes of this machine, no scheduler.

A ``dask.distributed.LocalCluster`` costs the driver about a second of CPU to import
distributed, a scheduler, a nanny per worker and a comm round trip per task; on 100,000-unit
ingestions that was 3 s of 13 with one worker (measured in benchmarks/README.md). A stage
here only maps a function over a task list, so the standard library's
``concurrent.futures.ProcessPoolExecutor`` does it, with workers forked from one forkserver
that has imported the task modules once. Functions go by value (cloudpickle, as dask sends
them), so lambdas and closures work. A user's own dask cluster (``--scheduler ADDRESS``)
and ``--scheduler local`` (a LocalCluster, with dask's resilience) are still dask.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

from eocausal.errors import EocausalError

__all__ = ["POOL_PRELOAD", "ProcessPool", "WorkerDiedError", "ignore_ctrl_c", "start_forkserver",
           "workers_skip_main"]

# Imported once in the forkserver; every worker forks with them loaded. Not pandas: no
# ingestion task needs it, and it was 0.4 s of the server's 1.0 s start (measured); a task
# that does need it imports it once per worker.
POOL_PRELOAD = ("numpy", "eocausal.pipeline.partition")
# Also imported by every forkserver started here: it ends the server without a teardown.
FORKSERVER_EXIT = "eocausal.workflows.forkserver_exit"


class WorkerDiedError(EocausalError, RuntimeError):
    """A worker process ended while it ran a task (killed, or out of memory)."""


def ignore_ctrl_c() -> None:
    """On this machine's workers (the pool's, or an embedded LocalCluster's): leave Ctrl-C to
    the driver.

    A terminal's Ctrl-C reaches the whole process group; workers would each print tracebacks
    while the driver alone stops them in order. Workers of a user's own cluster
    (``--scheduler ADDRESS``) keep their signals. Only the main thread may set a handler.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def workers_skip_main() -> Iterator[None]:
    """Keep worker processes from re-running the driver's ``__main__`` script.

    multiprocessing's spawn (and the forkserver, for each process it forks) re-executes the
    main script in every child (to find functions
    defined there); for the ``eocausal`` console script that means importing the whole CLI
    (torch, sklearn, econml: seconds of CPU per worker, on the cores the driver needs). A
    main module whose spec is named ``__main__`` is skipped by spawn, so during start-up the
    script gets that spec. Tasks are library functions (or cloudpickled by value), so no
    worker needs the driver's script.
    """
    import importlib.machinery
    import sys

    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = None


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {}


def _run(token: str, blob: bytes, task: Any) -> Any:
    """Run a task in a worker; the function is unpickled once per worker and map call."""
    func = _FUNCTIONS.get(token)
    if func is None:
        _FUNCTIONS.clear()  # one map call at a time: drop the previous stage's function
        func = _FUNCTIONS[token] = pickle.loads(blob)
    return func(task)


def _pid(_: Any) -> int:
    return os.getpid()


def start_forkserver(preload: tuple[str, ...] = POOL_PRELOAD) -> multiprocessing.context.BaseContext:
    """The forkserver context, its server started (importing ``preload``) if not yet.

    Workers then fork from a process that has imported the task modules once, instead of
    each importing them afresh. A server already running (started earlier in this process)
    keeps its own preload. The server also imports ``FORKSERVER_EXIT``, so that it ends at
    once when this process does (without it, a caller reading this process's output waits
    0.3 s more). Falls back to spawn where the platform has no forkserver.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*preload, FORKSERVER_EXIT])
    forkserver.ensure_running()
    return context


class ProcessPool:
    """``workers`` processes, started in the background by :meth:`start`; :meth:`ready` says
    when the first can take tasks, so the driver can run tasks itself meanwhile."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._starting: concurrent.futures.Future | None = None

    def start(self) -> None:
        """Start the workers without waiting for them.

        Forking the first worker waits for the forkserver to import ``POOL_PRELOAD`` (about
        0.7 s), so a thread does it while the caller goes on.
        """
        if self._starting is None:
            starter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pool-start")
            self._starting = starter.submit(self._create)
            starter.shutdown(wait=False)

    def _create(self) -> tuple[concurrent.futures.ProcessPoolExecutor, concurrent.futures.Future]:
        """The executor with every worker forked now, and the first worker's probe.

        The pool forks a worker on a submit that finds none idle, so one probe per worker
        forks them all here, where the driver's script is kept out of them
        (:func:`workers_skip_main`): a user's script without a ``__main__`` guard would
        otherwise run again in each worker.
        """
        with workers_skip_main():
            executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=start_forkserver(), initializer=ignore_ctrl_c)
            probes = [executor.submit(os.getpid) for _ in range(self.workers)]
        return executor, probes[0]

    @property
    def started(self) -> bool:
        return self._starting is not None

    def ready(self) -> bool:
        """Whether a worker has run a task (False before :meth:`start`)."""
        return (self._starting is not None and self._starting.done()
                and self._starting.result()[1].done())

    def wait_ready(self) -> None:
        """Block until a worker is up (a start that failed raises here)."""
        if self._starting is not None:
            self._starting.result()[1].result()

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        self.start()
        return self._starting.result()[0]

    def pids(self) -> set[int]:
        """Process ids of the workers (for tests and diagnostics)."""
        return set(self._executor().map(_pid, range(4 * self.workers)))

    def map_unordered(self, func: Callable[[Any], Any], tasks: list[Any], desc: str):
        """Yield ``(index, result)`` as tasks finish; a task's error is raised here."""
        import uuid

        import cloudpickle

        executor = self._executor()
        blob, token = cloudpickle.dumps(func), uuid.uuid4().hex
        futures = {executor.submit(_run, token, blob, task): i for i, task in enumerate(tasks)}
        # Tasks left when a task fails are not cancelled here: the mapper's exit stops the
        # workers (see close), and a cancelled future would trip CPython 3.11's pool when
        # it marks the unfinished ones broken.
        for future in concurrent.futures.as_completed(futures):
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool as exc:
                raise WorkerDiedError(
                    f"a worker process ended while it ran {desc} tasks (killed, or out of "
                    "memory); rerun the same command to resume (finished tasks are kept), "
                    "with fewer --workers if memory is short") from exc
            yield futures[future], result

    def close(self, interrupted: bool = False) -> None:
        """Let running tasks end and stop the workers; on an interrupt, stop them at once."""
        starting, self._starting = self._starting, None
        if starting is None:
            return
        try:
            executor = starting.result()[0]
        except Exception:  # never started: nothing to stop
            return
        if interrupted:
            # No public way to stop a running task before Python 3.14's terminate_workers;
            # the pool then marks what was left unfinished as broken.
            processes = getattr(executor, "_processes", None) or {}
            for process in list(processes.values()):
                process.terminate()
        executor.shutdown(wait=not interrupted)
