"""Estimate stage: ATE and per-unit effects, the ATE table by method, overlap and balance.

``estimate_table`` is the stage's work on a table of units joined with their features; the
run builds that table from the units file, the tile store and ``features.parquet``
(:func:`run_table`), ``eocausal estimate`` from the files a user names. Both write the same
files: effects.gpkg, ate.csv, estimator.joblib, estimates.json and the figures.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from eocausal.workflows.context import StageContext
from eocausal.workflows.paths import RunPaths

from eocausal.files import atomic_path, atomic_write_text, json_ready

__all__ = ["EffectResult", "EstimationTable", "estimate_settings", "estimate_stage",
           "estimate_table", "file_sha256", "json_ready", "run_table", "verify_model_file",
           "save_figures"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model_file(paths: RunPaths) -> None:
    """Refuse to unpickle an estimator.joblib that this run's estimate stage did not write.

    The model is a pickle (econml's forests have no safe format) and unpickling runs code, so
    the file must match the checksum the estimate stage recorded beside it (estimates.json).
    """
    from eocausal.errors import InputFileError

    path = paths.estimator
    if not path.is_file():
        raise InputFileError(f"effect model file '{path}' does not exist; run the estimate "
                             "stage first.")
    try:
        expected = json.loads(paths.estimates.read_text()).get("estimator_sha256")
    except (OSError, ValueError):
        expected = None
    if not expected or file_sha256(path) != expected:
        raise InputFileError(
            f"Refusing to load '{path}': it is not the model this run's estimate stage wrote "
            f"(its checksum differs from the one in {paths.estimates.name}). Rerun the estimate "
            "stage (eocausal run ... --force estimate).")


def write_json(path: Path, body: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(json_ready(body), indent=2, allow_nan=False))


@dataclass(frozen=True)
class EstimationTable:
    """Units joined with their features, in units order, with canonical column names.

    ``frame`` holds ``unit_id``, ``treatment``, ``outcome``, the covariates, the feature
    columns and (for spatial units) geometry; ``groups`` are the cluster labels for folds
    and clustered errors (None without).
    """

    frame: pd.DataFrame
    features: list[str]
    covariates: list[str]
    groups: np.ndarray | None = None
    crs: Any = None
    n_dropped_missing: int = 0
    groups_name: str = "groups"

    def __repr__(self) -> str:
        return (f"EstimationTable({len(self.frame)} units, {len(self.features)} features, "
                f"{len(self.covariates)} covariates, "
                f"{'no groups' if self.groups is None else f'{len(set(self.groups))} groups'})")


@dataclass(frozen=True, eq=False)
class EffectResult:
    """What the estimate stage produced; ``estimates`` and ``ate`` are the fitted objects."""

    effects: pd.DataFrame
    summary: dict[str, Any]
    estimates: Any = field(repr=False, default=None)
    ate: Any = field(repr=False, default=None)

    def record(self) -> dict[str, Any]:
        s = self.summary
        return {"ate": s["ate"], "ate_lo": s["ate_lo"], "ate_hi": s["ate_hi"],
                "n_used": s["n_used"], "method": s["method"],
                "estimator_sha256": s.get("estimator_sha256")}

    def __repr__(self) -> str:
        s = self.summary
        return (f"EffectResult(ATE {s['ate']:.4g} [{s['ate_lo']:.4g}, {s['ate_hi']:.4g}], "
                f"{s['method']}, n={s['n_used']})")

    def _repr_html_(self) -> str:
        s = self.summary
        table = pd.DataFrame(s.get("ate_estimators", {}).get("estimates", {})).T
        return (f"<p><b>ATE {s['ate']:.4g}</b> (95% interval {s['ate_lo']:.4g} to "
                f"{s['ate_hi']:.4g}), {s['method']}, {s['n_used']} units</p>"
                + (table.to_html() if len(table) else ""))


def estimate_settings(config: Any) -> dict[str, Any]:
    u = config.units
    return {"estimator": config.estimator.model_dump(mode="json"), "seed": config.seed,
            "units": {"path": str(u.path), "id": u.id, "treatment": u.treatment,
                      "outcome": u.outcome, "covariates": list(u.covariates), "group": u.group}}


def run_table(ctx: StageContext) -> EstimationTable:
    """The run's units that have a usable chip, joined with their features (units order)."""
    cached = ctx.cached("table")
    if cached is not None:
        return cached
    from eocausal.models.effects.inputs import join_features
    from eocausal.models.features.io import read_features

    units = ctx.units()
    features = ctx.cached("features")
    if features is None:
        features, _ = read_features(ctx.paths.features)
    store = ctx.store()
    usable = set(store.unit_ids[np.asarray(store.group["usable"][:])])
    units = units[units["unit_id"].isin(usable)]
    feature_cols = [c for c in features.columns if c != "unit_id"]
    frame = join_features(units, features, on="unit_id")
    covariates = list(ctx.config.units.covariates)
    groups = frame["group"].to_numpy() if "group" in frame else None
    table = EstimationTable(frame, feature_cols, covariates, groups, crs=units.crs,
                            groups_name=ctx.config.units.group or "groups")
    return ctx.remember("table", table)


def save_figures(figures: dict[str, Any], paths: RunPaths) -> dict[str, str]:
    """Write matplotlib figures as figures/NAME.png; returns name -> path relative to the run."""
    saved = {}
    for name, fig in figures.items():
        target = paths.figures / f"{name}.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        saved[name] = str(target.relative_to(paths.root))
    return saved


def _effects_frame(table: EstimationTable, fit: Any) -> pd.DataFrame:
    keep = ["unit_id", "treatment", "outcome"]
    if "group" in table.frame:
        keep.append("group")
    effects = table.frame[keep].copy()
    effects["cate"], effects["cate_lo"], effects["cate_hi"] = fit.cate, fit.cate_lo, fit.cate_hi
    if fit.cate_lo_calibrated is not None:
        effects["cate_lo_calibrated"] = fit.cate_lo_calibrated
        effects["cate_hi_calibrated"] = fit.cate_hi_calibrated
    effects["used"] = True if fit.used is None else np.asarray(fit.used, dtype=bool)
    if "geometry" in table.frame:
        import geopandas as gpd

        return gpd.GeoDataFrame(effects, geometry=table.frame["geometry"].to_numpy(),
                                crs=table.crs)
    return effects


def write_effects(effects: pd.DataFrame, path: Path) -> Path:
    """effects.gpkg: a point/polygon layer, or an attribute table for units without places."""
    import pyogrio

    with atomic_path(path) as tmp:
        pyogrio.write_dataframe(effects, tmp, layer="effects", driver="GPKG")
    return path


class InputWarning(UserWarning):
    """The inputs can be estimated from, but the result deserves a second look."""


def check_table(table: EstimationTable, source: str = "the units table") -> list[str]:
    """Name NaN feature values by column and unit; warn about a constant outcome and about
    more model columns than units. Returns the warnings' messages."""
    from eocausal.errors import EstimationError

    frame = table.frame
    for column in table.features:
        bad = frame[column].isna().to_numpy()
        if bad.any():
            ids = ", ".join(map(str, frame.loc[bad, "unit_id"].head(5)))
            raise EstimationError(
                f"Feature column '{column}' of {source} has NaN for {int(bad.sum())} units "
                f"(unit ids {ids}{', ...' if bad.sum() > 5 else ''}); re-encode them or drop "
                "those units.")
    arms = pd.Series(frame["treatment"]).value_counts()
    if not set(arms.index) <= {0, 1}:
        shown = ", ".join(map(str, sorted(arms.index)[:5]))
        raise EstimationError(f"The treatment column of {source} must be 0/1; it holds {shown}. "
                              "Recode it to 0 (control) and 1 (treated).")
    if len(arms) < 2:
        raise EstimationError(f"Every one of the {len(frame)} units of {source} has treatment "
                              f"{arms.index[0]}; an effect needs treated and control units.")
    notes = []
    outcome = pd.to_numeric(frame["outcome"], errors="coerce")
    if outcome.nunique(dropna=True) <= 1:
        notes.append(f"the outcome of {source} is constant ({float(outcome.iloc[0]):g} for all "
                     f"{len(frame)} units): every effect estimate is 0 by construction. Check "
                     "the outcome column.")
    n_columns = len(table.covariates) + len(table.features)
    if n_columns >= len(frame):
        notes.append(f"{source} gives {n_columns} model columns ({len(table.covariates)} "
                     f"covariates, {len(table.features)} features) for {len(frame)} units: "
                     "estimates will be unstable. Use fewer covariates, or PCA (n_components).")
    for note in notes:
        warnings.warn(InputWarning(note), stacklevel=3)
    return notes


def estimate_table(table: EstimationTable, settings: Any, paths: RunPaths, *, seed: int = 0,
                   echo: Any = None, source: str = "the units table") -> EffectResult:
    """Fit the effect model and the ATE table on ``table``; write the stage's files.

    ``settings`` is the config's estimator section (an ``EffectSettings``).
    """
    from eocausal.models.effects.ate import estimate_ate
    from eocausal.models.effects.estimate import estimate_effects
    from eocausal.models.evaluation import plots
    from eocausal.models.evaluation.balance import plot_balance

    for note in check_table(table, source):
        if echo is not None:
            echo(f"warning: {note}")
    frame = table.frame
    t, y = frame["treatment"].to_numpy(), frame["outcome"].to_numpy(float)
    feats = frame[table.features] if table.features else None
    cov = frame[table.covariates] if table.covariates else None
    groups_name = table.groups_name
    fit = estimate_effects(feats, t, y, covariates=cov, design=settings.design,
                           propensity=settings.propensity, method=settings.method,
                           n_components=settings.n_components,
                           n_estimators=settings.n_estimators,
                           min_samples_leaf=settings.min_samples_leaf,
                           max_samples=settings.max_samples, cv=settings.cv,
                           groups=table.groups, random_state=seed, degree=settings.degree,
                           n_bootstrap=settings.n_bootstrap, diagnostics=True,
                           trim=settings.trim, clip=settings.clip, groups_name=groups_name)
    design_matrix = fit.model.transform(feats, cov)
    ate = estimate_ate(design_matrix, t, y, design=settings.design,
                       propensity=settings.propensity, cv=max(settings.cv, 2),
                       groups=table.groups, trim=settings.trim, clip=settings.clip,
                       groups_name=groups_name, random_state=seed)
    effects = _effects_frame(table, fit)
    write_effects(effects, paths.effects)
    with atomic_path(paths.ate_table) as tmp:
        ate.table().to_csv(tmp)
    with atomic_path(paths.estimator) as tmp:
        fit.model.save(tmp)
        estimator_sha256 = file_sha256(tmp)
    figures = {"balance": plot_balance(ate.balance)}
    if ate.overlap is not None:
        figures["overlap"] = plots.plot_overlap(ate.overlap)
    sensitivity = None
    if ate.sensitivity is not None:
        from eocausal.models.effects.sensitivity import sensitivity_grid

        c_values, lower = sensitivity_grid(ate.sensitivity.params)
        summary_s = ate.sensitivity.summary()
        figures["sensitivity"] = plots.plot_sensitivity_contour(
            c_values, lower, estimate=summary_s.get("estimate"),
            robustness_value=summary_s.get("robustness_value"))
        sensitivity = {**summary_s, "sentence": ate.sensitivity.sentence()}
    summary = {**fit.summary(), "n_features": len(table.features),
               "n_covariates": len(table.covariates),
               "n_dropped_missing": table.n_dropped_missing,
               "ate_estimators": ate.summary(), "sensitivity": sensitivity,
               "figures": save_figures(figures, paths),
               "estimator_sha256": estimator_sha256}
    write_json(paths.estimates, summary)
    if echo is not None:
        echo(f"ATE {fit.ate:.4g} (95% CI {fit.ate_lo:.4g} to {fit.ate_hi:.4g}), "
             f"n={fit.n_used}, method {settings.method}")
    return EffectResult(effects, json_ready(summary), fit, ate)


def estimate_stage(ctx: StageContext) -> EffectResult:
    """The run's estimate stage: :func:`estimate_table` on :func:`run_table`."""
    result = estimate_table(run_table(ctx), ctx.config.estimator, ctx.paths,
                            seed=ctx.config.seed, echo=ctx.echo,
                            source=f"units file '{ctx.config.units.path}'")
    ctx.remember("effects", result)
    return result
