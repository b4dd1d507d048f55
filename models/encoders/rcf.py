"""Random convolutional features (RCF), the featurization of MOSAIKS (Rolf et al. 2021).

MOSAIKS convolves each image with K fixed filters, applies a ReLU to both signs of the
response (with a bias) and average-pools each map to one number, giving 2K features that a
linear model (ridge) uses downstream. Nothing is trained, so features are cheap, reproducible
and do not leak outcomes: a fair baseline against pretrained networks.

Where this differs from the paper:

* default ``n_features=512`` (K=256 filters), not 8,192 (K=4,096): study chips here are
  32-64 px and N is small, so fewer features suffice; ask for 8192 to match the paper;
* any number of bands; patches are sampled from per-band standardised chips (the store's
  band mean and standard deviation) instead of raw 0-255 RGB, and only from patches whose
  pixels are all valid;
* ``mode="gaussian"`` (standard normal filters, as torchgeo's default) is available; the
  paper's filters are ``mode="empirical"``;
* the negative branch is ``relu(-conv + bias)`` as in the paper's code; torchgeo's RCF uses
  ``relu(-(conv + bias))``, which thresholds the negative side at +1 instead.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eocausal.errors import EncoderError

__all__ = ["RCF", "sample_patches", "zca_whitening"]

log = logging.getLogger(__name__)

MODES = ("gaussian", "empirical")
CPU_BLOCK_BYTES = 8 * 2**20  # response map per CPU sub-batch; about an L2 cache


class RCF(nn.Module):
    """Random convolutional features with fixed filters stored as buffers.

    Parameters
    ----------
    in_channels : int
        Bands C of the chips.
    n_features : int, default=512
        Output size D; must be even: K = D / 2 filters, each giving a positive and a negative
        ReLU feature.
    kernel_size : int, default=3
        Filter side in pixels (paper: 3).
    bias : float, default=-1.0
        Added to the response before each ReLU (the paper's threshold of 1).
    seed : int or None, default=0
        Seeds the Gaussian filters or the patch sampling; None draws fresh ones.
    mode : {"gaussian", "empirical"}, default="gaussian"
        Gaussian filters, or ZCA-whitened patches of the study's own chips, which need
        :meth:`fit_patches` before use.
    zca_bias : float, default=1e-3
        Added to the eigenvalues of the patch covariance before whitening (paper's value);
        it keeps near-constant directions from being blown up.

    Attributes
    ----------
    weights : Tensor of shape (K, C, kernel_size, kernel_size)
    biases : Tensor of shape (K,)
    positions_ : ndarray of shape (K, 3)
        Chip index, row and column of each sampled patch's top-left pixel (after fitting).
    patches_ : ndarray of shape (K, d)
        The sampled patches, flattened and contrast-normalised.
    zca_ : ndarray of shape (d, d)
        The whitening matrix, d = C * kernel_size**2 (empirical mode, after fitting).
    whitened_patches_ : ndarray of shape (K, d)
        Sampled, contrast-normalised patches times ``zca_``.
    """

    weights: torch.Tensor
    biases: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        *,
        n_features: int = 512,
        kernel_size: int = 3,
        bias: float = -1.0,
        seed: int | None = 0,
        mode: str = "gaussian",
        zca_bias: float = 1e-3,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("n_features", n_features, 2)
        _check_int("kernel_size", kernel_size, 1)
        if n_features % 2:
            raise EncoderError(
                f"n_features for rcf must be even (two ReLU signs per filter). Got {n_features}."
            )
        if mode not in MODES:
            raise EncoderError(f"rcf mode must be one of {MODES}. Got {mode!r} instead.")
        self.in_channels = in_channels
        self.n_features = n_features
        self.kernel_size = kernel_size
        self.bias = float(bias)
        self.seed = seed
        self.mode = mode
        self.zca_bias = float(zca_bias)
        self.fitted = mode == "gaussian"
        n_filters = n_features // 2
        shape = (n_filters, in_channels, kernel_size, kernel_size)
        if mode == "gaussian":
            generator = None if seed is None else torch.Generator().manual_seed(int(seed))
            weights = torch.randn(shape, generator=generator)
        else:
            weights = torch.zeros(shape)
        self.register_buffer("weights", weights)
        self.register_buffer("biases", torch.full((n_filters,), self.bias))
        self.n_fit_patches = 0

    @classmethod
    def from_chips(
        cls, chips: np.ndarray, *, valid: np.ndarray | None = None, **options: Any
    ) -> RCF:
        """Build an empirical RCF whose filters come from ``chips`` (N, C, H, W), normalised."""
        chips = np.asarray(chips)
        if chips.ndim != 4:
            raise EncoderError(f"chips must have shape (N, C, H, W). Got shape {chips.shape}.")
        return cls(chips.shape[1], mode="empirical", **options).fit_patches(chips, valid=valid)

    def fit_patches(self, chips: np.ndarray, *, valid: np.ndarray | None = None) -> RCF:
        """Set the filters to ZCA-whitened random patches of ``chips`` (empirical mode).

        Following the MOSAIKS code: K patches are drawn at random positions (seeded), each is
        contrast-normalised (its own mean removed, scaled to unit norm), the whitening matrix
        ``Z = V diag(1 / sqrt(E + zca_bias)) V^T`` is estimated from their covariance, and the
        filters are ``Z (Z p)``: convolving the (standardised, unwhitened) chip with them equals
        convolving the whitened chip with the whitened patch ``Z p``.

        Parameters
        ----------
        chips : ndarray of shape (N, C, H, W)
            Normalised chips (per-band standardised) from the study.
        valid : ndarray of shape (N, H, W) of bool, optional
            Only patches whose pixels are all valid (and finite) are drawn.

        Returns
        -------
        self : RCF
        """
        if self.mode != "empirical":
            raise EncoderError("fit_patches needs an RCF built with mode='empirical'.")
        chips = np.asarray(chips, dtype=np.float64)
        if chips.ndim != 4 or chips.shape[1] != self.in_channels:
            raise EncoderError(
                f"chips for rcf must have shape (N, {self.in_channels}, H, W). "
                f"Got shape {chips.shape}."
            )
        rng = np.random.default_rng(self.seed)
        patches, positions = sample_patches(
            chips, self.weights.shape[0], self.kernel_size, rng, valid=valid
        )
        flat = patches.reshape(len(patches), -1)
        flat = flat - flat.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        flat = flat / np.where(norms < 1e-8, 1.0, norms)
        zca = zca_whitening(flat, self.zca_bias)
        whitened = flat @ zca
        filters = (whitened @ zca).reshape(self.weights.shape)
        self.positions_ = positions
        self.patches_ = flat
        self.zca_ = zca
        self.whitened_patches_ = whitened
        self.weights.copy_(torch.from_numpy(filters).to(self.weights.dtype))
        self.fitted = True
        self.n_fit_patches = len(patches)
        return self

    @property
    def settings(self) -> dict[str, Any]:
        """JSON-ready description: options, and for fitted empirical filters their checksum."""
        out: dict[str, Any] = {
            "name": "rcf",
            "n_features": self.n_features,
            "options": {
                "in_channels": self.in_channels,
                "n_features": self.n_features,
                "kernel_size": self.kernel_size,
                "bias": self.bias,
                "seed": self.seed,
                "mode": self.mode,
                "zca_bias": self.zca_bias,
            },
        }
        if self.mode == "empirical" and self.fitted:
            data = self.weights.detach().cpu().numpy().astype("<f4").tobytes()
            out["filters_sha256"] = hashlib.sha256(data).hexdigest()
            out["n_fit_patches"] = self.n_fit_patches
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of shape (B, n_features): pooled relu(conv + bias), then relu(-conv + bias)."""
        if not self.fitted:
            raise EncoderError(
                "This empirical rcf has no filters yet. Call fit_patches(chips) or build it "
                "with RCF.from_chips(chips)."
            )
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise EncoderError(
                f"rcf expects input of shape (B, {self.in_channels}, H, W). Got {tuple(x.shape)}."
            )
        if min(x.shape[-2:]) < self.kernel_size:
            raise EncoderError(
                f"Chips of {tuple(x.shape[-2:])} px are smaller than the rcf kernel "
                f"({self.kernel_size} px). Use larger chips or a smaller kernel_size."
            )
        # One convolution with [w, -w] and the bias fused: relu(-conv + b) = relu(conv(-w) + b).
        weights = torch.cat((self.weights, -self.weights))
        biases = torch.cat((self.biases, self.biases))
        if x.device.type != "cpu":
            return F.relu_(F.conv2d(x, weights, biases)).mean(dim=(2, 3))
        # On CPU the (B, 2K, H', W') response is memory-bound: sub-batches whose response fits
        # in cache run 2-3x faster (measured 2,000 vs 700 chips/s for 32 px, K=256).
        h, w = x.shape[2] - self.kernel_size + 1, x.shape[3] - self.kernel_size + 1
        step = max(1, CPU_BLOCK_BYTES // (weights.shape[0] * h * w * x.element_size()))
        return torch.cat(
            [F.relu_(F.conv2d(part, weights, biases)).mean(dim=(2, 3)) for part in x.split(step)]
        )


def sample_patches(
    chips: np.ndarray,
    n_patches: int,
    kernel_size: int,
    rng: np.random.Generator,
    *,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_patches`` random (C, k, k) patches whose pixels are valid and finite.

    Positions are drawn uniformly over chips and locations (with replacement, as MOSAIKS)
    and rejected when a pixel is invalid, so the cost does not grow with the number of
    positions; a sparse mask falls back to enumerating the valid positions.

    Returns
    -------
    patches : ndarray of shape (n_patches, C, kernel_size, kernel_size)
    positions : ndarray of shape (n_patches, 3)
        Chip index, row and column of each patch's top-left pixel.

    Raises
    ------
    EncoderError
        If no patch position is fully valid.
    """
    n, c, h, w = chips.shape
    k = kernel_size
    if h < k or w < k:
        raise EncoderError(f"Chips of {h}x{w} px are smaller than the rcf kernel ({k} px).")
    ok = np.isfinite(chips).all(axis=1)
    if valid is not None:
        if valid.shape != (n, h, w):
            raise EncoderError(f"valid must have shape {(n, h, w)}. Got {valid.shape}.")
        ok &= valid.astype(bool)
    # Box sums over k x k windows: a position is usable when all k*k pixels are ok.
    table = np.pad(ok.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    box = table[:, k:, k:] - table[:, :-k, k:] - table[:, k:, :-k] + table[:, :-k, :-k]
    usable = box == k * k
    picked: list[np.ndarray] = []
    found = 0
    for _ in range(64):
        cand = np.stack([rng.integers(0, s, 4 * n_patches) for s in usable.shape], axis=1)
        cand = cand[usable[cand[:, 0], cand[:, 1], cand[:, 2]]]
        picked.append(cand)
        found += len(cand)
        if found >= n_patches:
            break
    if found >= n_patches:
        pos = np.concatenate(picked)[:n_patches]
    else:
        flat = np.flatnonzero(usable)
        if flat.size == 0:
            raise EncoderError(
                f"No {k}x{k} patch of the {n} chips is fully valid, so rcf filters cannot be "
                "sampled. Check the chips' validity masks or use mode='gaussian'."
            )
        pos = np.stack(np.unravel_index(rng.choice(flat, n_patches), usable.shape), axis=1)
    dy = np.arange(k)
    rows = (pos[:, 1, None] + dy)[:, None, :, None]
    cols = (pos[:, 2, None] + dy)[:, None, None, :]
    patches = chips[pos[:, 0, None, None, None], np.arange(c)[None, :, None, None], rows, cols]
    return patches, pos


def zca_whitening(patches: np.ndarray, zca_bias: float) -> np.ndarray:
    """ZCA matrix ``V diag(1/sqrt(E + zca_bias)) V^T`` of the covariance of rows of ``patches``.

    The covariance is the second moment ``X^T X / n`` as in MOSAIKS (rows are already
    centred per patch), so ``patches @ Z`` has covariance close to the identity on every
    direction whose eigenvalue is well above ``zca_bias``.
    """
    cov = patches.T @ patches / len(patches)
    eigval, eigvec = np.linalg.eigh(cov)
    eigval = np.clip(eigval, 0.0, None)
    return (eigvec / np.sqrt(eigval + zca_bias)) @ eigvec.T


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise EncoderError(f"{name} must be an int >= {minimum}. Got {value!r} instead.")
