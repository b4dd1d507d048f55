"""The feature stage: batching, normalisation, store streaming and the parquet round trip."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
import torch.nn.functional as F
import zarr
from eocausal.models.encoders.registry import build_encoder
from eocausal.models.features.encode import (
    encode_chips,
    encode_store,
    normalize_chips,
    read_features,
    write_features,
)
from eocausal.models.features.loader import StoreBatches
from eocausal.models.features.parts import encode_store_parts, plan_parts
from eocausal.pipeline.store import TileStore, create_store
from rasterio.windows import Window
from torch import nn

from eocausal.errors import EncoderError, NoUsableUnitsError

SENTINEL2 = "sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif"


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    """Keep torch from oversubscribing the 2-core test machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def s2(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """16 Sentinel-2 chips (16, 6, 32, 32) uint16 and masks, the last rows of chip 0 invalid."""
    chips = []
    with rasterio.open(data_dir / "imagery" / SENTINEL2) as src:
        for i in range(16):
            chips.append(src.read(window=Window(64 + (i % 4) * 32, 96 + (i // 4) * 32, 32, 32)))
    valid = np.ones((16, 32, 32), dtype=bool)
    valid[0, 24:] = False
    return np.stack(chips), valid


class BandMeans(nn.Module):
    """Features = per-band spatial mean: makes normalisation visible in the output."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.n_features = in_channels
        self.settings = {"name": "band_means", "options": {"in_channels": in_channels}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def make_store(path: Path, chips: np.ndarray, valid: np.ndarray, n_dates: int = 1) -> TileStore:
    n = len(chips)
    store = create_store(
        path,
        unit_ids=[f"U{i:03d}" for i in range(n)],
        n_dates=n_dates,
        band_names=["B2", "B3", "B4", "B8A", "B11", "B12"],
        chip_size=chips.shape[-1],
        dtype=chips.dtype,
        crs="EPSG:32618",
        pixel_size=20.0,
        dates=["2016-01-12", "2016-02-12"][:n_dates],
        centres=np.zeros((n, 2)),
        units_per_chunk=8,
    )
    stacked = np.stack([chips] + [chips[::-1]] * (n_dates - 1), axis=1)
    store.write_units(0, stacked, np.stack([valid] * n_dates, axis=1))
    store.finalize_stats()
    return store


@pytest.mark.parametrize("name", ["rcf", "resnet18"])
def test_batch_size_does_not_change_features(s2, name):
    chips, valid = s2
    mean, std = chips.mean(axis=(0, 2, 3)), chips.std(axis=(0, 2, 3))
    encoder = build_encoder(name, 6, seed=0)
    small = encode_chips(chips, encoder, valid=valid, mean=mean, std=std, batch_size=7)
    large = encode_chips(chips, encoder, valid=valid, mean=mean, std=std, batch_size=64)
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-6)


def test_normalisation_and_mask_follow_the_rule(s2):
    chips, valid = s2
    mean = chips.mean(axis=(0, 2, 3))
    std = chips.std(axis=(0, 2, 3))
    got = encode_chips(chips, BandMeans(6), valid=valid, mean=mean, std=std, device="cpu")
    x = (chips.astype(np.float64) - mean[:, None, None]) / std[:, None, None]
    x = np.where(valid[:, None], x, 0.0)
    np.testing.assert_allclose(got, x.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)


def test_non_finite_pixels_become_zero():
    chips = np.ones((2, 1, 4, 4), dtype=np.float32)
    chips[0, 0, 0, 0] = np.nan
    got = encode_chips(chips, BandMeans(1), device="cpu")
    np.testing.assert_allclose(got[:, 0], [15 / 16, 1.0])


def test_band_count_mismatch_is_reported(s2):
    with pytest.raises(EncoderError, match="built for 3 bands but the chips have 6"):
        encode_chips(s2[0], build_encoder("rcf", 3))


def test_mean_of_wrong_length_is_reported(s2):
    with pytest.raises(EncoderError, match="mean has 3 values for 6 bands"):
        encode_chips(s2[0], build_encoder("rcf", 6), mean=np.zeros(3))


def test_encode_store_equals_encode_chips(s2, tmp_path):
    chips, valid = s2
    store = make_store(tmp_path / "tiles.zarr", chips, valid)
    calls: list[tuple[int, int]] = []
    frame = encode_store(
        store,
        "rcf",
        options={"n_features": 64},
        batch_size=5,
        seed=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    expected = encode_chips(
        chips,
        build_encoder("rcf", 6, n_features=64, seed=3),
        valid=valid,
        mean=store.band_mean,
        std=store.band_std,
    )
    assert list(frame.columns) == ["unit_id"] + [f"f{i:04d}" for i in range(64)]
    assert frame["unit_id"].tolist() == [f"U{i:03d}" for i in range(16)]
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert calls == [(5, 16), (10, 16), (15, 16), (16, 16)]
    assert frame.attrs["eocausal"]["encoder"]["options"]["seed"] == 3


def test_encode_store_streams_batches(s2, tmp_path, monkeypatch):
    make_store(tmp_path / "tiles.zarr", *s2)
    sizes: list[int] = []
    original = zarr.Array.__getitem__

    def spy(self, selection):
        if self.basename == "chips":
            sizes.append(selection.stop - selection.start)
        return original(self, selection)

    monkeypatch.setattr(zarr.Array, "__getitem__", spy)
    encode_store(tmp_path / "tiles.zarr", "rcf", options={"n_features": 16}, batch_size=4)
    assert sizes == [4, 4, 4, 4]


def test_multi_date_store_encodes_first_date(s2, tmp_path):
    chips, valid = s2
    store = make_store(tmp_path / "tiles.zarr", chips, valid, n_dates=2)
    two = encode_store(store, "rcf")
    # Band statistics span both dates; the features use the first date under those stats.
    expected = encode_chips(
        chips, build_encoder("rcf", 6), valid=valid, mean=store.band_mean, std=store.band_std
    )
    np.testing.assert_allclose(two.iloc[:, 1:].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert two.attrs["eocausal"]["time_index"] == 0
    assert two.attrs["eocausal"]["date"] == "2016-01-12"


def test_encode_store_empirical_rcf_is_seeded(s2, tmp_path):
    store = make_store(tmp_path / "tiles.zarr", *s2)
    opts = {"n_features": 32, "mode": "empirical"}
    first = encode_store(store, "rcf", options=opts, seed=1)
    again = encode_store(store, "rcf", options=opts, seed=1)
    other = encode_store(store, "rcf", options=opts, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first.iloc[:, 1:], other.iloc[:, 1:])
    settings = first.attrs["eocausal"]["encoder"]
    assert settings["n_fit_patches"] == 16 and len(settings["filters_sha256"]) == 64


def test_encode_store_records_weights_checksum(s2, tmp_path):
    store = make_store(tmp_path / "tiles.zarr", *s2)
    path = tmp_path / "r18.pt"
    torch.save(build_encoder("resnet18", 3, seed=5).net.state_dict(), path)
    frame = encode_store(store, "resnet18", weights=path, batch_size=16)
    assert frame.shape == (16, 513)
    assert len(frame.attrs["eocausal"]["encoder"]["weights_sha256"]) == 64


def test_seed_given_twice_is_refused(s2, tmp_path):
    store = make_store(tmp_path / "tiles.zarr", *s2)
    with pytest.raises(EncoderError, match="'seed' is given both"):
        encode_store(store, "rcf", options={"seed": 1}, seed=2)


def test_parquet_round_trip_keeps_features_and_metadata(s2, tmp_path):
    store = make_store(tmp_path / "tiles.zarr", *s2)
    frame = encode_store(store, "rcf", options={"n_features": 16})
    path = write_features(frame, tmp_path / "features.parquet", frame.attrs["eocausal"])
    back, metadata = read_features(path)
    pd.testing.assert_frame_equal(back, frame)
    assert back["f0000"].dtype == np.float32
    assert metadata == json.loads(json.dumps(frame.attrs["eocausal"]))
    raw = pq.read_schema(path).metadata[b"eocausal"]
    assert json.loads(raw)["encoder"]["name"] == "rcf"
    assert not list(tmp_path.glob(".*.tmp"))


def test_metadata_must_be_json(tmp_path):
    frame = pd.DataFrame({"unit_id": ["a"], "f0000": [1.0]})
    with pytest.raises(EncoderError, match="JSON-serialisable"):
        write_features(frame, tmp_path / "f.parquet", {"when": object()})


def test_read_features_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="features.parquet"):
        read_features(tmp_path / "features.parquet")


# -- streaming path, parallel parts, resizing, bad input ----------------------------------


def test_store_batches_equal_direct_reads_and_reopen_lazily(s2, tmp_path):
    store = make_store(tmp_path / "tiles.zarr", *s2)
    data = StoreBatches(store.path, batch_size=6, mean=store.band_mean, std=store.band_std)
    assert data._store is None and len(data) == 3  # nothing opened until a read
    item = pickle.loads(pickle.dumps(data))[2]
    direct = store.read(12, 16)
    expected = normalize_chips(direct.chips[:, 0], store.band_mean, store.band_std,
                               direct.valid[:, 0])
    np.testing.assert_array_equal(item.chips.numpy(), expected)
    np.testing.assert_array_equal(item.unit_ids, direct.unit_ids)
    assert item.start == 12


@pytest.mark.parametrize("name", ["rcf", "sequence"])
def test_dataloader_workers_give_the_in_process_features(s2, tmp_path, name):
    store = make_store(tmp_path / "tiles.zarr", *s2, n_dates=2)
    options = {"n_features": 32} if name == "rcf" else {"base": "rcf", "n_features": 32}
    in_process = encode_store(store, name, options=options, batch_size=4)
    workers = encode_store(store, name, options=options, batch_size=4, num_workers=2)
    pd.testing.assert_frame_equal(in_process, workers, check_exact=True)


def test_encode_store_parts_equals_encode_store(s2, tmp_path):
    store = make_store(tmp_path / "tiles.zarr", *s2)
    options = {"n_features": 32, "mode": "empirical"}
    calls: list[int] = []

    def out_of_order(func, tasks):
        calls.append(len(tasks))
        with ThreadPoolExecutor(2) as pool:  # tasks finish in any order; results keep theirs
            return list(pool.map(func, tasks[::-1]))[::-1]

    path = encode_store_parts(store, "rcf", options, tmp_path / "parts", 3, out_of_order,
                              out=tmp_path / "features.parquet", seed=4, batch_size=8)
    joined, metadata = read_features(path)
    whole = encode_store(store, "rcf", options=options, seed=4)
    pd.testing.assert_frame_equal(joined, whole, rtol=1e-6)
    assert metadata == json.loads(json.dumps(whole.attrs["eocausal"]))
    assert calls == [2]  # 16 units in chunks of 8: at most one part per chunk
    assert not list((tmp_path / "parts").iterdir())


@pytest.mark.parametrize(
    ("n_units", "per_chunk", "n_parts", "expected"),
    [(16, 8, 3, [(0, 8), (8, 16)]), (20, 4, 2, [(0, 12), (12, 20)]), (5, 8, 4, [(0, 5)])],
)
def test_parts_hold_whole_chunks(n_units, per_chunk, n_parts, expected):
    assert plan_parts(n_units, per_chunk, n_parts) == expected


def test_store_without_units_is_one_clear_message(tmp_path):
    store = create_store(tmp_path / "empty.zarr", unit_ids=[], n_dates=1, band_names=["B1"],
                         chip_size=8, dtype="uint16", crs="EPSG:32618", pixel_size=20.0,
                         dates=[None], centres=np.zeros((0, 2)))
    store.finalize_stats()
    with pytest.raises(NoUsableUnitsError, match="empty.zarr' has no units.*skipped_units"):
        encode_store(store, "rcf")
    with pytest.raises(NoUsableUnitsError, match="has no units"):
        encode_store_parts(store, "rcf", None, tmp_path / "parts", 2)


def test_cuda_asked_for_without_a_gpu_is_reported(s2, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EncoderError, match="no CUDA GPU is visible"):
        encode_chips(s2[0], build_encoder("rcf", 6), device="cuda")


def test_resnet_resizes_only_chips_below_min_size():
    x = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(0))
    plain = build_encoder("resnet18", 4, seed=1)
    sized = build_encoder("resnet18", 4, seed=1, min_size=32)
    with torch.no_grad():
        resized = F.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False)
        torch.testing.assert_close(sized(x), plain(resized))
        big = torch.randn(1, 4, 40, 40)
        torch.testing.assert_close(sized(big), plain(big))
    assert sized.settings["options"]["min_size"] == 32


def test_part_encoder_file_is_refused_unless_this_call_wrote_it(tmp_path):
    import torch
    from eocausal.models.features.parts import PartTask, _sha256, load_part_encoder

    from eocausal.errors import EncoderError

    evil = tmp_path / "encoder.pt"
    torch.save(torch.nn.Linear(2, 2), evil)
    task = PartTask("store", 0, 1, str(evil), str(tmp_path / "p.parquet"), 8, "cpu", (0.0,),
                    (1.0,), None, "0" * 64)
    with pytest.raises(EncoderError, match="Refusing to load"):
        load_part_encoder(task)
    ok = PartTask(*[getattr(task, f) for f in ("store_path", "start", "stop", "encoder_path",
                                               "part_path", "batch_size", "device", "mean",
                                               "std", "torch_threads")], _sha256(evil))
    assert isinstance(load_part_encoder(ok), torch.nn.Linear)
