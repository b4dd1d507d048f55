"""Units from any common format come out with canonical columns; bad rows are named."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from eocausal.pipeline.units import UnitColumns, read_units

from eocausal.errors import CRSMissingError, InputFileError, MissingColumnError, UnitsError
from tests.conftest import DATA

UGANDA = DATA / "rct_geo" / "causalimages_uganda_units.csv"
COLUMNS = UnitColumns(id="row", treatment="W", outcome="Y", covariates=("X1", "X2"),
                      group="image_key", lon="geo_long", lat="geo_lat")


def _frame(n=5):
    return gpd.GeoDataFrame(
        {"uid": [f"a{i}" for i in range(n)], "T": [0, 1] * (n // 2) + [1] * (n % 2),
         "Y": np.arange(n, dtype=float), "x1": np.ones(n)},
        geometry=gpd.points_from_xy(np.linspace(32, 33, n), np.linspace(0, 1, n)),
        crs="EPSG:4326",
    )


def test_uganda_csv_with_lon_lat(data_dir):
    units = read_units(UGANDA, COLUMNS)
    raw = pd.read_csv(UGANDA)
    assert len(units) == 2082 and units.crs.to_epsg() == 4326
    assert list(units.columns[:3]) == ["unit_id", "treatment", "outcome"]
    assert units["treatment"].sum() == 825
    np.testing.assert_allclose(units.geometry.x, raw["geo_long"])
    assert units["group"].nunique() == 327


@pytest.mark.parametrize("suffix,driver", [(".gpkg", "GPKG"), (".geojson", "GeoJSON"),
                                           (".shp", "ESRI Shapefile"), (".fgb", "FlatGeobuf")])
def test_vector_formats_round_trip(tmp_path, suffix, driver):
    path = tmp_path / f"units{suffix}"
    _frame().to_file(path, driver=driver)
    units = read_units(path, UnitColumns(id="uid", treatment="T", outcome="Y", covariates=("x1",)))
    units = units.sort_values("unit_id")  # FlatGeobuf reorders rows along its spatial index
    assert list(units["unit_id"]) == [f"a{i}" for i in range(5)]
    np.testing.assert_allclose(units["outcome"], np.arange(5))


def test_geoparquet_and_polygons(tmp_path):
    frame = _frame().to_crs("EPSG:32636")
    frame["geometry"] = frame.buffer(100.0)
    frame.to_parquet(tmp_path / "u.parquet")
    units = read_units(tmp_path / "u.parquet", UnitColumns(id="uid", treatment="T", outcome="Y"))
    assert (units.geom_type == "Polygon").all()


def test_missing_column_lists_the_present_ones(tmp_path):
    _frame().to_file(tmp_path / "u.gpkg")
    with pytest.raises(MissingColumnError, match=r"no column\(s\) \['treat'\].*'uid'"):
        read_units(tmp_path / "u.gpkg", UnitColumns(id="uid", treatment="treat", outcome="Y"))


def test_duplicate_ids_name_the_rows(tmp_path):
    frame = _frame()
    frame.loc[3, "uid"] = "a1"
    frame.to_file(tmp_path / "u.gpkg")
    with pytest.raises(UnitsError, match=r"duplicate ids: a1 \(rows 1, 3\)"):
        read_units(tmp_path / "u.gpkg", UnitColumns(id="uid", treatment="T", outcome="Y"))


def test_nan_outcome_names_rows(tmp_path):
    frame = _frame()
    frame.loc[2, "Y"] = np.nan
    frame.to_file(tmp_path / "u.gpkg")
    with pytest.raises(UnitsError, match=r"missing or infinite values in 1 rows: 2 \(unit ids a2\)"):
        read_units(tmp_path / "u.gpkg", UnitColumns(id="uid", treatment="T", outcome="Y"))


def test_units_without_crs(tmp_path):
    path = tmp_path / "u.fgb"
    _frame().set_crs(None, allow_override=True).to_file(path, driver="FlatGeobuf")
    with pytest.raises(CRSMissingError, match="has no CRS.*units.crs"):
        read_units(path, UnitColumns(id="uid", treatment="T", outcome="Y"))
    units = read_units(path, UnitColumns(id="uid", treatment="T", outcome="Y", crs="EPSG:4326"))
    assert units.crs.to_epsg() == 4326


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_units(tmp_path / "nope.gpkg")
    (tmp_path / "junk.gpkg").write_text("not a geopackage")
    with pytest.raises(InputFileError, match="cannot be read"):
        read_units(tmp_path / "junk.gpkg")
