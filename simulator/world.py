"""A synthetic world whose pixels carry known causal structure.

Four latent landscape factors (built-up, vegetation, water, roads), drawn as smooth random
fields, are rendered into reflectance and drive the outcome and (observational design) the
treatment; effects vary by landscape cluster plus a smooth term. So every estimate made from
the pixels can be checked against the truth. In memory only: :mod:`pipeline.simulate` writes.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import pandas as pd
from affine import Affine
from scipy import ndimage, special
from scipy.cluster import vq

from eocausal.errors import ConfigError

__all__ = ["BASE_ATE", "FACTOR_NAMES", "World", "WorldSpec", "band_names", "make_world",
           "true_cate_surface"]

FACTOR_NAMES: tuple[str, ...] = ("built_up", "vegetation", "water", "roads")
_BUILT, _VEG, _WATER, _ROADS = range(len(FACTOR_NAMES))
BASE_ATE = 1.0
_STREAMS = ("fields", "units", "effects", "treatment", "outcome", "sensor")

# Sentinel-2 bands: bare-soil reflectance, then the change per unit of built_up, vegetation,
# water, roads. Water is dark in NIR/SWIR, vegetation bright in NIR, built-up in VIS/SWIR.
_S2_SIGNATURES: dict[str, tuple[float, float, float, float, float]] = {
    "B01": (0.05, 0.08, -0.02, -0.01, 0.05),
    "B02": (0.06, 0.08, -0.03, -0.02, 0.05),
    "B03": (0.09, 0.08, 0.00, -0.04, 0.05),
    "B04": (0.12, 0.08, -0.07, -0.09, 0.05),
    "B05": (0.16, 0.07, -0.01, -0.12, 0.04),
    "B06": (0.19, 0.06, 0.12, -0.16, 0.03),
    "B07": (0.21, 0.05, 0.20, -0.18, 0.02),
    "B08": (0.22, 0.04, 0.25, -0.19, 0.00),
    "B8A": (0.23, 0.04, 0.25, -0.20, 0.00),
    "B09": (0.20, 0.03, 0.12, -0.18, 0.00),
    "B11": (0.28, 0.08, -0.06, -0.26, 0.04),
    "B12": (0.22, 0.10, -0.10, -0.20, 0.05),
}
# Bands taken first when fewer than 12 are asked for: RGB, then NIR, then SWIR, ...
_BAND_PRIORITY = ("B02", "B03", "B04", "B08", "B11", "B12", "B05", "B06", "B07", "B8A",
                  "B01", "B09")
_SENSOR_SD = 0.005  # reflectance units, times ``noise``
_PHENOLOGY_AMPLITUDE = 0.4


def _fail(name: str, value: object, allowed: str) -> NoReturn:
    raise ConfigError(f"WorldSpec.{name} must be {allowed}. Got {value!r} instead.")


_INTS = {  # field: (min, max or None); scene_size's minimum also depends on chip_size
    "n_units": (2, None), "chip_size": (2, 1024), "scene_size": (16, 8192),
    "n_bands": (1, 12), "n_dates": (1, 1000), "n_clusters": (1, 100),
    "date_step_days": (1, 3660), "seed": (0, None),
}
_FLOATS = {  # field: (min, max, open interval)
    "pixel_size": (0.0, math.inf, True), "confounding": (0.0, 100.0, False),
    "heterogeneity": (0.0, 100.0, False), "noise": (0.0, 100.0, False),
    "treated_fraction": (0.0, 1.0, True),
}


def _check_int(name: str, value: object, lo: int, hi: int | None) -> int:
    bad = isinstance(value, bool) or not isinstance(value, numbers.Integral)
    if bad or value < lo or (hi is not None and value > hi):
        _fail(name, value, f"an int in the range [{lo}, {'inf' if hi is None else hi}]")
    return int(value)


def _check_float(name: str, value: object, lo: float, hi: float, open_: bool) -> float:
    left, right = "()" if open_ else "[]"
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if not (ok and (lo < value < hi if open_ else lo <= value <= hi)):
        _fail(name, value, f"a finite float in the range {left}{lo}, {hi}{right}")
    return float(value)


@dataclass(frozen=True)
class WorldSpec:
    """Settings of a synthetic world, validated on construction (:class:`ConfigError`).

    ``design="rct"`` treats with probability ``treated_fraction`` (``confounding`` unused);
    ``"observational"`` raises the logit of treatment by ``confounding`` times built-up area
    and roads, which also raise the untreated outcome. ``chip_size`` is the window (pixels)
    whose factor means define a unit's landscape; ``scene_size >= 2 * chip_size``.
    """

    n_units: int = 2000
    scene_size: int = 512
    pixel_size: float = 10.0
    n_bands: int = 6
    n_dates: int = 1
    design: str = "rct"
    confounding: float = 1.0
    heterogeneity: float = 1.0
    noise: float = 1.0
    n_clusters: int = 3
    chip_size: int = 32
    treated_fraction: float = 0.5
    crs: str = "EPSG:32636"
    origin: tuple[float, float] = (450000.0, 50000.0)
    start_date: str = "2021-01-15"
    date_step_days: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (lo, hi) in _INTS.items():
            if name == "scene_size":
                lo = max(lo, 2 * self.chip_size)
            object.__setattr__(self, name, _check_int(name, getattr(self, name), lo, hi))
        for name, bounds in _FLOATS.items():
            object.__setattr__(self, name, _check_float(name, getattr(self, name), *bounds))
        if self.design not in ("rct", "observational"):
            _fail("design", self.design, "one of 'rct', 'observational'")
        self._check_geo()
        try:
            dt.date.fromisoformat(str(self.start_date))
        except ValueError:
            _fail("start_date", self.start_date, "an ISO date such as '2021-01-15'")

    def _check_geo(self) -> None:
        import pyproj  # validation only; kept local so the module stays numpy/scipy
        try:
            ok = pyproj.CRS.from_user_input(self.crs).is_projected
        except (pyproj.exceptions.CRSError, TypeError):
            ok = False
        if not ok:
            _fail("crs", self.crs, "a projected CRS in metres, such as 'EPSG:32636'")
        try:
            x, y = (float(v) for v in self.origin)
            ok = math.isfinite(x) and math.isfinite(y)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            _fail("origin", self.origin, "a pair of finite floats (left x, top y)")
        object.__setattr__(self, "origin", (x, y))

    @property
    def dates(self) -> list[str]:
        """ISO acquisition dates, ``n_dates`` of them ``date_step_days`` apart."""
        start, step = dt.date.fromisoformat(self.start_date), dt.timedelta(self.date_step_days)
        return [(start + t * step).isoformat() for t in range(self.n_dates)]

    @property
    def transform(self) -> Affine:
        """North-up affine transform of the scene grid."""
        x0, y0 = self.origin
        return Affine(self.pixel_size, 0.0, x0, 0.0, -self.pixel_size, y0)


@dataclass(frozen=True, eq=False)
class World:
    """A simulated world: factor fields, rendered scenes, units and their true effects.

    ``factors`` is (F, H, W) float32 in [0, 1] in the order of :data:`FACTOR_NAMES`;
    ``scenes`` is (T, C, H, W) uint16 reflectance x 10000 with 0 reserved as nodata;
    ``cluster_effects[k]`` is the CATE of a cluster-k unit whose smooth term is zero.
    """

    spec: WorldSpec
    factors: np.ndarray
    scenes: np.ndarray
    dates: list[str]
    band_names: tuple[str, ...]
    transform: Affine
    units: pd.DataFrame
    truth: pd.DataFrame
    ate: float
    naive_difference_in_means: float
    cluster_effects: tuple[float, ...]
    factor_names: tuple[str, ...] = field(default=FACTOR_NAMES)


def band_names(n_bands: int) -> tuple[str, ...]:
    """Sentinel-2 names of the ``n_bands`` simulated bands, in wavelength order.

    Six bands give ``B02 B03 B04 B08 B11 B12``; fewer keep RGB first (3: RGB, 4: RGB+NIR);
    more add red-edge, ``B8A``, ``B01`` and ``B09`` up to all 12.
    """
    chosen = _BAND_PRIORITY[:_check_int("n_bands", n_bands, 1, 12)]
    return tuple(name for name in _S2_SIGNATURES if name in chosen)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(_STREAMS, children, strict=True)}


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Standardized Gaussian random field with correlation length ``sigma`` pixels."""
    smooth = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="reflect")
    return (smooth - smooth.mean()) / smooth.std()


def _roads(rng: np.random.Generator, size: int) -> np.ndarray:
    """A few straight road segments, anti-aliased and slightly blurred, in [0, 1]."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    road = np.zeros((size, size))
    for _ in range(max(2, size // 128)):
        start, angle = rng.uniform(0, size, 2), rng.uniform(0, np.pi)
        length, half_width = rng.uniform(0.5, 1.5) * size, rng.uniform(1.0, 2.0)
        direction = np.array([np.sin(angle), np.cos(angle)])
        rel_r, rel_c = rows - start[0], cols - start[1]
        along = np.clip(rel_r * direction[0] + rel_c * direction[1], -length / 2, length / 2)
        dist = np.hypot(rel_r - along * direction[0], rel_c - along * direction[1])
        road = np.maximum(road, np.clip(half_width + 0.5 - dist, 0.0, 1.0))
    return np.clip(ndimage.gaussian_filter(road, 0.75), 0.0, 1.0)


def _make_factors(spec: WorldSpec, rng: np.random.Generator) -> np.ndarray:
    """Latent factors (F, H, W) float32; length scales are tied to ``chip_size``."""
    size, chip = spec.scene_size, spec.chip_size
    built = special.expit(2.5 * (_smooth_field(rng, size, 0.75 * chip) - 0.5))
    water = special.expit(6.0 * (_smooth_field(rng, size, 1.0 * chip) - 1.0))
    roads = _roads(rng, size)
    greenness = special.ndtr(0.8 * _smooth_field(rng, size, 0.4 * chip) + 0.3)
    vegetation = greenness * (1 - built) * (1 - water) * (1 - roads)
    return np.stack([built, vegetation, water, roads]).astype(np.float32)


def _render(spec: WorldSpec, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reflectance scenes (T, C, H, W) uint16: base + signature @ factors + sensor noise."""
    sig = np.array([_S2_SIGNATURES[b] for b in band_names(spec.n_bands)])
    start, size = dt.date.fromisoformat(spec.start_date), spec.scene_size
    scenes = np.empty((spec.n_dates, spec.n_bands, size, size), dtype=np.uint16)
    for t, date in enumerate(spec.dates):
        days = (dt.date.fromisoformat(date) - start).days
        season = 1.0 + _PHENOLOGY_AMPLITUDE * np.sin(2 * np.pi * days / 365.25)
        loads = factors.astype(np.float64) * np.array([1.0, season, 1.0, 1.0])[:, None, None]
        refl = sig[:, 0, None, None] + np.tensordot(sig[:, 1:], loads, axes=1)
        refl += spec.noise * _SENSOR_SD * rng.standard_normal(refl.shape)
        scenes[t] = np.clip(np.rint(refl * 10000), 1, 10000).astype(np.uint16)
    return scenes


def _interior(spec: WorldSpec) -> tuple[int, int]:
    """Inclusive range of pixel rows/cols where a unit's whole chip lies in the scene."""
    half = math.ceil(spec.chip_size / 2)
    return half, spec.scene_size - half - 1


def _landscape(spec: WorldSpec, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chip-window factor means (F, H, W) and the same standardized over the interior."""
    means = np.stack([ndimage.uniform_filter(f.astype(np.float64), spec.chip_size,
                                             mode="reflect") for f in factors])
    lo, hi = _interior(spec)
    inner = means[:, lo:hi + 1, lo:hi + 1].reshape(len(factors), -1)
    sd = np.maximum(inner.std(axis=1), 1e-12)
    return means, (means - inner.mean(axis=1)[:, None, None]) / sd[:, None, None]


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for points of shape (F, ...)."""
    d2 = [((points - c.reshape((-1,) + (1,) * (points.ndim - 1))) ** 2).sum(axis=0)
          for c in centroids]
    return np.argmin(np.stack(d2), axis=0)


def _centroids(spec: WorldSpec, zstd: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """K centroids in standardized factor space: k-means on interior pixels, so none is empty."""
    lo, hi = _interior(spec)
    pix = rng.integers(lo, hi + 1, size=(2, 4000))
    with warnings.catch_warnings(action="ignore"):  # a rare empty cluster keeps its centroid
        cents, _ = vq.kmeans2(zstd[:, pix[0], pix[1]].T, spec.n_clusters, iter=20,
                              minit="++", seed=rng)
    return cents


def _effect_fields(spec: WorldSpec, zstd: np.ndarray) -> tuple[np.ndarray, ...]:
    """True CATE and cluster at every pixel, and the per-cluster effects."""
    rng = _streams(spec.seed)["effects"]
    cents = _centroids(spec, zstd, rng)
    # cluster effects spread over [-1, 2], shuffled so no landscape always wins
    taus = rng.permutation(np.linspace(-1.0, 2.0, spec.n_clusters))
    cluster = _nearest(zstd, cents)
    lo, hi = _interior(spec)
    share = np.bincount(cluster[lo:hi + 1, lo:hi + 1].ravel(), minlength=len(taus))
    centred = taus - (share / share.sum()) @ taus  # interior-pixel mean of CATE is BASE_ATE
    smooth = 0.8 * zstd[_VEG] - 0.5 * zstd[_WATER]
    cate = BASE_ATE + spec.heterogeneity * (centred[cluster] + smooth)
    return cate, cluster, BASE_ATE + spec.heterogeneity * centred


def true_cate_surface(world_or_fields: World | np.ndarray,
                      spec: WorldSpec | None = None) -> np.ndarray:
    """True CATE at every pixel, as if a unit stood there.

    The units' ``truth.cate`` are read off this surface, so the two agree exactly at unit
    pixels. Near the edge (within ``chip_size/2``) the landscape window is mirrored.

    Parameters
    ----------
    world_or_fields : World or ndarray of shape (4, scene_size, scene_size)
        A world, or its factor fields (float32, as in ``World.factors``).
    spec : WorldSpec, optional
        Required with fields; defaults to ``world.spec`` with a world.

    Returns
    -------
    cate : ndarray of shape (scene_size, scene_size), float64

    Raises
    ------
    ConfigError
        If fields come without a spec or their shape does not match it.
    """
    if isinstance(world_or_fields, World):
        spec = world_or_fields.spec if spec is None else spec
        world_or_fields = world_or_fields.factors
    factors = np.asarray(world_or_fields)
    if spec is None:
        raise ConfigError("true_cate_surface needs a WorldSpec when given factor fields; "
                          "pass spec=WorldSpec(...) or the World itself.")
    shape = (len(FACTOR_NAMES), spec.scene_size, spec.scene_size)
    if factors.shape != shape:
        raise ConfigError(f"Factor fields must have shape {shape} to match the spec. "
                          f"Got {factors.shape} instead.")
    return _effect_fields(spec, _landscape(spec, factors)[1])[0]


def _place_units(spec: WorldSpec, rng: np.random.Generator) -> pd.DataFrame:
    """Unit ids, pixel and map coordinates, and tabular covariates (x3 added later)."""
    (lo, hi), n = _interior(spec), spec.n_units
    # pixel index + an offset kept away from pixel edges, so rowcol(x, y) is stable
    row_f = rng.integers(lo, hi + 1, n) + rng.uniform(0.1, 0.9, n)
    col_f = rng.integers(lo, hi + 1, n) + rng.uniform(0.1, 0.9, n)
    x, y = spec.transform @ (col_f, row_f)
    return pd.DataFrame({
        "unit_id": [f"U{i:0{max(5, len(str(n)))}d}" for i in range(1, n + 1)],
        "x": x, "y": y,
        "row": np.floor(row_f).astype(np.int64), "col": np.floor(col_f).astype(np.int64),
        "x1": rng.standard_normal(n), "x2": rng.binomial(1, 0.5, n).astype(np.int64),
    })


def _propensity(spec: WorldSpec, zu: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """P(T=1): constant in an RCT; rising with built-up and roads when observational."""
    if spec.design == "rct":
        return np.full(x1.shape, spec.treated_fraction)
    score = zu[_BUILT] + zu[_ROADS]
    score = (score - score.mean()) / (score.std() or 1.0)
    return np.clip(special.expit(spec.confounding * score + 0.25 * x1), 0.05, 0.95)


def make_world(spec: WorldSpec | None = None) -> World:
    """Simulate a world with known effects from ``spec`` (default ``WorldSpec()``).

    Same seed, same world: each stage draws from its own ``SeedSequence.spawn`` stream.

    Returns
    -------
    world : World
        ``units`` (unit_id, x, y, row, col, treatment, outcome, x1, x2, x3) is what a study
        would see; ``truth`` (unit_id, cate, cluster, y0, y1, propensity, z_<factor>) is not.
    """
    spec = WorldSpec() if spec is None else spec
    rngs = _streams(spec.seed)
    factors = _make_factors(spec, rngs["fields"])
    scenes = _render(spec, factors, rngs["sensor"])
    means, zstd = _landscape(spec, factors)
    cate_field, cluster_field, cluster_effects = _effect_fields(spec, zstd)
    units = _place_units(spec, rngs["units"])
    rows, cols = units["row"].to_numpy(), units["col"].to_numpy()
    zu = zstd[:, rows, cols]
    units["x3"] = zu[_BUILT] + 0.7 * rngs["units"].standard_normal(len(units))
    x1 = units["x1"].to_numpy()
    y0 = (1.0 + 2.0 * zu[_BUILT] + 1.0 * zu[_ROADS] - 1.0 * zu[_WATER] + 0.5 * x1
          + spec.noise * rngs["outcome"].standard_normal(len(units)))
    cate = cate_field[rows, cols]
    y1, propensity = y0 + cate, _propensity(spec, zu, x1)
    treatment = (rngs["treatment"].uniform(size=len(units)) < propensity).astype(np.int64)
    outcome = np.where(treatment == 1, y1, y0)
    units.insert(5, "treatment", treatment)
    units.insert(6, "outcome", outcome)

    truth = pd.DataFrame({"unit_id": units["unit_id"], "cate": cate,
                          "cluster": cluster_field[rows, cols].astype(np.int64),
                          "y0": y0, "y1": y1, "propensity": propensity})
    for name, values in zip(FACTOR_NAMES, means[:, rows, cols], strict=True):
        truth[f"z_{name}"] = values
    for array in (factors, scenes):
        array.flags.writeable = False
    # naive contrast of treated and control means; NaN when a group is empty
    both = 0 < treatment.sum() < len(treatment)
    naive = outcome[treatment == 1].mean() - outcome[treatment == 0].mean() if both else np.nan
    return World(spec=spec, factors=factors, scenes=scenes, dates=spec.dates,
                 band_names=band_names(spec.n_bands), transform=spec.transform, units=units,
                 truth=truth, ate=float(cate.mean()), naive_difference_in_means=float(naive),
                 cluster_effects=tuple(float(c) for c in cluster_effects))
