"""One ingestion task: fill a whole chunk of the tile store with the chips of its units.

A task gets plain facts (paths, windows on the target grid, how to reach each raster), opens
its own rasters, mosaics every date from the files that cover each chip, writes its own
region of the store, and only then writes its done marker: a task killed half-way leaves
its marker unset, so a rerun redoes exactly the unfinished chunks.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import rasterio
from eocausal.pipeline.chips import mask_from_nodata, nodata_validity, nodata_values, read_chip
from eocausal.pipeline.remote import REMOTE_GDAL_ENV, REMOTE_READ_THREADS
from eocausal.pipeline.sizing import MIN_CHUNKS_PER_WORKER, TARGET_CHUNK_BYTES, units_per_chunk_for
from eocausal.pipeline.store import TileStore, open_store
from eocausal.pipeline.target import SourceAccess, TargetGrid, vrt_transform
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from eocausal.memory import release_freed_memory, resident_bytes, reuse_freed_memory

__all__ = ["GDAL_ENV", "MIN_CHUNKS_PER_WORKER", "TARGET_CHUNK_BYTES", "PartitionTask",
           "PartitionDone", "ingest_partition", "units_per_chunk_for"]

log = logging.getLogger(__name__)

GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


@dataclass(frozen=True)
class DateSource:
    """A raster of one date as a task sees it: access plan, extent, scale and offset."""

    access: SourceAccess
    width: int  # dataset pixels (file for native reads, VRT for warped ones)
    height: int
    nodata: float | None
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    remote: bool = False  # read over the network: many reads in flight per task

    def overlaps(self, windows: np.ndarray, size: int) -> np.ndarray:
        """Whether each ``size``-pixel chip window (target grid) overlaps this raster."""
        cols = windows[:, 0] - self.access.col_offset
        rows = windows[:, 1] - self.access.row_offset
        return (cols < self.width) & (cols + size > 0) & (rows < self.height) & (rows + size > 0)


@dataclass(frozen=True)
class PartitionTask:
    """Everything one worker needs to fill chunk ``index`` (store rows ``start .. stop``).

    The chip windows are recomputed from the centres the store holds for those rows
    (:meth:`~pipeline.target.TargetGrid.windows`, as the planning did), so a task is a few
    hundred bytes whatever its size, and the driver keeps no windows while tasks run.
    ``windows`` may be given instead (then they are used as they are).
    """

    store_path: str
    index: int
    start: int
    stop: int
    chip_size: int
    dates: tuple[tuple[DateSource, ...], ...]  # per date, its rasters in priority order
    indexes: tuple[int, ...]
    grid: TargetGrid
    apply_scale_offset: bool
    windows: np.ndarray | None = None  # (B, 2) int: col_off, row_off on the target grid

    def __len__(self) -> int:
        return self.stop - self.start

    def with_windows(self, store: TileStore) -> PartitionTask:
        """This task with its windows, from the store's chip centres when not given."""
        if self.windows is not None:
            return self
        centres = np.asarray(store.array("centre_xy")[self.start:self.stop])
        return replace(self, windows=self.grid.windows(centres, self.chip_size))


def _open(source: DateSource, grid: TargetGrid, stack: contextlib.ExitStack):
    dataset = stack.enter_context(rasterio.open(source.access.path))
    if source.access.native:
        return dataset
    return stack.enter_context(WarpedVRT(
        dataset, crs=grid.crs, transform=vrt_transform(source.access, grid),
        width=source.width, height=source.height,
        resampling=Resampling[source.access.resampling],
        add_alpha=dataset.nodata is None,  # so the VRT still knows where the file ends
        # A (near-)exact transformer makes every warped pixel independent of the VRT's extent
        # and of the window read, so a chip never depends on which task cut it. rasterio
        # refuses tolerance=0 together with an explicit transform, hence 1e-9 pixels.
        tolerance=1e-9,
    ))


def _touching(task: PartitionTask, source: DateSource) -> np.ndarray:
    """Rows of the task whose chip window overlaps the source's extent."""
    return np.flatnonzero(source.overlaps(task.windows, task.chip_size))


def _scaled(pixels: np.ndarray, valid: np.ndarray, source: DateSource,
            indexes: tuple[int, ...]) -> np.ndarray:
    scales = np.array([source.scales[i - 1] if source.scales else 1.0 for i in indexes])
    offsets = np.array([source.offsets[i - 1] if source.offsets else 0.0 for i in indexes])
    values = pixels * scales[:, None, None] + offsets[:, None, None]
    return np.where(valid[None], values, 0.0).astype(np.float32)


BLOCK_SPAN = 256  # target pixels per side of the cells that group a task's windows
MAX_BLOCK_WASTE = 8.0  # read a cell's bounding box when it holds at most 8x the chips' pixels
REMOTE_BLOCK_WASTE = 2.0  # over the network every extra tile is a transfer: stay tight
MIN_ROWS_PER_THREAD = 16  # below this, a thread's open (HEAD + header) costs more than it saves


def _inside(task: PartitionTask, source: DateSource, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` have their whole window inside the dataset."""
    cols = task.windows[rows, 0] - source.access.col_offset
    offs = task.windows[rows, 1] - source.access.row_offset
    size = task.chip_size
    return ((cols >= 0) & (offs >= 0) & (cols + size <= source.width)
            & (offs + size <= source.height))


def _read_inside(task: PartitionTask, source: DateSource, dataset, rows: np.ndarray, t: int,
                 chips: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fast path for windows fully inside a native file without a mask band; returns the
    rows left.

    Windows are grouped into cells of ``BLOCK_SPAN`` pixels; a cell whose chips cover its
    bounding box densely enough is read with ONE ``dataset.read`` and its chips are sliced
    out with numpy (pure pixel copies, so identical to per-window reads), which removes
    rasterio's per-call overhead that dominated the bare loop. Sparse cells are read window
    by window. A file whose only mask is its nodata value gets its validity from the pixels
    (:func:`~eocausal.pipeline.chips.nodata_validity`, equal to GDAL's dataset mask). Rows
    that touch the file's edge, and every row of a file with a mask band, alpha band,
    scale/offset or a warp (or a nodata file read for a subset of its bands), go back to the
    caller's general mosaic loop.
    """
    if not source.access.native or task.apply_scale_offset:
        return rows
    flags = dataset.mask_flag_enums
    nodata = None  # validity from the nodata values in numpy (GDAL's mask for such a file)
    if any(MaskFlags.all_valid not in f for f in flags):
        if not mask_from_nodata(dataset) or list(task.indexes) != list(
                range(1, dataset.count + 1)):
            return rows  # a real mask or alpha band, or a mask that ORs bands not read
        nodata = nodata_values(dataset, flags)
    fresh = rows[~valid[rows, t].reshape(len(rows), -1).any(axis=1)]
    inside = fresh[_inside(task, source, fresh)]
    if inside.size == 0:
        return rows
    size = task.chip_size
    cols = task.windows[inside, 0] - source.access.col_offset
    offs = task.windows[inside, 1] - source.access.row_offset
    span = max(BLOCK_SPAN, 4 * size)
    cells = (offs // span) * (source.width // span + 1) + cols // span
    order = np.argsort(cells, kind="stable")
    bounds = np.flatnonzero(np.diff(cells[order])) + 1
    indexes = list(task.indexes)
    for group in np.split(order, bounds):
        c0, r0 = int(cols[group].min()), int(offs[group].min())
        width = int(cols[group].max()) + size - c0
        height = int(offs[group].max()) + size - r0
        waste = REMOTE_BLOCK_WASTE if source.remote else MAX_BLOCK_WASTE
        if group.size > 1 and width * height <= waste * group.size * size * size:
            block = dataset.read(indexes, window=Window(c0, r0, width, height))
            views = sliding_window_view(block, (size, size), axis=(1, 2))
            chips[inside[group], t] = views[:, offs[group] - r0,
                                            cols[group] - c0].transpose(1, 0, 2, 3)
        else:
            for j in group:
                dataset.read(indexes, window=Window(int(cols[j]), int(offs[j]), size, size),
                             out=chips[inside[j], t])
    if nodata is None:
        valid[inside, t] = True
    else:
        ok = nodata_validity(chips[inside, t], nodata)
        valid[inside, t] = ok
        chips[inside, t] = np.where(ok[:, None], chips[inside, t], 0)  # nodata reads 0
    return np.setdiff1d(rows, inside, assume_unique=True)


def _read_source(task: PartitionTask, source: DateSource, rows: np.ndarray, t: int,
                 chips: np.ndarray, valid: np.ndarray) -> None:
    """Fill ``rows`` of date ``t`` from one raster, opened once for all of them."""
    size, indexes = task.chip_size, list(task.indexes)
    with rasterio.Env(**(REMOTE_GDAL_ENV if source.remote else GDAL_ENV)), \
            contextlib.ExitStack() as stack:
        dataset = _open(source, task.grid, stack)
        rows = _read_inside(task, source, dataset, rows, t, chips, valid)
        if rows.size == 0:
            return
        buffer = np.zeros((len(indexes), size, size), dtype=dataset.dtypes[0])
        for i in rows:
            if valid[i, t].all():
                continue  # an earlier file of this date already filled the chip
            window = Window(int(task.windows[i, 0]) - source.access.col_offset,
                            int(task.windows[i, 1]) - source.access.row_offset, size, size)
            pixels, ok = read_chip(dataset, window, indexes=indexes, out=buffer)
            if task.apply_scale_offset:
                pixels = _scaled(pixels, ok, source, task.indexes)
            fill = ok & ~valid[i, t]
            chips[i, t][:, fill] = pixels[:, fill]
            valid[i, t] |= fill


def _read_remote(task: PartitionTask, source: DateSource, rows: np.ndarray, t: int,
                 chips: np.ndarray, valid: np.ndarray) -> None:
    """Split ``rows`` into runs read by ``REMOTE_READ_THREADS`` threads, one dataset each.

    Over HTTP a read waits on the network, not the CPU (rasterio releases the GIL), so
    many reads in flight multiply throughput. Runs are consecutive in Hilbert order, so
    each thread's windows stay close and share tiles; threads write disjoint rows.
    """
    n_parts = max(1, min(REMOTE_READ_THREADS, rows.size // MIN_ROWS_PER_THREAD))
    futures = [_remote_pool().submit(_read_source, task, source, part, t, chips, valid)
               for part in np.array_split(rows, n_parts) if part.size]
    for future in futures:
        future.result()


_POOL: list[concurrent.futures.ThreadPoolExecutor] = []


def _remote_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One pool of reader threads per process, reused by every task it runs."""
    if not _POOL:
        _POOL.append(concurrent.futures.ThreadPoolExecutor(
            REMOTE_READ_THREADS, thread_name_prefix="eocausal-remote"))
    return _POOL[0]


def _mask_non_finite(chips: np.ndarray, valid: np.ndarray) -> None:
    """NaN and infinite pixels are no data, whether or not the file declares a nodata value:
    they are marked invalid and zeroed, so band statistics stay finite."""
    if not np.issubdtype(chips.dtype, np.floating):
        return
    finite = np.isfinite(chips)
    if finite.all():
        return
    valid &= finite.all(axis=2)
    chips[~finite] = 0


_OPEN_STORE: dict[str, tuple[tuple[int, int], TileStore]] = {}


def _task_store(path: str) -> TileStore:
    """The store a task writes, opened once per process while its metadata file is the same.

    Opening the group and the five arrays a task touches re-reads six metadata files:
    ~4 ms, 6% of a task. A store replaced at the same path (a new ingestion) has a new
    ``zarr.json`` (inode and modification time), so it is opened afresh.
    """
    meta = os.stat(os.path.join(path, "zarr.json"))
    key = (meta.st_ino, meta.st_mtime_ns)
    cached = _OPEN_STORE.get(path)
    if cached is None or cached[0] != key:
        _OPEN_STORE.clear()  # one store at a time: a worker serves one ingestion
        cached = _OPEN_STORE[path] = (key, open_store(path))
    return cached[1]


class PartitionDone(NamedTuple):
    """What a finished partition wrote to the store's summaries, sent back to the driver so
    that it need not read them again (318 small files at 100,000 units: ~0.2 s, measured)."""

    index: int
    start: int
    fractions: np.ndarray  # (B, T) float32: valid fraction of each unit and date
    summary: np.ndarray  # (4, C): band sums, sums of squares, counts; the done flag


def ingest_partition(task: PartitionTask) -> PartitionDone:
    """Read, mosaic and write every chip of one partition; return what its summary holds."""
    reuse_freed_memory()
    store = _task_store(task.store_path)
    task = task.with_windows(store)
    n, n_dates, size = len(task), len(task.dates), task.chip_size
    chips = np.zeros((n, n_dates, len(task.indexes), size, size), dtype=store.chips.dtype)
    valid = np.zeros((n, n_dates, size, size), dtype=bool)
    for t, sources in enumerate(task.dates):
        for source in sources:  # in priority order: a later file only fills what is left
            rows = _touching(task, source)
            if rows.size == 0:
                continue
            reader = _read_remote if source.remote and rows.size > 1 else _read_source
            reader(task, source, rows, t, chips, valid)
    _mask_non_finite(chips, valid)
    store.write_units(task.start, chips, valid)
    fractions = valid.mean(axis=(2, 3)).astype(np.float32)  # as the store keeps them
    summary = store.write_partition_summary(task.index, task.start, fractions, chips, valid)
    del chips, valid
    _release_now_and_then()
    return PartitionDone(task.index, task.start, fractions, summary)


# Trim once the heap kept this much more than at the last trim: above what a task's freed
# buffers take (~30 MB, kept for the next task by reuse_freed_memory), below what an
# unbounded growth would cost.
TRIM_GROWTH_BYTES = 64 << 20
_rss_after_trim = [0]


def _release_now_and_then() -> None:
    """Give the heap's freed chunk buffers back once they add up to ``TRIM_GROWTH_BYTES``.

    Chunk-sized arrays freed in a varying order fragment glibc's heap: over 1,588 tasks in
    one process it grew by 50 MB that nothing used. Trimming after every task bounded it,
    but then the next task faulted its arrays in again (a page fault is dear on a VM); at a
    16 MB threshold the buffers kept for reuse set it off almost every task (300,000-400,000
    faults per 100,000 units against 14,000 at 64 MB, same peak).
    """
    rss = resident_bytes()
    if rss - _rss_after_trim[0] > TRIM_GROWTH_BYTES:
        release_freed_memory()
        _rss_after_trim[0] = resident_bytes()
