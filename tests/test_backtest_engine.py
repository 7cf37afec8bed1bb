"""The strategy backtest on real rows: it is the keeper's cycle, it is deterministic, it cannot see past its end,
and its report adds up."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.engine import BacktestConfig, BacktestRun, market_replica, run_backtest
from fundarb_core.backtest.forecasts import backtest_forecasts
from fundarb_core.backtest.policies import naive_trailing_choice
from fundarb_core.backtest.report import contributions, risk_ratios, summarise
from fundarb_core.forecast.registry import ForecastSettings
from fundarb_core.strategy import KeeperConfig, plan_cycle
from fundarb_core.strategy.planning import Position
from tests.conftest import alter_after, real_db, window_tables
from tests.keeper_support import cycle, paper_venue, snapshot_at

ASSETS = ("BTC", "ETH", "SOL", "DOGE", "HYPE")
START, END = pd.Timestamp("2026-01-14"), pd.Timestamp("2026-01-16")
FAST_FC = ForecastSettings(gbm_trees=40, refit_every=24)


def _tables(bundled: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    tables = window_tables(bundled, "2026-01-01", "2026-01-20")
    return {t: f[f["asset"].isin(ASSETS)].reset_index(drop=True) if "asset" in f else f for t, f in tables.items()}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    from fundarb_core.schema import LAYOUT_FILES
    from fundarb_core.sources.replay import BUNDLED_DATA_DIR

    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    return _tables(bundled)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tables: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    return real_db(tmp_path_factory.mktemp("bt"), tables)


@pytest.fixture(scope="module")
def keeper_run(db: duckdb.DuckDBPyConnection) -> BacktestRun:
    return run_backtest(db, BacktestConfig(start=START, end=END, strategy="keeper_spec"))  # the spec's busy rule


def _same(a: BacktestRun, b: BacktestRun) -> None:
    pd.testing.assert_series_equal(a.equity, b.equity)
    for name in ("positions", "fills", "funding"):
        pd.testing.assert_frame_equal(getattr(a, name).reset_index(drop=True), getattr(b, name).reset_index(drop=True))


def test_backtest_trades_and_its_report_adds_up(keeper_run: BacktestRun) -> None:
    run = keeper_run
    assert len(run.equity) == 49 and run.equity.index[0] == START and run.equity.index[-1] == END
    assert len(run.positions) >= 1 and len(run.fills) >= 2 and len(run.funding) > 0
    view = run.view()
    s = summarise(view)
    contrib = contributions(view)
    # every dollar is explained: funding + price P&L − fees per position sums to the equity change
    assert contrib["net_usd"].sum() == pytest.approx(s["net_pnl"], abs=1e-6)
    assert s["fees"] == pytest.approx(run.fills["fee_usd"].sum())
    assert s["gross_funding"] == pytest.approx(run.funding["amount_usd"].sum())
    assert s["fees"] > 0 and s["slippage"] > 0 and s["turnover"] > 0
    assert {r["asset"] for r in s["per_asset"]} == set(run.positions["asset"])
    # maker fees on entries, taker on exits: the paper exchange's rule, i.e. the keeper's
    opens = run.fills[run.fills["purpose"] == "open"]
    assert (opens["liquidity"] == "maker").all()


def test_first_cycle_is_the_live_keepers_decision(db: duckdb.DuckDBPyConnection, keeper_run: BacktestRun) -> None:
    """The replica changes nothing the keeper sees: the live keeper on a copy of the whole database, with the same
    (untouched) balances, takes the backtest's first action at the same hour."""
    venues = keeper_run.venues
    first = keeper_run.actions.iloc[0]
    t = pd.Timestamp(first["hour"])
    live = duckdb.connect(":memory:")
    replica = market_replica(db, START, END + pd.Timedelta(days=3), 24 * 31)  # the full history after START too
    for name in ("funding_rates", "open_interest", "orderbook_depth", "stg_funding_hourly", "stg_candles",
                 "volatility", "pair_features", "basis", "regime_labels"):
        live.register("_x", replica.sql(f"SELECT * FROM {name}").to_arrow_table())
        live.execute(f"CREATE TABLE {name} AS SELECT * FROM _x")
        live.unregister("_x")
    spec = KeeperConfig(decision_rule="spec")
    ex = paper_venue(live, spec, initial_balances={v: 10_000.0 for v in venues}, now=t)
    rep = cycle(live, ex, spec, t, venues=venues, dry_run=True)
    assert rep.action == first["action"] == "enter"
    taken = live.execute("SELECT asset, short_venue, long_venue FROM cycle_decisions WHERE taken AND stage = 'plan'"
                         ).fetchall()
    assert first["position_id"].startswith(".".join(taken[0]) + ".")


def test_rerun_is_identical(db: duckdb.DuckDBPyConnection, keeper_run: BacktestRun) -> None:
    _same(keeper_run, run_backtest(db, BacktestConfig(start=START, end=END, strategy="keeper_spec")))


def test_data_after_the_end_changes_nothing(tmp_path: Path, db: duckdb.DuckDBPyConnection,
                                            tables: dict[str, pd.DataFrame]) -> None:
    """Every raw row known after END altered or deleted: the keeper with and without forecasts, the naive rule and
    the patient rule (its trailing means included) give identical results, forecasts included."""
    altered = real_db(tmp_path, alter_after(tables, pd.Timestamp(END, tz="UTC")))
    short_end = START + pd.Timedelta(hours=24)
    for strategy in ("keeper", "keeper_forecast", "naive", "patient"):
        cfg = BacktestConfig(start=START, end=short_end, strategy=strategy, forecast=FAST_FC)
        fc = fc2 = None
        if strategy == "keeper_forecast":
            fc, fc2 = backtest_forecasts(db, cfg), backtest_forecasts(altered, cfg)
            assert len(fc) > 0
            pd.testing.assert_frame_equal(fc, fc2)
        run = run_backtest(db, cfg, fc)
        _same(run, run_backtest(altered, cfg, fc2))
        if strategy == "patient":
            assert len(run.fills) > 0  # it traded on its trailing means, so they were compared too
    # … while the altered rows are really there: the oracle past END sees them
    a = db.execute("SELECT sum(rate) FROM funding_rates WHERE ts > ?", [END.to_pydatetime()]).fetchall()[0][0]
    b = altered.execute("SELECT sum(rate) FROM funding_rates WHERE ts > ?", [END.to_pydatetime()]).fetchall()[0][0]
    assert a != pytest.approx(b)


def test_positions_outlive_their_price_feed(db: duckdb.DuckDBPyConnection) -> None:
    """The data end on 2026-01-20: after the last prices age out, legs the venues still hold must stay live
    positions in the ledger (valued at the other leg's or the last fill price), not read as flat and be
    forgotten as 'failed'."""
    run = run_backtest(db, BacktestConfig(start="2026-01-19 00:00", end="2026-01-20 12:00", strategy="keeper_spec"))
    held = run.fills.groupby(["position_id", "venue"])["qty"].sum().abs().groupby("position_id").max()
    holding = sorted(held[held > 1e-9].index)
    assert holding
    status = run.positions.set_index("position_id")["status"]
    # still tracked (open, or closing while no price lets an exit order be sized), never forgotten
    assert not status.loc[holding].isin(["failed", "closed"]).any(), status.loc[holding].to_dict()


def test_forecasts_are_fitted_before_each_hour(db: duckdb.DuckDBPyConnection) -> None:
    from fundarb_core.forecast.registry import model_factory
    from fundarb_core.forecast.targets import build_panel
    from fundarb_core.forecast.walk_forward import walk_forward

    panel = build_panel(db, "spread_24h", START - pd.Timedelta(hours=216), START + pd.Timedelta(hours=24))
    preds = walk_forward(panel, model_factory("lightgbm", FAST_FC), START, START + pd.Timedelta(hours=24),
                         refit_every=24)
    assert (pd.to_datetime(preds["fit_origin"]) <= pd.to_datetime(preds["hour"])).all()
    assert (pd.to_datetime(preds["fit_origin"]) >= START).all()  # the first fit is at START: data before it only


def test_naive_rule_holds_the_best_trailing_pair_and_switches_at_twice(db: duckdb.DuckDBPyConnection) -> None:
    cfg, one_slot = KeeperConfig(), KeeperConfig(max_positions=1)
    unsized = ["no_liquidity_data", "low_volume", "below_min_size"]
    for t in pd.date_range(START, END, freq="h"):  # an hour with two sized pairs whose trailing spread is > 0
        snap = snapshot_at(db, t, config=cfg, baseline_forecast="mean_24h")
        plans = plan_cycle(snap, [], cfg).plans.assign(blocked="")
        sized = plans[~plans["reason"].isin(unsized) & (plans["expected_spread_per_hour"] > 0)]
        if len(sized) >= 2:
            break
    assert len(sized) >= 2
    act = naive_trailing_choice(plans, [], snap, cfg)
    ranked = sized.sort_values("expected_spread_per_hour", ascending=False, kind="stable")
    best, second = ranked.iloc[0], ranked.iloc[1]
    assert act.kind == "enter" and act.plan is not None
    assert (act.plan.asset, act.plan.short_venue, act.plan.long_venue) == (
        best["asset"], best["short_venue"], best["long_venue"])
    # the only slot holds the best pair, marked at a trailing spread `old`: switch into the runner-up (or another
    # pair) only when it is at least twice as good
    alt = float(second["expected_spread_per_hour"])
    for ratio, expected in ((2.5, "switch"), (1.5, "none")):
        old = alt / ratio
        held = [Position(asset=str(best["asset"]), short_venue=str(best["short_venue"]),
                         long_venue=str(best["long_venue"]), size_usd=1000.0, total_costs_usd=1.0,
                         exit_fees_usd=0.5, hourly_return_usd=old * 1000.0)]
        act = naive_trailing_choice(plans, held, snap, one_slot)
        assert act.kind == expected
        if expected == "switch":
            assert act.plan is not None and act.plan.expected_spread_per_hour >= 2 * old
            assert (act.plan.short_venue, act.plan.long_venue) != (best["short_venue"], best["long_venue"]) \
                or act.plan.asset != best["asset"]


def test_risk_ratios_by_hand() -> None:
    idx = pd.date_range("2026-01-01", periods=4, freq="h")
    eq = pd.Series([101.0, 99.0, 100.0, 102.0], index=idx)
    r = np.array([1.0, -2.0, 1.0, 2.0]) / 100.0
    got = risk_ratios(eq, 100.0)
    assert got["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(8760))
    assert got["sortino"] == pytest.approx(r.mean() / np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(8760))
    assert got["max_drawdown"] == pytest.approx(1 - 99.0 / 101.0)
