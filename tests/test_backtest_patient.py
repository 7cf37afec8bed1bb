"""The patient rule (issue 11) on real rows: it enters on its trailing 336 h mean and exits to flat when that mean,
computed here independently from the observed spreads, turns negative."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.engine import BacktestConfig, BacktestRun, run_backtest
from fundarb_core.backtest.policies import PATIENT_MEAN_HOURS
from tests.conftest import real_db, window_tables

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
