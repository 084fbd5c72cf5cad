"""The Prefect UI in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven
by Selenium) finds a pipeline run and its lineage artifact.   pytest tests/test_ui.py"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from r1flow.flows.deployments import stop, wait_healthy

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ui_server(tmp_path):
    """A Prefect server with the UI on a fresh SQLite database: (UI URL, API URL)."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL=api, PREFECT_UI_API_URL=api,
               PREFECT_UI_ENABLED="true", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_healthy(api, timeout=180, proc=proc)
        yield f"http://127.0.0.1:{port}", api
    finally:
        stop(proc)


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def _wait_text(driver, text: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in driver.find_element("tag name", "body").text:
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not on {driver.current_url} after {timeout:.0f} s; page shows: "
                         f"{driver.find_element('tag name', 'body').text[:800]!r}")


def test_browser_finds_the_flow_run_and_its_lineage_artifact(smoke_run, ui_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from r1flow.flows.pipeline import pipeline

    recipe, _store, paths = smoke_run
    ui, api = ui_server
    with temporary_settings(updates={PREFECT_API_URL: api}):
        state = pipeline(recipe=recipe, return_state=True)  # every stage cached: seconds
        assert state.is_completed()
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            run_name = client.read_flow_run(run_id).name
            lineage = next(a for a in client.read_latest_artifacts() if a.key == "r1flow-lineage")
    driver = _browser()
    try:
        driver.get(f"{ui}/runs/flow-run/{run_id}")
        _wait_text(driver, run_name)
        _wait_text(driver, "Completed")
        driver.save_screenshot(str(tmp_path / "flow_run.png"))
        driver.get(f"{ui}/artifacts/artifact/{lineage.latest_id}")
        _wait_text(driver, "Lineage of this run")
        # The graph (Mermaid source: the UI shows it as a code block) names the run's artifacts, the
        # R1-Zero checkpoint among them.
        _wait_text(driver, os.path.basename(paths["r1_zero"])[:12])
        # The UI shows Mermaid as source text, so the artifact leads with the graph as an inline PNG: drawn.
        widths = driver.execute_script("return [...document.images].filter(i => i.src.startsWith('data:image/png'))"
                                       ".map(i => i.naturalWidth)")
        assert widths and widths[0] > 200, widths
        shot = tmp_path / "lineage.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("R1FLOW_SCREENSHOTS"):
            shutil.copy(shot, os.environ["R1FLOW_SCREENSHOTS"])
    finally:
        driver.quit()
