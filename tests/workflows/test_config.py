"""The run config is validated whole, with messages that list valid keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from eocausal.workflows.config import RunConfig, config_from_dict, load_config

from eocausal.errors import ConfigError, InputFileError

ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_is_valid():
    config = load_config(ROOT / "configs" / "demo.yaml")
    assert config.simulate["n_units"] == 2000
    assert config.encoder.name == "rcf" and config.estimator.design == "rct"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'chips.sise'; valid keys here are "
                                          r"\['compression', 'min_valid_fraction', 'polygons', 'size', 'units_per_chunk'\]"):
        config_from_dict({"chips": {"sise": 32}})


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown key 'imagry'.*'imagery'"):
        config_from_dict({"imagry": {}})


def test_bad_value_names_field_and_value():
    with pytest.raises(ConfigError, match=r"'estimator.propensity'.*got 1.5"):
        config_from_dict({"estimator": {"propensity": 1.5}})


def test_unknown_simulate_key():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['n_unit'\]"):
        config_from_dict({"simulate": {"n_unit": 10}})


def test_relative_paths_resolve_against_config_folder(tmp_path):
    path = tmp_path / "sub" / "c.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"units": {"path": "u.gpkg"}, "imagery": {"paths": ["*.tif"]}}))
    config = load_config(path)
    assert config.units.path == path.parent / "u.gpkg"
    assert config.imagery.paths == [str(path.parent / "*.tif")]


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("units: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_defaults_round_trip():
    config = RunConfig()
    assert config_from_dict(config.model_dump(mode="json")) == config
