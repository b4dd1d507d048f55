"""A static HTTP server on 127.0.0.1 that answers byte-range requests, for remote-COG checks.

Python's ``http.server.SimpleHTTPRequestHandler`` ignores ``Range`` headers (it always sends
the whole file), so a COG served by it would be downloaded in full on every open. This
handler answers single ranges with 206 and several ranges with ``multipart/byteranges``,
sends ETag/Last-Modified, and counts what it served so tests can check that only ranges
travelled. Used by ``tests/pipeline/test_remote.py`` and ``benchmarks/bench_end_to_end.py``.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["RangeStats", "serve_directory", "serve_directory_process", "write_band_cogs", "write_cog", "write_stac_catalog"]

RANGE = re.compile(r"bytes=(.+)")


@dataclass
class RangeStats:
    """What the server sent: requests by status, and bytes of file content."""

    full: int = 0
    partial: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Handler(SimpleHTTPRequestHandler):
    stats: RangeStats
    latency: float = 0.0  # seconds added to every GET, to emulate an object store
    protocol_version = "HTTP/1.1"  # keep-alive, as object stores and CDNs serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet server
        return

    def _file(self) -> Path | None:
        path = Path(self.translate_path(self.path))
        return path if path.is_file() else None

    def _headers(self, path: Path, status: int, length: int, ctype: str) -> None:
        stat = path.stat()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"')
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        self._headers(path, 200, path.stat().st_size, self.guess_type(str(path)))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if self.latency:
            time.sleep(self.latency)
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        match = RANGE.fullmatch(self.headers.get("Range", "").strip())
        ranges = []
        if match:
            for part in match.group(1).split(","):
                start, _, end = part.strip().partition("-")
                if start == "":
                    first, last = max(0, size - int(end)), size - 1
                else:
                    first, last = int(start), min(int(end) if end else size - 1, size - 1)
                if first <= last:
                    ranges.append((first, last))
        with path.open("rb") as handle:
            if not ranges:
                body = handle.read()
                self._headers(path, 200, len(body), self.guess_type(str(path)))
                self.end_headers()
                self.wfile.write(body)
                self._count(full=1, sent=len(body))
                return
            pieces = []
            for first, last in ranges:
                handle.seek(first)
                pieces.append((first, last, handle.read(last - first + 1)))
        if len(pieces) == 1:
            first, last, data = pieces[0]
            self._headers(path, 206, len(data), self.guess_type(str(path)))
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            self.wfile.write(data)
        else:
            boundary = "eocausalrangeboundary"
            body = b"".join(
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n".encode() + data + b"\r\n"
                for first, last, data in pieces) + f"--{boundary}--\r\n".encode()
            self._headers(path, 206, len(body), f"multipart/byteranges; boundary={boundary}")
            self.end_headers()
            self.wfile.write(body)
        self._count(partial=1, sent=sum(len(d) for _, _, d in pieces))

    def _count(self, full: int = 0, partial: int = 0, sent: int = 0) -> None:
        with self.stats.lock:
            self.stats.full += full
            self.stats.partial += partial
            self.stats.bytes_sent += sent


@contextlib.contextmanager
def serve_directory(root: str | Path, latency: float = 0.0
                    ) -> Iterator[tuple[str, RangeStats]]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yield (base URL, stats).

    ``latency`` seconds are slept before answering each GET (per request, as a round trip
    to object storage costs), so that the benefit of reads in flight is measurable.
    """
    stats = RangeStats()
    handler = type("RangeHandler", (_Handler,), {"stats": stats, "latency": latency})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=os.fspath(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", stats
    finally:
        server.shutdown()
        server.server_close()


def write_cog(src_path: str | Path, dst_path: str | Path, *, indexes: list[int] | None = None,
              blocksize: int = 256) -> Path:
    """Copy bands of a GeoTIFF into a Cloud-Optimized GeoTIFF (GTiff first, then COG copy)."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    dst_path = Path(dst_path)
    tmp = dst_path.with_suffix(".tmp.tif")
    with rasterio.open(src_path) as src:
        indexes = indexes or list(range(1, src.count + 1))
        profile = src.profile | {"driver": "GTiff", "count": len(indexes)}
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(src.read(indexes))
            dst.descriptions = tuple(src.descriptions[i - 1] for i in indexes)
            dst.update_tags(**src.tags())
    rio_copy(tmp, dst_path, driver="COG", blocksize=blocksize, compress="DEFLATE",
             overviews="NONE")
    tmp.unlink()
    return dst_path


def write_band_cogs(src_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """One single-band COG per band of ``src_path``, keyed by band description."""
    import rasterio

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src:
        names = [d or f"band_{i}" for i, d in enumerate(src.descriptions, start=1)]
    return {name: write_cog(src_path, out_dir / f"{name}.tif", indexes=[i])
            for i, name in enumerate(names, start=1)}


def write_stac_catalog(root: str | Path, items: dict[str, tuple[str, dict[str, Path]]]) -> Path:
    """A self-contained static STAC catalog under ``root``: item id -> (date, {asset: COG}).

    Asset hrefs are relative to the item files, so the catalog works from disk and from
    any URL it is served at.
    """
    import datetime as dt

    import pystac
    import rasterio
    from rasterio.warp import transform_bounds

    root = Path(root)
    catalog = pystac.Catalog(id="eocausal-test", description="COGs for remote-read checks")
    for item_id, (date, assets) in items.items():
        first = next(iter(assets.values()))
        with rasterio.open(first) as src:
            bbox = list(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
        left, bottom, right, top = bbox
        geometry = {"type": "Polygon", "coordinates": [[[left, bottom], [right, bottom],
                    [right, top], [left, top], [left, bottom]]]}
        item = pystac.Item(id=item_id, geometry=geometry, bbox=bbox, properties={},
                           datetime=dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC))
        for key, path in assets.items():
            item.add_asset(key, pystac.Asset(href=str(Path(path).resolve()),
                                             media_type=pystac.MediaType.COG, roles=["data"]))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


@contextlib.contextmanager
def serve_directory_process(root: str | Path, latency: float = 0.0) -> Iterator[str]:
    """Like :func:`serve_directory` but in a child process, so that the server's Python
    does not share the GIL (or a core's time slices) with the reader being measured."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.range_server", str(root),
                             str(latency)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    import sys

    with serve_directory(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0) as (
            base, _):
        print(base, flush=True)
        threading.Event().wait()
