"""examples/walkthrough.ipynb executes top to bottom in a real Jupyter kernel, figures inline."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import DATA, ROOT


def test_walkthrough_notebook_executes(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EOCAUSAL_ROOT", str(ROOT))
    monkeypatch.setenv("EOCAUSAL_DATA", str(DATA))
    notebook = nbformat.read(ROOT / "examples" / "walkthrough.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # balance, TOC, the map, Uganda's TOC and GATES
    text = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "Run('" in text and "ATE" in text
    uganda_repr = [t for t in text.splitlines() if "uganda" in t and "ATE" in t]
    assert uganda_repr, text[-2000:]


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
