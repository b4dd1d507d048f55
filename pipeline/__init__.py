"""Geo-ingestion: units and imagery in, a tile store out.

Public names are loaded lazily (PEP 562) so that a dask worker importing one module does
not pay for all of them.
"""

from __future__ import annotations

from eocausal.lazy import lazy_exports

_EXPORTS = {
    "UnitColumns": "units", "read_units": "units", "validate_units": "units",
    "RasterSource": "imagery", "describe_raster": "imagery", "expand_imagery": "imagery",
    "resolve_bands": "imagery", "file_sha256": "imagery",
    "ChipGrid": "chips", "chip_window": "chips", "read_chip": "chips",
    "TileStore": "store", "ChipBatch": "store", "create_store": "store", "open_store": "store",
    "IngestResult": "ingest", "ingest": "ingest", "unit_centres": "ingest",
    "units_per_chunk_for": "partition", "is_remote": "remote", "remote_identity": "remote",
    "stac_rasters": "stac", "stac_items": "stac", "is_stac": "stac",
}

__getattr__, __dir__, __all__ = lazy_exports("eocausal.pipeline", _EXPORTS)
