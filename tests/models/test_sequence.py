"""Sequence encoders: masked dates left out exactly, sizes, values against numpy, the store path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from eocausal.models.encoders.registry import build_encoder
from eocausal.models.encoders.sequence import (
    AGGREGATIONS,
    AttentionPool,
    SequenceEncoder,
    aggregate_dates,
    aggregated_size,
    date_mask,
)
from eocausal.models.features.encode import encode_chips, encode_sequences, encode_store
from eocausal.pipeline.store import create_store
from rasterio.windows import Window
from torch import nn

from eocausal.errors import EncoderError

SENTINEL2 = "sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif"
EXACT = ["mean", "mean_diff", "mean_var"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors gain nothing from threads; on a shared machine OpenMP barriers stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    """(8, 5, 6) embeddings and a mask with full, partial, single-date and empty rows."""
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(8, 5, 6, generator=gen)
    mask = torch.rand(8, 5, generator=gen) < 0.6
    mask[0] = True
    mask[1] = torch.tensor([False, True, False, False, True])
    mask[2] = torch.tensor([False, False, True, False, False])
    mask[3] = False
    return emb, mask


def _pool(dim: int = 6, seed: int = 0) -> AttentionPool:
    return AttentionPool(dim, hidden=4, seed=seed)


@pytest.mark.parametrize("method", EXACT)
def test_masked_dates_are_left_out_exactly(embeddings, method):
    emb, mask = embeddings
    # Fill masked dates with huge values: any leak would show.
    emb = torch.where(mask[..., None], emb, torch.full_like(emb, 1e6))
    full = aggregate_dates(emb, mask, method)
    for b in np.flatnonzero(mask.any(dim=1).numpy()):
        seen = emb[b : b + 1, mask[b]]
        alone = aggregate_dates(seen, torch.ones(seen.shape[:2], dtype=torch.bool), method)
        torch.testing.assert_close(full[b : b + 1], alone, rtol=0, atol=0)


def test_attention_leaves_masked_dates_out(embeddings):
    emb, mask = embeddings
    pool = _pool()
    noisy = torch.where(mask[..., None], emb, torch.full_like(emb, 1e6))
    with torch.no_grad():
        full = aggregate_dates(noisy, mask, "attention", pool=pool)
        weights = pool.weights(emb, mask)
        assert (weights[~mask] == 0).all()
        for b in range(1, 3):
            seen = emb[b : b + 1, mask[b]]
            alone = pool(seen, torch.ones(seen.shape[:2], dtype=torch.bool))
            torch.testing.assert_close(full[b : b + 1], alone, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("method", "size"),
    [("mean", 6), ("concat", 5 * 6 + 5), ("mean_diff", 12), ("mean_var", 12), ("attention", 6)],
)
def test_each_aggregation_has_its_stated_size(embeddings, method, size):
    emb, mask = embeddings
    out = aggregate_dates(emb, mask, method, pool=_pool())
    assert out.shape == (8, size) == (8, aggregated_size(method, 6, 5))


def test_values_match_numpy_over_seen_dates(embeddings):
    emb, mask = embeddings
    e, m = emb.double().numpy(), mask.numpy()
    mean_var = aggregate_dates(emb.double(), mask, "mean_var").numpy()
    mean_diff = aggregate_dates(emb.double(), mask, "mean_diff").numpy()
    for b in range(len(e)):
        seen = e[b, m[b]]
        if len(seen) == 0:
            continue
        np.testing.assert_allclose(mean_var[b, :6], seen.mean(0), atol=1e-12)
        np.testing.assert_allclose(mean_var[b, 6:], seen.var(0), atol=1e-12)
        steps = np.diff(seen, axis=0).mean(0) if len(seen) > 1 else np.zeros(6)
        np.testing.assert_allclose(mean_diff[b, 6:], steps, atol=1e-12)


def test_concat_fills_masked_dates_with_zeros_and_an_indicator(embeddings):
    emb, mask = embeddings
    out = aggregate_dates(emb, mask, "concat")
    slots = out[:, :30].reshape(8, 5, 6)
    torch.testing.assert_close(slots[mask], emb[mask], rtol=0, atol=0)
    assert (slots[~mask] == 0).all()
    assert torch.equal(out[:, 30:], mask.float())


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_unit_with_no_seen_date_gets_zeros(embeddings, method):
    emb, mask = embeddings
    out = aggregate_dates(emb, mask, method, pool=_pool())
    assert torch.isfinite(out).all()
    assert (out[3] == 0).all()


def test_date_mask_drops_empty_and_sparse_dates():
    valid = np.zeros((1, 3, 4, 4), dtype=bool)
    valid[0, 0] = True
    valid[0, 1, 0, :2] = True  # 2 of 16 pixels
    assert date_mask(valid).tolist() == [[True, True, False]]
    assert date_mask(valid, 0.25).tolist() == [[True, False, False]]


class Recorder(nn.Module):
    """Band means as features; remembers how many chips it was given."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.n_features = in_channels
        self.settings = {"name": "recorder", "options": {"in_channels": in_channels}}
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(len(x))
        return x.mean(dim=(2, 3))


def test_masked_dates_are_not_encoded():
    base = Recorder(2)
    encoder = SequenceEncoder(base, aggregate="mean", n_dates=3)
    x = torch.randn(4, 3, 2, 5, 5)
    mask = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    out = encoder(x, mask)
    assert base.seen == [int(mask.sum())]
    torch.testing.assert_close(out[0], x[0, [0, 2]].mean(dim=(2, 3)).mean(0))
    torch.testing.assert_close(out[3], x[3, 1].mean(dim=(1, 2)))


def test_concat_needs_the_store_date_count():
    with pytest.raises(EncoderError, match="needs n_dates"):
        build_encoder("sequence", 3, base="rcf", aggregate="concat")
    encoder = build_encoder("sequence", 3, base="rcf", aggregate="concat", n_dates=2,
                            n_features=8)
    with pytest.raises(EncoderError, match="built for 2 dates but the chips have 3"):
        encoder(torch.zeros(1, 3, 3, 8, 8))


def test_unknown_aggregation_lists_the_valid_ones():
    with pytest.raises(EncoderError, match="Unknown temporal aggregation 'median'.*mean_var"):
        build_encoder("sequence", 3, aggregate="median")


def test_base_options_reach_the_base_encoder():
    encoder = build_encoder("sequence", 4, base="rcf", n_features=32, aggregate="mean_var")
    assert encoder.base.n_features == 32 and encoder.n_features == 64
    with pytest.raises(EncoderError, match=r"\['n_filters'\]"):
        build_encoder("sequence", 4, base="rcf", n_filters=8)


@pytest.mark.parametrize("method", ["attention", "mean"])
def test_same_seed_repeats_different_seed_differs(method):
    x = torch.randn(6, 3, 4, 12, 12, generator=torch.Generator().manual_seed(1))

    def run(seed: int) -> torch.Tensor:
        return build_encoder("sequence", 4, base="rcf", n_features=16, aggregate=method,
                             seed=seed)(x)

    with torch.no_grad():
        assert torch.equal(run(3), run(3))
        assert not torch.allclose(run(3), run(4))


@pytest.fixture(scope="module")
def s2_sequences(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """12 units x 3 dates of real Sentinel-2 chips (dates = shifted windows), some masked."""
    with rasterio.open(data_dir / "imagery" / SENTINEL2) as src:
        chips = np.stack([
            np.stack([src.read(window=Window(40 + 32 * (i % 4) + 7 * t, 60 + 32 * (i // 4), 24, 24))
                      for t in range(3)])
            for i in range(12)
        ])
    valid = np.ones((12, 3, 24, 24), dtype=bool)
    valid[0, 1] = False  # a cloudy date
    valid[1, :, :, :12] = False  # half valid on every date
    valid[2] = False  # never seen
    return chips, valid


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_every_aggregation_on_real_chips(s2_sequences, method):
    chips, valid = s2_sequences
    mean, std = chips.mean(axis=(0, 1, 3, 4)), chips.std(axis=(0, 1, 3, 4))
    encoder = build_encoder("sequence", 6, base="rcf", n_features=64, aggregate=method,
                            n_dates=3)
    out = encode_sequences(chips, encoder, valid=valid, mean=mean, std=std, device="cpu")
    assert out.shape == (12, aggregated_size(method, 64, 3)) and out.dtype == np.float32
    assert np.isfinite(out).all() and (out[2] == 0).all()
    assert out[3:].std(axis=0).max() > 0


def _store(path: Path, chips: np.ndarray, valid: np.ndarray):
    n, t = chips.shape[:2]
    store = create_store(path, unit_ids=[f"U{i:02d}" for i in range(n)], n_dates=t,
                         band_names=[f"B{i}" for i in range(chips.shape[2])],
                         chip_size=chips.shape[-1], dtype=chips.dtype, crs="EPSG:32618",
                         pixel_size=20.0, dates=[f"2016-0{m + 1}-12" for m in range(t)],
                         centres=np.zeros((n, 2)), units_per_chunk=5)
    store.write_units(0, chips, valid)
    store.finalize_stats()
    return store


@pytest.mark.parametrize("method", ["mean_var", "concat"])
def test_encode_store_uses_every_date_for_a_sequence_encoder(s2_sequences, tmp_path, method):
    chips, valid = s2_sequences
    store = _store(tmp_path / "tiles.zarr", chips, valid)
    options = {"base": "rcf", "n_features": 32, "aggregate": method}
    frame = encode_store(store, "sequence", options=options, batch_size=5, seed=2)
    encoder = build_encoder("sequence", 6, n_dates=3, seed=2, **options)
    expected = encode_sequences(chips, encoder, valid=valid, mean=store.band_mean,
                                std=store.band_std, device="cpu")
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    meta = frame.attrs["eocausal"]
    assert meta["time_index"] is None and meta["dates"] == store.dates
    assert meta["encoder"]["options"]["n_dates"] == 3


def test_image_encoder_on_a_sequence_store_logs_first_date(s2_sequences, tmp_path, caplog):
    chips, valid = s2_sequences
    store = _store(tmp_path / "tiles.zarr", chips, valid)
    with caplog.at_level(logging.WARNING, logger="eocausal.models.features.encode"):
        frame = encode_store(store, "rcf", options={"n_features": 16})
    assert "has 3 dates; encoder 'rcf' sees the first date (2016-01-12) only" in caplog.text
    expected = encode_chips(chips[:, 0], build_encoder("rcf", 6, n_features=16),
                            valid=valid[:, 0], mean=store.band_mean, std=store.band_std)
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_empirical_rcf_base_samples_every_date(s2_sequences, tmp_path):
    chips, valid = s2_sequences
    store = _store(tmp_path / "tiles.zarr", chips, valid)
    frame = encode_store(store, "sequence", options={"base": "rcf", "n_features": 64,
                                                     "mode": "empirical"})
    base = frame.attrs["eocausal"]["encoder"]["base"]
    assert base["n_fit_patches"] == 32 and len(base["filters_sha256"]) == 64
    assert np.isfinite(frame.iloc[:, 1:].to_numpy()).all()
