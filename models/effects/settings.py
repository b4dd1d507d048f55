"""Every estimator setting, declared once.

:class:`EffectModel` validates its parameters with :class:`EffectSettings`; the run config's
``estimator`` section is this model, and ``eocausal estimate`` builds its options from its
fields, so a default or a bound can never disagree between the three. Importing this module
costs no scikit-learn or econml: the config is read before any stage runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eocausal.errors import EstimationError

__all__ = ["CATE_METHOD_NAMES", "DEFAULT_SETTINGS", "EffectSettings", "MAX_UNITS_PER_TREE",
           "check_settings", "forest_max_samples"]

# The names of models.effects.cate's registry (which checks that the two agree).
CATE_METHOD_NAMES = ("causal_forest", "linear_dml", "dr_learner", "forest_dr_learner",
                     "x_learner", "t_learner", "s_learner")


# A forest's trees need not grow on more units than this: at 100,000 units the 'auto'
# subsample (20%) cuts the forest's time ~2.5x against econml's 0.45, and a subsample rate
# that falls as n grows is what the forest's asymptotic normality asks for (Wager & Athey
# 2018, s ~ n^beta with beta < 1).
MAX_UNITS_PER_TREE = 20_000
DEFAULT_MAX_SAMPLES = 0.45  # econml's own default


def forest_max_samples(setting: float | str, n_units: int) -> float:
    """The share of units a tree grows on: ``setting``, or the 'auto' rule for ``n_units``."""
    if setting != "auto":
        return float(setting)
    return min(DEFAULT_MAX_SAMPLES, MAX_UNITS_PER_TREE / max(n_units, 1))


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
    max_samples: float | Literal["auto"] = Field(
        "auto", description="Share of the units each tree of the forests grows on (at most 0.5, "
                            "for the forests' intervals). 'auto': 0.45, but no more than "
                            f"{MAX_UNITS_PER_TREE:,} units a tree, so at 100,000 units each tree "
                            "grows on 20% of them (about 2.5x faster than 0.45).")
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


    @field_validator("max_samples")
    @classmethod
    def _subsample_share(cls, value: float | str) -> float | str:
        if value != "auto" and not 0.0 < float(value) <= 0.5:
            raise ValueError(f"max_samples must be 'auto' or a share in (0, 0.5]; got {value!r} "
                             "(the forests' intervals need half-samples)")
        return value

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
