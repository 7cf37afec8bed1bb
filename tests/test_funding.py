"""Funding math with hand-computed values, and intervals resolved per row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fundarb_core.funding import (
    from_apr,
    infer_intervals,
    interval_to_apr,
    per_hour,
    per_interval,
    resolve_intervals,
    snap_interval,
    to_apr,
)


def test_conversions_hand_computed() -> None:
    # 0.01 % per 8h = 0.00125 %/h = 10.95 % APR
    assert per_hour(0.0001, 8) == pytest.approx(0.0000125)
    assert to_apr(0.0000125) == pytest.approx(0.1095)
    assert interval_to_apr(0.0001, 8) == pytest.approx(0.1095)
    # 0.01 % per 1h is 8x the per-hour rate of 0.01 % per 8h: 87.6 % APR
    assert interval_to_apr(0.0001, 1) == pytest.approx(0.876)
    # 4h interval: 0.02 % / 4 = 0.005 %/h
    assert per_hour(0.0002, 4) == pytest.approx(0.00005)
    assert per_interval(0.00005, 8) == pytest.approx(0.0004)
    assert from_apr(0.876) == pytest.approx(0.0001)


def test_spread_mixing_intervals_uses_per_hour() -> None:
    # short Hyperliquid paying 0.0013 %/h, long Binance paying 0.01 %/8h:
    # spread = 1.3e-5 - 1.25e-5 = 5e-7 per hour = 0.438 % APR; subtracting the raw rates
    # (1.3e-5 - 1e-4) would even get the sign wrong
    spread_h = per_hour(0.000013, 1) - per_hour(0.0001, 8)
    assert spread_h == pytest.approx(5e-7)
    assert to_apr(spread_h) == pytest.approx(0.00438)


def test_snap_interval_tolerates_jitter_but_not_holes() -> None:
    got = snap_interval(np.array([7.9999986, 1.0, 4.02, 6.0, 3.0, 24.0, np.nan]))
    np.testing.assert_array_equal(got[:3], [8.0, 1.0, 4.0])
    assert np.isnan(got[3:]).all()


def _frame(venue: str, sym: str, hours: list[float], intervals: list[float]) -> pd.DataFrame:
    t0 = pd.Timestamp("2025-06-01", tz="UTC")
    return pd.DataFrame(
        {
            "venue": venue,
            "venue_symbol": sym,
            "ts": [t0 + pd.Timedelta(hours=h) for h in hours],
            "interval_hours": intervals,
        }
    )


def test_infer_from_gaps_follows_an_interval_change() -> None:
    # Binance moving a capped symbol from 8h to 1h: settlements at 0, 8, 16, 17, 18
    f = _frame("binance", "XUSDT", [0, 8, 16, 17, 18], [np.nan] * 5)
    got = infer_intervals(f).tolist()
    # first row takes the gap to the next one; 16 closes an 8h interval; 17 and 18 close 1h ones
    assert got == [8.0, 8.0, 8.0, 1.0, 1.0]


def test_resolve_reported_inferred_and_venue_rule() -> None:
    f = pd.concat(
        [
            _frame("bybit", "INJUSDT", [0, 8, 16], [8.0, np.nan, 8.0]),
            # Lighter is hourly; a source that stamped 3h after a 3h hole is overridden
            _frame("lighter", "BTC", [0, 1, 4], [1.0, 1.0, 3.0]),
        ],
        ignore_index=True,
    )
    interval, source = resolve_intervals(f, {"lighter": 1.0})
    assert interval.tolist() == [8.0, 8.0, 8.0, 1.0, 1.0, 1.0]
    assert source.tolist() == ["reported", "inferred", "reported", "reported", "reported", "venue_rule"]


def test_real_rows_mixed_interval_apr(bundled: dict[str, pd.DataFrame]) -> None:
    f = bundled["funding_rates"]
    row = f[(f.venue == "binance") & (f.venue_symbol == "HYPEUSDT")].iloc[0]
    assert row.interval_hours == 4.0
    assert interval_to_apr(row.rate, row.interval_hours) == pytest.approx(row.rate / 4 * 8760)
