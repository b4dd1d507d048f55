"""The panel design's encode and estimate stages: one feature row per unit and period, then
the panel DML estimators (Mundlak, first differences, within, pooled) on the survey rounds.

A run is a panel run when its config has a ``panel`` section: the units file gives each
place once, the survey table (``panel.path``) one row per unit and period, and the imagery's
dates become periods (``panel.period_format``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from eocausal.workflows.context import StageContext
from eocausal.workflows.stages.estimate import json_ready, write_json

from eocausal.errors import InputFileError
from eocausal.files import atomic_path

__all__ = ["estimate_panel_stage", "encode_panel_stage", "panel_periods", "read_survey"]


def panel_periods(dates: list[str | None], period_format: str) -> list[str] | None:
    """Period label of each store date: the ISO date itself, its year, or its month."""
    if period_format == "date" or not dates or any(d is None for d in dates):
        return None
    width = {"year": 4, "month": 7}[period_format]
    return [str(d)[:width] for d in dates]


def read_survey(path: Path) -> pd.DataFrame:
    """The survey's long table (CSV, TSV or Parquet)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"Panel survey table '{path}' does not exist; check 'panel.path'.")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise InputFileError(f"Panel survey table '{path}' cannot be read ({exc}); give a CSV "
                             "or Parquet file.") from exc


def encode_panel_stage(ctx: StageContext) -> dict[str, Any]:
    """Encode every date of every unit; features.parquet is long (unit_id, period, f...)."""
    from eocausal.models.features.io import write_features
    from eocausal.models.features.panel import encode_panel
    from eocausal.workflows.stages.encode import encode_settings

    config, store = ctx.config, ctx.store()
    encoder = ctx.encoder()
    features = encode_panel(store, encoder, periods=panel_periods(store.dates,
                                                                  config.panel.period_format),
                            min_valid_fraction=config.chips.min_valid_fraction,
                            batch_size=config.encoder.batch_size, device=config.encoder.device)
    write_features(features.table, ctx.paths.features,
                   {"encoder": encode_settings(config), "panel": True})
    if len(features.skipped):
        with atomic_path(ctx.paths.root / "skipped_unit_periods.csv") as tmp:
            features.skipped.to_csv(tmp, index=False)
    ctx.echo(f"encoded {len(features.table)} unit-dates with {config.encoder.name} "
             f"({len(features.skipped)} left out for too few valid pixels)")
    return {"features": str(ctx.paths.features), "n_rows": len(features.table),
            "n_skipped": len(features.skipped)}


def estimate_panel_stage(ctx: StageContext) -> dict[str, Any]:
    """Join the survey with the features and run the panel estimators."""
    from eocausal.models.effects.panel import estimate_panel, join_panel
    from eocausal.models.features.io import read_features

    config = ctx.config
    settings = config.panel
    survey = read_survey(settings.path)
    features, _ = read_features(ctx.paths.features)
    joined, missing = join_panel(survey, features, unit=settings.unit, period=settings.period)
    feature_cols = [c for c in features.columns if c[:1] == "f" and c[1:].isdigit()]
    options = settings.model_dump(exclude={"path", "period_format"})
    result = estimate_panel(joined, treatment=config.units.treatment,
                            outcome=config.units.outcome, features=feature_cols,
                            random_state=config.seed, **options)
    table = result.table()
    with atomic_path(ctx.paths.ate_table) as tmp:
        table.to_csv(tmp)
    headline = result.estimates["mundlak"] if "mundlak" in result.estimates else \
        next(iter(result.estimates.values()))
    summary = {"method": headline.method, "design": "panel", "ate": headline.estimate,
               "ate_lo": headline.lo, "ate_hi": headline.hi, "ate_se": headline.se,
               "n_used": result.n_units, "n_unit_periods_without_image": len(missing),
               "panel": result.summary(), "figures": {}}
    write_json(ctx.paths.estimates, summary)
    ctx.echo(f"panel {headline.method}: effect {headline.estimate:.4g} (95% CI "
             f"{headline.lo:.4g} to {headline.hi:.4g}), {result.n_unit_periods} unit-periods"
             + ("; pooled DML is biased" if table.get("biased", pd.Series()).any() else ""))
    return json_ready({"ate": headline.estimate, "method": headline.method,
                       "n_unit_periods": result.n_unit_periods})
