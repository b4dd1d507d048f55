"""The command line: help everywhere, and one clear message (exit 2) for bad input."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import pytest
import yaml
from eocausal.workflows.cli import main

SIM = ["--n-units", "60", "--scene-size", "96", "--chip-size", "16", "--seed", "1"]


def _config(tmp_path, **sections):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **sections}))
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    assert main(["simulate", "--out", str(out), *SIM]) == 0
    return out


@pytest.mark.parametrize("command", [[], ["run"], ["demo"], ["simulate"]])
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "Usage: eocausal" in capsys.readouterr().out


def test_simulate_writes_the_world(world, capsys):
    names = {p.name for p in world.iterdir()}
    assert {"units.gpkg", "truth.parquet", "truth.json", "truth_cate.tif"} <= names
    assert any(n.startswith("scene_") and n.endswith(".tif") for n in names)


def _fails_with(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_missing_config_file(tmp_path, capsys):
    _fails_with(["run", str(tmp_path / "nope.yaml")], capsys, "error: Config file", "nope.yaml")


def test_missing_units_file(tmp_path, world, capsys):
    cfg = _config(tmp_path, units={"path": str(tmp_path / "absent.gpkg")},
                  imagery={"paths": [str(next(world.glob("scene_*.tif")))]})
    _fails_with(["run", cfg, "--out", str(tmp_path / "r")], capsys, "absent.gpkg", "does not exist")


def test_missing_units_column(tmp_path, world, capsys):
    cfg = _config(tmp_path, units={"path": str(world / "units.gpkg"), "outcome": "income"},
                  imagery={"paths": [str(next(world.glob("scene_*.tif")))]})
    _fails_with(["run", cfg, "--out", str(tmp_path / "r")], capsys, "no column(s) ['income']",
                "'outcome'")


def test_unreadable_raster(tmp_path, world, capsys):
    junk = tmp_path / "scene.tif"
    junk.write_bytes(b"II*\x00 this is not a tiff")
    cfg = _config(tmp_path, units={"path": str(world / "units.gpkg")},
                  imagery={"paths": [str(junk)]})
    _fails_with(["run", cfg, "--out", str(tmp_path / "r")], capsys, "scene.tif",
                "cannot be read as a raster")


def test_units_all_outside(tmp_path, world, capsys):
    units = gpd.read_file(world / "units.gpkg")
    units["geometry"] = units.translate(1e6, 0)
    units.to_file(tmp_path / "far.gpkg")
    cfg = _config(tmp_path, units={"path": str(tmp_path / "far.gpkg")},
                  imagery={"paths": [str(next(world.glob("scene_*.tif")))]}, chips={"size": 16})
    _fails_with(["run", cfg, "--out", str(tmp_path / "r")], capsys,
                "All 60 units lie outside the imagery")


def test_bad_simulate_option(tmp_path, capsys):
    _fails_with(["simulate", "--out", str(tmp_path), "--n-bands", "40"], capsys, "n_bands", "40")


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eocausal.workflows.cli", "run", str(tmp_path / "x.yaml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: Config file")


def test_ingest_command_writes_store_and_skipped_list(tmp_path, world, capsys):
    out = tmp_path / "store" / "tiles.zarr"
    assert main(["ingest", "--units", str(world / "units.gpkg"), "--imagery",
                 str(world / "scene_*.tif"), "--chip-size", "16", "--out", str(out),
                 "--bands", "B04,B03", "--scheduler", "synchronous"]) == 0
    printed = capsys.readouterr().out
    assert "60 of 60 units have a usable chip" in printed
    from eocausal.pipeline.store import open_store

    assert open_store(out).band_names == ["B04", "B03"]
    assert (tmp_path / "store" / "skipped_units.csv").exists()


def test_ingest_command_on_a_local_cluster_matches_in_process(tmp_path, world):
    args = ["ingest", "--units", str(world / "units.gpkg"), "--imagery",
            str(world / "scene_*.tif"), "--chip-size", "16"]
    assert main([*args, "--out", str(tmp_path / "a.zarr"), "--scheduler", "synchronous"]) == 0
    assert main([*args, "--out", str(tmp_path / "b.zarr"), "--scheduler", "local",
                 "--workers", "2"]) == 0
    from eocausal.pipeline.store import open_store

    a, b = open_store(tmp_path / "a.zarr"), open_store(tmp_path / "b.zarr")
    assert (a.chips[:] == b.chips[:]).all() and (a.unit_ids == b.unit_ids).all()


def test_ingest_command_bad_band(tmp_path, world, capsys):
    _fails_with(["ingest", "--units", str(world / "units.gpkg"), "--imagery",
                 str(world / "scene_*.tif"), "--out", str(tmp_path / "x.zarr"),
                 "--bands", "B99"], capsys, "Band 'B99' is not in", "B04")


def test_full_disk_unexpected_error_and_permission_each_one_line(monkeypatch, capsys):
    import errno

    from eocausal.workflows import cli as cli_module

    def raiser(exc):
        def fake(*args, **kwargs):
            raise exc
        return fake

    cases = [(OSError(errno.ENOSPC, "No space left on device", "/data/run/tiles.zarr"), 2,
              "the disk is full writing '/data/run/tiles.zarr'"),
             (PermissionError(errno.EACCES, "Permission denied", "/root/x"), 2,
              "cannot read or write '/root/x': Permission denied"),
             (RuntimeError("boom"), 1, "unexpected RuntimeError: boom")]
    for exc, code, words in cases:
        monkeypatch.setattr(cli_module.cli, "main", raiser(exc))
        assert main(["run", "x.yaml"]) == code
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(RuntimeError):
        main(["-v", "run", "x.yaml"])
