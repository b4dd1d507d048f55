"""Rasters over HTTP: GDAL settings for range reads of COGs, and their identity without a download.

A COG at an ``http(s)://`` URL is read through GDAL's ``/vsicurl/`` (rasterio maps the URL
itself): only the header and the tiles under a window travel. The settings below keep that
cheap: no directory listing per open, a header fetched in one request, a per-process block
cache shared by every dataset of the same URL, merged consecutive ranges, and retries. Many
reads stay in flight because each ingestion task reads a remote source from several threads
(:data:`REMOTE_READ_THREADS`), each with its own dataset handle; rasterio releases the GIL
while GDAL waits on the network.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

__all__ = [
    "REMOTE_GDAL_ENV",
    "REMOTE_READ_THREADS",
    "is_remote",
    "remote_identity",
    "remote_name",
]

REMOTE_PREFIXES = ("http://", "https://", "/vsicurl/", "s3://", "gs://", "az://", "/vsis3/",
                   "/vsigs/", "/vsiaz/")

REMOTE_GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the "directory" per open
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.TIFF,.vrt",
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",  # header + tile index in one request
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "CPL_VSIL_CURL_CACHE_SIZE": str(256 << 20),  # blocks shared by a process's handles
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 << 20),
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
}

# Reads in flight per task for a remote raster: latency-bound, so more threads than cores.
REMOTE_READ_THREADS = int(os.environ.get("EOCAUSAL_REMOTE_READ_THREADS", "16"))


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` names a raster GDAL reads over the network."""
    return str(path).startswith(REMOTE_PREFIXES)


def remote_name(path: str) -> str:
    """The last component of a URL, without its query (for dates in file names)."""
    return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def remote_identity(url: str, timeout: float = 30.0) -> str:
    """A checksum stand-in for a remote file: SHA-256 of URL, ETag, Last-Modified and size.

    Hashing the bytes would mean downloading the whole scene; an HTTP HEAD tells whether
    the file changed, which is what resuming and the manifest need. Non-HTTP URLs (s3://,
    /vsis3/) are identified by the URL alone.
    """
    parts = [url]
    href = url.removeprefix("/vsicurl/")
    if href.startswith(("http://", "https://")):
        request = urllib.request.Request(href, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            headers = response.headers
            parts += [headers.get("ETag", ""), headers.get("Last-Modified", ""),
                      headers.get("Content-Length", "")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
