"""Image encoders: a registry of factories that turn chips (B, C, H, W) into features (B, D).

Every encoder is an ``nn.Module`` with ``n_features`` (D) and ``settings`` (a JSON-ready dict
with the name, the options and any weight checksum) so that ``features.parquet`` records
exactly how its columns were made. Users add their own with :func:`register_encoder`.

Built in: ``resnet18``, ``resnet34``, ``resnet50`` (torchvision, random init or a local
state-dict file; never downloaded), ``rcf`` (MOSAIKS random convolutional features, see
:mod:`models.rcf`) and ``sequence`` (any of these per date, then temporal aggregation, see
:mod:`models.sequence`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from eocausal.models.encoders.rcf import RCF
from eocausal.models.encoders.sequence import SequenceEncoder
from eocausal.pipeline.imagery import file_sha256
from torch import nn

from eocausal.errors import EncoderError, InputFileError

__all__ = [
    "ResNetEncoder",
    "adapt_first_conv",
    "build_encoder",
    "factory_options",
    "file_sha256",
    "list_encoders",
    "register_encoder",
    "resolve_weights",
]

log = logging.getLogger(__name__)

EncoderFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, EncoderFactory] = {}


def register_encoder(
    name: str, *, replace: bool = False
) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register a factory ``factory(in_channels, **options) -> nn.Module`` under ``name``.

    The module it returns must map (B, C, H, W) float tensors to (B, D) and expose
    ``n_features`` and a JSON-ready ``settings`` dict; :func:`build_encoder` checks both.

    Parameters
    ----------
    name : str
        Name used in configs and ``build_encoder``.
    replace : bool, default=False
        Allow overwriting an existing name (for example when a notebook cell runs twice).

    Raises
    ------
    EncoderError
        If ``name`` is taken and ``replace`` is false.
    """

    def decorator(factory: EncoderFactory) -> EncoderFactory:
        if name in _REGISTRY and not replace:
            raise EncoderError(
                f"An encoder named '{name}' is already registered. Pick another name or pass "
                "replace=True to register_encoder."
            )
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_encoders() -> list[str]:
    """Names of the registered encoders, sorted."""
    return sorted(_REGISTRY)


def build_encoder(name: str, in_channels: int, **options: Any) -> nn.Module:
    """Build a registered encoder for chips with ``in_channels`` bands, in eval mode.

    Parameters
    ----------
    name : str
        A name from :func:`list_encoders`.
    in_channels : int
        Number of bands C of the chips it will see.
    **options
        Passed to the factory (for ``resnet18``: ``seed``, ``weights``, ``rgb_bands``,
        ``min_size``; for ``rcf``: ``n_features``, ``kernel_size``, ``bias``, ``seed``,
        ``mode``; for ``sequence``: ``base``, ``aggregate``, ``n_dates``,
        ``min_valid_fraction``, ``attention_dim``, ``seed`` and any option of the base).

    Returns
    -------
    encoder : nn.Module
        Maps (B, C, H, W) float tensors to (B, ``encoder.n_features``).

    Raises
    ------
    EncoderError
        If the name is unknown, an option is not accepted, or the factory's module lacks
        ``n_features``/``settings``.
    """
    if name not in _REGISTRY:
        raise EncoderError(
            f"Unknown encoder '{name}'. Registered encoders: {', '.join(list_encoders())}. "
            "Register your own with models.encoders.register_encoder."
        )
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise EncoderError(f"in_channels must be a positive int. Got {in_channels!r} instead.")
    factory = _REGISTRY[name]
    accepted = factory_options(name)
    if accepted is not None:
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise EncoderError(
                f"Encoder '{name}' does not accept option(s) {unknown}. "
                f"Valid options: {sorted(accepted)}."
            )
    encoder = factory(in_channels, **options)
    n_features = getattr(encoder, "n_features", None)
    settings = getattr(encoder, "settings", None)
    if (
        not isinstance(encoder, nn.Module)
        or not isinstance(n_features, int)
        or not isinstance(settings, dict)
    ):
        raise EncoderError(
            f"Encoder factory '{name}' must return an nn.Module with an int 'n_features' and a "
            f"dict 'settings'. Got {type(encoder).__name__} instead."
        )
    return encoder.eval()


def factory_options(name: str) -> set[str] | None:
    """Keyword options the factory of ``name`` accepts, or None if it takes ``**kwargs``."""
    params = list(inspect.signature(_REGISTRY[name]).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


# -- ResNets ------------------------------------------------------------------------------


def adapt_first_conv(
    weight: torch.Tensor, in_channels: int, rgb_bands: Sequence[int] | None = None
) -> torch.Tensor:
    """Map an RGB first-layer kernel (O, 3, k, k) to ``in_channels`` bands (O, C, k, k).

    The rule (the torchgeo/timm convention, which keeps the activation scale when all bands
    carry similar signal, since the C band weights sum to the 3 RGB weights):

    * C == 3 and no ``rgb_bands``: the kernel is kept unchanged.
    * otherwise every band c gets ``mean(weight[:, 0:3]) * 3 / C``;
    * if ``rgb_bands=(i, j, k)`` is given (needs C >= 3, distinct bands), bands i, j, k instead
      get the red, green and blue filters, also scaled by ``3 / C``:
      ``new[:, i] = weight[:, 0] * 3 / C`` and so on. With C == 3 this reorders the filters.

    Raises
    ------
    EncoderError
        If ``rgb_bands`` is not three distinct band indices below ``in_channels``.
    """
    if in_channels == 3 and rgb_bands is None:
        return weight.clone()
    scale = 3.0 / in_channels
    mean = weight.mean(dim=1, keepdim=True) * scale
    new = mean.repeat(1, in_channels, 1, 1)
    if rgb_bands is not None:
        bands = [int(b) for b in rgb_bands]
        if len(bands) != 3 or len(set(bands)) != 3 or not all(0 <= b < in_channels for b in bands):
            raise EncoderError(
                f"rgb_bands must be three distinct band indices in [0, {in_channels - 1}]. "
                f"Got {tuple(rgb_bands)!r} instead."
            )
        for rgb, band in enumerate(bands):
            new[:, band] = weight[:, rgb] * scale
    return new


class ResNetEncoder(nn.Module):
    """A torchvision ResNet whose classifier is replaced by Identity: the pooled embedding.

    Parameters
    ----------
    arch : {"resnet18", "resnet34", "resnet50"}
        torchvision architecture; D = 512, 512, 2048.
    in_channels : int
        Bands C of the chips.
    seed : int or None, default=0
        Seeds the random init inside a forked RNG, so the caller's global state is untouched.
    weights : path or None, default=None
        A state-dict file (``torch.save(model.state_dict())``) of the same architecture; ``fc``
        keys are optional and ignored. A 3-band first conv is adapted to C bands with
        :func:`adapt_first_conv`; a C-band one is loaded as is.
    rgb_bands : tuple of 3 int or None, default=None
        Bands that take the red, green, blue filters of a 3-band weights file.
    min_size : int or None, default=None
        Chips smaller than this (either side) are resized bilinearly to at least
        ``min_size`` px inside ``forward``, keeping their aspect ratio. ResNets divide the
        input by 32, so a 16 px chip leaves layer4 a single pixel; weights trained on
        224 px images may want ``min_size=64`` or more. None (default) never resizes.

    Notes
    -----
    With random init (no ``weights``) the first conv is drawn directly for C bands with
    torchvision's own init: averaging random RGB filters would give every band the same
    filter and erase the spectral information. ``rgb_bands`` then has no meaning and is refused.
    """

    def __init__(
        self,
        arch: str,
        in_channels: int,
        *,
        seed: int | None = 0,
        weights: str | Path | None = None,
        rgb_bands: Sequence[int] | None = None,
        min_size: int | None = None,
    ) -> None:
        super().__init__()
        if min_size is not None and (
            isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1
        ):
            raise EncoderError(f"min_size must be a positive int or None. Got {min_size!r}.")
        if weights is None and rgb_bands is not None:
            raise EncoderError(
                "rgb_bands only applies to a weights file with a 3-band first convolution; "
                "random init draws filters for every band. Remove rgb_bands or give weights."
            )
        if seed is None:  # fresh draw from the global RNG, which a fork would rewind
            net = _random_resnet(arch, in_channels, random_conv1=weights is None)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                net = _random_resnet(arch, in_channels, random_conv1=weights is None)
        n_features = int(net.fc.in_features)
        net.fc = nn.Identity()
        sha = None
        if weights is not None:
            weights = resolve_weights(weights)
            sha = _load_resnet_weights(net, Path(weights), arch, in_channels, rgb_bands)
        self.net = net.eval()
        self.min_size = min_size
        self.n_features = n_features
        self.settings: dict[str, Any] = {
            "name": arch,
            "n_features": n_features,
            "options": {
                "in_channels": in_channels,
                "seed": seed,
                "weights": None if weights is None else str(weights),
                "rgb_bands": None if rgb_bands is None else [int(b) for b in rgb_bands],
                "min_size": min_size,
            },
        }
        if sha is not None:
            self.settings["weights_sha256"] = sha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ResNet embedding of shape (B, n_features), resizing small chips if asked."""
        if self.min_size is not None and min(x.shape[-2:]) < self.min_size:
            scale = self.min_size / min(x.shape[-2:])
            size = tuple(max(self.min_size, round(s * scale)) for s in x.shape[-2:])
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.net(x)


def _random_resnet(arch: str, in_channels: int, *, random_conv1: bool) -> nn.Module:
    net = getattr(torchvision.models, arch)(weights=None)
    if random_conv1 and in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


def resolve_weights(weights: str | Path) -> Path:
    """A weights file path, or a torchvision weight name found in the local torch hub cache.

    Names such as ``"ResNet18_Weights.IMAGENET1K_V1"`` resolve to the file torchvision would
    have downloaded, but only when it already lies in ``torch.hub.get_dir()/checkpoints``:
    nothing is ever downloaded. Anything else is taken as a path.
    """
    text = str(weights)
    enum_name, _, member = text.partition(".")
    enum = getattr(torchvision.models, enum_name, None) if member else None
    if enum is None or not hasattr(enum, member) or Path(text).exists():
        return Path(text)
    url = getattr(enum, member).url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        raise EncoderError(
            f"Weights '{text}' are not in the local torch hub cache ({cached}). Nothing is "
            f"downloaded at run time: fetch {url} on a machine with internet, copy it to "
            f"{cached} (or anywhere), and pass that file with --weights."
        )
    return cached


def _load_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if path.is_dir():
        raise InputFileError(f"Encoder weights '{path}' is a directory; give the weights file "
                             "inside it (a torch state dict, e.g. resnet18.pth).")
    if not path.is_file():
        raise InputFileError(f"Encoder weights file '{path}' does not exist. Check the path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe pickles
        raise EncoderError(
            f"Cannot read encoder weights '{path}' as a torch state dict of tensors "
            f"({type(exc).__name__}). eocausal loads weights with weights_only=True and never "
            "runs code from a weights file: save plain weights with "
            "torch.save(model.state_dict(), path)."
        ) from exc
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]  # lightning-style checkpoint
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise EncoderError(
            f"Encoder weights '{path}' hold a {type(state).__name__}, not a state dict of tensors. "
            "Save it with torch.save(model.state_dict(), path)."
        )
    return state


def _load_resnet_weights(
    net: nn.Module, path: Path, arch: str, in_channels: int, rgb_bands: Sequence[int] | None
) -> str:
    """Load ``path`` into ``net`` (fc excluded), adapting conv1; return the file's SHA-256."""
    state = {k: v for k, v in _load_state_dict(path).items() if not k.startswith("fc.")}
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and k != "conv1.weight" and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        raise EncoderError(
            f"Encoder weights '{path}' do not fit {arch}: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}, shape mismatches {wrong_shape[:5]}. "
            f"Give a state dict saved from torchvision's {arch} or choose the matching encoder."
        )
    conv = state["conv1.weight"]
    if conv.ndim != 4 or conv.shape[0] != 64 or conv.shape[2:] != (7, 7):
        raise EncoderError(
            f"Encoder weights '{path}': conv1.weight has shape {tuple(conv.shape)}, expected "
            "(64, bands, 7, 7)."
        )
    if conv.shape[1] == 3:
        new_conv = adapt_first_conv(conv, in_channels, rgb_bands)
    elif conv.shape[1] == in_channels:
        if rgb_bands is not None:
            raise EncoderError(
                f"Encoder weights '{path}' already have a {in_channels}-band first convolution, "
                "so rgb_bands does not apply. Remove rgb_bands."
            )
        new_conv = conv
    else:
        raise EncoderError(
            f"Encoder weights '{path}' have a {conv.shape[1]}-band first convolution but the "
            f"chips have {in_channels} bands. Use weights for 3 or {in_channels} bands."
        )
    net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    state["conv1.weight"] = new_conv
    net.load_state_dict(state, strict=False)  # only fc.* (Identity, no keys) is left out
    log.info("Loaded %s weights from %s", arch, path)
    return file_sha256(path)


def _make_resnet_factory(arch: str) -> EncoderFactory:
    def factory(
        in_channels: int,
        *,
        seed: int | None = 0,
        weights: str | Path | None = None,
        rgb_bands: Sequence[int] | None = None,
        min_size: int | None = None,
    ) -> nn.Module:
        return ResNetEncoder(
            arch, in_channels, seed=seed, weights=weights, rgb_bands=rgb_bands, min_size=min_size
        )

    factory.__doc__ = f"torchvision {arch} without its classifier; see :class:`ResNetEncoder`."
    return factory


for _arch in ("resnet18", "resnet34", "resnet50"):
    register_encoder(_arch)(_make_resnet_factory(_arch))


@register_encoder("rcf")
def _rcf_factory(
    in_channels: int,
    *,
    n_features: int = 512,
    kernel_size: int = 3,
    bias: float = -1.0,
    seed: int | None = 0,
    mode: str = "gaussian",
    zca_bias: float = 1e-3,
) -> nn.Module:
    """MOSAIKS random convolutional features; see :class:`models.rcf.RCF`."""
    return RCF(
        in_channels,
        n_features=n_features,
        kernel_size=kernel_size,
        bias=bias,
        seed=seed,
        mode=mode,
        zca_bias=zca_bias,
    )


@register_encoder("sequence")
def _sequence_factory(
    in_channels: int,
    *,
    base: str = "resnet18",
    aggregate: str = "mean",
    n_dates: int | None = None,
    min_valid_fraction: float = 0.0,
    attention_dim: int = 64,
    seed: int | None = 0,
    **base_options: Any,
) -> nn.Module:
    """A per-date ``base`` encoder, then temporal aggregation; see :class:`SequenceEncoder`.

    Options the sequence does not know (``n_features``, ``weights``, ``mode``...) go to the
    base encoder, which checks them; ``seed`` seeds both the base and the attention pooling.
    """
    if base == "sequence":
        raise EncoderError("A sequence encoder's base must be an image encoder, not 'sequence'.")
    if base in _REGISTRY and (factory_options(base) is None or "seed" in factory_options(base)):
        base_options = {**base_options, "seed": seed}
    return SequenceEncoder(
        build_encoder(base, in_channels, **base_options),
        aggregate=aggregate,
        n_dates=n_dates,
        min_valid_fraction=min_valid_fraction,
        attention_dim=attention_dim,
        seed=seed,
    )
