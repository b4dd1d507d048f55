"""Fine-tuning with cross-fitting (no unit predicted by a network that saw it) and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eocausal.models.encoders.augment import Augment
from eocausal.models.encoders.finetune import TrainSettings, crossfit_finetune, crossfit_folds
from eocausal.models.encoders.sequence import date_mask
from eocausal.models.features.loader import normalize_chips
from sklearn.metrics import roc_auc_score

from eocausal.errors import EncoderError

FAST = TrainSettings(epochs=2, batch_size=16, patience=1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks gain nothing from threads, and on a shared 2-core machine every small op
    would wait at an OpenMP barrier for a descheduled thread (seen: 30x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world() -> dict[str, np.ndarray]:
    """120 chips of 4 x 16 x 16 whose first band carries the treatment; 20 groups of 6."""
    rng = np.random.default_rng(0)
    treatment = rng.integers(0, 2, 120)
    chips = rng.normal(1000, 100, size=(120, 4, 16, 16))
    chips[:, 0] += 120 * treatment[:, None, None]
    return {"chips": chips.astype(np.float32), "treatment": treatment,
            "outcome": 2.0 * treatment + rng.normal(0, 0.1, 120),
            "groups": np.repeat(np.arange(20), 6)}


@pytest.fixture(scope="module")
def grouped(world):
    return crossfit_finetune(world["chips"], world["treatment"], groups=world["groups"],
                             n_folds=4, settings=FAST, seed=3, device="cpu")


def test_no_unit_is_predicted_by_a_network_that_saw_it(world, grouped):
    groups = world["groups"]
    assert sorted(np.unique(grouped.fold)) == [0, 1, 2, 3]
    for k, (train, val) in enumerate(zip(grouped.train_indices, grouped.val_indices,
                                         strict=True)):
        held = np.flatnonzero(grouped.fold == k)
        assert not np.intersect1d(held, train).size
        assert np.isin(val, train).all() and len(val) > 0
        assert not np.intersect1d(groups[held], groups[train]).size  # groups never straddle
        assert np.union1d(held, train).size == 120


def test_fold_record_names_the_network_that_made_each_prediction(world, grouped):
    x = normalize_chips(world["chips"], *_stats(world["chips"]))[:, None]
    valid = torch.ones(120, 1, 16, 16, dtype=torch.bool)
    for k, net in enumerate(grouped.models):
        rows = np.flatnonzero(grouped.fold == k)
        with torch.no_grad():
            feats, out = net(torch.from_numpy(x[rows]), date_mask(valid[rows]))
        np.testing.assert_allclose(grouped.predictions[rows], torch.sigmoid(out).numpy(),
                                   rtol=1e-5)
        np.testing.assert_allclose(grouped.features[rows], feats.numpy(), rtol=1e-5, atol=1e-6)


def _stats(chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.moveaxis(chips, 1, 0).reshape(chips.shape[1], -1).astype(np.float64)
    return pixels.mean(axis=1), pixels.std(axis=1)


def test_propensity_from_images_learns_the_signal(world, grouped):
    assert grouped.task == "binary"
    assert grouped.features.shape == (120, 128) and grouped.features.dtype == np.float32
    assert ((grouped.predictions > 0) & (grouped.predictions < 1)).all()
    assert roc_auc_score(world["treatment"], grouped.predictions) > 0.8


def test_same_seed_same_features_other_seed_differs(world, grouped):
    again = crossfit_finetune(world["chips"], world["treatment"], groups=world["groups"],
                              n_folds=4, settings=FAST, seed=3, device="cpu")
    other = crossfit_finetune(world["chips"], world["treatment"], groups=world["groups"],
                              n_folds=4, settings=FAST, seed=4, device="cpu")
    np.testing.assert_array_equal(grouped.features, again.features)
    np.testing.assert_array_equal(grouped.predictions, again.predictions)
    assert not np.allclose(grouped.features, other.features)


def test_outcome_target_is_predicted_in_its_own_units(world):
    result = crossfit_finetune(world["chips"], world["outcome"], n_folds=3, settings=FAST,
                               seed=0, device="cpu")
    assert result.task == "regression"
    assert set(np.unique(result.fold)) == {0, 1, 2}
    assert abs(result.predictions.mean() - world["outcome"].mean()) < 0.5


def test_sequences_train_the_attention_pooling(world):
    chips = np.stack([world["chips"], world["chips"][::-1]], axis=1)
    valid = np.ones((120, 2, 16, 16), dtype=bool)
    valid[:10, 1] = False
    result = crossfit_finetune(chips, world["treatment"], valid=valid, aggregate="attention",
                               n_folds=2, settings=FAST, seed=0, device="cpu")
    assert result.features.shape == (120, 128)
    assert result.models[0].encoder.settings["options"]["attention_trained"] is True


def test_early_stopping_keeps_the_best_epoch(world):
    settings = TrainSettings(epochs=4, batch_size=32, patience=1, lr=0.5)  # lr high: loss rises
    result = crossfit_finetune(world["chips"], world["treatment"], n_folds=2,
                               settings=settings, seed=0, device="cpu")
    for record in result.history:
        losses = record["val_losses"]
        assert record["best_loss"] == min(losses)
        assert record["epochs_run"] <= record["best_epoch"] + 2


@pytest.mark.slow
def test_resnet18_fine_tunes_on_small_chips(world):
    result = crossfit_finetune(world["chips"], world["treatment"], arch="resnet18", n_folds=3,
                               settings=FAST, seed=0, device="cpu")
    assert result.features.shape == (120, 512)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"groups": np.repeat(np.arange(3), 40)}, "at least n_folds=4 groups. Got 3"),
     ({"task": "binary", "target": np.linspace(0, 1, 120)}, "must hold both 0 and 1"),
     ({"arch": "vgg"}, "arch must be one of"),
     ({"target": np.r_[np.zeros(119), np.nan]}, "NaN")],
)
def test_bad_input_is_one_clear_message(world, kwargs, message):
    args = {"target": world["treatment"], "n_folds": 4, "settings": FAST, "device": "cpu"}
    args.update(kwargs)
    target = args.pop("target")
    with pytest.raises(EncoderError, match=message):
        crossfit_finetune(world["chips"], target, **args)


def test_folds_without_groups_are_seeded_and_balanced():
    first, again, other = (crossfit_folds(50, 5, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.bincount(first).tolist() == [10] * 5


# -- augmentation ---------------------------------------------------------------------------


def _dihedral(chip: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and rotations of a chip (..., H, W)."""
    out = []
    for flipped in (chip, chip.flip(-1)):
        out += [torch.rot90(flipped, k, dims=(-2, -1)) for k in range(4)]
    return out


@pytest.mark.parametrize("shape", [(6, 3, 8, 8), (6, 2, 3, 8, 8), (6, 3, 8, 10)])
def test_augment_keeps_shape_and_dtype_and_repeats_with_the_seed(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    augment = Augment()
    first, _ = augment(x, torch.Generator().manual_seed(5))
    again, _ = augment(x, torch.Generator().manual_seed(5))
    other, _ = augment(x, torch.Generator().manual_seed(6))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_geometric_augment_moves_pixels_the_same_way_on_every_date_and_band():
    x = torch.randn(16, 3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    out, _ = Augment(brightness=0.0, contrast=0.0)(x, torch.Generator().manual_seed(2))
    for chip, got in zip(x, out, strict=True):
        assert any(torch.equal(got, option) for option in _dihedral(chip))
    assert not torch.equal(out, x)


def test_photometric_augment_is_small_and_spares_invalid_pixels():
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    valid = torch.ones(8, 8, 8, dtype=torch.bool)
    valid[:, :2] = False
    x = torch.where(valid[:, None], x, 0.0)
    out, mask = Augment(flips=False, rotations=False, brightness=0.1, contrast=0.1)(
        x, torch.Generator().manual_seed(3), valid)
    assert torch.equal(mask, valid)
    assert (out[:, :, :2] == 0).all()
    change = (out - x)[valid[:, None].expand_as(x)]
    assert 0 < change.abs().max() < 0.1 + 0.1 * x.abs().max() + 1e-6


def test_masks_follow_the_geometric_transform():
    x = torch.randn(8, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    valid = torch.zeros(8, 6, 6, dtype=torch.bool)
    valid[:, 0, :3] = True
    x = torch.where(valid[:, None], x, 0.0)
    out, mask = Augment(brightness=0.0, contrast=0.0)(x, torch.Generator().manual_seed(9), valid)
    assert torch.equal(out == 0, ~mask[:, None].expand_as(out))
