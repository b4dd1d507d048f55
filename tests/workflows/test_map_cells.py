"""The map's cells as arrays: grid, ids, predictions as rasters, slice-by-slice exports,
aggregates on the rasters and targets by partition, each against an independent computation
on a per-cell table (the form the map stage used to hold)."""

from __future__ import annotations

import tracemalloc

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from eocausal.models.evaluation.targeting import rank_places
from eocausal.workflows.maps import aggregate_cells, lay_grid
from eocausal.workflows.maps.aggregate import aggregate_grid
from eocausal.workflows.maps.cells import MapCells, top_cells, write_cells
from eocausal.workflows.maps.region import Region

Z = 1.959963984540054
CRS = "EPSG:32636"


def _triangle_region() -> Region:
    """A triangle in lon/lat: cells inside it are a ragged subset of the grid's rows."""
    shape = shapely.Polygon([(32.40, 0.30), (32.62, 0.31), (32.45, 0.52)])
    return Region(gpd.GeoDataFrame({"name": ["t"]}, geometry=[shape], crs=4326), "triangle")


def _predictions(grid, seed: int = 0, *, unusable: int = 0, clusters: bool = False
                 ) -> pd.DataFrame:
    """Random predictions of every cell, rows shuffled (store chunks come in Hilbert order,
    not the grid's); the first ``unusable`` rows have no imagery."""
    rng = np.random.default_rng(seed)
    n = len(grid)
    cate = rng.normal(0.3, 1.0, n)
    half = rng.uniform(0.1, 0.8, n)
    table = pd.DataFrame({"unit_id": grid.ids(), "usable": True, "cate": cate,
                          "cate_lo": cate - half, "cate_hi": cate + half,
                          "support_distance": rng.uniform(0, 2, n)})
    if clusters:
        p = rng.uniform(size=n)
        table["p_cluster_1"], table["p_cluster_2"] = p, 1 - p
        table["cluster"] = np.where(p > 0.5, 1, 2)
        table["tau_cluster"] = cate * 0.9
        table["tau_cluster_lo"], table["tau_cluster_hi"] = cate - half, cate + half
    table = table.iloc[rng.permutation(n)].reset_index(drop=True)
    table.loc[:unusable - 1, "usable"] = False
    return table


def _filled(grid, seed: int = 0, *, unusable: int = 0, clusters: bool = False) -> MapCells:
    """MapCells filled part by part (700 rows each) from :func:`_predictions`."""
    table = _predictions(grid, seed, unusable=unusable, clusters=clusters)
    cells = MapCells(grid, threshold=1.5)
    for start in range(0, len(table), 700):
        cells.fill(table.iloc[start:start + 700])
    return cells


@pytest.fixture(scope="module")
def grid():
    return lay_grid(_triangle_region(), 400.0, max_cells=100_000)


def test_grid_equals_the_whole_rectangle_tested_at_once(grid):
    """Cells found a block of rows at a time are those of one test over every cell."""
    n_rows, n_cols = grid.shape
    rows, cols = np.mgrid[0:n_rows, 0:n_cols]
    rows, cols = rows.ravel(), cols.ravel()
    xs, ys = grid.transform * (cols + 0.5, rows + 0.5)
    area = _triangle_region().shapes.to_crs(grid.crs).geometry.iloc[0]
    inside = shapely.contains_xy(area, xs, ys)
    assert 0.3 < inside.mean() < 0.7  # ragged: the test means something
    np.testing.assert_array_equal(grid.rows, rows[inside])
    np.testing.assert_array_equal(grid.cols, cols[inside])
    assert grid.rows.dtype == np.int32


def test_ids_are_made_per_slice_and_parse_back(grid):
    ids = grid.ids()
    expected = [f"cell_{r}_{c}" for r, c in zip(grid.rows, grid.cols, strict=True)]
    assert ids.tolist() == expected
    assert grid.ids(slice(10, 20)).tolist() == expected[10:20]
    assert grid.unit_points().unit_id.tolist() == expected
    rows, cols = grid.positions(ids[::-1])
    np.testing.assert_array_equal(rows, grid.rows[::-1])
    np.testing.assert_array_equal(cols, grid.cols[::-1])


def test_places_are_one_raster_row():
    pts = gpd.GeoDataFrame({"name": ["a", "b", "c"]}, geometry=gpd.points_from_xy(
        [32.45, 32.50, 32.55], [0.35, 0.40, 0.45]), crs=4326)
    grid = lay_grid(Region(pts, "places", places=True), None, max_cells=10)
    assert grid.raster_shape == (1, 3) and grid.ids().tolist() == ["place_0", "place_1", "place_2"]
    frame = grid.frame()
    assert frame["name"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(frame.to_crs(4326).geometry.x, [32.45, 32.50, 32.55])


def test_fill_puts_each_prediction_at_its_cell(grid):
    cells = _filled(grid, unusable=5, clusters=True)
    frame = cells.frame()
    truth = _predictions(grid, unusable=5, clusters=True).set_index("unit_id").loc[
        frame["unit_id"]]
    usable = truth["usable"].to_numpy()
    assert (~usable).sum() == 5
    for name in ("cate", "cate_hi", "support_distance", "p_cluster_2", "tau_cluster"):
        np.testing.assert_allclose(frame[name][usable], truth[name][usable], rtol=1e-6)
    np.testing.assert_array_equal(frame["cluster"][usable], truth["cluster"][usable])
    assert frame.loc[~usable, "cate"].isna().all()
    assert frame.loc[~usable, "extrapolated"].isna().all()
    assert frame["extrapolated"].dtype == "boolean" and frame["cluster"].dtype == "Int64"
    assert frame.loc[~usable, "cluster"].isna().all()
    assert list(frame.columns) == ["unit_id", "row", "col", "geometry", "cate", "cate_lo",
                                   "cate_hi", "support_distance", "p_cluster_1", "p_cluster_2",
                                   "cluster", "tau_cluster", "tau_cluster_lo", "tau_cluster_hi",
                                   "extrapolated"]
    # the support flag is decided on the float64 distance, before the float32 cast
    distance = frame["support_distance"].to_numpy()
    assert (frame["extrapolated"][usable] == (distance[usable] > 1.5)).all()
    raster = cells.rasters()
    assert list(raster)[:4] == ["cate", "cate_lo", "cate_hi", "support"]
    np.testing.assert_array_equal(raster["cate"][grid.rows, grid.cols],
                                  frame["cate"].to_numpy(np.float32))
    support = raster["support"][grid.rows, grid.cols]
    assert np.isnan(support[~usable]).all()
    np.testing.assert_array_equal(support[usable], np.where(distance[usable] > 1.5, 0, 1))
    outside = np.ones(grid.shape, bool)
    outside[grid.rows, grid.cols] = False
    assert np.isnan(raster["cate"][outside]).all()  # cells outside the region stay nodata


def test_written_cells_equal_the_table_and_come_in_slices(grid, tmp_path):
    cells = _filled(grid, unusable=3)
    write_cells(cells, tmp_path / "c.parquet", tmp_path / "c.gpkg", slice_rows=1000)
    file = pq.ParquetFile(tmp_path / "c.parquet")
    assert file.num_row_groups == -(-len(grid) // 1000)
    back = gpd.read_parquet(tmp_path / "c.parquet")
    back["extrapolated"] = back["extrapolated"].astype("boolean")  # nulls read as objects
    table = cells.frame()
    pd.testing.assert_frame_equal(pd.DataFrame(back.drop(columns="geometry")),
                                  pd.DataFrame(table.drop(columns="geometry")))
    assert back.geometry.geom_equals_exact(table.geometry, 0).all()
    assert back.crs == table.crs
    gpkg = gpd.read_file(tmp_path / "c.gpkg")
    assert len(gpkg) == len(grid) and gpkg["unit_id"].tolist() == table["unit_id"].tolist()
    np.testing.assert_allclose(gpkg["cate"], table["cate"])


def _polygons(grid) -> gpd.GeoDataFrame:
    """Overlapping polygons, one reaching past the grid, one missing it, one whose edge
    passes exactly through a row of cell centres."""
    x0, x1, y0, y1 = grid.extent[0], grid.extent[1], grid.extent[2], grid.extent[3]
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    xs, ys = grid.transform * (np.array([0.5]), np.array([40.5]))
    on_centres = float(ys[0])
    return gpd.GeoDataFrame({"district": ["west", "north", "wide", "none", "edge"]}, geometry=[
        shapely.box(x0, y0, mx, y1), shapely.box(x0 + 3000, my, x1 - 2000, y1),
        shapely.Point(mx, my).buffer(9000), shapely.box(x1 + 1e4, y0, x1 + 2e4, y1),
        shapely.box(x0, on_centres, x1, y1)], crs=grid.crs).to_crs(4326)


@pytest.mark.parametrize("errors", ["shared", "neighbour"])
def test_aggregates_on_the_rasters_equal_those_of_the_cells_table(grid, errors):
    cells = _filled(grid, seed=3, unusable=20)
    polygons = _polygons(grid)
    ours = aggregate_grid(cells, polygons, "district", errors=errors, block_cells=500)
    table = aggregate_cells(cells.frame(), polygons, "district", shape=grid.shape, errors=errors)
    pd.testing.assert_frame_equal(pd.DataFrame(ours.drop(columns="geometry")),
                                  pd.DataFrame(table.drop(columns="geometry")), rtol=1e-9)
    assert ours.crs == polygons.crs and ours.geometry.equals(polygons.geometry)
    # Independent: each polygon's cells by shapely's `within` on every cell's point.
    frame = cells.frame().dropna(subset=["cate"])
    for poly, row in zip(polygons.to_crs(grid.crs).geometry, ours.itertuples(), strict=True):
        inside = frame[frame.geometry.within(poly)]
        assert row.n_cells == len(inside)
        if len(inside):
            assert row.mean_cate == pytest.approx(inside["cate"].mean(), rel=1e-12)
            se = (inside["cate_hi"] - inside["cate_lo"]) / (2 * Z)
            if errors == "shared":
                assert row.mean_cate_hi - row.mean_cate == pytest.approx(Z * se.mean(), rel=1e-9)
            assert row.share_extrapolated == pytest.approx(inside["extrapolated"].mean())
    assert ours.set_index("name").loc["none", "n_cells"] == 0


def test_aggregates_of_places():
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(np.linspace(32.41, 32.59, 40),
                                                         np.linspace(0.31, 0.49, 40)), crs=4326)
    grid = lay_grid(Region(pts, "places", places=True), None, max_cells=100)
    cells = _filled(grid, seed=4)
    polygons = gpd.GeoDataFrame({"d": ["sw", "ne"]}, geometry=[
        shapely.box(32.4, 0.3, 32.5, 0.4), shapely.box(32.5, 0.4, 32.6, 0.5)], crs=4326)
    ours = aggregate_grid(cells, polygons, "d", block_cells=7)
    table = aggregate_cells(cells.frame(), polygons, "d", shape=None)
    pd.testing.assert_frame_equal(pd.DataFrame(ours.drop(columns="geometry")),
                                  pd.DataFrame(table.drop(columns="geometry")), rtol=1e-9)
    assert ours["n_cells"].tolist() == [20, 20]


@pytest.mark.parametrize("budget", [1, 7, 0.05, 0.5, 0.999])
def test_top_cells_equal_rank_places(budget):
    rng = np.random.default_rng(5)
    cate = np.round(rng.normal(size=3000), 1).astype(np.float32)  # many ties
    cate[rng.uniform(size=3000) < 0.1] = np.nan
    eligible = rng.uniform(size=3000) < 0.8
    np.testing.assert_array_equal(top_cells(cate, budget, eligible=eligible),
                                  rank_places(cate, budget, eligible=eligible))


def test_targets_are_the_best_cells_inside_the_support(grid):
    cells = _filled(grid, seed=6)
    targets = cells.targets(25)
    frame = cells.frame()
    eligible = frame[frame["extrapolated"] == False]  # noqa: E712 (nullable boolean)
    assert targets["rank"].tolist() == list(range(1, 26))
    np.testing.assert_array_equal(targets["cate"], np.sort(eligible["cate"])[::-1][:25])
    assert targets.index.isin(eligible.index).all()  # the cells' positions, as before
    ll = frame.loc[targets.index].to_crs(4326).geometry
    np.testing.assert_allclose(targets["lon"], ll.x)
    assert cells.targets(None) is None


def _traced_peak(func) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_exports_hold_a_slice_not_every_cell(tmp_path):
    """Tracing numpy's and Python's allocations: writing the cells, targets and aggregates
    of a 10x larger grid needs no more than a few hundred kB more (one slice's worth)."""
    region = Region(gpd.GeoDataFrame(geometry=[shapely.box(32.4, 0.3, 32.6, 0.5)], crs=4326),
                    "box")
    peaks = []
    for spacing in (600.0, 190.0):  # about 1,400 and 13,700 cells
        grid = lay_grid(region, spacing, max_cells=100_000)
        cells = _filled(grid, seed=7)
        polygons = gpd.GeoDataFrame({"d": ["a"]}, geometry=[shapely.box(32.45, 0.35, 32.55, 0.45)],
                                    crs=4326)

        def exports(cells=cells, polygons=polygons):
            write_cells(cells, tmp_path / "c.parquet", tmp_path / "c.gpkg", slice_rows=1000)
            cells.targets(10)
            aggregate_grid(cells, polygons, "d", block_cells=1000)

        exports()  # imports and driver set-up outside the measure
        peaks.append((len(grid), _traced_peak(exports)))
    (n_small, small), (n_large, large) = peaks
    assert n_large > 9 * n_small
    per_cell = (large - small) / (n_large - n_small)
    assert per_cell < 40, f"{per_cell:.0f} traced bytes a cell"  # a table of every cell: ~300
