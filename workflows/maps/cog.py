"""Write effect surfaces as Cloud-Optimized GeoTIFFs and PNG figures.

GDAL's COG driver can only copy an existing dataset, so the surface is first written to an
in-memory GTiff and then copied with the COG driver; :func:`is_cog` checks the result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import rasterio.shutil  # noqa: E402
from affine import Affine  # noqa: E402
from rasterio.io import MemoryFile  # noqa: E402

__all__ = ["is_cog", "plot_surface", "validate_cog", "write_cog", "write_effect_cog"]

log = logging.getLogger(__name__)

COG_CACHE_MB = 16  # GDAL block cache while writing effect.tif


def write_cog(path: str | Path, surface: np.ndarray, *, transform: Affine, crs: str,
              description: str = "cate") -> Path:
    """Write a float32 single-band surface (NaN = no estimate) as a Cloud-Optimized GeoTIFF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(surface, dtype=np.float32)
    profile = {
        "driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1,
        "dtype": "float32", "crs": crs, "transform": transform, "nodata": np.nan,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data, 1)
            tmp.set_band_description(1, description)
        with mem.open() as tmp:
            rasterio.shutil.copy(tmp, str(path), driver="COG", compress="DEFLATE",
                                 blocksize=256, overview_resampling="average")
    return path


def write_effect_cog(path: str | Path, bands: Mapping[str, np.ndarray], *, transform: Affine,
                     crs: str, tags: Mapping[str, str] | None = None,
                     band_tags: Mapping[str, Mapping[str, str]] | None = None) -> Path:
    """Write named float32 bands (NaN = nodata) as one COG with rio-cogeo, then validate it.

    Band descriptions are the names; ``tags`` go to the dataset (for example the outcome's
    units), ``band_tags`` to each band. Overviews are averaged, blocks up to 256 x 256, DEFLATE.

    Raises
    ------
    RuntimeError
        If rio-cogeo's validator rejects the written file (a bug, not a user error).
    """
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(bands)
    height, width = np.shape(bands[names[0]])
    # Blocks of at most half the map, so even a small map gets an overview level.
    block = int(min(256, max(16, 16 * (min(height, width) // 32))))
    profile = {"driver": "GTiff", "height": height, "width": width, "count": len(names),
               "dtype": "float32", "crs": crs, "transform": transform, "nodata": np.nan,
               "tiled": True, "blockxsize": block, "blockysize": block}
    # The source and rio-cogeo's overview copy go to files beside the output and GDAL's block
    # cache is capped: held in memory (and in an uncapped cache) they took about ten times
    # the bands' size, 60 MB at 625 x 625 cells.
    source = path.with_name(f".{path.name}.src.tif")
    try:
        with rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB):
            with rasterio.open(source, "w", **profile) as tmp:
                for i, name in enumerate(names, start=1):  # band by band: no stack
                    tmp.write(np.asarray(bands[name], dtype=np.float32), i)
                    tmp.set_band_description(i, name)
                    tmp.update_tags(i, **dict((band_tags or {}).get(name, {})))
                tmp.update_tags(**dict(tags or {}))
            with rasterio.open(source) as src:
                out = cog_profiles.get("deflate")
                out.update(blockxsize=block, blockysize=block)
                cog_translate(src, str(path), out, overview_resampling="average", quiet=True,
                              in_memory=False, add_mask=False, forward_band_tags=True,
                              web_optimized=False, overview_level=None)
    finally:
        source.unlink(missing_ok=True)
    ok, errors, _ = validate_cog(path)
    if not ok:
        raise RuntimeError(f"'{path}' is not a valid COG: {errors}")
    return path


def validate_cog(path: str | Path) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's validator: (valid, errors, warnings)."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)


def is_cog(path: str | Path) -> bool:
    """True when GDAL reports the file's layout as COG (tiled, overviews before data)."""
    with rasterio.open(path) as src:
        return src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def plot_surface(
    path: str | Path,
    surface: np.ndarray,
    *,
    extent: tuple[float, float, float, float],
    title: str,
    points: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    label: str = "CATE",
) -> Path:
    """Save a PNG of the effect surface, with the trial's units and the true surface if known.

    ``extent`` is (left, right, bottom, top) in map units; ``points`` (N, 2) map x, y.
    """
    panels = 2 if truth is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.4), squeeze=False)
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in (surface, truth) if a is not None])
    vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    items = [(surface, title)] + ([(truth, "True CATE (simulation)")] if truth is not None else [])
    for ax, (data, name) in zip(axes[0], items, strict=True):
        image = ax.imshow(data, extent=extent, cmap="RdYlBu_r", vmin=vmin, vmax=vmax,
                          interpolation="nearest")
        if points is not None and len(points):
            ax.scatter(points[:, 0], points[:, 1], s=2, c="k", alpha=0.3, linewidths=0)
        ax.set_title(name)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.ticklabel_format(style="plain", useOffset=False)
        ax.tick_params(axis="x", labelrotation=30)
        fig.colorbar(image, ax=ax, label=label, shrink=0.85)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
