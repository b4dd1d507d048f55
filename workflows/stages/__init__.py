"""Every stage of a run, defined once: what it reads, what it writes, what it follows.

``eocausal run`` executes :data:`STAGES` as a DAG (:mod:`eocausal.workflows.dag`); the
per-stage commands (``eocausal ingest | encode | estimate | map``) call the same stage
functions of the modules beside this one. Importing this package imports no torch,
scikit-learn or econml: each stage imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eocausal.workflows.dag import Stage
from eocausal.workflows.stages.encode import encode_inputs, encode_settings, encode_stage
from eocausal.workflows.stages.estimate import estimate_settings, estimate_stage
from eocausal.workflows.stages.evaluate import evaluate_settings, evaluate_stage
from eocausal.workflows.stages.ingest import ingest_inputs, ingest_settings, ingest_stage
from eocausal.workflows.stages.map import map_enabled, map_outputs, map_settings, map_stage
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


STAGES: tuple[Stage, ...] = (
    Stage("simulate", run=lambda ctx: simulate_stage(ctx),
          settings=lambda c: {"simulate": c.simulate}, outputs=world_outputs,
          enabled=lambda c: c.simulate is not None, restore=restore_world),
    Stage("ingest", run=_ingest, after=("simulate",), settings=ingest_settings,
          inputs=ingest_inputs, outputs=lambda ctx: [ctx.paths.tiles, ctx.paths.skipped]),
    Stage("encode", run=lambda ctx: _record(encode_stage(ctx)), after=("ingest",),
          settings=encode_settings, inputs=encode_inputs,
          outputs=lambda ctx: [ctx.paths.features]),
    Stage("estimate", run=lambda ctx: _record(estimate_stage(ctx)), after=("encode",),
          settings=estimate_settings,
          inputs=lambda ctx: [Path(ctx.config.units.path)],
          outputs=lambda ctx: [ctx.paths.effects, ctx.paths.estimator, ctx.paths.ate_table,
                               ctx.paths.estimates]),
    Stage("evaluate", run=lambda ctx: _record(evaluate_stage(ctx)), after=("estimate",),
          settings=evaluate_settings, outputs=lambda ctx: [ctx.paths.evaluation],
          enabled=lambda c: c.evaluation.enabled),
    Stage("map", run=map_stage, after=("encode", "estimate"), settings=map_settings,
          outputs=map_outputs, enabled=map_enabled),
    Stage("report", run=report_stage, after=("simulate", "ingest", "estimate", "evaluate", "map"),
          settings=report_settings, outputs=report_outputs),
)

STAGE_NAMES = tuple(stage.name for stage in STAGES)
