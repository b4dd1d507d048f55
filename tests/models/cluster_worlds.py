"""Simulated worlds with planted image clusters, for the cluster-model tests and benchmark.

The simulator's CATE is ``BASE_ATE + heterogeneity * (cluster effect + smooth term)`` where
the smooth term (0.8 z_vegetation - 0.5 z_water) is of the same size as the gaps between
cluster effects and partly aligned with the clusters (:func:`simulator.world._effect_fields`).
``pure=True`` keeps the simulator's images, planted clusters and untreated outcomes but sets
each unit's effect to its cluster's effect (``World.cluster_effects``): the model's own
assumption, so recovery can be scored against a partition that exists. ``pure=False`` keeps
the simulator's outcomes as they are.
"""

from __future__ import annotations

import numpy as np
from eocausal.simulator.world import World, WorldSpec, make_world

from tests.models.worlds import window_features


def unit_chips(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's chip (N, T, C, H, W), normalised per band, and its factor maps (N, F, H, W)."""
    half = world.spec.chip_size // 2
    rows, cols = world.units["row"].to_numpy(), world.units["col"].to_numpy()
    scenes = world.scenes.astype(np.float32)
    chips = np.stack([scenes[:, :, r - half:r + half, c - half:c + half]
                      for r, c in zip(rows, cols, strict=True)])
    mean = chips.mean(axis=(0, 1, 3, 4), keepdims=True)
    sd = chips.std(axis=(0, 1, 3, 4), keepdims=True)
    factors = np.stack([world.factors[:, r - half:r + half, c - half:c + half]
                        for r, c in zip(rows, cols, strict=True)])
    return (chips - mean) / sd, factors


def planted_world(seed: int, *, n_units: int = 2000, n_clusters: int = 3,
                  heterogeneity: float = 2.0, noise: float = 0.5, scene_size: int = 512,
                  chip_size: int = 32, pure: bool = True, chips: bool = False) -> dict:
    """Features (or chips), treatment, outcome and the truth of a planted-cluster world."""
    spec = WorldSpec(n_units=n_units, scene_size=scene_size, chip_size=chip_size,
                     heterogeneity=heterogeneity, noise=noise, n_clusters=n_clusters, seed=seed)
    world = make_world(spec)
    units, truth = world.units, world.truth
    cluster = truth["cluster"].to_numpy()
    effects = np.asarray(world.cluster_effects)
    if pure:
        cate = effects[cluster]
        outcome = truth["y0"].to_numpy() + units["treatment"].to_numpy() * cate
    else:
        cate, outcome = truth["cate"].to_numpy(), units["outcome"].to_numpy()
    # the true effect of each cluster: the mean true CATE of its units (equal to
    # World.cluster_effects when pure)
    true_mu = np.array([cate[cluster == k].mean() if (cluster == k).any() else np.nan
                        for k in range(n_clusters)])
    out = {"world": world, "unit_ids": units["unit_id"].to_numpy(),
           "treatment": units["treatment"].to_numpy(), "outcome": outcome,
           "covariates": units[["x1", "x2"]].to_numpy(float), "cluster": cluster,
           "cate": cate, "ate": float(cate.mean()), "true_mu": true_mu,
           "features": window_features(world)}
    if chips:
        out["chips"], out["factors"] = unit_chips(world)
    return out
