"""Coverage of the targeting gains' 95% intervals over many seeds, against a known truth.

Run: ``python -m benchmarks.targeting_coverage [--seeds 500]``. Each seed draws a trial of
``n`` units with known effects ``tau``, AIPW-like scores ``Gamma = tau + noise`` and held-out
priorities (``tau`` seen through independent noise), then checks whether the intervals of
:func:`eocausal.models.evaluation.targeting.evaluate_targeting` cover the rule's true gains:
in the sample (given its units and ranking) and in the population the units come from.
"""

from __future__ import annotations

import argparse

import numpy as np
from eocausal.models.evaluation.targeting import evaluate_targeting


def population_gain(share: float, n: int = 2_000_000) -> float:
    """The rule's gain over random in the population: treat the top share by priority."""
    rng = np.random.default_rng(12345)
    tau = 0.3 + np.maximum(rng.normal(size=n), 0)
    priorities = tau + rng.normal(0, 0.5, n)
    treat = priorities >= np.quantile(priorities, 1 - share)
    return float(np.mean(tau * (treat - share)))


def one(seed: int, n: int, share: float, clustered: bool,
        population: float) -> tuple[bool, bool, bool, bool]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    tau = 0.3 + np.maximum(x, 0)
    groups = None
    noise = rng.normal(0, 2.0, n)
    if clustered:
        groups = rng.integers(0, n // 20, n)
        noise = noise + rng.normal(0, 1.5, n // 20)[groups]
    scores = tau + noise
    priorities = tau + rng.normal(0, 0.5, n)
    result = evaluate_targeting(scores, priorities, share, clusters=groups)
    treat = np.zeros(n)
    treat[np.argsort(-priorities, kind="stable")[: int(round(share * n))]] = 1
    truth_random = np.mean(tau * (treat - share))
    truth_all = np.mean(tau * (treat - 1))
    lo, hi = result.interval("gain_vs_random")
    lo2, hi2 = result.interval("gain_vs_all")
    return lo <= truth_random <= hi, lo <= population <= hi, lo2 <= truth_all <= hi2, lo > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=500)
    args = parser.parse_args()
    print("| units | share treated | clustered | coverage, gain vs random (in sample) | "
          "coverage, gain vs random (population) | coverage, gain vs treat-all (in sample) | "
          "seeds with gain vs random > 0 |")
    print("|---|---|---|---|---|---|---|")
    for n, share, clustered in [(500, 0.2, False), (2000, 0.2, False), (2000, 0.5, False),
                                (2000, 0.2, True)]:
        population = population_gain(share)
        res = np.array([one(s, n, share, clustered, population) for s in range(args.seeds)])
        print(f"| {n:,} | {share:.0%} | {'yes' if clustered else 'no'} | {res[:, 0].mean():.3f} | "
              f"{res[:, 1].mean():.3f} | {res[:, 2].mean():.3f} | {res[:, 3].mean():.2f} |")


if __name__ == "__main__":
    main()
