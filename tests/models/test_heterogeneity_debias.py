"""Cross-fitted cluster effects and the K rule: the treated-against-control difference of
held-out residuals cancels a cluster-wise error of E[Y(0) | x] that the treated mean keeps,
its standard error is the two arms' sampling error, held-out memberships follow Bayes' rule,
and a cluster that no image holds does not count as one. Coverage over the benchmark's
seeds is measured in benchmarks/bench_clusters.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eocausal.models.heterogeneity.debias import cluster_effects_aipw, responsibilities
from eocausal.models.heterogeneity.network import ClusterNet, FeatureMLP
from eocausal.models.heterogeneity.select import cluster_sizes, select_k
from eocausal.models.heterogeneity.train import NetData
from scipy import stats

MU = np.array([-1.0, 0.5, 3.0])


def _trial(rng: np.random.Generator, n: int = 3000, e: float = 0.5, bias: float = 0.3):
    """Three clusters known exactly, an E[Y(0) | x] off by ``bias`` in cluster 2, noise 0.5."""
    cluster = rng.integers(0, 3, n)
    t = (rng.uniform(size=n) < e).astype(float)
    f = rng.normal(size=n)
    y = f + t * MU[cluster] + 0.5 * rng.normal(size=n)
    untreated = f + bias * (cluster == 1)
    return y, t, np.full(n, e), untreated, np.eye(3)[cluster], cluster


def test_a_cluster_wise_error_of_the_outcome_model_cancels() -> None:
    y, t, e, untreated, member, cluster = _trial(np.random.default_rng(0))
    mu, se = cluster_effects_aipw(y, t, e, untreated, member)
    np.testing.assert_allclose(mu, MU, atol=3 * se.max())
    # the treated units' mean residual keeps the 0.3 error of cluster 2
    treated_only = np.array([(y - untreated)[(t == 1) & (cluster == k)].mean() for k in range(3)])
    assert treated_only[1] - MU[1] == pytest.approx(-0.3, abs=3 * se[1])
    # standard error: the noise of two arms' means, sqrt(0.25 / n_T + 0.25 / n_C)
    expected = [np.sqrt(0.25 / ((t == 1) & (cluster == k)).sum()
                        + 0.25 / ((t == 0) & (cluster == k)).sum()) for k in range(3)]
    np.testing.assert_allclose(se, expected, rtol=0.1)


def test_standard_errors_are_calibrated_over_replications() -> None:
    rng = np.random.default_rng(1)
    z = []
    for _ in range(300):
        y, t, e, untreated, member, _ = _trial(rng, n=600, e=0.3)
        mu, se = cluster_effects_aipw(y, t, e, untreated, member)
        z.append((mu - MU) / se)
    z = np.array(z)
    assert 0.9 < z.std() < 1.1, z.std()
    assert abs(z.mean()) < 0.15
    assert 0.93 < (np.abs(z) < 1.96).mean() < 0.97


def test_soft_membership_weights_units_between_clusters() -> None:
    # half weight on two clusters counts a unit half in each
    y = np.array([1.0, 3.0, 0.0, 0.0])
    t = np.array([1.0, 1.0, 0.0, 0.0])
    member = np.array([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    mu, _ = cluster_effects_aipw(y, t, np.full(4, 0.5), np.zeros(4), member)
    np.testing.assert_allclose(mu, [(1.0 + 0.5 * 3.0) / 1.5, 3.0])


def test_responsibilities_follow_bayes_rule() -> None:
    torch.manual_seed(0)
    net = ClusterNet(FeatureMLP(3, 4), 2, cluster_noise=0.02)
    with torch.no_grad():
        net.mu_loc.copy_(torch.tensor([-1.0, 2.0]))
        net.log_sigma_loc.copy_(torch.log(torch.tensor([0.3, 0.6])))
        net.log_noise.fill_(np.log(0.5))
    rng = np.random.default_rng(2)
    n = 6
    x = rng.normal(size=(n, 3)).astype(np.float32)
    t = np.array([1, 1, 1, 0, 0, 0], np.float32)
    y = np.array([-1.1, 2.2, 0.4, 5.0, -3.0, 0.0], np.float32)
    data = NetData(x, np.zeros((n, 0), np.float32), t, np.zeros(n, np.float32), y)
    r = responsibilities(net, data)
    with torch.no_grad():
        h, g = net.encode(torch.from_numpy(x))
        prior = net.cluster_log_probs(g, sample=False).exp().numpy()
        m = net.outcome_mean(h, None).numpy()
    for i in range(n):
        dens = [stats.norm.pdf(y[i], m[i] + t[i] * mu, np.sqrt(0.25 + t[i] * s**2))
                for mu, s in ((-1.0, 0.3), (2.0, 0.6))]
        post = prior[i] * np.array(dens)
        np.testing.assert_allclose(r[i], post / post.sum(), rtol=1e-4, atol=1e-6)
    # a control's outcome says nothing about its cluster
    np.testing.assert_allclose(r[3:], prior[3:], rtol=1e-5)


def test_cluster_sizes_count_most_probable_clusters() -> None:
    probs = np.array([[0.7, 0.29, 0.01], [0.6, 0.39, 0.01], [0.2, 0.79, 0.01], [0.4, 0.59, 0.01]])
    np.testing.assert_allclose(cluster_sizes(probs, 100), [50.0, 50.0, 0.0])


def test_a_better_likelihood_from_an_empty_cluster_does_not_choose_k() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=2000)
    curves = {2: base - 0.3, 3: base, 4: base + 0.03 + 0.01 * rng.normal(size=2000)}
    k, table = select_k(curves, {2: 600.0, 3: 250.0, 4: 0.0})
    assert k == 3
    assert table.set_index("k")["candidate"].to_dict() == {2: True, 3: True, 4: False}
    # the likelihood alone picks 4; with the spare cluster holding units, so does the rule
    assert select_k(curves, {2: 600.0, 3: 250.0, 4: 120.0})[0] == 4
    # within one paired standard error the smaller K wins
    close = {2: base, 3: base + 0.001 * rng.normal(size=2000)}
    assert select_k(close, {2: 900.0, 3: 300.0})[0] == 2
