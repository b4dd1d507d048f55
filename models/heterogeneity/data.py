"""Build the model's inputs from a units table and a tile store or a features table.

Frozen features (a ``features.parquet``) give the ``features`` encoder; without them the
chips of the tile store, normalised with the store's band statistics, feed the ``cnn``
encoder. Units and images are joined on the unit id; units without an image are dropped and
counted, and a store that shares no id with the units is a user's mistake.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from eocausal.models.features.loader import normalize_chips
from eocausal.models.heterogeneity.fit import ClusterInputs, make_inputs
from eocausal.pipeline.store import TileStore, open_store

from eocausal.errors import ConfigError, MissingColumnError

__all__ = ["load_inputs", "read_store_chips"]

log = logging.getLogger(__name__)


def read_store_chips(store: TileStore, unit_ids: Sequence[str]) -> np.ndarray:
    """Normalised chips (N, T, C, H, W) float32 of ``unit_ids``; invalid pixels become 0."""
    batch = store.read_units(list(unit_ids))
    n, t, c, h, w = batch.chips.shape
    flat = normalize_chips(batch.chips.reshape(n * t, c, h, w), store.band_mean, store.band_std,
                           batch.valid.reshape(n * t, h, w))
    return flat.reshape(n, t, c, h, w)


def _examples(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in list(values)[:3])


def load_inputs(units: pd.DataFrame, *, store: TileStore | str | Path | None = None,
                features: pd.DataFrame | None = None, id_column: str = "unit_id",
                features_id: str | None = None, treatment: str = "treatment",
                outcome: str = "outcome", covariates: Sequence[str] = (),
                group_column: str | None = None, units_name: str = "units") -> ClusterInputs:
    """Join units with their images (features if given, else store chips) into model inputs.

    Parameters
    ----------
    units : DataFrame
        One row per unit: id, treatment, outcome, covariates, optional group column.
    store : TileStore or path, optional
        The tile store; its chips feed the ``cnn`` encoder when ``features`` is None.
    features : DataFrame, optional
        ``features_id`` (default ``id_column``) plus numeric feature columns.
    units_name : str, default="units"
        How messages name the units table (its file name).

    Raises
    ------
    MissingColumnError
        If a named column is absent.
    ConfigError
        If neither images source is given, or the units and images share no id.
    """
    if store is None and features is None:
        raise ConfigError("the cluster model needs images: give a tile store (--store) or a "
                          "features table (--features).")
    needed = [id_column, treatment, outcome, *covariates, *([group_column] if group_column else [])]
    absent = [c for c in needed if c not in units.columns]
    if absent:
        raise MissingColumnError(f"'{units_name}' has no column {', '.join(map(repr, absent))} "
                                 f"(columns: {', '.join(map(str, list(units.columns)[:12]))}); "
                                 "name the right one with --id-column/--treatment/--outcome/"
                                 "--covariates/--group-column.")
    ids = units[id_column].astype(str).to_numpy()
    band_names: list[str] = []
    dates: list[str | None] = []
    if features is not None:
        fid = features_id or id_column
        if fid not in features.columns:
            raise MissingColumnError(f"the features table has no id column {fid!r}; name it "
                                     "with --features-id.")
        cols = [c for c in features.columns if c != fid and pd.api.types.is_numeric_dtype(features[c])]
        table = features.assign(**{fid: features[fid].astype(str)}).set_index(fid)[cols]
        image_ids, source = table.index.to_numpy(), "features table"
    else:
        store = store if isinstance(store, TileStore) else open_store(store)
        image_ids, source = store.unit_ids, f"tile store '{store.path}'"
        band_names, dates = store.band_names, store.dates
    keep = np.isin(ids, image_ids)
    if not keep.any():
        raise ConfigError(
            f"'{units_name}' and the {source} share no unit id (units: {_examples(ids)}; "
            f"images: {_examples(image_ids)}). Check --id-column, or ingest these units.")
    if (~keep).any():
        log.warning("%d of %d units have no image in the %s and are left out (e.g. %s)",
                    int((~keep).sum()), len(ids), source, _examples(ids[~keep]))
    rows = units.loc[keep]
    kept = ids[keep]
    if features is not None:
        images = table.loc[kept].to_numpy(np.float32)
    else:
        images = read_store_chips(store, kept)
    return make_inputs(kept, images, rows[treatment].to_numpy(float),
                       rows[outcome].to_numpy(float),
                       covariates=rows[list(covariates)].to_numpy(float) if covariates else None,
                       groups=rows[group_column].to_numpy() if group_column else None,
                       band_names=band_names, dates=dates)
