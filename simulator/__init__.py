"""The synthetic-world simulator: scenes whose pixels carry known causal structure.

Its own subpackage, not part of ingestion: it writes GeoTIFFs and a units file that the
pipeline then reads like any real study's."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WorldSpec": "world",
    "World": "world",
    "make_world": "world",
    "true_cate_surface": "world",
    "SimulatedWorld": "simulate",
    "simulate": "simulate",
    "write_world": "simulate",
    "PanelSpec": "panel",
    "PanelWorld": "panel",
    "SimulatedPanel": "panel",
    "make_panel": "panel",
    "simulate_panel": "panel",
    "write_panel": "panel",
    "confounded_outcomes": "visibility",
    "degrade_scene": "visibility",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eocausal.simulator' has no attribute '{name}'")
    return getattr(importlib.import_module(f"eocausal.simulator.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
