"""Sequence encoders: a per-date image encoder, then temporal aggregation of the embeddings.

A unit imaged on T dates gives T embeddings (T, D). Whether a sequence beats a single image
is one of the questions of Jerzak et al. ("Effect Heterogeneity with Earth Observation in
Randomized Controlled Trials"), so the aggregations the paper family compares are all here:

* ``mean``: average over the dates a unit was seen (D features);
* ``concat``: every date's embedding in date order, then one 0/1 indicator per date
  (T * D + T features); a masked date's slot is zeros and its indicator 0, so a model can
  tell "not seen" from "seen with features near zero";
* ``mean_diff``: the mean, then the mean of the first differences between consecutive seen
  dates, which telescopes to ``(last - first) / (n_seen - 1)``: the average change per
  observed step (2 D features; zero change with fewer than two seen dates);
* ``mean_var``: the mean, then the population variance over seen dates (2 D features);
* ``attention``: a weighted mean whose weights are a masked softmax of a small additive
  attention score ``q . tanh(W e_t + b)`` (D features). Its parameters are drawn once from
  ``seed``; used through the registry it is **untrained** (a fixed, data-dependent
  weighting). :mod:`models.finetune` trains it end to end with the CNN.

Masked dates (no valid pixel, or fewer than ``min_valid_fraction`` of the chip valid) are
left out: they are not encoded and not averaged in, so aggregating a sequence with masked
dates gives exactly what aggregating only its seen dates gives. A unit with no seen date at
all gets zero features (zero is the band mean after normalisation, so it adds no signal).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from eocausal.errors import EncoderError

__all__ = [
    "AGGREGATIONS",
    "AttentionPool",
    "SequenceEncoder",
    "aggregate_dates",
    "aggregated_size",
    "date_mask",
]

AGGREGATIONS = ("mean", "concat", "mean_diff", "mean_var", "attention")


def _check_method(method: str) -> None:
    if method not in AGGREGATIONS:
        raise EncoderError(
            f"Unknown temporal aggregation {method!r}. Choose one of {', '.join(AGGREGATIONS)}."
        )


def aggregated_size(method: str, n_features: int, n_dates: int | None = None) -> int:
    """Output size of ``method`` for per-date embeddings of size ``n_features``.

    Raises
    ------
    EncoderError
        If the method is unknown, or ``concat`` is asked for without ``n_dates``.
    """
    _check_method(method)
    if method == "concat":
        if n_dates is None:
            raise EncoderError(
                "aggregate='concat' needs n_dates (its output has one slot per date). Give "
                "n_dates, or let prepare_encoder take it from the tile store."
            )
        return n_dates * (n_features + 1)
    return 2 * n_features if method in ("mean_diff", "mean_var") else n_features


def date_mask(
    valid: np.ndarray | torch.Tensor, min_valid_fraction: float = 0.0
) -> torch.Tensor:
    """Which dates of each unit count as seen: shape (B, T) bool from pixel masks (B, T, H, W).

    A date is seen when it has at least one valid pixel and a valid fraction of at least
    ``min_valid_fraction``; ``valid[b, t].sum() == 0`` is always masked.
    """
    valid_t = torch.as_tensor(np.asarray(valid) if not torch.is_tensor(valid) else valid)
    if valid_t.ndim != 4:
        raise EncoderError(f"valid must have shape (B, T, H, W). Got {tuple(valid_t.shape)}.")
    count = valid_t.reshape(*valid_t.shape[:2], -1).sum(-1)
    fraction = count.double() / max(1, valid_t.shape[2] * valid_t.shape[3])
    return (count > 0) & (fraction >= min_valid_fraction)


class AttentionPool(nn.Module):
    """Additive attention pooling over dates with a masked softmax.

    ``score_t = q . tanh(W e_t + b) / sqrt(hidden)``, weights = softmax over seen dates,
    output = sum of weight times embedding. Parameters are drawn from ``seed`` in a forked RNG
    so the caller's global state is untouched.

    Parameters
    ----------
    n_features : int
        Embedding size D.
    hidden : int, default=64
        Size of the attention projection.
    seed : int or None, default=0
    """

    def __init__(self, n_features: int, *, hidden: int = 64, seed: int | None = 0) -> None:
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise EncoderError(f"attention_dim must be a positive int. Got {hidden!r} instead.")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.project = nn.Linear(n_features, hidden)
            self.query = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.hidden = hidden

    def weights(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax weights (B, T) over seen dates; rows with no seen date are all zero."""
        n_dates = embeddings.shape[1]
        # Scores date by date so each date's score does not depend on the others' presence.
        scores = torch.stack(
            [torch.tanh(self.project(embeddings[:, t])) @ self.query for t in range(n_dates)],
            dim=1,
        ) / math.sqrt(self.hidden)
        scores = scores.masked_fill(~mask, -math.inf)
        top = scores.max(dim=1, keepdim=True).values
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        exp = torch.where(mask, torch.exp(scores - top), torch.zeros_like(scores))
        total = exp[:, 0]
        for t in range(1, n_dates):
            total = total + exp[:, t]
        return exp / torch.where(total > 0, total, torch.ones_like(total))[:, None]

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (B, D) of embeddings (B, T, D) under a date mask (B, T)."""
        weights = self.weights(embeddings, mask)
        out = torch.zeros_like(embeddings[:, 0])
        for t in range(embeddings.shape[1]):
            out = out + weights[:, t, None] * embeddings[:, t]
        return out


def aggregate_dates(
    embeddings: torch.Tensor,
    mask: torch.Tensor,
    method: str = "mean",
    *,
    pool: AttentionPool | None = None,
) -> torch.Tensor:
    """Aggregate per-date embeddings (B, T, D) over the seen dates of a mask (B, T).

    Sums run date by date in date order over seen dates only (a masked date contributes an
    exact zero), so the result equals aggregating the seen dates alone, bit for bit, for
    ``mean``, ``mean_diff`` and ``mean_var``. See the module docstring for each method.

    Parameters
    ----------
    embeddings : Tensor of shape (B, T, D)
    mask : Tensor of shape (B, T), bool
        True where a date is seen.
    method : str, default="mean"
        One of :data:`AGGREGATIONS`.
    pool : AttentionPool, optional
        Required for ``method="attention"``.

    Returns
    -------
    aggregated : Tensor of shape (B, aggregated_size(method, D, T))
    """
    _check_method(method)
    if embeddings.ndim != 3 or tuple(mask.shape) != tuple(embeddings.shape[:2]):
        raise EncoderError(
            f"embeddings must be (B, T, D) and mask (B, T). Got {tuple(embeddings.shape)} and "
            f"{tuple(mask.shape)}."
        )
    mask = mask.to(device=embeddings.device, dtype=torch.bool)
    zero = torch.zeros((), dtype=embeddings.dtype, device=embeddings.device)
    seen = torch.where(mask[..., None], embeddings, zero)
    n_batch, n_dates, n_features = seen.shape
    if n_dates == 0:
        return seen.new_zeros((n_batch, aggregated_size(method, n_features, 0)))
    if method == "concat":
        return torch.cat([seen.reshape(n_batch, -1), mask.to(seen.dtype)], dim=1)
    if method == "attention":
        if pool is None:
            raise EncoderError("aggregate='attention' needs an AttentionPool (pool=...).")
        return pool(seen, mask)
    count = mask.sum(dim=1).to(seen.dtype)[:, None]
    total = torch.zeros_like(seen[:, 0])
    for t in range(n_dates):
        total = total + seen[:, t]
    mean = total / torch.clamp(count, min=1)
    if method == "mean":
        return mean
    if method == "mean_var":
        squares = torch.zeros_like(mean)
        for t in range(n_dates):
            squares = squares + torch.where(mask[:, t, None], (seen[:, t] - mean) ** 2, zero)
        return torch.cat([mean, squares / torch.clamp(count, min=1)], dim=1)
    # mean_diff: mean of first differences between consecutive seen dates.
    index = torch.arange(n_dates, device=seen.device).expand(n_batch, n_dates)
    first = torch.where(mask, index, n_dates).min(dim=1).values.clamp(max=n_dates - 1)
    last = torch.where(mask, index, -1).max(dim=1).values.clamp(min=0)
    rows = torch.arange(n_batch, device=seen.device)
    change = (seen[rows, last] - seen[rows, first]) / torch.clamp(count - 1, min=1)
    return torch.cat([mean, change], dim=1)


class SequenceEncoder(nn.Module):
    """Encode each seen date with an image encoder, then aggregate over dates.

    Parameters
    ----------
    base : nn.Module
        An image encoder (from :func:`models.encoders.build_encoder`) mapping
        (B, C, H, W) to (B, D).
    aggregate : str, default="mean"
        One of :data:`AGGREGATIONS`.
    n_dates : int or None, default=None
        Dates per unit; required by ``concat`` (whose size depends on it) and recorded
        otherwise.
    min_valid_fraction : float, default=0.0
        Dates with a smaller valid-pixel fraction are masked; dates with no valid pixel
        always are.
    attention_dim : int, default=64
        Hidden size of the attention pooling.
    seed : int or None, default=0
        Seeds the attention parameters.

    Notes
    -----
    ``forward`` takes (B, T, C, H, W) and an optional date mask (B, T); the feature stage
    builds the mask from the store's pixel masks with :func:`date_mask`. Only seen dates are
    passed through ``base``, which also saves their compute.
    """

    def __init__(
        self,
        base: nn.Module,
        *,
        aggregate: str = "mean",
        n_dates: int | None = None,
        min_valid_fraction: float = 0.0,
        attention_dim: int = 64,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        _check_method(aggregate)
        if n_dates is not None and (
            isinstance(n_dates, bool) or not isinstance(n_dates, int | np.integer) or n_dates < 1
        ):
            raise EncoderError(f"n_dates must be a positive int. Got {n_dates!r} instead.")
        if not 0.0 <= float(min_valid_fraction) <= 1.0:
            raise EncoderError(
                f"min_valid_fraction must be in [0, 1]. Got {min_valid_fraction!r} instead."
            )
        self.base = base
        self.aggregate = aggregate
        self.n_dates = None if n_dates is None else int(n_dates)
        self.min_valid_fraction = float(min_valid_fraction)
        self.seed = seed
        self.base_features = int(base.n_features)
        self.pool = (
            AttentionPool(self.base_features, hidden=attention_dim, seed=seed)
            if aggregate == "attention"
            else None
        )
        self.attention_dim = attention_dim
        self.attention_trained = False  # models.finetune sets it after training end to end
        self.n_features = aggregated_size(aggregate, self.base_features, self.n_dates)

    @property
    def in_channels(self) -> int | None:
        """Bands the base encoder was built for, when it says."""
        return self.base.settings.get("options", {}).get("in_channels")

    @property
    def settings(self) -> dict[str, Any]:
        """JSON-ready description, including the base encoder's own settings."""
        return {
            "name": "sequence",
            "n_features": self.n_features,
            "options": {
                "in_channels": self.in_channels,
                "aggregate": self.aggregate,
                "n_dates": self.n_dates,
                "min_valid_fraction": self.min_valid_fraction,
                "attention_dim": self.attention_dim,
                "seed": self.seed,
                "attention_trained": self.attention_trained if self.pool is not None else None,
            },
            "base": self.base.settings,
        }

    def forward(self, x: torch.Tensor, date_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, n_features) of sequences (B, T, C, H, W)."""
        if x.ndim != 5:
            raise EncoderError(
                f"A sequence encoder expects input of shape (B, T, C, H, W). Got "
                f"{tuple(x.shape)}; use an image encoder for single dates."
            )
        n_batch, n_dates = x.shape[:2]
        if self.aggregate == "concat" and n_dates != self.n_dates:
            raise EncoderError(
                f"This concat sequence encoder was built for {self.n_dates} dates but the "
                f"chips have {n_dates}. Build it with n_dates={n_dates}."
            )
        if date_mask is None:
            date_mask = torch.ones(n_batch, n_dates, dtype=torch.bool)
        date_mask = date_mask.to(device=x.device, dtype=torch.bool)
        keep = date_mask.reshape(-1)
        flat = x.reshape(n_batch * n_dates, *x.shape[2:])
        embeddings = x.new_zeros(n_batch * n_dates, self.base_features)
        if bool(keep.any()):
            embeddings[keep] = self.base(flat[keep]).to(embeddings.dtype)
        embeddings = embeddings.reshape(n_batch, n_dates, self.base_features)
        return aggregate_dates(embeddings, date_mask, self.aggregate, pool=self.pool)
