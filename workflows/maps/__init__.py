"""Effect maps: region and grid, prediction per cell, and the map's exports.

``build_map`` is the map stage (the stage layer and ``eocausal map`` call it);
``write_cog``, ``is_cog`` and ``plot_surface`` stay importable from here for the runner.
``build_map``/``MapResult`` are imported on first use, so writing a COG never imports torch
or folium.
"""

from typing import Any

from eocausal.workflows.maps.aggregate import aggregate_cells, neighbour_correlation
from eocausal.workflows.maps.cog import (
    is_cog,
    plot_surface,
    validate_cog,
    write_cog,
    write_effect_cog,
)
from eocausal.workflows.maps.region import CellGrid, Region, lay_grid, read_region
from eocausal.workflows.maps.settings import MapSettings

__all__ = ["CellGrid", "MapResult", "MapSettings", "Region", "aggregate_cells", "build_map",
           "is_cog", "lay_grid", "neighbour_correlation", "plot_surface", "read_region",
           "validate_cog", "write_cog", "write_effect_cog"]


def __getattr__(name: str) -> Any:
    if name in ("build_map", "MapResult"):
        from eocausal.workflows.maps import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
