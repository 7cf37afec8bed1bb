"""Validation on real rows with one field broken at a time: each lands in rejected_rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from fundarb_core.ingest import prepare
from fundarb_core.schema import CANDLES, FUNDING, OPEN_INTEREST

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def _real_funding(bundled: dict[str, pd.DataFrame], venue: str, sym: str, n: int) -> pd.DataFrame:
    f = bundled["funding_rates"]
    return f[(f.venue == venue) & (f.venue_symbol == sym)].sort_values("ts").head(n).reset_index(drop=True)


def test_malformed_funding_rows_are_rejected_with_reasons(bundled: dict[str, pd.DataFrame]) -> None:
    rows = _real_funding(bundled, "binance", "BTCUSDT", 12)
    rows.loc[1, "rate"] = 1.79e9  # a 1.79e11 % payload, as seen in public keepers
    rows.loc[2, "rate"] = np.nan
    rows.loc[3, "ts"] = pd.Timestamp("2030-01-01", tz="UTC")
    rows.loc[4, "venue_symbol"] = "BTCEUR"
    rows.loc[5, "mark_price"] = -1.0
    rows.loc[6, "rate"] = np.inf
    out = prepare(FUNDING, rows, now=NOW)
    rej = out.rejected.set_index("record")
    assert len(out.accepted) == 6
    assert len(out.rejected) == 6
    by_field = out.rejected.groupby("field").size().to_dict()
    assert by_field == {"rate": 3, "ts": 1, "venue_symbol": 1, "mark_price": 1}
    big = out.rejected[out.rejected.value == "1790000000.0"].iloc[0]
    assert big.venue == "binance" and big.venue_symbol == "BTCUSDT" and "sane bound" in big.reason
    assert (out.rejected.reason.str.len() > 0).all()
    # nothing is lost: the whole raw record is kept as JSON
    rec = json.loads(rej.index[0])
    assert set(rec) >= {"venue", "venue_symbol", "ts", "rate", "interval_hours"}


def test_interval_outside_allowed_set_is_rejected_unless_inferable(bundled: dict[str, pd.DataFrame]) -> None:
    rows = _real_funding(bundled, "bybit", "BTCUSDT", 6)
    rows.loc[2, "interval_hours"] = 3.0  # a reported 3h on an 8h symbol: not allowed
    rows.loc[4, "interval_hours"] = np.nan  # missing: inferred from the 8h gaps
    out = prepare(FUNDING, rows, now=NOW)
    assert out.rejected.field.tolist() == ["interval_hours"]
    inferred = out.accepted[out.accepted.interval_source == "inferred"]
    assert inferred.interval_hours.tolist() == [8.0]
    assert np.allclose(out.accepted.rate_per_hour, out.accepted.rate / 8)


def test_conflicting_duplicate_is_rejected_not_silently_replaced(bundled: dict[str, pd.DataFrame]) -> None:
    rows = _real_funding(bundled, "hyperliquid", "ETH", 4)
    dup = rows.iloc[[1]].copy()
    dup["rate"] = dup["rate"] * 2
    same = rows.iloc[[2]].copy()
    out = prepare(FUNDING, pd.concat([rows, dup, same], ignore_index=True), now=NOW)
    assert len(out.accepted) == 4  # the exact copy collapses
    assert out.rejected.reason.tolist() == ["duplicate key with conflicting values"]


def test_candles_and_open_interest_rules(bundled: dict[str, pd.DataFrame]) -> None:
    c = bundled["candles"].head(5).reset_index(drop=True)
    c.loc[0, "high"] = c.loc[0, "low"] * 0.5
    c.loc[1, "close"] = 0.0
    c.loc[2, "volume"] = -3.0
    out = prepare(CANDLES, c, now=NOW)
    assert sorted(out.rejected.field) == ["close", "high", "volume"]
    oi = bundled["open_interest"].head(3).reset_index(drop=True)
    oi.loc[0, "oi_usd"] = -5.0
    out = prepare(OPEN_INTEREST, oi, now=NOW)
    assert out.rejected.field.tolist() == ["oi_usd"] and len(out.accepted) == 2
