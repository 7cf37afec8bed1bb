"""The keeper in Dagster: the sensor launches keeper_job once per batch of fresh inputs (never while
one runs), the job runs a real paper cycle on real data, and no API key leaks anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.test_utils import create_run_for_test

from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_pipelines.assets.keeper import keeper_assets
from fundarb_pipelines.resources import FundarbDuckDB
from fundarb_pipelines.sensors import fresh_inputs_keeper_sensor
from fundarb_pipelines.trading import KeeperTrading
from tests.conftest import real_db, window_tables

MARKER = "FUNDARB-TEST-SECRET-7f3a9c"


def _fresh(instance: dg.DagsterInstance, asset: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset))


def test_sensor_launches_once_per_batch_and_never_while_running() -> None:
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        assert isinstance(fresh_inputs_keeper_sensor(ctx), dg.SkipReason)  # nothing materialised yet
        _fresh(instance, "funding_rates")
        _fresh(instance, "spread_panel")
        first = fresh_inputs_keeper_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
        # same batch again: nothing to do
        again = fresh_inputs_keeper_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert isinstance(again, dg.SkipReason)
        # a new batch while a keeper run is in progress: wait
        _fresh(instance, "funding_forecasts")
        create_run_for_test(instance, job_name="keeper_job", status=dg.DagsterRunStatus.STARTED)
        busy = fresh_inputs_keeper_sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert isinstance(busy, dg.SkipReason) and "in progress" in str(busy.skip_message)
    with dg.instance_for_test() as instance:
        _fresh(instance, "funding_rates")
        a = fresh_inputs_keeper_sensor(dg.build_sensor_context(instance=instance))
        _fresh(instance, "funding_rates")
        b = fresh_inputs_keeper_sensor(dg.build_sensor_context(instance=instance, cursor=a.cursor))
        assert a.run_requests[0].run_key != b.run_requests[0].run_key  # each batch triggers once


@pytest.fixture(scope="module")
def keeper_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keeper")
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    real_db(root, window_tables(bundled, "2026-02-18", "2026-03-08")).close()
    return root / "db.duckdb"


def test_keeper_job_runs_a_paper_cycle_and_shows_plan_and_performance(
    keeper_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", MARKER)
    monkeypatch.setenv("FUNDARB_BINANCE_SECRET", MARKER)
    resources = {"duckdb": FundarbDuckDB(database=str(keeper_db)), "trading": KeeperTrading()}
    with dg.instance_for_test() as instance:
        results = []
        for hour in ("2026-03-05 12:00", "2026-03-05 13:00"):
            res = dg.materialize(
                keeper_assets, resources=resources, instance=instance,
                run_config={"ops": {"keeper_cycle": {"config": {"as_of": hour}}}},
            )
            assert res.success
            results.append(res)
        meta = results[0].asset_materializations_for_node("keeper_cycle")[0].metadata
        assert meta["mode"].value == "paper"
        assert meta["plans_considered"].value > 0
        assert "reason" in meta["plan"].value
        assert "trailing_blend" in meta["parameters"].value and meta["decision_rule"].value == "horizon"
        perf = results[1].asset_materializations_for_node("keeper_performance")[0].metadata
        assert "estimated_apy" in perf
        # no secret in the run logs, the metadata or the DuckDB file
        logs = "".join(str(e) for r in results for e in instance.all_logs(r.run_id))
        assert MARKER not in logs
    for db in (keeper_db, keeper_db.with_name("ledger.duckdb")):  # the warehouse and the trading file
        assert db.exists() and MARKER.encode() not in db.read_bytes()
        wal = Path(f"{db}.wal")
        assert not wal.exists() or MARKER.encode() not in wal.read_bytes()


def test_live_mode_needs_the_environment_switch(keeper_db: Path) -> None:
    assert os.environ.get("FUNDARB_LIVE") != "1"
    res = dg.materialize(
        keeper_assets, resources={"duckdb": FundarbDuckDB(database=str(keeper_db)),
                                  "trading": KeeperTrading(mode="live")}, raise_on_error=False,
    )
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "FUNDARB_LIVE=1" in str(failure.event_specific_data.error.message)


def test_fundarb_keeper_once_runs_one_cycle(keeper_db: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "FUNDARB_DUCKDB": str(keeper_db), "DAGSTER_HOME": str(tmp_path / "home")}
    fundarb = str(Path(sys.executable).parent / "fundarb")
    proc = subprocess.run([fundarb, "keeper", "--once", "--dry-run", "--as-of", "2026-03-05 15:00"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "keeper cycle at 2026-03-05 15:00:00 (paper (dry run))" in proc.stdout
    perf = proc.stdout.splitlines()[-1]  # the performance block follows the decision
    assert perf.startswith("performance at 2026-03-05 15:00:00: estimated APY ")
    assert "realised APY 7d" in perf and "open positions" in perf and "minimum health factor" in perf
    live = subprocess.run([fundarb, "keeper", "--once", "--mode", "live"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert live.returncode != 0 and "FUNDARB_LIVE=1" in live.stderr
