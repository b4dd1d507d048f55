"""Features per unit and period: every date of a tile store encoded on its own.

A panel estimator needs one feature row per unit-period (``unit_id``, ``period``,
``f0000``...), not one per unit: this encodes each date's chips with a single-image encoder
and keeps the rows as a long table. A date on which a unit's chip has too few valid pixels
(clouds, outside the swath) gives no row; it is listed in ``skipped`` with the reason, so
the panel becomes unbalanced rather than fed an empty image. Pixels that are NaN count as
missing here even when the store's ``valid`` mask says otherwise (float rasters whose
nodata is NaN), and NaN-free band statistics are computed when the store's are not finite.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from eocausal.models.features.encode import encode_chips
from eocausal.models.features.io import feature_columns
from eocausal.pipeline.store import TileStore, open_store
from torch import nn

from eocausal.errors import EncoderError

__all__ = ["PanelFeatures", "encode_panel", "split_empty_geometries"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PanelFeatures:
    """Long feature table (``unit_id``, ``period``, ``valid_fraction``, ``f0000``...) and the
    unit-dates left out (``unit_id``, ``period``, ``reason``)."""

    table: pd.DataFrame
    skipped: pd.DataFrame = field(repr=False)

    @property
    def feature_names(self) -> list[str]:
        return [c for c in self.table.columns if c[:1] == "f" and c[1:].isdigit()]


def split_empty_geometries(units: gpd.GeoDataFrame, id_column: str = "unit_id"
                           ) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Keep units with a geometry; list the others (``unit_id``, ``reason``) instead of failing.

    Parcel layers often hold rows whose polygon was never drawn; a panel keeps going
    without them and says which they were (the rows for ``skipped_units.csv``).
    """
    geom = units.geometry
    empty = (geom.isna() | geom.is_empty).to_numpy()
    skipped = pd.DataFrame({"unit_id": units.loc[empty, id_column].astype(str).to_numpy(),
                            "reason": "empty geometry: no polygon to cut a chip from"})
    if empty.any():
        log.warning("%d unit(s) without geometry left out: %s", int(empty.sum()),
                    skipped["unit_id"].tolist()[:10])
    return units.loc[~empty].copy(), skipped


def _band_stats(store: TileStore, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Store band statistics, or NaN-free ones over valid finite pixels when those are NaN."""
    mean, std = np.asarray(store.band_mean, float), np.asarray(store.band_std, float)
    if np.isfinite(mean).all() and np.isfinite(std).all():
        return mean, std
    total = np.zeros(store.n_bands)
    sq, count = np.zeros(store.n_bands), np.zeros(store.n_bands)
    for b in store.iter_batches(batch):
        x = b.chips.astype(np.float64)
        ok = b.valid[:, :, None] & np.isfinite(x)
        total += np.where(ok, x, 0).sum(axis=(0, 1, 3, 4))
        sq += np.where(ok, x * x, 0).sum(axis=(0, 1, 3, 4))
        count += ok.sum(axis=(0, 1, 3, 4))
    mean = total / np.maximum(count, 1)
    return mean, np.sqrt(np.maximum(sq / np.maximum(count, 1) - mean**2, 0))


def encode_panel(
    store: TileStore | str | os.PathLike[str],
    encoder: nn.Module,
    *,
    periods: list[str] | None = None,
    min_valid_fraction: float = 0.5,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> PanelFeatures:
    """Encode every date of a tile store into one feature row per unit and date.

    Parameters
    ----------
    store : TileStore or path
        A store of dated sequences (``chips`` of shape (N, T, C, H, W)).
    encoder : nn.Module
        A single-image encoder (``rcf``, ``resnet18``...), applied to each date's chips.
    periods : list of str, optional
        One period label per store date; default the store's dates (acquisition days). Two
        dates with the same label (two passes in one day) are averaged into one row,
        weighted by their valid pixels.
    min_valid_fraction : float, default=0.5
        A unit-date with a smaller share of valid, finite pixels gets no row.
    batch_size : int, default=256
    device : str, default="auto"

    Returns
    -------
    features : PanelFeatures

    Raises
    ------
    EncoderError
        If ``periods`` does not give one label per date, or no unit-date is usable.
    """
    store = store if isinstance(store, TileStore) else open_store(store)
    dates = list(store.dates)
    labels = [str(d) for d in (dates if periods is None else periods)]
    if len(labels) != store.n_dates:
        raise EncoderError(f"periods has {len(labels)} labels for the store's {store.n_dates} "
                           f"dates ({dates[:3]}...); give one label per date.")
    mean, std = _band_stats(store, batch_size)
    n_features = int(encoder.n_features)
    ids = store.unit_ids
    feats = np.zeros((store.n_units, store.n_dates, n_features), dtype=np.float64)
    frac = np.zeros((store.n_units, store.n_dates))
    for b in store.iter_batches(batch_size):
        rows = slice(b.start, b.start + len(b.unit_ids))
        for t in range(store.n_dates):
            chips = b.chips[:, t]
            ok = b.valid[:, t] & np.isfinite(chips.astype(np.float32)).all(axis=1)
            frac[rows, t] = ok.mean(axis=(1, 2))
            feats[rows, t] = encode_chips(chips, encoder, valid=ok, mean=mean, std=std,
                                          batch_size=batch_size, device=device)
    usable = frac >= min_valid_fraction
    records, skipped = [], []
    for label in dict.fromkeys(labels):
        cols = [t for t, lab in enumerate(labels) if lab == label]
        w = np.where(usable[:, cols], frac[:, cols], 0.0)
        keep = w.sum(axis=1) > 0
        for i in np.flatnonzero(~keep):
            skipped.append({"unit_id": ids[i], "period": label,
                            "reason": f"valid pixels {frac[i, cols].max():.0%} < "
                                      f"{min_valid_fraction:.0%} on this date"})
        if keep.any():
            avg = np.einsum("nt,ntf->nf", w[keep], feats[keep][:, cols]) / w[keep].sum(1)[:, None]
            part = pd.DataFrame(avg.astype(np.float32), columns=feature_columns(n_features))
            part.insert(0, "valid_fraction", frac[keep][:, cols].max(axis=1))
            part.insert(0, "period", label)
            part.insert(0, "unit_id", ids[keep])
            records.append(part)
    if not records:
        raise EncoderError(f"no unit-date of store '{store.path}' has {min_valid_fraction:.0%} "
                           "valid pixels; lower min_valid_fraction or check the imagery's nodata.")
    table = pd.concat(records, ignore_index=True).sort_values(["unit_id", "period"],
                                                              ignore_index=True)
    log.info("panel features: %d unit-periods of %d units, %d unit-dates skipped",
             len(table), store.n_units, len(skipped))
    return PanelFeatures(table=table, skipped=pd.DataFrame(
        skipped, columns=["unit_id", "period", "reason"]))
