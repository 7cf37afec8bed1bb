"""``CcxtSource`` against loopback servers that speak the real Binance / Bybit / Hyperliquid wire
formats and serve the bundled real data.  ccxt is not mocked: its own request building and
response parsing run; only ``exchange.urls['api']`` points at 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import ccxt
import numpy as np
import pandas as pd
import pytest

from fundarb_core.schema import RAW_TABLES
from fundarb_core.sources.base import MarketSource
from fundarb_core.sources.ccxt_source import CcxtSource, SourceError
from fundarb_core.venues import get_venue
from tests.wire.servers import (
    BinanceUsdmServer,
    BybitServer,
    HyperliquidServer,
    WireServer,
    load_table,
    loopback_urls,
)

START = datetime(2025, 3, 20, tzinfo=UTC)
END = datetime(2025, 4, 3, tzinfo=UTC)  # two weeks: 42 8h settlements, 336 hourly ones

SYMBOL = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "hyperliquid": "BTC"}
FUNDING_PATH = {
    "binance": "/fapi/v1/fundingRate",
    "bybit": "/v5/market/funding/history",
    "hyperliquid": "/info:fundingHistory",
}
CANDLE_PATH = {
    "binance": "/fapi/v1/klines",
    "bybit": "/v5/market/kline",
    "hyperliquid": "/info:candleSnapshot",
}
# small pages so that every venue needs several requests for the window
PAGE_LIMIT = {"binance": 10, "bybit": 20, "hyperliquid": 100}
VENUES = list(SYMBOL)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, WireServer]]:
    started: dict[str, WireServer] = {
        "binance": BinanceUsdmServer().start(),
        "bybit": BybitServer().start(),
        "hyperliquid": HyperliquidServer().start(),
    }
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(autouse=True)
def _clean(servers: dict[str, WireServer]) -> None:
    for server in servers.values():
        server.reset()


class Sleeps(list[float]):
    """Records backoff waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_source(
    servers: dict[str, WireServer], venue: str, symbol: str | None = None, **kwargs: object
) -> tuple[CcxtSource, Sleeps]:
    urls = loopback_urls(get_venue(venue).ccxt_id, servers[venue].url)
    exchange = CcxtSource.make_exchange(venue, urls=urls, rate_limit_ms=1, timeout_ms=5000)
    sleeps = Sleeps()
    options: dict[str, object] = {"page_limit": PAGE_LIMIT[venue], "backoff_s": 0.01, "sleep": sleeps}
    options.update(kwargs)
    source = CcxtSource({venue: [symbol or SYMBOL[venue]]}, {venue: exchange}, **options)  # type: ignore[arg-type]
    return source, sleeps


def bundled(
    table: str, venue: str, start: datetime = START, end: datetime = END, symbol: str | None = None
) -> pd.DataFrame:
    df = load_table(table)
    df = df[(df["venue"] == venue) & (df["venue_symbol"] == (symbol or SYMBOL[venue]))]
    df = df[(df["ts"] >= pd.Timestamp(start)) & (df["ts"] < pd.Timestamp(end))].copy()
    df["ts"] = df["ts"].dt.floor("ms")  # the wire carries milliseconds
    return df.reset_index(drop=True)


def assert_source_frame(df: pd.DataFrame, table: str) -> None:
    assert list(df.columns) == list(RAW_TABLES[table].source_columns)
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"


# ------------------------------------------------------------------ pagination = parquet
@pytest.mark.parametrize("venue", VENUES)
def test_funding_pages_match_bundled_parquet(servers: dict[str, WireServer], venue: str) -> None:
    source, _ = make_source(servers, venue)
    got = source.fetch("funding_rates", START, END)
    want = bundled("funding", venue)

    assert_source_frame(got, "funding_rates")
    assert len(want) >= 42
    assert list(zip(got["ts"], got["rate"], strict=True)) == list(zip(want["ts"], want["rate"], strict=True))
    assert (got["venue"] == venue).all() and (got["venue_symbol"] == SYMBOL[venue]).all()
    assert servers[venue].count(FUNDING_PATH[venue]) >= 3
    if venue == "binance":  # Binance's payload carries the mark price
        np.testing.assert_array_equal(got["mark_price"].to_numpy(), want["mark_price"].to_numpy())
    else:
        assert got["mark_price"].isna().all()


# Bybit INJUSDT moved from 8h to 1h settlements on 2026-02-19 17:00 and back to 8h later.
INJ_START, INJ_END = datetime(2026, 2, 17, tzinfo=UTC), datetime(2026, 2, 21, tzinfo=UTC)


def test_bybit_newest_first_full_pages_across_an_interval_change(servers: dict[str, WireServer]) -> None:
    """Bybit keeps the *newest* rows of a truncated page.  Across the 8h→1h change the 20-row
    pages come back full; every row must still arrive (windows are sized, never skipped)."""
    source, _ = make_source(servers, "bybit", symbol="INJUSDT", page_limit=20)
    got = source.fetch("funding_rates", INJ_START, INJ_END)
    want = bundled("funding", "bybit", INJ_START, INJ_END, symbol="INJUSDT")
    assert len(want) == 40  # 9 eight-hourly + 31 hourly settlements; 20h windows fill up
    assert list(zip(got["ts"], got["rate"], strict=True)) == list(zip(want["ts"], want["rate"], strict=True))
    # today's reported interval (8h again) does not fit these 1h-spaced trailing rows: not stamped
    assert got["interval_hours"].isna().all()


def test_reported_interval_is_stamped_only_where_it_applies(servers: dict[str, WireServer]) -> None:
    """With the venue's clock inside the 1h regime, instruments-info reports 60 minutes: the 1h
    rows get 1.0, the 8h rows before the change stay NaN for ingestion to infer."""
    bybit = servers["bybit"]
    old_clock, bybit.clock_ms = bybit.clock_ms, int(INJ_END.timestamp() * 1000)
    try:
        source, _ = make_source(servers, "bybit", symbol="INJUSDT", page_limit=20, now=lambda: INJ_END)
        got = source.fetch("funding_rates", INJ_START, INJ_END)
    finally:
        bybit.clock_ms = old_clock
    change = pd.Timestamp("2026-02-19 17:00", tz="UTC")
    assert (got.loc[got["ts"] >= change, "interval_hours"] == 1.0).all()
    assert got.loc[got["ts"] < change, "interval_hours"].isna().all()


def test_pagination_recovers_rows_a_newest_first_page_cut() -> None:
    """Sub-hourly rows overfill an hour-sized window; a newest-first endpoint then drops the
    oldest rows of the page, and the pager must go back for them.  (Pure pagination logic: the
    callable stands in for an endpoint, no ccxt involved.)"""
    rows = [int(START.timestamp() * 1000) + i * 20 * 60_000 for i in range(100)]  # every 20 min
    calls: list[tuple[int, int]] = []

    def newest_first(since: int, until: int, limit: int) -> list[int]:
        calls.append((since, until))
        return [t for t in rows if since <= t <= until][-limit:]

    source = CcxtSource({"bybit": ["BTCUSDT"]}, {"bybit": CcxtSource.make_exchange("bybit")}, page_limit=5)
    got = source._paginate("bybit", "BTCUSDT", "fetch_x", "funding_rates", START,
                           datetime(2025, 3, 21, 9, 20, tzinfo=UTC), newest_first, lambda t: t)
    assert got == rows
    assert len(calls) > len(rows) / 5


@pytest.mark.parametrize("venue", VENUES)
def test_candles_pages_match_bundled_parquet(servers: dict[str, WireServer], venue: str) -> None:
    source, _ = make_source(servers, venue, page_limit=100)
    got = source.fetch("candles", START, END)
    want = bundled("candles", venue)

    assert_source_frame(got, "candles")
    assert len(want) >= 300  # real data: Hyperliquid's bundled candles have a few gaps
    assert got["ts"].tolist() == want["ts"].tolist()
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    assert (got["timeframe"] == "1h").all()
    assert servers[venue].count(CANDLE_PATH[venue]) >= 3


# ------------------------------------------------------------------ retries and errors
@pytest.mark.parametrize("venue", VENUES)
def test_429_is_retried_and_result_is_complete(servers: dict[str, WireServer], venue: str) -> None:
    server = servers[venue]
    server.inject("429", FUNDING_PATH[venue], times=1, skip=1)  # page 2 is rate-limited once
    source, sleeps = make_source(servers, venue)

    got = source.fetch("funding_rates", START, END)

    assert server.count(FUNDING_PATH[venue], status=429) == 1
    assert sleeps == [0.01]
    assert got["ts"].tolist() == bundled("funding", venue)["ts"].tolist()


@pytest.mark.parametrize("venue", VENUES)
def test_persistent_500_raises_source_error_naming_venue_and_method(
    servers: dict[str, WireServer], venue: str
) -> None:
    server = servers[venue]
    server.inject("500", FUNDING_PATH[venue], times=10, skip=1)
    source, sleeps = make_source(servers, venue, max_retries=2)

    with pytest.raises(SourceError) as info:
        source.fetch("funding_rates", START, END)

    message = str(info.value)
    assert venue in message and SYMBOL[venue] in message and "fetch_funding_rate_history" in message
    assert "3 attempts" in message
    assert server.count(FUNDING_PATH[venue], status=500) == 3  # first try + 2 retries
    assert sleeps == [0.01, 0.02]  # exponential backoff


@pytest.mark.parametrize("venue", VENUES)
def test_malformed_json_raises_source_error_without_retry(servers: dict[str, WireServer], venue: str) -> None:
    server = servers[venue]
    server.inject("malformed", FUNDING_PATH[venue], times=1, skip=1)  # page 1 fine, page 2 truncated
    source, sleeps = make_source(servers, venue)

    with pytest.raises(SourceError) as info:
        source.fetch("funding_rates", START, END)

    message = str(info.value)
    assert venue in message and "fetch_funding_rate_history" in message and "not valid JSON" in message
    assert server.count(FUNDING_PATH[venue]) == 2  # no retry of a bad payload, nothing returned
    assert sleeps == []


@pytest.mark.parametrize("venue", ["binance", "bybit"])
def test_exchange_error_payload_raises_source_error(servers: dict[str, WireServer], venue: str) -> None:
    """A well-formed venue error (Binance ``code``, Bybit ``retCode`` != 0) is an ExchangeError:
    not retried, surfaced as SourceError."""
    servers[venue].inject("error", FUNDING_PATH[venue], times=1, skip=1)
    source, sleeps = make_source(servers, venue)
    expected = rf"{venue} BTCUSDT: fetch_funding_rate_history failed: Bad(Symbol|Request)"
    with pytest.raises(SourceError, match=expected):
        source.fetch("funding_rates", START, END)
    assert sleeps == [] and servers[venue].count(FUNDING_PATH[venue]) == 2


def test_unknown_symbol_is_a_source_error(servers: dict[str, WireServer]) -> None:
    exchange = CcxtSource.make_exchange(
        "hyperliquid", urls=loopback_urls("hyperliquid", servers["hyperliquid"].url), rate_limit_ms=1
    )
    source = CcxtSource({"hyperliquid": ["NOPE"]}, {"hyperliquid": exchange})
    with pytest.raises(SourceError, match=r"hyperliquid NOPE: load_markets failed"):
        source.fetch("funding_rates", START, END)


# ------------------------------------------------------------------ snapshots and mapping
def test_hyperliquid_symbol_maps_to_unified_swap(servers: dict[str, WireServer]) -> None:
    source, _ = make_source(servers, "hyperliquid")
    assert source._unified("hyperliquid", "BTC") == "BTC/USDC:USDC"


def test_open_interest_history_and_snapshot(servers: dict[str, WireServer]) -> None:
    day = (datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC))
    # Binance has openInterestHist: the bundled snapshot comes back through the history endpoint
    source, _ = make_source(servers, "binance")
    got = source.fetch("open_interest", *day)
    want = bundled("open_interest", "binance", *day)
    assert got["ts"].tolist() == want["ts"].tolist()
    np.testing.assert_allclose(got["oi_usd"], want["oi_usd"], rtol=1e-12)

    # Hyperliquid has no history: a snapshot from metaAndAssetCtxs, coins x mark price
    hl = servers["hyperliquid"]
    old_clock, hl.clock_ms = hl.clock_ms, int(datetime(2026, 3, 7, 10, tzinfo=UTC).timestamp() * 1000)
    try:
        source, _ = make_source(servers, "hyperliquid", now=lambda: datetime(2026, 3, 7, 10, 30, tzinfo=UTC))
        got = source.fetch("open_interest", *day)
    finally:
        hl.clock_ms = old_clock
    want = bundled("open_interest", "hyperliquid", *day)
    want = want[want["ts"] <= pd.Timestamp("2026-03-07 10:00", tz="UTC")]
    assert got["ts"].tolist() == [pd.Timestamp("2026-03-07 10:30", tz="UTC")]
    np.testing.assert_allclose(got["oi_usd"].iloc[0], want["oi_usd"].iloc[-1], rtol=1e-9)


def test_orderbook_snapshot_mid_and_depth(servers: dict[str, WireServer]) -> None:
    hl = servers["hyperliquid"]
    depth = load_table("orderbook_depth")
    want = depth[(depth["venue"] == "hyperliquid") & (depth["venue_symbol"] == "BTC")].iloc[-1]
    now = datetime(2026, 3, 7, 12, tzinfo=UTC)
    old_clock, hl.clock_ms = hl.clock_ms, int(now.timestamp() * 1000)
    try:
        source, _ = make_source(servers, "hyperliquid", now=lambda: now)
        got = source.fetch("orderbook_depth", now.replace(hour=0), now.replace(hour=23))
    finally:
        hl.clock_ms = old_clock
    assert_source_frame(got, "orderbook_depth")
    assert got["ts"].tolist() == [pd.Timestamp(now)]
    assert got["mid_price"].iloc[0] == pytest.approx(want["mid_price"], rel=1e-12)
    assert got["bid_depth_usd"].iloc[0] == pytest.approx(want["bid_depth_usd"], rel=1e-9)


def test_snapshot_outside_window_is_not_returned(servers: dict[str, WireServer]) -> None:
    source, _ = make_source(servers, "hyperliquid", now=lambda: datetime(2026, 3, 7, 12, tzinfo=UTC))
    got = source.fetch("open_interest", START, END)  # 2025 window, snapshot taken in 2026
    assert got.empty and list(got.columns) == list(RAW_TABLES["open_interest"].source_columns)


# ------------------------------------------------------------------ construction
def test_exchanges_are_built_with_builder_and_broker_fees_off() -> None:
    hl = CcxtSource.make_exchange("hyperliquid")
    assert hl.options["builderFee"] is False and hl.options["approvedBuilderFee"] is False
    assert hl.options["fetchMarkets"]["types"] == ["swap"]
    assert hl.enableRateLimit is True
    binance = CcxtSource.make_exchange("binance")
    assert isinstance(binance, ccxt.binanceusdm)
    assert binance.options["broker"] == {}  # not deep-merged back into ccxt's broker ids
    bybit = CcxtSource.make_exchange("bybit")
    assert bybit.options["brokerId"] == "" and bybit.options["fetchMarkets"]["types"] == ["linear"]
    lighter = CcxtSource.make_exchange("lighter")
    assert lighter.options["integratorMakerFee"] == 0 and lighter.options["integratorTakerFee"] == 0
    assert lighter.options["builderFee"] is False


def test_api_keys_come_only_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", "k-123")
    monkeypatch.setenv("FUNDARB_BINANCE_SECRET", "s-456")
    assert not CcxtSource.make_exchange("binance").apiKey  # not asked for: none read
    exchange = CcxtSource.make_exchange("binance", api_key_env=True)
    assert (exchange.apiKey, exchange.secret) == ("k-123", "s-456")
    source = CcxtSource({"binance": ["BTCUSDT"]}, {"binance": exchange})
    assert "k-123" not in repr(source) and "s-456" not in repr(source)


def test_source_satisfies_protocol() -> None:
    source = CcxtSource({"binance": ["BTCUSDT"], "hyperliquid": ["BTC"]})
    assert isinstance(source, MarketSource)
    assert source.name == "ccxt" and source.venues() == ["binance", "hyperliquid"]
    empty = source.fetch("candles", END, START)  # empty window: no request at all
    assert empty.empty and list(empty.columns) == list(RAW_TABLES["candles"].source_columns)
