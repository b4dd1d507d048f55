"""The run manifest: what ran, with which settings, inputs and versions, and how it went.

It is rewritten after every stage, so a run that fails half-way still says which stages
finished, what they wrote and how long they took.
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

__all__ = ["Manifest", "package_versions"]

PACKAGES = ("eocausal", "numpy", "pandas", "rasterio", "geopandas", "zarr", "dask", "torch",
            "torchvision", "econml", "scikit-learn", "pyarrow", "pydantic")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a run's numbers."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Manifest:
    """Accumulates stage records and writes ``manifest.json`` into the run directory."""

    run_dir: Path
    config: dict[str, Any]
    seeds: dict[str, int]
    inputs: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def path(self) -> Path:
        return self.run_dir / "manifest.json"

    @contextmanager
    def stage(self, name: str):
        """Time a stage and record its status; outputs go into the yielded dict."""
        record: dict[str, Any] = {"status": "running", "outputs": {}}
        self.stages[name] = record
        self.write()
        start = time.perf_counter()
        try:
            yield record["outputs"]
        except BaseException as exc:
            record.update(status="failed", error=str(exc).splitlines()[0][:500])
            raise
        else:
            record["status"] = "done"
        finally:
            record["seconds"] = round(time.perf_counter() - start, 3)
            self.write()

    def timings(self) -> dict[str, float]:
        return {name: rec.get("seconds", 0.0) for name, rec in self.stages.items()}

    def write(self) -> Path:
        body = {
            "eocausal_manifest": 1,
            "started": self.started,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": self.config,
            "seeds": self.seeds,
            "versions": package_versions(),
            "inputs": self.inputs,
            "stages": self.stages,
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(body, indent=2, default=str))
        tmp.replace(self.path)
        return self.path
