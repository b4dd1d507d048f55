"""``eocausal estimate``: the estimate stage on a units table and a features file.

A thin shell over :func:`models.estimate.estimate_effects`, :func:`models.ate.estimate_ate`
and :func:`models.compare.evaluate_heterogeneity`: it reads the two files, joins them on an
id, runs the estimators and writes the run directory. A user's mistake raises an
:class:`~pipeline.errors.EocausalError` that ``workflows.cli.main`` prints as one message.
Register it with ``cli.add_command(estimate)`` in :mod:`workflows.cli`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
from eocausal.models.effects.cate import CATE_METHODS

from eocausal.errors import ConfigError, InputFileError, MissingColumnError

__all__ = ["estimate"]


def _read_table(path: Path, what: str) -> pd.DataFrame:
    """CSV/TSV/Parquet with pandas; any vector format GDAL reads with geopandas."""
    if not path.is_file():
        raise InputFileError(f"{what} file '{path}' does not exist; check --{what}.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        import geopandas as gpd

        return gpd.read_file(path)
    except Exception as exc:  # pandas/pyarrow/pyogrio raise many types for unreadable files
        raise InputFileError(
            f"{what} file '{path}' cannot be read: {exc}. Use CSV, Parquet or GeoPackage."
        ) from exc


def _require(frame: pd.DataFrame, columns: list[str], path: Path, option: str) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise MissingColumnError(
            f"'{path}' has no column {', '.join(map(repr, absent))} (columns: "
            f"{', '.join(map(str, list(frame.columns)[:12]))}); name the right one with {option}."
        )


def _json_ready(value: Any) -> Any:
    """Replace NaN/inf with None and numpy scalars with Python ones, recursively."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _groups(table: pd.DataFrame, group_column: str | None, block_size: float | None,
            xy: tuple[str, str], units_path: Path) -> np.ndarray | None:
    from eocausal.models.effects.crossfit import spatial_blocks

    if group_column is not None and block_size is not None:
        raise ConfigError("give --group-column or --block-size, not both: folds follow one structure.")
    if group_column is not None:
        _require(table, [group_column], units_path, "--group-column")
        return table[group_column].to_numpy()
    if block_size is not None:
        _require(table, list(xy), units_path, "--x-column/--y-column")
        return spatial_blocks(table[xy[0]].to_numpy(float), table[xy[1]].to_numpy(float), block_size)
    return None


def _save_figures(out: Path, evaluation: Any, overlap: dict[str, Any] | None) -> list[Path]:
    from eocausal.models.evaluation import plots

    figures = {}
    if overlap is not None:
        figures["overlap"] = plots.plot_overlap(overlap)
    if evaluation is not None:
        figures["toc"] = plots.plot_toc({"AUTOC": evaluation.autoc})
        figures["qini"] = plots.plot_toc({"Qini": evaluation.qini})
        if evaluation.gates is not None:
            figures["gates"] = plots.plot_gates(evaluation.gates)
            figures["calibration"] = plots.plot_calibration(evaluation.gates)
    return list(plots.save_figures(figures, out / "figures"))


@click.command("estimate")
@click.option("--units", "units_path", type=click.Path(path_type=Path), required=True,
              help="Units table (CSV, Parquet, GeoPackage) with id, treatment, outcome.")
@click.option("--features", "features_path", type=click.Path(path_type=Path), required=True,
              help="Features file (features.parquet from 'eocausal encode', or CSV).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory to write.")
@click.option("--design", type=click.Choice(["rct", "observational"]), default="rct", show_default=True)
@click.option("--method", type=click.Choice(list(CATE_METHODS)), default="causal_forest", show_default=True,
              help="CATE learner (see models.cate).")
@click.option("--id-column", default="unit_id", show_default=True, help="Id column of the units.")
@click.option("--features-id", default=None,
              help="Id column of the features (default: --id-column), e.g. image_key.")
@click.option("--treatment", "treatment_col", default="treatment", show_default=True)
@click.option("--outcome", "outcome_col", default="outcome", show_default=True)
@click.option("--covariates", default="", help="Comma-separated covariate columns of the units.")
@click.option("--group-column", default=None, help="Cluster column: grouped folds, clustered errors.")
@click.option("--block-size", type=float, default=None,
              help="Spatial block side (coordinate units) for grouped folds, from --x/--y-column.")
@click.option("--x-column", default="x", show_default=True)
@click.option("--y-column", default="y", show_default=True)
@click.option("--propensity", type=float, default=None, help="Known assignment probability (rct).")
@click.option("--cv", type=int, default=3, show_default=True, help="Cross-fitting folds.")
@click.option("--n-components", type=int, default=20, show_default=True,
              help="PCA components of the features; 0 keeps them all.")
@click.option("--n-estimators", type=int, default=400, show_default=True)
@click.option("--trim", type=float, default=None,
              help="Drop units with propensity outside [trim, 1 - trim] in the ATE table.")
@click.option("--drop-missing", is_flag=True,
              help="Drop units with NaN treatment, outcome or covariates (count reported).")
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Held-out RATE (AUTOC, Qini), BLP and GATES, with figures.")
@click.option("--n-bootstrap", type=int, default=200, show_default=True,
              help="Half-sample bootstrap replicates of the RATE errors.")
@click.option("--seed", type=int, default=0, show_default=True)
def estimate(units_path: Path, features_path: Path, out: Path, design: str, method: str,
             id_column: str, features_id: str | None, treatment_col: str, outcome_col: str,
             covariates: str, group_column: str | None, block_size: float | None, x_column: str,
             y_column: str, propensity: float | None, cv: int, n_components: int,
             n_estimators: int, trim: float | None, drop_missing: bool, evaluate: bool,
             n_bootstrap: int, seed: int) -> None:
    """Estimate ATE and per-unit effects from units and image features into OUT.

    Writes effects.csv (unit id, treatment, outcome, cate, cate_lo, cate_hi), ate.csv (ATE
    by difference in means, Hajek IPW, AIPW, LinearDML, DRLearner), summary.json,
    estimator.joblib and figures/ (overlap, TOC, Qini, GATES, calibration).
    """
    from eocausal.models.effects.ate import estimate_ate
    from eocausal.models.effects.estimate import estimate_effects
    from eocausal.models.effects.inputs import drop_incomplete, join_features
    from eocausal.models.evaluation.compare import evaluate_heterogeneity

    units = _read_table(units_path, "units")
    features = _read_table(features_path, "features")
    covariate_cols = [c.strip() for c in covariates.split(",") if c.strip()]
    _require(units, [id_column, treatment_col, outcome_col, *covariate_cols], units_path,
             "--id-column/--treatment/--outcome/--covariates")
    fid = features_id or id_column
    _require(features, [fid], features_path, "--features-id")
    feature_cols = [c for c in features.columns if c != fid and pd.api.types.is_numeric_dtype(features[c])]
    if not feature_cols:
        raise MissingColumnError(f"'{features_path}' has no numeric feature columns besides {fid!r}.")
    table = join_features(units.drop(columns=[c for c in feature_cols if c in units.columns]),
                          features[[fid, *feature_cols]], on=id_column, features_on=fid)
    n_dropped = 0
    if drop_missing:
        table, n_dropped = drop_incomplete(table, [treatment_col, outcome_col, *covariate_cols])
        if n_dropped:
            click.echo(f"  dropped {n_dropped} units with NaN treatment, outcome or covariates", err=True)
    groups = _groups(table, group_column, block_size, (x_column, y_column), units_path)
    t, y = table[treatment_col].to_numpy(), table[outcome_col].to_numpy(float)
    cov = table[covariate_cols] if covariate_cols else None
    click.echo(f"  {len(table)} units, {len(feature_cols)} features, method {method}", err=True)
    fit = estimate_effects(table[feature_cols], t, y, covariates=cov, design=design,
                           propensity=propensity, method=method,
                           n_components=n_components or None, n_estimators=n_estimators, cv=cv,
                           groups=groups, random_state=seed, diagnostics=True)
    design_matrix = fit.model.transform(table[feature_cols], cov)
    ate = estimate_ate(design_matrix, t, y, design=design, propensity=propensity, cv=max(cv, 2),
                       groups=groups, trim=trim, random_state=seed)
    evaluation = None
    if evaluate:
        click.echo("  evaluating held-out heterogeneity (RATE, BLP, GATES)", err=True)
        evaluation = evaluate_heterogeneity(
            table[feature_cols], t, y, covariates=cov, method=method, design=design,
            propensity=propensity, groups=groups, cv=cv, n_components=n_components or None,
            n_estimators=n_estimators, n_bootstrap=n_bootstrap, random_state=seed)
    out.mkdir(parents=True, exist_ok=True)
    effects = pd.DataFrame({id_column: table[id_column], "treatment": t, "outcome": y,
                            "cate": fit.cate, "cate_lo": fit.cate_lo, "cate_hi": fit.cate_hi})
    effects.to_csv(out / "effects.csv", index=False)
    ate.table().to_csv(out / "ate.csv")
    fit.model.save(out / "estimator.joblib")
    figures = _save_figures(out, evaluation, ate.overlap)
    summary = {**fit.summary(), "n_dropped_missing": n_dropped, "n_features": len(feature_cols),
               "ate_estimators": ate.summary(),
               "heterogeneity": None if evaluation is None else evaluation.summary(),
               "inputs": {"units": str(units_path), "features": str(features_path)}}
    (out / "summary.json").write_text(json.dumps(_json_ready(summary), indent=2, allow_nan=False))
    click.echo(f"ATE ({fit.ate_source}) {fit.ate:.4g}  95% CI [{fit.ate_lo:.4g}, {fit.ate_hi:.4g}]  "
               f"n={fit.n_used}")
    click.echo(ate.table()[["estimate", "lo", "hi"]].to_string(float_format=lambda v: f"{v:.4g}"))
    if evaluation is not None:
        click.echo(f"RATE AUTOC {evaluation.autoc.estimate:.4g} (se {evaluation.autoc.se:.2g}), "
                   f"Qini {evaluation.qini.estimate:.4g} (se {evaluation.qini.se:.2g})")
    for path in [out / "effects.csv", out / "ate.csv", out / "summary.json", *figures]:
        click.echo(f"  {path}")
