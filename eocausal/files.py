"""Write files so that a killed process never leaves one that looks finished.

Every output of a stage goes through :func:`atomic_path`: the writer fills a temporary file
beside the target (same folder, so the rename never crosses a file system), and only a
complete file is renamed into place. A stage killed half-way leaves at most a hidden
``.tmp-*`` file, which the next run overwrites.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "json_ready"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path with the target's suffix; rename it onto ``path`` on success.

    The temporary name keeps the suffix (``.tmp-123-effects.gpkg``) because writers choose
    their format from it. A target that is a symlink is replaced by the new file, never
    written through.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer produced no file at {tmp}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_ready(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars and arrays -> Python, paths -> str, recursively: what
    strict JSON (``allow_nan=False``) accepts."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
