"""The simulation kit's grid: bias removed, coverage and RMSE against pixel size, confounder
visibility, sample size and design.

Run ``python -m benchmarks.simulation_kit --seeds 10 [--scheduler ADDRESS] [--workers N]``.
The main grid is pixel size (10, 20, 40, 80, 160 m) x visibility (1, 0.5, 0) at 1,000 units of
an observational study; a second grid crosses sample size (500, 2,000) with design
(observational, trial) at 10 and 80 m, fully visible. Writes ``simulation_kit.csv`` (per study),
``simulation_kit_summary.csv`` and ``simulation_kit.png`` into ``benchmarks/`` and prints the
tables in markdown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from eocausal.workflows.simkit import (
    markdown_table,
    plot_grid,
    run_grid,
    simulation_grid,
    summarise_grid,
)

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--scheduler", default="local")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    seeds = range(args.seeds)
    specs = simulation_grid(seeds=seeds) + simulation_grid(
        pixel_sizes=(10, 80), visibilities=(1.0,), n_units=(500, 2000),
        designs=("observational", "rct"), seeds=seeds)
    start = time.time()
    rows = run_grid(specs, scheduler=args.scheduler, workers=args.workers)
    summary = summarise_grid(rows)
    rows.to_csv(args.out / "simulation_kit.csv", index=False)
    summary.to_csv(args.out / "simulation_kit_summary.csv", index=False)
    plot_grid(summary[summary["n_units"] == 1000], args.out / "simulation_kit.png")
    print(f"{len(specs)} studies, {time.time() - start:.0f} s\n")
    main_grid = summary[(summary["n_units"] == 1000) & (summary["design"] == "observational")]
    cols = ["visibility", "pixel_size", "method", "bias_removed", "bias_removed_lo",
            "bias_removed_hi", "coverage", "rmse"]
    print(markdown_table(main_grid[cols], 2))
    other = summary[summary["n_units"] != 1000]
    print()
    print(markdown_table(other[["design", "n_units", "pixel_size", "method", "bias_removed",
                                "coverage", "coverage_lo", "coverage_hi", "rmse"]], 2))


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
