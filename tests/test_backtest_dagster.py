"""The backtest reports as Dagster assets and as ``fundarb backtest``: real materialisations on real rows, the
report in metadata (plots embedded), a run in a real MLflow SQLite store, and the CLI's JSON document."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_pipelines.assets.backtest import backtest_assets, tradable_end
from fundarb_pipelines.assets.forecast import MlflowTracking
from fundarb_pipelines.cli import main
from fundarb_pipelines.resources import FundarbDuckDB
from fundarb_pipelines.trading import KeeperTrading
from tests.conftest import real_db, window_tables, write_layout

ASSETS = ["BTC", "ETH", "SOL"]


def _tables() -> dict[str, pd.DataFrame]:
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    tables = window_tables(bundled, "2025-12-05", "2026-01-16")  # 30 days of pair history before the K sweep
    return {t: f[f["asset"].isin(ASSETS)].reset_index(drop=True) if "asset" in f else f for t, f in tables.items()}


@pytest.fixture(scope="module")
def bt_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bt_dagster")
    real_db(root, _tables()).close()
    return root / "db.duckdb"


def test_backtest_assets_materialise_with_reports_plots_and_mlflow_runs(bt_db: Path, tmp_path: Path) -> None:
    period = {"start": "2026-01-14 00:00", "end": "2026-01-14 12:00", "assets": ASSETS, "gbm_trees": 30,
              "reports_dir": str(tmp_path / "reports")}
    config = {"ops": {"strategy_backtest": {"config": period}, "oracle_bound": {"config": period},
                      "fee_regimes": {"config": period},
                      "leverage_safety": {"config": {"days": 3, "assets": ["BTC"], "reports_dir": str(tmp_path)}}}}
    uri = os.environ["MLFLOW_TRACKING_URI"]
    res = dg.materialize(backtest_assets, run_config=config,
                         resources={"duckdb": FundarbDuckDB(database=str(bt_db)),
                                    "trading": KeeperTrading(ledger_path=str(tmp_path / "ledger.duckdb")),
                                    "mlflow_tracking": MlflowTracking(tracking_uri=uri)})
    assert res.success
    strat = res.asset_materializations_for_node("strategy_backtest")[0].metadata
    assert strat["period"].value == "2026-01-14 00:00:00 → 2026-01-14 12:00:00"
    table = strat["comparison"].value
    for label in ("keeper, real fees", "keeper + forecasts, real fees", "naive 24h, real fees",
                  "patient 336h, real fees"):
        assert label in table
    assert "capture_ratio" in table and "data:image/png;base64," in strat["plots"].value
    assert Path(strat["equity_vs_oracle_png"].value).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every report lists the data fallbacks its runs stood on (strategy_backtest's report, fee_regimes' too)
    assert "Assumptions (data fallbacks)" in strat["report"].value
    assert "assumptions — keeper, real fees: " in strat["assumptions"].value
    regimes = res.asset_materializations_for_node("fee_regimes")[0].metadata
    assert "assumptions — keeper, 1.44 bp: " in regimes["assumptions"].value
    summaries = res.output_for_node("strategy_backtest")
    from fundarb_core.backtest.engine import STRATEGIES

    assert [s["strategy"] for s in summaries] == list(STRATEGIES)
    assert all(s["hours"] == 12 for s in summaries)
    fees = res.output_for_node("fee_regimes")
    assert [s["fee_bps"] for s in fees] == [0.0, 1.44, 4.5, None]
    # the same keeper decisions pay more as fees rise; at 0 bp the fee line is zero
    assert fees[0]["fees"] == 0.0
    oracle = res.output_for_node("oracle_bound")
    assert set(oracle["asset"]) <= set(ASSETS) and oracle["net_usd"].is_monotonic_decreasing
    safety = res.output_for_node("leverage_safety")
    assert sorted(safety["k"]) == [3.0, 4.0, 5.0, 6.0]
    # every report is an MLflow run in the SQLite store, with its plots
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("fundarb/backtests")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["report"] for r in runs) == ["fee_regimes", "leverage_safety", "oracle_bound",
                                                           "strategy_backtest"]
    strat_run = next(r for r in runs if r.data.tags["report"] == "strategy_backtest")
    assert "keeper.net_apr" in strat_run.data.metrics and "naive_24h.net_apr" in strat_run.data.metrics
    arts = [a.path for a in client.list_artifacts(strat_run.info.run_id, "plots")]
    assert "plots/equity_vs_oracle.png" in arts


def test_default_period_ends_at_the_last_tradable_hour(bt_db: Path) -> None:
    import duckdb

    with duckdb.connect(str(bt_db), read_only=True) as conn:
        end = tradable_end(conn)
        funding = pd.Timestamp(conn.execute("SELECT max(ts) FROM funding_rates").fetchall()[0][0])
        market = max(pd.Timestamp(conn.execute("SELECT max(ts) FROM open_interest").fetchall()[0][0]),
                     pd.Timestamp(conn.execute("SELECT max(ts) FROM candles").fetchall()[0][0]) + pd.Timedelta(hours=1))
    assert end == min(funding, market).floor("h")
    assert end > pd.Timestamp("2026-01-15 12:00")  # the window's data reach into its last day


def test_cli_backtests_any_data_directory_as_one_json_document(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = write_layout(tmp_path / "data", _tables())
    rc = main(["backtest", "--data", str(data), "--start", "2026-01-14", "--end", "2026-01-14 12:00",
               "--strategy", "keeper", "naive", "--fees", "1.44", "--out", str(tmp_path / "out"), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # progress goes to stderr: stdout stays one JSON document
    # not a terminal: plain progress lines, the last one at 2 runs × 12 hours
    assert "backtest: 0/24 hours (0 %)" in captured.err and "backtest: 24/24 hours (100 %)" in captured.err
    assert doc["config"]["data"] == str(data) and doc["config"]["fees"] == 1.44
    keys = {"net_apr", "gross_funding", "fees", "sharpe", "max_drawdown", "turnover", "oracle_apr", "capture_ratio",
            "per_asset"}
    assert [r["label"] for r in doc["runs"]] == ["keeper, 1.44 bp", "naive 24h, 1.44 bp"]
    assert all(keys <= set(r) for r in doc["runs"])
    assert doc["oracle"]["1.44 bp"]["slots_net_usd"] >= 0
    assert (tmp_path / "out" / "report.md").read_text().startswith("**keeper, 1.44 bp**")
    # the fee regime reached the paper exchange: every fill paid exactly 1.44 bp of its notional
    assert doc["runs"][0]["fees"] == pytest.approx(doc["runs"][0]["traded_usd"] * 1.44e-4)


def test_keeper_ledger_report_is_the_backtest_report_of_what_was_realised(bt_db: Path, tmp_path: Path) -> None:
    """Paper keeper cycles through Dagster, hour by hour, then the ledger report: the same figures a backtest
    reports, every dollar explained, and per position expected vs realised funding."""
    import shutil

    import duckdb

    from fundarb_core.backtest.report import contributions, ledger_view
    from fundarb_pipelines.assets.backtest import keeper_ledger_report
    from fundarb_pipelines.assets.keeper import keeper_assets

    db = tmp_path / "keeper.duckdb"
    shutil.copy(bt_db, db)
    ledger_db = tmp_path / "ledger.duckdb"  # the keeper's trading file, beside the warehouse
    resources = {"duckdb": FundarbDuckDB(database=str(db)), "trading": KeeperTrading(ledger_path=str(ledger_db))}
    for hour in pd.date_range("2026-01-14 00:00", "2026-01-14 10:00", freq="h"):
        res = dg.materialize(keeper_assets, resources=resources,
                             run_config={"ops": {"keeper_cycle": {"config": {"as_of": str(hour)}}}})
        assert res.success
    res = dg.materialize([keeper_ledger_report], resources=resources)
    meta = res.asset_materializations_for_node("keeper_ledger_report")[0].metadata
    summary = res.output_for_node("keeper_ledger_report")
    with duckdb.connect(str(ledger_db), read_only=True) as conn:
        positions = conn.execute("SELECT count(*) FROM ledger_positions").fetchall()[0][0]
        equity = conn.execute("SELECT equity_usd FROM performance_snapshots ORDER BY ts").fetchall()
        capital = conn.execute("SELECT sum(initial_usd) FROM ledger_accounts").fetchall()[0][0]
    with duckdb.connect(str(db)) as market, duckdb.connect(str(ledger_db)) as conn:
        view = ledger_view(conn, market)
        assert market.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'ledger%' "
                              "OR table_name LIKE 'paper%'").fetchall()[0][0] == 0  # trading stays out
    assert view is not None and positions >= 1 and meta["positions"].value == positions
    assert summary["net_pnl"] == pytest.approx(equity[-1][0] - capital)
    assert contributions(view)["net_usd"].sum() == pytest.approx(summary["net_pnl"], abs=1e-6)
    assert "expected_funding_usd" in meta["estimated_vs_realised"].value


def test_cli_rejects_a_reversed_period_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--start", "2026-01-14", "--end", "2026-01-13", "--no-mlflow"]) == 2
    assert capsys.readouterr().err == (
        "fundarb backtest: backtest end 2026-01-13 00:00:00 must be after start 2026-01-14 00:00:00 (UTC)\n")
