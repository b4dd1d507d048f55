"""Uncertainty of the cluster model: the heads' sandwich covariance against weighted least
squares on the same design, the AIPW implied ATE against Horvitz-Thompson, the mu start
and the cluster-noise floor. Coverage over seeds is measured in benchmarks/bench_clusters.py."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from eocausal.models.heterogeneity.ate import augmented_ate
from eocausal.models.heterogeneity.fit import fit_model, initial_effects, make_inputs
from eocausal.models.heterogeneity.network import ClusterNet, FeatureMLP, joint_log_density
from eocausal.models.heterogeneity.settings import ClustersSettings
from eocausal.models.heterogeneity.train import NetData
from scipy import stats

from tests.models.cluster_worlds import planted_world


@pytest.fixture(scope="module")
def world() -> dict:
    w = planted_world(5, n_units=600, n_clusters=2, scene_size=256, chip_size=16)
    w["features"] = w["features"][:, :6]
    return w


def _standardised(w: dict) -> NetData:
    x = (w["features"] - w["features"].mean(0)) / w["features"].std(0)
    cov = (w["covariates"] - w["covariates"].mean(0)) / w["covariates"].std(0)
    y = (w["outcome"] - w["outcome"].mean()) / w["outcome"].std()
    return NetData(x.astype(np.float32), cov.astype(np.float32), w["treatment"].astype(np.float32),
                   np.zeros(len(y), np.float32), y.astype(np.float32))


def test_sandwich_sd_of_mu_matches_weighted_least_squares(world: dict) -> None:
    # planted clusters 6 apart with noise 0.5: a treated unit's cluster is known from its
    # outcome, so given the encoder and the true clusters the model is a weighted regression
    # of y on the outcome head's inputs and treatment x cluster (HC0 errors by statsmodels)
    inputs = make_inputs(world["unit_ids"], world["features"], world["treatment"],
                         world["outcome"], covariates=world["covariates"])
    model = fit_model(inputs, ClustersSettings(k=2, epochs=60, batch_size=32))
    data, net, post = _standardised(world), model.net, model.posterior
    with torch.no_grad():
        h = net.encoder(torch.from_numpy(data.x)).numpy().astype(np.float64)
    h = h[:, h.std(0) > 0]  # dead ReLU units are zero columns
    t, cluster = data.treatment.astype(float), world["cluster"]
    order = np.argsort(world["true_mu"])  # model clusters are ordered by mu
    dummies = np.stack([t * (cluster == order[j]) for j in range(2)], 1)
    sigma = np.exp(post.value("log_sigma_loc"))
    weights = 1 / (np.exp(2 * post.value("log_noise")) + dummies @ sigma**2)
    design = np.hstack([h, data.covariates, np.ones((len(t), 1)), dummies])
    wls = sm.WLS(data.outcome.astype(float), design, weights=weights).fit(cov_type="HC0")
    # known labels are the floor; the sandwich adds the boundary's uncertainty (measured:
    # 0.045 against 0.042 and 0.037 against 0.026 on the standardised scale)
    ratio = post.sd("mu_loc") / wls.bse[-2:]
    assert (ratio > 0.9).all() and (ratio < 1.8).all(), ratio
    np.testing.assert_allclose(post.value("mu_loc"), wls.params[-2:], atol=2 * wls.bse[-2:].max())
    assert (post.sd("mu_loc") * model.y_sd < 0.2).all()


def test_augmented_ate_is_horvitz_thompson_without_a_model() -> None:
    rng = np.random.default_rng(0)
    n = 500
    e = rng.uniform(0.2, 0.8, n)
    t = (rng.uniform(size=n) < e).astype(float)
    y = 1 + 2 * t + rng.normal(size=n)
    ate, se = augmented_ate(y, t, e, np.zeros(n), np.zeros(n))
    ht = t * y / e - (1 - t) * y / (1 - e)
    assert ate == pytest.approx(ht.mean())
    assert se == pytest.approx(ht.std(ddof=1) / np.sqrt(n))


def test_augmented_ate_with_the_true_model_has_only_noise_variance() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    t = (rng.uniform(size=n) < 0.5).astype(float)
    tau = np.where(rng.uniform(size=n) < 0.3, 4.0, -1.0)
    y0 = rng.normal(size=n) * 3
    y = y0 + t * tau + rng.normal(size=n) * 0.5
    ate, se = augmented_ate(y, t, np.full(n, 0.5), y0, tau)
    assert abs(ate - tau.mean()) < 3 * se
    # the score's variance: the effects' spread plus the noise through 1/e and 1/(1-e)
    expected = np.sqrt((tau.var() + 0.25 * 4) / n)
    assert se == pytest.approx(expected, rel=0.1)


def test_mu_start_is_near_the_planted_effects(world: dict) -> None:
    data = _standardised(world)
    start = initial_effects(data, 2) * world["outcome"].std()
    np.testing.assert_allclose(start, np.sort(world["true_mu"]), atol=0.5)


@pytest.mark.parametrize("eps", [0.0, 0.02, 0.1])
def test_cluster_noise_floor(eps: float) -> None:
    net = ClusterNet(FeatureMLP(3, 4), 3, cluster_noise=eps)
    logits = torch.tensor([[50.0, 0.0, -50.0], [0.0, 0.0, 0.0]])
    p = net.mix_log_probs(logits).exp()
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    expected = (1 - eps) * torch.softmax(logits, 1) + eps / 3
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-12)
    assert float(p.min()) >= eps / 3 * (1 - 1e-6)


@pytest.mark.parametrize("df", [None, 4.0])
def test_joint_density_matches_scipy(df: float | None) -> None:
    # one unit per arm, two clusters: log pi + log density of y under each cluster
    m, y = torch.tensor([0.5, -1.0]), torch.tensor([2.0, -0.2])
    t, centre = torch.tensor([1.0, 0.0]), torch.zeros(2)
    mu, sigma, noise_var = torch.tensor([-1.0, 2.0]), torch.tensor([0.3, 0.6]), torch.tensor(0.25)
    log_pi = torch.log(torch.tensor([[0.3, 0.7], [0.9, 0.1]]))
    joint = joint_log_density(m, log_pi, mu, sigma, noise_var, t, centre, y, df).numpy()
    for i in range(2):
        for k in range(2):
            loc = float(m[i] + t[i] * mu[k])
            scale = float(np.sqrt(noise_var + t[i] * sigma[k] ** 2))
            dens = (stats.norm.logpdf(float(y[i]), loc, scale) if df is None
                    else stats.t.logpdf(float(y[i]), df, loc, scale))
            assert joint[i, k] == pytest.approx(float(log_pi[i, k]) + dens, rel=1e-5)
