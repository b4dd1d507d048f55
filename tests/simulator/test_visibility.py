"""The simulation kit's knobs: confounder visibility and block-averaged coarser pixels."""

from __future__ import annotations

import numpy as np
import pytest
from eocausal.simulator.visibility import confounded_outcomes, degrade_scene
from eocausal.simulator.world import WorldSpec, make_world

from eocausal.errors import ConfigError


@pytest.fixture(scope="module")
def world():
    return make_world(WorldSpec(n_units=600, scene_size=128, chip_size=8, n_bands=4, seed=2))


def test_degrade_scene_block_means_equal_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 10000, size=(2, 8, 8)).astype(np.uint16)
    coarse = degrade_scene(scene, 4)
    assert coarse.shape == scene.shape
    assert coarse[1, 0, 0] == pytest.approx(scene[1, :4, :4].mean())
    assert coarse[0, 7, 5] == pytest.approx(scene[0, 4:, 4:].mean())
    np.testing.assert_array_equal(degrade_scene(scene, 1), scene.astype(np.float32))
    with pytest.raises(ConfigError, match="positive divisor of the scene size 8 x 8"):
        degrade_scene(scene, 3)


def test_visibility_moves_the_confounder_from_the_pixels_to_a_hidden_trait(world) -> None:
    built = world.truth["z_built_up"].to_numpy()
    seen = confounded_outcomes(world, visibility=1.0, seed=1)["confounder"]
    hidden = confounded_outcomes(world, visibility=0.0, seed=1)["confounder"]
    half = confounded_outcomes(world, visibility=0.5, seed=1)["confounder"]
    assert np.corrcoef(seen, built)[0, 1] == pytest.approx(1.0)
    assert abs(np.corrcoef(hidden, built)[0, 1]) < 0.15
    assert 0.6 < np.corrcoef(half, built)[0, 1] < 0.8  # sqrt(0.5) = 0.71


def test_confounding_raises_uptake_and_outcome_with_the_world_effects(world) -> None:
    units = confounded_outcomes(world, visibility=1.0, confounding=1.5, seed=0)
    treated = units["treatment"] == 1
    assert units.loc[treated, "confounder"].mean() - units.loc[~treated, "confounder"].mean() > 0.8
    np.testing.assert_array_equal(units["cate"], world.truth["cate"])
    trial = confounded_outcomes(world, confounding=0.0, seed=0)
    assert (trial["propensity"] == 0.5).all()
    again = confounded_outcomes(world, visibility=1.0, confounding=1.5, seed=0)
    np.testing.assert_array_equal(units["outcome"], again["outcome"])
    with pytest.raises(ConfigError, match=r"visibility must be in \[0, 1\]"):
        confounded_outcomes(world, visibility=2.0)
