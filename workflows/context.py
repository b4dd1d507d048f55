"""What every stage receives: the config, the run directory's paths, and shared handles.

The context opens each input once per process (the units file, the tile store, the
encoder) and hands the same object to every stage that asks, instead of each stage
reopening it from its path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eocausal.workflows.paths import RunPaths

from eocausal.errors import ConfigError

if TYPE_CHECKING:
    import geopandas as gpd
    from eocausal.pipeline.store import TileStore
    from eocausal.workflows.config import RunConfig

__all__ = ["Echo", "StageContext", "unit_columns"]

Echo = Callable[[str], None]
log = logging.getLogger(__name__)


def unit_columns(config: RunConfig, *, with_outcome: bool = True) -> Any:
    """The config's ``units`` section as the pipeline's column map."""
    from eocausal.pipeline.unit_checks import UnitColumns

    u = config.units
    if not with_outcome:
        return UnitColumns(id=u.id, treatment=None, outcome=None, group=u.group,
                           lon=u.lon, lat=u.lat, crs=u.crs)
    return UnitColumns(id=u.id, treatment=u.treatment, outcome=u.outcome,
                       covariates=tuple(u.covariates), group=u.group, lon=u.lon, lat=u.lat,
                       crs=u.crs)


@dataclass
class StageContext:
    """Config, paths and shared handles of one run (or of one per-stage command).

    ``with_outcome``: whether the units must have treatment and outcome (a run that estimates
    reads them once for every stage; ``eocausal ingest`` needs only ids and geometry).
    ``mapper``: where parallel partitions run (see :mod:`eocausal.workflows.cluster`).
    """

    config: RunConfig
    paths: RunPaths
    echo: Echo = field(default=lambda message: log.info(message))
    progress: bool = False
    mapper: Any = None
    with_outcome: bool = True
    manifest: Any = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def units(self) -> gpd.GeoDataFrame:
        """The validated units, read once."""
        if "units" not in self._cache:
            from eocausal.pipeline.units import read_units

            if self.config.units.path is None:
                raise ConfigError("The config names no units file: set 'units.path' "
                                  "(or a 'simulate' section).")
            # a panel's units file holds places only: treatment and outcome are per period
            with_outcome = self.with_outcome and self.config.panel is None
            self._cache["units"] = read_units(
                self.config.units.path, unit_columns(self.config, with_outcome=with_outcome),
                require_outcome=with_outcome)
        return self._cache["units"]

    def unit_points(self) -> Any:
        """Ids and point coordinates alone when the file allows it (ingestion's lean form),
        else the validated units: at a million points ~50 MB instead of ~400 MB.

        A run that estimates reads the whole units file instead, so that a bad outcome or
        treatment column is reported before the imagery is cut, not after.
        """
        if self.with_outcome or "units" in self._cache or self.config.units.path is None:
            return self.units()
        from eocausal.pipeline.points import read_unit_points

        points = read_unit_points(self.config.units.path,
                                  unit_columns(self.config, with_outcome=False))
        return self.units() if points is None else points

    def store(self) -> TileStore:
        """The run's tile store, opened once."""
        if "store" not in self._cache:
            from eocausal.pipeline.store import open_store

            self._cache["store"] = open_store(self.paths.tiles)
        return self._cache["store"]

    def encoder(self) -> Any:
        """The run's encoder, built once (rebuilt from the store when encode was skipped).

        Building is deterministic (seeded filters, whitening fitted on the study's own chips),
        so a rebuilt encoder equals the one that wrote ``features.parquet``.
        """
        if "encoder" not in self._cache:
            from eocausal.models.features.encode import prepare_encoder

            enc = self.config.encoder
            self._cache["encoder"] = prepare_encoder(self.store(), enc.name, options=enc.options,
                                                     weights=enc.weights, seed=self.config.seed)
        return self._cache["encoder"]

    def forget(self, *names: str) -> None:
        """Drop cached handles a stage has just replaced (a rewritten store)."""
        for name in names:
            self._cache.pop(name, None)

    def remember(self, name: str, value: Any) -> Any:
        self._cache[name] = value
        return value

    def cached(self, name: str) -> Any:
        return self._cache.get(name)
