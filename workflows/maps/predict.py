"""Predict the effect, its interval and the trial's support at every cell, in parallel parts.

The run's encoder is rebuilt from ``features.parquet``'s metadata and the study's tile store
(``prepare_encoder`` refits rcf filters exactly as the encode stage did) and checked: it must
reproduce the stored features of the first trial units, or the run directory was made with
another encoder. Cells are chipped with :func:`eocausal.pipeline.ingest.ingest` into
``maps/grid_tiles.zarr``; then each :class:`PredictTask` encodes a range of whole chunks,
predicts CATE with its interval from the saved :class:`EffectModel`, measures the distance
to the nearest trial unit in the model's reduced feature space, and writes its own parquet
part, so a task holds one chunk of chips at a time and returns only a path.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from eocausal.models.effects.estimate import EffectModel
from eocausal.models.features.encode import encode_range, prepare_encoder
from eocausal.models.features.io import read_features
from eocausal.models.features.parts import plan_parts
from eocausal.pipeline.store import TileStore, open_store
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.stages.clusters import load_cluster_model
from eocausal.workflows.stages.estimate import verify_model_file
from sklearn.neighbors import NearestNeighbors
from torch import nn

from eocausal.errors import ConfigError, EncoderError, InputFileError

__all__ = ["CLUSTER_COLUMNS", "PredictTask", "RunModel", "covariate_means", "load_run_model",
           "predict_cells", "predict_cluster_cells", "predict_part", "predict_range", "reduce_features",
           "support_reference"]

log = logging.getLogger(__name__)

N_CHECK = 16  # trial units re-encoded to prove the rebuilt encoder is the run's


@dataclass
class RunModel:
    """What the map stage reuses from a run: study store, encoder, effect model, statistics."""

    store: TileStore
    encoder: nn.Module
    model: EffectModel
    metadata: dict[str, Any]
    features: pd.DataFrame
    clusters: Any = None  # the clusters stage's ClusterModel, when the run fitted one

    @property
    def band_names(self) -> list[str]:
        return list(self.metadata["band_names"])

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.metadata["band_mean"], dtype=np.float64)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.metadata["band_std"], dtype=np.float64)


def _encoder_options(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (settings.get("options") or {}).items() if k != "in_channels"}


def load_run_model(paths: RunPaths, *, device: str = "auto") -> RunModel:
    """Rebuild the run's encoder and load its effect model, refusing a mixed-up run directory.

    Raises
    ------
    InputFileError
        If the run has no tile store, features or estimator (run the earlier stages).
    EncoderError
        If the features were made from other bands than the store's, by another encoder
        than the one the metadata names, or the estimator was fitted on other features.
    """
    for path, stage in ((paths.tiles, "ingest"), (paths.features, "encode"),
                        (paths.estimator, "estimate")):
        if not Path(path).exists():
            raise InputFileError(f"Run directory '{paths.root}' has no {Path(path).name}; run "
                                 f"the {stage} stage first ('eocausal run' or 'eocausal {stage}').")
    store = open_store(paths.tiles)
    features, metadata = read_features(paths.features)
    settings = metadata.get("encoder") or {}
    if list(metadata.get("band_names", [])) != store.band_names:
        raise EncoderError(
            f"'{paths.features}' was encoded from bands {metadata.get('band_names')} but the "
            f"tile store '{paths.tiles}' holds bands {store.band_names}: the run directory mixes "
            "two studies. Encode the store again ('eocausal encode') before mapping."
        )
    encoder = prepare_encoder(store, settings["name"], options=_encoder_options(settings),
                              seed=(settings.get("options") or {}).get("seed", 0))
    verify_model_file(paths)  # a pickle: only the file this run's estimate stage wrote
    model = EffectModel.load(paths.estimator)
    if model.n_features_in_ != encoder.n_features:
        raise EncoderError(
            f"The estimator '{paths.estimator}' was fitted on {model.n_features_in_} features "
            f"but the run's encoder {settings['name']!r} gives {encoder.n_features}: it was made "
            "with another encoder. Run the estimate stage again on this run's features."
        )
    run = RunModel(store, encoder, model, metadata, features, load_cluster_model(paths))
    _check_encoder(run, device)
    return run


def _check_encoder(run: RunModel, device: str) -> None:
    stop = min(N_CHECK, run.store.n_units)
    ids, x = encode_range(run.store, run.encoder, mean=run.mean, std=run.std, stop=stop,
                          batch_size=max(stop, 1), device=device, log_dates=False)
    stored = run.features.set_index("unit_id").reindex(ids)
    cols = [c for c in run.features.columns if c != "unit_id"]
    if stored[cols].isna().any().any() or len(cols) != x.shape[1] or not np.allclose(
            stored[cols].to_numpy(dtype=np.float32), x, rtol=1e-3, atol=1e-4):
        raise EncoderError(
            f"The encoder rebuilt from '{run.metadata.get('store')}' metadata "
            f"({run.metadata['encoder'].get('name')!r}) does not reproduce the stored features "
            f"of units {list(ids[:3])}: features.parquet was made with another encoder or "
            "store. Run the encode and estimate stages again."
        )


def support_reference(run: RunModel, unit_ids: Iterable[str] | None = None,
                      quantile: float = 0.99) -> tuple[np.ndarray, float]:
    """The trial's units in the model's reduced feature space, and the support threshold.

    The threshold is the ``quantile`` of each trial unit's distance to its nearest other
    trial unit: a cell farther than that from every trial unit lies outside what the trial
    covers, and its predicted effect is an extrapolation.
    """
    frame = run.features
    if unit_ids is not None:
        frame = frame[frame["unit_id"].isin(set(unit_ids))]
    cols = [c for c in frame.columns if c != "unit_id"]
    reference = reduce_features(run.model, frame[cols].to_numpy(dtype=np.float64))
    k = min(2, len(reference))
    dist, _ = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(reference)
    threshold = float(np.quantile(dist[:, k - 1], quantile))
    return reference, threshold


def reduce_features(model: EffectModel, features: np.ndarray) -> np.ndarray:
    """Features as the effect model sees them: standardised, then PCA-reduced when it was."""
    x = model.scaler_.transform(features)
    return x if model.pca_ is None else model.pca_.transform(x)


@dataclass(frozen=True)
class PredictTask:
    """Everything one worker needs to predict store cells ``[start, stop)`` into a part."""

    store_path: str
    start: int
    stop: int
    encoder_path: str
    model_path: str
    reference_path: str
    part_path: str
    covariates: tuple[tuple[str, float], ...] | None
    batch_size: int
    device: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clusters_path: str | None = None
    units_per_chunk: int = 0
    seed: int = 0


CLUSTER_COLUMNS = ("cluster", "tau_cluster", "tau_cluster_lo", "tau_cluster_hi")


def predict_cluster_cells(clusters: Any, store: TileStore, ids: np.ndarray, feats: np.ndarray,
                          *, start: int, units_per_chunk: int, seed: int = 0) -> pd.DataFrame:
    """Cluster probabilities and the cluster model's predictive effect at cells ``ids``.

    Calls :func:`eocausal.models.heterogeneity.predict.predict_places` once per store chunk
    with seed ``seed + chunk index``, so a cell's values do not depend on how the cells were
    split into tasks. A ``features`` model takes the cells' features (the run's encoder, as
    the clusters stage used); a ``cnn`` model the cells' chips from the grid store.

    Returns
    -------
    DataFrame
        ``p_cluster_1..K``, ``cluster`` (most probable), ``tau_cluster``, ``tau_cluster_lo``,
        ``tau_cluster_hi`` (posterior predictive mean and 95% interval), one row per id.
    """
    from eocausal.models.heterogeneity.data import read_store_chips
    from eocausal.models.heterogeneity.predict import predict_places
    from eocausal.models.heterogeneity.train import place_table

    step = max(1, units_per_chunk or len(ids))
    parts = []
    for lo in range(0, len(ids), step):
        chunk = (start + lo) // step
        batch = ids[lo:lo + step]
        if clusters.encoder == "features":
            table = pd.DataFrame(feats[lo:lo + step],
                                 columns=[f"f{i}" for i in range(feats.shape[1])])
            table.insert(0, "unit_id", batch)
            places = predict_places(clusters, table, seed=seed + chunk)
        else:
            draws = clusters.draws(read_store_chips(store, batch), seed=seed + chunk)
            places = place_table(batch, draws)
        parts.append(places)
    places = pd.concat(parts, ignore_index=True)
    keep = [f"p_cluster_{k}" for k in range(1, clusters.n_clusters + 1)]
    out = places[keep + ["cluster"]].copy()
    out["tau_cluster"] = places["tau_mean"].to_numpy()
    out["tau_cluster_lo"] = places["tau_lo"].to_numpy()
    out["tau_cluster_hi"] = places["tau_hi"].to_numpy()
    return out


def predict_range(store: TileStore, start: int, stop: int, *, encoder: nn.Module,
                  model: EffectModel, neighbours: NearestNeighbors,
                  covariates: tuple[tuple[str, float], ...] | None, mean: np.ndarray,
                  std: np.ndarray, batch_size: int, device: str, clusters: Any = None,
                  units_per_chunk: int = 0, seed: int = 0) -> pd.DataFrame:
    """Encode cells ``[start, stop)`` of a grid store, predict their effect and support, and
    the cluster model's probabilities and effect when ``clusters`` is given."""
    ids, feats = encode_range(store, encoder, mean=mean, std=std, start=start, stop=stop,
                              batch_size=batch_size, device=device, log_dates=False)
    usable = np.asarray(store.group["usable"][start:stop])
    columns = model.feature_names_in_ or [f"f{i}" for i in range(feats.shape[1])]
    frame = pd.DataFrame(feats, columns=columns)
    cov = None
    if covariates is not None:
        cov = pd.DataFrame({name: np.full(len(frame), value) for name, value in covariates})
    with warnings.catch_warnings():
        # On a dask worker (a daemon process) econml's forest falls back to one job and warns
        # once per task; one job per worker process is what a cluster wants anyway.
        warnings.filterwarnings("ignore", message="Inside a Dask worker", category=UserWarning)
        cate, lo, hi = model.predict_cate(frame, cov)
    dist, _ = neighbours.kneighbors(reduce_features(model, feats.astype(np.float64)))
    out = pd.DataFrame({"unit_id": ids, "usable": usable, "cate": cate, "cate_lo": lo,
                        "cate_hi": hi, "support_distance": dist[:, 0]})
    if clusters is not None:
        part = predict_cluster_cells(clusters, store, np.asarray(ids), feats, start=start,
                                     units_per_chunk=units_per_chunk or store.units_per_chunk,
                                     seed=seed)
        out = pd.concat([out, part], axis=1)
    return out


def predict_part(task: PredictTask) -> tuple[str, int]:
    """One task on a worker: load encoder, model and reference, predict a range chunk by
    chunk, and write each chunk as a row group of the task's part (one chunk in memory)."""
    store = open_store(task.store_path)
    encoder = torch.load(task.encoder_path, map_location="cpu", weights_only=False)
    with np.load(task.reference_path) as ref:
        neighbours = NearestNeighbors(n_neighbors=1).fit(ref["reference"])
    clusters = (None if task.clusters_path is None else
                torch.load(task.clusters_path, map_location="cpu", weights_only=False))
    model = EffectModel.load(task.model_path)
    step = task.units_per_chunk or store.units_per_chunk
    tmp = Path(task.part_path).with_name(f".{Path(task.part_path).name}.tmp")
    writer, n_rows = None, 0
    try:
        for start in range(task.start, task.stop, step):
            out = predict_range(store, start, min(start + step, task.stop), encoder=encoder,
                                model=model, neighbours=neighbours, covariates=task.covariates,
                                mean=np.asarray(task.mean), std=np.asarray(task.std),
                                batch_size=task.batch_size, device=task.device,
                                clusters=clusters, units_per_chunk=step, seed=task.seed)
            table = pa.Table.from_pandas(out, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
            n_rows += len(out)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, task.part_path)
    return task.part_path, n_rows


def covariate_means(paths: RunPaths, model: EffectModel,
                    given: dict[str, float] | None = None) -> dict[str, float] | None:
    """Values of the tabular covariates at cells: given ones, else the trial's means.

    Tabular covariates are unknown off the trial, so every cell gets the trial's mean (read
    from the units file the manifest names).
    """
    if not model.n_covariates_:
        return None
    names = model.covariate_names_ or [f"x{i}" for i in range(model.n_covariates_)]
    values = dict(given or {})
    missing = [n for n in names if n not in values]
    if missing:
        units_path = None
        if paths.manifest.exists():
            config = json.loads(paths.manifest.read_text()).get("config", {})
            units_path = (config.get("units") or {}).get("path")
        if not units_path or not Path(units_path).exists():
            raise ConfigError(
                f"The effect model uses covariates {names} but the run's units file is not "
                f"known from '{paths.manifest}'; give their values at the cells ('covariates')."
            )
        import geopandas as gpd

        table = gpd.read_file(units_path) if not str(units_path).endswith((".csv", ".parquet")) \
            else (pd.read_csv(units_path) if str(units_path).endswith(".csv")
                  else pd.read_parquet(units_path))
        for name in missing:
            values[name] = float(pd.to_numeric(table[name]).mean())
    return {n: float(values[n]) for n in names}


def predict_cells(run: RunModel, grid_store: TileStore, work: Path, *,
                  paths: RunPaths, covariates: dict[str, float] | None,
                  reference: np.ndarray, batch_size: int, device: str, n_parts: int,
                  seed: int = 0,
                  map_partitions: Callable[[Callable, list[PredictTask]], Iterable[Any]] | None
                  ) -> Iterable[pd.DataFrame]:
    """Yield the predictions (``unit_id``, ``usable``, ``cate``, ``cate_lo``, ``cate_hi``,
    ``support_distance``) a store chunk at a time, in store order.

    Without ``map_partitions`` the chunks are predicted here with the loaded encoder and
    model; with it, ``n_parts`` tasks each load them from files under ``work``.
    """
    cov = None if covariates is None else tuple(covariates.items())
    if map_partitions is None:  # in this process: the loaded model, one chunk at a time
        neighbours = NearestNeighbors(n_neighbors=1).fit(reference)
        for start in range(0, grid_store.n_units, grid_store.units_per_chunk):
            yield predict_range(grid_store, start, min(start + grid_store.units_per_chunk,
                                                       grid_store.n_units),
                                encoder=run.encoder, model=run.model, neighbours=neighbours,
                                covariates=cov, mean=run.mean, std=run.std,
                                batch_size=batch_size, device=device, clusters=run.clusters,
                                units_per_chunk=grid_store.units_per_chunk, seed=seed)
        return
    work.mkdir(parents=True, exist_ok=True)
    encoder_path = work / "encoder.pt"
    torch.save(run.encoder.cpu(), encoder_path)
    reference_path = work / "reference.npz"
    np.savez(reference_path, reference=reference)
    ranges = plan_parts(grid_store.n_units, grid_store.units_per_chunk, n_parts)
    tasks = [PredictTask(str(grid_store.path), a, b, str(encoder_path), str(paths.estimator),
                         str(reference_path), str(work / f"part-{i:05d}.parquet"), cov,
                         batch_size, device, tuple(map(float, run.mean)),
                         tuple(map(float, run.std)),
                         None if run.clusters is None else str(paths.cluster_model),
                         grid_store.units_per_chunk, seed)
             for i, (a, b) in enumerate(ranges)]
    results = list(map_partitions(predict_part, tasks))
    for part, _ in results:
        with pq.ParquetFile(part) as file:  # a row group (one chunk) at a time, not the part
            for group in range(file.num_row_groups):
                yield file.read_row_group(group).to_pandas()
        Path(part).unlink(missing_ok=True)
    encoder_path.unlink(missing_ok=True)
    reference_path.unlink(missing_ok=True)
