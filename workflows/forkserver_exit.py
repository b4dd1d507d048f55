"""Imported by the pool's forkserver only (``POOL_PRELOAD``): end it without a teardown.

When the driver exits, the forkserver sees its pipe close and raises ``SystemExit``; a normal
interpreter teardown then frees numpy, pandas, zarr and rasterio module by module, about
0.3 s (measured) during which the server still holds the driver's stdout and stderr, so a
caller reading them (``| tee``, ``subprocess.run``) waits that long after the command has
ended. The server holds no data to save, so once its stdio is flushed it ends at once.
Workers are unaffected: each forked child already ends with ``os._exit``.
"""

from __future__ import annotations

import atexit
import os
import sys


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(0)


atexit.register(_exit_now)
