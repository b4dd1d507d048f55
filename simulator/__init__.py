"""The synthetic-world simulator: scenes whose pixels carry known causal structure.

Its own subpackage, not part of ingestion: it writes GeoTIFFs and a units file that the
pipeline then reads like any real study's."""

from __future__ import annotations

from eocausal.lazy import lazy_exports

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

__getattr__, __dir__, __all__ = lazy_exports("eocausal.simulator", _EXPORTS)
