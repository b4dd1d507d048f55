"""The run configuration: one YAML file, validated whole before any stage starts.

Keys are the argument names of the stage functions they feed, so a config reads like the
notebook call it replaces. Relative paths are resolved against the config file's folder.
An unknown key fails with the list of valid keys, not somewhere deep inside a stage.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from eocausal.models.effects.panel_settings import PanelSettings
from eocausal.models.effects.settings import EffectSettings
from eocausal.models.heterogeneity.settings import ClustersSettings
from eocausal.pipeline.remote import is_remote
from eocausal.workflows.maps.settings import MapSettings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eocausal.errors import ConfigError, InputFileError

__all__ = ["RunConfig", "load_config", "config_from_dict"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class UnitsSection(_Section):
    path: Path | None = None
    id: str = "unit_id"
    treatment: str = "treatment"
    outcome: str = "outcome"
    covariates: list[str] = Field(default_factory=list)
    group: str | None = None
    lon: str = "lon"
    lat: str = "lat"
    crs: str | None = None
    outcome_label: str | None = Field(None, description="the outcome's name in the report")
    outcome_units: str | None = Field(None, description="its units, e.g. 'SD' or 'USD'")


class ImagerySection(_Section):
    paths: list[str] = Field(default_factory=list)
    bands: list[int | str] | None = None
    crs: str | None = None
    resolution: float | None = Field(None, gt=0)
    resampling: str | None = None
    dates: list[str] | None = None
    apply_scale_offset: bool = True


class PatchesSection(_Section):
    """Pre-cut patches (.npz with image keys) instead of GeoTIFFs; units point at a key."""

    path: Path
    key_column: str = "group"
    keys: str = "keys"
    images: str = "images"
    channels_last: bool = True
    band_names: list[str] | None = None


class ChipsSection(_Section):
    size: int = Field(32, ge=1, le=4096)
    polygons: Literal["centroid", "bounds"] = "centroid"
    min_valid_fraction: float = Field(0.5, ge=0.0, le=1.0)
    units_per_chunk: int | None = Field(
        None, ge=1, description="units per store chunk (default: sized from the chip's bytes "
                                "and the workers, about 8 MiB a chunk)")
    compression: str | None = Field(None, description="chip compression, e.g. 'lz4' (default raw)")


class EncoderSection(_Section):
    name: str = "rcf"
    options: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = None
    batch_size: int = Field(256, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0, description="DataLoader workers reading the store")


class EstimatorSection(EffectSettings):
    """The effect model's settings: every field and default comes from EffectSettings."""


class EvaluationSection(_Section):
    """Held-out heterogeneity checks of the CATE model (RATE, BLP, GATES)."""

    enabled: bool = True
    n_bootstrap: int = Field(200, ge=0, description="half-sample bootstrap replicates of RATE")
    feature_sets: bool = Field(True, description="compare tabular-only, image-only and "
                                                 "image+tabular models (needs covariates)")


class PanelSection(PanelSettings):
    """A panel design: the survey's long table (one row per unit and period) and how the
    imagery's dates become its periods. Treatment and outcome columns are those of 'units'."""

    path: Path = Field(description="survey table (CSV or Parquet): unit, period, treatment, "
                                   "outcome, covariates")
    period_format: Literal["date", "year", "month"] = Field(
        "date", description="period label of each image date: the date, its year or its month")


class ComputeSection(_Section):
    scheduler: str | None = Field(
        None, description="None (auto: this process for small stages, else worker "
                          "processes), 'synchronous', 'processes', 'local' (a dask "
                          "LocalCluster) or a dask scheduler address"
    )
    workers: int | None = Field(None, ge=1)


class RunConfig(_Section):
    """A whole run: where the inputs are and how each stage is set."""

    name: str = Field("run", max_length=100, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$",
                      description="run name: letters, digits, '-', '_' and '.', never a path")
    seed: int = 0
    simulate: dict[str, Any] | None = None
    units: UnitsSection = Field(default_factory=UnitsSection)
    imagery: ImagerySection = Field(default_factory=ImagerySection)
    patches: PatchesSection | None = None
    chips: ChipsSection = Field(default_factory=ChipsSection)
    encoder: EncoderSection = Field(default_factory=EncoderSection)
    estimator: EstimatorSection = Field(default_factory=EstimatorSection)
    panel: PanelSection | None = None
    clusters: ClustersSettings | None = None
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    map: MapSettings = Field(default_factory=MapSettings)
    compute: ComputeSection = Field(default_factory=ComputeSection)
    truth: Path | None = None

    @field_validator("simulate")
    @classmethod
    def _simulate_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        from dataclasses import fields

        from eocausal.simulator.world import WorldSpec

        valid = {f.name for f in fields(WorldSpec)}
        unknown = sorted(set(value) - valid)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; valid keys are {sorted(valid)}")
        return value


MAX_CONFIG_BYTES = 1_000_000


def _excerpt(value: Any, limit: int = 120) -> str:
    """A value for an error message, cut to ``limit`` characters (a config can be hostile)."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlist = shortener.maxdict = 6
    shortener.maxlevel = 3
    text = shortener.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: a few hundred bytes of nested aliases can expand to
    gigabytes, and a run config has no need for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"YAML alias '*{event.anchor}' at line {event.start_mark.line + 1}: configs may "
                "not use anchors and aliases; write the value out in full."
            )
        return super().compose_node(parent, index)


def _format_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            section = _section_for(err["loc"][:-1])
            valid = sorted(section.model_fields) if section else []
            lines.append(f"unknown key '{where}'; valid keys here are {valid}")
        else:
            lines.append(f"'{where}': {err['msg']} (got {_excerpt(err.get('input'))})")
    return f"Config '{source}' is invalid:\n  " + "\n  ".join(lines)


def _section_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section model at ``loc`` (unwrapping ``Section | None``), for listing valid keys."""
    model: type[BaseModel] = RunConfig
    for key in loc:
        field = model.model_fields.get(str(key))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        sections = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not sections:
            return None
        model = sections[0]
    return model


def config_from_dict(data: dict[str, Any], *, base_dir: Path | None = None,
                     source: str = "config") -> RunConfig:
    """Validate a config mapping; relative paths are taken relative to ``base_dir``."""
    try:
        config = RunConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    return config


def _resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    def resolve(p: Path | str | None) -> Any:
        if p is None:
            return None
        path = Path(p)
        return path if path.is_absolute() else (base / path)

    config.units.path = resolve(config.units.path)
    config.imagery.paths = [p if is_remote(p) else str(resolve(p)) for p in config.imagery.paths]
    config.encoder.weights = resolve(config.encoder.weights)
    if config.patches is not None:
        config.patches.path = resolve(config.patches.path)
    if config.panel is not None:
        config.panel.path = resolve(config.panel.path)
    if config.map.aggregate is not None:
        config.map.aggregate = resolve(config.map.aggregate)
    if config.map.region is not None and Path(config.map.region).suffix:
        config.map.region = str(resolve(config.map.region))
    if config.map.imagery:
        config.map.imagery = [str(resolve(p)) for p in config.map.imagery]
    config.truth = resolve(config.truth)
    return config


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"Config file '{path}' does not exist.")
    if path.is_dir():
        raise InputFileError(f"Config '{path}' is a directory; give the YAML file inside it.")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"Config '{path}' is {size:,} bytes; a run config is at most "
                          f"{MAX_CONFIG_BYTES:,} bytes. Check that you named the right file.")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)  # noqa: S506
    except UnicodeDecodeError:
        raise ConfigError(f"Config '{path}' is not UTF-8 text; save it as a YAML text file.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config '{path}' is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"Config '{path}' must be a mapping of sections, got {type(data).__name__}.")
    return config_from_dict(data or {}, base_dir=path.parent.resolve(), source=str(path))
