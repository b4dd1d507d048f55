"""Fit the image-cluster model with cross-fitting, choose K, and summarise the clusters.

Each unit's cluster probabilities and effect come from the fold model that did not train on
it (folds grouped by image key or spatial block when groups are given). The cluster effects
mu_k and their 95% intervals are cross-fitted too (:mod:`~.debias`: held-out treated against
held-out control residuals, weighted by held-out membership), as is the implied ATE
(:mod:`~.ate`); sigma_k and the model for new places come from one model fitted on every
unit. ``k='auto'`` fits each K of ``k_range`` on the same folds and keeps the smallest K
whose held-out predictive log-likelihood is within one paired standard error of the best,
among the K whose every cluster holds units (:mod:`~.select`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from eocausal.models.effects.crossfit import make_folds
from eocausal.models.effects.propensity import make_propensity_model
from eocausal.models.features.encode import resolve_device
from eocausal.models.heterogeneity.ate import augmented_ate
from eocausal.models.heterogeneity.debias import cluster_effects_aipw, responsibilities
from eocausal.models.heterogeneity.laplace import HeadPosterior, head_posterior
from eocausal.models.heterogeneity.select import cluster_sizes, select_k
from eocausal.models.heterogeneity.settings import MIN_UNITS_PER_CLUSTER, ClustersSettings
from eocausal.models.heterogeneity.train import (
    Draws,
    NetData,
    build_network,
    draw_posterior,
    heldout_log_likelihood,
    place_table,
    predict_nuisance,
    train_network,
)
from sklearn.base import clone

from eocausal.errors import ConfigError, EstimationError

__all__ = ["ClusterInputs", "ClusterModel", "ClusterResult", "fit_clusters", "fit_model",
           "make_inputs"]

log = logging.getLogger(__name__)

_Z95 = 1.959964


@dataclass(frozen=True, eq=False)
class ClusterInputs:
    """What the model sees: ids, images (features (N, D), or normalised chips
    (N, T, C, H, W)), treatment, outcome, optional covariates (N, P) and fold groups."""

    unit_ids: np.ndarray
    images: np.ndarray
    treatment: np.ndarray
    outcome: np.ndarray
    covariates: np.ndarray
    groups: np.ndarray | None = None
    band_names: tuple[str, ...] = ()
    dates: tuple[str | None, ...] = ()

    @property
    def encoder(self) -> str:
        return "cnn" if self.images.ndim == 5 else "features"


def make_inputs(unit_ids: Any, images: Any, treatment: Any, outcome: Any, *,
                covariates: Any = None, groups: Any = None, band_names: Any = (),
                dates: Any = ()) -> ClusterInputs:
    """Validate and pack the model's inputs; a mistake raises a message that says the fix.

    Raises
    ------
    EstimationError
        If lengths differ, values are missing or every unit is in one arm.
    """
    ids = np.asarray(unit_ids).astype(str)
    x = np.asarray(images, dtype=np.float32)
    t = np.asarray(treatment, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    cov = (np.zeros((len(ids), 0)) if covariates is None
           else np.asarray(covariates, dtype=np.float64).reshape(len(ids), -1))
    if x.ndim not in (2, 5):
        raise EstimationError(f"images must be features (N, D) or chips (N, T, C, H, W); got "
                              f"shape {x.shape}.")
    lengths = {"unit_ids": len(ids), "images": len(x), "treatment": len(t), "outcome": len(y),
               "covariates": len(cov)}
    if len(set(lengths.values())) != 1:
        raise EstimationError(f"inputs must have one row per unit; got lengths {lengths}.")
    for name, values in (("treatment", t), ("outcome", y), ("covariates", cov), ("images", x)):
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            raise EstimationError(f"{name} is missing or not finite for {int(bad.sum())} units "
                                  f"(e.g. {list(ids[bad][:3])}); drop or impute them first.")
    if not np.isin(t, (0.0, 1.0)).all():
        raise EstimationError(f"treatment must be 0/1; got values {sorted(set(t.tolist()))[:5]}.")
    if t.min() == t.max():
        arm = "treated" if t[0] == 1 else "control"
        raise EstimationError(f"all {len(t)} units are {arm}: cluster effects need treated and "
                              "control units. Check the treatment column.")
    g = None if groups is None else np.asarray(groups)
    return ClusterInputs(ids, x, t, y, cov, g, tuple(band_names), tuple(dates))


def _net_input(images: np.ndarray) -> np.ndarray:
    """Chips (N, T, C, H, W) -> (N, T * C, H, W); features stay as they are."""
    return images.reshape(len(images), -1, *images.shape[3:]) if images.ndim == 5 else images


@dataclass(frozen=True, eq=False)
class ClusterModel:
    """A fitted network plus the scalings that map raw inputs to it and its outputs back."""

    net: Any
    n_clusters: int
    encoder: str
    x_mean: np.ndarray
    x_sd: np.ndarray
    y_mean: float
    y_sd: float
    settings: ClustersSettings
    posterior: HeadPosterior | None = None

    def network_input(self, images: np.ndarray) -> np.ndarray:
        """Raw images (features or normalised chips) -> the network's standardised input."""
        x = _net_input(np.asarray(images, dtype=np.float32))
        return ((x - self.x_mean) / self.x_sd).astype(np.float32) if self.encoder == "features" else x

    def draws(self, images: np.ndarray, *, n_draws: int | None = None, seed: int = 0,
              device: torch.device | None = None) -> Draws:
        """Posterior predictive draws at ``images`` (effects in outcome units)."""
        d = draw_posterior(self.net, self.network_input(images),
                           n_draws=n_draws or self.settings.n_predictive_draws, seed=seed,
                           device=device)
        return Draws(d.probs, d.mu * self.y_sd, d.sigma * self.y_sd, d.tau * self.y_sd)


@dataclass(frozen=True, eq=False)
class ClusterResult:
    """Everything the clusters stage returns: the cluster table, the implied ATE, per-unit
    held-out outputs, the K-selection curve and the model fitted on every unit."""

    k: int
    clusters: pd.DataFrame
    ate: float
    ate_lo: float
    ate_hi: float
    units: pd.DataFrame
    model: ClusterModel
    inputs: ClusterInputs
    selection: pd.DataFrame | None = None
    heldout_loglik: float = float("nan")
    heldout_loglik_one_cluster: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The content of ``clusters.json``."""
        return {
            "k": self.k, "clusters": self.clusters.to_dict(orient="records"),
            "implied_ate": {"estimate": self.ate, "lo": self.ate_lo, "hi": self.ate_hi},
            "heldout_loglik_per_unit": self.heldout_loglik,
            "heldout_loglik_per_unit_one_cluster": self.heldout_loglik_one_cluster,
            "selection": None if self.selection is None else self.selection.to_dict(orient="records"),
            **self.info,
        }


def _propensity(inputs: ClusterInputs, settings: ClustersSettings, folds: list) -> np.ndarray:
    """Known assignment probability in a trial; out-of-fold logistic fit when observational."""
    t = inputs.treatment
    if settings.design == "rct":
        return np.full(len(t), settings.propensity if settings.propensity else t.mean())
    x = inputs.images if inputs.encoder == "features" else inputs.images.mean(axis=(3, 4)).reshape(len(t), -1)
    design = np.hstack([x, inputs.covariates])
    model, e = make_propensity_model(settings.seed, kind="logistic"), np.empty(len(t))
    for train, test in folds:
        e[test] = clone(model).fit(design[train], t[train]).predict_proba(design[test])[:, 1]
    return np.clip(e, 0.02, 0.98)


def _check_sizes(n_units: int, ks: list[int]) -> None:
    worst = max(ks)
    if n_units < MIN_UNITS_PER_CLUSTER * worst:
        raise ConfigError(
            f"K={worst} clusters for {n_units} units leaves fewer than {MIN_UNITS_PER_CLUSTER} "
            f"units per cluster; use k <= {max(n_units // MIN_UNITS_PER_CLUSTER, 1)} "
            "(or a smaller k_range), or add units.")


class _Fitter:
    """Fits networks on subsets of one prepared data set (shared scalings, device, seed)."""

    def __init__(self, inputs: ClusterInputs, settings: ClustersSettings, e: np.ndarray) -> None:
        self.s, self.device = settings, resolve_device(settings.device)
        x = _net_input(inputs.images)
        self.y_mean, self.y_sd = float(inputs.outcome.mean()), float(inputs.outcome.std() or 1.0)
        if inputs.encoder == "features":
            self.x_mean = x.mean(axis=0)
            self.x_sd = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0).astype(np.float32)
            x = (x - self.x_mean) / self.x_sd
        else:
            self.x_mean, self.x_sd = np.zeros(1, np.float32), np.ones(1, np.float32)
        cov = inputs.covariates
        cov = (cov - cov.mean(0)) / np.where(cov.std(0) > 0, cov.std(0), 1.0) if cov.size else cov
        centre = e if settings.design == "observational" else np.zeros_like(e)
        self.data = NetData(x.astype(np.float32), cov.astype(np.float32),
                            inputs.treatment.astype(np.float32), centre.astype(np.float32),
                            ((inputs.outcome - self.y_mean) / self.y_sd).astype(np.float32))
        self.encoder = inputs.encoder

    def fit(self, rows: np.ndarray, k: int, seed: int) -> ClusterModel:
        s, data = self.s, self.data.subset(rows)
        net = build_network(data.x.shape[1:], k, data.covariates.shape[1], encoder=self.encoder,
                            hidden=s.hidden, prior_mu_sd=s.prior_mu_sd,
                            cluster_noise=s.cluster_noise, noise_df=s.noise_df,
                            own_cluster_encoder=s.own_cluster_encoder(self.encoder), seed=seed)
        with torch.no_grad():
            net.mu_loc.copy_(torch.as_tensor(initial_effects(data, k), dtype=torch.float32))
        train_network(net, data, epochs=s.epochs, batch_size=s.batch_size,
                      learning_rate=s.learning_rate, weight_decay=s.weight_decay,
                      n_draws=s.n_draws, seed=seed, device=self.device)
        net.reorder(torch.argsort(net.mu_loc.detach()))  # label switching: clusters by mu
        return ClusterModel(net.cpu(), k, self.encoder, self.x_mean, self.x_sd, self.y_mean,
                            self.y_sd, s)

    def heldout(self, model: ClusterModel, rows: np.ndarray, seed: int) -> np.ndarray:
        return heldout_log_likelihood(model.net, self.data.subset(rows), n_draws=100,
                                      seed=seed, device=self.device)


def initial_effects(data: NetData, k: int, iterations: int = 20) -> np.ndarray:
    """Starting mu's: 1-D k-means of the treated units' outcomes net of a ridge fit of the
    controls' outcomes on the image summary and covariates.

    A fixed start (mu spread over [-0.5, 0.5]) left some fits in a merged optimum (two
    planted clusters under one mu): held-out ARI 0.45-0.66 on 2 of 10 benchmark seeds.
    """
    x = data.x if data.x.ndim == 2 else data.x.mean(axis=(2, 3))
    design = np.hstack([np.ones((len(x), 1)), x, data.covariates]).astype(np.float64)
    control, treated = data.treatment == 0, data.treatment == 1
    gram = design[control].T @ design[control] + np.eye(design.shape[1])
    coef = np.linalg.solve(gram, design[control].T @ data.outcome[control])
    resid = data.outcome[treated] - design[treated] @ coef
    centres = np.quantile(resid, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        nearest = np.abs(resid[:, None] - centres[None, :]).argmin(1)
        centres = np.array([resid[nearest == j].mean() if (nearest == j).any() else centres[j]
                            for j in range(k)])
    return np.sort(centres)


def _stack_heldout(parts: list[tuple[np.ndarray, Draws]], n: int) -> Draws:
    s, k = parts[0][1].probs.shape[0], parts[0][1].probs.shape[2]
    probs, tau = np.empty((s, n, k)), np.empty((s, n))
    for rows, d in parts:
        probs[:, rows], tau[:, rows] = d.probs, d.tau
    # unit-level mu per draw: each unit's own fold model's draws
    mu_units = np.empty((s, n, k))
    for rows, d in parts:
        mu_units[:, rows] = d.mu[:, None, :]
    return Draws(probs, mu_units, np.zeros((s, k)), tau)


def fit_model(inputs: ClusterInputs, settings: ClustersSettings | None = None) -> ClusterModel:
    """One model with ``settings.k`` clusters fitted on every unit, without cross-fitting.

    For predicting at new places and for salience when held-out outputs are not needed;
    :func:`fit_clusters` returns the same full-data model as ``result.model``. Its
    ``posterior`` holds the heads' sandwich covariance (the intervals of mu).
    """
    s = settings or ClustersSettings()
    if s.k == "auto":
        raise ConfigError("fit_model needs a fixed k; use fit_clusters to choose K.")
    _check_sizes(len(inputs.treatment), [int(s.k)])
    folds = make_folds(inputs.treatment.astype(int), cv=s.cv, groups=inputs.groups,
                       random_state=s.seed)
    fitter = _Fitter(inputs, s, _propensity(inputs, s, folds))
    model = fitter.fit(np.arange(len(inputs.treatment)), int(s.k), seed=s.seed + 7)
    return replace(model, posterior=head_posterior(model.net, fitter.data))


def fit_clusters(inputs: ClusterInputs, settings: ClustersSettings | None = None, *,
                 compare_one_cluster: bool = True) -> ClusterResult:
    """Fit the cluster model (any K, or K chosen by held-out likelihood) with cross-fitting.

    Parameters
    ----------
    inputs : ClusterInputs
        From :func:`make_inputs` (or :func:`~eocausal.models.heterogeneity.data.load_inputs`).
    settings : ClustersSettings, default=ClustersSettings()
    compare_one_cluster : bool, default=True
        Also cross-fit a one-cluster model and report its held-out log-likelihood.

    Returns
    -------
    result : ClusterResult

    Raises
    ------
    ConfigError
        If K leaves fewer than 30 units per cluster.
    EstimationError
        If the folds cannot be built (too few groups, an arm missing from a split).
    """
    s = settings or ClustersSettings()
    ks = s.candidate_ks()
    n = len(inputs.treatment)
    _check_sizes(n, ks)
    folds = make_folds(inputs.treatment.astype(int), cv=s.cv, groups=inputs.groups,
                       random_state=s.seed)
    e = _propensity(inputs, s, folds)
    fitter = _Fitter(inputs, s, e)
    curves: dict[int, np.ndarray] = {}
    heldout: dict[int, list[tuple[np.ndarray, Draws]]] = {}
    nuisance: dict[int, np.ndarray] = {}  # held-out E[Y(0) | x] and implied effect, (2, n)
    members: dict[int, np.ndarray] = {}  # held-out p(cluster | x, t, y), (n, K)
    smallest: dict[int, float] = {}  # units of the least-held cluster of any fold model
    for k in ks + ([1] if compare_one_cluster else []):
        ll, parts, nuis, resp = np.empty(n), [], np.empty((2, n)), np.empty((n, k))
        sizes = []
        for j, (train, test) in enumerate(folds):
            model = fitter.fit(train, k, seed=s.seed + 1000 * k + j)
            ll[test] = fitter.heldout(model, test, seed=s.seed + j)
            if k > 1:
                draws = model.draws(inputs.images[test], seed=s.seed + j)
                parts.append((test, draws))
                nuis[:, test] = predict_nuisance(model.net, fitter.data.subset(test))
                resp[test] = responsibilities(model.net, fitter.data.subset(test))
                sizes.append(cluster_sizes(draws.probs.mean(0), n).min())
        curves[k], heldout[k], nuisance[k], members[k] = ll, parts, nuis, resp
        smallest[k] = float(min(sizes)) if sizes else float(n)
        log.info("K=%d: held-out log-likelihood %.4f per unit, smallest cluster %.0f units",
                 k, ll.mean(), smallest[k])
    one = curves.pop(1, None)
    if len(ks) > 1:
        k, selection = select_k(curves, smallest)
    else:
        k, selection = ks[0], None
    model = fitter.fit(np.arange(n), k, seed=s.seed + 7)
    post = head_posterior(model.net, fitter.data)
    model = replace(model, posterior=post)
    units = place_table(inputs.unit_ids, _stack_heldout(heldout[k], n))
    mu, mu_sd = cluster_effects_aipw(fitter.data.outcome, inputs.treatment, e,
                                     nuisance[k][0], members[k])
    mu, mu_sd = mu * model.y_sd, mu_sd * model.y_sd
    clusters = pd.DataFrame({
        "cluster": np.arange(1, k + 1), "mu": mu, "mu_lo": mu - _Z95 * mu_sd,
        "mu_hi": mu + _Z95 * mu_sd, "mu_sd": mu_sd,
        "sigma": np.exp(post.value("log_sigma_loc")) * model.y_sd,
        "share": [float(units[f"p_cluster_{j}"].mean()) for j in range(1, k + 1)],
        "mu_model": post.value("mu_loc") * model.y_sd,
        "mu_model_sd": post.sd("mu_loc") * model.y_sd})
    ate, ate_se = augmented_ate(fitter.data.outcome, inputs.treatment, e, *nuisance[k])
    ate, ate_se = ate * model.y_sd, ate_se * model.y_sd
    return ClusterResult(
        k=k, clusters=clusters, ate=ate, ate_lo=ate - _Z95 * ate_se, ate_hi=ate + _Z95 * ate_se,
        units=units, model=model, inputs=inputs, selection=selection,
        heldout_loglik=float(curves[k].mean()),
        heldout_loglik_one_cluster=None if one is None else float(one.mean()),
        info={"design": s.design, "encoder": inputs.encoder, "cv": s.cv, "n_units": n,
              "grouped_folds": inputs.groups is not None,
              "selection_rule": "smallest K within one paired SE of the best held-out "
                                "log-likelihood, among the K whose every cluster holds "
                                f"{MIN_UNITS_PER_CLUSTER} units or more"
                                if selection is not None else None,
              "outcome_scale": "held-out log-likelihood of the standardised outcome",
              "intervals": "mu: cross-fitted difference of treated and control held-out "
                           "residuals weighted by held-out cluster membership (mu_model: the "
                           "full model's mu with the heads' sandwich sd); implied ATE: "
                           "cross-fitted AIPW on the held-out fold models",
              "implied_ate_plug_in": float(post.sample_ate()[0] * model.y_sd),
              "settings": s.model_dump(mode="json")})
