"""Both UIs as a person sees them, in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

A small real project is built first (``tests/browser_build.py``: nine days of bundled rows through the
project's own assets, MLflow in ``mlflow/`` under the project) and then **moved** to another directory, so the
MLflow checks also prove that every plot and model link survives a move.  Then ``fundarb dev`` (as the README
starts the Dagster UI) and ``mlflow ui`` (as the README starts it, from the project directory) run on free
loopback ports, and Chromium checks what is on screen; screenshots land in ``tests/output/browser/``.

The browser never downloads anything: the Debian binary at /usr/bin/chromium with a fresh profile, networking
features off.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from tests.conftest import window_tables, write_layout

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "tests" / "output" / "browser"
WINDOW = ("2026-02-25", "2026-03-06")  # nine days of real rows: candles and open interest still present
GROUPS = ("raw", "staging", "marts", "forecasting", "keeper", "backtest")
SIX = ("persistence", "ewma", "lightgbm", "lstm", "transformer", "ensemble")

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):  # fail, never skip: make test and .ci/run install them
    raise RuntimeError("the browser tests need Debian's chromium and chromium-driver: "
                       "apt-get install -y chromium chromium-driver (make test does it where it can)")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(900)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A server in its own process group (so teardown ends it and every child it spawned)."""
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the server's process group (``dagster dev`` ignores SIGTERM), then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def base_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNDARB_", "MLFLOW_", "DAGSTER_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               FUNDARB_DATA_DIR=str(project / "market_data"), FUNDARB_DUCKDB=str(project / "data" / "fundarb.duckdb"),
               DAGSTER_HOME=str(project / ".dagster_home"))
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small real project, built in one directory and then moved to another."""
    root = tmp_path_factory.mktemp("browser")
    built = root / "built"
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    write_layout(built / "market_data", window_tables(bundled, *WINDOW))
    done = subprocess.run([sys.executable, "-m", "tests.browser_build", str(built / "data" / "reports")], cwd=built,
                          env=base_env(built), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    moved = root / "moved" / "fundarb"
    moved.parent.mkdir()
    shutil.move(built, moved)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return moved


@pytest.fixture(scope="module")
def dagster_ui(project: Path) -> Iterator[str]:
    port = free_port()
    env = {**base_env(project), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow' / 'mlflow.db'}"}
    log = project / "dagster_dev.log"
    proc = start([sys.executable, "-m", "fundarb_pipelines.cli", "dev", "--port", str(port)], REPO, env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/server_info", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def mlflow_ui(project: Path) -> Iterator[str]:
    port = free_port()
    log = project / "mlflow_ui.log"
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    env = {k: v for k, v in base_env(project).items()}
    proc = start([mlflow_bin, "ui", "--backend-store-uri", "sqlite:///mlflow/mlflow.db", "--host", "127.0.0.1",
                  "--port", str(port)], project, env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="fundarb-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(120)
    driver.set_window_size(1600, 1100)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def body(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(driver: WebDriver, ok: Callable[[WebDriver], object], what: str, seconds: float = 90) -> None:
    try:
        WebDriverWait(driver, seconds, poll_frequency=0.5).until(ok)
    except TimeoutException:
        shot = SHOTS / f"FAILED_{what.replace(' ', '_')[:40]}.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"timed out waiting for {what}; screenshot {shot}; page text:\n{body(driver)[:2000]}"
                             ) from None


def wait_text(driver: WebDriver, texts: tuple[str, ...] | list[str], seconds: float = 90) -> None:
    wait_for(driver, lambda d: all(t in body(d) for t in texts), f"text {', '.join(texts)[:60]}", seconds)


def shot(driver: WebDriver, name: str) -> Path:
    path = SHOTS / name
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def skip_community_popup(driver: WebDriver, settle: float = 6.0) -> None:
    """Dagster's 'Join the Dagster community' dialog on a fresh profile arrives a moment after the page does:
    a newcomer waits for the page to stop changing, clicks Skip (or presses Escape on any other dialog) and only
    then uses the page. Returns once no overlay backdrop has been on screen for `settle` seconds."""
    quiet_since = time.monotonic()
    deadline = quiet_since + 60
    while time.monotonic() - quiet_since < settle:
        assert time.monotonic() < deadline, "a Dagster dialog would not close"
        skip = [b for b in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']") if b.is_displayed()]
        backdrop = [b for b in driver.find_elements(By.CSS_SELECTOR, ".bp5-overlay-backdrop") if b.is_displayed()]
        if skip:
            skip[0].click()
            quiet_since = time.monotonic()
        elif backdrop:
            ActionChains(driver).send_keys(Keys.ESCAPE).perform()
            quiet_since = time.monotonic()
        time.sleep(0.5)


def visible_images_loaded(driver: WebDriver, css: str) -> int:
    return int(driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length",
        css))


# ---------------------------------------------------------------------------------------------- Dagster


def test_dagster_asset_graph_shows_every_group_and_asset(browser: WebDriver, dagster_ui: str) -> None:
    browser.set_window_size(2400, 2100)  # the whole expanded graph, legible
    browser.get(f"{dagster_ui}/asset-groups")
    wait_text(browser, ["Global asset lineage", *GROUPS], 120)
    skip_community_popup(browser)
    # groups open collapsed; Alt+E ("Expand all groups", also in the graph's settings) opens them all
    ActionChains(browser).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
    wait_text(browser, ["training_set", "model_leaderboard"], 60)
    skip_community_popup(browser, settle=2.0)
    browser.find_element(By.XPATH, "//button[.//*[@aria-label='zoom_out']]").click()  # a little taller than the window
    assets = ("funding_rates", "candles", "stg_funding_hourly", "spread_panel", "training_set",
              "model_leaderboard", "champion_models", "keeper_cycle", "strategy_backtest", "oracle_bound")
    wait_text(browser, assets, 60)  # every group's assets on screen at once
    time.sleep(2)  # let the layout settle before the picture
    shot(browser, "01_dagster_asset_graph.png")
    browser.set_window_size(1600, 1100)


def test_partitioned_raw_asset_shows_its_partitions_and_checks(browser: WebDriver, dagster_ui: str) -> None:
    browser.get(f"{dagster_ui}/assets/funding_rates?view=partitions")
    days = pd.date_range(*WINDOW, freq="D", inclusive="left").strftime("%Y-%m-%d")
    wait_text(browser, ["funding_rates", days[0], days[-1], f"Materialized ({len(days)})", "Missing (0)"])
    shot(browser, "02_dagster_raw_asset_partitions.png")
    browser.get(f"{dagster_ui}/assets/funding_rates?view=checks")
    wait_text(browser, ["unique_key", "gaps", "rate_bounds", "freshness", "Succeeded"])
    shot(browser, "02_dagster_raw_asset_checks.png")


def test_sql_model_shows_its_sql_and_row_count(browser: WebDriver, dagster_ui: str, project: Path) -> None:
    import duckdb

    with duckdb.connect(str(project / "data" / "fundarb.duckdb"), read_only=True) as conn:
        rows = int(conn.execute("SELECT count(*) FROM spread_panel").fetchall()[0][0])
    browser.get(f"{dagster_ui}/assets/spread_panel")
    wait_text(browser, ["spread_panel", "marts", f"{rows:,}"])
    wait_text(browser, ["dbt_like_sql/marts/spread_panel.sql"])
    sql = browser.find_element(By.XPATH, "//*[contains(text(), 'dbt_like_sql/marts/spread_panel.sql')]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", sql)  # the metadata: file, SQL
    time.sleep(1)
    shot(browser, "03_dagster_sql_model.png")


def test_backtest_report_renders_its_plots(browser: WebDriver, dagster_ui: str) -> None:
    browser.get(f"{dagster_ui}/assets/strategy_backtest")
    wait_text(browser, ["strategy_backtest", "period", "2026-03-04 00:00:00 → 2026-03-04 12:00:00"])
    # markdown metadata (the comparison table and the embedded plots) opens in a dialog
    links = browser.find_elements(By.XPATH, "//tr[.//*[normalize-space()='plots']]//*[self::button or self::a]")
    assert links, "no link to the plots metadata"
    links[0].click()
    wait_for(browser, lambda d: visible_images_loaded(d, "img[src^='data:image/png']") >= 2, "embedded plots")
    time.sleep(1)
    shot(browser, "04_dagster_backtest_report_plots.png")


def test_keeper_sensor_is_off_by_default_and_every_job_is_listed(browser: WebDriver, dagster_ui: str) -> None:
    browser.get(f"{dagster_ui}/jobs")
    wait_text(browser, ["ingest_job", "retrain_job", "keeper_job", "backtest_job"])
    shot(browser, "05_dagster_jobs.png")
    browser.get(f"{dagster_ui}/automation")
    wait_text(browser, ["fresh_inputs_keeper_sensor", "hourly_ingest_schedule", "daily_retrain_schedule"])
    row = browser.find_element(By.XPATH, "//div[contains(@class, 'ListItem_listItem')]"
                                         "[.//*[normalize-space(text())='fresh_inputs_keeper_sensor']]")
    toggles = row.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
    assert toggles and not any(t.is_selected() for t in toggles), "the keeper sensor must be off until turned on"
    browser.get(f"{dagster_ui}/locations/fundarb/sensors/fresh_inputs_keeper_sensor")
    wait_text(browser, ["fresh_inputs_keeper_sensor", "Off by default", "keeper_job"])
    shot(browser, "06_dagster_automation_sensor_off.png")


def test_materialisation_launched_from_the_ui_succeeds(browser: WebDriver, dagster_ui: str, project: Path) -> None:
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(project / ".dagster_home")  # the same instance the UI serves
    with dg.DagsterInstance.get() as instance:
        before = {r.run_id for r in instance.get_runs()}
        browser.get(f"{dagster_ui}/assets/keeper_performance")
        wait_text(browser, ["keeper_performance", "Materialize"])
        skip_community_popup(browser)
        browser.find_element(By.XPATH, "//button[normalize-space()='Materialize']").click()
        deadline = time.monotonic() + 60
        new: list[dg.DagsterRun] = []
        while not new and time.monotonic() < deadline:
            new = [r for r in instance.get_runs() if r.run_id not in before]
            time.sleep(0.5)
        assert len(new) == 1, "clicking Materialize launched no run"
        run_id = new[0].run_id
        assert new[0].asset_selection == {dg.AssetKey("keeper_performance")}
        browser.get(f"{dagster_ui}/runs/{run_id}")
        wait_for(browser, lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='Success']"),
                 "the UI-launched run's Success", 300)
        shot(browser, "07_dagster_ui_launched_run_success.png")
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        latest = instance.get_latest_materialization_event(dg.AssetKey("keeper_performance"))
        assert latest is not None and latest.run_id == run_id


# ----------------------------------------------------------------------------------------------- MLflow


def mlflow_ids(project: Path) -> dict[str, object]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fundarb/next_settlement")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    return {"experiment": exp.experiment_id, "runs": {r.data.tags["model"]: r.info.run_id for r in runs},
            "names": [r.info.run_name for r in runs]}


def close_assistant(driver: WebDriver) -> None:
    """MLflow 3.17 opens its 'MLflow Assistant' side panel on a first visit; a person closes it (remembered)."""
    driver.execute_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                          "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")
    driver.refresh()


def test_mlflow_lists_the_experiments_without_default(browser: WebDriver, mlflow_ui: str) -> None:
    browser.get(f"{mlflow_ui}/#/experiments")
    wait_text(browser, ["fundarb/next_settlement", "fundarb/spread_24h", "fundarb/backtests"])
    close_assistant(browser)
    wait_text(browser, ["fundarb/next_settlement", "fundarb/spread_24h", "fundarb/backtests"])
    assert "Default" not in body(browser)
    shot(browser, "08_mlflow_experiments.png")


def test_mlflow_experiment_opens_on_its_training_runs(browser: WebDriver, mlflow_ui: str, project: Path) -> None:
    """MLflow 3.17's sidebar switch (GenAI | Model training) decides the view of every experiment; its default is
    GenAI and it ignores the experiment's ``mlflow.experimentKind`` tag (which fundarb sets anyway).  The README
    says: click "Model training" once, the browser remembers it — exactly what this test does."""
    ids = mlflow_ids(project)
    assert set(ids["runs"]) == set(SIX)  # type: ignore[arg-type]
    browser.get(f"{mlflow_ui}/#/experiments")
    wait_text(browser, ["Model training", "fundarb/next_settlement"])
    browser.find_element(By.XPATH, "//*[normalize-space(text())='Model training']").click()
    browser.find_element(By.XPATH, "//a[normalize-space()='fundarb/next_settlement']").click()
    wait_text(browser, [str(n) for n in ids["names"]])  # type: ignore[attr-defined]
    assert "Traces" not in body(browser).split("Model registry")[-1]  # the runs table, not the GenAI overview
    shot(browser, "09_mlflow_training_runs.png")
    browser.get(f"{mlflow_ui}/#/experiments/{ids['experiment']}")  # remembered on the next visit
    wait_text(browser, [str(n) for n in ids["names"]])  # type: ignore[attr-defined]


def test_mlflow_compares_the_six_forecasters(browser: WebDriver, mlflow_ui: str, project: Path) -> None:
    ids = mlflow_ids(project)
    runs = json.dumps(list(ids["runs"].values()))  # type: ignore[attr-defined]
    browser.get(f"{mlflow_ui}/#/compare-runs?runs={runs}&experiments={json.dumps([ids['experiment']])}")
    wait_text(browser, ["mae_apr_pct_all", *[f"{m} ·" for m in SIX]])
    assert browser.find_elements(By.XPATH, "//a[normalize-space(text())='mae_apr_pct_all']"), "no MAE row"
    time.sleep(1)
    shot(browser, "10_mlflow_compare_six_forecasters.png")


def test_mlflow_run_shows_its_plots_after_the_move(browser: WebDriver, mlflow_ui: str, project: Path) -> None:
    ids = mlflow_ids(project)
    run = ids["runs"]["lightgbm"]  # type: ignore[index]
    browser.get(f"{mlflow_ui}/#/experiments/{ids['experiment']}/runs/{run}/artifacts/plots/predicted_vs_actual.png")
    wait_for(browser, lambda d: visible_images_loaded(d, "img") >= 1, "the predicted-vs-actual plot")
    time.sleep(1)
    shot(browser, "11_mlflow_run_plot.png")


def test_mlflow_registry_shows_the_champion_alias(browser: WebDriver, mlflow_ui: str) -> None:
    browser.get(f"{mlflow_ui}/#/models/fundarb-next_settlement")
    wait_text(browser, ["fundarb-next_settlement", "champion"])
    shot(browser, "12_mlflow_registry_champion.png")
