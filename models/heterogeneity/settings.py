"""Settings of the image-cluster heterogeneity model, declared once and free of torch.

The run config mounts :class:`ClustersSettings` as its ``clusters:`` section and
``eocausal clusters`` builds its options from it, so a default or bound cannot disagree
between the two. Importing this module costs no torch: configs are read before any stage.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eocausal.errors import ConfigError

__all__ = ["ClustersSettings", "MIN_UNITS_PER_CLUSTER", "check_clusters_settings"]

# Fewer units than this per cluster leave mu_k and the cluster head without enough data.
MIN_UNITS_PER_CLUSTER = 30


class ClustersSettings(BaseModel):
    """How the cluster model is fitted: K, the encoder, the optimiser and the folds."""

    model_config = ConfigDict(extra="forbid")

    k: int | Literal["auto"] = Field(
        2, description="Number of clusters (>= 2), or 'auto': chosen over k_range by "
                        "held-out predictive log-likelihood.")
    k_range: tuple[int, int] = Field(
        (2, 5), description="Smallest and largest K tried with k='auto' (inclusive).")
    encoder: Literal["features", "cnn"] = Field(
        "features", description="features: an MLP on a features table; cnn: a small CNN "
                                "trained end to end on the chips of the tile store.")
    hidden: int = Field(32, ge=1, description="Width of the image representation.")
    cluster_encoder: Literal["auto", "shared", "own"] = Field(
        "auto", description="shared: the cluster head reads the outcome head's encoder; own: "
                            "it has an encoder of its own, so its salience follows what makes "
                            "the cluster, not what predicts the outcome; auto: own for 'cnn', "
                            "shared for 'features'.")
    epochs: int = Field(100, ge=1, description="Passes over the training units per fit.")
    batch_size: int = Field(64, ge=2, description="Units per optimiser step.")
    learning_rate: float = Field(0.01, gt=0.0, lt=10.0, description="Adam step size.")
    weight_decay: float = Field(1e-4, ge=0.0, description="L2 penalty of the point-estimated weights.")
    n_draws: int = Field(4, ge=1, description="Posterior draws per step (reparameterised).")
    n_predictive_draws: int = Field(200, ge=10, description="Posterior draws for outputs.")
    cv: int = Field(3, ge=2, description="Cross-fitting folds (grouped when groups are given).")
    design: Literal["rct", "observational"] = Field(
        "rct", description="rct: known assignment probability; observational: cross-fitted "
                           "propensity from features and covariates.")
    propensity: float | None = Field(
        None, gt=0.0, lt=1.0, description="A trial's known assignment probability "
                                          "(default: the treated share).")
    prior_mu_sd: float = Field(2.0, gt=0.0, description="Prior sd of mu_k (standardised outcome).")
    cluster_noise: float = Field(
        0.02, ge=0.0, lt=0.5, description="Probability that a unit's cluster is any cluster, "
                                          "not its image's: bounds the cost of a confident "
                                          "error at a cluster boundary.")
    noise_df: float | None = Field(
        None, gt=2.0, description="Degrees of freedom of Student-t outcome noise (None: "
                                  "Gaussian); heavy tails keep units the outcome head fits "
                                  "badly from forming a cluster of their own.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    seed: int = Field(0, ge=0, description="Seed of folds, initialisation, batches and draws.")

    @field_validator("k")
    @classmethod
    def _k_at_least_two(cls, value: int | str) -> int | str:
        if value != "auto" and value < 2:
            raise ValueError(f"k must be an int >= 2 or 'auto'; got {value!r}. A single cluster "
                             "has no heterogeneity to model: use 'eocausal estimate' for the ATE")
        return value

    @model_validator(mode="after")
    def _range_ordered(self) -> ClustersSettings:
        lo, hi = self.k_range
        if lo < 2:
            raise ValueError(f"k_range must start at 2 or more; got {self.k_range!r}. Held-out "
                             "likelihood against one cluster is reported separately")
        if hi < lo:
            raise ValueError(f"k_range must be (smallest, largest); got {self.k_range!r}")
        return self

    def own_cluster_encoder(self, encoder: str) -> bool:
        """Whether the cluster head gets its own encoder for an ``encoder`` model."""
        return self.cluster_encoder == "own" or (self.cluster_encoder == "auto"
                                                 and encoder == "cnn")

    def candidate_ks(self) -> list[int]:
        """The K values to fit: ``[k]``, or every K of ``k_range`` with ``k='auto'``."""
        if self.k == "auto":
            return list(range(self.k_range[0], self.k_range[1] + 1))
        return [int(self.k)]


def check_clusters_settings(**values: Any) -> ClustersSettings:
    """Validate cluster settings, raising one ``ConfigError`` that names each bad one."""
    try:
        return ClustersSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}={e.get('input')!r}: "
            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ConfigError(f"invalid clusters setting: {problems}. Change the setting and run "
                          "again.") from None
