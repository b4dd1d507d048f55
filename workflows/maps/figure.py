"""``effect.png``: the effect map a reader can take in at a glance.

Diverging colours centred on zero (red raises the outcome, blue lowers it) with a colour bar
in the outcome's units, extrapolated cells hatched, nodata grey (never the white of zero), a latitude/longitude
graticule on a projected map, a scale bar, the trial's units (treated and control) and the
region's boundaries.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import shapely.geometry  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402
from pyproj import Transformer  # noqa: E402
from rasterio.features import shapes  # noqa: E402
from rasterio.transform import from_bounds  # noqa: E402
from shapely.plotting import patch_from_polygon  # noqa: E402

__all__ = ["NODATA", "effect_figure", "nice_step", "scale_length"]

NODATA = "#bdbdbd"


def nice_step(span: float, target: int = 4) -> float:
    """A 1-2-5 step giving about ``target`` intervals over ``span``."""
    raw = span / max(target, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return min((m * power for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))


def scale_length(width_m: float) -> float:
    """A round scale-bar length of about a fifth of the map's width, in metres."""
    return nice_step(width_m, 5)


def _degrees(value: float, pos: str, neg: str) -> str:
    hemi = pos if value >= 0 else neg
    text = f"{abs(value):.4f}".rstrip("0").rstrip(".")
    return f"{text}°{hemi}"


def _graticule(ax: plt.Axes, crs: str, extent: tuple[float, float, float, float]) -> None:
    left, right, bottom, top = extent
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    to_xy = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xs = np.linspace(left, right, 60)
    ys = np.linspace(bottom, top, 60)
    edge_lon, _ = to_ll.transform(xs, np.full_like(xs, bottom))
    _, edge_lat = to_ll.transform(np.full_like(ys, left), ys)
    lon0, lat0, lon1, lat1 = to_ll.transform_bounds(left, bottom, right, top)
    xticks, xlabels, yticks, ylabels = [], [], [], []
    step = nice_step(lon1 - lon0)
    for lon in np.arange(math.ceil(lon0 / step) * step, lon1, step):
        lx, ly = to_xy.transform(np.full(50, lon), np.linspace(lat0, lat1, 50))
        ax.plot(lx, ly, color="0.4", lw=0.5, ls=":", gid="graticule", zorder=3)
        if edge_lon.min() <= lon <= edge_lon.max():
            xticks.append(float(np.interp(lon, edge_lon, xs)))
            xlabels.append(_degrees(lon, "E", "W"))
    step = nice_step(lat1 - lat0)
    for lat in np.arange(math.ceil(lat0 / step) * step, lat1, step):
        lx, ly = to_xy.transform(np.linspace(lon0, lon1, 50), np.full(50, lat))
        ax.plot(lx, ly, color="0.4", lw=0.5, ls=":", gid="graticule", zorder=3)
        if edge_lat.min() <= lat <= edge_lat.max():
            yticks.append(float(np.interp(lat, edge_lat, ys)))
            ylabels.append(_degrees(lat, "N", "S"))
    ax.set_xticks(xticks, xlabels)
    ax.set_yticks(yticks, ylabels)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def _hatched(mask: np.ndarray, extent: tuple[float, float, float, float]) -> PatchCollection:
    """The ``True`` cells of ``mask`` as hatched polygons, one per connected patch.

    ``rasterio.features.shapes`` merges neighbouring cells, so the collection grows with the
    patches' outlines, not with the number of cells (a square per cell did).
    """
    rows, cols = mask.shape
    transform = from_bounds(extent[0], extent[2], extent[1], extent[3], cols, rows)
    polygons = [shapely.geometry.shape(geom) for geom, _ in
                shapes(mask.astype(np.uint8), mask=mask, transform=transform)]
    patches = [patch_from_polygon(p) for p in polygons]
    return PatchCollection(patches, hatch="////", facecolor="none", edgecolor="0.25",
                           linewidths=0.0, zorder=2, gid="extrapolation")


def effect_figure(
    path: str | Path, *, surface: np.ndarray | None, extent: tuple[float, float, float, float],
    crs: str, title: str, label: str, extrapolated: np.ndarray | None = None,
    cells: gpd.GeoDataFrame | None = None, units: gpd.GeoDataFrame | None = None,
    boundaries: list[gpd.GeoDataFrame] | None = None,
    areas: gpd.GeoDataFrame | None = None,
) -> Figure:
    """Draw and save the map; return the figure (closed for drawing, open for inspection).

    ``surface`` (rows, cols) fills ``extent`` = (left, right, bottom, top) in ``crs``; a list
    of places passes ``cells`` (points with ``cate``) instead. ``units`` has ``treatment``.
    ``areas`` (the aggregates: ``name``, ``mean_cate``, ``mean_cate_lo``/``_hi``) are
    labelled with their mean effect and interval, the number a reader quotes.
    """
    fig, ax = plt.subplots(figsize=(7.6, 6.4))
    ax.set_facecolor(NODATA)  # cells without imagery or outside the region: never white (zero)
    values = surface if surface is not None else (
        cells["cate"].to_numpy(dtype=float) if cells is not None else np.array([]))
    finite = np.abs(values[np.isfinite(values)])
    vmax = float(np.percentile(finite, 98)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    if surface is not None:
        image = ax.imshow(surface, extent=extent, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                          interpolation="nearest", interpolation_stage="data", zorder=1)
        if extrapolated is not None and extrapolated.any():
            ax.add_collection(_hatched(extrapolated, extent), autolim=False)
    else:
        image = ax.scatter(cells.geometry.x, cells.geometry.y, c=values, cmap="RdBu_r",
                           vmin=-vmax, vmax=vmax, s=40, edgecolors="k", linewidths=0.4, zorder=2)
    colorbar = fig.colorbar(image, ax=ax, shrink=0.82, label=label)
    colorbar.ax.axhline(0.0, color="k", lw=0.8)
    handles = []
    boundaries = [f for f in boundaries or [] if not f.geom_type.isin(["Point", "MultiPoint"]).all()]
    for frame in boundaries:
        frame.to_crs(crs).boundary.plot(ax=ax, color="0.15", lw=0.8, zorder=4, gid="boundary")
    if boundaries:
        handles.append(plt.Line2D([], [], color="0.15", lw=0.8, label="region boundaries"))
    if units is not None and len(units):
        pts = units.to_crs(crs)
        treated = pts["treatment"].to_numpy() == 1
        ax.scatter(pts.geometry.x[treated], pts.geometry.y[treated], s=9, marker="^",
                   c="#1b1b1b", linewidths=0, label="trial unit, treated", zorder=5)
        ax.scatter(pts.geometry.x[~treated], pts.geometry.y[~treated], s=9, marker="o",
                   facecolors="none", edgecolors="#1b1b1b", linewidths=0.6,
                   label="trial unit, control", zorder=5)
    if extrapolated is not None and extrapolated.any():
        handles.append(Patch(facecolor="white", edgecolor="0.25", hatch="////",
                             label="hatched: outside the trial's support"))
    handles.append(Patch(facecolor=NODATA, edgecolor="0.5", label="no data"))
    if areas is not None and len(areas):
        inside = areas.to_crs(crs)
        for point, row in zip(inside.geometry.representative_point(), inside.itertuples(),
                              strict=True):
            ax.annotate(f"{row.name}\n{row.mean_cate:.2f} [{row.mean_cate_lo:.2f}, "
                        f"{row.mean_cate_hi:.2f}]", (point.x, point.y), ha="center",
                        va="center", fontsize=7, zorder=6, gid="area-label",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8,
                              "lw": 0.4})
        handles.append(Patch(facecolor="white", edgecolor="0.4",
                             label="area: mean effect [95% interval]"))
    scatter_handles, _ = ax.get_legend_handles_labels()
    # Below the map, so it never hides cells.
    ax.legend(handles=scatter_handles + handles, loc="upper center", fontsize=7,
              framealpha=0.85, bbox_to_anchor=(0.5, -0.09), ncol=3)
    _graticule(ax, crs, extent)
    length = scale_length(extent[1] - extent[0])
    text = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.add_artist(AnchoredSizeBar(ax.transData, length, text, loc="lower right", pad=0.5,
                                  frameon=True, size_vertical=(extent[3] - extent[2]) / 150))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title, fontsize=11)
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend sits below the axes
    plt.close(fig)
    return fig
