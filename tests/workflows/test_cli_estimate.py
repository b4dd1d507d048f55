"""``eocausal estimate`` (workflows.cli_estimate) on the Uganda units and image features.

Kept under tests/models with the estimators it wraps; it runs the command in-process.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from eocausal.workflows.cli_estimate import estimate

from eocausal.errors import EstimationError, InputFileError, MissingColumnError
from tests.models.worlds import band_statistics


@pytest.fixture(scope="module")
def inputs(data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uganda")
    npz = np.load(data_dir / "rct_geo" / "causalimages_uganda_images.npz")
    stats = band_statistics(np.moveaxis(npz["images"], -1, 1)) / 255.0
    features = pd.DataFrame(stats, columns=[f"f{i}" for i in range(stats.shape[1])])
    features.insert(0, "image_key", npz["keys"])
    features.to_parquet(folder / "features.parquet")
    return data_dir / "rct_geo" / "causalimages_uganda_units.csv", folder / "features.parquet", folder


def run(args: list[str]):
    return CliRunner().invoke(estimate, args, catch_exceptions=True, standalone_mode=False)


def base_args(inputs, out: str) -> list[str]:
    units, features, folder = inputs
    return ["--units", str(units), "--features", str(features), "--out", str(folder / out),
            "--id-column", "image_key", "--treatment", "W", "--outcome", "Y",
            "--covariates", "X1,X3,X5", "--group-column", "image_key", "--n-components", "none",
            "--n-estimators", "100", "--method", "dr_learner"]


def test_estimate_writes_the_run_directory(inputs) -> None:
    result = run([*base_args(inputs, "run"), "--drop-missing", "--n-bootstrap-rate", "20"])
    assert result.exception is None, result.output
    out = inputs[2] / "run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_used"] == 2075 and summary["n_dropped_missing"] == 7
    assert 0.55 < summary["ate"] < 0.95
    assert summary["heterogeneity"]["rate_autoc"]["n_bootstrap"] == 20
    effects = gpd.read_file(out / "effects.gpkg")
    assert list(effects.columns) == ["unit_id", "treatment", "outcome", "group", "cate", "cate_lo",
                                     "cate_hi", "cate_lo_calibrated", "cate_hi_calibrated",
                                     "used"]
    assert (effects["cate_lo_calibrated"] <= effects["cate_lo"] + 1e-9).all()
    assert len(effects) == 2075
    ate = pd.read_csv(out / "ate.csv", index_col="method")
    assert ate.loc["difference_in_means", "note"] == "cluster-robust"
    assert {p.name for p in (out / "figures").iterdir()} == {"toc.png", "qini.png", "gates.png",
                                                             "calibration.png", "balance.png",
                                                             "feature_sets.png"}
    assert set(summary["figures"]) == {"toc", "qini", "gates", "calibration", "balance",
                                       "feature_sets"}
    sets = summary["heterogeneity"]["feature_sets"]["feature_sets"]
    assert [row["feature_set"] for row in sets] == ["tabular", "image", "image+tabular"]
    assert "cluster-robust" in summary["variance"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6 and "Images, tabular covariates" in page
    assert "ATE (aipw)" in result.output  # dr_learner: AIPW headline, cluster-robust


def test_missing_covariates_without_drop_flag_name_the_rows(inputs) -> None:
    result = run([*base_args(inputs, "nan"), "--no-evaluate"])
    assert isinstance(result.exception, EstimationError)
    assert "covariates has NaN or infinite values in 7 rows" in str(result.exception)


def test_missing_column_is_named(inputs) -> None:
    args = base_args(inputs, "col")
    args[args.index("W")] = "treated"
    result = run(args)
    assert isinstance(result.exception, MissingColumnError)
    assert "has no column 'treated'" in str(result.exception)


def test_missing_file_is_named(inputs, tmp_path) -> None:
    args = base_args(inputs, "file")
    args[args.index("--features") + 1] = str(tmp_path / "nope.parquet")
    result = run(args)
    assert isinstance(result.exception, InputFileError)
    assert "nope.parquet' does not exist" in str(result.exception)


def test_disjoint_ids_are_reported(inputs) -> None:
    args = base_args(inputs, "ids")
    args[args.index("--id-column") + 1] = "row"
    args += ["--features-id", "image_key"]
    features = pd.read_parquet(inputs[1])
    features["image_key"] += 100000
    path = inputs[2] / "shifted.parquet"
    features.to_parquet(path)
    args[args.index("--features") + 1] = str(path)
    result = run(args)
    assert isinstance(result.exception, EstimationError)
    assert "share no ids: 2082 units in 'row'" in str(result.exception)


def test_constant_outcome_and_too_many_columns_warn(inputs, tmp_path) -> None:
    units = pd.read_csv(inputs[0])
    units["Y"] = 1.0
    path = tmp_path / "constant.csv"
    units.to_csv(path, index=False)
    args = base_args(inputs, "constant")
    args[args.index("--units") + 1] = str(path)
    result = run([*args, "--drop-missing", "--no-evaluate"])
    assert "the outcome of" in result.output and "is constant" in result.output


def test_nan_features_name_file_column_and_units(inputs, tmp_path) -> None:
    features = pd.read_parquet(inputs[1])
    features.loc[3, "f2"] = float("nan")
    path = tmp_path / "nan.parquet"
    features.to_parquet(path)
    args = base_args(inputs, "nanf")
    args[args.index("--features") + 1] = str(path)
    result = run([*args, "--drop-missing", "--no-evaluate"])
    assert isinstance(result.exception, EstimationError)
    message = str(result.exception)
    assert "Feature column 'f2'" in message and "nan.parquet" in message and "unit ids" in message


def test_image_free_estimate_on_401k(data_dir, tmp_path) -> None:
    """Covariates alone (no --features): DML near the published ~$9,000 with sensitivity."""
    out = tmp_path / "k401"
    result = run(["--units", str(data_dir / "known_answer" / "sipp1991_401k.csv"),
                  "--treatment", "e401", "--outcome", "net_tfa",
                  "--covariates", "age,inc,educ,fsize,marr,twoearn,db,pira,hown",
                  "--design", "observational", "--method", "linear_dml", "--no-evaluate",
                  "--n-components", "none", "--out", str(out)])
    assert result.exception is None, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_features"] == 0 and summary["n_covariates"] == 9
    assert 5_000 < summary["ate"] < 12_000
    aipw = summary["ate_estimators"]["estimates"]["aipw"]
    assert aipw["lo"] < 9_000 < aipw["hi"] or 6_000 < aipw["estimate"] < 11_000
    sensitivity = summary["sensitivity"]
    assert sensitivity is not None and "sentence" in sensitivity
