"""Confounders the pixels show fully, partly or not at all, and coarser pixels of one world.

Two knobs of the simulation kit (:mod:`eocausal.workflows.simkit`), after Jerzak, Johansson
and Daoud: :func:`confounded_outcomes` draws treatment and outcome from a confounder
``C = sqrt(v) b + sqrt(1 - v) h``, where ``b`` is the unit's standardized built-up share
(which the scene renders) and ``h`` a trait no pixel shows, so ``visibility`` ``v`` moves the
confounder from fully visible (1) to invisible (0) at a fixed confounding strength;
:func:`degrade_scene` block-averages a scene to a coarser pixel and repeats it back onto the
original grid, so the same chip windows see the same place at a lower resolution.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from eocausal.simulator.world import World
from scipy import special

from eocausal.errors import ConfigError

__all__ = ["confounded_outcomes", "degrade_scene"]


def degrade_scene(scene: np.ndarray, factor: int) -> np.ndarray:
    """Block-average ``scene`` (C, H, W) over ``factor`` x ``factor`` pixels, back on its grid.

    ``factor=1`` returns the scene as float32; H and W must be multiples of ``factor``.
    """
    c, h, w = scene.shape
    if factor < 1 or h % factor or w % factor:
        raise ConfigError(f"degrade factor must be a positive divisor of the scene size "
                          f"{h} x {w}. Got {factor!r} instead.")
    x = np.asarray(scene, dtype=np.float32)
    if factor == 1:
        return x
    coarse = x.reshape(c, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return np.repeat(np.repeat(coarse, factor, axis=1), factor, axis=2)


def confounded_outcomes(world: World, *, visibility: float = 1.0, confounding: float = 1.5,
                        noise: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Treatment and outcome of ``world``'s units with a confounder of given visibility.

    ``P(T=1) = clip(expit(confounding * C + 0.25 x1), 0.05, 0.95)``;
    ``Y0 = 1 + 2 C + 0.5 x1 + noise e``; ``Y1 = Y0 + cate`` (the world's true effects).
    ``confounding=0`` is a trial with assignment probability one half.

    Returns
    -------
    units : DataFrame
        ``unit_id``, ``treatment``, ``outcome``, ``x1``, ``cate``, ``propensity``, ``confounder``.
    """
    if not 0.0 <= visibility <= 1.0:
        raise ConfigError(f"visibility must be in [0, 1]. Got {visibility!r} instead.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 29]))
    built = world.truth["z_built_up"].to_numpy()
    built = (built - built.mean()) / (built.std() or 1.0)
    hidden = rng.standard_normal(built.size)
    confounder = math.sqrt(visibility) * built + math.sqrt(1 - visibility) * hidden
    x1 = world.units["x1"].to_numpy()
    propensity = np.clip(special.expit(confounding * confounder + 0.25 * x1), 0.05, 0.95)
    if confounding == 0:
        propensity = np.full(built.size, 0.5)
    treatment = (rng.uniform(size=built.size) < propensity).astype(np.int64)
    cate = world.truth["cate"].to_numpy()
    y0 = 1.0 + 2.0 * confounder + 0.5 * x1 + noise * rng.standard_normal(built.size)
    outcome = np.where(treatment == 1, y0 + cate, y0)
    return pd.DataFrame({"unit_id": world.units["unit_id"].to_numpy(), "treatment": treatment,
                         "outcome": outcome, "x1": x1, "cate": cate, "propensity": propensity,
                         "confounder": confounder})
