"""The fast simulator and the trading path are the same keeper.

The backtest's fast path (market read once as a tape, ledger and paper venue in memory) and the path paper and
live trading use (market read from the warehouse as the cycle goes, ledger and paper accounts written to DuckDB
at every change) run the same cycle on a real two-week window: positions, orders, fills, funding payments and
equity must be identical.  A read of one instant and the period's read give the same market at every hour.
"""

from __future__ import annotations

from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.engine import BacktestConfig, BacktestRun, run_backtest
from fundarb_core.storage.market_view import WarehouseMarketView
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.expected_spread import PredictorParams
from fundarb_core.strategy.snapshot import PAIR_FIELDS, VENUE_FIELDS
from tests.conftest import real_db, window_tables

ASSETS = ("BTC", "ETH", "SOL", "DOGE", "HYPE")
START, END = pd.Timestamp("2026-01-10"), pd.Timestamp("2026-01-24")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    from fundarb_core.schema import LAYOUT_FILES
    from fundarb_core.sources.replay import BUNDLED_DATA_DIR

    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    tables = window_tables(bundled, "2025-12-01", "2026-01-25")
    tables = {t: f[f["asset"].isin(ASSETS)].reset_index(drop=True) if "asset" in f else f for t, f in tables.items()}
    return real_db(tmp_path_factory.mktemp("equiv"), tables)


def _frames(run: BacktestRun) -> dict[str, pd.DataFrame]:
    return {"positions": run.positions, "fills": run.fills, "funding": run.funding, "final_marks": run.final_marks,
            "actions": run.actions}


HORIZON = BacktestConfig(start=START, end=END, walk_forward=False,
                         predictor=PredictorParams(windows=(24, 168), shrink_z=0.0),
                         keeper=replace(KeeperConfig(), holding_hours=720.0, entry_margin=0.0))
"""The default rule with a quick predictor (one of the search grid's): it trades often enough to compare."""


@pytest.mark.parametrize("cfg", [HORIZON, replace(HORIZON, strategy="keeper_spec")], ids=["horizon", "spec"])
def test_fast_path_and_trading_path_give_identical_results(db: duckdb.DuckDBPyConnection,
                                                           cfg: BacktestConfig) -> None:
    fast = run_backtest(db, cfg)
    slow = run_backtest(db, cfg, persistent=True)
    assert len(fast.positions) >= 10 and len(fast.funding) >= 100  # it traded: the comparison means something
    pd.testing.assert_series_equal(fast.equity, slow.equity, check_exact=True)
    for name, frame in _frames(fast).items():
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), _frames(slow)[name].reset_index(drop=True),
                                      check_exact=True, obj=name)


def test_one_instant_read_equals_the_period_read(db: duckdb.DuckDBPyConnection) -> None:
    cfg = KeeperConfig()
    period = WarehouseMarketView(db, cfg).preload(START, END)
    for t in pd.date_range(START, END, freq="13h").to_pydatetime():  # hours spread over the window
        one = WarehouseMarketView(db, cfg)  # reads this instant alone, as the live keeper does
        a, b = period.snapshot(t, config=cfg), one.snapshot(t, config=cfg)
        assert list(a.assets) == list(b.assets) and a.venues == b.venues
        for f in (*VENUE_FIELDS, *PAIR_FIELDS, "anomaly", "liquidity_stress"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"{f} at {t}")
        assert dict(period.prices(t)) == dict(one.prices(t))
        for venue, asset in period.prices(t):
            for buy in (True, False):
                x, y = period.liquidity(venue, asset, t, buy), one.liquidity(venue, asset, t, buy)
                assert x == y or (np.isnan(x) and np.isnan(y))
        assert period.newest_settlement(t) == one.newest_settlement(t)
    assert np.isfinite(a.rate_per_hour).sum() >= 10  # a real market was compared
