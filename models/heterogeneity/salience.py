"""Salience: which pixels move an image into a cluster.

The gradient of a cluster's log-probability with respect to the (normalised) pixels, signed,
averaged over posterior draws of the cluster head, as in "Image-based Treatment Effect
Heterogeneity" (Jerzak, Johansson and Daoud, 2023). Needs a model trained end to end on
chips (``encoder='cnn'``): a frozen features table has no gradient back to the pixels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from eocausal.models.heterogeneity.fit import ClusterModel

from eocausal.errors import ConfigError

__all__ = ["cluster_salience", "select_examples"]


def cluster_salience(model: ClusterModel, chips: np.ndarray, cluster: int, *,
                     n_draws: int = 32, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Mean over posterior draws of d log p(cluster | chip) / d pixel.

    Parameters
    ----------
    model : ClusterModel
        A ``cnn`` model (``ClusterResult.model``).
    chips : ndarray of shape (N, T, C, H, W)
        Normalised chips (as :func:`~eocausal.models.heterogeneity.data.read_store_chips`).
    cluster : int
        Cluster number, 1..K (clusters are ordered by mu).

    Returns
    -------
    salience : ndarray of shape (N, T, C, H, W)
        Signed gradient; its magnitude says how strongly a pixel moves the assignment.

    Raises
    ------
    ConfigError
        If the model was trained on a features table or ``cluster`` is out of range.
    """
    if model.encoder != "cnn":
        raise ConfigError("salience needs a model trained end to end on chips (encoder "
                          "'cnn'); a features table has no gradient back to the pixels.")
    if not 1 <= cluster <= model.n_clusters:
        raise ConfigError(f"cluster must be in 1..{model.n_clusters}; got {cluster}.")
    net = model.net.cpu().eval()
    chips = np.asarray(chips, dtype=np.float32)
    shape = chips.shape
    out = np.empty(shape, dtype=np.float32)
    torch.manual_seed(seed)
    for start in range(0, shape[0], batch_size):
        x = torch.from_numpy(model.network_input(chips[start:start + batch_size])).requires_grad_(True)
        h = net.encoder(x)
        total = torch.zeros(())
        for _ in range(n_draws):
            total = total + net.cluster_log_probs(h, sample=True)[:, cluster - 1].sum()
        (grad,) = torch.autograd.grad(total / n_draws, x)
        out[start:start + batch_size] = grad.numpy().reshape((-1, *shape[1:]))
    return out


def select_examples(units: pd.DataFrame, cluster: int, n: int = 4,
                    images: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Row positions of the most typical (highest probability) and most uncertain (lowest
    winning probability) units assigned to ``cluster``; with ``images``, each image once
    (units that share an image, as in a trial's image keys, are shown once)."""
    p = units[f"p_cluster_{cluster}"].to_numpy()
    assigned = np.flatnonzero(units["cluster"].to_numpy() == cluster)
    order = assigned[np.argsort(-p[assigned], kind="stable")]

    def distinct(rows: np.ndarray) -> np.ndarray:
        if images is None:
            return rows[:n]
        seen, keep = set(), []
        for r in rows:
            key = images[r].tobytes()
            if key not in seen:
                seen.add(key)
                keep.append(r)
            if len(keep) == n:
                break
        return np.asarray(keep, dtype=np.int64)

    return {"typical": distinct(order), "uncertain": distinct(order[::-1])}
