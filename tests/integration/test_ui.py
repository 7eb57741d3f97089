"""The MLflow UI as a user sees it: `loraops ui` starts a real MLflow server process on 127.0.0.1 over a
finished tiny-model project, and Debian's headless Chromium, driven by Playwright (no browser download: it
runs /usr/bin/chromium), opens the compare views, the model version page and the Data Docs.

Screenshots go to the test's tmp folder (``<pytest basetemp>/.../screenshots``), printed at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.projects import loraops_cmd
from tests.helpers.registry import free_port

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are refused by a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui(finished_project):
    """`loraops ui` on the finished project; yields (base URL, layout, stage results)."""
    layout, results = finished_project
    port = free_port()
    proc = subprocess.Popen(loraops_cmd() + ["ui", "--port", str(port)], cwd=layout.root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, status = time.monotonic() + 150, None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    status = response.status
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(1)
        assert status == 200, "mlflow ui did not answer in 150 s"
        yield url, layout, results
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(ui, tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (.ci/run does) to run the browser test")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    shots = tmp_path_factory.mktemp("screenshots")
    with playwright_api.sync_playwright() as driver:
        # A fresh profile per launch (Playwright makes one); the arguments keep Chromium off the network.
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page, shots
        chromium.close()
    print(f"\nscreenshots: {shots}")


def open_page(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    close = page.get_by_role("button", name="Close")  # the assistant panel, when it opens by itself
    try:
        close.first.click(timeout=5_000)
    except Exception:
        pass


def test_ui_serves_the_project_store(ui):
    url, layout, _ = ui
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        assert response.status == 200
    assert (layout.root / "mlflow.db").is_file()  # the UI opened this project's store, not another


def test_chart_view_draws_base_adapter_and_full_as_bars_of_one_chart(ui, browser):
    url, layout, results = ui
    page, shots = browser
    experiment = results["register"]["experiment_id"]
    open_page(page, f"{url}/#/experiments/{experiment}/runs?compareRunsMode=CHART")
    # The pipeline run's children (one per model) show once its row is expanded, as a user would.
    page.locator(".ag-row").filter(has_text="tiny").first.locator("button").first.click()
    # The tfidf reference has an accuracy but no retention (it answers no general prompts).
    charts = (("accuracy", ("base", "adapter", "full", "tfidf")), ("retention", ("base", "adapter", "full")))
    for metric, models in charts:
        page.get_by_placeholder("Search metric charts").fill(metric)  # as a user finds a chart
        card = page.locator("[data-testid=experiment-view-compare-runs-card]").filter(
            has=page.locator(f"h4[title={metric}]"))
        bars = card.locator(".trace.bars .point")
        bars.nth(len(models) - 1).wait_for(state="attached")
        assert bars.count() == len(models), metric  # one chart, one axis, a bar per model
        legend = card.inner_text()
        assert all(name in legend for name in models), (metric, legend)
    page.screenshot(path=str(shots / "chart-view.png"))


def test_run_comparison_lists_the_three_models_side_by_side(ui, browser):
    url, layout, results = ui
    page, shots = browser
    runs = results["register"]["model_runs"]
    ids = [runs[m] for m in ("base", "adapter", "full")]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps(
        [results["register"]["experiment_id"]])})
    open_page(page, f"{url}/#/compare-runs?{query}")
    page.get_by_text("Comparing 3 Runs").wait_for()
    page.get_by_text("Parallel Coordinates Plot").wait_for()
    body = page.inner_text("body")
    details = body[body.index("Run details"):]
    assert all(name in details for name in ("base", "adapter", "full"))
    for metric in ("accuracy", "retention", "retention_drop", "macro_f1"):
        assert f"\n{metric}\n" in details, metric
    page.screenshot(path=str(shots / "compare-runs.png"), full_page=True)


def test_model_version_page_shows_the_gate_table_and_the_signature(ui, browser):
    url, layout, results = ui
    page, shots = browser
    reg = results["register"]
    open_page(page, f"{url}/#/models/{reg['model_name']}/versions/{reg['version']}")
    table = page.locator("table").filter(has=page.locator("th", has_text="gate")).first
    table.wait_for()
    text = table.inner_text()
    for gate in ("validation_passed", "beats_base", "recovers_full_gain", "retention", "not_worse_than_champion"):
        assert gate in text, gate
    assert f"Promotion decision: {reg['decision']}" in page.inner_text("body")
    assert page.get_by_text("Inputs (1)").count() and page.get_by_text("Outputs (1)").count()  # the signature
    page.screenshot(path=str(shots / "model-version.png"), full_page=True)


def test_data_docs_render_in_the_artifact_viewer(ui, browser):
    url, layout, results = ui
    page, shots = browser
    reg = results["register"]
    open_page(page, f"{url}/#/experiments/{reg['experiment_id']}/runs/{reg['run_id']}/artifacts/"
                    "validation/data_docs.html")
    deadline = time.monotonic() + 60
    frame = None
    while frame is None and time.monotonic() < deadline:
        frame = next((f for f in page.frames if "Data validation of" in (f.content() or "")), None)
        time.sleep(0.5)
    assert frame is not None, "the Data Docs page did not render in the artifact viewer"
    assert "expect_table_row_count_to_be_between" in frame.inner_text("body")
    page.screenshot(path=str(shots / "data-docs.png"))
