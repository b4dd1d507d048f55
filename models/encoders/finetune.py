"""Fine-tuned encoders: a CNN trained end to end on a study target, with K-fold cross-fitting.

A network trained on the study's own treatment (an image propensity score, as in
``causalimages``) or outcome sees what matters for that target, but its features and
predictions for a unit it was trained on are overfitted to that unit, and a causal estimator
fed with them is biased. So, as in double machine learning, units are split into K folds (by
group with ``GroupKFold`` when groups are given, so a village's households never straddle
folds); fold k's units get features and predictions from a network trained on the other
folds only. Within those, a held-out split (by group too) decides early stopping, so the
predicted fold plays no part at all in its network's training. ``fold``, ``train_indices``
and ``val_indices`` record which network predicted which unit and what it saw.

The out-of-fold *predictions* (propensity or outcome) are the cross-fitted nuisance to hand
to an estimator. The out-of-fold *features* (penultimate layer) come from K different
networks, whose feature coordinates are not aligned with each other: use them fold by fold
or through models that do not assume a shared coordinate system across folds.

All chips are held in memory as float32 (N * T * C * H * W * 4 bytes; 10,000 units of
6 x 32 x 32 take 250 MB). Training is seeded and repeats exactly on CPU; CUDA is used when
present (``device="auto"``), where cuDNN may add last-bit differences.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from eocausal.models.encoders.augment import Augment
from eocausal.models.encoders.registry import ResNetEncoder
from eocausal.models.encoders.sequence import SequenceEncoder, date_mask
from eocausal.models.features.encode import resolve_device
from eocausal.models.features.loader import normalize_chips
from scipy import special
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold
from torch import nn

from eocausal.errors import EncoderError

__all__ = ["ARCHITECTURES", "CrossFitResult", "SmallCNN", "TrainSettings", "crossfit_finetune",
           "crossfit_folds"]

log = logging.getLogger(__name__)

ARCHITECTURES = ("small", "resnet18", "resnet34", "resnet50")


class SmallCNN(nn.Module):
    """Three 3x3 convolution blocks (32, 64, 128 channels) and global average pooling.

    Fast enough to fine-tune on a CPU; 128 features.
    """

    def __init__(self, in_channels: int, *, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [in_channels, width, 2 * width, 4 * width]
        for i in range(3):
            layers += [nn.Conv2d(channels[i], channels[i + 1], 3, stride=1 if i == 0 else 2,
                                 padding=1, bias=False),
                       nn.BatchNorm2d(channels[i + 1]), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.n_features = 4 * width
        self.settings: dict[str, Any] = {"name": "small_cnn", "n_features": self.n_features,
                                         "options": {"in_channels": in_channels, "width": width}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, n_features)."""
        return self.body(x)


@dataclass(frozen=True)
class TrainSettings:
    """How each fold's network is trained; validated on construction.

    Parameters
    ----------
    epochs : int, default=10
        Most passes over the fold's training units.
    batch_size : int, default=64
    lr : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=1e-4
    patience : int, default=3
        Stop after this many epochs without a better held-out loss; the best epoch's
        weights are kept.
    val_fraction : float, default=0.2
        Share of the training units (or groups) held out for early stopping; 0 trains
        for ``epochs`` and keeps the last weights.
    augment : Augment or None, default=Augment()
        Training-time augmentation; None for none.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 3
    val_fraction: float = 0.2
    augment: Augment | None = field(default_factory=Augment)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EncoderError(f"TrainSettings.{name} must be an int >= 1. Got {value!r}.")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise EncoderError(f"TrainSettings.{name} must be a float >= 0. Got {value!r}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise EncoderError(
                f"TrainSettings.val_fraction must be in [0, 1). Got {self.val_fraction!r}."
            )


@dataclass(frozen=True)
class CrossFitResult:
    """Out-of-fold outputs of :func:`crossfit_finetune`, and the record of who saw whom.

    Attributes
    ----------
    features : ndarray of shape (N, D), float32
        Penultimate-layer features of each unit from the network of its fold.
    predictions : ndarray of shape (N,), float64
        P(target = 1) for a binary target (an image propensity score), else the predicted
        target in its own units.
    fold : ndarray of shape (N,), int
        Which fold's network predicted each unit.
    train_indices, val_indices : tuple of ndarray
        Per fold: every unit that network saw (fitted on or used for early stopping), and
        the early-stopping subset of those.
    history : tuple of dict
        Per fold: held-out loss per epoch, the best epoch and the epochs run.
    models : tuple of nn.Module
        The trained networks (CPU, eval mode), fold by fold.
    task : str
        ``"binary"`` or ``"regression"``.
    settings : dict
        JSON-ready description of the run (architecture, folds, training settings, seed).
    """

    features: np.ndarray
    predictions: np.ndarray
    fold: np.ndarray
    train_indices: tuple[np.ndarray, ...]
    val_indices: tuple[np.ndarray, ...]
    history: tuple[dict[str, Any], ...]
    models: tuple[nn.Module, ...] = field(repr=False)
    task: str
    settings: dict[str, Any]


class _Net(nn.Module):
    """Sequence encoder (one date is a sequence of one) with a linear head."""

    def __init__(self, encoder: SequenceEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.n_features, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x, mask)
        return features, self.head(features).squeeze(1)


def crossfit_folds(
    n_units: int, n_folds: int, groups: np.ndarray | None = None, seed: int | None = 0
) -> np.ndarray:
    """Fold of each unit: ``GroupKFold`` when groups are given, else a seeded shuffled KFold.

    Raises
    ------
    EncoderError
        If there are fewer units (or groups) than folds.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise EncoderError(f"n_folds must be an int >= 2. Got {n_folds!r} instead.")
    fold = np.empty(n_units, dtype=np.int64)
    if groups is not None:
        groups = np.asarray(groups)
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise EncoderError(
                f"Cross-fitting by group needs at least n_folds={n_folds} groups. Got "
                f"{n_groups}. Lower n_folds or give finer groups."
            )
        splits = GroupKFold(n_splits=n_folds).split(np.zeros(n_units), groups=groups)
    else:
        if n_units < n_folds:
            raise EncoderError(f"{n_units} units cannot be split into {n_folds} folds.")
        splits = KFold(n_folds, shuffle=True, random_state=_int_seed(seed)).split(np.zeros(n_units))
    for k, (_, held) in enumerate(splits):
        fold[held] = k
    return fold


def crossfit_finetune(
    chips: np.ndarray,
    target: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    task: str = "auto",
    arch: str = "small",
    aggregate: str = "mean",
    n_folds: int = 5,
    settings: TrainSettings | None = None,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    weights: str | None = None,
    seed: int | None = 0,
    device: str | torch.device = "auto",
) -> CrossFitResult:
    """Fine-tune a CNN on ``target`` with K-fold cross-fitting; return out-of-fold outputs.

    Parameters
    ----------
    chips : ndarray of shape (N, C, H, W) or (N, T, C, H, W)
        Raw pixels, normalised here per band with ``mean``/``std``.
    target : ndarray of shape (N,)
        Treatment (0/1: the network estimates an image propensity) or outcome.
    valid : ndarray of shape (N, H, W) or (N, T, H, W) of bool, optional
        Pixel masks: invalid pixels are set to 0, dates with no valid pixel are left out.
    groups : ndarray of shape (N,), optional
        Cluster labels (villages, spatial blocks): folds and early-stopping splits keep
        groups whole.
    task : {"auto", "binary", "regression"}, default="auto"
        ``auto`` is binary when every target value is 0 or 1.
    arch : {"small", "resnet18", "resnet34", "resnet50"}, default="small"
        ResNets are adapted to C bands (see :class:`models.encoders.ResNetEncoder`).
    aggregate : str, default="mean"
        Temporal aggregation for sequences (``attention`` is trained here).
    n_folds : int, default=5
    settings : TrainSettings, optional
    mean, std : ndarray of shape (C,), optional
        Band statistics; default those of the valid pixels of ``chips``.
    weights : path, optional
        A ResNet state-dict file to start from.
    seed : int or None, default=0
        Seeds folds, splits, initialisation, batch order and augmentation.
    device : str, default="auto"

    Returns
    -------
    CrossFitResult
    """
    settings = TrainSettings() if settings is None else settings
    if arch not in ARCHITECTURES:
        raise EncoderError(f"arch must be one of {ARCHITECTURES}. Got {arch!r} instead.")
    x, pixel_mask = _prepare_chips(chips, valid, mean, std)
    y = np.asarray(target, dtype=np.float64).ravel()
    if len(y) != len(x) or not np.isfinite(y).all():
        raise EncoderError(
            f"target must hold {len(x)} finite values, one per chip. Got {len(y)} values"
            f"{'' if np.isfinite(y).all() else ' with NaN or inf'}."
        )
    task = _resolve_task(task, y)
    fold = crossfit_folds(len(x), n_folds, groups, seed)
    torch_device = resolve_device(device)
    streams = np.random.SeedSequence(seed).spawn(n_folds)
    features: np.ndarray | None = None
    predictions = np.empty(len(x))
    trains, vals, history, models = [], [], [], []
    for k in range(n_folds):
        held = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold != k)
        init_seed, split_seed, batch_seed = (int(s) for s in streams[k].generate_state(3))
        fit, val = _holdout(train, groups, settings.val_fraction, split_seed)
        net = _build_net(x.shape, arch, aggregate, weights, init_seed).to(torch_device)
        record = _train(net, x, pixel_mask, y, fit, val, task, settings, batch_seed, torch_device)
        feats, preds = _predict(net, x, pixel_mask, held, settings.batch_size, torch_device)
        if features is None:
            features = np.empty((len(x), feats.shape[1]), dtype=np.float32)
        features[held] = feats
        predictions[held] = _to_target_scale(preds, task, record)
        trains.append(train)
        vals.append(val)
        history.append({k_: v for k_, v in record.items() if not k_.startswith("_")})
        models.append(net.cpu().eval())
        log.info("fold %d: %d epochs, best held-out loss %.4f", k, record["epochs_run"],
                 record["best_loss"])
    return CrossFitResult(
        features=features if features is not None else np.empty((0, 0), np.float32),
        predictions=predictions, fold=fold, train_indices=tuple(trains),
        val_indices=tuple(vals), history=tuple(history), models=tuple(models), task=task,
        settings={"arch": arch, "aggregate": aggregate, "n_folds": n_folds, "seed": seed,
                  "grouped": groups is not None, "weights": None if weights is None else str(weights),
                  "train": {**{k_: v for k_, v in vars(settings).items() if k_ != "augment"},
                            "augment": None if settings.augment is None
                            else vars(settings.augment)}},
    )


def _prepare_chips(
    chips: np.ndarray, valid: np.ndarray | None, mean: np.ndarray | None, std: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (N, T, C, H, W) float32 and pixel masks (N, T, H, W)."""
    chips = np.asarray(chips)
    if chips.ndim == 4:
        chips = chips[:, None]
        valid = None if valid is None else np.asarray(valid)[:, None]
    if chips.ndim != 5:
        raise EncoderError(
            f"chips must have shape (N, C, H, W) or (N, T, C, H, W). Got shape {chips.shape}."
        )
    n, t, c, h, w = chips.shape
    valid = np.ones((n, t, h, w), dtype=bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != (n, t, h, w):
        raise EncoderError(f"valid must have shape {(n, t, h, w)}. Got {valid.shape}.")
    flat, flat_valid = chips.reshape(n * t, c, h, w), valid.reshape(n * t, h, w)
    if mean is None or std is None:
        pixels = np.moveaxis(flat, 1, 0)[:, flat_valid]  # (C, valid pixels), source dtype
        mean = pixels.mean(axis=1, dtype=np.float64) if mean is None else mean
        std = pixels.std(axis=1, dtype=np.float64) if std is None else std
    x = normalize_chips(flat, mean, std, flat_valid).reshape(n, t, c, h, w)
    return torch.from_numpy(x), torch.from_numpy(valid)


def _resolve_task(task: str, y: np.ndarray) -> str:
    binary = bool(np.isin(y, (0.0, 1.0)).all())
    if task == "auto":
        task = "binary" if binary else "regression"
    if task not in ("binary", "regression"):
        raise EncoderError(f"task must be 'auto', 'binary' or 'regression'. Got {task!r}.")
    if task == "binary" and (not binary or len(np.unique(y)) < 2):
        raise EncoderError(
            "A binary target must hold both 0 and 1 and nothing else. Got values "
            f"{np.unique(y)[:5].tolist()}. Use task='regression' for an outcome."
        )
    return task


def _holdout(
    train: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training units into fitting and early-stopping units (groups whole)."""
    if fraction == 0.0 or len(train) < 4:
        return train, train[:0]
    if groups is not None and len(np.unique(np.asarray(groups)[train])) >= 2:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed % 2**32)
        fit, val = next(splitter.split(train, groups=np.asarray(groups)[train]))
        return train[fit], train[val]
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, round(fraction * len(train)))
    return np.sort(train[order[n_val:]]), np.sort(train[order[:n_val]])


def _build_net(shape: tuple[int, ...], arch: str, aggregate: str, weights: str | None,
               seed: int) -> _Net:
    _, n_dates, n_bands = shape[:3]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "small":
            if weights is not None:
                raise EncoderError("weights only apply to the ResNet architectures, not 'small'.")
            backbone: nn.Module = SmallCNN(n_bands)
        else:
            backbone = ResNetEncoder(arch, n_bands, seed=seed, weights=weights)
        encoder = SequenceEncoder(backbone, aggregate=aggregate, n_dates=n_dates, seed=seed)
        encoder.attention_trained = encoder.pool is not None
        return _Net(encoder)


def _loss_fn(task: str) -> nn.Module:
    return nn.BCEWithLogitsLoss() if task == "binary" else nn.MSELoss()


def _train(net: _Net, x: torch.Tensor, valid: torch.Tensor, y: np.ndarray, fit: np.ndarray,
           val: np.ndarray, task: str, settings: TrainSettings, seed: int,
           device: torch.device) -> dict[str, Any]:
    """Train one fold's network with early stopping; load its best weights."""
    centre, scale = (0.0, 1.0) if task == "binary" else (y[fit].mean(), y[fit].std() or 1.0)
    target = torch.from_numpy((y - centre) / scale).float()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    loss_fn = _loss_fn(task)
    losses: list[float] = []
    best, best_state, best_epoch, stale = math.inf, None, -1, 0
    for epoch in range(settings.epochs):
        net.train()
        order = torch.from_numpy(fit)[torch.randperm(len(fit), generator=generator)]
        for rows in order.split(settings.batch_size):
            if len(rows) < 2:  # batch norm cannot train on one chip
                continue
            xb, vb = x[rows], valid[rows]
            if settings.augment is not None:
                xb, vb = settings.augment(xb, generator, vb)
            _, out = net(xb.to(device), date_mask(vb).to(device))
            loss = loss_fn(out, target[rows].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if len(val) == 0:
            continue
        loss_val = _evaluate(net, x, valid, target, val, loss_fn, settings.batch_size, device)
        losses.append(loss_val)
        if loss_val < best:
            best, best_epoch, stale = loss_val, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return {"val_losses": losses, "best_epoch": best_epoch, "best_loss": best,
            "epochs_run": epoch + 1, "_centre": centre, "_scale": scale}


@torch.no_grad()
def _evaluate(net: _Net, x: torch.Tensor, valid: torch.Tensor, target: torch.Tensor,
              rows: np.ndarray, loss_fn: nn.Module, batch_size: int,
              device: torch.device) -> float:
    net.eval()
    total = 0.0
    for part in torch.from_numpy(rows).split(batch_size):
        _, out = net(x[part].to(device), date_mask(valid[part]).to(device))
        total += float(loss_fn(out, target[part].to(device))) * len(part)
    return total / len(rows)


@torch.no_grad()
def _predict(net: _Net, x: torch.Tensor, valid: torch.Tensor, rows: np.ndarray,
             batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    feats, outs = [], []
    for part in torch.from_numpy(rows).split(batch_size):
        f, out = net(x[part].to(device), date_mask(valid[part]).to(device))
        feats.append(f.float().cpu().numpy())
        outs.append(out.double().cpu().numpy())
    return np.concatenate(feats), np.concatenate(outs)


def _to_target_scale(out: np.ndarray, task: str, record: dict[str, Any]) -> np.ndarray:
    if task == "binary":
        return special.expit(out)
    return out * record["_scale"] + record["_centre"]


def _int_seed(seed: int | None) -> int | None:
    return None if seed is None else int(seed) % 2**32
