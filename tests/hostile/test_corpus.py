"""Broken and hostile inputs, as a careless or hostile user gives them: each one exits
non-zero with one message (no traceback) and changes nothing outside the run directory."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from eocausal.workflows.cli import main
from shapely.geometry import Point, Polygon


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile_world")
    assert main(["simulate", "--out", str(out), "--n-units", "40", "--scene-size", "64",
                 "--chip-size", "8", "--seed", "1"]) == 0
    return out


def _scene(world: Path) -> Path:
    return next(world.glob("scene_*.tif"))


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _config(tmp: Path, world: Path, **changes) -> Path:
    data = {"name": "h", "units": {"path": str(world / "units.gpkg")},
            "imagery": {"paths": [str(_scene(world))]}, "chips": {"size": 8},
            "encoder": {"options": {"n_features": 8}},
            "estimator": {"n_estimators": 8, "n_components": 2},
            "evaluation": {"enabled": False}, "map": {"enabled": False},
            "compute": {"scheduler": "synchronous"}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _units(tmp: Path, world: Path, edit) -> Path:
    units = gpd.read_file(world / "units.gpkg")
    units = edit(units)
    path = tmp / "bad_units.gpkg"
    units.to_file(path)
    return path


def _csv(tmp: Path, text: str) -> Path:
    path = tmp / "units.csv"
    path.write_text(text)
    return path


def _raster(tmp: Path, world: Path, edit, name="bad.tif", **profile_changes) -> Path:
    with rasterio.open(_scene(world)) as src:
        data, profile = src.read(), src.profile
    data, profile = edit(data, {**profile, **profile_changes})
    path = tmp / name
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def run_with(tmp, world, **changes):
    return ["run", str(_config(tmp, world, **changes)), "--out", str(tmp / "run")]


def ingest_with(tmp, world, units=None, imagery=None, *extra):
    return ["ingest", "--units", str(units or world / "units.gpkg"), "--imagery",
            str(imagery or _scene(world)), "--out", str(tmp / "run" / "tiles.zarr"),
            "--chip-size", "8", *extra]


def _nan_raster(data, profile):
    data = data.astype("float32")
    data[:, :, :] = np.nan
    return data, {**profile, "dtype": "float32", "nodata": None}


CASES = {
    # configs
    "config missing": lambda t, w: ["run", str(t / "nope.yaml")],
    "config is a folder": lambda t, w: ["run", str(t)],
    "config empty": lambda t, w: ["run", str(_csv(t, ""))],
    "config a list": lambda t, w: ["run", str(_csv(t, "- a\n- b\n"))],
    "config invalid yaml": lambda t, w: ["run", str(_csv(t, "a: [1, 2\nb: {"))],
    "config binary": lambda t, w: ["run", str((t / "b.yaml", (t / "b.yaml").write_bytes(os.urandom(300)))[0])],
    "config alias bomb": lambda t, w: ["run", str(_csv(t, "a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b]\n"))],
    "config alias bomb in name": lambda t, w: ["run", str(_csv(t, "x: &x [a,a,a,a,a,a,a,a,a,a]\ny: &y [*x,*x,*x,*x,*x,*x,*x,*x,*x,*x]\nname: [*y,*y,*y,*y,*y,*y,*y,*y,*y]\n"))],
    "config unknown key": lambda t, w: run_with(t, w, chips__sise=8),
    "config chip size text": lambda t, w: run_with(t, w, chips__size="big"),
    "config negative chip": lambda t, w: run_with(t, w, chips__size=-4),
    "name is a path": lambda t, w: run_with(t, w, name="../../elsewhere"),
    "name absolute": lambda t, w: run_with(t, w, name="/tmp/x"),
    "name huge": lambda t, w: run_with(t, w, name="n" * 5000),
    "unknown method": lambda t, w: run_with(t, w, estimator__method="magic"),
    "propensity above one": lambda t, w: run_with(t, w, estimator__propensity=1.5),
    "trees not multiple of 4": lambda t, w: run_with(t, w, estimator__n_estimators=402),
    "cv of one": lambda t, w: run_with(t, w, estimator__cv=1),
    "unknown encoder": lambda t, w: run_with(t, w, encoder__name="vit_huge"),
    "unknown encoder option": lambda t, w: run_with(t, w, encoder__options={"n_featurez": 8}),
    "weights missing": lambda t, w: run_with(t, w, encoder={"name": "resnet18", "options": {}}, encoder__weights=str(t / "no.pth")),
    "weights a folder": lambda t, w: run_with(t, w, encoder={"name": "resnet18", "options": {}}, encoder__weights=str(t)),
    "weights garbage": lambda t, w: run_with(t, w, encoder={"name": "resnet18", "options": {}}, encoder__weights=str(_csv(t, "not a torch file"))),
    "cuda without gpu": lambda t, w: run_with(t, w, encoder__device="cuda"),
    "map spacing zero": lambda t, w: run_with(t, w, map={"enabled": True, "spacing": 0}),
    "out is a file": lambda t, w: ["run", str(_config(t, w)), "--out", str(_csv(t, "x"))],
    "out is a foreign folder": lambda t, w: ["run", str(_config(t, w)), "--out", str(w)],
    # units
    "units missing": lambda t, w: run_with(t, w, units={"path": str(t / "none.gpkg")}),
    "units a folder": lambda t, w: run_with(t, w, units={"path": str(t)}),
    "units empty file": lambda t, w: run_with(t, w, units={"path": str(_csv(t, ""))}),
    "units header only": lambda t, w: run_with(t, w, units={"path": str(_csv(t, "unit_id,lon,lat,treatment,outcome\n"))}),
    "units no coordinates": lambda t, w: run_with(t, w, units={"path": str(_csv(t, "unit_id,treatment,outcome\n1,0,1\n"))}),
    "units latitude 95": lambda t, w: run_with(t, w, units={"path": str(_csv(t, "unit_id,lon,lat,treatment,outcome\n1,33,95,0,1\n2,33,1,1,2\n"))}),
    "units longitude 400": lambda t, w: run_with(t, w, units={"path": str(_csv(t, "unit_id,lon,lat,treatment,outcome\n1,400,0,0,1\n2,33,1,1,2\n"))}),
    "units coordinates text": lambda t, w: run_with(t, w, units={"path": str(_csv(t, "unit_id,lon,lat,treatment,outcome\n1,east,0,0,1\n"))}),
    "units duplicate ids": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.assign(unit_id="same")))}),
    "units missing id": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.assign(unit_id=None)))}),
    "treatment text": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.assign(treatment="yes")))}),
    "treatment not binary": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.assign(treatment=np.arange(len(u)) % 3)))}),
    "treatment constant": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.assign(treatment=1)))}),
    "outcome nan": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.assign(outcome=np.nan)))}),
    "empty geometry": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.set_geometry([Point()] * len(u), crs=u.crs)))}),
    "invalid geometry": lambda t, w: run_with(t, w, units={"path": str(_units(t, w, lambda u: u.set_geometry([Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])] * len(u), crs=u.crs)))}),
    "units without crs": lambda t, w: ingest_with(t, w, _units(t, w, lambda u: u.set_crs(None, allow_override=True))),
    "geojson truncated": lambda t, w: ingest_with(t, w, (t / "u.geojson", (t / "u.geojson").write_text('{"type": "FeatureCollection", "features": [')) [0]),
    "units all outside": lambda t, w: ingest_with(t, w, _units(t, w, lambda u: u.set_geometry(u.geometry.translate(1e6, 1e6)))),
    "missing id column": lambda t, w: ingest_with(t, w, None, None, "--id", "village"),
    # imagery
    "imagery missing": lambda t, w: ingest_with(t, w, None, t / "none.tif"),
    "imagery glob empty": lambda t, w: ingest_with(t, w, None, str(t / "*.tif")),
    "imagery a folder": lambda t, w: ingest_with(t, w, None, t),
    "imagery text file": lambda t, w: ingest_with(t, w, None, _csv(t, "not a tiff")),
    "imagery truncated": lambda t, w: ingest_with(t, w, None, (t / "cut.tif", (t / "cut.tif").write_bytes(_scene(w).read_bytes()[:5000]))[0]),
    "imagery without crs": lambda t, w: ingest_with(t, w, None, _raster(t, w, lambda d, p: (d, {**p, "crs": None}))),
    "imagery all nan": lambda t, w: ingest_with(t, w, None, _raster(t, w, _nan_raster)),
    "chip larger than raster": lambda t, w: ["ingest", "--units", str(w / "units.gpkg"), "--imagery", str(_scene(w)), "--out", str(t / "run" / "tiles.zarr"), "--chip-size", "1024"],
    "unknown band name": lambda t, w: ingest_with(t, w, None, None, "--bands", "B99"),
    "band index zero": lambda t, w: ingest_with(t, w, None, None, "--bands", "0"),
    "band index too high": lambda t, w: ingest_with(t, w, None, None, "--bands", "42"),
    "symlink loop": lambda t, w: ingest_with(t, w, None, (t / "loop.tif", (t / "loop.tif").symlink_to(t / "loop.tif"))[0]),
    "patches missing": lambda t, w: ["ingest", "--units", str(w / "units.gpkg"), "--patches", str(t / "none.npz"), "--out", str(t / "run" / "tiles.zarr")],
    "patches garbage": lambda t, w: ["ingest", "--units", str(w / "units.gpkg"), "--patches", str(_csv(t, "zzz")), "--out", str(t / "run" / "tiles.zarr"), "--group", "unit_id"],
    "ingest out is a file": lambda t, w: ["ingest", "--units", str(w / "units.gpkg"), "--imagery", str(_scene(w)), "--out", str(_csv(t, "x"))],
    # encode / estimate
    "encode missing store": lambda t, w: ["encode", str(t / "none.zarr"), "--encoder", "rcf", "--out", str(t / "run" / "f.parquet")],
    "encode a folder that is no store": lambda t, w: ["encode", str(t), "--encoder", "rcf", "--out", str(t / "run" / "f.parquet")],
    "encode bad option": lambda t, w: ["encode", str(t / "none.zarr"), "--encoder", "rcf", "--option", "oops", "--out", str(t / "f.parquet")],
    "estimate missing features": lambda t, w: ["estimate", "--units", str(w / "units.gpkg"), "--features", str(t / "none.parquet"), "--out", str(t / "run")],
    "estimate no features no covariates": lambda t, w: ["estimate", "--units", str(w / "units.gpkg"), "--out", str(t / "run")],
    "estimate features garbage": lambda t, w: ["estimate", "--units", str(w / "units.gpkg"), "--features", str(_csv(t, "\x00\x01\x02")), "--out", str(t / "run")],
    "estimate missing column": lambda t, w: ["estimate", "--units", str(w / "units.gpkg"), "--covariates", "nope", "--out", str(t / "run")],
    "map a folder that is no run": lambda t, w: ["map", str(t)],
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_hostile_input_gives_one_message(case, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    pristine = tmp_path / "outside"
    shutil.copytree(world, pristine)
    before = _snapshot(pristine)
    world_before = _snapshot(world)
    argv = CASES[case](work, pristine)
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or line.startswith("Error:")]
    assert errors, err
    assert "Traceback" not in err
    assert len(errors[0]) < 2000
    assert _snapshot(pristine) == before
    assert _snapshot(world) == world_before
