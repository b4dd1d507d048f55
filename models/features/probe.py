"""Linear probes: how much of a simulated world's latent landscape an encoder's features hold.

If a ridge regression from an encoder's features predicts, out of fold, the latent factors
(built-up, vegetation, water, roads) that the simulator rendered into the pixels and that
drive outcome, treatment and effect, then those features can carry the confounding and the
heterogeneity an estimator needs; if not, no estimator downstream can recover them. Scoring
is out of fold over spatial blocks, so a probe cannot score by remembering neighbours.

:func:`linear_probe` works on any features and targets; :func:`probe_world` simulates a
world, ingests it, encodes it with each encoder and probes every factor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from eocausal.models.features.encode import encode_store
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.units import read_units
from eocausal.simulator.simulate import simulate
from eocausal.simulator.world import FACTOR_NAMES
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from eocausal.errors import EncoderError

__all__ = ["ALPHAS", "linear_probe", "probe_world", "spatial_blocks"]

log = logging.getLogger(__name__)

ALPHAS = np.logspace(-3, 5, 17)


def spatial_blocks(xy: np.ndarray, n_blocks: int = 4) -> np.ndarray:
    """Group label of each point on an ``n_blocks`` x ``n_blocks`` grid over their extent."""
    xy = np.asarray(xy, dtype=np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    cells = np.floor((xy - lo) / np.where(hi > lo, hi - lo, 1.0) * n_blocks)
    cells = np.clip(cells, 0, n_blocks - 1).astype(np.int64)
    return cells[:, 0] * n_blocks + cells[:, 1]


def linear_probe(
    features: np.ndarray | pd.DataFrame,
    targets: np.ndarray | pd.DataFrame,
    *,
    groups: np.ndarray | None = None,
    cv: int = 5,
    alphas: np.ndarray = ALPHAS,
    random_state: int | None = 0,
) -> pd.Series:
    """Out-of-fold R2 of a standardised ridge regression from features to each target.

    The ridge penalty is chosen by efficient leave-one-out inside each training fold
    (``RidgeCV``, one alpha per target), so the held-out fold never picks its own penalty.

    Parameters
    ----------
    features : array-like of shape (N, D)
    targets : array-like of shape (N, K) or (N,)
        A DataFrame's column names name the result.
    groups : ndarray of shape (N,), optional
        Fold by group (``GroupKFold``), for example :func:`spatial_blocks`; else a seeded
        shuffled ``KFold``.
    cv : int, default=5
    alphas : ndarray, default=ALPHAS
        Ridge penalties to choose from.
    random_state : int or None, default=0

    Returns
    -------
    r2 : Series
        One out-of-fold R2 per target.
    """
    x = np.asarray(features, dtype=np.float64)
    names = (list(targets.columns) if isinstance(targets, pd.DataFrame)
             else [f"target_{i}" for i in range(np.atleast_2d(np.asarray(targets).T).shape[0])])
    y = np.asarray(targets, dtype=np.float64).reshape(len(x), -1)
    if x.ndim != 2 or len(x) != len(y) or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise EncoderError(
            f"features (N, D) and targets (N, K) must be finite with the same N. Got shapes "
            f"{x.shape} and {y.shape}."
        )
    folds = (GroupKFold(n_splits=cv).split(x, groups=groups) if groups is not None
             else KFold(cv, shuffle=True, random_state=random_state).split(x))
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=True))
    predicted = cross_val_predict(model, x, y, cv=list(folds)).reshape(y.shape)
    return pd.Series([r2_score(y[:, k], predicted[:, k]) for k in range(y.shape[1])],
                     index=names, name="r2")


def probe_world(
    encoders: Mapping[str, tuple[str, Mapping[str, Any]]],
    workdir: str | os.PathLike[str],
    *,
    world: Mapping[str, Any] | None = None,
    chip_size: int = 32,
    cv: int = 5,
    n_blocks: int = 4,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
) -> pd.DataFrame:
    """Simulate a world, encode it with each encoder, and probe every latent factor.

    Parameters
    ----------
    encoders : dict of label -> (encoder name, options)
        For example ``{"rcf gaussian": ("rcf", {}), "resnet18 random": ("resnet18", {})}``.
    workdir : path
        Where the world and its tile store are written.
    world : dict, optional
        :class:`pipeline.world.WorldSpec` fields, for example ``{"n_units": 1500,
        "n_dates": 3}``; ``chip_size`` is set to the chip size so the factors probed are
        the means over exactly the chip a unit gets.
    chip_size : int, default=32
    cv : int, default=5
        Folds over spatial blocks.
    n_blocks : int, default=4
        Blocks per side of the spatial grid the folds are made of.
    seed : int, default=0
        Seeds the encoders (the world has its own ``seed`` field).

    Returns
    -------
    r2 : DataFrame
        One row per encoder label, one column per factor (``z_built_up`` ...), plus
        ``mean`` and ``n_features``.
    """
    workdir = Path(workdir)
    spec = {**dict(world or {}), "chip_size": chip_size}
    sim = simulate(workdir / "world", **spec)
    units = read_units(sim.units_path)
    result = ingest(units, sim.scene_paths, workdir / "tiles.zarr", chip_size=chip_size)
    truth = pd.read_parquet(sim.truth_path)
    places = pd.DataFrame({"unit_id": units["unit_id"], "_x": units.geometry.x.to_numpy(),
                           "_y": units.geometry.y.to_numpy()})
    factors = [f"z_{name}" for name in FACTOR_NAMES]
    rows = {}
    for label, (name, options) in encoders.items():
        frame = encode_store(result.store_path, name, options=options, seed=seed,
                             batch_size=batch_size, device=device)
        table = frame.merge(truth[["unit_id", *factors]], on="unit_id", how="inner")
        table = table.merge(places, on="unit_id", how="inner")
        xy = table[["_x", "_y"]].to_numpy()
        feature_cols = [c for c in frame.columns if c != "unit_id"]
        r2 = linear_probe(table[feature_cols], table[factors], cv=cv,
                          groups=spatial_blocks(xy, n_blocks), random_state=seed)
        rows[label] = {**r2.to_dict(), "mean": float(r2.mean()),
                       "n_features": len(feature_cols)}
        log.info("probe %s: mean R2 %.3f", label, rows[label]["mean"])
    return pd.DataFrame.from_dict(rows, orient="index")
