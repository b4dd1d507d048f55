"""Imagery from a STAC catalog, collection, item or item collection (file or URL).

Each STAC item becomes one multi-band raster: a small GDAL VRT that stacks the item's
assets named in ``imagery.bands`` (asset keys, in that order) and carries the item's date
as ``ACQUISITION_DATE``. The VRT points at the assets themselves (COGs over HTTP through
``/vsicurl/``, or local files), so the rest of ingestion treats an item like any GeoTIFF:
a chip reads only the tiles under its window, items of one date form a mosaic, and dates
give the time axis. Assets of coarser resolution are placed on the item's finest grid with
nearest-neighbour (an integer upsampling that invents no values); assets in another CRS
are refused. odc-stac and stackstac load whole areas into xarray cubes; for point chips a
window read per unit (see ``pipeline.partition``) moves far fewer bytes, so they are not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from eocausal.pipeline.remote import REMOTE_GDAL_ENV, is_remote, remote_identity
from rasterio.errors import RasterioIOError

from eocausal.errors import ConfigError, InputFileError, RasterReadError

__all__ = ["is_stac", "stac_cache_dir", "stac_items", "stac_rasters"]

log = logging.getLogger(__name__)

STAC_TYPES = {"Catalog", "Collection", "Feature", "FeatureCollection"}
RASTER_MEDIA = ("image/tiff", "image/vnd.stac.geotiff", "application/x-geotiff")


def stac_cache_dir() -> Path:
    """Where item VRTs are written: ``$EOCAUSAL_CACHE/stac`` or ``~/.cache/eocausal/stac``."""
    root = os.environ.get("EOCAUSAL_CACHE") or Path.home() / ".cache" / "eocausal"
    return Path(root) / "stac"


def _load_json(href: str) -> dict | None:
    try:
        if href.startswith(("http://", "https://")):
            with urllib.request.urlopen(href, timeout=30) as response:  # noqa: S310
                return json.loads(response.read())
        return json.loads(Path(href).read_text())
    except (OSError, ValueError):
        return None


def is_stac(path: str | Path) -> bool:
    """Whether ``path`` (a .json file or URL) is a STAC catalog, collection or item(s)."""
    text = str(path)
    if not text.split("?", 1)[0].lower().endswith((".json", ".geojson")):
        return False
    doc = _load_json(text)
    if not isinstance(doc, dict) or doc.get("type") not in STAC_TYPES:
        return False
    if doc["type"] == "FeatureCollection":
        return any("stac_version" in f for f in doc.get("features", []))
    return "stac_version" in doc


def stac_items(href: str | Path) -> list:
    """Every item below a catalog/collection, or the items of an item (collection)."""
    import pystac

    text = str(href)
    doc = _load_json(text)
    if doc is None:
        raise InputFileError(f"STAC document '{text}' cannot be read. Check 'imagery.paths'.")
    if doc.get("type") == "FeatureCollection":
        collection = pystac.ItemCollection.from_dict(doc, preserve_dict=False)
        items = list(collection.items)
        for item in items:  # relative asset hrefs are relative to the collection file
            for asset in item.assets.values():
                if not _absolute(asset.href):
                    asset.href = _join(text, asset.href)
        return items
    obj = pystac.read_file(text)
    if isinstance(obj, pystac.Item):
        return [obj]
    return list(obj.get_items(recursive=True))


def _absolute(href: str) -> bool:
    return href.startswith(("/", "http://", "https://", "s3://", "gs://")) or "://" in href


def _join(base: str, href: str) -> str:
    if base.startswith(("http://", "https://")):
        from urllib.parse import urljoin

        return urljoin(base, href)
    return str((Path(base).resolve().parent / href).resolve())


def _item_date(item) -> str:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise ConfigError(f"STAC item '{item.id}' has no datetime; give it one or 'imagery.dates'.")
    return when.date().isoformat()


def _choose_assets(item, bands: Sequence[int | str] | None) -> list[tuple[str, str]]:
    if bands is None:
        keys = sorted(k for k, a in item.assets.items()
                      if (a.media_type or "").startswith(RASTER_MEDIA)
                      or "data" in (a.roles or []))
        if not keys:
            raise ConfigError(f"STAC item '{item.id}' has no GeoTIFF data assets; its assets "
                              f"are {sorted(item.assets)}. Name them in 'imagery.bands'.")
    else:
        keys = [str(b) for b in bands]
        missing = [k for k in keys if k not in item.assets]
        if missing:
            raise ConfigError(
                f"STAC item '{item.id}' has no asset(s) {missing}; its assets are "
                f"{sorted(item.assets)}. 'imagery.bands' names asset keys for STAC imagery."
            )
    return [(k, item.assets[k].get_absolute_href() or item.assets[k].href) for k in keys]


def _gdal_name(href: str) -> str:
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    return href


def _describe_asset(href: str) -> dict:
    try:
        with rasterio.Env(**REMOTE_GDAL_ENV), rasterio.open(_gdal_name(href)) as src:
            return {"crs": src.crs, "transform": src.transform, "width": src.width,
                    "height": src.height, "count": src.count, "dtype": src.dtypes[0],
                    "nodata": src.nodata}
    except RasterioIOError as exc:
        raise RasterReadError(f"STAC asset '{href}' cannot be opened as a raster ({exc}). "
                              "Check the URL and that it is a GeoTIFF/COG.") from exc


def _vrt(item, assets: list[tuple[str, str]]) -> str:
    """VRT XML stacking ``assets`` (key, href) on the finest grid among them."""
    infos = [_describe_asset(href) for _, href in assets]
    crss = {info["crs"].to_string() for info in infos}
    if len(crss) > 1:
        raise ConfigError(f"STAC item '{item.id}': assets {[k for k, _ in assets]} are in "
                          f"different CRSs {sorted(crss)}; choose assets on one grid.")
    ref = min(infos, key=lambda info: abs(info["transform"].a))
    inverse = ~ref["transform"]
    dtype = np.result_type(*[info["dtype"] for info in infos])
    gdal_type = _GDAL_TYPES[dtype.name]
    bands, n = [], 0
    for (key, href), info in zip(assets, infos, strict=True):
        x0, y0 = inverse @ (info["transform"] @ (0, 0))
        x1, y1 = inverse @ (info["transform"] @ (info["width"], info["height"]))
        for b in range(1, info["count"] + 1):
            n += 1
            name = key if info["count"] == 1 else f"{key}_{b}"
            nodata = "" if info["nodata"] is None else f"<NoDataValue>{info['nodata']}</NoDataValue>"
            bands.append(
                f'<VRTRasterBand dataType="{gdal_type}" band="{n}"><Description>{escape(name)}'
                f"</Description>{nodata}<SimpleSource><SourceFilename relativeToVRT=\"0\">"
                f"{escape(_gdal_name(href))}</SourceFilename><SourceBand>{b}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{info["width"]}" ySize="{info["height"]}"/>'
                f'<DstRect xOff="{x0:.10g}" yOff="{y0:.10g}" xSize="{x1 - x0:.10g}" '
                f'ySize="{y1 - y0:.10g}"/></SimpleSource></VRTRasterBand>')
    t = ref["transform"]
    remote = any(is_remote(href) for _, href in assets)
    identity = hashlib.sha256("\n".join(
        remote_identity(href) if is_remote(href) else f"{href}:{os.path.getmtime(href)}"
        for _, href in assets).encode()).hexdigest()
    meta = (f'<Metadata><MDI key="ACQUISITION_DATE">{_item_date(item)}</MDI>'
            f'<MDI key="STAC_ITEM">{escape(item.id)}</MDI>'
            f'<MDI key="EOCAUSAL_REMOTE">{"YES" if remote else "NO"}</MDI>'
            f'<MDI key="SOURCE_IDENTITY">{identity}</MDI></Metadata>')
    return (f'<VRTDataset rasterXSize="{ref["width"]}" rasterYSize="{ref["height"]}">'
            f"<SRS>{escape(ref['crs'].to_wkt())}</SRS>"
            f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
            f"{meta}{''.join(bands)}</VRTDataset>\n")


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def stac_rasters(href: str | Path, bands: Sequence[int | str] | None = None,
                 cache_dir: str | Path | None = None) -> list[str]:
    """One VRT per STAC item (assets ``bands`` stacked, item date attached), sorted by date.

    The VRT's name holds a hash of its content, so the same catalog gives the same files
    (and an ingestion over it resumes), while a changed asset gives a new one.
    """
    items = stac_items(href)
    if not items:
        raise InputFileError(f"STAC document '{href}' holds no items. Check 'imagery.paths'.")
    out_dir = Path(cache_dir) if cache_dir is not None else stac_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in sorted(items, key=lambda i: (_item_date(i), i.id)):
        xml = _vrt(item, _choose_assets(item, bands))
        digest = hashlib.sha256(xml.encode()).hexdigest()[:16]
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in item.id)
        path = out_dir / f"{safe}-{digest}.vrt"
        if not path.exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(xml)
            tmp.replace(path)
        paths.append(str(path))
    log.info("STAC '%s': %d item(s), assets %s", href, len(paths), list(bands or []))
    return paths
