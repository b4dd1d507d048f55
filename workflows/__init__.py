"""Batch workflows: config schema, stage runner, dask cluster, maps, and the CLI."""

from __future__ import annotations

from eocausal.lazy import lazy_exports

_EXPORTS = {
    "RunConfig": "config", "load_config": "config", "config_from_dict": "config",
    "RunResult": "runner", "run_config": "runner",
    "partition_mapper": "cluster",
    "write_cog": "maps", "is_cog": "maps", "plot_surface": "maps",
    "Manifest": "manifest",
    "RunPaths": "paths", "Stage": "dag", "run_stages": "dag", "StageContext": "context",
    "STAGES": "stages", "RunLock": "lock", "Run": "api", "open_run": "api",
    "StudySpec": "simkit", "simulation_grid": "simkit", "run_grid": "simkit",
    "summarise_grid": "simkit", "plot_grid": "simkit",
}

__getattr__, __dir__, __all__ = lazy_exports("eocausal.workflows", _EXPORTS)
