"""Workers start from a Parquet footer's row count (a CSV's estimated one), before the units
are read and checked."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from eocausal.pipeline.points import count_unit_rows
from eocausal.workflows.config import config_from_dict
from eocausal.workflows.context import StageContext
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.stages.ingest import ingest_stage, start_workers_early

from tests.conftest import SENTINEL2


class RecordingMapper:
    """Runs tasks here and records what the stage told it, and when."""

    def __init__(self, events: list) -> None:
        self.events, self.n_workers = events, 2

    def prepare(self, n_tasks: int) -> None:
        self.events.append(("prepare", n_tasks))

    def __call__(self, func, tasks):
        return [func(t) for t in tasks]


def _units(path, n: int, suffix: str):
    import rasterio

    rng = np.random.default_rng(2)
    with rasterio.open(SENTINEL2) as src:
        xs, ys = src.transform @ (rng.uniform(40, 470, n), rng.uniform(40, 470, n))
        frame = gpd.GeoDataFrame({"unit_id": [f"u{i}" for i in range(n)]},
                                 geometry=gpd.points_from_xy(xs, ys), crs=src.crs)
    out = path / f"units{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(out)
    else:
        frame.to_file(out)
    return out


def test_parquet_footer_count_starts_workers_before_units_are_read(tmp_path, monkeypatch,
                                                                   data_dir):
    import eocausal.pipeline.points as points

    units = _units(tmp_path, 3000, ".parquet")
    assert count_unit_rows(units) == 3000
    events: list = []
    read = points.read_unit_points
    monkeypatch.setattr(points, "read_unit_points",
                        lambda *a, **k: (events.append(("read",)), read(*a, **k))[1])
    config = config_from_dict({"units": {"path": str(units)},
                               "imagery": {"paths": [str(SENTINEL2)]},
                               "chips": {"size": 8, "units_per_chunk": 100}})
    result = ingest_stage(StageContext(config, RunPaths(tmp_path / "run"),
                                       mapper=RecordingMapper(events), with_outcome=False))
    assert result.n_usable == 3000
    assert events[:2] == [("prepare", 30), ("read",)]  # 3,000 units, 100 a task: 30 tasks


def test_other_formats_and_unreadable_files_wait_for_the_read(tmp_path, data_dir):
    gpkg = _units(tmp_path, 50, ".gpkg")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    events: list = []
    for path in (gpkg, broken, tmp_path / "missing.parquet"):
        assert count_unit_rows(path) is None
        start_workers_early(RecordingMapper(events), path, chip_size=8)
    assert events == []


def test_csv_rows_are_counted_or_estimated_from_the_first_mib(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(4)

    def table(n: int, name: str):
        path = tmp_path / name
        pd.DataFrame({"unit_id": [f"hh-{i}" for i in range(n)], "lon": rng.uniform(32, 34, n),
                      "lat": rng.uniform(0, 2, n)}).to_csv(path, index=False)
        return path

    assert count_unit_rows(table(500, "small.csv")) == 500  # under a MiB: exact
    big = table(60_000, "big.csv")  # ~3 MB: estimated from its first MiB
    assert big.stat().st_size > 2 << 20
    assert abs(count_unit_rows(big) - 60_000) < 600  # within 1%
    (tmp_path / "empty.csv").write_text("")
    assert count_unit_rows(tmp_path / "empty.csv") == 0
    assert count_unit_rows(tmp_path / "missing.csv") is None
