"""Simulate stage: a synthetic world with known effects becomes the run's units and imagery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eocausal.workflows.context import StageContext

__all__ = ["restore_world", "simulate_stage", "world_outputs"]


def _point_config_at(ctx: StageContext, record: dict[str, Any]) -> None:
    config = ctx.config
    config.units.path = Path(record["units"])
    config.imagery.paths = list(record["imagery"])
    config.truth = Path(record["truth"])
    if ctx.manifest is not None:  # later stages (the map's covariate means) read it there
        ctx.manifest.config = config.model_dump(mode="json")


def simulate_stage(ctx: StageContext) -> dict[str, Any]:
    """Write the world into ``world/`` and point the config's units and imagery at it."""
    from eocausal.simulator.simulate import simulate

    world = simulate(ctx.paths.world, **(ctx.config.simulate or {}))
    record = {"units": str(world.units_path), "imagery": [str(p) for p in world.scene_paths],
              "truth": str(world.truth_path), "true_ate": world.ate}
    _point_config_at(ctx, record)
    ctx.echo(f"simulated a world: {len(world.scene_paths)} scene(s), units in {world.units_path}")
    return record


def restore_world(ctx: StageContext, record: dict[str, Any]) -> None:
    """An up-to-date world is reused: point the config at its files as the stage would."""
    _point_config_at(ctx, record)


def world_outputs(ctx: StageContext) -> list[Path]:
    world = ctx.paths.world
    return [world / "units.gpkg", world / "truth.parquet", world / "truth.json"]
