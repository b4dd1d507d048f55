"""The tile store: one Zarr v3 group holding every unit's chip, validity mask and metadata.

Layout (see DESIGN.md): ``chips`` (unit, time, band, y, x) in the source dtype, ``valid``
(unit, time, y, x) bool, ``unit_id`` (unit,) string and ``centre_xy`` (unit, 2) float64 in
the store CRS. Chips are chunked by whole units so that each writer owns a disjoint region.
Chip centres live in an array rather than a group attribute because a JSON attribute with
100,000 coordinate pairs makes every open slow. ``xarray.open_zarr`` opens the store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from eocausal.errors import ConfigError, InputFileError, OutputPathError

__all__ = ["ChipBatch", "TileStore", "consolidate", "create_store", "open_store"]

log = logging.getLogger(__name__)

CHIP_DIMS = ["unit", "time", "band", "y", "x"]
# LZ4 with bit-shuffling writes imagery about 3x faster than zarr's default zstd for a ~10%
# larger store; ingestion is write-bound once the rasters are in the page cache. Reflectance
# chips still only shrink ~1.4x under it, and writing them raw is ~5x faster again, so chips
# are stored raw by default (``compression="lz4"`` where disk or transfer is what counts);
# validity masks always use it (they shrink ~100x).
CHIP_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
CHIP_COMPRESSION = {None: None, "none": None, "lz4": CHIP_CODEC}
# Writers always fill whole chunks, so zarr's scan for all-fill-value chunks (a full extra
# pass over every chunk) only costs time.
WRITE_CONFIG = {"write_empty_chunks": True}
# Chunk files named ``c.0.0.0.0.0`` in one folder per array, not zarr's default nested
# ``c/0/0/0/0/0``: a 5-D chunk key made four folders per chunk file, and ext4's inode
# allocation for those mkdirs (a scan for recently deleted inodes) took ~9% of an ingest.
CHUNK_KEYS = {"name": "default", "separator": "."}
VALID_DIMS = ["unit", "time", "y", "x"]
INDEX_SLICE_ROWS = 65_536  # ids and centres are written this many units at a time
INDEX_CHUNK_UNITS = 8_192  # units per chunk of the ids and centres (a multiple of chip chunks)


@dataclass(frozen=True)
class ChipBatch:
    """Consecutive units read from a store: ids, pixels (B, T, C, H, W) and masks (B, T, H, W)."""

    start: int
    unit_ids: np.ndarray
    chips: np.ndarray
    valid: np.ndarray


def _as_str(values: np.ndarray) -> np.ndarray:
    """Zarr hands back numpy's variable-width StringDType; callers get plain ``str`` arrays."""
    return np.asarray(values).astype(object).astype(str)


class TileStore:
    """Read and write access to a tile store; open one with :func:`open_store`."""

    def __init__(self, group: zarr.Group, path: Path) -> None:
        self.group = group
        self.path = path
        self._arrays: dict[str, zarr.Array] = {}

    def array(self, name: str) -> zarr.Array:
        """One of the store's arrays, opened once: each open re-reads its metadata file.

        Opened with ``WRITE_CONFIG`` whoever opens it first: zarr takes an array's config when
        it is opened, not when it is written, and without it every chunk write first scans
        the chunk for fill values (``isnan``, compare, boolean copies: several passes and
        fresh temporaries the size of the chunk).
        """
        if name not in self._arrays:
            self._arrays[name] = self.group[name].with_config(WRITE_CONFIG)
        return self._arrays[name]

    def __enter__(self) -> TileStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store's handles (a local zarr store holds none between reads)."""
        store = getattr(self.group, "store", None)
        if store is not None and hasattr(store, "close"):
            store.close()

    def __repr__(self) -> str:
        return f"TileStore('{self.path}', {self.n_units} units)"

    # -- metadata -------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def chips(self) -> zarr.Array:
        return self.array("chips")

    @property
    def valid(self) -> zarr.Array:
        return self.array("valid")

    @property
    def unit_ids(self) -> np.ndarray:
        return _as_str(self.array("unit_id")[:])

    def ids_at(self, rows: np.ndarray) -> np.ndarray:
        """The ids of store rows ``rows`` (reads only the chunks that hold them)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty(0, dtype=str)
        return _as_str(self.array("unit_id").get_orthogonal_selection((rows,)))

    @property
    def centres(self) -> np.ndarray:
        """Chip centres (N, 2) as map x, y in the store CRS."""
        return np.asarray(self.array("centre_xy")[:])

    @property
    def n_units(self) -> int:
        return int(self.chips.shape[0])

    @property
    def n_dates(self) -> int:
        return int(self.chips.shape[1])

    @property
    def n_bands(self) -> int:
        return int(self.chips.shape[2])

    @property
    def chip_size(self) -> int:
        return int(self.chips.shape[3])

    @property
    def units_per_chunk(self) -> int:
        return int(self.chips.chunks[0])

    @property
    def band_names(self) -> list[str]:
        return list(self.group.attrs["band_names"])

    @property
    def dates(self) -> list[str | None]:
        return list(self.group.attrs["dates"])

    @property
    def crs(self) -> str:
        return str(self.group.attrs["crs"])

    @property
    def band_mean(self) -> np.ndarray:
        return self._stat("band_mean")

    @property
    def band_std(self) -> np.ndarray:
        return self._stat("band_std")

    def _stat(self, key: str) -> np.ndarray:
        value = self.group.attrs.get(key)
        if value is None:
            raise ValueError(
                f"Tile store '{self.path}' has no {key}: it was not finalized. "
                "Run the ingestion again to completion."
            )
        return np.asarray(value, dtype=np.float64)

    # -- reading --------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> ChipBatch:
        """Read units ``[start, stop)`` in store order."""
        return ChipBatch(
            start=start,
            unit_ids=_as_str(self.array("unit_id")[start:stop]),
            chips=np.asarray(self.chips[start:stop]),
            valid=np.asarray(self.valid[start:stop]),
        )

    def read_units(self, unit_ids: Sequence[str]) -> ChipBatch:
        """Random access by unit id, returned in the order asked for."""
        index = {uid: i for i, uid in enumerate(self.unit_ids)}
        missing = [u for u in unit_ids if u not in index]
        if missing:
            raise KeyError(f"Units not in tile store '{self.path}': {missing[:5]}")
        rows = np.array([index[u] for u in unit_ids], dtype=np.int64)
        order = np.argsort(rows)
        sorted_rows = rows[order]
        chips = self.chips.get_orthogonal_selection((sorted_rows,))
        valid = self.valid.get_orthogonal_selection((sorted_rows,))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return ChipBatch(-1, np.asarray(unit_ids, dtype=str), chips[inverse], valid[inverse])

    def iter_batches(self, batch_size: int | None = None) -> Iterator[ChipBatch]:
        """Yield consecutive batches; the default batch is one chunk, the cheapest read."""
        step = batch_size or self.units_per_chunk
        for start in range(0, self.n_units, step):
            yield self.read(start, min(start + step, self.n_units))

    # -- writing --------------------------------------------------------------------------
    def write_units(self, start: int, chips: np.ndarray, valid: np.ndarray) -> None:
        """Write rows ``[start, start + len(chips))``; callers own disjoint chunk regions."""
        stop = start + chips.shape[0]
        self.chips[start:stop] = chips
        self.valid[start:stop] = valid

    # -- partitions (resumable ingestion) -------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return -(-self.n_units // self.units_per_chunk)

    def write_partition_summary(self, index: int, start: int, fractions: np.ndarray,
                                chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Record a finished chunk: valid fractions, band sums, then its ``done`` flag;
        return the row written to ``partition_stats`` (band sums and flag, (4, n_bands)).

        The marker is written last, so a chunk whose writer died is never taken as complete.
        """
        self.array("valid_fraction")[start:start + len(fractions)] = fractions.astype(np.float32)
        # One write holds the band sums and the done marker (row 3), so they land together.
        summary = np.ones((4, chips.shape[2]))
        summary[:3] = _band_sums(chips, valid)
        self.array("partition_stats")[index] = summary
        return summary

    def partition_stats(self) -> np.ndarray:
        """Every chunk's band sums and done flag, shape (n_chunks, 4, n_bands); a chunk whose
        file is unreadable (cut short by a kill) reads as all zeros: not done."""
        stats = self.array("partition_stats")
        try:
            return np.asarray(stats[:])
        except Exception:  # a chunk file cut short by a kill: read one by one
            out = np.zeros(stats.shape, dtype=np.float64)
            for i in range(stats.shape[0]):
                try:
                    out[i] = stats[i]
                except Exception:
                    out[i] = 0.0
            return out

    def done_chunks(self) -> np.ndarray:
        """Which chunks were completed; an unreadable flag counts as not done."""
        return self.partition_stats()[:, 3, 0] == 1.0

    def stats_from_partitions(self, stats: np.ndarray | None = None) -> tuple[np.ndarray,
                                                                               np.ndarray]:
        """Band mean and standard deviation over valid pixels, from the chunks' band sums
        (``stats``: :meth:`partition_stats` when the caller has read it already)."""
        stats = self.partition_stats() if stats is None else stats
        return self._store_stats(stats[:, :3].sum(axis=0))

    def _store_stats(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total, total_sq, count = sums
        safe = np.maximum(count, 1.0)
        mean = np.where(count > 0, total / safe, 0.0)
        std = np.sqrt(np.maximum(total_sq / safe - mean**2, 0.0))
        std[(std == 0) | (count == 0)] = 1.0
        self.group.attrs.update({"band_mean": mean.tolist(), "band_std": std.tolist()})
        return mean, std

    def finalize_stats(self, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Compute per-band mean and standard deviation over valid pixels in one streaming pass.

        Encoders normalise with these; float64 sums keep the pass exact enough for uint16
        reflectance over millions of pixels.
        """
        sums = np.zeros((3, self.n_bands))
        for batch in self.iter_batches(batch_size):
            sums += _band_sums(batch.chips, batch.valid)
        return self._store_stats(sums)


STATS_STRIDE = 4  # band statistics sample every 4th pixel along y and x


def _band_sums(chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-band sum, sum of squares and count of valid pixels, shape (3, C), in float64.

    Pixels are sampled on a regular 1-in-``STATS_STRIDE`` grid along y and x: the mean and
    standard deviation that encoders normalise with do not need every pixel, and the full
    pass cost as much as reading the chips.
    """
    sample = chips[..., ::STATS_STRIDE, ::STATS_STRIDE].astype(np.float64)
    mask = valid[:, :, None, ::STATS_STRIDE, ::STATS_STRIDE]
    if not mask.all():
        sample = sample * mask
    counts = np.broadcast_to(mask, sample.shape).sum(axis=(0, 1, 3, 4)).astype(np.float64)
    return np.stack([sample.sum(axis=(0, 1, 3, 4)),
                     np.einsum("ntchw,ntchw->c", sample, sample), counts])


def consolidate(store: TileStore) -> None:
    """Write consolidated metadata so ``xarray.open_zarr`` opens the store in one read.

    Call it last: attributes changed afterwards are not seen by consolidated readers.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns that v3 consolidation is not yet in the spec
        zarr.consolidate_metadata(str(store.path), zarr_format=3)


def is_tile_store(path: Path) -> bool:
    """Whether ``path`` is a tile store this package wrote (so it may be replaced)."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes") or {}
    except (OSError, ValueError):
        return False
    return "band_names" in attrs and "chip_size" in attrs and (path / "chips").is_dir()


def check_replaceable(path: Path) -> None:
    """Refuse to overwrite anything at ``path`` but an empty folder or one of our stores.

    Writing a store replaces what is at its path; a user's folder that happens to sit there
    (another project's ``tiles.zarr``, a thesis) must never be deleted.
    """
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputPathError(f"Output path '{path}' is a file or a link, not a tile store; "
                              "give a new path with --out.")
    if path.is_dir() and any(path.iterdir()) and not is_tile_store(path):
        raise OutputPathError(
            f"Output path '{path}' holds files that are not an eocausal tile store; refusing to "
            "replace them. Give a new path with --out (or remove the folder yourself).")


def create_store(
    path: str | Path,
    *,
    unit_ids: Sequence[str] | np.ndarray,
    n_dates: int,
    band_names: Sequence[str],
    chip_size: int,
    dtype: str | np.dtype,
    crs: str,
    pixel_size: float | tuple[float, float] | None,
    dates: Sequence[str | None],
    centres: Sequence[Any] | np.ndarray,
    sources: Sequence[dict[str, Any]] = (),
    units_per_chunk: int = 1024,
    nodata: float | None = None,
    extra_attrs: dict[str, Any] | None = None,
    compression: str | None = None,
) -> TileStore:
    """Create an empty tile store for ``len(unit_ids)`` units, overwriting ``path``.

    Parameters
    ----------
    unit_ids : sequence of str
        Unit keys in store order: an array, or any sequence whose slices are arrays
        (read a slice at a time, so a lazily gathered column is never held whole).
    n_dates, band_names, chip_size, dtype
        Shape and pixel type of ``chips`` (N, n_dates, len(band_names), chip_size, chip_size).
    crs, pixel_size, dates, sources, nodata
        Recorded as group attributes so readers know where the pixels came from.
    centres : ndarray of shape (N, 2), or a sequence sliced like ``unit_ids``
        Chip centres as map coordinates in ``crs``.
    units_per_chunk : int, default=1024
        Units per chunk; a writer owns whole chunks.
    compression : {None, "lz4"}, default=None
        Codec of ``chips``: raw (fastest to write and read) or LZ4 + bit-shuffle (~1.4x
        smaller for reflectance, ~5x slower to write).
    """
    if compression not in CHIP_COMPRESSION:
        raise ConfigError(f"Chip compression must be one of {sorted(map(str, CHIP_COMPRESSION))}"
                          f". Got {compression!r} instead.")
    n_units = len(unit_ids)
    n_bands = len(band_names)
    per_chunk = max(1, min(units_per_chunk, max(n_units, 1)))
    final = Path(path)
    check_replaceable(final)
    # Built in a staging folder and renamed into place once its metadata is complete: a
    # process killed half-way through leaves only the staging folder (ours by name, removed
    # by the next attempt), never a half-made store that looks like a stranger's folder.
    staging = staging_path(final)
    if staging.exists():
        shutil.rmtree(staging)
    group = zarr.open_group(str(staging), mode="w", zarr_format=3)
    group.create_array(
        "chips",
        shape=(n_units, n_dates, n_bands, chip_size, chip_size),
        chunks=(per_chunk, n_dates, n_bands, chip_size, chip_size),
        dtype=np.dtype(dtype),
        fill_value=0,
        compressors=CHIP_COMPRESSION[compression],
        config=WRITE_CONFIG,
        chunk_key_encoding=CHUNK_KEYS,
        dimension_names=CHIP_DIMS,
    )
    group.create_array(
        "valid",
        shape=(n_units, n_dates, chip_size, chip_size),
        chunks=(per_chunk, n_dates, chip_size, chip_size),
        dtype=bool,
        fill_value=False,
        compressors=CHIP_CODEC,
        config=WRITE_CONFIG,
        chunk_key_encoding=CHUNK_KEYS,
        dimension_names=VALID_DIMS,
    )
    # Ids and centres are written here, once, by one process, so their chunks need not
    # match the writers' chip chunks: ~8,000 units a chunk write 5x faster than one file per
    # chip chunk (zarr's per-chunk cost; 0.32 against 0.07 s at 100,000 units) and add
    # ~1 ms to reading one chip chunk's ids.
    index_chunk = per_chunk * max(1, INDEX_CHUNK_UNITS // per_chunk)
    ids = group.create_array(
        "unit_id", shape=(n_units,), chunks=(index_chunk,), dtype=str,
        chunk_key_encoding=CHUNK_KEYS, dimension_names=["unit"],
    )
    xy = group.create_array(
        "centre_xy", shape=(n_units, 2), chunks=(index_chunk, 2), dtype="float64",
        chunk_key_encoding=CHUNK_KEYS, dimension_names=["unit", "xy"],
    )
    # Written a slice of whole chunks at a time: the columns may be gathered lazily
    # (pipeline.plan.Gathered), and zarr converts each slice of ids to its string encoding.
    step = index_chunk * max(1, INDEX_SLICE_ROWS // index_chunk)
    for start in range(0, n_units, step):
        stop = min(start + step, n_units)
        ids[start:stop] = np.asarray(unit_ids[start:stop], dtype=str)
        xy[start:stop] = np.asarray(centres[start:stop], dtype=np.float64).reshape(-1, 2)
    group.create_array("valid_fraction", shape=(n_units, n_dates), chunks=(per_chunk, n_dates),
                       dtype="float32", fill_value=0.0, chunk_key_encoding=CHUNK_KEYS,
                       dimension_names=["unit", "time"])
    n_chunks = -(-n_units // per_chunk)
    # Per chunk: band sum, sum of squares, valid count, and a done marker (all ones).
    group.create_array("partition_stats", shape=(n_chunks, 4, n_bands), chunks=(1, 4, n_bands),
                       dtype="float64", fill_value=0.0, chunk_key_encoding=CHUNK_KEYS,
                       dimension_names=["chunk", "statistic", "band"])
    if pixel_size is None:
        px = None
    elif isinstance(pixel_size, (tuple, list)):
        px = [float(pixel_size[0]), float(pixel_size[1])]
    else:
        px = [float(pixel_size), float(pixel_size)]
    group.attrs.update(
        {
            "crs": crs,
            "pixel_size": px,
            "chip_size": int(chip_size),
            "band_names": list(band_names),
            "dates": list(dates),
            "nodata": nodata,
            "sources": json.loads(json.dumps(list(sources), default=str)),
            "layout": {"chips": CHIP_DIMS, "valid": VALID_DIMS, "units_per_chunk": per_chunk,
                       "compression": compression or "none"},
            "band_mean": None,
            "band_std": None,
            **(extra_attrs or {}),
        }
    )
    if final.exists():  # checked replaceable above
        shutil.rmtree(final)
    os.replace(staging, final)
    return open_store(final)


def staging_path(path: Path) -> Path:
    """Where ``create_store`` builds the store at ``path`` before renaming it into place."""
    return path.with_name(f".{path.name}.creating")


def open_store(path: str | Path) -> TileStore:
    """Open an existing tile store for reading and writing."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputFileError(
            f"No tile store at '{path}' (missing zarr.json). Run 'eocausal ingest' to create it."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)
    return TileStore(group, path)
