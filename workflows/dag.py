"""Run stages as a small DAG that skips what is up to date.

Each stage declares the config settings it reads, the input files it reads, the stages it
follows and the files it writes. Its hash covers its settings, the content of its input
files and the hashes of the stages before it, so changing one setting reruns exactly the
stages that depend on it. A stage whose hash matches the manifest's record and whose outputs
all exist is skipped with "NAME: up to date"; ``force`` reruns a stage and everything after.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eocausal.workflows.interrupt import was_interrupted

from eocausal.errors import ConfigError

if TYPE_CHECKING:
    from eocausal.workflows.context import StageContext
    from eocausal.workflows.manifest import Manifest

__all__ = ["Stage", "StageInterrupted", "as_stage", "downstream", "run_stages", "stage_hash"]


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived while ``stage`` ran; the manifest marks it interrupted."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


@contextlib.contextmanager
def as_stage(name: str) -> Iterator[None]:
    """Name the stage a Ctrl-C interrupted, for a per-stage command that runs no DAG."""
    try:
        yield
    except StageInterrupted:
        raise
    except KeyboardInterrupt:
        raise StageInterrupted(name) from None
    except Exception:
        if was_interrupted():
            raise StageInterrupted(name) from None
        raise


def _nothing(_: Any) -> list[Path]:
    return []


@dataclass(frozen=True)
class Stage:
    """One step of a run.

    ``run(ctx)`` does the work and returns a JSON-ready record of what it wrote;
    ``settings(config)`` is the part of the config it depends on (JSON-ready);
    ``inputs(ctx)`` lists the files it reads from outside the run directory;
    ``outputs(ctx)`` the files it writes (all must exist for the stage to count as done);
    ``enabled(config)`` whether this run has the stage at all; ``restore(ctx, record)``
    re-applies what a skipped stage would have told later stages (the simulator's paths).
    """

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    after: tuple[str, ...] = ()
    settings: Callable[[Any], Any] = field(default=lambda config: None)
    inputs: Callable[[StageContext], list[Path]] = field(default=_nothing)
    outputs: Callable[[StageContext], list[Path]] = field(default=_nothing)
    enabled: Callable[[Any], bool] = field(default=lambda config: True)
    restore: Callable[[StageContext, dict[str, Any]], None] | None = None


def downstream(stages: Sequence[Stage], names: Iterable[str]) -> set[str]:
    """``names`` and every stage that follows any of them, directly or not."""
    known = {s.name for s in stages}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ConfigError(f"--force names unknown stage(s) {unknown}; the stages are "
                          f"{', '.join(s.name for s in stages)}.")
    result = set(names)
    changed = True
    while changed:
        changed = False
        for stage in stages:
            if stage.name not in result and result & set(stage.after):
                result.add(stage.name)
                changed = True
    return result


def _file_digest(path: Path, cache: dict[str, Any]) -> str:
    """sha256 of a file, remembered by (size, mtime) so a rerun need not read it again."""
    stat = path.stat()
    key = str(path.resolve())
    seen = cache.get(key)
    if seen and seen["size"] == stat.st_size and seen["mtime_ns"] == stat.st_mtime_ns:
        return seen["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    return digest.hexdigest()


def _input_fingerprint(path: Path, cache: dict[str, Any]) -> Any:
    if path.is_file():
        return [str(path), _file_digest(path, cache)]
    if path.is_dir():  # a directory input (a zarr store): its files' digests, in order
        return [str(path), [_input_fingerprint(p, cache) for p in sorted(path.rglob("*"))
                            if p.is_file()]]
    return [str(path), None]  # a URL or a path that does not exist yet


def stage_hash(stage: Stage, ctx: StageContext, upstream: dict[str, str],
               file_cache: dict[str, Any]) -> str:
    """Content hash of everything the stage's result depends on."""
    body = {
        "stage": stage.name,
        "settings": stage.settings(ctx.config),
        "after": {name: upstream.get(name) for name in stage.after},
        "inputs": [_input_fingerprint(Path(p), file_cache) for p in stage.inputs(ctx)],
    }
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _complete(stage: Stage, ctx: StageContext) -> bool:
    return all(Path(p).exists() for p in stage.outputs(ctx))


def run_stages(stages: Sequence[Stage], ctx: StageContext, manifest: Manifest, *,
               force: Iterable[str] = ()) -> dict[str, str]:
    """Run (or skip) each enabled stage in order; returns name -> "ran" or "up to date"."""
    rerun = downstream(stages, force)
    hashes: dict[str, str] = {}
    status: dict[str, str] = {}
    for stage in stages:
        if not stage.enabled(ctx.config):
            manifest.drop(stage.name)
            continue
        digest = stage_hash(stage, ctx, hashes, manifest.file_hashes)
        previous = manifest.previous(stage.name)
        if (stage.name not in rerun and previous is not None
                and previous.get("status") == "done" and previous.get("hash") == digest
                and _complete(stage, ctx)):
            if stage.restore is not None:
                stage.restore(ctx, previous.get("outputs", {}))
            manifest.keep(stage.name)
            ctx.echo(f"{stage.name}: up to date")
            status[stage.name] = "up to date"
        else:
            try:
                with manifest.stage(stage.name, digest) as record:
                    record.update(stage.run(ctx))
            except KeyboardInterrupt:
                raise StageInterrupted(stage.name) from None
            except Exception:
                if was_interrupted():  # Ctrl-C that compiled code turned into another error
                    raise StageInterrupted(stage.name) from None
                raise
            status[stage.name] = "ran"
        hashes[stage.name] = digest
    manifest.write()
    return status
