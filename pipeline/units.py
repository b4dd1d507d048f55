"""Read a study's units (points or polygons with a treatment and an outcome) and check them.

Any vector format GDAL reads (GeoPackage, GeoJSON, Shapefile, FlatGeobuf), GeoParquet, and
plain CSV/Parquet tables with lon/lat columns come out as one GeoDataFrame with canonical
column names (``unit_id``, ``treatment``, ``outcome``, ``group``) so that later stages never
need the study's own names. Every problem is reported with the rows and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from eocausal.pipeline.unit_checks import (
    TABLE_SUFFIXES,
    VECTOR_SUFFIXES,
    UnitColumns,
    check_coordinate_bounds,
    format_rows,
)

from eocausal.errors import CRSMissingError, InputFileError, MissingColumnError, UnitsError

__all__ = ["TABLE_SUFFIXES", "VECTOR_SUFFIXES", "UnitColumns", "check_coordinate_bounds",
           "format_rows", "read_units", "validate_units"]

log = logging.getLogger(__name__)

def _read_table(path: Path, columns: UnitColumns) -> gpd.GeoDataFrame:
    if path.suffix.lower() == ".parquet":
        try:
            return gpd.read_parquet(path)
        except (ValueError, KeyError):
            frame = pd.read_parquet(path)  # a plain table: fall through to lon/lat
    else:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        frame = pd.read_csv(path, sep=sep)
    missing = [c for c in (columns.lon, columns.lat) if c not in frame.columns]
    if missing:
        raise MissingColumnError(
            f"Units table '{path}' has no coordinate column(s) {missing}; its columns are "
            f"{list(frame.columns)}. Name the longitude/latitude columns with 'units.lon' and "
            "'units.lat' in the config."
        )
    bad = frame.index[frame[columns.lon].isna() | frame[columns.lat].isna()]
    if len(bad):
        raise UnitsError(
            f"Units table '{path}' has missing coordinates in rows {format_rows(bad)}. "
            "Fill or drop those rows."
        )
    geometry = gpd.points_from_xy(frame[columns.lon], frame[columns.lat])
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=columns.crs or "EPSG:4326")


def read_units(
    path: str | Path,
    columns: UnitColumns | None = None,
    *,
    require_outcome: bool = True,
) -> gpd.GeoDataFrame:
    """Read and validate a units file.

    Parameters
    ----------
    path : str or Path
        GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet, or CSV/Parquet with lon/lat.
    columns : UnitColumns, optional
        The column map; defaults to ``unit_id``, ``treatment``, ``outcome``.
    require_outcome : bool, default=True
        Whether treatment and outcome must be present (False for units only mapped).

    Returns
    -------
    units : GeoDataFrame
        Columns ``unit_id`` (str), ``treatment``, ``outcome``, ``group`` (when mapped), the
        covariates under their own names, and geometry in the file's CRS.

    Raises
    ------
    InputFileError, MissingColumnError, CRSMissingError, UnitsError
    """
    columns = columns or UnitColumns()
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"Units file '{path}' does not exist. Check 'units.path'.")
    try:
        if path.suffix.lower() in TABLE_SUFFIXES or path.suffix.lower() == ".parquet":
            frame = _read_table(path, columns)
        else:
            frame = gpd.read_file(path)
    except (MissingColumnError, UnitsError):
        raise
    except Exception as exc:  # GDAL/pyogrio/pandas raise many types for unreadable files
        raise InputFileError(
            f"Units file '{path}' cannot be read as a vector or table file: {exc}. "
            "Use GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet or CSV with lon/lat."
        ) from exc
    if frame.crs is None:
        if columns.crs is None:
            raise CRSMissingError(
                f"Units file '{path}' has no CRS, so units cannot be placed on the imagery. "
                "Give 'units.crs' in the config (for example EPSG:4326)."
            )
        frame = frame.set_crs(columns.crs)
    return validate_units(frame, columns, source=str(path), require_outcome=require_outcome)


def validate_units(
    frame: gpd.GeoDataFrame,
    columns: UnitColumns,
    *,
    source: str = "units",
    require_outcome: bool = True,
) -> gpd.GeoDataFrame:
    """Rename mapped columns to canonical names and check ids, values and geometry."""
    wanted = {columns.id: "unit_id"}
    if require_outcome:
        wanted.update({columns.treatment: "treatment", columns.outcome: "outcome"})
    group_is_another_column = columns.group is not None and columns.group in wanted
    if columns.group and not group_is_another_column:
        wanted[columns.group] = "group"
    needed = [c for c in [*wanted, *columns.covariates] if c is not None]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        present = [c for c in frame.columns if c != frame.geometry.name]
        raise MissingColumnError(
            f"Units file '{source}' has no column(s) {missing}; its columns are {present}. "
            "Map them in the config's 'units' section (id, treatment, outcome, covariates)."
        )
    if len(frame) == 0:
        raise UnitsError(f"Units file '{source}' has no units (no rows). Give a file with at "
                         "least one unit.")
    keep = list(dict.fromkeys(c for c in needed if c in frame.columns)) + [frame.geometry.name]
    units = frame[keep].rename(columns={k: v for k, v in wanted.items() if k})
    if group_is_another_column:  # e.g. --group unit_id: each unit is its own group
        units["group"] = frame[columns.group].to_numpy()
    units = units.set_geometry(frame.geometry.name).reset_index(drop=True)

    ids = units["unit_id"]
    if ids.isna().any():
        raise UnitsError(
            f"Units file '{source}' has missing ids in rows {format_rows(units.index[ids.isna()])}. "
            "Every unit needs an id."
        )
    units["unit_id"] = ids.astype(str)
    dupes = units["unit_id"][units["unit_id"].duplicated(keep=False)]
    if len(dupes):
        raise UnitsError(
            f"Units file '{source}' has duplicate ids: {format_rows(pd.Index(dupes.unique()))} "
            f"(rows {format_rows(dupes.index)}). Ids must be unique."
        )
    if require_outcome:
        _check_numeric(units, "treatment", source, columns.treatment)
        _check_numeric(units, "outcome", source, columns.outcome)
    for name in columns.covariates:
        if not pd.api.types.is_numeric_dtype(units[name]):
            raise UnitsError(
                f"Covariate '{name}' in '{source}' is not numeric (dtype {units[name].dtype}). "
                "Encode it as numbers or drop it from 'units.covariates'."
            )
    geom = units.geometry
    bad = units.index[geom.isna() | geom.is_empty]
    if len(bad):
        raise UnitsError(
            f"Units file '{source}' has empty geometry in rows {format_rows(bad)} "
            f"(unit ids {format_rows(pd.Index(units.loc[bad, 'unit_id']))}). Fix or drop them."
        )
    invalid = units.index[~geom.is_valid]
    if len(invalid):
        raise UnitsError(
            f"Units file '{source}' has invalid geometry in rows {format_rows(invalid)}. "
            "Repair it, for example with shapely.make_valid."
        )
    _check_coordinates(units, source)
    return units


def _check_coordinates(units: gpd.GeoDataFrame, source: str) -> None:
    if units.crs is not None:
        check_coordinate_bounds(units.geometry.bounds.to_numpy(dtype=float), units.crs,
                                units["unit_id"].to_numpy(), source)


def _check_numeric(units: pd.DataFrame, name: str, source: str, original: str | None) -> None:
    values = units[name]
    if not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        raise UnitsError(
            f"Column '{original}' ({name}) in '{source}' is not numeric (dtype {values.dtype}). "
            f"Give {name} as numbers (treatment as 0/1)."
        )
    bad = units.index[values.isna() | ~np.isfinite(values.astype(float))]
    if len(bad):
        raise UnitsError(
            f"Column '{original}' ({name}) in '{source}' has missing or infinite values in "
            f"{len(bad)} rows: {format_rows(bad)} (unit ids "
            f"{format_rows(pd.Index(units.loc[bad, 'unit_id']))}). Drop or impute those units."
        )
