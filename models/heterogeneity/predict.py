"""Posterior predictive effects at new places: any tile store or features table.

Per place, the predictive mean and 95% interval of the effect tau (the mixture over clusters
of Normal(mu_k, sigma_k^2), with posterior uncertainty) and the cluster probabilities with
their 2.5% / 97.5% bounds: what the map stage draws where no trial ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from eocausal.models.heterogeneity.fit import ClusterModel
from eocausal.models.heterogeneity.train import place_table
from eocausal.pipeline.store import TileStore, open_store

from eocausal.errors import ConfigError

__all__ = ["predict_places"]


def predict_places(model: ClusterModel, source: TileStore | str | Path | pd.DataFrame, *,
                   id_column: str = "unit_id", batch_size: int = 1024, n_draws: int | None = None,
                   seed: int = 0) -> pd.DataFrame:
    """Predictive effects and cluster probabilities at every place of ``source``.

    Parameters
    ----------
    model : ClusterModel
        ``ClusterResult.model`` (fitted on every unit of the trial).
    source : TileStore, path or DataFrame
        A tile store for a ``cnn`` model (read in batches, so memory stays flat), or a
        features table (``id_column`` + the training feature columns) for a ``features`` one.
    batch_size : int, default=1024
        Places per store read.

    Returns
    -------
    places : DataFrame
        ``unit_id``, ``p_cluster_1..K`` (+ ``_lo``/``_hi``), ``cluster``, ``tau_mean``,
        ``tau_lo``, ``tau_hi``.

    Raises
    ------
    ConfigError
        If the source does not match the model's encoder.
    """
    from eocausal.models.heterogeneity.data import read_store_chips

    if isinstance(source, pd.DataFrame):
        if model.encoder != "features":
            raise ConfigError("this cluster model was trained on chips: predict from a tile "
                              "store, not a features table.")
        if id_column not in source.columns:
            raise ConfigError(f"the features table has no id column {id_column!r}.")
        x = source.drop(columns=[id_column]).select_dtypes("number").to_numpy(np.float32)
        if x.shape[1] != model.x_mean.shape[0]:
            raise ConfigError(f"the features table has {x.shape[1]} feature columns but the "
                              f"model was trained on {model.x_mean.shape[0]}; encode the new "
                              "places with the same encoder.")
        return place_table(source[id_column].to_numpy(), model.draws(x, n_draws=n_draws, seed=seed))
    if model.encoder != "cnn":
        raise ConfigError("this cluster model was trained on a features table: encode the "
                          "new places with the same encoder and pass that table instead.")
    store = source if isinstance(source, TileStore) else open_store(source)
    ids = store.unit_ids
    parts = []
    for i, start in enumerate(range(0, len(ids), batch_size)):
        batch_ids = ids[start:start + batch_size]
        chips = read_store_chips(store, batch_ids)
        parts.append(place_table(batch_ids, model.draws(chips, n_draws=n_draws, seed=seed + i)))
    return pd.concat(parts, ignore_index=True)
