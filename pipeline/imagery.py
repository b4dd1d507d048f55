"""Describe the rasters of a study before any chip is cut: CRS, grid, bands, date, checksum.

Opening every file once up front turns a truncated GeoTIFF or a raster without a CRS into
one clear message before hours of work start, and gives dask tasks plain, picklable facts
(paths and grids) instead of open rasterio handles.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from eocausal.pipeline.remote import REMOTE_GDAL_ENV, is_remote, remote_identity, remote_name
from rasterio.errors import RasterioIOError

from eocausal.errors import ConfigError, CRSMissingError, InputFileError, RasterReadError

__all__ = [
    "RasterSource",
    "describe_raster",
    "expand_imagery",
    "file_sha256",
    "group_by_date",
    "resolve_bands",
]

log = logging.getLogger(__name__)

DATE_PATTERN = re.compile(r"(?<!\d)((?:19|20)\d{2})-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")


@dataclass(frozen=True)
class RasterSource:
    """Facts about one raster file, cheap to pickle to a dask worker."""

    path: str
    crs: str
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...]
    date: str | None
    sha256: str
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    remote: bool = False  # read over the network (a URL, or a VRT of remote STAC assets)

    @property
    def has_scale_offset(self) -> bool:
        """True when the file declares a scale or offset other than 1 and 0 on any band."""
        return any(s != 1.0 for s in self.scales) or any(o != 0.0 for o in self.offsets)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    @property
    def pixel_size(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    def as_record(self) -> dict[str, object]:
        """JSON-ready description for store attributes and the run manifest."""
        return {"path": self.path, "sha256": self.sha256, "date": self.date, "crs": self.crs}


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file, streamed so a large scene never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def expand_imagery(patterns: Sequence[str | Path],
                   bands: Sequence[int | str] | None = None) -> list[Path | str]:
    """Expand paths, globs, URLs and STAC documents into a list of rasters.

    A path or glob gives files; an ``http(s)://`` (or ``/vsicurl/``, ``s3://``) URL of a
    COG is kept as a URL; a STAC catalog, collection, item or item collection (a .json file
    or URL) gives one VRT per item stacking the assets named by ``bands``
    (:func:`pipeline.stac.stac_rasters`). A pattern matching nothing fails.
    """
    files: list[Path | str] = []
    for pattern in patterns:
        text = str(pattern)
        if text.split("?", 1)[0].lower().endswith((".json", ".geojson")):
            from eocausal.pipeline.stac import is_stac, stac_rasters

            if is_stac(text):
                files.extend(stac_rasters(text, bands))
                continue
        if is_remote(text):
            files.append(text)
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text))
            if not matches:
                raise InputFileError(f"Imagery pattern '{text}' matches no file. Check the path.")
            files.extend(matches)
        else:
            path = Path(text)
            if path.is_symlink() and not path.exists():
                try:
                    path.resolve(strict=True)
                except RuntimeError:  # Python raises RuntimeError for a symlink loop
                    raise InputFileError(f"Imagery file '{path}' is a symbolic link that loops "
                                         "back on itself; point it at a real raster.") from None
                except OSError:
                    pass
                raise InputFileError(f"Imagery file '{path}' is a broken symbolic link (to "
                                     f"'{path.readlink()}'); point it at a real raster.")
            if not path.exists():
                raise InputFileError(f"Imagery file '{path}' does not exist. Check 'imagery.paths'.")
            files.append(path)
    return files


def _parse_date(path: Path | str, tags: dict[str, str]) -> str | None:
    for key in ("ACQUISITION_DATE", "TIFFTAG_DATETIME", "DATE"):
        if key in tags:
            match = DATE_PATTERN.search(tags[key].replace(":", "-"))
            if match:
                return "-".join(match.groups())
    stem = Path(remote_name(path) if isinstance(path, str) else path.name).stem
    match = DATE_PATTERN.search(stem)
    return "-".join(match.groups()) if match else None


def describe_raster(path: str | Path, *, checksum: bool = True) -> RasterSource:
    """Open a raster once and check that chips can be cut from it.

    Raises
    ------
    InputFileError
        The file does not exist.
    RasterReadError
        GDAL cannot open it, or its last block cannot be read (a truncated file).
    CRSMissingError
        It has no CRS.
    """
    remote = is_remote(path)
    if not remote:
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"Imagery file '{path}' does not exist. Check 'imagery.paths'.")
    try:
        with rasterio.Env(**(REMOTE_GDAL_ENV if remote or str(path).endswith(".vrt") else {})), \
                rasterio.open(path) as src:
            tags = src.tags()
            remote = remote or tags.get("EOCAUSAL_REMOTE") == "YES"
            # Reading the last row catches truncated files, which open fine; over the network
            # the last pixel (its tile is the end of a COG) does it without a row of tiles.
            width = 1 if remote else src.width
            src.read(1, window=((src.height - 1, src.height), (src.width - width, src.width)))
            names = tuple(
                desc or f"band_{i}" for i, desc in enumerate(src.descriptions, start=1)
            )
            info = dict(
                crs=src.crs, transform=src.transform, width=src.width, height=src.height,
                count=src.count, dtype=src.dtypes[0], nodata=src.nodata,
                scales=tuple(float(v) for v in src.scales),
                offsets=tuple(float(v) for v in src.offsets),
            )
    except RasterioIOError as exc:
        raise RasterReadError(
            f"Imagery file '{path}' cannot be read as a raster ({exc}). It may be truncated "
            "or not a GeoTIFF: download it again or remove it from 'imagery.paths'."
        ) from exc
    if info["crs"] is None:
        raise CRSMissingError(
            f"Raster '{path}' has no CRS, so units cannot be placed on it. Set one with "
            f"'rio edit-info --crs EPSG:XXXX {path}'."
        )
    if info["transform"] == Affine.identity():
        raise CRSMissingError(
            f"Raster '{path}' has no geotransform (pixel grid), so units cannot be placed on it. "
            "Georeference it first (for example with gdal_translate -a_ullr)."
        )
    if not checksum:
        digest = ""
    elif is_remote(path):
        try:
            digest = remote_identity(str(path))
        except OSError as exc:
            raise RasterReadError(f"Imagery URL '{path}' does not answer a HEAD request "
                                  f"({exc}). Check the URL and the network.") from exc
    elif "SOURCE_IDENTITY" in tags:  # a STAC VRT: its own bytes plus its assets' identity
        digest = hashlib.sha256((file_sha256(path) + tags["SOURCE_IDENTITY"]).encode()).hexdigest()
    else:
        digest = file_sha256(path)
    return RasterSource(
        path=str(path), crs=info["crs"].to_string(), transform=info["transform"],
        width=info["width"], height=info["height"], count=info["count"], dtype=info["dtype"],
        nodata=info["nodata"], band_names=names, date=_parse_date(path, tags),
        sha256=digest, scales=info["scales"], offsets=info["offsets"], remote=remote,
    )


def resolve_bands(source: RasterSource, bands: Sequence[int | str] | None) -> list[int]:
    """Turn band selections (1-based indexes or descriptions) into 1-based indexes."""
    if bands is None:
        return list(range(1, source.count + 1))
    indexes: list[int] = []
    for band in bands:
        if isinstance(band, (int, np.integer)):
            if not 1 <= band <= source.count:
                raise ConfigError(
                    f"Band index {band} is out of range for '{source.path}', which has "
                    f"{source.count} bands (1..{source.count})."
                )
            indexes.append(int(band))
        elif band in source.band_names:
            indexes.append(source.band_names.index(band) + 1)
        else:
            raise ConfigError(
                f"Band '{band}' is not in '{source.path}'; its bands are "
                f"{list(source.band_names)}. Use a name from that list or a 1-based index."
            )
    return indexes


def group_by_date(
    sources: Sequence[RasterSource], dates: Sequence[str] | None = None
) -> list[tuple[str | None, list[RasterSource]]]:
    """Group rasters into acquisitions: one mosaic of files per date, in date order.

    ``dates`` (one per source, for example from the config) override dates parsed from tags
    or file names. When no source has a date, all of them form one undated mosaic (T=1).
    """
    if dates is not None:
        if len(dates) != len(sources):
            raise ConfigError(
                f"'imagery.dates' has {len(dates)} entries but {len(sources)} rasters were "
                "given; give one date per raster (YYYY-MM-DD) or none."
            )
        parsed = []
        for date, source in zip(dates, sources, strict=True):
            match = DATE_PATTERN.search(str(date))
            if not match:
                raise ConfigError(f"Date '{date}' for '{source.path}' is not YYYY-MM-DD.")
            parsed.append("-".join(match.groups()))
    else:
        parsed = [s.date for s in sources]
    if all(d is None for d in parsed):
        return [(None, list(sources))]
    undated = [s.path for s, d in zip(sources, parsed, strict=True) if d is None]
    if undated:
        raise ConfigError(
            f"Rasters {undated[:3]} have no acquisition date while others do. Give every "
            "raster a date (ACQUISITION_DATE tag, YYYYMMDD in the file name, or 'imagery.dates')."
        )
    groups: dict[str, list[RasterSource]] = {}
    for date, source in zip(parsed, sources, strict=True):
        groups.setdefault(date, []).append(source)
    return [(date, groups[date]) for date in sorted(groups)]
