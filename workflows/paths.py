"""Every file of a run directory, named once.

Stages, per-stage commands, the report and tests take their paths from :class:`RunPaths`
instead of joining literal names, so renaming an output is a one-line change and a
per-stage command writes exactly the files that ``eocausal run`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["RunPaths"]


@dataclass(frozen=True)
class RunPaths:
    """The layout of one run directory (see DESIGN.md, "the run directory").

    ``tiles`` and ``features`` may point elsewhere (``eocausal encode STORE --out F``
    reads and writes files a user named); everything else lives under ``root``.
    """

    root: Path
    tiles_override: Path | None = field(default=None, repr=False)
    features_override: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def for_store(cls, store: str | Path) -> RunPaths:
        """The run directory around a tile store a user named (its folder)."""
        store = Path(store)
        return cls(store.parent, tiles_override=store)

    def with_features(self, features: str | Path) -> RunPaths:
        return replace(self, features_override=Path(features))

    def with_tiles(self, tiles: str | Path) -> RunPaths:
        return replace(self, tiles_override=Path(tiles))

    # Bookkeeping
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.root / ".eocausal.lock"

    @property
    def lock_info(self) -> Path:
        return self.root / ".eocausal.lock.json"

    @property
    def marker(self) -> Path:
        """Marks a directory as an eocausal run directory (so it may be overwritten)."""
        return self.root / ".eocausal-run"

    # Simulate
    @property
    def world(self) -> Path:
        return self.root / "world"

    # Ingest
    @property
    def tiles(self) -> Path:
        return self.tiles_override or self.root / "tiles.zarr"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped_units.csv"

    # Encode
    @property
    def features(self) -> Path:
        return self.features_override or self.root / "features.parquet"

    # Estimate
    @property
    def effects(self) -> Path:
        return self.root / "effects.gpkg"

    @property
    def estimator(self) -> Path:
        return self.root / "estimator.joblib"

    @property
    def estimates(self) -> Path:
        """The estimate stage's headline numbers (summary.json gathers them with the rest)."""
        return self.root / "estimates.json"

    @property
    def ate_table(self) -> Path:
        return self.root / "ate.csv"

    # Evaluate
    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    # Clusters
    @property
    def clusters(self) -> Path:
        return self.root / "clusters"

    @property
    def cluster_model(self) -> Path:
        """The cluster model fitted on every unit (a pickle), for the map's predictions."""
        return self.clusters / "model.pt"

    @property
    def cluster_model_sha256(self) -> Path:
        """Checksum of ``cluster_model`` as the clusters stage wrote it (checked before loading)."""
        return self.clusters / "model.sha256"

    # Map
    @property
    def maps(self) -> Path:
        return self.root / "maps"

    @property
    def grid_tiles(self) -> Path:
        return self.maps / "grid_tiles.zarr"

    @property
    def cate_png(self) -> Path:
        return self.maps / "cate.png"

    @property
    def map_summary(self) -> Path:
        return self.maps / "map.json"

    @property
    def map_parts(self) -> Path:
        """Scratch folder of the map's prediction parts (emptied when the stage ends)."""
        return self.maps / "parts"

    @property
    def effect_tif(self) -> Path:
        return self.maps / "effect.tif"

    @property
    def effect_png(self) -> Path:
        return self.maps / "effect.png"

    @property
    def effect_html(self) -> Path:
        return self.maps / "effect.html"

    @property
    def cells_parquet(self) -> Path:
        return self.maps / "cells.parquet"

    @property
    def cells_gpkg(self) -> Path:
        return self.maps / "cells.gpkg"

    @property
    def aggregates_gpkg(self) -> Path:
        return self.maps / "aggregates.gpkg"

    @property
    def aggregates_csv(self) -> Path:
        return self.maps / "aggregates.csv"

    @property
    def targets_csv(self) -> Path:
        return self.maps / "targets.csv"

    # Report
    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"
