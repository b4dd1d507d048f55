"""``MapSettings``: the map stage's options, mounted by the run config as its ``map:`` section.

The same keys are the options of ``eocausal map``; the stage layer passes the validated
value to :func:`eocausal.workflows.maps.build_map`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MapSettings"]


class MapSettings(BaseModel):
    """What to map, where, and at what spacing.

    ``region``: a polygon or point file (GeoPackage, GeoJSON, Shapefile...), a bounding box
    ``"minlon,minlat,maxlon,maxlat"`` (EPSG:4326), or None for the extent of the imagery;
    ``where``: an OGR SQL filter on the region file (``"name = 'Uganda'"``); a point file is
    a list of places: each point is one cell. ``spacing``: cell side in metres in the
    projected CRS chosen for the region (UTM of its centre); None gives about 200 x 200
    cells. ``imagery``: rasters to chip instead of the run's own (new scenes with the same
    bands). ``aggregate``/``by``: polygons to summarise the cells over and their name column.
    ``aggregate_errors``: how the cells' errors inside a polygon are taken to correlate for
    the aggregates' intervals: ``shared`` (fully, the default: valid for any correlation) or
    ``neighbour`` (decaying with grid distance like the predicted surface; narrower, and it
    under-covered in simulation). ``max_cells``: refuse a grid larger than this. ``budget``: places to treat next, a
    count (>= 1) or a share (< 1) of the cells. ``support_quantile``: a cell whose nearest
    trial unit in feature space is farther than this quantile of the trial's own
    nearest-neighbour distances is flagged as extrapolation. ``covariates``: values of the
    model's tabular covariates at the cells (default: the trial's means). ``cells_per_task``:
    cells per chipping task (and store chunk). ``prediction_tasks``: encode+predict tasks,
    each loading the effect model once (default: one per worker of the mapper).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    region: str | None = None
    where: str | None = None
    spacing: float | None = Field(None, gt=0, description="cell side in metres")
    imagery: list[str] | None = None
    aggregate: Path | None = None
    by: str | None = None
    aggregate_errors: Literal["shared", "neighbour"] = "shared"
    max_cells: int = Field(250_000, ge=1)
    budget: float | None = Field(None, gt=0)
    support_quantile: float = Field(0.99, gt=0, le=1)
    covariates: dict[str, float] | None = None
    cells_per_task: int = Field(2048, ge=1)
    prediction_tasks: int | None = Field(None, ge=1)
    batch_size: int = Field(256, ge=1)
    device: str = "auto"
    seed: int = 0
