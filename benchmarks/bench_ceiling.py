"""What a second process can gain on this machine, by kind of work: the ceiling for 2 workers.

Ingestion tasks copy chunk-sized arrays (block reads sliced into chips) and write them to
the page cache; when two processes run such work at once they share the memory bus and the
kernel's page allocator, not only the cores. This runs the same fixed work in one process
and in two at once (forked, best of 3) and prints the speed-up of two over one:

    python -m benchmarks.bench_ceiling
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 8 << 20  # an ingestion chunk: ~8 MiB of pixels


def pure_python(n: int = 40_000_000) -> None:
    total = 0
    for i in range(n):
        total += i


def numpy_copies(n: int = 3_000) -> None:
    a = np.ones(CHUNK, dtype=np.uint8)
    b = np.empty_like(a)
    for _ in range(n):
        np.copyto(b, a)


def file_writes(n: int = 300) -> None:
    data = np.ones(CHUNK, dtype=np.uint8).tobytes()
    with tempfile.TemporaryDirectory(prefix="ceiling_") as tmp:
        for i in range(n):
            (Path(tmp) / f"{i % 4}.bin").write_bytes(data)


def _wall(work, processes: int) -> float:
    jobs = [mp.get_context("fork").Process(target=work) for _ in range(processes)]
    start = time.perf_counter()
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    return time.perf_counter() - start


def main() -> int:
    if "fork" not in mp.get_all_start_methods():
        print("needs the fork start method", file=sys.stderr)
        return 1
    print(f"{os.cpu_count()} CPUs")
    print("| work (same amount per process) | 1 process (s) | 2 at once (s) | speed-up of 2 |")
    print("|---|---|---|---|")
    for name, work in [("pure Python loop", pure_python), ("numpy copies of 8 MiB", numpy_copies),
                       ("8 MiB file writes (page cache)", file_writes)]:
        one = min(_wall(work, 1) for _ in range(3))
        two = min(_wall(work, 2) for _ in range(3))
        print(f"| {name} | {one:.2f} | {two:.2f} | {2 * one / two:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
