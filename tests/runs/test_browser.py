"""`fairl ui` and `fairl dashboard` in a real browser: headless Chromium (Debian's chromium and
chromedriver, driven by Selenium; nothing downloaded) on a store holding the smoke study.

Skipped where the browser is missing, failed so under FAIRL_REQUIRE_BROWSER=1 (.ci/run, which
installs it with .ci/browser.sh). Screenshots: the test's tmp_path/screenshots, copied to
$FAIRL_SCREENSHOTS when set (.ci/run: reports/screenshots).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from study_support import free_port, serve, trial_runs, use_store

ROOT = Path(__file__).resolve().parents[2]
FAIRL = [sys.executable, "-c", "import sys; from fairl.cli import main; sys.exit(main())"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# The runs table's expander of a parent run (MLflow 3.17's RunNameCellRenderer button).
EXPANDER = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'
ASSISTANT_CLOSE = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'


def browser_or_skip():
    """A headless Chromium WebDriver; skipped where Chromium or Selenium is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("FAIRL_REQUIRE_BROWSER"):
            pytest.fail(f"browser missing with FAIRL_REQUIRE_BROWSER set: {missing} "
                        "(bash .ci/browser.sh)")
        pytest.skip(f"browser missing: {missing} (bash .ci/browser.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path below: no Selenium Manager
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1800,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def start(command: list[str], url: str, log: Path) -> subprocess.Popen:
    """A server in its own session, up once `url` answers 200."""
    return serve(command, url, log, 40)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, as a user's Ctrl-C: fairl stops what it started (tests/runs/test_runs.py)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(driver, condition, what: str, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda _: condition())
    except Exception as error:  # TimeoutException: say what was awaited, with the page's text
        body = driver.find_element("tag name", "body").text[:2000]
        raise AssertionError(f"{what} not shown in {timeout} s; page says:\n{body}") from error


def texts(driver, selector: str) -> list[str]:
    return [element.text for element in driver.find_elements("css selector", selector)]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ui_shows_named_trials_with_test_metrics_and_dashboard_shows_trials(
        tmp_path, monkeypatch, tmp_path_factory):
    from fairl.runs import store as runs_store
    from fairl.study.runner import run_study

    driver = browser_or_skip()  # first: a skip costs nothing
    shots = tmp_path / "screenshots"
    shots.mkdir()
    servers = []
    try:
        use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        run_study(ROOT / "studies" / "smoke.yaml", progress=False)
        uri = runs_store.default_tracking_uri()
        trials = trial_runs(uri, "smoke")
        names = sorted(run.info.run_name for run in trials)
        assert len(names) == 4 and all(re.fullmatch(r"\w+ · lr=.+ · lambda0=.+ #\d", name)
                                       for name in names), names

        port = free_port()
        servers.append(start(FAIRL + ["ui", "--port", str(port)],
                             f"http://127.0.0.1:{port}/health", tmp_path / "ui.log"))
        # The link `fairl ui` prints is the page a user opens.
        printed = (tmp_path / "ui.log").read_text()
        url = re.search(r"^  smoke: (http\S+)$", printed, re.MULTILINE)
        assert url, printed
        driver.get(url.group(1))
        wait_for(driver, lambda: driver.find_elements("css selector", EXPANDER),
                 "the launch run's row")
        assert "/runs?" in driver.current_url and "workflowType=machine_learning" in \
            driver.current_url, driver.current_url  # not the GenAI overview
        for button in driver.find_elements("css selector", ASSISTANT_CLOSE):
            button.click()  # MLflow's assistant panel opens itself on a first visit
        driver.find_element("css selector", EXPANDER).click()  # the trials, under the launch
        grid = driver.find_element("css selector", "[role=grid]")
        wait_for(driver, lambda: all(name in grid.text for name in names),
                 f"the trial runs {names}")
        headers = texts(driver, "[role=columnheader]")
        for column in ("Dataset", "Models", "variant", "val_f1", "test_pairwise_accuracy",
                       "test_starc"):
            assert column in headers, (column, headers)
        # Each trial's reward model, linked to its run, in the Models column.
        wait_for(driver, lambda: grid.text.count("reward") == 4, "4 reward models")
        scores = [float(run.data.metrics["test_starc"]) for run in trials]
        shown = [float(value) for value in re.findall(r"\b0\.\d+\b", grid.text)]
        assert all(any(abs(score - value) < 1e-9 for value in shown) for score in scores), (
            scores, grid.text)
        driver.save_screenshot(str(shots / "mlflow_runs.png"))

        port = free_port()
        dashboard = f"http://127.0.0.1:{port}/dashboard"
        servers.append(start(FAIRL + ["dashboard", "--port", str(port)], dashboard,
                             tmp_path / "dashboard.log"))
        driver.get(dashboard)
        wait_for(driver, lambda: driver.find_elements("partial link text", "smoke"),
                 "the study smoke")
        driver.find_element("partial link text", "smoke").click()
        wait_for(driver, lambda: "/studies/" in driver.current_url, "the study's page")
        driver.get(driver.current_url.split("?")[0].rstrip("/") + "/trials")
        body = driver.find_element("tag name", "body")
        wait_for(driver, lambda: "4 Trials" in body.text, "4 trials")
        for number in range(4):
            assert f"Trial {number}" in body.text, body.text[:2000]
        assert body.text.count("Complete") >= 4, body.text[:2000]
        driver.save_screenshot(str(shots / "optuna_trials.png"))
    finally:
        driver.quit()
        for server in servers:
            stop(server)
        if os.environ.get("FAIRL_SCREENSHOTS"):
            target = Path(os.environ["FAIRL_SCREENSHOTS"])
            target.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy(shot, target / shot.name)
        print(f"screenshots: {shots} {os.environ.get('FAIRL_SCREENSHOTS', '')}")
