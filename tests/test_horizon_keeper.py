"""The keeper's default decisions on real rows: the expected-spread predictor, the horizon rule (enter, hold, exit to
flat, switch), the portfolio allocation and its constraints, the walk-forward parameter choice — and none of them
can see the future."""

from __future__ import annotations

from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.engine import BacktestConfig, BacktestRun, run_backtest
from fundarb_core.backtest.parameter_search import choose_parameters, month_starts
from fundarb_core.backtest.research_sim import ResearchMarket, simulate
from fundarb_core.storage.market_queries import spread_history
from fundarb_core.strategy.allocation import allocate, horizon_choice
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.expected_spread import PredictorParams, SpreadHistory, expected_spread, predictor_frame
from fundarb_core.strategy.horizon_rule import ENTER, EXIT, FLAT, HOLD, SWITCH, HorizonParams, decide
from fundarb_core.strategy.planning import mark_positions, plan_cycle
from tests.conftest import alter_after, real_db, window_tables
from tests.keeper_support import snapshot_at

ASSETS = ("BTC", "ETH", "SOL", "DOGE", "HYPE")
DATA = ("2025-11-20", "2026-01-25")
START, END = pd.Timestamp("2026-01-10"), pd.Timestamp("2026-01-17")


def _tables() -> dict[str, pd.DataFrame]:
    from fundarb_core.schema import LAYOUT_FILES
    from fundarb_core.sources.replay import BUNDLED_DATA_DIR

    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    tables = window_tables(bundled, *DATA)
    return {t: f[f["asset"].isin(ASSETS)].reset_index(drop=True) if "asset" in f else f for t, f in tables.items()}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return _tables()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tables: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    return real_db(tmp_path_factory.mktemp("horizon"), tables)


@pytest.fixture(scope="module")
def panel(db: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return spread_history(db, pd.Timestamp("2000-01-01").to_pydatetime(), pd.Timestamp("2100-01-01").to_pydatetime())


FAST = PredictorParams(windows=(24, 168), shrink_z=0.0)
"""A quick predictor (the short windows of the search grid): it turns within a week, so the week has exits."""


@pytest.fixture(scope="module")
def keeper_run(db: duckdb.DuckDBPyConnection) -> BacktestRun:
    return run_backtest(db, BacktestConfig(start=START, end=END, walk_forward=False, predictor=FAST,
                                           keeper=replace(KeeperConfig(), holding_hours=720.0, entry_margin=0.0)))


# ---------------------------------------------------------------------------------------------- the rule


def test_rule_on_hand_computed_cases() -> None:
    """H = 100 h, margin 0.5: entry needs E × 100 > 1.5 × round trip; hold needs E > 0; a switch needs the gain
    over 100 h to pay 1.5 × (exit + entry)."""
    p = HorizonParams(horizon_hours=100.0, entry_margin=0.5)
    held = np.array([False, False, True, True, True, True])
    e_held = np.array([np.nan, np.nan, 1e-5, -1e-6, 1e-5, 1e-5])
    exit_held = np.full(6, 5e-4)
    e_best = np.array([2.1e-5, 1.9e-5, 1.2e-5, 1e-6, 3.0e-5, 2.0e-5])
    entry_best, exit_best = np.full(6, 4e-4), np.full(6, 1e-3)  # round trip 1.4e-3 → entry needs E > 2.1e-5
    got = decide(held, e_held, exit_held, e_best, entry_best, exit_best, p)
    # 2.1e-5 × 100 = 2.1e-3 = 1.5 × 1.4e-3 is not strictly more: flat;  held, best other only slightly better: hold;
    # E_held < 0 and no switch pays: exit;  (3e-5 − 1e-5) × 100 = 2e-3 > 1.5 × 9e-4: switch;
    # (2e-5 − 1e-5) × 100 = 1e-3 < 1.35e-3: hold
    assert got.tolist() == [FLAT, FLAT, HOLD, EXIT, SWITCH, HOLD]
    assert decide(np.array([False]), np.array([np.nan]), np.array([0.0]), np.array([2.2e-5]), np.array([4e-4]),
                  np.array([1e-3]), p).tolist() == [ENTER]


def test_allocation_on_a_hand_computed_case() -> None:
    """Three plans on two venues with 12,000 USD of margin each (L = 1): A (a→b, 10,000 USD cap, value 0.02/USD),
    B (a→b on another asset, 8,000 cap, 0.015/USD), C (b→a on A's asset, 9,000 cap, 0.03/USD).  One pair per asset
    leaves {A or C} + B; C + B needs 9,000 + 8,000 = 17,000 of margin on each venue, so the best is C at 9,000
    (270) + B at 3,000 (45) = 315, against A 10,000 (200) + B 2,000 (30) = 230."""
    x = allocate(values=np.array([0.02, 0.015, 0.03]), sizes=np.array([10_000.0, 8_000.0, 9_000.0]),
                 leverage=np.ones(3), asset=np.array([0, 1, 0]), short=np.array([0, 0, 1]),
                 long_=np.array([1, 1, 0]), free_margin=np.array([12_000.0, 12_000.0]), venue_delta=np.zeros(2),
                 delta_limit=1e9, gross_room=1e9, max_count=6, min_size=5.0)
    assert x.tolist() == [0.0, 3_000.0, 9_000.0]
    # a per-venue net delta limit of 5,000: C shorts b and longs a (a: +9,000) unless B offsets it (a: −3,000)
    y = allocate(values=np.array([0.02, 0.015, 0.03]), sizes=np.array([10_000.0, 8_000.0, 9_000.0]),
                 leverage=np.ones(3), asset=np.array([0, 1, 0]), short=np.array([0, 0, 1]),
                 long_=np.array([1, 1, 0]), free_margin=np.array([12_000.0, 12_000.0]), venue_delta=np.zeros(2),
                 delta_limit=5_000.0, gross_room=1e9, max_count=6, min_size=5.0)
    net_a = y[2] - y[1] - y[0]
    assert abs(net_a) <= 5_000.0 + 1e-6 and y.max() > 0
    assert allocate(values=np.array([0.02]), sizes=np.array([10_000.0]), leverage=np.ones(1), asset=np.zeros(1,
                    dtype=int), short=np.zeros(1, dtype=int), long_=np.ones(1, dtype=int),
                    free_margin=np.array([1e5, 1e5]), venue_delta=np.zeros(2), delta_limit=1e9, gross_room=1e9,
                    max_count=0, min_size=5.0).tolist() == [0.0]


def _expected_at(panel: pd.DataFrame, t: pd.Timestamp, params: PredictorParams) -> pd.DataFrame:
    hist = SpreadHistory.from_panel(panel[pd.to_datetime(panel["hour"]) <= t])
    return predictor_frame(hist, params, t, t + pd.Timedelta(hours=1)).drop(columns="hour")


def test_allocation_constraints_hold_on_real_snapshots(db: duckdb.DuckDBPyConnection, panel: pd.DataFrame) -> None:
    """On real snapshots with real predictor values and uneven free collateral: each venue's margin, one pair per
    asset, gross exposure, each venue's net delta and the action cap hold."""
    cfg = replace(KeeperConfig(), holding_hours=336.0, entry_margin=0.25, max_actions_per_cycle=4)
    balances = {"binance": 4_000.0, "bybit": 9_000.0, "hyperliquid": 2_500.0, "okx": 6_000.0, "dydx": 3_000.0,
                "lighter": 7_000.0}
    entries = 0
    for t in pd.date_range("2026-01-05", "2026-01-20", freq="37h"):
        snap = snapshot_at(db, t, balances_usd=balances, config=cfg)
        fc = _expected_at(panel, t, PredictorParams())
        fcube = snap.forecast_spread_per_hour.copy()
        a_idx = {str(a): i for i, a in enumerate(snap.assets)}
        v_idx = {v: i for i, v in enumerate(snap.venues)}
        for r in fc.itertuples(index=False):
            if r.asset in a_idx and r.short_venue in v_idx and r.long_venue in v_idx:
                fcube[a_idx[r.asset], v_idx[r.short_venue], v_idx[r.long_venue]] = r.forecast_spread_per_hour
        snap = snap.replace(forecast_spread_per_hour=fcube)
        res = plan_cycle(snap, [], cfg)
        acts = horizon_choice(res.plans, mark_positions([], snap), snap, cfg, max_venue_net_delta_usd=6_000.0)
        plans = [a.plan for a in acts if a.kind == "enter" and a.plan is not None]
        entries += len(plans)
        assert len(plans) <= cfg.max_actions_per_cycle
        assert len({p.asset for p in plans}) == len(plans)
        margin: dict[str, float] = {}
        delta: dict[str, float] = {}
        for p in plans:
            for v, sign in ((p.short_venue, -1.0), (p.long_venue, 1.0)):
                margin[v] = margin.get(v, 0.0) + p.size_usd / p.leverage
                delta[v] = delta.get(v, 0.0) + sign * p.size_usd
            assert p.expected_spread_per_hour * cfg.holding_hours * p.size_usd > p.total_costs_usd
        for v, used in margin.items():
            assert used <= balances[v] * cfg.balance_fraction + 0.05, (t, v, used)
        assert all(abs(d) <= 6_000.0 + 0.05 for d in delta.values()), (t, delta)
        assert sum(2 * p.size_usd for p in plans) <= cfg.max_gross_exposure_usd
    assert entries > 0, "no snapshot allocated anything: the constraints were never exercised"


# ---------------------------------------------------------------------------------------------- the keeper


def test_keeper_exits_to_flat_when_the_expected_spread_turns_negative(keeper_run: BacktestRun) -> None:
    """A real week: some position leaves to flat by an ``exit`` action — its pair's expected spread was no longer
    positive — and its legs are flat afterwards (closed, not switched)."""
    exits = keeper_run.actions[keeper_run.actions["action"] == "exit"]
    assert len(exits), keeper_run.actions.to_string()
    closed = keeper_run.positions.set_index("position_id").loc[exits["closed_position_id"]]
    assert (closed["status"] == "closed").all() and (closed["reason"] == "exit").all()
    assert set(keeper_run.actions["action"]) <= {"enter", "exit", "switch", "events"}


def test_keeper_decisions_name_the_predictor(db: duckdb.DuckDBPyConnection, panel: pd.DataFrame) -> None:
    """The live cycle with the predictor's values: the audit row of every plan it takes names the predictor and
    the expected spread it entered on."""
    import json

    from tests.keeper_support import cycle, duck_ledger, paper_venue

    cfg = replace(KeeperConfig(), holding_hours=336.0, entry_margin=0.25)
    venues = ("binance", "bybit", "hyperliquid", "okx", "dydx", "lighter")
    conn = duckdb.connect(":memory:")
    for name in ("funding_rates", "open_interest", "orderbook_depth", "stg_funding_hourly", "stg_candles",
                 "volatility", "pair_features", "basis", "regime_labels", "spread_panel"):
        conn.register("_x", db.sql(f"SELECT * FROM {name}").to_arrow_table())
        conn.execute(f"CREATE TABLE {name} AS SELECT * FROM _x")
        conn.unregister("_x")
    t = pd.Timestamp("2026-01-12 09:00")
    ex = paper_venue(conn, cfg, initial_balances={v: 10_000.0 for v in venues}, now=t.to_pydatetime())
    duck_ledger(conn)
    rep = cycle(conn, ex, cfg, t, venues=venues, forecasts=_expected_at(panel, t, PredictorParams()))
    assert rep.taken and all(d["kind"] == "enter" for d in rep.taken)
    rows = conn.execute("SELECT asset, details FROM cycle_decisions WHERE taken AND stage = 'plan'").fetchall()
    assert len(rows) == len(rep.taken)
    for _asset, details in rows:
        d = json.loads(details)
        assert d["predictor"] == "trailing_blend" and d["expected_spread_per_hour"] > 0 and d["horizon_hours"] == 336


def test_default_keeper_loses_less_than_the_spec_rule_on_this_week(db: duckdb.DuckDBPyConnection) -> None:
    """The default keeper (walk-forward parameters; this short history keeps the a-priori ones) against the spec's
    rule on the same real week: the spec's rule pays round trips for hourly noise."""
    keeper = run_backtest(db, BacktestConfig(start=START, end=END))
    spec = run_backtest(db, BacktestConfig(start=START, end=END, strategy="keeper_spec"))
    assert len(spec.actions[spec.actions["action"] != "events"]) > 0
    assert keeper.equity.iloc[-1] > spec.equity.iloc[-1], (keeper.equity.iloc[-1], spec.equity.iloc[-1])


# ---------------------------------------------------------------------------------------------- integrity


def test_predictor_reads_no_spread_after_its_hour(panel: pd.DataFrame) -> None:
    """Every observed spread after ``t`` replaced: the predictor at and before ``t`` does not move."""
    hist = SpreadHistory.from_panel(panel)
    t = hist.hours.get_loc(pd.Timestamp("2026-01-08 13:00"))
    altered = hist.spread.copy()
    altered[t + 1:] = -3.0 * altered[t + 1:] + 1e-4
    for params in (PredictorParams(), PredictorParams((24, 168), 0.0)):
        a = expected_spread(hist, params)
        b = expected_spread(replace(hist, spread=altered), params)
        np.testing.assert_array_equal(a[: t + 1], b[: t + 1])
        assert not np.allclose(np.nan_to_num(a[t + 30:]), np.nan_to_num(b[t + 30:]))  # the alteration bites


def test_walk_forward_choice_ignores_data_after_the_month_start(tmp_path_factory: pytest.TempPathFactory,
                                                                tables: dict[str, pd.DataFrame],
                                                                db: duckdb.DuckDBPyConnection) -> None:
    """Every raw row after 2026-01-01 altered or dropped: the parameters chosen for January do not change
    (the search scored only what was known before it), while February's may."""
    cut = pd.Timestamp("2026-01-01")
    altered = real_db(tmp_path_factory.mktemp("altered"), alter_after(tables, cut.tz_localize("UTC")))
    cfg = KeeperConfig()
    far = pd.Timestamp("2100-01-01").to_pydatetime()
    m1 = ResearchMarket.from_panel(spread_history(db, pd.Timestamp("2000-01-01").to_pydatetime(), far), cfg, 1.0)
    m2 = ResearchMarket.from_panel(spread_history(altered, pd.Timestamp("2000-01-01").to_pydatetime(), far), cfg,
                                   1.0)
    week = 24 * 7  # this window holds six weeks of history: score on one
    a = choose_parameters(m1, cut, pd.Timestamp("2026-01-20"), min_history_hours=week)
    b = choose_parameters(m2, cut, pd.Timestamp("2026-01-20"), min_history_hours=week)
    assert a[0].scored_to is not None and a[0].scored_to < cut
    assert (a[0].predictor, a[0].rule, a[0].score) == (b[0].predictor, b[0].rule, b[0].score)
    runs = simulate(m1, a[0].predictor, [a[0].rule])
    assert runs[0].trades > 0


def test_month_starts() -> None:
    assert month_starts(pd.Timestamp("2026-01-10"), pd.Timestamp("2026-03-01")) == [
        pd.Timestamp("2026-01-10"), pd.Timestamp("2026-02-01")]


def test_backtest_reports_the_parameters_of_each_month(db: duckdb.DuckDBPyConnection,
                                                       keeper_run: BacktestRun) -> None:
    assert list(keeper_run.parameters["month"]) == ["2026-01"]
    assert keeper_run.parameters.iloc[0]["windows_h"] == "24/168"
    assert keeper_run.parameters.iloc[0]["horizon_h"] == 720.0


def test_capacity_bound_by_hand() -> None:
    """Seven venues × 10,000 USD at L_min = 1 carry 7 × 10,000 × 0.9 / (2 × 10,000) = 3.15 full positions: the
    three best assets' bounds plus 15 % of the fourth (a negative bound adds nothing)."""
    from fundarb_core.backtest.capacity import capacity_bound, capacity_slots

    cfg = KeeperConfig()
    slots = capacity_slots(70_000.0, cfg)
    assert slots == pytest.approx(3.15)
    assert capacity_slots(1e9, cfg) == cfg.max_gross_exposure_usd / (2 * cfg.max_position_size_usd)  # gross cap
    table = pd.DataFrame({"asset": list("ABCDE"), "net_usd": [100.0, 400.0, -50.0, 300.0, 200.0]})
    assert capacity_bound(table, slots) == pytest.approx(400 + 300 + 200 + 0.15 * 100)
    assert capacity_bound(table, 10.0) == pytest.approx(1000.0) and capacity_bound(table.iloc[:0], 3.0) == 0.0
