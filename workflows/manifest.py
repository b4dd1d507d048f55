"""The run manifest: what ran, with which settings, inputs and versions, and how it went.

It is rewritten (atomically) after every stage, so a run that fails or is interrupted half-way
still says which stages finished, what they wrote, how long they took and the content hash
each ran with; the next run reads it back to skip the stages that are up to date.
"""

from __future__ import annotations

import json
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from eocausal.workflows.interrupt import was_interrupted

from eocausal.files import atomic_write_text

__all__ = ["Manifest", "package_versions"]

PACKAGES = ("eocausal", "numpy", "pandas", "rasterio", "geopandas", "zarr", "dask", "torch",
            "torchvision", "econml", "scikit-learn", "pyarrow", "pydantic")
FORMAT = 2


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a run's numbers (read, not imported)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:500]


@dataclass
class Manifest:
    """Stage records of a run directory, kept across runs, written to ``manifest.json``."""

    path: Path
    config: dict[str, Any]
    seeds: dict[str, int]
    inputs: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_hashes: dict[str, Any] = field(default_factory=dict)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    _previous: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _versions: dict[str, str] = field(default_factory=package_versions, repr=False)

    @classmethod
    def open(cls, path: Path, config: dict[str, Any], seeds: dict[str, int]) -> Manifest:
        """A manifest for a new run into ``path``'s folder, remembering the last run's records."""
        manifest = cls(Path(path), config, seeds)
        try:
            old = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return manifest
        if isinstance(old, dict) and old.get("eocausal_manifest") == FORMAT:
            manifest._previous = dict(old.get("stages") or {})
            manifest.file_hashes = dict(old.get("file_hashes") or {})
            manifest.inputs = dict(old.get("inputs") or {})
        return manifest

    def previous(self, name: str) -> dict[str, Any] | None:
        """The record the last run left for stage ``name``, if any."""
        return self._previous.get(name)

    def keep(self, name: str) -> None:
        """Carry an up-to-date stage's record over unchanged (marked as reused)."""
        self.stages[name] = {**self._previous[name], "reused": True}

    def drop(self, name: str) -> None:
        self.stages.pop(name, None)

    @contextmanager
    def stage(self, name: str, digest: str | None = None):
        """Time a stage and record its status; outputs go into the yielded dict.

        Whatever ends the stage (an error with any message, Ctrl-C, a full disk) leaves a
        consistent record: ``done``, ``failed`` with the first line of the error, or
        ``interrupted``.
        """
        record: dict[str, Any] = {"status": "running", "hash": digest, "outputs": {}}
        self.stages[name] = record
        self.write()
        start = time.perf_counter()
        try:
            yield record["outputs"]
        except KeyboardInterrupt:
            record["status"] = "interrupted"
            raise
        except BaseException as exc:
            if was_interrupted():
                record["status"] = "interrupted"
            else:
                record.update(status="failed", error=_first_line(exc))
            raise
        else:
            record["status"] = "done"
        finally:
            record["seconds"] = round(time.perf_counter() - start, 3)
            try:
                self.write()
            except OSError:  # a full disk must not hide the stage's own error
                pass

    def timings(self) -> dict[str, float]:
        return {name: rec.get("seconds", 0.0) for name, rec in self.stages.items()}

    def write(self) -> Path:
        body = {
            "eocausal_manifest": FORMAT,
            "started": self.started,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": self.config,
            "seeds": self.seeds,
            "versions": self._versions,
            "inputs": self.inputs,
            "stages": self.stages,
            "file_hashes": self.file_hashes,
        }
        return atomic_write_text(self.path, json.dumps(body, indent=2, default=str))
