"""The lean units reader: same ids, coordinates and messages as read_units, no GeoDataFrame."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from eocausal.pipeline.ingest import ingest
from eocausal.pipeline.points import UnitPoints, read_unit_points
from eocausal.pipeline.store import open_store
from eocausal.pipeline.units import UnitColumns, read_units
from shapely.geometry import box

from eocausal.errors import CRSMissingError, MissingColumnError, UnitsError
from tests.conftest import DATA, SENTINEL2

UGANDA = DATA / "rct_geo" / "causalimages_uganda_units.csv"
COLUMNS = UnitColumns(id="row", treatment=None, outcome=None, lon="geo_long", lat="geo_lat")


def _points_on_scene(n: int, seed: int = 0) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    with rasterio.open(SENTINEL2) as src:
        xs, ys = src.transform @ (rng.uniform(20, 490, n), rng.uniform(20, 490, n))
        crs = src.crs
    return gpd.GeoDataFrame({"unit_id": [f"p{i}" for i in range(n)]},
                            geometry=gpd.points_from_xy(xs, ys), crs=crs).to_crs("EPSG:4326")


def test_uganda_csv_gives_the_ids_and_coordinates_of_read_units(data_dir):
    points = read_unit_points(UGANDA, COLUMNS)
    units = read_units(UGANDA, COLUMNS, require_outcome=False)
    assert isinstance(points, UnitPoints) and len(points) == len(units) == 2082
    np.testing.assert_array_equal(points.unit_id, units["unit_id"].to_numpy(dtype=str))
    np.testing.assert_allclose(points.xy, np.column_stack([units.geometry.x, units.geometry.y]))
    assert points.crs.to_epsg() == 4326


def test_geoparquet_in_batches_equals_read_units(tmp_path, monkeypatch):
    import eocausal.pipeline.points as points_module

    monkeypatch.setattr(points_module, "BATCH_ROWS", 7)  # many batches, a short last one
    frame = _points_on_scene(50)
    frame.to_parquet(tmp_path / "u.parquet")
    points = read_unit_points(tmp_path / "u.parquet")
    units = read_units(tmp_path / "u.parquet", require_outcome=False)
    np.testing.assert_array_equal(points.unit_id, units["unit_id"].to_numpy(dtype=str))
    np.testing.assert_allclose(points.xy, shapely_xy(units))
    assert points.crs == units.crs


def shapely_xy(units: gpd.GeoDataFrame) -> np.ndarray:
    return np.column_stack([units.geometry.x, units.geometry.y])


def test_ingest_from_points_writes_the_same_store(tmp_path, data_dir):
    frame = _points_on_scene(60, seed=3)
    frame.to_parquet(tmp_path / "u.parquet")
    lean = ingest(read_unit_points(tmp_path / "u.parquet"), [SENTINEL2], tmp_path / "a.zarr",
                  chip_size=16)
    full = ingest(read_units(tmp_path / "u.parquet", require_outcome=False), [SENTINEL2],
                  tmp_path / "b.zarr", chip_size=16)
    a, b = open_store(lean.store_path), open_store(full.store_path)
    np.testing.assert_array_equal(a.unit_ids, b.unit_ids)
    np.testing.assert_array_equal(np.asarray(a.chips[:]), np.asarray(b.chips[:]))
    np.testing.assert_allclose(a.centres, b.centres)
    assert a.attrs["fingerprint"] == b.attrs["fingerprint"]


def test_polygons_and_other_formats_are_left_to_read_units(tmp_path):
    polys = gpd.GeoDataFrame({"unit_id": ["a", "b"]}, geometry=[box(0, 0, 1, 1), box(1, 1, 2, 2)],
                             crs="EPSG:4326")
    polys.to_parquet(tmp_path / "poly.parquet")
    polys.to_file(tmp_path / "poly.gpkg")
    assert read_unit_points(tmp_path / "poly.parquet") is None
    assert read_unit_points(tmp_path / "poly.gpkg") is None


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_bad_rows_get_the_messages_of_read_units(tmp_path, suffix):
    frame = pd.DataFrame({"unit_id": ["a", "b", "a", "c"], "lon": [32.0, 32.1, 32.2, 32.3],
                          "lat": [0.1, 0.2, 0.3, 0.4]})
    path = tmp_path / f"u{suffix}"

    def write(f: pd.DataFrame) -> None:
        if suffix == ".csv":
            f.to_csv(path, index=False)
        else:
            gpd.GeoDataFrame(f.drop(columns=["lon", "lat"]), geometry=gpd.points_from_xy(f.lon, f.lat),
                             crs="EPSG:4326").to_parquet(path)

    write(frame)
    with pytest.raises(UnitsError, match=r"duplicate ids: a \(rows 0, 2\)"):
        read_unit_points(path)
    write(frame.assign(unit_id=["a", None, "b", "c"]))
    with pytest.raises(UnitsError, match="missing ids in rows 1"):
        read_unit_points(path)
    write(frame.assign(unit_id=list("abcd"), lat=[0.1, 95.0, 0.3, 0.4]))
    with pytest.raises(UnitsError, match=r"invalid coordinates in rows 1 \(unit ids b\)"):
        read_unit_points(path)
    write(frame.assign(unit_id=list("abcd")).rename(columns={"unit_id": "uid"}))
    with pytest.raises(MissingColumnError, match=r"no column\(s\) \['unit_id'\]"):
        read_unit_points(path)


def test_geoparquet_without_crs_needs_units_crs(tmp_path):
    frame = gpd.GeoDataFrame({"unit_id": ["a"]}, geometry=gpd.points_from_xy([500.0], [10.0]))
    frame.to_parquet(tmp_path / "u.parquet")
    with pytest.raises(CRSMissingError, match="units.crs"):
        read_unit_points(tmp_path / "u.parquet")
    points = read_unit_points(tmp_path / "u.parquet", UnitColumns(crs="EPSG:32618"))
    assert points.crs.to_epsg() == 32618


def test_batches_fill_in_place_and_widen_for_longer_ids(tmp_path):
    # more rows than one batch; the ids of the second batch are longer than the first's
    n = 70_000
    rng = np.random.default_rng(1)
    ids = [f"u{i}" if i < 65_536 else f"unit-with-a-long-id-{i}" for i in range(n)]
    xs, ys = rng.uniform(30, 35, n), rng.uniform(-1, 3, n)
    path = tmp_path / "many.parquet"
    gpd.GeoDataFrame({"unit_id": ids}, geometry=gpd.points_from_xy(xs, ys),
                     crs="EPSG:4326").to_parquet(path, row_group_size=20_000)
    points = read_unit_points(path)
    np.testing.assert_array_equal(points.unit_id, np.asarray(ids))
    np.testing.assert_allclose(points.xy, np.column_stack([xs, ys]))
    # a duplicate across batches is still found, with both rows
    dup = tmp_path / "dup.parquet"
    ids[69_999] = ids[3]
    gpd.GeoDataFrame({"unit_id": ids}, geometry=gpd.points_from_xy(xs, ys),
                     crs="EPSG:4326").to_parquet(dup)
    with pytest.raises(UnitsError, match=r"duplicate ids: u3 \(rows 3, 69999\)"):
        read_unit_points(dup)


def test_fingerprint_in_slices_is_the_hash_of_the_whole_arrays():
    import hashlib
    import json

    from affine import Affine
    from eocausal.pipeline.plan import SLICE_ROWS, ChipPlan, _hilbert_keys, hilbert_distance
    from eocausal.pipeline.target import TargetGrid

    rng = np.random.default_rng(2)
    n = 2 * SLICE_ROWS + 123
    ids = np.array([f"u{i}" for i in range(n)])
    windows = rng.integers(-50, 9_000, (n, 2))
    keep = rng.permutation(n)[: n - 7]
    whole = hashlib.sha256(json.dumps({"chip": 32}, sort_keys=True).encode())
    whole.update(np.ascontiguousarray(windows[keep], dtype="<i8").tobytes())
    whole.update(f"{ids.dtype.str}:".encode() + ids[keep].tobytes())
    # the plan recomputes windows from centres (identity grid, 1-px chips: the cell itself)
    centres = windows + 0.5
    points = UnitPoints.from_ids(ids, centres, None)
    plan = ChipPlan(n, keep, np.setdiff1d(np.arange(n), keep), ids.dtype.itemsize // 4,
                    TargetGrid("EPSG:32618", Affine.identity()), 1, points.ids,
                    centres.__getitem__)
    np.testing.assert_array_equal(plan.windows(slice(0, 10)), windows[keep[:10]])
    # so a store fingerprinted before planning ran in slices still resumes
    assert plan.fingerprint(chip=32) == whole.hexdigest()
    # Hilbert keys in slices equal one pass of the curve over every cell at once
    d = hilbert_distance(windows[:, 0], windows[:, 1], levels=12)
    x, y = windows[:, 0] - windows[:, 0].min(), windows[:, 1] - windows[:, 1].min()
    shift = max(0, int(max(x.max(), y.max())).bit_length() - 12)
    assert np.array_equal(d, _hilbert_keys(x >> shift, y >> shift, 12))
    assert len(np.unique(d)) > 0.9 * n


@pytest.mark.parametrize("ids", [
    pa.array(["é1", "b22", "c", "dddd"]),  # UTF-8, lengths that differ
    pa.array(["a1", "b2", "c3", "d4"], pa.large_string()),  # one length, 64-bit offsets
    pa.array([7, 12, 100, 3], pa.int32()),  # integers: their decimal text
    pa.array([1.0, 2.5, 3.0, 4.0]),  # floats: as read_units writes them
], ids=["utf8", "large_string", "int32", "float"])
def test_ids_of_each_arrow_type_equal_read_units(tmp_path, monkeypatch, ids):
    import eocausal.pipeline.points as points_module

    monkeypatch.setattr(points_module, "BATCH_ROWS", 3)  # a batch with a sliced offset
    path = tmp_path / "u.parquet"
    pq.write_table(pa.table({"unit_id": ids, "lon": [32.0, 32.1, 32.2, 32.3],
                             "lat": [0.1, 0.2, 0.3, 0.4]}), path)
    points = read_unit_points(path)
    units = read_units(path, require_outcome=False)
    np.testing.assert_array_equal(points.unit_id, units["unit_id"].to_numpy(dtype=str))
    nulls = pa.table({"unit_id": pa.array(["a", None, "c", "d"]), "lon": [32.0, 32.1, 32.2, 32.3],
                      "lat": [0.1, 0.2, 0.3, 0.4]})
    pq.write_table(nulls, path)
    with pytest.raises(UnitsError, match="missing ids in rows 1"):
        read_unit_points(path)


def test_ingest_command_from_geoparquet_imports_no_pandas(tmp_path, data_dir):
    """Reading points, cutting chips and listing the skipped need neither pandas nor
    geopandas (0.45 s of the command's start); the list equals pandas' own CSV."""
    frame = _points_on_scene(40, seed=5)
    far = gpd.GeoDataFrame({"unit_id": ["far, away", 'say "hi"']},
                           geometry=gpd.points_from_xy([10.0, 11.0], [50.0, 51.0]),
                           crs="EPSG:4326")
    pd.concat([frame, far], ignore_index=True).to_parquet(tmp_path / "u.parquet")
    code = (
        "import sys, json\n"
        "from eocausal.workflows.cli import main\n"
        f"rc = main(['ingest', '--units', {str(tmp_path / 'u.parquet')!r}, '--imagery', "
        f"{str(SENTINEL2)!r}, '--out', {str(tmp_path / 'tiles.zarr')!r}, '--chip-size', '16', "
        "'--scheduler', 'synchronous'])\n"
        "print(json.dumps({'rc': rc, 'loaded': [m for m in ('pandas', 'geopandas') "
        "if m in sys.modules]}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"rc": 0, "loaded": []}, proc.stderr
    listed = pd.read_csv(tmp_path / "skipped_units.csv")
    assert listed["unit_id"].tolist() == ["far, away", 'say "hi"']
    assert listed["reason"].str.startswith("outside imagery").all()
    expected = tmp_path / "by_pandas.csv"
    listed.to_csv(expected, index=False)
    assert (tmp_path / "skipped_units.csv").read_bytes() == expected.read_bytes()
