"""Run the stages of a config into one run directory (see DESIGN.md, "the run directory").

This module only wires: it takes the run directory's lock, opens the manifest (which
remembers the last run), starts the place where parallel work runs, and hands the stages of
:mod:`eocausal.workflows.stages` to the DAG runner, which skips what is up to date.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eocausal.workflows.config import RunConfig
from eocausal.workflows.context import Echo, StageContext
from eocausal.workflows.paths import RunPaths

from eocausal.errors import OutputPathError

__all__ = ["RunResult", "prepare_run_dir", "run_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Where a run put its outputs, its headline numbers, and what each stage did."""

    run_dir: Path
    summary: dict[str, Any]
    outputs: dict[str, Path]
    stages: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        s = self.summary
        head = (f"ATE {s['ate']:.4g} [{s['ate_lo']:.4g}, {s['ate_hi']:.4g}]"
                if s.get("ate") is not None else "no estimate")
        return f"RunResult('{self.run_dir}', {head}, stages {self.stages})"


def _written_by_eocausal(paths: RunPaths) -> bool:
    """A run directory from before the marker existed: its manifest says it is ours."""
    try:
        return "eocausal_manifest" in json.loads(paths.manifest.read_text())
    except (OSError, ValueError, TypeError):
        return False


def prepare_run_dir(paths: RunPaths) -> None:
    """Create the run directory, or accept one eocausal made; refuse anything else.

    A run only ever overwrites what a run created: an existing non-empty directory without
    the run marker (someone's own folder) is refused, as is a path that is a file.
    """
    root = paths.root
    if root.exists() and not root.is_dir():
        raise OutputPathError(f"Output path '{root}' is a file, not a directory; give a new "
                              "folder name with --out.")
    if root.is_dir() and any(root.iterdir()) and not paths.marker.exists() \
            and not _written_by_eocausal(paths):
        raise OutputPathError(
            f"Output folder '{root}' already holds files that no eocausal run wrote (it has no "
            f"{paths.marker.name} marker); give an empty or new folder with --out.")
    root.mkdir(parents=True, exist_ok=True)
    if not paths.marker.exists():
        paths.marker.write_text("This folder is an eocausal run directory.\n")


def run_config(config: RunConfig, run_dir: str | Path, *, echo: Echo | None = None,
               progress: bool = True, force: Iterable[str] = ()) -> RunResult:
    """Run every stage of ``config`` into ``run_dir``, skipping those that are up to date.

    Stages: simulate (with a ``simulate`` section), ingest, encode, estimate, evaluate, map
    (over imagery, not patches), report. ``force`` names stages to rerun with everything after
    them. ``manifest.json`` is rewritten after each stage.
    """
    from eocausal.workflows.cluster import partition_mapper
    from eocausal.workflows.dag import run_stages
    from eocausal.workflows.lock import RunLock
    from eocausal.workflows.manifest import Manifest
    from eocausal.workflows.stages import STAGES

    echo = echo or (lambda message: log.info(message))
    paths = RunPaths(Path(run_dir))
    prepare_run_dir(paths)
    with RunLock(paths.lock, paths.lock_info, note=echo):
        manifest = Manifest.open(paths.manifest, config.model_dump(mode="json"),
                                 seeds={"run": config.seed,
                                        "simulate": int((config.simulate or {}).get("seed", 0))})
        with partition_mapper(config.compute.scheduler, config.compute.workers,
                              progress=progress) as mapper:
            ctx = StageContext(config, paths, echo=echo, progress=progress, mapper=mapper,
                               manifest=manifest)
            status = run_stages(STAGES, ctx, manifest, force=force)
            manifest.config = config.model_dump(mode="json")  # with the simulated paths
            manifest.write()
    summary = json.loads(paths.summary.read_text())
    names = [paths.manifest, paths.tiles, paths.skipped, paths.features, paths.effects,
             paths.estimator, paths.ate_table, paths.summary, paths.report, paths.evaluation,
             paths.effect_tif, paths.effect_png, paths.effect_html, paths.cells_parquet,
             paths.aggregates_gpkg, paths.targets_csv]
    outputs = {str(p.relative_to(paths.root)): p for p in names if p.exists()}
    return RunResult(paths.root, summary, outputs, status)
