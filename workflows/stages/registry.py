"""The run's stages as a DAG: what each reads, writes and follows (``eocausal run``).

Importing this module imports every stage module but no torch, scikit-learn or econml:
each stage imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eocausal.workflows.dag import Stage
from eocausal.workflows.stages.clusters import (
    clusters_outputs,
    clusters_settings,
    clusters_stage,
)
from eocausal.workflows.stages.encode import encode_inputs, encode_settings, encode_stage
from eocausal.workflows.stages.estimate import estimate_settings, estimate_stage
from eocausal.workflows.stages.evaluate import evaluate_settings, evaluate_stage
from eocausal.workflows.stages.ingest import ingest_inputs, ingest_settings, ingest_stage
from eocausal.workflows.stages.map import map_enabled, map_outputs, map_settings, map_stage
from eocausal.workflows.stages.panel import encode_panel_stage, estimate_panel_stage
from eocausal.workflows.stages.report import report_outputs, report_settings, report_stage
from eocausal.workflows.stages.simulate import restore_world, simulate_stage, world_outputs

__all__ = ["STAGES", "STAGE_NAMES"]


def _record(result: Any) -> dict[str, Any]:
    return result.record() if hasattr(result, "record") else dict(result)


def _ingest(ctx: Any) -> dict[str, Any]:
    record = _record(ingest_stage(ctx))
    if ctx.manifest is not None:
        ctx.manifest.inputs["units"] = str(ctx.config.units.path)
        ctx.manifest.inputs["imagery"] = ctx.store().attrs.get("sources", [])
    return record


def _encode(ctx: Any) -> dict[str, Any]:
    if ctx.config.panel is not None:
        return encode_panel_stage(ctx)
    return _record(encode_stage(ctx))


def _estimate(ctx: Any) -> dict[str, Any]:
    if ctx.config.panel is not None:
        return estimate_panel_stage(ctx)
    return _record(estimate_stage(ctx))


def _estimate_settings(config: Any) -> dict[str, Any]:
    panel = None if config.panel is None else config.panel.model_dump(mode="json")
    return {**estimate_settings(config), "panel": panel}


def _estimate_inputs(ctx: Any) -> list[Path]:
    panel = ctx.config.panel
    return [Path(ctx.config.units.path), *([] if panel is None else [Path(panel.path)])]


def _estimate_outputs(ctx: Any) -> list[Path]:
    p = ctx.paths
    if ctx.config.panel is not None:
        return [p.ate_table, p.estimates]
    return [p.effects, p.estimator, p.ate_table, p.estimates]


STAGES: tuple[Stage, ...] = (
    Stage("simulate", run=lambda ctx: simulate_stage(ctx),
          settings=lambda c: {"simulate": c.simulate}, outputs=world_outputs,
          enabled=lambda c: c.simulate is not None, restore=restore_world),
    Stage("ingest", run=_ingest, after=("simulate",), settings=ingest_settings,
          inputs=ingest_inputs, outputs=lambda ctx: [ctx.paths.tiles, ctx.paths.skipped]),
    Stage("encode", run=_encode, after=("ingest",),
          settings=lambda c: {**encode_settings(c), "panel": None if c.panel is None else
                              c.panel.period_format},
          inputs=encode_inputs, outputs=lambda ctx: [ctx.paths.features]),
    Stage("estimate", run=_estimate, after=("encode",), settings=_estimate_settings,
          inputs=_estimate_inputs, outputs=_estimate_outputs),
    Stage("evaluate", run=lambda ctx: _record(evaluate_stage(ctx)), after=("estimate",),
          settings=evaluate_settings, outputs=lambda ctx: [ctx.paths.evaluation],
          enabled=lambda c: c.evaluation.enabled and c.panel is None),
    Stage("clusters", run=clusters_stage, after=("encode", "estimate"),
          settings=clusters_settings, outputs=clusters_outputs,
          enabled=lambda c: c.clusters is not None and c.panel is None),
    Stage("map", run=map_stage, after=("encode", "estimate", "clusters"), settings=map_settings,
          outputs=map_outputs, enabled=map_enabled),
    Stage("report", run=report_stage,
          after=("simulate", "ingest", "estimate", "evaluate", "clusters", "map"),
          settings=report_settings, outputs=report_outputs),
)

STAGE_NAMES = tuple(stage.name for stage in STAGES)
