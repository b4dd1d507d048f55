"""Imported by every forkserver that ``process_pool.start_forkserver`` starts
(``FORKSERVER_EXIT``): end the server without a teardown.

When the driver exits, the forkserver sees its pipe close and raises ``SystemExit``; a normal
interpreter teardown then frees numpy, zarr and rasterio (and dask's modules, for a
LocalCluster) module by module, about 0.3 s (measured) during which the server still holds
the driver's stdout and stderr, so a caller reading them (``| tee``, ``subprocess.run``)
waits that long after the command has ended. The server holds no data to save, so once its
stdio is flushed it ends at once. Workers are unaffected: each forked child already ends
with ``os._exit``.
"""

from __future__ import annotations

import atexit
from functools import partial

from eocausal.workflows.fast_exit import flush_and_exit

atexit.register(partial(flush_and_exit, 0))
