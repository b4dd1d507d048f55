"""Pre-cut image patches keyed by image id (as the causalimages package ships them).

Some studies come with their imagery already cut: an array of patches with an image key
each, and a unit table whose rows point at a key (many units may share one patch, as in the
Uganda YOP data). They go into the same tile store as chips cut from GeoTIFFs, so encoders
and estimators never need to know where the pixels came from. Patches carry no
georeferencing, so the store's CRS is the units' and its pixel size is unknown (None).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from eocausal.pipeline.imagery import file_sha256
from eocausal.pipeline.ingest import IngestResult, unit_centres
from eocausal.pipeline.store import consolidate, create_store

from eocausal.errors import ConfigError, InputFileError, MissingColumnError

__all__ = ["ingest_patches", "load_patches"]

log = logging.getLogger(__name__)


def load_patches(
    path: str | Path, *, keys: str = "keys", images: str = "images", channels_last: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(keys (K,), patches (K, C, H, W))`` from an ``.npz`` file."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"Patch file '{path}' does not exist. Check 'patches.path'.")
    try:
        with np.load(path) as data:
            missing = [name for name in (keys, images) if name not in data.files]
            if missing:
                raise MissingColumnError(
                    f"Patch file '{path}' has no array(s) {missing}; it holds {data.files}. "
                    "Name the key and image arrays with 'patches.keys' and 'patches.images'."
                )
            key_values, patches = np.asarray(data[keys]), np.asarray(data[images])
    except (OSError, ValueError) as exc:
        raise InputFileError(
            f"Patch file '{path}' cannot be read as an .npz of plain arrays "
            f"({type(exc).__name__}); eocausal never unpickles patch files. Save the patches "
            "with numpy.savez(path, keys=..., images=...).") from exc
    if patches.ndim == 3:
        patches = patches[..., None] if channels_last else patches[:, None]
    if patches.ndim != 4 or len(key_values) != len(patches):
        raise ConfigError(
            f"Patch file '{path}': expected {len(key_values)} images of shape (H, W, C) to "
            f"match the keys, got an array of shape {patches.shape}."
        )
    if channels_last:
        patches = np.moveaxis(patches, -1, 1)
    if len(np.unique(key_values)) != len(key_values):
        raise ConfigError(f"Patch file '{path}' has duplicate image keys.")
    return key_values, np.ascontiguousarray(patches)


def ingest_patches(
    units: gpd.GeoDataFrame,
    patches_path: str | Path,
    out: str | Path,
    *,
    key_column: str = "group",
    keys: str = "keys",
    images: str = "images",
    channels_last: bool = True,
    band_names: Sequence[str] | None = None,
    units_per_chunk: int = 1024,
) -> IngestResult:
    """Write one patch per unit, looked up by the unit's image key, into a tile store.

    Parameters
    ----------
    units : GeoDataFrame
        Validated units with a ``key_column`` holding each unit's image key.
    patches_path : path
        ``.npz`` with a key array and an image array (K, H, W, C) or (K, C, H, W).
    out : path
        The tile store to create (overwritten).
    key_column : str, default="group"
        Column of ``units`` with the image key (``units.group`` in a config maps it there).

    Returns
    -------
    IngestResult
        Units whose key has no patch are listed in ``skipped`` with the key.
    """
    if key_column not in units.columns:
        raise MissingColumnError(
            f"Units have no image-key column '{key_column}'; their columns are "
            f"{[c for c in units.columns if c != units.geometry.name]}. Map the key with "
            "'units.group' (or 'patches.key_column')."
        )
    key_values, patches = load_patches(patches_path, keys=keys, images=images,
                                       channels_last=channels_last)
    position = pd.Series(np.arange(len(key_values)), index=pd.Index(key_values))
    unit_keys = units[key_column].to_numpy()
    found = pd.Index(key_values).get_indexer(unit_keys)
    ids = units["unit_id"].to_numpy(dtype=str)
    skipped = [{"unit_id": uid, "reason": f"no patch for image key {key} in {patches_path}"}
               for uid, key in zip(ids[found < 0], unit_keys[found < 0], strict=True)]
    keep = np.flatnonzero(found >= 0)
    if keep.size == 0:
        raise ConfigError(
            f"No unit's image key (column '{key_column}', e.g. {list(unit_keys[:3])}) matches "
            f"a key of '{patches_path}' (e.g. {list(key_values[:3])}). Check the key column."
        )
    order = keep[np.argsort(unit_keys[keep], kind="stable")]  # units of one patch together
    n_bands, height, width = patches.shape[1:]
    if height != width:
        raise ConfigError(f"Patches must be square for the tile store; got {height}x{width}.")
    names = list(band_names) if band_names else [f"band_{i}" for i in range(1, n_bands + 1)]
    store = create_store(
        out, unit_ids=ids[order], n_dates=1, band_names=names, chip_size=height,
        dtype=patches.dtype, crs=str(units.crs), pixel_size=None, dates=[None],
        centres=unit_centres(units.iloc[order], str(units.crs)),
        sources=[{"path": str(patches_path), "sha256": file_sha256(patches_path),
                  "kind": "patches"}],
        units_per_chunk=units_per_chunk,
        extra_attrs={"source_kind": "patches", "key_column": key_column},
    )
    key_array = store.group.create_array("image_key", shape=(len(order),),
                                         dtype=np.asarray(unit_keys).dtype,
                                         chunks=(max(len(order), 1),),
                                         dimension_names=["unit"])
    key_array[:] = unit_keys[order]
    per_chunk = store.units_per_chunk
    for index, start in enumerate(range(0, len(order), per_chunk)):
        rows = order[start:start + per_chunk]
        chips = patches[position.loc[unit_keys[rows]].to_numpy()][:, None]
        valid = np.ones((len(rows), 1, height, width), dtype=bool)
        store.write_units(start, chips, valid)
        store.write_partition_summary(index, start, valid.mean(axis=(2, 3)), chips, valid)
    flag = store.group.create_array("usable", shape=(len(order),), dtype=bool,
                                    chunks=(max(len(order), 1),), dimension_names=["unit"])
    flag[:] = True
    store.stats_from_partitions()
    consolidate(store)
    log.info("Wrote %d unit patches from %d images", len(order), len(key_values))
    return IngestResult(store.path, len(order), len(order), skipped, 1, 1)
