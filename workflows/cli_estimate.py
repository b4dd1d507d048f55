"""``eocausal estimate``: the run's estimate and evaluate stages on files a user names.

It reads a units table and (optionally) a features file, joins them on an id, and calls the
very functions of ``eocausal run``'s stages (:func:`~eocausal.workflows.stages.estimate.
estimate_table`, :func:`~eocausal.workflows.stages.evaluate.evaluate_table`), so the run
directory it writes holds the same files: effects.gpkg, ate.csv, estimator.joblib,
estimates.json, evaluation.json, figures/, summary.json and report.html. Estimator options
come from ``EffectSettings``, the one source of estimator settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
from eocausal.models.effects.settings import EffectSettings
from eocausal.workflows.cli_options import settings_options

from eocausal.errors import ConfigError, EstimationError, InputFileError, MissingColumnError

__all__ = ["estimate", "read_table"]


def read_table(path: Path, what: str) -> pd.DataFrame:
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


@click.command("estimate")
@click.option("--units", "units_path", type=click.Path(path_type=Path), required=True,
              help="Units table (CSV, Parquet, GeoPackage) with id, treatment, outcome.")
@click.option("--features", "features_path", type=click.Path(path_type=Path), default=None,
              help="Features file (features.parquet from 'eocausal encode', or CSV); without "
                   "it the estimate uses the covariates alone.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory to write.")
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
@click.option("--design", type=click.Choice(["rct", "observational", "panel"]), default="rct",
              show_default=True, help="rct: known assignment; observational: treatment "
              "modelled from X; panel: units observed over periods (needs --period-column).")
@click.option("--period-column", default=None,
              help="Period column of a panel (units and features both long: one row per "
                   "unit and period).")
@click.option("--panel-methods", default="mundlak,first_difference,within,pooled",
              show_default=True, help="Panel estimators, comma separated.")
@settings_options(EffectSettings, exclude=("design",))
@click.option("--drop-missing", is_flag=True,
              help="Drop units with NaN treatment, outcome or covariates (count reported).")
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Held-out RATE (AUTOC, Qini), BLP and GATES, with figures.")
@click.option("--n-bootstrap-rate", "n_bootstrap_rate", type=int, default=200, show_default=True,
              help="Half-sample bootstrap replicates of the RATE errors.")
@click.option("--seed", type=int, default=0, show_default=True)
def estimate(units_path: Path, features_path: Path | None, out: Path, id_column: str,
             features_id: str | None, treatment_col: str, outcome_col: str, covariates: str,
             group_column: str | None, block_size: float | None, x_column: str, y_column: str,
             drop_missing: bool, evaluate: bool, n_bootstrap_rate: int,
             seed: int, design: str, period_column: str | None, panel_methods: str,
             **settings: Any) -> None:
    """Estimate ATE and per-unit effects from units and image features into OUT."""
    if design == "panel" or period_column is not None:
        _estimate_panel(units_path, features_path, out, id_column, treatment_col, outcome_col,
                        covariates, period_column, panel_methods, settings, seed)
        return
    settings["design"] = design
    from eocausal.models.effects.inputs import drop_incomplete, join_features
    from eocausal.models.effects.settings import check_settings
    from eocausal.workflows.dag import as_stage
    from eocausal.workflows.lock import RunLock
    from eocausal.workflows.paths import RunPaths
    from eocausal.workflows.runner import prepare_run_dir
    from eocausal.workflows.stages.estimate import EstimationTable, estimate_table
    from eocausal.workflows.stages.evaluate import evaluate_table

    estimator = check_settings(**settings)
    units = read_table(units_path, "units")
    covariate_cols = [c.strip() for c in covariates.split(",") if c.strip()]
    if features_path is None and id_column not in units.columns:
        units = units.assign(**{id_column: range(len(units))})  # no join: rows are the ids
    _require(units, [id_column, treatment_col, outcome_col, *covariate_cols], units_path,
             "--id-column/--treatment/--outcome/--covariates")
    feature_cols: list[str] = []
    table = units
    if features_path is not None:
        features = read_table(features_path, "features")
        fid = features_id or id_column
        _require(features, [fid], features_path, "--features-id")
        feature_cols = [c for c in features.columns
                        if c != fid and pd.api.types.is_numeric_dtype(features[c])]
        if not feature_cols:
            raise MissingColumnError(
                f"'{features_path}' has no numeric feature columns besides {fid!r}.")
        try:
            table = join_features(
                units.drop(columns=[c for c in feature_cols if c in units.columns]),
                features[[fid, *feature_cols]], on=id_column, features_on=fid)
        except EstimationError as exc:
            raise EstimationError(f"{exc} (units '{units_path}', features '{features_path}')"
                                  ) from None
    elif not covariate_cols:
        raise ConfigError("give --features, --covariates or both: the effect model needs "
                          "something to condition on.")
    n_dropped = 0
    if drop_missing:
        table, n_dropped = drop_incomplete(table, [treatment_col, outcome_col, *covariate_cols])
        if n_dropped:
            click.echo(f"  dropped {n_dropped} units with NaN treatment, outcome or covariates",
                       err=True)
    groups = _groups(table, group_column, block_size, (x_column, y_column), units_path)
    frame = table.rename(columns={id_column: "unit_id", treatment_col: "treatment",
                                  outcome_col: "outcome"})
    frame = frame.loc[:, ~frame.columns.duplicated()]
    if group_column is not None:
        frame["group"] = groups
    crs = getattr(frame, "crs", None)
    data = EstimationTable(frame, feature_cols, covariate_cols, groups, crs=crs,
                           n_dropped_missing=n_dropped,
                           groups_name=group_column or ("spatial blocks" if block_size else "groups"))
    paths = RunPaths(out)
    prepare_run_dir(paths)
    echo = lambda message: click.echo(f"  {message}", err=True)  # noqa: E731
    click.echo(f"  {len(frame)} units, {len(feature_cols)} features, "
               f"{len(covariate_cols)} covariates, method {estimator.method}", err=True)
    with RunLock(paths.lock, paths.lock_info, note=echo), as_stage("estimate"):
        effects = estimate_table(data, estimator, paths, seed=seed, echo=echo,
                                 source=f"'{units_path}'" + (f" with '{features_path}'"
                                                             if features_path else ""))
        evaluation = (evaluate_table(data, estimator, paths, n_bootstrap=n_bootstrap_rate,
                                     seed=seed, echo=echo) if evaluate else None)
        summary = _write_summary(paths, effects.summary, evaluation, len(units),
                                 {"units": str(units_path), "features": str(features_path)})
    s = effects.summary
    click.echo(f"ATE ({s['ate_source']}) {s['ate']:.4g}  95% CI [{s['ate_lo']:.4g}, "
               f"{s['ate_hi']:.4g}]  n={s['n_used']}")
    click.echo(effects.ate.table()[["estimate", "lo", "hi"]].to_string(
        float_format=lambda v: f"{v:.4g}"))
    if evaluation is not None:
        h = summary["heterogeneity"]
        click.echo(f"RATE AUTOC {h['rate_autoc']['estimate']:.4g} (se {h['rate_autoc']['se']:.2g}), "
                   f"Qini {h['rate_qini']['estimate']:.4g} (se {h['rate_qini']['se']:.2g})")
    for path in [paths.effects, paths.ate_table, paths.summary, paths.report,
                 *(paths.root / f for f in summary["figures"].values())]:
        click.echo(f"  {path}")


def _write_summary(paths: Any, estimates: dict[str, Any], evaluation: Any, n_units: int,
                   inputs: dict[str, str]) -> dict[str, Any]:
    from eocausal.workflows.report import write_report
    from eocausal.workflows.stages.estimate import json_ready, write_json

    figures = {**estimates.get("figures", {}),
               **({} if evaluation is None else evaluation.summary.get("figures", {}))}
    het = None if evaluation is None else evaluation.summary
    summary = json_ready({**estimates, "n_units": n_units, "n_skipped": 0, "heterogeneity": het,
                          "feature_sets": (het or {}).get("feature_sets"),
                          "targeting": (het or {}).get("targeting"),
                          "figures": figures, "inputs": inputs})
    write_json(paths.summary, summary)
    write_report(paths, summary, title=f"eocausal estimate: {paths.root.name}")
    return summary


def _estimate_panel(units_path: Path, features_path: Path | None, out: Path, id_column: str,
                    treatment_col: str, outcome_col: str, covariates: str,
                    period_column: str | None, methods: str, settings: dict[str, Any],
                    seed: int) -> None:
    """``--design panel``: the panel estimators on a long units table and long features."""
    from eocausal.models.effects.panel import estimate_panel, join_panel
    from eocausal.models.effects.panel_settings import check_panel_settings
    from eocausal.workflows.paths import RunPaths
    from eocausal.workflows.runner import prepare_run_dir
    from eocausal.workflows.stages.estimate import write_json

    if period_column is None:
        raise ConfigError("--design panel needs --period-column: the column naming each row's "
                          "period.")
    panel = check_panel_settings(
        unit=id_column, period=period_column,
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        covariates=[c.strip() for c in covariates.split(",") if c.strip()], cv=settings["cv"],
        n_components=settings["n_components"])
    units = read_table(units_path, "units")
    _require(units, [id_column, period_column, treatment_col, outcome_col, *panel.covariates],
             units_path, "--id-column/--period-column/--treatment/--outcome/--covariates")
    table, feature_cols, missing = units, [], None
    if features_path is not None:
        features = read_table(features_path, "features")
        _require(features, ["unit_id", period_column if period_column in features else "period"],
                 features_path, "--period-column")
        features = features.rename(columns={period_column: "period"})
        feature_cols = [c for c in features.columns if c not in ("unit_id", "period")
                        and pd.api.types.is_numeric_dtype(features[c])
                        and c != "valid_fraction"]
        table, missing = join_panel(units, features[["unit_id", "period", *feature_cols]],
                                    unit=id_column, period=period_column)
    result = estimate_panel(table, treatment=treatment_col, outcome=outcome_col,
                            features=feature_cols or None, random_state=seed,
                            **panel.model_dump())
    paths = RunPaths(out)
    prepare_run_dir(paths)
    result.table().to_csv(paths.ate_table)
    write_json(paths.summary, {"design": "panel", "panel": result.summary(),
                               "n_unit_periods_without_image": 0 if missing is None
                               else len(missing)})
    click.echo(result.table()[["estimate", "se", "lo", "hi", "n_unit_periods", "biased"]]
               .to_string(float_format=lambda v: f"{v:.4g}"))
    click.echo(f"  {paths.ate_table}\n  {paths.summary}")
