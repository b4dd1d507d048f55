"""Run every benchmark in turn (``make bench``); each prints a markdown table.

The coverage simulation (about 15 minutes) is left out; run it with
``python -m benchmarks.coverage_simulation --seeds 50``; so is the simulation kit's grid
(about 30 minutes on 2 cores): ``python -m benchmarks.simulation_kit --seeds 10``.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ["benchmarks.bench_ceiling"],  # what a second process can gain here, for the rest
    ["benchmarks.bench_ingest"],
    ["benchmarks.bench_encoders", "--threads", "1"],
    ["benchmarks.bench_estimators"],
    ["benchmarks.bench_panel", "--seeds", "20"],
    ["benchmarks.bench_clusters", "--part", "speed"],  # recovery/auto: --part, about 1 h each
]

if __name__ == "__main__":
    for module in BENCHMARKS:
        print(f"\n## python -m {' '.join(module)}\n", flush=True)
        subprocess.run([sys.executable, "-m", *module], check=True)
