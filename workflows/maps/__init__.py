"""Effect maps: region and grid, prediction per cell, and the map's exports.

``build_map`` is the map stage (the stage layer and ``eocausal map`` call it). Every name
loads on first use, so reading a config (which holds ``MapSettings``) imports neither
matplotlib, scipy, torch nor folium.
"""

from __future__ import annotations

from eocausal.lazy import lazy_exports

_EXPORTS = {
    "aggregate_cells": "aggregate", "aggregate_grid": "aggregate",
    "neighbour_correlation": "aggregate", "MapCells": "cells", "write_cells": "cells",
    "is_cog": "cog", "plot_surface": "cog", "validate_cog": "cog", "write_cog": "cog",
    "write_effect_cog": "cog",
    "CellGrid": "region", "Region": "region", "lay_grid": "region", "read_region": "region",
    "MapSettings": "settings",
    "build_map": "build", "MapResult": "build",
}

__getattr__, __dir__, __all__ = lazy_exports("eocausal.workflows.maps", _EXPORTS)
