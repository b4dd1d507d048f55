"""``effect.html``: an interactive Leaflet map (folium) that works with no network.

folium links Leaflet, jQuery and Bootstrap from CDNs; here those links are dropped and
Leaflet 1.9.3 (the version folium targets, vendored from the PyPI package django-leaflet
into ``vendor/``, BSD-2) is embedded inline, with its CSS images as data URIs. There is no
tile server: layers are images of the map warped to Web Mercator (so Leaflet places them
exactly), the trial's units, the aggregates and the targets, each with a popup.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import folium
import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from affine import Affine  # noqa: E402
from branca.element import Element  # noqa: E402
from rasterio.warp import (  # noqa: E402
    Resampling,
    calculate_default_transform,
    reproject,
    transform_bounds,
)

__all__ = ["LAYER_NAMES", "effect_html"]

LAYER_NAMES = {"effect": "Effect", "width": "Interval width", "support": "Extrapolation",
               "cluster_effect": "Image-cluster effect", "cluster": "Most likely image cluster",
               "units": "Trial units", "aggregates": "Aggregates", "targets": "Targets"}


# folium's popups build their content with jQuery's ``$(html)[0]``; this is all they need.
JQUERY_SHIM = ("window.$ = window.$ || function (markup) { var t = document.createElement("
               "'template'); t.innerHTML = String(markup).trim(); return [t.content.firstChild]; };")


def _vendor(name: str) -> str:
    return resources.files("eocausal.workflows.maps").joinpath("vendor", name).read_text()


def _to_mercator(surface: np.ndarray, transform: Affine, crs: str
                 ) -> tuple[np.ndarray, list[list[float]]]:
    rows, cols = surface.shape
    left, top = transform * (0, 0)
    right, bottom = transform * (cols, rows)
    dst_t, w, h = calculate_default_transform(crs, "EPSG:3857", cols, rows, left=left,
                                              bottom=bottom, right=right, top=top)
    out = np.full((h, w), np.nan, dtype=np.float32)
    reproject(surface.astype(np.float32), out, src_transform=transform, src_crs=crs,
              dst_transform=dst_t, dst_crs="EPSG:3857", resampling=Resampling.nearest,
              src_nodata=np.nan, dst_nodata=np.nan)
    x0, y1 = dst_t * (0, 0)
    x1, y0 = dst_t * (w, h)
    bounds = gpd.GeoSeries(gpd.points_from_xy([x0, x1], [y0, y1]), crs="EPSG:3857").to_crs(4326)
    return out, [[bounds.y[0], bounds.x[0]], [bounds.y[1], bounds.x[1]]]


def _png(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> str:
    # bytes=True: the colour map's own uint8 table, 4 bytes a pixel instead of 32
    rgba = plt.get_cmap(cmap)(np.clip((values - vmin) / (vmax - vmin or 1.0), 0, 1), bytes=True)
    rgba[~np.isfinite(values)] = 0
    buffer = io.BytesIO()
    plt.imsave(buffer, rgba, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _cluster_legend(k: int) -> str:
    cmap = plt.get_cmap("tab10")
    swatches = "".join(
        f'<span style="display:inline-block;width:10px;height:10px;margin-left:6px;'
        f'background:{matplotlib.colors.to_hex(cmap(i % 10))}"></span> {i + 1}' for i in range(k))
    return f'<div style="margin-top:4px">Most likely image cluster:{swatches}</div>'


def _title_box(title: str, label: str) -> str:
    return f"""
<div id="eocausal-title" style="position:absolute;top:10px;left:54px;z-index:1000;
 background:rgba(255,255,255,.92);padding:6px 10px;font:14px system-ui,sans-serif;
 border:1px solid #999;border-radius:4px;max-width:60%"><b>{html.escape(title)}</b>
 <div style="font-size:12px">{html.escape(label)}. Click a unit, area or target for its
 numbers; layers on the right.</div></div>"""


def _legend(label: str, vmax: float, width_max: float, n_clusters: int = 0,
            n_targets: int = 0) -> str:
    return f"""
<div id="eocausal-legend" style="position:absolute;bottom:24px;right:10px;z-index:1000;
 background:rgba(255,255,255,.92);padding:8px 10px;font:12px system-ui,sans-serif;
 border:1px solid #999;border-radius:4px;max-width:260px">
 <b>{html.escape(label)}</b>
 <div style="height:10px;margin:4px 0;background:linear-gradient(to right,#2166ac,#f7f7f7,#b2182b)"></div>
 <div style="display:flex;justify-content:space-between"><span>{-vmax:.3g}</span><span>0</span>
 <span>{vmax:.3g}</span></div>
 <div style="margin-top:6px">Interval width: 0 to {width_max:.3g} (viridis)</div>
 <div><span style="display:inline-block;width:10px;height:10px;background:#777"></span>
 Extrapolation: outside the trial's support</div>
 <div>&#9679; treated, &#9675; control trial units</div>
 {_cluster_legend(n_clusters) if n_clusters else ""}
 {f'<div><span style="color:#e6a700">&#9711;</span> the {n_targets} places to treat next '
  '(targets.csv)</div>' if n_targets else ""}</div>"""


def _points(data: gpd.GeoDataFrame, name: str, fields: list[str], aliases: list[str], *,
            radius: int, style) -> folium.GeoJson:
    """One GeoJSON layer of circle markers with popups (one element, not one per point)."""
    return folium.GeoJson(data.to_json(na="null"), name=name, style_function=style,
                          marker=folium.CircleMarker(radius=radius),
                          popup=folium.GeoJsonPopup(fields=fields, aliases=aliases))


def _scale(bands: dict[str, np.ndarray] | None, cells: gpd.GeoDataFrame | None
           ) -> tuple[np.ndarray, float, float]:
    """The effects shown, the colour scale's half-range and the widest interval."""
    if bands is not None:
        values, width = bands["cate"], bands["cate_hi"] - bands["cate_lo"]
    else:
        values = cells["cate"].to_numpy(dtype=float)
        width = (cells["cate_hi"] - cells["cate_lo"]).to_numpy(dtype=float)
    finite = np.abs(values[np.isfinite(values)]).astype(np.float64)
    vmax = float(np.percentile(finite, 98)) if finite.size else 1.0
    width_max = float(np.nanmax(width)) if np.isfinite(width).any() else 1.0
    return values, vmax or 1.0, width_max


def _raster_layers(bands: dict[str, np.ndarray], vmax: float, width_max: float,
                   n_clusters: int) -> Iterator[tuple[str, tuple]]:
    """Each image layer's raster and colouring, made one at a time (each is as large as
    the grid)."""
    yield "effect", (bands["cate"], "RdBu_r", -vmax, vmax, 0.85)
    yield "width", (bands["cate_hi"] - bands["cate_lo"], "viridis", 0.0, width_max, 0.85)
    yield "support", (np.where(bands["support"] == 0, np.float32(1.0), np.float32(np.nan)),
                      "Greys", 0.0, 1.6, 0.7)
    if n_clusters:
        stack = np.stack([bands[f"p_cluster_{k}"] for k in range(1, n_clusters + 1)])
        likely = np.where(np.isfinite(stack).all(axis=0),
                          np.nanargmax(np.nan_to_num(stack, nan=-1.0), axis=0), np.nan)
        del stack
        yield "cluster_effect", (bands["tau_cluster"], "RdBu_r", -vmax, vmax, 0.85)
        # tab10 over [0, 10): integer k lands on colour k, as in the legend
        yield "cluster", (likely + 0.5, "tab10", 0.0, 10.0, 0.85)


def effect_html(
    path: str | Path, *, title: str, label: str, bands: dict[str, np.ndarray] | None,
    transform: Affine | None, crs: str, bounds: tuple[float, float, float, float] | None = None,
    cells: gpd.GeoDataFrame | None = None, units: gpd.GeoDataFrame | None = None,
    aggregates: gpd.GeoDataFrame | None = None, targets: gpd.GeoDataFrame | None = None,
    max_units: int = 3000,
) -> Path:
    """Write the map with layers effect, interval width, extrapolation, units, aggregates.

    ``bands`` holds ``cate``, ``cate_lo``, ``cate_hi``, ``support`` (and the cluster
    model's) rasters on ``transform``, shown as image layers; a list of places passes
    ``bands=None`` and ``cells`` (points with ``cate``, ``cate_lo``, ``cate_hi``), drawn as
    circles. ``bounds`` (minx, miny, maxx, maxy in ``crs``) frames the map: by default the
    bounds of ``cells``.
    """
    if bands is None and cells is None:
        raise ValueError("effect_html needs the rasters ('bands') or the places ('cells').")
    # Bounds only: a lon/lat copy of every cell's geometry would grow with the grid.
    bounds = bounds if bounds is not None else tuple(cells.total_bounds)
    x0, y0, x1, y1 = transform_bounds(crs, "EPSG:4326", *bounds)
    fmap = folium.Map(location=[(y0 + y1) / 2, (x0 + x1) / 2], tiles=None, zoom_start=10,
                      control_scale=True)
    fmap.default_js, fmap.default_css = [], []
    header = fmap.get_root().header
    header.add_child(Element(f"<style>{_vendor('leaflet.css')}</style>"), name="leaflet_css")
    header.add_child(Element(f"<script>{_vendor('leaflet.js')}</script>"), name="leaflet_js")
    header.add_child(Element(f"<script>{JQUERY_SHIM}</script>"), name="jquery_shim")
    header.add_child(Element(f"<title>{html.escape(title)}</title>"), name="title")
    values, vmax, width_max = _scale(bands, cells)
    columns = bands if bands is not None else cells.columns
    n_clusters = sum(1 for c in columns if c.startswith("p_cluster_")
                     and c.rsplit("_", 1)[1].isdigit())
    if bands is not None and transform is not None:
        for key, (data, cmap, lo, hi, opacity) in _raster_layers(bands, vmax, width_max,
                                                                  n_clusters):
            warped, corners = _to_mercator(np.asarray(data, dtype=np.float32), transform, crs)
            del data
            folium.raster_layers.ImageOverlay(
                image=_png(warped, cmap, lo, hi), bounds=corners, name=LAYER_NAMES[key],
                opacity=opacity, show=key in ("effect", "support"), interactive=False,
                zindex=1,
            ).add_to(fmap)
            del warped
    else:  # a list of places: one coloured circle each
        lonlat = cells.to_crs(4326)
        cmap = plt.get_cmap("RdBu_r")
        colours = [matplotlib.colors.to_hex(cmap(np.clip((v + vmax) / (2 * vmax), 0, 1)))
                   if np.isfinite(v) else "#999999" for v in values]
        data = gpd.GeoDataFrame({"place": cells["unit_id"].astype(str).to_numpy(),
                                 "effect": np.round(values, 4),
                                 "low": cells["cate_lo"].astype(float).round(4).to_numpy(),
                                 "high": cells["cate_hi"].astype(float).round(4).to_numpy(),
                                 "colour": colours}, geometry=lonlat.geometry.to_numpy(), crs=4326)
        _points(data, LAYER_NAMES["effect"], ["place", "effect", "low", "high"],
                ["place", "effect", "95% low", "95% high"], radius=7,
                style=lambda f: {"color": "#222", "weight": 1, "fill": True, "fillOpacity": 0.9,
                                 "fillColor": f["properties"]["colour"]}).add_to(fmap)
    if units is not None and len(units):
        shown = units.to_crs(4326).head(max_units)
        data = gpd.GeoDataFrame({
            "unit": shown["unit_id"].astype(str).to_numpy(),
            "arm": np.where(shown["treatment"].to_numpy() == 1, "treated", "control"),
            "effect": (shown["cate"].astype(float).round(4).to_numpy() if "cate" in shown
                       else np.full(len(shown), np.nan)),
        }, geometry=shown.geometry.to_numpy(), crs=4326)
        _points(data, LAYER_NAMES["units"], ["unit", "arm", "effect"],
                ["unit", "arm", "estimated effect"], radius=3,
                style=lambda f: {"color": "#111", "weight": 1, "fill": True, "fillOpacity": 1.0,
                                 "fillColor": "#111" if f["properties"]["arm"] == "treated"
                                 else "#fff"}).add_to(fmap)
    if aggregates is not None and len(aggregates):
        data = aggregates.to_crs(4326).copy()
        fields = ["name", "n_cells", "mean_cate", "mean_cate_lo", "mean_cate_hi",
                  "share_extrapolated"]
        for column in fields[2:]:
            data[column] = data[column].astype(float).round(4)
        folium.GeoJson(
            data[[*fields, "geometry"]].to_json(na="null"), name=LAYER_NAMES["aggregates"],
            style_function=lambda _: {"color": "#222", "weight": 1.2, "fillOpacity": 0.0},
            popup=folium.GeoJsonPopup(fields=fields, aliases=[
                "name", "cells", "mean effect", "95% low", "95% high", "share extrapolated"]),
        ).add_to(fmap)
    if targets is not None and len(targets):
        data = targets.to_crs(4326)[["rank", "unit_id", "cate", "cate_lo", "cate_hi", "geometry"]]
        data = data.assign(**{c: data[c].astype(float).round(4) for c in ("cate", "cate_lo", "cate_hi")})
        _points(data, LAYER_NAMES["targets"], ["rank", "unit_id", "cate", "cate_lo", "cate_hi"],
                ["rank", "cell", "effect", "95% low", "95% high"], radius=6,
                style=lambda f: {"color": "#e6a700", "weight": 2, "fill": False}).add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    n_targets = 0 if targets is None else len(targets)
    fmap.get_root().html.add_child(Element(_legend(label, vmax, width_max, n_clusters, n_targets)))
    fmap.get_root().html.add_child(Element(_title_box(title, label)))
    fmap.fit_bounds([[y0, x0], [y1, x1]])
    page = fmap.get_root().render()
    remote = re.findall(r"<(?:script|link)[^>]+(?:src|href)=[\"']?(https?:[^\"' >]+)", page)
    if remote:
        raise RuntimeError(f"effect.html would load {remote[:3]} from the network.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
