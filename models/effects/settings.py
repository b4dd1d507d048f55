"""Every estimator setting, declared once.

:class:`EffectModel` validates its parameters with :class:`EffectSettings`; the run config's
``estimator`` section is this model, and ``eocausal estimate`` builds its options from its
fields, so a default or a bound can never disagree between the three. Importing this module
costs no scikit-learn or econml: the config is read before any stage runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eocausal.errors import EstimationError

__all__ = ["CATE_METHOD_NAMES", "DEFAULT_SETTINGS", "EffectSettings", "check_settings"]

# The names of models.effects.cate's registry (which checks that the two agree).
CATE_METHOD_NAMES = ("causal_forest", "linear_dml", "dr_learner", "forest_dr_learner",
                     "x_learner", "t_learner", "s_learner")


class EffectSettings(BaseModel):
    """How the effect model is fitted: the learner, the design, and their sizes."""

    model_config = ConfigDict(extra="forbid")

    method: Literal[CATE_METHOD_NAMES] = Field(  # type: ignore[valid-type]
        "causal_forest", description="CATE learner (see eocausal.models.effects.cate).")
    design: Literal["rct", "observational"] = Field(
        "rct", description="rct: known assignment; observational: treatment modelled from X.")
    propensity: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="A trial's known assignment probability (default: the treated share).")
    n_components: int | None = Field(
        20, ge=1, description="PCA components kept of the image features (None keeps all).")
    n_estimators: int = Field(
        400, ge=4, multiple_of=4, description="Trees of the forests (a multiple of 4).")
    min_samples_leaf: int = Field(5, ge=1, description="Smallest leaf of the forests.")
    cv: int = Field(3, ge=2, description="Cross-fitting folds.")
    degree: int = Field(
        1, ge=1, le=3, description="Polynomial degree of the linear learners' featurizer.")
    n_bootstrap: int = Field(
        0, ge=0, description="Bootstrap refits for the metalearners' per-unit intervals.")
    trim: float | None = Field(
        0.05, gt=0.0, lt=0.5,
        description="Observational designs: drop units whose cross-fitted propensity lies outside "
                    "[trim, 1 - trim] before any learner is fitted; the estimand becomes the ATE "
                    "on the trimmed population (Crump et al. 2009). None keeps every unit.")
    clip: float | None = Field(
        None, gt=0.0, lt=0.5,
        description="Bound propensities to [clip, 1 - clip] in every learner instead of dropping "
                    "units; the estimate is then a weighted effect, labelled as such. A clip "
                    "turns trimming off (clip keeps every unit).")


DEFAULT_SETTINGS = EffectSettings()


def check_settings(**values: Any) -> EffectSettings:
    """Validate estimator settings, raising one ``EstimationError`` that names each bad one."""
    try:
        return EffectSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in exc.errors())
        raise EstimationError(f"invalid estimator setting: {problems}. Change the setting and "
                              "run again.") from None
