"""report.html and effect.html in a real headless Chromium with no network: the map's layers
and the report's figures are on the page, and the console shows no error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from eocausal.workflows.maps import MapSettings, build_map
from eocausal.workflows.maps.web import LAYER_NAMES
from eocausal.workflows.paths import RunPaths
from eocausal.workflows.report import write_report

from tests.workflows.maprun import make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run "
                                "installs Debian's 'chromium')")


def _open(page: Path, tmp: Path) -> tuple[str, list[str]]:
    """DOM after scripts ran, and the console lines, with every network request refused."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [line for line in result.stderr.splitlines()
               if "CONSOLE" in line or "Failed to load resource" in line]
    return result.stdout, console


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    run = RunPaths(make_run(root / "run"))
    halves = gpd.GeoDataFrame({"district": ["A", "B"]}, geometry=[
        shapely.box(32.5, 0.4, 32.56, 0.5), shapely.box(32.56, 0.4, 32.6, 0.5)], crs=4326)
    halves.to_file(root / "districts.geojson")
    result = build_map(run, MapSettings(spacing=80, aggregate=root / "districts.geojson",
                                        by="district", budget=10), echo=lambda m: None,
                       outcome_label="consumption", outcome_units="SD")
    summary = json.loads(run.summary.read_text())
    summary["map"] = result.summary
    summary["figures"] = {"effect_map": "maps/effect.png"}
    report = write_report(run, summary, title="Simulated cash transfers",
                          outcome_label="consumption", outcome_units="SD")
    return run, report, root


def test_effect_html_shows_every_layer_with_no_network(pages):
    run, _, root = pages
    dom, console = _open(run.effect_html, root)
    assert console == []
    # Effect and extrapolation are shown; interval width is listed in the control, off at first.
    assert len(re.findall(r"class=\"leaflet-image-layer", dom)) == 2
    labels = re.findall(r"<span> ([^<]+)</span>", dom)
    # every layer but the cluster model's (this run fitted none; test_maps_clusters has them)
    expected = {v for k, v in LAYER_NAMES.items() if k not in ("cluster", "cluster_effect")}
    assert expected <= {label.strip() for label in labels}
    assert LAYER_NAMES["cluster"] not in labels and 'id="eocausal-title"' in dom
    assert 'id="eocausal-legend"' in dom and "Effect on consumption (SD)" in dom
    assert len(re.findall(r'class="leaflet-interactive"', dom)) > 600  # units, targets, areas


def test_report_shows_its_findings_and_figures(pages):
    _, report, root = pages
    dom, console = _open(report, root)
    assert console == []
    assert dom.count("<img") == 1 and "data-figure=\"effect_map\"" in dom
    assert "Findings" in dom and "raised consumption by" in dom
    assert "maps/effect.html" in dom
