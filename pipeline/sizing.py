"""How many units a chunk (and a task) holds: arithmetic only, so a command can size its work
and start its workers before it imports rasterio and zarr."""

from __future__ import annotations

__all__ = ["MIN_CHUNKS_PER_WORKER", "TARGET_CHUNK_BYTES", "units_per_chunk_for"]

# A chunk of ~8 MiB of pixels amortises the per-task costs (opening the store, zarr's
# per-write overhead, scheduling) and keeps a task's peak (chunk + one block read) well
# under 100 MB; at least 4 chunks per worker keep both workers busy to the end.
TARGET_CHUNK_BYTES = 8 << 20  # 8 MiB: same command time as 16 MiB at 20,000 units, 50 MB less peak
MIN_CHUNKS_PER_WORKER = 4


def units_per_chunk_for(n_units: int, *, chip_size: int, n_bands: int, n_dates: int = 1,
                        itemsize: int = 2, n_workers: int = 1,
                        target_bytes: int = TARGET_CHUNK_BYTES) -> int:
    """Units per store chunk (and per task) from the chip's bytes and the worker count.

    A unit holds ``n_dates`` chips of ``n_bands * chip_size**2`` pixels plus a boolean
    mask; chunks aim at ``target_bytes`` but are cut smaller when fewer than
    ``MIN_CHUNKS_PER_WORKER`` chunks per worker would leave a worker idle.
    """
    unit_bytes = n_dates * chip_size * chip_size * (n_bands * itemsize + 1)
    by_bytes = max(1, target_bytes // unit_bytes)
    by_workers = max(1, -(-n_units // (MIN_CHUNKS_PER_WORKER * max(1, n_workers))))
    return int(max(1, min(by_bytes, by_workers, max(n_units, 1))))
