"""Pieces of the map stage on known inputs: aggregation intervals, the PNG's elements, grids."""

from __future__ import annotations

import geopandas as gpd
import matplotlib
import numpy as np
import pytest
import shapely
from eocausal.workflows.maps import aggregate_cells, lay_grid, neighbour_correlation, read_region
from eocausal.workflows.maps.figure import effect_figure
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from eocausal.errors import ConfigError

Z = 1.959963984540054


def _cells(surface: np.ndarray, se: float, spacing: float = 100.0) -> gpd.GeoDataFrame:
    rows, cols = np.indices(surface.shape).reshape(2, -1)
    xs, ys = 500_000 + (cols + 0.5) * spacing, 4_000_000 - (rows + 0.5) * spacing
    return gpd.GeoDataFrame({"row": rows, "col": cols, "cate": surface.ravel(),
                             "cate_lo": surface.ravel() - Z * se,
                             "cate_hi": surface.ravel() + Z * se,
                             "extrapolated": cols >= surface.shape[1] - 2},
                            geometry=gpd.points_from_xy(xs, ys), crs="EPSG:32613")


def _halves(shape: tuple[int, int], spacing: float = 100.0) -> gpd.GeoDataFrame:
    h, w = shape[0] * spacing, shape[1] * spacing
    x0, y1 = 500_000, 4_000_000
    return gpd.GeoDataFrame({"county": ["west", "east"]}, geometry=[
        shapely.box(x0, y1 - h, x0 + w / 2, y1), shapely.box(x0 + w / 2, y1 - h, x0 + w, y1)],
        crs="EPSG:32613")


def test_neighbour_correlation_of_noise_and_of_a_smooth_surface():
    rng = np.random.default_rng(0)
    assert neighbour_correlation(rng.normal(size=(60, 60))) < 0.05
    smooth = np.add.outer(np.linspace(0, 3, 60), np.linspace(0, 3, 60))
    assert neighbour_correlation(smooth) > 0.95


def _brute_force_half(r: float, n_cols: int, n_rows: int, se: float) -> float:
    """Half-width from the double sum over every pair of cells, with rho = r ** distance."""
    rows, cols = np.indices((n_rows, n_cols)).reshape(2, -1)
    d = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    n = rows.size
    return Z * np.sqrt(np.sum(r**d) * se**2 / n**2)


def test_independent_cells_give_the_iid_interval():
    rng = np.random.default_rng(1)
    surface = rng.normal(size=(20, 20))
    agg = aggregate_cells(_cells(surface, 0.5), _halves(surface.shape), "county",
                          shape=surface.shape, errors="neighbour")
    west = agg.set_index("name").loc["west"]
    assert west["n_cells"] == 200
    assert west["mean_cate"] == pytest.approx(surface[:, :10].mean())
    assert west["neighbour_correlation"] < 0.1
    half = (west["mean_cate_hi"] - west["mean_cate_lo"]) / 2
    assert half == pytest.approx(_brute_force_half(west["neighbour_correlation"], 10, 20, 0.5))
    assert half == pytest.approx(Z * 0.5 / np.sqrt(200), rel=0.25)  # about independent
    assert west["share_extrapolated"] == 0.0
    assert agg.set_index("name").loc["east", "share_extrapolated"] == pytest.approx(0.2)


def test_correlated_cells_widen_the_interval_towards_the_mean_error():
    smooth = np.add.outer(np.linspace(0, 1, 20), np.linspace(0, 1, 20))
    agg = aggregate_cells(_cells(smooth, 0.5), _halves(smooth.shape), "county", shape=smooth.shape,
                          errors="neighbour")
    west = agg.set_index("name").loc["west"]
    half = (west["mean_cate_hi"] - west["mean_cate_lo"]) / 2
    assert west["neighbour_correlation"] > 0.9
    assert half == pytest.approx(_brute_force_half(west["neighbour_correlation"], 10, 20, 0.5),
                                 rel=1e-3)
    # Much wider than independence, never wider than fully correlated errors.
    assert Z * 0.5 / np.sqrt(200) * 3 < half <= Z * 0.5 + 1e-9


def test_shared_errors_give_the_mean_of_the_cells_errors():
    """The default takes errors as shared inside a polygon: half-width z * mean(s_i), the
    largest any correlation gives, even on a noise surface."""
    rng = np.random.default_rng(4)
    surface = rng.normal(size=(20, 20))
    cells = _cells(surface, 0.5)
    se = np.where(cells["col"] < 5, 0.2, 0.6)  # unequal errors: the mean, not the rms
    cells["cate_lo"], cells["cate_hi"] = cells["cate"] - Z * se, cells["cate"] + Z * se
    agg = aggregate_cells(cells, _halves(surface.shape), "county", shape=surface.shape)
    west = agg.set_index("name").loc["west"]
    half = (west["mean_cate_hi"] - west["mean_cate_lo"]) / 2
    assert half == pytest.approx(Z * se[cells["col"] < 10].mean())
    assert half == pytest.approx(Z * 0.4)
    neighbour = aggregate_cells(cells, _halves(surface.shape), "county", shape=surface.shape,
                                errors="neighbour").set_index("name").loc["west"]
    assert (neighbour["mean_cate_hi"] - neighbour["mean_cate_lo"]) / 2 < half / 3


def test_polygon_without_cells_reports_zero():
    surface = np.zeros((4, 4))
    far = gpd.GeoDataFrame({"county": ["far"]}, geometry=[shapely.box(0, 0, 10, 10)],
                           crs="EPSG:32613")
    agg = aggregate_cells(_cells(surface, 1.0), far, "county", shape=surface.shape)
    assert agg["n_cells"].tolist() == [0] and np.isnan(agg["mean_cate"]).all()


def test_png_has_the_elements_a_reader_needs(tmp_path):
    rng = np.random.default_rng(2)
    surface = rng.normal(0.4, 1.0, size=(30, 40))
    extrapolated = np.zeros_like(surface, dtype=bool)
    extrapolated[:, -5:] = True
    extent = (500_000.0, 504_000.0, 3_997_000.0, 4_000_000.0)
    units = gpd.GeoDataFrame({"treatment": [1, 0, 1, 0]}, geometry=gpd.points_from_xy(
        [501_000, 502_000, 503_000, 501_500], [3_998_000] * 4), crs="EPSG:32613")
    region = gpd.GeoDataFrame(geometry=[shapely.box(500_000, 3_997_000, 504_000, 4_000_000)],
                              crs="EPSG:32613")
    fig = effect_figure(tmp_path / "e.png", surface=surface, extent=extent, crs="EPSG:32613",
                        title="Predicted effect on consumption", label="Effect (SD)",
                        extrapolated=extrapolated, units=units, boundaries=[region])
    ax, cax = fig.axes
    assert ax.get_title() == "Predicted effect on consumption"
    assert cax.get_ylabel() == "Effect (SD)"
    image = ax.images[0]
    vmin, vmax = image.get_clim()
    assert vmin == -vmax > -np.inf and image.get_cmap().name == "RdBu_r"  # centred on zero
    assert any(c.get_gid() == "extrapolation" for c in ax.collections)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "trial unit, treated" in legend and "trial unit, control" in legend
    assert "region boundaries" in legend and any("support" in t for t in legend)
    assert "no data" in legend
    assert sum(line.get_gid() == "graticule" for line in ax.lines) >= 2
    ticks = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert ticks and all("°" in t for t in ticks)
    bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1 and bars[0].txt_label.get_text() in {"1 km", "0.5 km", "500 m"}
    assert (tmp_path / "e.png").stat().st_size > 10_000
    assert isinstance(fig, matplotlib.figure.Figure)


def test_grid_cells_are_spacing_metres_in_utm():
    region = read_region("-105.6,40.2,-105.4,40.4")
    grid = lay_grid(region, 1000.0, max_cells=10_000)
    assert grid.crs == "EPSG:32613"
    xs = np.sort(np.unique(np.round(grid.units.geometry.x, 6)))
    assert np.allclose(np.diff(xs), 1000.0)
    # Every cell centre lies inside the box, in lon/lat.
    ll = grid.units.to_crs(4326)
    assert ll.geometry.x.between(-105.6, -105.4).all() and ll.geometry.y.between(40.2, 40.4).all()


def test_where_filter_selects_a_country(data_dir):
    region = read_region(data_dir / "vectors" / "naturalearth_lowres.shp", where="name = 'Uganda'")
    assert len(region.shapes) == 1
    x0, y0, x1, y1 = region.bounds
    assert 29 < x0 < x1 < 36 and -2 < y0 < y1 < 5
    with pytest.raises(ConfigError, match="has no features where"):
        read_region(data_dir / "vectors" / "naturalearth_lowres.shp", where="name = 'Atlantis'")


def test_bad_bbox_says_the_expected_form():
    with pytest.raises(ConfigError, match="minlon,minlat,maxlon,maxlat"):
        read_region("10,5,2,1")


def test_png_labels_each_area_with_its_mean_and_interval(tmp_path):
    surface = np.zeros((20, 20))
    extent = (500_000.0, 502_000.0, 3_998_000.0, 4_000_000.0)
    areas = _halves((20, 20)).rename(columns={"county": "name"})
    areas["mean_cate"], areas["mean_cate_lo"], areas["mean_cate_hi"] = [0.5, -0.2], [0.1, -0.6], [0.9, 0.2]
    fig = effect_figure(tmp_path / "a.png", surface=surface, extent=extent, crs="EPSG:32613",
                        title="t", label="Effect (SD)", areas=areas, boundaries=[areas])
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts if t.get_gid() == "area-label")
    assert labels == ["east\n-0.20 [-0.60, 0.20]", "west\n0.50 [0.10, 0.90]"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "area: mean effect [95% interval]" in legend
