"""Batch workflows: config schema, stage runner, dask cluster, maps, and the CLI."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunConfig": "config", "load_config": "config", "config_from_dict": "config",
    "RunResult": "runner", "run_config": "runner",
    "partition_mapper": "cluster",
    "write_cog": "maps", "is_cog": "maps", "plot_surface": "maps",
    "Manifest": "manifest",
    "StudySpec": "simkit", "simulation_grid": "simkit", "run_grid": "simkit",
    "summarise_grid": "simkit", "plot_grid": "simkit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eocausal.workflows' has no attribute '{name}'")
    return getattr(importlib.import_module(f"eocausal.workflows.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
