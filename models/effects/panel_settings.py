"""Settings of the panel estimators, declared once.

The run config's ``panel`` section (``design: panel``) is this model and ``eocausal
estimate --design panel`` builds its options from its fields. Importing it costs no
scikit-learn or DoubleML: the config is read before any stage runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eocausal.errors import EstimationError

__all__ = ["PANEL_LEARNERS", "PANEL_METHOD_NAMES", "PanelSettings", "check_panel_settings"]

# The estimators of models.effects.panel, in the order its table lists them.
PANEL_METHOD_NAMES = ("mundlak", "first_difference", "within", "pooled")
PANEL_LEARNERS = ("linear", "gbm")

PanelMethod = Literal["mundlak", "first_difference", "within", "pooled"]


class PanelSettings(BaseModel):
    """How a panel of unit-periods is estimated: the columns, the estimators, the folds."""

    model_config = ConfigDict(extra="forbid")

    unit: str = Field("unit_id", description="Column naming the unit (folds and SEs group by it).")
    period: str = Field("period", description="Column naming the period (numbers or dates).")
    methods: list[PanelMethod] = Field(
        default_factory=lambda: list(PANEL_METHOD_NAMES),
        min_length=1, description="Panel estimators to run (pooled is the biased baseline).")
    covariates: list[str] = Field(
        default_factory=list, description="Time-varying tabular covariates besides the features.")
    learner: Literal["linear", "gbm"] = Field(
        "linear", description="Nuisance learner: ridge (linear) or gradient boosting (gbm).")
    n_components: int | None = Field(
        None, ge=1, description="PCA components kept of the image features (None keeps all).")
    period_effects: bool = Field(
        True, description="Add period dummies (period fixed effects) to the nuisance models.")
    cv: int = Field(5, ge=2, description="Cross-fitting folds, drawn over units.")
    bias_threshold: float = Field(
        3.0, gt=0.0, description="Pooled is marked biased when it differs from Mundlak by this "
                                 "many of its standard errors.")


def check_panel_settings(**values: Any) -> PanelSettings:
    """Validate panel settings, raising one ``EstimationError`` that names each bad one."""
    try:
        return PanelSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"panel.{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}"
            for e in exc.errors())
        raise EstimationError(f"invalid panel setting: {problems}. Change the setting and "
                              "run again.") from None
