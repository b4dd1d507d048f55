"""One run at a time per run directory.

The exclusion itself is an OS file lock (``filelock``), which the kernel drops when the holder
dies, so a crashed run never blocks the next one. Beside it a small JSON file names the holder
(process id, host, start time), so a second run can say who holds the directory, and a run
that finds the record of a dead holder says that it took over.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from eocausal.errors import RunLockedError

__all__ = ["RunLock"]


class RunLock:
    """Hold ``root``'s run lock for the duration of a ``with`` block.

    Raises :class:`~eocausal.errors.RunLockedError` at once (no waiting) when a live process
    holds it. ``note`` receives one line when a stale record is taken over.
    """

    def __init__(self, lock_path: Path, info_path: Path, note=None) -> None:
        self.lock_path, self.info_path = Path(lock_path), Path(info_path)
        self.note = note or (lambda message: None)
        self._lock = FileLock(str(self.lock_path), timeout=0)

    def _holder(self) -> dict:
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> RunLock:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            holder = self._holder()
            raise RunLockedError(
                f"Run directory '{self.lock_path.parent}' is in use by process "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                f"{holder.get('started', '?')}. Wait for it to finish, or give another --out."
            ) from None
        stale = self._holder()
        if stale and stale.get("pid") != os.getpid():
            self.note(f"took over the lock of run {stale.get('pid')} (started "
                      f"{stale.get('started')}), which is no longer running")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(UTC).isoformat(timespec="seconds")}
        self.info_path.write_text(json.dumps(record))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.info_path.unlink(missing_ok=True)
        finally:
            self._lock.release()
