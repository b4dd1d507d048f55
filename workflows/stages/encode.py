"""Encode stage: every chip of the tile store through the run's encoder into a feature table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eocausal.workflows.context import StageContext
from eocausal.workflows.progress import progress_bar

__all__ = ["FeatureTable", "encode_inputs", "encode_settings", "encode_stage"]


@dataclass(frozen=True)
class FeatureTable:
    """Where the features went and their shape."""

    path: str
    n_units: int
    n_features: int
    encoder: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


def encode_settings(config: Any) -> dict[str, Any]:
    enc = config.encoder
    # batch size, device and workers change speed, not features
    return {"name": enc.name, "options": enc.options,
            "weights": None if enc.weights is None else str(enc.weights), "seed": config.seed}


def encode_inputs(ctx: StageContext) -> list[Path]:
    weights = ctx.config.encoder.weights
    return [] if weights is None else [Path(weights)]


def encode_stage(ctx: StageContext) -> FeatureTable:
    """Build (and fit) the encoder on the store, encode every chip, write features.parquet."""
    from eocausal.models.features.encode import encode_store
    from eocausal.models.features.io import write_features

    enc = ctx.config.encoder
    store = ctx.store()
    encoder = ctx.encoder()
    with progress_bar(f"encode ({enc.name})", ctx.progress) as update:
        frame = encode_store(store, encoder, batch_size=enc.batch_size, device=enc.device,
                             progress=update, num_workers=enc.num_workers)
    path = write_features(frame, ctx.paths.features, frame.attrs["eocausal"])
    ctx.remember("features", frame)
    ctx.echo(f"encoded {len(frame)} chips with {enc.name} -> {encoder.n_features} features")
    return FeatureTable(path=str(path), n_units=len(frame), n_features=int(encoder.n_features),
                        encoder=enc.name)
