"""Encoders on real chips: sizes, weights files, first-layer rule, seeds, RCF maths."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torchvision
from eocausal.models.encoders import registry as encoders
from eocausal.models.encoders.rcf import RCF
from eocausal.models.encoders.registry import (
    adapt_first_conv,
    build_encoder,
    list_encoders,
    register_encoder,
)
from eocausal.models.features.encode import encode_chips
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window
from torch import nn

from eocausal.errors import EncoderError

RASTERS = {
    "sentinel2": "sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif",
    "landsat8": "landsat8_LC80200392015216LGN00_B1-B7_BQA_512.tif",
    "rgb_byte": "rasterio_RGB.byte.tif",
}


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    """Keep torch from oversubscribing the 2-core test machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def read_chips(path: Path, n: int = 16, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A 4x4 grid of windows around the raster centre: chips (n, C, s, s) and masks (n, s, s)."""
    chips, valid = [], []
    with rasterio.open(path) as src:
        row0, col0 = src.height // 2 - 2 * size, src.width // 2 - 2 * size
        for i in range(n):
            window = Window(col0 + (i % 4) * size, row0 + (i // 4) * size, size, size)
            chips.append(src.read(window=window))
            valid.append(src.read_masks(window=window).min(axis=0) > 0)
    return np.stack(chips), np.stack(valid)


@pytest.fixture(scope="module")
def chips(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {key: read_chips(data_dir / "imagery" / name) for key, name in RASTERS.items()}


def standardise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    return ((x - mean) / np.where(std == 0, 1, std)).astype(np.float32)


def seeded_resnet_file(tmp_path: Path, arch: str = "resnet18", seed: int = 123) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = getattr(torchvision.models, arch)(weights=None)
    path = tmp_path / f"{arch}_seed{seed}.pt"
    torch.save(net.state_dict(), path)
    return path


ENCODERS = {
    "resnet18": ("resnet18", {}, 512),
    "resnet34": ("resnet34", {}, 512),
    "resnet50": ("resnet50", {}, 2048),
    "rcf": ("rcf", {"n_features": 256}, 256),
    "rcf_empirical": ("rcf", {"n_features": 256, "mode": "empirical"}, 256),
}


def make(key: str, x: np.ndarray, **extra) -> nn.Module:
    name, options, _ = ENCODERS[key]
    encoder = build_encoder(name, x.shape[1], **{**options, **extra})
    if isinstance(encoder, RCF) and not encoder.fitted:
        encoder.fit_patches(x)
    return encoder


@pytest.mark.parametrize("raster", sorted(RASTERS))
@pytest.mark.parametrize("key", sorted(ENCODERS))
def test_encoder_gives_finite_features_of_stated_size(chips, raster, key):
    x = standardise(chips[raster][0])
    encoder = make(key, x)
    features = encode_chips(x, encoder, device="cpu")
    assert encoder.n_features == ENCODERS[key][2]
    assert features.shape == (len(x), encoder.n_features)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    assert features.std(axis=0).max() > 0  # chips are told apart


@pytest.mark.parametrize("key", ["resnet18", "rcf", "rcf_empirical"])
def test_same_seed_repeats_and_different_seed_differs(chips, key):
    x = standardise(chips["sentinel2"][0])
    first = encode_chips(x, make(key, x, seed=7), device="cpu")
    again = encode_chips(x, make(key, x, seed=7), device="cpu")
    other = encode_chips(x, make(key, x, seed=8), device="cpu")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_seeding_leaves_global_rng_alone():
    state = torch.get_rng_state()
    build_encoder("resnet18", 6, seed=1)
    assert torch.equal(state, torch.get_rng_state())


def test_weights_file_loads_changes_output_and_repeats(chips, tmp_path):
    x = standardise(chips["sentinel2"][0])
    path = seeded_resnet_file(tmp_path)
    random_init = encode_chips(x, build_encoder("resnet18", 6), device="cpu")
    loaded = build_encoder("resnet18", 6, weights=path)
    first = encode_chips(x, loaded, device="cpu")
    second = encode_chips(x, build_encoder("resnet18", 6, weights=str(path)), device="cpu")
    assert not np.allclose(first, random_init)
    np.testing.assert_array_equal(first, second)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(loaded.net.layer4[1].conv2.weight, saved["layer4.1.conv2.weight"])
    assert loaded.settings["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_of_other_architecture_name_the_file(tmp_path):
    path = seeded_resnet_file(tmp_path, arch="resnet34")
    with pytest.raises(EncoderError, match=re.escape(path.name)) as info:
        build_encoder("resnet18", 3, weights=path)
    assert "layer1.2.conv1.weight" in str(info.value)  # the first unexpected key


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "notes.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(EncoderError, match="notes.pt.*not a state dict"):
        build_encoder("resnet18", 3, weights=path)


def test_missing_weights_file_is_input_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_encoder("resnet18", 3, weights=tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("n_bands", "rgb_bands"),
    [(3, None), (1, None), (6, None), (8, None), (6, (2, 1, 0)), (8, (3, 2, 1))],
)
def test_first_conv_follows_documented_rule(tmp_path, n_bands, rgb_bands):
    path = seeded_resnet_file(tmp_path)
    rgb = torch.load(path, weights_only=True)["conv1.weight"].double()
    got = build_encoder("resnet18", n_bands, weights=path, rgb_bands=rgb_bands)
    got = got.net.conv1.weight.detach().double()
    assert got.shape == (64, n_bands, 7, 7)
    # Expected weights, band by band, straight from the docstring's rule.
    for band in range(n_bands):
        if n_bands == 3 and rgb_bands is None:
            expected = rgb[:, band]
        elif rgb_bands is not None and band in rgb_bands:
            expected = rgb[:, rgb_bands.index(band)] * 3 / n_bands
        else:
            expected = (rgb[:, 0] + rgb[:, 1] + rgb[:, 2]) / 3 * 3 / n_bands
        torch.testing.assert_close(got[:, band], expected, rtol=1e-6, atol=1e-8)
    # The rule keeps the activation scale: band weights sum to the RGB weights' sum.
    torch.testing.assert_close(got.sum(1), rgb.sum(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rgb_bands", [(0, 1), (0, 0, 1), (0, 1, 6)])
def test_bad_rgb_bands_rejected(rgb_bands):
    weight = torch.randn(64, 3, 7, 7)
    with pytest.raises(EncoderError, match="rgb_bands must be three distinct"):
        adapt_first_conv(weight, 6, rgb_bands)


def test_rgb_bands_without_weights_rejected():
    with pytest.raises(EncoderError, match="rgb_bands only applies to a weights file"):
        build_encoder("resnet18", 6, rgb_bands=(2, 1, 0))


def test_unknown_encoder_lists_registered_names():
    with pytest.raises(EncoderError, match="Unknown encoder 'vit9'.*rcf, resnet18, resnet34"):
        build_encoder("vit9", 3)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(EncoderError, match=r"\['n_filters'\].*kernel_size"):
        build_encoder("rcf", 3, n_filters=8)


def test_user_encoder_can_be_registered():
    class BandMeans(nn.Module):
        def __init__(self, in_channels: int) -> None:
            super().__init__()
            self.n_features = in_channels
            self.settings = {"name": "band_means", "options": {"in_channels": in_channels}}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    try:
        register_encoder("band_means")(BandMeans)
        assert "band_means" in list_encoders()
        out = build_encoder("band_means", 4)(torch.ones(2, 4, 8, 8))
        assert out.shape == (2, 4)
        with pytest.raises(EncoderError, match="already registered"):
            register_encoder("band_means")(BandMeans)
    finally:
        encoders._REGISTRY.pop("band_means", None)


def test_rcf_matches_its_definition(chips):
    """Pooled relu(conv + b) and relu(-conv + b), computed with numpy windows."""
    x = standardise(chips["landsat8"][0])[:3]
    rcf = RCF(8, n_features=8, bias=-0.5, seed=3)
    w = rcf.weights.numpy().astype(np.float64)
    windows = sliding_window_view(x.astype(np.float64), (3, 3), axis=(2, 3))  # N,C,H',W',3,3
    conv = np.einsum("nchwij,kcij->nkhw", windows, w)
    expected = np.concatenate(
        [np.maximum(conv - 0.5, 0).mean((2, 3)), np.maximum(-conv - 0.5, 0).mean((2, 3))], axis=1
    )
    np.testing.assert_allclose(encode_chips(x, rcf, device="cpu"), expected, rtol=1e-4, atol=1e-5)


def test_rcf_empirical_filters_are_whitened_patches_of_the_chips(chips):
    x = standardise(chips["sentinel2"][0]).astype(np.float64)
    rcf = RCF.from_chips(x, n_features=512, seed=0, zca_bias=1e-10)
    white, zca = rcf.whitened_patches_, rcf.zca_
    d = white.shape[1]
    # Whitened patches have identity covariance, except the per-patch mean direction that
    # contrast normalisation removes.
    cov = white.T @ white / len(white)
    np.testing.assert_allclose(cov, np.eye(d) - np.full((d, d), 1 / d), atol=1e-4)
    # ZCA is the symmetric whitening: Z = Z^T and, off the removed mean direction,
    # Z^2 = pinv(covariance of the patches).
    np.testing.assert_allclose(zca, zca.T, atol=1e-6)
    proj = np.eye(d) - np.full((d, d), 1 / d)
    patch_cov = rcf.patches_.T @ rcf.patches_ / len(white)
    np.testing.assert_allclose(
        proj @ zca @ zca @ proj, np.linalg.pinv(patch_cov, rcond=1e-8), rtol=1e-4, atol=1e-3
    )
    # Filters are Z (Z p), so raw-chip convolution equals whitened-chip convolution.
    np.testing.assert_allclose(
        rcf.weights.numpy().reshape(len(white), -1), white @ zca, rtol=1e-4, atol=1e-4
    )
    # Each patch is a contrast-normalised window of the chips at its recorded position.
    for n, r, c in rcf.positions_[:5]:
        raw = x[n, :, r : r + 3, c : c + 3].ravel()
        raw = raw - raw.mean()
        i = np.flatnonzero((rcf.positions_ == (n, r, c)).all(1))[0]
        np.testing.assert_allclose(rcf.patches_[i], raw / np.linalg.norm(raw), atol=1e-10)


def test_rcf_empirical_samples_valid_pixels_only(chips):
    x = standardise(chips["sentinel2"][0])
    valid = np.zeros(x.shape[:1] + x.shape[2:], dtype=bool)
    valid[5, 4:20, 4:20] = True
    rcf = RCF.from_chips(x, valid=valid, n_features=64, seed=0)
    assert (rcf.positions_[:, 0] == 5).all()
    assert ((rcf.positions_[:, 1:] >= 4) & (rcf.positions_[:, 1:] <= 17)).all()


def test_rcf_empirical_refuses_to_run_unfitted():
    rcf = build_encoder("rcf", 3, mode="empirical")
    with pytest.raises(EncoderError, match="fit_patches"):
        rcf(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize(
    ("options", "message"),
    [({"n_features": 7}, "must be even"), ({"mode": "kmeans"}, "mode must be one of")],
)
def test_rcf_bad_options(options, message):
    with pytest.raises(EncoderError, match=message):
        build_encoder("rcf", 3, **options)


def test_settings_are_json_ready(tmp_path):
    import json

    for encoder in (
        build_encoder("resnet18", 6, weights=seeded_resnet_file(tmp_path)),
        RCF.from_chips(np.random.default_rng(0).normal(size=(4, 6, 16, 16)), n_features=16),
    ):
        assert json.loads(json.dumps(encoder.settings)) == encoder.settings


def test_torchvision_weight_names_resolve_from_the_local_hub_cache(tmp_path, monkeypatch):
    import torch
    import torchvision
    from eocausal.models.encoders.registry import resolve_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    name = "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(EncoderError, match="not in the local torch hub cache"):
        resolve_weights(name)
    cached = tmp_path / "checkpoints" / Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cached)
    assert resolve_weights(name) == cached
    encoder = build_encoder("resnet18", 3, weights=name)
    assert encoder.settings["weights_sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
