"""The stage layer: caching by content hash, --force, the run lock, atomic outputs, and a
manifest that stays consistent whatever ends a stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from eocausal.workflows.config import config_from_dict
from eocausal.workflows.dag import Stage, StageInterrupted, downstream, run_stages
from eocausal.workflows.lock import RunLock
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.runner import run_config
from eocausal.workflows.stages import STAGES

from eocausal.errors import OutputPathError, RunLockedError
from eocausal.files import atomic_path

TINY = {
    "name": "tiny",
    "seed": 0,
    "simulate": {"n_units": 300, "scene_size": 128, "chip_size": 16, "seed": 5},
    "chips": {"size": 16, "units_per_chunk": 128},
    "encoder": {"name": "rcf", "options": {"n_features": 32}},
    "estimator": {"propensity": 0.5, "n_components": 8, "n_estimators": 40, "method": "causal_forest"},
    "evaluation": {"n_bootstrap": 20},
    "map": {"spacing": 320},
}


def _run(out, changes=None, force=()):
    data = json.loads(json.dumps(TINY))
    for section, values in (changes or {}).items():
        data[section].update(values)
    messages: list[str] = []
    result = run_config(config_from_dict(data), out, echo=messages.append, progress=False,
                        force=force)
    return result, messages


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cached")
    result, _ = _run(out)
    return out, result


def test_first_run_runs_every_stage(first_run):
    _, result = first_run
    assert result.stages == {name: "ran" for name in
                             ("simulate", "ingest", "encode", "estimate", "evaluate", "map", "report")}
    summary = result.summary
    assert summary["ate_estimators"]["estimates"]["aipw"]["estimate"] == pytest.approx(
        summary["ate"], abs=0.5)
    assert {"toc", "qini", "gates", "calibration", "balance", "effect_map"} <= set(summary["figures"])
    assert summary["heterogeneity"]["rate_autoc"]["n_bootstrap"] == 20


def test_second_run_is_up_to_date_and_fast(first_run):
    out, result = first_run
    manifest_before = json.loads((out / "manifest.json").read_text())
    start = time.perf_counter()
    again, messages = _run(out)
    elapsed = time.perf_counter() - start
    assert set(again.stages.values()) == {"up to date"}
    assert "encode: up to date" in messages and len(messages) == 7
    assert elapsed < 3.0, elapsed
    assert again.summary == result.summary
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["hash"] for k, v in manifest["stages"].items()} == \
        {k: v["hash"] for k, v in manifest_before["stages"].items()}


def test_changing_the_method_reruns_only_what_depends_on_it(first_run, tmp_path):
    out, _ = first_run
    changed, _ = _run(out, {"estimator": {"method": "dr_learner"}})
    assert changed.stages["simulate"] == changed.stages["ingest"] == "up to date"
    assert changed.stages["encode"] == "up to date"
    assert all(changed.stages[s] == "ran" for s in ("estimate", "evaluate", "map", "report"))
    assert changed.summary["method"] == "dr_learner"
    back, _ = _run(out)  # and back: the old hashes rerun estimate, not encode
    assert back.stages["encode"] == "up to date" and back.stages["estimate"] == "ran"


def test_force_encode_reruns_encode_and_everything_after(first_run):
    out, _ = first_run
    forced, _ = _run(out, force=("encode",))
    assert forced.stages == {"simulate": "up to date", "ingest": "up to date", "encode": "ran",
                             "estimate": "ran", "evaluate": "ran", "map": "ran", "report": "ran"}


def test_downstream_of_a_stage():
    assert downstream(STAGES, ["estimate"]) == {"estimate", "evaluate", "clusters", "map", "report"}
    with pytest.raises(Exception, match="unknown stage"):
        downstream(STAGES, ["nope"])


def _stage(name, run, after=()):
    return Stage(name, run=run, after=after, settings=lambda config: {"k": 1})


class _Ctx:
    config = None
    manifest = None

    def __init__(self):
        self.messages = []

    def echo(self, message):
        self.messages.append(message)


def _manifest(tmp_path):
    from eocausal.workflows.manifest import Manifest

    return Manifest.open(tmp_path / "manifest.json", {}, {})


def test_interrupted_stage_is_marked_and_named(tmp_path):
    def boom(ctx):
        raise KeyboardInterrupt

    manifest = _manifest(tmp_path)
    with pytest.raises(StageInterrupted) as info:
        run_stages([_stage("a", lambda ctx: {}), _stage("b", boom, ("a",))], _Ctx(), manifest)
    assert info.value.stage == "b"
    record = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert record["a"]["status"] == "done" and record["b"]["status"] == "interrupted"


def test_an_error_with_an_empty_message_leaves_the_manifest_consistent(tmp_path):
    def empty(ctx):
        raise RuntimeError()

    manifest = _manifest(tmp_path)
    with pytest.raises(RuntimeError):
        run_stages([_stage("a", empty)], _Ctx(), manifest)
    record = json.loads((tmp_path / "manifest.json").read_text())["stages"]["a"]
    assert record == {**record, "status": "failed", "error": "RuntimeError"}


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "effects.gpkg"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".gpkg" and tmp.parent == tmp_path
        tmp.write_text("whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["effects.gpkg"]


def test_atomic_path_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").symlink_to(outside)
    with atomic_path(run / "summary.json") as tmp:
        tmp.write_text("{}")
    assert outside.read_text() == "keep me"
    assert not (run / "summary.json").is_symlink()


HOLD = """
import sys, time
from eocausal.workflows.lock import RunLock
from pathlib import Path
root = Path(sys.argv[1])
with RunLock(root / ".eocausal.lock", root / ".eocausal.lock.json"):
    print("held", flush=True)
    time.sleep(30)
"""


def test_a_live_run_holds_the_directory(tmp_path):
    paths = RunPaths(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}.*started"):
            with RunLock(paths.lock, paths.lock_info):
                pass
    finally:
        holder.kill()
        holder.wait()
    notes: list[str] = []
    with RunLock(paths.lock, paths.lock_info, note=notes.append):  # stale: dead holder
        pass
    assert notes and f"took over the lock of run {holder.pid}" in notes[0]


def test_run_refuses_a_folder_it_did_not_create(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputPathError, match="no eocausal run wrote"):
        run_config(config_from_dict(TINY), foreign, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        run_config(config_from_dict(TINY), afile, progress=False)


def test_run_names_are_names_not_paths():
    for bad in ("../../elsewhere", "/abs/path", "a/b", "..", ""):
        with pytest.raises(Exception, match="name"):
            config_from_dict({"name": bad})
    assert config_from_dict({"name": "study-2024_v1.2"}).name == "study-2024_v1.2"


def test_yaml_aliases_are_refused(tmp_path):
    from eocausal.workflows.config import load_config

    from eocausal.errors import ConfigError

    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: [*b, *b, *b, *b, *b, *b, *b, *b]\nname: t\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(ConfigError, match="alias"):
        load_config(path)


def test_tile_store_works_in_a_with_block(first_run):
    from eocausal.pipeline.store import open_store

    out, _ = first_run
    with open_store(out / "tiles.zarr") as store:
        assert store.n_units == 300 and "300 units" in repr(store)


def test_stage_commands_import_no_models(tmp_path, first_run):
    out, _ = first_run
    code = (
        "import sys, json\n"
        "from eocausal.workflows.cli import main\n"
        f"rc = main(['ingest', '--units', {str(out / 'world' / 'units.gpkg')!r}, '--imagery', "
        f"{str(next((out / 'world').glob('scene_*.tif')))!r}, '--out', "
        f"{str(tmp_path / 'tiles.zarr')!r}, '--chip-size', '16'])\n"
        "heavy = [m for m in ('torch', 'torchvision', 'sklearn', 'econml') if m in sys.modules]\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rc": 0, "heavy": []}
    for args in (["--help"], ["ingest", "--help"]):
        proc = subprocess.run([sys.executable, "-c", "import sys; from eocausal.workflows.cli "
                               f"import main; main({args!r}); print(sorted(m for m in "
                               "('torch','sklearn','econml') if m in sys.modules))"],
                              capture_output=True, text=True)
        assert proc.stdout.strip().splitlines()[-1] == "[]"


def _heavy_modules() -> list[str]:
    return sorted(m for m in ("torch", "torchvision", "sklearn", "econml") if m in sys.modules)


def test_ingest_workers_import_no_models(first_run, tmp_path):
    from eocausal.workflows.cluster import partition_mapper
    from eocausal.workflows.context import StageContext
    from eocausal.workflows.stages.ingest import ingest_stage

    out, _ = first_run
    config = config_from_dict({
        "units": {"path": str(out / "world" / "units.gpkg")},
        "imagery": {"paths": [str(p) for p in (out / "world").glob("scene_*.tif")]},
        "chips": {"size": 16, "units_per_chunk": 8}})
    with partition_mapper("local", 1, progress=False) as mapper:
        result = ingest_stage(StageContext(config, RunPaths(tmp_path), mapper=mapper,
                                           with_outcome=False))
        assert result.n_usable == 300 and result.chunks_total == 38
        mapper.wait_started()
        # the worker that ingested (warmed up with the ingestion modules) holds no models
        assert mapper(_worker_modules, list(range(20))) == [[]] * 20


def _worker_modules(_: int) -> list[str]:
    return _heavy_modules()
