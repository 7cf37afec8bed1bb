"""Live market data through real ccxt exchanges (the synchronous ``ccxt`` module).

``CcxtSource`` implements the ``MarketSource`` protocol: for each configured venue and venue
symbol it pages through the venue's public REST history and returns frames with exactly the
table's source columns.  Design decisions, and why:

* **Venue-own symbols in, venue-own symbols out.**  The constructor takes ``BTCUSDT`` /
  ``BTC`` / ``BTC-USDT-SWAP`` exactly as the rest of the project stores them; the unified ccxt
  symbol is looked up in ``load_markets()`` and never leaks into the output, so rows from this
  source and from the replay source share keys.
* **Window-bounded pagination.**  Venues disagree on which rows a truncated page keeps: Binance
  and Hyperliquid return the *oldest* rows from ``since``, Bybit and OKX the *newest* rows of
  the range.  Advancing ``since`` past the last row of a newest-first page silently drops rows,
  and stopping at the first empty page stops at the first data gap.  So for venues not known to
  be oldest-first every request covers a window that can hold at most ``limit`` rows (``limit``
  × one hour, the shortest funding interval and the candle timeframe), and the loop runs until
  the window is covered, whatever the page sizes.  A full page is treated as possibly
  truncated and the uncovered parts are requested again.
* **All or nothing.**  Any failure (after retries for transient network errors) raises
  ``SourceError``; nothing partial is returned, so the caller's transaction writes nothing.
* **Malformed payloads are errors, not empty results.**  Some ccxt parsers turn a non-JSON body
  into an empty list (Hyperliquid checks ``isinstance(response, list)``); the exchanges built
  here validate every 2xx body as JSON in ccxt's ``on_rest_response`` hook, so a truncated body
  raises instead of looking like "no data".
* **No fee-bearing defaults.**  Every exchange gets the venue registry's ``ccxt_options``
  (builder / integrator / broker fees off), re-applied after construction because ccxt
  deep-merges constructor options into its defaults (``broker={}`` would otherwise be a no-op).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import ccxt
import numpy as np
import pandas as pd

from fundarb_core.schema import RAW_TABLES
from fundarb_core.venues import get_venue
from fundarb_core.venues.ccxt_client import make_exchange

T = TypeVar("T")
log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
TIMEFRAME = "1h"

# Per-call page size when ``page_limit`` is not set: the largest each venue's endpoint accepts.
_DEFAULT_LIMITS: dict[str, dict[str, int]] = {
    "funding_rates": {"binanceusdm": 1000, "bybit": 200, "hyperliquid": 500, "okx": 100, "dydx": 100},
    "candles": {"binanceusdm": 1500, "bybit": 1000, "hyperliquid": 1000, "okx": 100, "dydx": 100},
    "open_interest": {"binanceusdm": 500, "bybit": 200, "okx": 100},
}
_FALLBACK_LIMIT = 100

# (ccxt id, table) pairs whose endpoint returns the oldest rows from ``since`` when truncated;
# these may page over the whole remaining range and stop at a short page.  Everything else uses
# bounded windows (see module docstring).
_OLDEST_FIRST: frozenset[tuple[str, str]] = frozenset({
    ("binanceusdm", "funding_rates"),
    ("binanceusdm", "candles"),
    ("binanceusdm", "open_interest"),
    ("hyperliquid", "funding_rates"),
    ("hyperliquid", "candles"),
})

# A Retry-After longer than this is not waited out inside one ingest: the retry budget handles the rest.
MAX_RETRY_AFTER_S = 120.0



# Python errors ccxt's parsers raise on a payload of the wrong shape.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    TypeError, KeyError, ValueError, IndexError, AttributeError, ArithmeticError,
)

# A snapshot taken up to this long after ``end`` still belongs to the window that asked for it:
# callers ask for [last_run, now) and the request itself takes time.
SNAPSHOT_GRACE = timedelta(seconds=60)


class SourceError(RuntimeError):
    """A venue request failed for good; the message names venue, symbol, method and cause."""

    def __init__(self, venue: str, venue_symbol: str, method: str, cause: str) -> None:
        self.venue = venue
        self.venue_symbol = venue_symbol
        self.method = method
        super().__init__(f"{venue} {venue_symbol}: {method} failed: {cause}")


def _to_ms_floor(dt: datetime) -> int:
    return math.floor(_utc(dt).timestamp() * 1000)


def _to_ms_ceil(dt: datetime) -> int:
    return math.ceil(_utc(dt).timestamp() * 1000)


def _utc(dt: datetime) -> datetime:
    """Naive datetimes are taken as UTC (the project's only time zone)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _float(value: Any) -> float:
    """A number from a payload field, NaN when absent or empty (``""`` is Binance's null)."""
    if value is None or value == "":
        return math.nan
    return float(value)


def _value(value: Any) -> Any:
    """Like :func:`_float`, but a value that is not a number is kept as it came (``"abc"``), so that validation
    rejects it with the original value in ``rejected_rows`` instead of a NaN."""
    try:
        return _float(value)
    except (TypeError, ValueError):
        return value


def _retry_after_s(exchange: ccxt.Exchange | None) -> float | None:
    """Seconds from the last response's ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    headers = getattr(exchange, "last_response_headers", None) or {}
    raw = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(str(raw)) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def _interval_hours(value: Any) -> float:
    """ccxt's ``interval`` ('8h', '1h', '60m') or a number of hours → hours; NaN if unknown."""
    if value is None or value == "":
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    try:
        if text.endswith("h"):
            return float(text[:-1])
        if text.endswith("m"):
            return float(text[:-1]) / 60.0
        return float(text)
    except ValueError:
        return math.nan


class CcxtSource:
    """``MarketSource`` over real ccxt exchanges; see the module docstring for the design.

    ``venues`` maps a venue id of the registry to the venue's own symbols.  ``exchanges`` may
    hold pre-built exchanges (tests point them at loopback servers); missing ones are built by
    ``make_exchange`` on first use.  ``page_limit`` overrides every call's ``limit`` (tests make
    it small to force several pages).  ``now`` stamps snapshots; ``sleep`` is the backoff wait.
    """

    name = "ccxt"

    def __init__(
        self,
        venues: Mapping[str, list[str]],
        exchanges: Mapping[str, ccxt.Exchange] | None = None,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        page_limit: int | None = None,
        now: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        depth_levels: int = 100,
    ) -> None:
        for venue_id in venues:
            get_venue(venue_id)  # unknown venue -> clear error now, not mid-fetch
        if page_limit is not None and page_limit < 1:
            raise ValueError(f"page_limit must be >= 1, got {page_limit}")
        self._venues: dict[str, list[str]] = {v: list(s) for v, s in venues.items()}
        self._exchanges: dict[str, ccxt.Exchange] = dict(exchanges or {})
        for exchange in self._exchanges.values():
            self._guard_json(exchange)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.page_limit = page_limit
        self._now = now or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self.depth_levels = depth_levels
        self._symbols: dict[str, dict[str, str]] = {}
        self._binance_intervals: dict[str, float] | None = None
        self.short_histories: list[str] = []
        """One line per venue symbol whose rows start well after the window asked for (a late listing or a
        short history on the venue), so that a gap at the start of a backfill is reported, not silent."""

    def __repr__(self) -> str:  # never shows exchange objects (they may hold credentials)
        return f"CcxtSource(venues={self._venues!r})"

    # ------------------------------------------------------------------ construction
    @classmethod
    def make_exchange(
        cls,
        venue_id: str,
        api_key_env: bool = False,
        urls: Mapping[str, Any] | None = None,
        rate_limit_ms: int | None = None,
        timeout_ms: int | None = None,
    ) -> ccxt.Exchange:
        """The project's one ccxt client (:func:`fundarb_core.venues.ccxt_client.make_exchange`), with a 2xx body
        that is not JSON raising ``BadResponse``."""
        return cls._guard_json(make_exchange(venue_id, api_key_env, urls, rate_limit_ms, timeout_ms))

    @staticmethod
    def _guard_json(exchange: ccxt.Exchange) -> ccxt.Exchange:
        """Make a 2xx body that is not valid JSON raise ``BadResponse`` (idempotent).

        ccxt returns an unparseable body as a plain string, and some parsers then yield an
        empty list — indistinguishable from "no data".  ``on_rest_response`` is ccxt's hook for
        inspecting raw bodies; every endpoint used here answers JSON.
        """
        if getattr(exchange, "_fundarb_json_guard", False):
            return exchange
        original = exchange.on_rest_response

        def checked(code: Any, reason: Any, url: str, method: str, headers: Any, body: Any,
                    request_headers: Any, request_body: Any) -> Any:
            body = original(code, reason, url, method, headers, body, request_headers, request_body)
            if 200 <= int(code) < 300:
                try:
                    json.loads(body)
                except (TypeError, ValueError):
                    snippet = str(body)[:120]
                    raise ccxt.BadResponse(
                        f"{exchange.id} {method} {url} returned a body that is not valid JSON: {snippet!r}"
                    ) from None
            return body

        exchange.on_rest_response = checked
        exchange._fundarb_json_guard = True
        return exchange

    def exchange(self, venue_id: str) -> ccxt.Exchange:
        """The exchange for a venue, built on first use."""
        if venue_id not in self._exchanges:
            self._exchanges[venue_id] = self.make_exchange(venue_id)
        return self._exchanges[venue_id]

    # ------------------------------------------------------------------ protocol
    def venues(self) -> list[str]:
        return list(self._venues)

    def fetch(self, table: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows of ``table`` with ``start <= ts < end`` for every configured venue symbol.

        Raises ``SourceError`` if any venue/symbol fails; nothing partial is returned.
        """
        if table not in RAW_TABLES:
            raise ValueError(f"unknown table {table!r}; known: {', '.join(RAW_TABLES)}")
        start, end = _utc(start), _utc(end)
        spec = RAW_TABLES[table]
        if end <= start:
            return spec.empty_source_frame()
        fetchers: dict[str, Callable[[str, str, datetime, datetime], list[dict[str, Any]]]] = {
            "funding_rates": self._funding,
            "candles": self._candles,
            "open_interest": self._open_interest,
            "orderbook_depth": self._orderbook,
        }
        rows: list[dict[str, Any]] = []
        for venue_id, symbols in self._venues.items():
            for venue_symbol in symbols:
                rows.extend(fetchers[table](venue_id, venue_symbol, start, end))
        return self._frame(table, rows, start, end)

    # ------------------------------------------------------------------ tables
    def _funding(self, venue_id: str, venue_symbol: str, start: datetime,
                 end: datetime) -> list[dict[str, Any]]:
        ex = self.exchange(venue_id)
        symbol = self._unified(venue_id, venue_symbol)
        if not get_venue(venue_id).has_funding_history:
            return self._funding_snapshot(venue_id, venue_symbol, symbol, start, end)
        method = "fetch_funding_rate_history"
        items = self._paginate(
            venue_id, venue_symbol, method, "funding_rates", start, end,
            lambda since, until, limit: ex.fetch_funding_rate_history(symbol, since, limit, {"until": until}),
            lambda item: item["timestamp"],
        )
        rows: list[dict[str, Any]] = []
        try:
            for item in items:
                info = item.get("info") or {}
                rows.append({
                    "venue": venue_id,
                    "venue_symbol": venue_symbol,
                    "ts": int(item["timestamp"]),
                    "rate": _value(item["fundingRate"] if item.get("fundingRate") is not None
                                   else (info.get("fundingRate") if isinstance(info, dict) else None)),
                    "interval_hours": _interval_hours(item.get("interval")),
                    "mark_price": _float(info.get("markPrice")) if isinstance(info, dict) else math.nan,
                })
        except _PARSE_ERRORS as exc:
            raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc
        rows.sort(key=lambda r: r["ts"])
        current = self._current_interval_hours(venue_id, venue_symbol, symbol)
        if current is not None:
            self._stamp_trailing_interval(rows, current)
        return rows

    def _funding_snapshot(self, venue_id: str, venue_symbol: str, symbol: str, start: datetime,
                          end: datetime) -> list[dict[str, Any]]:
        """Venues without a history endpoint (Lighter): the current rate, stamped with the hour
        floor of the venue's timestamp (or of now when it gives none).

        Flooring makes every run within one settlement hour write the same key, so re-runs
        upsert instead of adding a second "settlement", and history accumulates across runs.
        ccxt's ``fundingTimestamp`` is not used: on most venues it is the *next* settlement.
        """
        ex = self.exchange(venue_id)
        method = "fetch_funding_rates"
        rates = self._call(venue_id, venue_symbol, method, lambda: ex.fetch_funding_rates([symbol]))
        try:
            entry = rates.get(symbol) if isinstance(rates, dict) else None
            if entry is None:
                raise KeyError(f"no funding rate for {symbol} in the response")
            stamp = entry.get("timestamp")
            taken = int(stamp) if stamp is not None else _to_ms_floor(self._now())
            row = {
                "venue": venue_id,
                "venue_symbol": venue_symbol,
                "ts": taken - taken % HOUR_MS,
                "rate": _float(entry.get("fundingRate")),
                "interval_hours": _interval_hours(entry.get("interval")),
                "mark_price": _float(entry.get("markPrice")),
            }
        except _PARSE_ERRORS as exc:
            raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc
        return [row] if _to_ms_floor(start) <= row["ts"] < _to_ms_ceil(end) else []

    def _candles(self, venue_id: str, venue_symbol: str, start: datetime,
                 end: datetime) -> list[dict[str, Any]]:
        bars = self._ohlcv(venue_id, venue_symbol, start, end)
        return [
            {"venue": venue_id, "venue_symbol": venue_symbol, "ts": ts, "timeframe": TIMEFRAME,
             "open": o, "high": h, "low": lo, "close": c, "volume": v}
            for ts, (o, h, lo, c, v) in bars.items()
        ]

    def _ohlcv(self, venue_id: str, venue_symbol: str, start: datetime,
               end: datetime) -> dict[int, tuple[float, float, float, float, float]]:
        ex = self.exchange(venue_id)
        symbol = self._unified(venue_id, venue_symbol)
        method = "fetch_ohlcv"
        items = self._paginate(
            venue_id, venue_symbol, method, "candles", start, end,
            lambda since, until, limit: ex.fetch_ohlcv(symbol, TIMEFRAME, since, limit, {"until": until}),
            lambda bar: bar[0],
        )
        try:
            return {
                int(bar[0]): (_float(bar[1]), _float(bar[2]), _float(bar[3]), _float(bar[4]), _float(bar[5]))
                for bar in items
            }
        except _PARSE_ERRORS as exc:
            raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc

    def _open_interest(self, venue_id: str, venue_symbol: str, start: datetime,
                       end: datetime) -> list[dict[str, Any]]:
        ex = self.exchange(venue_id)
        symbol = self._unified(venue_id, venue_symbol)
        if ex.has.get("fetchOpenInterestHistory") is True:
            method = "fetch_open_interest_history"
            items = self._paginate(
                venue_id, venue_symbol, method, "open_interest", start, end,
                lambda since, until, limit: ex.fetch_open_interest_history(
                    symbol, TIMEFRAME, since, limit, {"until": until}),
                lambda item: item["timestamp"],
            )
            closes: dict[int, tuple[float, ...]] | None = None
            rows = []
            try:
                for item in items:
                    ts = int(item["timestamp"])
                    value = _float(item.get("openInterestValue"))
                    if not np.isfinite(value):
                        # amount only (Bybit): value it at the close of the same hourly bar
                        if closes is None:
                            closes = dict(self._ohlcv(venue_id, venue_symbol, start, end))
                        bar = closes.get(ts - ts % HOUR_MS)
                        value = _float(item.get("openInterestAmount")) * (bar[3] if bar else math.nan)
                    rows.append({"venue": venue_id, "venue_symbol": venue_symbol, "ts": ts, "oi_usd": value})
            except _PARSE_ERRORS as exc:
                raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc
            return rows
        method = "fetch_open_interest"
        oi = self._call(venue_id, venue_symbol, method, lambda: ex.fetch_open_interest(symbol))
        try:
            value = _float(oi.get("openInterestValue"))
            if not np.isfinite(value):
                value = _float(oi.get("openInterestAmount")) * self._price(venue_id, venue_symbol, symbol, oi)
            ts = self._snapshot_ts(oi.get("timestamp"), start, end)
        except _PARSE_ERRORS as exc:
            raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc
        if ts is None:
            return []
        return [{"venue": venue_id, "venue_symbol": venue_symbol, "ts": ts, "oi_usd": value}]

    def _orderbook(self, venue_id: str, venue_symbol: str, start: datetime,
                   end: datetime) -> list[dict[str, Any]]:
        ex = self.exchange(venue_id)
        symbol = self._unified(venue_id, venue_symbol)
        method = "fetch_order_book"
        book = self._call(venue_id, venue_symbol, method,
                          lambda: ex.fetch_order_book(symbol, self.depth_levels))
        try:
            bids, asks = book["bids"], book["asks"]
            best_bid = _float(bids[0][0]) if bids else math.nan
            best_ask = _float(asks[0][0]) if asks else math.nan
            row = {
                "venue": venue_id,
                "venue_symbol": venue_symbol,
                "mid_price": (best_bid + best_ask) / 2.0,
                "bid_depth_usd": sum(_float(p) * _float(a) for p, a, *_ in bids) if bids else math.nan,
                "ask_depth_usd": sum(_float(p) * _float(a) for p, a, *_ in asks) if asks else math.nan,
            }
            ts = self._snapshot_ts(book.get("timestamp"), start, end)
        except _PARSE_ERRORS as exc:
            raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc
        return [] if ts is None else [{**row, "ts": ts}]

    # ------------------------------------------------------------------ helpers
    def _price(self, venue_id: str, venue_symbol: str, symbol: str, payload: Mapping[str, Any]) -> float:
        """Mark price for valuing an amount: from the payload when it carries one, else the ticker."""
        info = payload.get("info") if isinstance(payload.get("info"), dict) else {}
        for key in ("markPx", "markPrice", "oraclePx"):
            price = _float(info.get(key))
            if np.isfinite(price):
                return price
        ex = self.exchange(venue_id)
        ticker = self._call(venue_id, venue_symbol, "fetch_ticker", lambda: ex.fetch_ticker(symbol))
        for key in ("markPrice", "last", "close"):
            price = _float(ticker.get(key))
            if np.isfinite(price):
                return price
        return math.nan

    def _snapshot_ts(self, stamp: Any, start: datetime, end: datetime) -> int | None:
        """Timestamp (ms) for a snapshot, or None when it falls outside the window.

        A snapshot taken shortly after ``end`` (``SNAPSHOT_GRACE``) is stamped just before
        ``end``: the caller asked for "up to now" and the request itself took time.
        """
        ts = int(stamp) if stamp is not None else _to_ms_floor(self._now())
        lo, hi = _to_ms_floor(start), _to_ms_ceil(end)
        if lo <= ts < hi:
            return ts
        if hi <= ts <= hi + SNAPSHOT_GRACE.total_seconds() * 1000 and hi - 1 >= lo:
            return hi - 1
        return None

    def _current_interval_hours(self, venue_id: str, venue_symbol: str, symbol: str) -> float | None:
        """The funding interval the venue reports for the symbol *now*, if it reports one."""
        ex = self.exchange(venue_id)
        if ex.id == "bybit":
            minutes = _float((ex.market(symbol).get("info") or {}).get("fundingInterval"))
            return minutes / 60.0 if np.isfinite(minutes) and minutes > 0 else None
        if ex.id == "binanceusdm":
            if self._binance_intervals is None:
                method = "fapiPublicGetFundingInfo"
                payload = self._call(venue_id, venue_symbol, method, lambda: ex.fapiPublicGetFundingInfo())
                try:
                    self._binance_intervals = {
                        str(item["symbol"]): float(item["fundingIntervalHours"]) for item in payload
                    }
                except _PARSE_ERRORS as exc:
                    raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc
            # the endpoint lists only symbols with adjusted caps/intervals; the rest settle 8h
            default = get_venue(venue_id).default_interval_hours
            return self._binance_intervals.get(ex.market(symbol)["id"], default)
        return None

    def _stamp_trailing_interval(self, rows: list[dict[str, Any]], hours: float) -> None:
        """Stamp the reported *current* interval on the rows it provably applies to.

        The venue reports only today's interval, and intervals change (8h → 4h → 1h), so it is
        written only on the trailing run of rows whose gap to the previous row equals it, and on
        the latest row when that row is the current settlement.  Earlier rows keep what the
        payload said (usually NaN) and ingestion infers them from the gaps.
        """
        if not rows:
            return
        step = hours * HOUR_MS
        tolerance = 5 * 60_000
        last = rows[-1]
        is_current = _to_ms_floor(self._now()) - last["ts"] <= step + tolerance
        if is_current and not np.isfinite(last["interval_hours"]):
            last["interval_hours"] = hours
        for i in range(len(rows) - 1, 0, -1):
            if abs(rows[i]["ts"] - rows[i - 1]["ts"] - step) > tolerance:
                break
            if not np.isfinite(rows[i]["interval_hours"]):
                rows[i]["interval_hours"] = hours

    def _unified(self, venue_id: str, venue_symbol: str) -> str:
        """The ccxt unified symbol of a venue's own symbol, via ``load_markets()``.

        Binance/Bybit/OKX/dYdX: the market ``id``.  Hyperliquid: the market id is an asset index
        and the coin name (``BTC``, ``xyz:AAPL``) is ``baseName`` / ``info['name']``.  Lighter:
        ``info['symbol']``.  Swap markets win over spot/futures of the same id.
        """
        table = self._symbols.get(venue_id)
        if table is None:
            ex = self.exchange(venue_id)
            markets = self._call(venue_id, "*", "load_markets", ex.load_markets)
            table = {}
            try:
                ordered = sorted(markets.values(), key=lambda m: (not m.get("swap"), not m.get("linear")))
                for market in reversed(ordered):  # swap/linear last so they overwrite
                    info = market.get("info") if isinstance(market.get("info"), dict) else {}
                    names = (market.get("id"), market.get("baseName"), info.get("name"), info.get("symbol"))
                    for key in names:
                        if isinstance(key, str) and key:
                            table[key] = market["symbol"]
                    table[market["symbol"]] = market["symbol"]
            except _PARSE_ERRORS as exc:
                raise SourceError(venue_id, "*", "load_markets", f"malformed payload: {exc!r}") from exc
            self._symbols[venue_id] = table
        if venue_symbol not in table:
            raise SourceError(venue_id, venue_symbol, "load_markets",
                              f"symbol not listed by {self.exchange(venue_id).id}")
        return table[venue_symbol]

    def _limit(self, venue_id: str, table: str) -> int:
        """Page size: ``page_limit`` when set, capped at the venue's maximum when known.

        The cap matters for correctness, not just politeness: Hyperliquid returns at most 500
        funding rows whatever is asked, and a 500-row page read against a 1000 limit would look
        "short" and end an oldest-first pagination early.
        """
        venue_max = _DEFAULT_LIMITS.get(table, {}).get(self.exchange(venue_id).id)
        if self.page_limit is None:
            return venue_max or _FALLBACK_LIMIT
        return min(self.page_limit, venue_max) if venue_max else self.page_limit

    def _paginate(
        self,
        venue_id: str,
        venue_symbol: str,
        method: str,
        table: str,
        start: datetime,
        end: datetime,
        call: Callable[[int, int, int], list[Any]],
        ts_of: Callable[[Any], Any],
    ) -> list[Any]:
        """Every item with ``start <= ts < end`` by repeated ``call(since, until, limit)``.

        ``until`` is inclusive (ccxt's convention).  Oldest-first endpoints page over the rest
        of the range and stop at a short page; the others get windows of ``limit`` hours.  A full
        page may be truncated at either end, so the parts of its window before its first and
        after its last row are queued again; a window is never dropped for being empty.
        """
        limit = self._limit(venue_id, table)
        oldest_first = (self.exchange(venue_id).id, table) in _OLDEST_FIRST
        lo_ms, hi_ms = _to_ms_floor(start), _to_ms_ceil(end)
        # (lo, hi, bounded): bounded windows hold at most ``limit`` hours; an oldest-first endpoint pages over
        # the rest of the range until a page is not full, then the rest is checked in bounded windows, because
        # an empty or short page (a venue hiccup, a gap in its history) proves nothing about later rows.
        pending: list[tuple[int, int, bool]] = [(lo_ms, hi_ms, not oldest_first)]
        found: dict[int, Any] = {}
        while pending:
            lo, hi, bounded = pending.pop()
            if lo >= hi:
                continue
            win_hi = min(hi, lo + limit * HOUR_MS) if bounded else hi
            page = self._call(venue_id, venue_symbol, method,
                              lambda lo=lo, win_hi=win_hi: call(lo, win_hi - 1, limit))
            try:
                stamps = []
                for item in page:
                    ts = int(ts_of(item))
                    if lo <= ts < win_hi:
                        found[ts] = item
                        stamps.append(ts)
            except _PARSE_ERRORS as exc:
                raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc
            # after the window (LIFO: pushed first so it runs after any re-query of the front)
            if len(page) >= limit and stamps:
                pending.append((max(max(stamps) + 1, lo + 1), hi, bounded))
                if bounded and not oldest_first and min(stamps) - lo >= HOUR_MS:
                    pending.append((lo, min(stamps), True))  # a newest-first page may have cut these
            elif not bounded:
                pending.append((max(stamps) + 1 if stamps else lo, hi, True))
            elif win_hi < hi:
                pending.append((win_hi, hi, True))
        self._note_short_history(venue_id, venue_symbol, table, found, lo_ms, hi_ms)
        return [found[ts] for ts in sorted(found)]

    def _note_short_history(self, venue_id: str, venue_symbol: str, table: str, found: Mapping[int, Any],
                            lo_ms: int, hi_ms: int) -> None:
        """Report a venue symbol whose rows start more than a day after the window's start (or that has none)."""
        if hi_ms - lo_ms <= 24 * HOUR_MS:
            return
        first = min(found) if found else None
        if first is not None and first - lo_ms <= 24 * HOUR_MS:
            return
        since = pd.Timestamp(lo_ms, unit="ms", tz="UTC")
        what = (f"history starts {pd.Timestamp(first, unit='ms', tz='UTC')}" if first is not None
                else "no rows")
        line = f"{venue_id} {venue_symbol} {table}: {what} (window from {since}); a late listing or a short history"
        self.short_histories.append(line)
        log.warning(line)

    def _call(self, venue_id: str, venue_symbol: str, method: str, fn: Callable[[], T]) -> T:
        """Run one ccxt call: retry transient network errors with exponential backoff, turn
        everything else (exchange errors, bad or unparseable payloads) into ``SourceError``."""
        attempt = 0
        while True:
            try:
                return fn()
            except ccxt.NetworkError as exc:  # RateLimitExceeded, DDoSProtection, timeouts, 5xx
                if attempt >= self.max_retries:
                    raise SourceError(
                        venue_id, venue_symbol, method,
                        f"gave up after {attempt + 1} attempts: {type(exc).__name__}: {exc}",
                    ) from exc
                wait = self.backoff_s * (2 ** attempt)
                if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
                    asked = _retry_after_s(self._exchanges.get(venue_id))  # the venue's own Retry-After wins
                    if asked is not None:
                        wait = max(wait, min(asked, MAX_RETRY_AFTER_S))
                self._sleep(wait)
                attempt += 1
            except ccxt.BaseError as exc:  # ExchangeError, BadResponse, BadSymbol, NotSupported …
                raise SourceError(venue_id, venue_symbol, method, f"{type(exc).__name__}: {exc}") from exc
            except _PARSE_ERRORS as exc:  # ccxt's parsers on a payload of the wrong shape
                raise SourceError(venue_id, venue_symbol, method, f"malformed payload: {exc!r}") from exc

    @staticmethod
    def _frame(table: str, rows: Iterable[dict[str, Any]], start: datetime, end: datetime) -> pd.DataFrame:
        """Rows → the table's source columns, ``ts`` as UTC ``datetime64[us]``, window-filtered."""
        spec = RAW_TABLES[table]
        rows = list(rows)
        if not rows:
            return spec.empty_source_frame()
        df = pd.DataFrame(rows)
        df["ts"] = pd.to_datetime(df["ts"].astype("int64"), unit="ms", utc=True).astype("datetime64[us, UTC]")
        for col in spec.source_columns:
            if col not in ("venue", "venue_symbol", "ts", "timeframe"):
                num = pd.to_numeric(df[col], errors="coerce")
                kept = num.isna() & df[col].map(lambda v: isinstance(v, str))  # "abc": keep it for rejected_rows
                df[col] = num.astype("float64") if not kept.any() else num.astype(object).where(~kept, df[col])
        df = df[(df["ts"] >= pd.Timestamp(start)) & (df["ts"] < pd.Timestamp(end))]
        key = [c for c in spec.key if c in df.columns]
        df = df.drop_duplicates(subset=key, keep="last").sort_values(key, kind="stable")
        return df.loc[:, list(spec.source_columns)].reset_index(drop=True)
