"""Unit ids and point coordinates read without a GeoDataFrame: what ingestion needs, lean.

A GeoDataFrame of a million points holds a million shapely objects (~210 bytes each) and,
read from GeoParquet, an Arrow buffer pool that stays allocated: about 400 MB before the
first pixel. Cutting chips needs only each unit's id and centre, so for files of points
(GeoParquet, Parquet or CSV with lon/lat) this module streams the two columns in batches,
converts each batch's geometry to coordinates and lets the shapely objects go: ~50 bytes
a unit. The checks are those of :func:`pipeline.units.read_units`, with its messages; any
other file (a GeoPackage, polygons) is read by ``read_units`` as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import shapely
from eocausal.pipeline.unit_checks import (
    TABLE_SUFFIXES,
    UnitColumns,
    check_coordinate_bounds,
    format_rows,
)
from pyproj import CRS

from eocausal.errors import CRSMissingError, InputFileError, MissingColumnError, UnitsError
from eocausal.memory import release_freed_memory

__all__ = ["UnitPoints", "count_unit_rows", "read_unit_points"]

BATCH_ROWS = 65_536  # rows converted at a time: a few MB of shapely objects at most
PARQUET_BUFFER_BYTES = 1 << 20  # read column chunks in 1 MiB pieces, not whole
GEOPARQUET_DEFAULT_CRS = "OGC:CRS84"  # the GeoParquet spec's CRS when "crs" is absent


@dataclass(frozen=True)
class UnitPoints:
    """Ids and point coordinates of validated units, in the file's CRS.

    Ids are kept as UTF-8 bytes (numpy ``S``: a byte an ASCII character, where a numpy
    ``str`` array spends four): at a million ids of eight characters, 8 MB instead of 32.
    ``unit_id`` decodes them all; ``ids(rows)`` decodes only the rows asked for.
    """

    id_bytes: np.ndarray  # (N,) S, UTF-8
    xy: np.ndarray  # (N, 2) float64
    crs: CRS

    @classmethod
    def from_ids(cls, ids: np.ndarray, xy: np.ndarray, crs: CRS) -> UnitPoints:
        """Points from ``str`` ids (encoded here, a slice at a time)."""
        ids = np.asarray(ids, dtype=str)
        parts = [_encoded(ids[s:s + BATCH_ROWS]) for s in range(0, len(ids), BATCH_ROWS)]
        out = np.concatenate(parts) if parts else np.empty(0, dtype="S1")
        return cls(out, xy, crs)

    def __len__(self) -> int:
        return len(self.id_bytes)

    @property
    def unit_id(self) -> np.ndarray:
        """Every id as a numpy ``str`` array (a full copy: use ``ids(rows)`` for a few)."""
        return self.ids(slice(None))

    def ids(self, rows: slice | np.ndarray) -> np.ndarray:
        """The ids of ``rows`` as a numpy ``str`` array."""
        return _decoded(self.id_bytes[rows])

    def centres(self, crs: Any, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Coordinates (N, 2) (or of ``rows``) in ``crs``, reprojected as arrays.

        PROJ transforms each point on its own, so coordinates reprojected a slice at a
        time equal those of one call over every point.
        """
        xy = self.xy if rows is None else self.xy[rows]
        target = CRS.from_user_input(crs)
        if self.crs == target:
            return xy
        from pyproj import Transformer

        transformer = Transformer.from_crs(self.crs, target, always_xy=True)
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))


def _encoded(ids: np.ndarray) -> np.ndarray:
    return np.strings.encode(np.asarray(ids, dtype=str), "utf-8")


def _decoded(ids: np.ndarray) -> np.ndarray:
    if ids.size == 0:
        return np.empty(0, dtype="U1")
    ids = np.ascontiguousarray(ids)
    if (ids.view(np.uint8) < 128).all():  # ASCII (the usual id): a cast, 6x faster than decode
        return ids.astype(f"U{ids.dtype.itemsize}")
    return np.strings.decode(ids, "utf-8")


CSV_SAMPLE_BYTES = 1 << 20  # a table's row count is estimated from its first MiB


def count_unit_rows(path: str | Path) -> int | None:
    """The row count of a units file, read in milliseconds, so that workers can start before
    the units are read and checked.

    Parquet: exact, from the footer. CSV/TSV: estimated from the lines in the first MiB
    (exact for a smaller file). None for other formats (counting a GeoPackage means
    importing pyogrio and pandas, a second) or a file that cannot be read (reading it
    reports why).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.read_metadata(path).num_rows)
        if suffix in TABLE_SUFFIXES:
            size = path.stat().st_size
            with open(path, "rb") as f:
                sample = f.read(CSV_SAMPLE_BYTES)
            lines = sample.count(b"\n") + (not sample.endswith(b"\n") and len(sample) > 0)
            if len(sample) < size:  # extrapolate the sample's line length to the file
                lines = round(lines * size / len(sample))
            return max(lines - 1, 0)  # less the header
    except Exception:  # noqa: BLE001 - the reader raises with the file's own message
        return None
    return None


def read_unit_points(path: str | Path, columns: UnitColumns | None = None) -> UnitPoints | None:
    """Ids and coordinates of a points file, or None when the file needs ``read_units``.

    None for formats other than (Geo)Parquet and CSV/TSV tables, for geometries that are
    not all points, and for GeoParquet not encoded as WKB: the caller then reads the file
    with :func:`pipeline.units.read_units`, which handles every case.

    Raises
    ------
    InputFileError, MissingColumnError, CRSMissingError, UnitsError
        As ``read_units`` does, with the same messages.
    """
    columns = columns or UnitColumns()
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputFileError(f"Units file '{path}' does not exist. Check 'units.path'.")
    if suffix == ".parquet":
        read = _read_parquet(path, columns)
    elif suffix in TABLE_SUFFIXES:
        read = _read_csv(path, columns)
    else:
        return None
    if read is None:
        return None
    release_freed_memory()  # the decode buffers and per-batch objects: tens of MB at 1M rows
    ids, xy, crs = read
    return _validated(ids, xy, crs, str(path), table=suffix in TABLE_SUFFIXES)


def _read_parquet(path: Path, columns: UnitColumns) -> tuple[np.ndarray, np.ndarray, CRS] | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Buffered page reads: by default a row group's column chunks are read whole
        # before the first batch (a million-row group: ~80 MB of decode buffers, measured).
        file = pq.ParquetFile(path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
    except Exception as exc:
        raise InputFileError(f"Units file '{path}' cannot be read as Parquet: {exc}.") from exc
    meta = (file.schema_arrow.metadata or {}).get(b"geo")
    names = file.schema_arrow.names
    if meta is None:  # a plain table: lon/lat columns
        coords = [columns.lon, columns.lat]
        if not all(c in names for c in coords):
            return None  # read_units names the missing columns
        crs = CRS.from_user_input(columns.crs or "EPSG:4326")
        geometry = None
    else:
        geo = json.loads(meta)
        geometry = geo.get("primary_column", "geometry")
        info = geo.get("columns", {}).get(geometry, {})
        if info.get("encoding", "WKB").upper() != "WKB":
            return None
        crs_info = info.get("crs", GEOPARQUET_DEFAULT_CRS)
        if crs_info is None:  # explicitly unknown
            if columns.crs is None:
                raise CRSMissingError(
                    f"Units file '{path}' has no CRS, so units cannot be placed on the imagery. "
                    "Give 'units.crs' in the config (for example EPSG:4326).")
            crs_info = columns.crs
        crs = CRS.from_user_input(crs_info)
        coords = [geometry]
    if columns.id not in names:
        _missing_column(path, columns.id, [n for n in names if n != geometry])
    # Filled in place from the row count: batches joined at the end cost a second copy of
    # every id and coordinate, which glibc then keeps (~45 MB at a million units, measured).
    n = file.metadata.num_rows
    pool = pa.default_memory_pool()
    ids: np.ndarray | None = None
    xy = np.empty((n, 2))
    start = 0
    # One thread: Arrow's decode threads leave ~20 MB in their allocator arenas, for no
    # gain on two small columns.
    for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=[columns.id, *coords],
                                   use_threads=False):
        part = slice(start, start + batch.num_rows)
        pool.release_unused()  # Arrow's allocator keeps each batch's decode buffers otherwise
        ids = _filled(ids, n, part, _arrow_ids(batch.column(0)))
        start = part.stop
        if geometry is None:
            xy[part, 0] = batch.column(1).to_numpy(zero_copy_only=False)
            xy[part, 1] = batch.column(2).to_numpy(zero_copy_only=False)
            continue
        # The WKB as Python bytes: Arrow's to_numpy would import pandas to build the same array.
        wkb = np.empty(batch.num_rows, dtype=object)
        wkb[:] = batch.column(1).to_pylist()
        points = _points(shapely.from_wkb(wkb))
        if points is None:
            return None
        xy[part] = points
    return (ids if ids is not None else np.empty(0, dtype="S1")), xy[:start], crs


def _filled(ids: np.ndarray | None, n: int, part: slice, values: np.ndarray) -> np.ndarray:
    """``values`` written at ``part`` of an (n,) str array, widened if they are longer."""
    if ids is None:
        ids = np.empty(n, dtype=values.dtype)
    elif values.dtype.itemsize > ids.dtype.itemsize:
        ids = ids.astype(values.dtype)
    ids[part] = values
    return ids


def _read_csv(path: Path, columns: UnitColumns) -> tuple[np.ndarray, np.ndarray, CRS] | None:
    import pandas as pd  # here only: a Parquet file's ids and points need no pandas

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        header = pd.read_csv(path, sep=sep, nrows=0).columns.tolist()
    except Exception as exc:
        raise InputFileError(f"Units file '{path}' cannot be read as a table: {exc}.") from exc
    if not all(c in header for c in (columns.lon, columns.lat)):
        return None  # read_units names the missing coordinate columns
    if columns.id not in header:
        _missing_column(path, columns.id, header)
    ids, xy = [], []
    reader = pd.read_csv(path, sep=sep, usecols=[columns.id, columns.lon, columns.lat],
                         chunksize=BATCH_ROWS, dtype={columns.id: object})
    for chunk in reader:
        ids.append(_ids(chunk[columns.id].to_numpy(), chunk[columns.id].isna().to_numpy()))
        xy.append(chunk[[columns.lon, columns.lat]].to_numpy(dtype=float))
    return _joined(ids, xy, CRS.from_user_input(columns.crs or "EPSG:4326"))


def _ids(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """A batch of ids as UTF-8 bytes (numpy ``S``; no Python objects kept).

    A missing id (``missing``: null or NaN) is an empty string here and raises in
    ``_validated``, naming its row (an id that is really empty is refused too, for the same
    reason).
    """
    values = np.asarray(values, dtype=object)
    if missing.any():
        values = values.copy()
        values[missing] = ""
    return _encoded(values.astype(str))


def _arrow_ids(column: Any) -> np.ndarray:
    """A batch of Arrow ids as UTF-8 bytes (numpy ``S``), read from the Arrow buffers.

    Strings and integers (as their decimal text) are copied from the array's offsets and
    bytes in a few numpy passes. Arrow's own ``to_numpy`` makes a Python object of each id
    and imports pandas to do it (1.5 s against 0.17 s at a million ids, measured; its null
    mask and scalars, through numpy, import pandas too). Other types (floats: ``1.0``, as
    ``read_units`` writes them) take that slower road. A missing id (null, NaN) is an empty
    string here, as in ``_ids``.
    """
    import pyarrow as pa

    kind = column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_integer(kind)):
        return _ids(column.to_numpy(zero_copy_only=False),
                    column.is_null(nan_is_null=True).to_numpy(zero_copy_only=False))
    # Integers become their text by a cast (which imports pyarrow.compute, 0.13 s); strings
    # are read as they are, with 32-bit offsets or (large_string) 64-bit ones.
    text = column if not pa.types.is_integer(kind) else column.cast(pa.large_string())
    n = len(text)
    validity, offset_buffer, data_buffer = text.buffers()
    offset_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(offset_buffer, dtype=offset_type)[text.offset:text.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]]
    lengths = np.diff(offsets)
    width = max(int(lengths.max(initial=0)), 1)
    if validity is None and (lengths == width).all():  # one length, no nulls: the bytes as is
        return data.view(f"S{width}").copy()
    out = np.zeros(n * width, dtype=np.uint8)  # each id at the start of its padded slot
    slots = np.repeat(np.arange(0, n * width, width) - (offsets[:-1] - offsets[0]), lengths)
    slots += np.arange(len(data))
    out[slots] = data
    if validity is not None:  # a null's slot may hold bytes: the format leaves them undefined
        bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
        out.reshape(n, width)[bits[text.offset:text.offset + n] == 0] = 0
    return out.view(f"S{width}")


def _points(geoms: np.ndarray) -> np.ndarray | None:
    """(B, 2) coordinates of a batch of points (NaN where empty), or None for other types."""
    types = shapely.get_type_id(geoms)
    if not ((types == 0) | (types == -1)).all():  # -1: missing geometry
        return None
    out = np.full((len(geoms), 2), np.nan)
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    out[present] = shapely.get_coordinates(geoms[present])
    return out


def _joined(ids: list[np.ndarray], xy: list[np.ndarray], crs: CRS
            ) -> tuple[np.ndarray, np.ndarray, CRS]:
    return (np.concatenate(ids) if ids else np.empty(0, dtype="S1"),
            np.concatenate(xy) if xy else np.empty((0, 2)), crs)


def _missing_column(path: Path, name: str, present: list[str]) -> NoReturn:
    raise MissingColumnError(
        f"Units file '{path}' has no column(s) {[name]}; its columns are {present}. "
        "Map them in the config's 'units' section (id, treatment, outcome, covariates).")


def _validated(ids: np.ndarray, xy: np.ndarray, crs: CRS, source: str, *, table: bool
               ) -> UnitPoints:
    """The checks of ``validate_units`` on arrays of UTF-8 ids (``S``) and coordinates."""
    if len(ids) == 0:
        raise UnitsError(f"Units file '{source}' has no units (no rows). Give a file with at "
                         "least one unit.")
    missing = np.flatnonzero(ids == b"")
    if missing.size:
        raise UnitsError(f"Units file '{source}' has missing ids in rows {format_rows(missing)}. "
                         "Every unit needs an id.")
    order = np.argsort(ids)  # introsort: no copy of the ids (mergesort's buffer is ~N ids)
    same = np.zeros(max(len(ids) - 1, 0), dtype=bool)
    for start in range(0, same.size, BATCH_ROWS):  # neighbours compared in slices: no N copies
        stop = min(start + BATCH_ROWS, same.size)
        same[start:stop] = ids[order[start + 1:stop + 1]] == ids[order[start:stop]]
    if same.any():
        rows = np.sort(np.unique(np.concatenate([order[1:][same], order[:-1][same]])))
        raise UnitsError(
            f"Units file '{source}' has duplicate ids: {format_rows(np.unique(ids[rows]))} "
            f"(rows {format_rows(rows)}). Ids must be unique.")
    empty = np.flatnonzero(np.isnan(xy[:, 0]) | np.isnan(xy[:, 1]))
    if empty.size:
        what = "missing coordinates" if table else "empty geometry"
        raise UnitsError(
            f"Units file '{source}' has {what} in rows {format_rows(empty)} "
            f"(unit ids {format_rows(ids[empty])}). Fix or drop them.")
    check_coordinate_bounds(xy, crs, ids, source)
    return UnitPoints(ids, np.ascontiguousarray(xy, dtype=np.float64), crs)
