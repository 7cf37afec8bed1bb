"""The patient rule (issue 11) on real rows: it enters on its trailing 336 h mean and exits to flat when that mean,
computed here independently from the observed spreads, turns negative."""

from __future__ import annotations

from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.engine import BacktestConfig, BacktestRun, run_backtest
from fundarb_core.backtest.policies import PATIENT_MEAN_HOURS, patient_choice, patient_config, trailing_mean_forecasts
from fundarb_core.strategy import KeeperConfig, plan_cycle
from fundarb_core.strategy.planning import Position
from fundarb_core.strategy.snapshot import Snapshot
from tests.conftest import real_db, window_tables
from tests.keeper_support import snapshot_at

# ETH, Jan–Feb 2026: the patient rule holds hyperliquid/okx from 5 January until its 14-day mean spread dips below
# zero on 7 February (real bundled rows; found by running the rule over the bundled data).
START, END = pd.Timestamp("2026-01-05"), pd.Timestamp("2026-02-07 08:00")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    from fundarb_core.schema import LAYOUT_FILES
    from fundarb_core.sources.replay import BUNDLED_DATA_DIR

    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    return real_db(tmp_path_factory.mktemp("patient"), window_tables(bundled, "2025-12-20", "2026-02-08"))


@pytest.fixture(scope="module")
def run(db: duckdb.DuckDBPyConnection) -> BacktestRun:
    return run_backtest(db, BacktestConfig(start=START, end=END, strategy="patient", assets=("ETH",)))


def _trailing_mean(db: duckdb.DuckDBPyConnection, short: str, long: str, hour: pd.Timestamp) -> float:
    """The pair's mean observed spread over (hour − 336 h, hour], straight from the panel (not the rule's SQL)."""
    rows = db.execute("SELECT hour, observed_spread_per_hour FROM spread_panel WHERE asset = 'ETH' AND short_venue = ? "
                      "AND long_venue = ? AND observed_spread_per_hour IS NOT NULL", [short, long]).df()
    lo = hour - pd.Timedelta(hours=PATIENT_MEAN_HOURS)
    w = rows[(pd.to_datetime(rows["hour"]) > lo) & (pd.to_datetime(rows["hour"]) <= hour)]
    return float(np.mean(w["observed_spread_per_hour"].to_numpy()))


def test_patient_rule_exits_to_flat_when_its_trailing_mean_turns_negative(db: duckdb.DuckDBPyConnection,
                                                                          run: BacktestRun) -> None:
    acts = run.actions[run.actions["action"] != "events"].reset_index(drop=True)
    exits = acts[acts["action"] == "exit"]
    assert len(exits) >= 1
    ex = exits.iloc[0]
    pid = str(ex["closed_position_id"])
    pos = run.positions.set_index("position_id").loc[pid]
    hour = pd.Timestamp(ex["hour"])
    assert (pos["asset"], pos["short_venue"], pos["long_venue"]) == ("ETH", "hyperliquid", "okx")
    # entered at the start on a positive mean, held through every hour until the mean turned negative
    assert acts.iloc[0]["action"] == "enter" and acts.iloc[0]["position_id"] == pid
    assert not (acts["closed_position_id"] == pid).iloc[:exits.index[0]].any()
    assert _trailing_mean(db, "hyperliquid", "okx", hour) < 0 <= _trailing_mean(db, "hyperliquid", "okx",
                                                                                hour - pd.Timedelta(hours=1))
    assert "mean" in str(ex["reason"])
    # to flat: the closing fills cancel the opening ones on both venues, and the position is closed then
    legs = run.fills[run.fills["position_id"] == pid].groupby("venue")["qty"].sum()
    assert set(legs.index) == {"hyperliquid", "okx"} and np.allclose(legs.to_numpy(), 0.0, atol=1e-9)
    closes = run.fills[(run.fills["position_id"] == pid) & (run.fills["purpose"] != "open")]
    assert (pd.to_datetime(closes["ts"]) == hour).all()
    assert pos["status"] == "closed" and pd.Timestamp(pos["closed_at"]) == hour


def test_patient_entries_pay_their_round_trip(run: BacktestRun) -> None:
    """Every entry's recorded trailing mean × 720 h beats the round trip its plan priced."""
    enters = run.actions[run.actions["action"] == "enter"]
    assert len(enters)
    for reason in enters["reason"]:
        words = str(reason).split()
        mean, rt = float(words[1].removesuffix("/h")), float(words[-1])
        assert mean * 720 > rt > 0


def _snapshot_with_means(db: duckdb.DuckDBPyConnection, t: pd.Timestamp) -> tuple[Snapshot, KeeperConfig]:
    """The keeper's snapshot at ``t`` with the rule's trailing means as its forecasts, as the backtest feeds them."""
    cfg = patient_config(KeeperConfig())
    venues = [r[0] for r in db.execute("SELECT DISTINCT venue FROM funding_rates ORDER BY 1").fetchall()]
    snap = snapshot_at(db, t, balances_usd=dict.fromkeys(venues, 10_000.0), config=cfg)
    means = trailing_mean_forecasts(db, t, t + pd.Timedelta(hours=1))
    cube = snap.forecast_spread_per_hour.copy()
    a_idx = {str(a): i for i, a in enumerate(snap.assets)}
    for r in means.itertuples(index=False):
        if r.asset in a_idx and r.short_venue in snap.venues and r.long_venue in snap.venues:
            cube[a_idx[r.asset], snap.venues.index(r.short_venue), snap.venues.index(r.long_venue)] = \
                r.forecast_spread_per_hour
    return snap.replace(forecast_spread_per_hour=cube), cfg


def test_patient_switch_needs_the_gain_to_pay_two_round_trips(db: duckdb.DuckDBPyConnection) -> None:
    """A held ETH pair whose trailing mean sits just below / above ``m_new − (rt_new + rt_old) / 720``: switch into
    the best pair / hold; a negative mean: exit.  On a real snapshot, its plans and their priced round trips."""
    snap, cfg = _snapshot_with_means(db, pd.Timestamp("2026-01-10 12:00"))
    plans = plan_cycle(snap, [], cfg).plans.assign(blocked="")
    plans = plans[plans["asset"] == "ETH"].reset_index(drop=True)
    act = patient_choice(plans, [], snap, cfg)[0]
    assert act.kind == "enter" and act.plan is not None and act.details["predictor"] == "trailing_mean_336h"
    best, m_new = act.plan, float(act.details["value"])
    rt_new = best.total_costs_usd / best.size_usd
    assert m_new * 720 > rt_new
    # entry: the best pair's mean × 720 h just above / below its own round trip
    only = plans[(plans["short_venue"] == best.short_venue) & (plans["long_venue"] == best.long_venue)]
    bi, bs, bl = list(snap.assets.astype(str)).index("ETH"), *map(snap.venues.index, best.pair[1:])
    for factor, kind in ((1.01, "enter"), (0.99, "none")):
        cube = snap.forecast_spread_per_hour.copy()
        cube[bi, bs, bl] = rt_new / 720 * factor
        assert patient_choice(only, [], snap.replace(forecast_spread_per_hour=cube), cfg)[0].kind == kind
    # hold a different ETH pair, its trailing mean set around the switching threshold
    held_pair = next((s, lv) for s in snap.venues for lv in snap.venues
                     if s != lv and (s, lv) != (best.short_venue, best.long_venue))
    i, si, li = list(snap.assets.astype(str)).index("ETH"), *map(snap.venues.index, held_pair)
    rt_old = 0.0005
    held = Position(asset="ETH", short_venue=held_pair[0], long_venue=held_pair[1], size_usd=1000.0,
                    total_costs_usd=rt_old * 1000.0, exit_fees_usd=0.2, hourly_return_usd=0.0)
    threshold = m_new - (rt_new + rt_old) / 720
    assert threshold > 0
    for m_old, kind in ((threshold * 0.99, "switch"), (threshold * 1.01, "none"), (-1e-9, "exit")):
        cube = snap.forecast_spread_per_hour.copy()
        cube[i, si, li] = m_old
        acts = patient_choice(plans, [held], snap.replace(forecast_spread_per_hour=cube), replace(cfg, max_positions=1))
        assert acts[0].kind == kind, (m_old, acts)
        if kind == "switch":
            assert acts[0].close == held and acts[0].plan is not None and acts[0].plan.pair == best.pair
        if kind == "exit":  # to flat, and the asset is not re-entered in the same cycle
            assert acts[0].close == held and acts[0].plan is None and len(acts) == 1
