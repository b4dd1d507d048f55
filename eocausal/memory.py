"""Handing freed memory back to the system between the big steps of a command, and keeping
it for reuse within the many small steps of one (ingestion tasks)."""

from __future__ import annotations

import ctypes
import os

__all__ = ["release_freed_memory", "resident_bytes", "reuse_freed_memory"]


def release_freed_memory() -> None:
    """Hand memory freed on the C heap back to the system (glibc's ``malloc_trim``), and
    Arrow's pool its unused blocks.

    Reading units, planning a million chips, ingestion and prediction each free tens of MB
    in many small blocks; glibc keeps them mapped, so without this the next step starts
    from a higher resident size (at 390,625 map cells, 90 MB stayed resident after
    ingestion). The recipe dask's worker documentation gives for the same effect; a no-op
    where the C library is not glibc.
    """
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident size from ``/proc/self/statm`` (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


# glibc's mallopt parameters (malloc.h) and the values ingestion workers run with.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
REUSE_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for its own dynamic threshold
REUSE_TRIM_THRESHOLD = 256 << 20
_reusing: list[bool | None] = [None]  # None: not tried yet in this process


def reuse_freed_memory() -> bool:
    """Keep freed buffers of up to 32 MiB on this process's heap for the next ones to reuse.

    An ingestion task allocates a dozen arrays of 1-8 MB (the chunk, its mask, block reads,
    gathered chips). glibc maps an allocation above its mmap threshold afresh and unmaps it
    when freed, and gives the heap's free top back past its trim threshold, so each task
    faulted every page of its arrays in again: 270,000-600,000 page faults per 100,000
    units, about 1-2 s of system time on a VM where a fault is dear. With fixed thresholds
    the next task reuses the freed pages (10,000 faults). Returns False where the C library
    is not glibc. Tried once per process, whatever the outcome (every task calls this);
    :func:`release_freed_memory` still trims on request.
    """
    if _reusing[0] is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            _reusing[0] = bool(libc.mallopt(M_MMAP_THRESHOLD, REUSE_MMAP_THRESHOLD)) and bool(
                libc.mallopt(M_TRIM_THRESHOLD, REUSE_TRIM_THRESHOLD))
        except (OSError, AttributeError):
            _reusing[0] = False
    return _reusing[0]
