"""Where cluster salience lands, over many planted worlds (the claim behind
tests/models/test_heterogeneity_salience.py).

Run: ``python -m benchmarks.salience_seeds --seeds 0-15``. Each seed plants two clusters in a
600-unit world; the factor whose chip coverage differs most between them (in sd) is that
seed's tied factor. A ``cnn`` cluster model is trained (60 epochs), and on the chips it
assigns to the cluster richer in the tied factor the median on/off salience ratio of each
factor is computed as in the test. Prints one markdown row per seed and a summary over the
seeds where the clusters were found (ARI > 0.75).
"""

from __future__ import annotations

import argparse

import numpy as np


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def one_seed(seed: int, epochs: int = 60) -> tuple[float, str, dict[str, float]]:
    """ARI, the tied factor and each factor's on/off salience ratio for one planted world."""
    from eocausal.models.heterogeneity.fit import fit_model, make_inputs
    from eocausal.models.heterogeneity.salience import cluster_salience
    from eocausal.models.heterogeneity.settings import ClustersSettings
    from eocausal.simulator.world import FACTOR_NAMES
    from sklearn.metrics import adjusted_rand_score

    from tests.models.cluster_worlds import planted_world
    from tests.models.test_heterogeneity_salience import _on_off_ratios, tied_factor

    w = planted_world(seed, n_units=600, n_clusters=2, scene_size=256, chip_size=16,
                      chips=True)
    tied = tied_factor(w)
    model = fit_model(make_inputs(w["unit_ids"], w["chips"], w["treatment"], w["outcome"]),
                      ClustersSettings(k=2, encoder="cnn", epochs=epochs, hidden=16))
    assigned = model.draws(w["chips"], n_draws=30).probs.mean(0).argmax(1) + 1
    ari = float(adjusted_rand_score(w["cluster"], assigned))
    if len(set(assigned)) < 2:
        return ari, tied, {}
    cover = w["factors"][:, FACTOR_NAMES.index(tied)].mean(axis=(1, 2))
    richer = max((1, 2), key=lambda k: cover[assigned == k].mean())
    rows = np.flatnonzero(assigned == richer)
    salience = cluster_salience(model, w["chips"][rows], richer)
    return ari, tied, _on_off_ratios(np.abs(salience).sum(axis=(1, 2)), w["factors"][rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0-15")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    found = []
    print("| seed | ARI | tied factor | built_up | vegetation | water | roads | highest |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in _seeds(args.seeds):
        ari, tied, ratios = one_seed(seed, args.epochs)
        peak = max(ratios, key=ratios.get) if ratios else "-"
        cells = " | ".join(f"{ratios.get(k, float('nan')):.2f}"
                           for k in ("built_up", "vegetation", "water", "roads"))
        print(f"| {seed} | {ari:.2f} | {tied} | {cells} | {peak} |", flush=True)
        if ari > 0.75:
            found.append((tied, ratios))
    if found:
        print(f"\nclusters found in {len(found)} seeds; the tied factor highest in "
              f"{sum(max(r, key=r.get) == t for t, r in found)}, its ratio > 1.5 in "
              f"{sum(r[t] > 1.5 for t, r in found)}")


if __name__ == "__main__":
    main()
