"""The notebook API: ``import eocausal`` and call the stages as plain functions.

Each function is the run's own stage on objects a notebook holds (a GeoDataFrame of units, a
feature frame, a tile store), with the same defaults as the config; :func:`run` and
:func:`open_run` give a whole run directory as one object with a short summary when shown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from eocausal.workflows.paths import RunPaths

from eocausal.errors import ConfigError, InputFileError

__all__ = ["Run", "encode", "estimate", "evaluate", "ingest", "map_effects", "open_run", "run"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Run:
    """A run directory, opened: its config, summary and outputs, loaded when asked for."""

    paths: RunPaths

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.paths.manifest.read_text())

    @property
    def config(self) -> Any:
        from eocausal.workflows.config import config_from_dict

        return config_from_dict(self.manifest["config"], source=str(self.paths.manifest))

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.paths.summary.read_text())

    @property
    def effects(self) -> Any:
        import geopandas as gpd

        return gpd.read_file(self.paths.effects)

    @property
    def features(self) -> pd.DataFrame:
        from eocausal.models.features.io import read_features

        return read_features(self.paths.features)[0]

    @property
    def store(self) -> Any:
        from eocausal.pipeline.store import open_store

        return open_store(self.paths.tiles)

    @property
    def ate_table(self) -> pd.DataFrame:
        return pd.read_csv(self.paths.ate_table, index_col=0)

    @property
    def skipped(self) -> pd.DataFrame:
        return pd.read_csv(self.paths.skipped)

    @property
    def figures(self) -> dict[str, Path]:
        return {k: self.root / v for k, v in (self.summary.get("figures") or {}).items()}

    def show(self, name: str) -> Any:
        """Display one of the run's figures inline (``run.show("toc")``)."""
        from IPython.display import Image

        return Image(filename=str(self.figures[name]))

    def _headline(self) -> str:
        s = self.summary
        if s.get("ate") is None:
            return "no estimate"
        return (f"ATE {s['ate']:.4g} (95% CI {s['ate_lo']:.4g} to {s['ate_hi']:.4g}), "
                f"{s.get('method')}, {s.get('n_used')} units used, {s.get('n_skipped')} skipped")

    def __repr__(self) -> str:
        return f"Run('{self.root}': {self._headline()})"

    def _repr_html_(self) -> str:
        import html

        stages = ", ".join(f"{k}: {v.get('status')}" for k, v in self.manifest["stages"].items())
        return (f"<b>eocausal run</b> <code>{html.escape(str(self.root))}</code><br>"
                f"{html.escape(self._headline())}<br><small>{html.escape(stages)}</small>")


def open_run(path: PathLike) -> Run:
    """Open a run directory that ``eocausal run`` (or :func:`run`) wrote."""
    paths = RunPaths(Path(path))
    if not paths.manifest.is_file():
        raise InputFileError(f"'{path}' is not a run directory: it has no manifest.json. "
                             "Give the folder that 'eocausal run' wrote.")
    return Run(paths)


def run(config: Any, out: PathLike | None = None, *, force: Iterable[str] = (),
        progress: bool = True, echo: Any = print) -> Run:
    """Run a config (a RunConfig, a dict, or a YAML path) into ``out``; skip what is up to date."""
    from eocausal.workflows.config import RunConfig, config_from_dict, load_config
    from eocausal.workflows.runner import run_config

    if isinstance(config, str | os.PathLike):
        config = load_config(config)
    elif isinstance(config, dict):
        config = config_from_dict(config)
    elif not isinstance(config, RunConfig):
        raise ConfigError(f"run() takes a RunConfig, a dict or a YAML path; got {type(config)}.")
    out = Path(out) if out is not None else Path("runs") / config.name
    result = run_config(config, out, echo=echo, progress=progress, force=force)
    return Run(RunPaths(result.run_dir))


def ingest(units: Any, imagery: Sequence[PathLike], out: PathLike, **options: Any) -> Any:
    """Cut a chip around every unit (a GeoDataFrame or a units file) into a tile store.

    ``options`` are those of :func:`eocausal.pipeline.ingest.ingest` (``chip_size``,
    ``bands``, ``dates``...). Returns the ``IngestResult`` (``.store``, ``.skipped``).
    """
    from eocausal.pipeline.ingest import ingest as ingest_units
    from eocausal.pipeline.units import read_units

    if isinstance(units, str | os.PathLike):
        units = read_units(units, require_outcome=False)
    return ingest_units(units, [str(p) for p in imagery], out, **options)


def encode(store: Any, encoder: str = "rcf", *, options: dict[str, Any] | None = None,
           weights: PathLike | None = None, seed: int = 0, **kwargs: Any) -> pd.DataFrame:
    """Encode every chip of a tile store: ``unit_id`` + one column per feature, store order."""
    from eocausal.models.features.encode import encode_store, prepare_encoder

    built = prepare_encoder(store, encoder, options=options, weights=weights, seed=seed)
    frame = encode_store(store, built, **kwargs)
    frame.attrs["encoder"] = built
    return frame


def _join(units: pd.DataFrame, features: pd.DataFrame | None, id_column: str) -> pd.DataFrame:
    """Units joined with features by id, in units order; ids match whatever their type."""
    from eocausal.models.effects.inputs import join_features

    if features is None:
        return units.reset_index(drop=True)
    features = features.copy()
    if units[id_column].dtype != features["unit_id"].dtype:  # 17 (int) must match "17" (str)
        units = units.assign(_key=units[id_column].astype(str))
        features["unit_id"] = features["unit_id"].astype(str)
        joined = join_features(units, features, on="_key", features_on="unit_id")
        return joined.drop(columns=["_key", "unit_id"] if id_column != "unit_id" else ["_key"])
    joined = join_features(units, features, on=id_column, features_on="unit_id")
    return joined


def _table(units: pd.DataFrame, features: pd.DataFrame | None, *, id_column: str,
           treatment: str, outcome: str, covariates: Sequence[str], group: str | None) -> Any:
    from eocausal.workflows.stages.estimate import EstimationTable

    feature_cols = [] if features is None else [c for c in features.columns if c != "unit_id"]
    frame = _join(units, features, id_column).rename(
        columns={id_column: "unit_id", treatment: "treatment", outcome: "outcome"})
    groups = None if group is None else frame[group].to_numpy()
    if group is not None:
        frame["group"] = groups
    return EstimationTable(frame, feature_cols, list(covariates), groups,
                           crs=getattr(units, "crs", None), groups_name=group or "groups")


def estimate(units: pd.DataFrame, features: pd.DataFrame | None = None, *,
             out: PathLike = "estimate", id_column: str = "unit_id",
             treatment: str = "treatment", outcome: str = "outcome",
             covariates: Sequence[str] = (), group: str | None = None, seed: int = 0,
             **settings: Any) -> Any:
    """Estimate ATE and per-unit effects; writes the estimate stage's files into ``out``.

    Features join the units by id (an integer id matches its string form in a feature
    table) and effects come back in units order. ``settings`` are those of the config's
    ``estimator`` section (``method``, ``design``, ``propensity``, ``n_estimators``...).
    Returns an ``EffectResult`` (``.summary``, ``.effects``, ``.estimates``, ``.ate``).
    """
    from eocausal.workflows.config import EstimatorSection
    from eocausal.workflows.runner import prepare_run_dir
    from eocausal.workflows.stages.estimate import estimate_table

    table = _table(units, features, id_column=id_column, treatment=treatment, outcome=outcome,
                   covariates=covariates, group=group)
    paths = RunPaths(Path(out))
    prepare_run_dir(paths)
    result = estimate_table(table, EstimatorSection(**settings), paths, seed=seed)
    object.__setattr__(result, "table", table)
    return result


def evaluate(result: Any, *, out: PathLike | None = None, n_bootstrap: int = 200,
             seed: int = 0, **settings: Any) -> Any:
    """Held-out RATE (AUTOC, Qini), BLP and GATES for the model of :func:`estimate`."""
    from eocausal.workflows.config import EstimatorSection
    from eocausal.workflows.stages.evaluate import evaluate_table

    fit = result.estimates
    merged = {"method": fit.method, "design": fit.design, **settings}
    paths = RunPaths(Path(out)) if out is not None else RunPaths(Path("estimate"))
    return evaluate_table(result.table, EstimatorSection(**merged), paths,
                          n_bootstrap=n_bootstrap, seed=seed)


def map_effects(run_dir: PathLike, **settings: Any) -> dict[str, Any]:
    """Predict effects over a region for a finished run (the run's map stage).

    ``settings`` are the config's ``map`` keys (``region``, ``where``, ``spacing``,
    ``aggregate``, ``by``, ``budget``...); returns the map's summary (outputs in ``maps/``).
    """
    from eocausal.workflows.runner import run_config

    opened = open_run(run_dir)
    config = opened.config
    config.map = type(config.map)(**{**config.map.model_dump(), **settings, "enabled": True})
    run_config(config, opened.root, force=("map",), progress=False, echo=lambda m: None)
    return opened.summary.get("map") or {}
