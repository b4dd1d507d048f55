"""Training and posterior draws of one :class:`ClusterNet` on in-memory tensors.

Seeded end to end: the initial weights, the batch order and every posterior draw come from
``seed``. CPU by default in tests, CUDA when present with ``device='auto'``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from eocausal.models.heterogeneity.network import ChipCNN, ClusterNet, FeatureMLP

__all__ = ["Draws", "NetData", "build_network", "draw_posterior", "heldout_log_likelihood",
           "place_table", "predict_nuisance", "train_network"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class NetData:
    """Model inputs as float32 arrays: image input (features (N, D) or chips (N, C, H, W)),
    covariates (N, P), treatment, the treatment's centre (0 in a trial, the propensity
    with observational data; see :mod:`~eocausal.models.heterogeneity.network`) and
    standardised outcome (N,)."""

    x: np.ndarray
    covariates: np.ndarray
    treatment: np.ndarray
    centre: np.ndarray
    outcome: np.ndarray

    def subset(self, rows: np.ndarray) -> NetData:
        return NetData(self.x[rows], self.covariates[rows], self.treatment[rows],
                       self.centre[rows], self.outcome[rows])

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        return tuple(torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)
                     for a in (self.x, self.covariates, self.treatment, self.centre,
                               self.outcome))

    def __len__(self) -> int:
        return len(self.treatment)


def build_network(input_shape: tuple[int, ...], n_clusters: int, n_covariates: int, *,
                  encoder: str = "features", hidden: int = 32, prior_mu_sd: float = 2.0,
                  cluster_noise: float = 0.0, noise_df: float | None = None,
                  own_cluster_encoder: bool = False, seed: int = 0) -> ClusterNet:
    """A freshly initialised network for inputs of ``input_shape`` (one unit's)."""
    torch.manual_seed(seed)

    def make() -> torch.nn.Module:
        if encoder == "cnn":
            return ChipCNN(input_shape[0], hidden)
        return FeatureMLP(input_shape[0], hidden)

    enc = make()
    return ClusterNet(enc, n_clusters, n_covariates, prior_mu_sd=prior_mu_sd,
                      cluster_noise=cluster_noise, noise_df=noise_df,
                      cluster_encoder=make() if own_cluster_encoder else None)


def train_network(net: ClusterNet, data: NetData, *, epochs: int, batch_size: int,
                  learning_rate: float, weight_decay: float = 1e-4, n_draws: int = 4,
                  seed: int = 0, device: torch.device | None = None) -> list[float]:
    """Maximise the ELBO by Adam over shuffled minibatches; returns the loss of each epoch.

    Weight decay applies to the point-estimated weights only (encoder and outcome head);
    the variational parameters are regularised by their KL term.
    """
    device = device or torch.device("cpu")
    net.to(device).train()
    x, cov, t, e, y = data.tensors(device)
    n = len(data)
    variational = [p for name, p in net.named_parameters()
                   if name.startswith(("cluster_head", "mu_", "log_sigma", "log_noise"))]
    ids = {id(p) for p in variational}
    point = [p for p in net.parameters() if id(p) not in ids]
    optimiser = torch.optim.Adam([{"params": point, "weight_decay": weight_decay},
                                  {"params": variational, "weight_decay": 0.0}], lr=learning_rate)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    batch = min(batch_size, n)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n - batch + 1, batch):  # drop the ragged tail: equal-size steps
            rows = order[start:start + batch]
            loss = net.loss(x[rows], cov[rows], t[rows], e[rows], y[rows], n, n_draws)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.detach()
        losses.append(float(total) / max(n // batch, 1))
    net.eval()
    log.debug("trained K=%d on %d units: final loss %.4f", net.n_clusters, n, losses[-1])
    return losses


@dataclass(frozen=True, eq=False)
class Draws:
    """Posterior draws at N units: cluster probabilities (S, N, K), ``mu`` and ``sigma``
    (S, K) on the standardised scale, and S sampled unit effects ``tau`` (S, N)."""

    probs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    tau: np.ndarray


def _batches(n: int, size: int = 1024) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


@torch.no_grad()
def draw_posterior(net: ClusterNet, x: np.ndarray, *, n_draws: int = 200, seed: int = 0,
                   device: torch.device | None = None) -> Draws:
    """Monte Carlo predictive draws of cluster probabilities and unit effects at ``x``.

    Each draw samples the cluster head's weights and (mu, sigma), then each unit's cluster
    from its probabilities and its effect from that cluster's Normal.
    """
    device = device or torch.device("cpu")
    net.to(device).eval()
    torch.manual_seed(seed)
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)
    h = torch.cat([net.cluster_features(xt[s]) for s in _batches(len(xt))])
    probs, mus, sigmas, taus = [], [], [], []
    for _ in range(n_draws):
        p = net.cluster_log_probs(h).exp()
        d = net.draw()
        k = torch.multinomial(p, 1).squeeze(-1) if p.shape[1] > 1 else torch.zeros(len(p), dtype=torch.long, device=device)
        taus.append(d.mu[k] + d.sigma[k] * torch.randn(len(p), device=device))
        probs.append(p), mus.append(d.mu), sigmas.append(d.sigma)
    as_np = lambda ts: torch.stack(ts).cpu().numpy().astype(np.float64)  # noqa: E731
    return Draws(as_np(probs), as_np(mus), as_np(sigmas), as_np(taus))


@torch.no_grad()
def heldout_log_likelihood(net: ClusterNet, data: NetData, *, n_draws: int = 100, seed: int = 0,
                           device: torch.device | None = None) -> np.ndarray:
    """Per-unit log predictive density log mean_s p(y_i | x_i, draw s), shape (N,)."""
    device = device or torch.device("cpu")
    net.to(device).eval()
    torch.manual_seed(seed)
    x, cov, t, e, y = data.tensors(device)
    parts = []
    for s in _batches(len(data)):
        ll = net.log_likelihood(x[s], cov[s], t[s], e[s], y[s], n_draws)
        parts.append(torch.logsumexp(ll, 0) - np.log(n_draws))
    return torch.cat(parts).cpu().numpy().astype(np.float64)


def place_table(unit_ids: np.ndarray, draws: Draws) -> pd.DataFrame:
    """Per-place summary of posterior draws (see module docstring for the columns)."""
    out: dict[str, np.ndarray] = {"unit_id": np.asarray(unit_ids).astype(str)}
    probs = draws.probs
    for j in range(probs.shape[2]):
        mean = probs[:, :, j].mean(0)
        # where every draw saturates at 0 or 1, rounding can put a quantile past the mean
        out[f"p_cluster_{j + 1}"] = mean
        out[f"p_cluster_{j + 1}_lo"] = np.minimum(np.quantile(probs[:, :, j], 0.025, axis=0), mean)
        out[f"p_cluster_{j + 1}_hi"] = np.maximum(np.quantile(probs[:, :, j], 0.975, axis=0), mean)
    out["cluster"] = probs.mean(0).argmax(1) + 1
    mu = draws.mu if draws.mu.ndim == 3 else draws.mu[:, None, :]
    out["tau_mean"] = (probs * mu).sum(2).mean(0)
    out["tau_lo"] = np.quantile(draws.tau, 0.025, axis=0)
    out["tau_hi"] = np.quantile(draws.tau, 0.975, axis=0)
    return pd.DataFrame(out)


@torch.no_grad()
def predict_nuisance(net: ClusterNet, data: NetData) -> tuple[np.ndarray, np.ndarray]:
    """E[Y(0) | x] and the image's implied effect sum_k p_k mu_k at the posterior means,
    each of shape (N,) on the standardised outcome scale."""
    net.cpu().eval()
    x, cov, _, c, _ = data.tensors(torch.device("cpu"))
    m0, tau = [], []
    for s in _batches(len(data)):
        h, g = net.encode(x[s])
        mubar = (net.cluster_log_probs(g, sample=False).exp() * net.mu_loc).sum(-1)
        m0.append(net.outcome_mean(h, cov[s]) - c[s] * mubar)
        tau.append(mubar)
    return (torch.cat(m0).numpy().astype(np.float64), torch.cat(tau).numpy().astype(np.float64))
