"""A research folder's own models.py, pipeline.py and workflows/ never shadow eocausal."""

from __future__ import annotations

import subprocess
import sys


def test_cli_and_notebook_api_run_beside_a_users_own_modules(tmp_path):
    (tmp_path / "models.py").write_text("raise ImportError('the user models.py was imported')\n")
    (tmp_path / "pipeline.py").write_text("raise ImportError('the user pipeline.py')\n")
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "__init__.py").write_text("raise ImportError('user workflows/')\n")
    (tmp_path / "configs").mkdir()
    code = (
        "import eocausal\n"
        "from eocausal.workflows.runner import run_config\n"
        "from eocausal.models.effects.estimate import estimate_effects\n"
        "from eocausal.pipeline.ingest import ingest\n"
        "world = eocausal.simulate('w', n_units=40, scene_size=64, chip_size=8, seed=1)\n"
        "units = eocausal.read_units(world.units_path)\n"
        "tiles = eocausal.ingest(units, world.scene_paths, 't.zarr', chip_size=8)\n"
        "print('ok', tiles.n_usable)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok 40")
    cli = subprocess.run([sys.executable, "-m", "eocausal.workflows.cli", "simulate", "--out",
                          "w2", "--n-units", "20", "--scene-size", "48", "--chip-size", "8"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "true ATE" in cli.stdout
