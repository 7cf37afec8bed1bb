"""Loopback HTTP servers that speak the venues' real REST wire formats, for tests only.

Each server serves *real* rows from the bundled parquet files (``fundarb_core/data/market``) in
the exact JSON shape the venue's public API returns, so the real ccxt exchange classes run
their own request building and response parsing against them.  Nothing in ccxt is mocked: the
tests only point ``exchange.urls['api']`` at ``http://127.0.0.1:<port>``.

Venue behaviours that matter for pagination are reproduced on purpose:

* Binance ``/fapi/v1/fundingRate`` and ``/fapi/v1/klines`` return the *oldest* rows from
  ``startTime`` (at most ``limit``).
* Bybit ``/v5/market/funding/history`` and ``/v5/market/kline`` return the *newest* rows of the
  ``[startTime, endTime]`` range, newest first, so a client that advances ``since`` past the last
  row of a truncated page silently loses rows — the source must size its windows instead.
* Hyperliquid ``fundingHistory`` returns at most 500 rows, ``candleSnapshot`` at most 5000.

Fault injection: ``server.inject("429" | "500" | "malformed" | "error", match, times=1, skip=0)``
makes ``times`` requests whose route key contains ``match`` (after ``skip`` good ones) fail that
way; "error" is the venue's own well-formed error envelope.  The route key is the
URL path for REST venues and ``"/info:<type>"`` for Hyperliquid.  Every request is logged in
``server.requests`` (``RequestRecord``), so tests can count pages and retries.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[2] / "fundarb_core" / "data" / "market"
HOUR_MS = 3_600_000
FAULT_KINDS = ("429", "500", "malformed", "error", "empty", "429-retry-after")


@cache
def load_table(name: str) -> pd.DataFrame:
    """One bundled parquet table with ``ts_ms`` (int milliseconds) added; cached per process."""
    df = pd.read_parquet(DATA_DIR / f"{name}.parquet")
    df["venue"] = df["venue"].astype(str)
    df["venue_symbol"] = df["venue_symbol"].astype(str)
    df["ts_ms"] = (df["ts"].astype("datetime64[us, UTC]").astype("int64") // 1000).astype("int64")
    return df.sort_values(["venue", "venue_symbol", "ts_ms"], kind="stable").reset_index(drop=True)


@cache
def rows_for(table: str, venue: str, symbol: str) -> pd.DataFrame:
    """The bundled rows of one venue/symbol, oldest first (cached: servers answer many pages)."""
    df = load_table(table)
    return df[(df["venue"] == venue) & (df["venue_symbol"] == symbol)]


def book_levels(venue: str, symbol: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """One (price, size) level a side rebuilt from the bundled depth snapshot.

    The data keeps only aggregates (mid, bid/ask depth in USD), so the levels straddle the
    recorded mid by one basis point and price × size equals the recorded depth; a side whose
    depth was not recorded gets the other side's size (its depth is then not asserted).
    """
    d = rows_for("orderbook_depth", venue, symbol)
    if d.empty:
        return None
    r = d.iloc[-1]
    bid_px, ask_px = r.mid_price * (1 - 1e-4), r.mid_price * (1 + 1e-4)
    bid_sz = r.bid_depth_usd / bid_px if np.isfinite(r.bid_depth_usd) else math.nan
    ask_sz = r.ask_depth_usd / ask_px if np.isfinite(r.ask_depth_usd) else math.nan
    bid_sz = bid_sz if np.isfinite(bid_sz) else ask_sz
    ask_sz = ask_sz if np.isfinite(ask_sz) else bid_sz
    return (bid_px, bid_sz), (ask_px, ask_sz)


def num(x: Any) -> str:
    """A float as the plain decimal string venues send (``"0.0000125"``, never ``"1.25e-05"``).

    ``repr`` is the shortest string that round-trips, so parsing it back gives the parquet value
    bit for bit; ``Decimal`` only removes the exponent.
    """
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    return format(Decimal(repr(float(x))), "f")


@dataclass
class RequestRecord:
    """One request as the server saw it."""

    method: str
    path: str
    params: dict[str, str]
    body: Any
    route: str
    status: int = 200


@dataclass
class Fault:
    """A pending injected failure for requests whose route key contains ``match``."""

    kind: str
    match: str
    times: int = 1
    skip: int = 0  # let this many matching requests through first (fail "page 2")


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class WireServer:
    """Base class: a threaded HTTP server on 127.0.0.1 with a request log and fault queue."""

    venue: str = ""

    def __init__(self, clock_ms: int | None = None) -> None:
        # the "current time" of the simulated venue, used by snapshot endpoints
        self.clock_ms = clock_ms if clock_ms is not None else int(load_table("funding")["ts_ms"].max())
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each keep-alive reply waits ~40 ms for a delayed ACK

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                reply = server._dispatch(method, self.path, raw)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> WireServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- test hooks ------------------------------------------------------------------------
    def inject(self, kind: str, match: str, times: int = 1, skip: int = 0) -> None:
        """Fail ``times`` requests whose route key contains ``match``, after ``skip`` good ones."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self.faults.append(Fault(kind, match, times, skip))

    def count(self, match: str, status: int | None = None) -> int:
        """How many logged requests have a route key containing ``match`` (and that status)."""
        with self._lock:
            return sum(
                1 for r in self.requests if match in r.route and (status is None or r.status == status)
            )

    def reset(self) -> None:
        """Forget the request log and any pending faults (between tests)."""
        with self._lock:
            self.requests.clear()
            self.faults.clear()

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self, method: str, raw_path: str, raw_body: bytes) -> Reply:
        parsed = urlparse(raw_path)
        params = {k: v[-1] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = raw_body.decode("utf-8", "replace")
        route = self.route_key(parsed.path, body)
        record = RequestRecord(method, parsed.path, params, body, route)
        with self._lock:
            self.requests.append(record)
            fault = next((f for f in self.faults if f.match in route), None)
            if fault is not None and fault.skip > 0:
                fault.skip -= 1
                fault = None
            elif fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
        if fault is not None:
            reply = self._fault_reply(fault.kind)
        else:
            try:
                reply = self.handle(method, parsed.path, params, body)
            except Exception as exc:  # a bug in the fake must show up as a 500, not a hang
                reply = Reply(500, f"wire server error: {exc!r}".encode(), "text/plain")
        record.status = reply.status
        return reply

    def route_key(self, path: str, body: Any) -> str:
        return path

    def _fault_reply(self, kind: str) -> Reply:
        if kind == "429":
            return Reply(429, json.dumps(self.rate_limit_body()).encode())
        if kind == "429-retry-after":
            return Reply(429, json.dumps(self.rate_limit_body()).encode(), headers={"Retry-After": "3"})
        if kind == "empty":  # a 200 with no rows: a venue hiccup in the middle of a history
            return Reply(200, b"[]")
        if kind == "500":
            return Reply(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html")
        if kind == "error":
            return self.error_reply()
        # a truncated JSON document with a 200 status, as a dropped proxy connection produces
        return Reply(200, b'[{"symbol": "BTCUSDT", "fundingTime": 17', "application/json")

    def error_reply(self) -> Reply:
        """A well-formed, permanent venue error (the venue's own error envelope)."""
        return Reply(400, json.dumps({"code": -1121, "msg": "Invalid symbol."}).encode())

    def rate_limit_body(self) -> Any:
        return {"code": -1003, "msg": "Too many requests; current limit is 2400 requests per minute."}

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Reply:
        raise NotImplementedError

    @staticmethod
    def ok(payload: Any) -> Reply:
        return Reply(200, json.dumps(payload, separators=(",", ":")).encode())

    def not_found(self, path: str) -> Reply:
        return Reply(404, json.dumps({"code": -5000, "msg": f"Path {path}, Method GET is invalid"}).encode())

    # -- data helpers ----------------------------------------------------------------------
    def symbols(self, table: str = "funding") -> list[str]:
        df = load_table(table)
        return sorted(df.loc[df["venue"] == self.venue, "venue_symbol"].unique().tolist())

    def last_close(self, symbol: str, asset_fallback: str | None = None) -> float:
        """Latest bundled 1h close at or before the clock (any venue for the asset as fallback)."""
        c = rows_for("candles", self.venue, symbol)
        c = c[c["ts_ms"] <= self.clock_ms]
        if len(c):
            return float(c["close"].iloc[-1])
        if asset_fallback:
            df = load_table("candles")
            c = df[(df["venue"] == "binance") & (df["venue_symbol"] == f"{asset_fallback}USDT")]
            if len(c):
                return float(c["close"].iloc[-1])
        return 1.0


def _window(df: pd.DataFrame, start: int | None, end: int | None) -> pd.DataFrame:
    if start is not None:
        df = df[df["ts_ms"] >= start]
    if end is not None:
        df = df[df["ts_ms"] <= end]
    return df


def _int(params: dict[str, str], key: str) -> int | None:
    v = params.get(key)
    return int(v) if v not in (None, "") else None


# ======================================================================================
# Binance USDT-M futures
# ======================================================================================
class BinanceUsdmServer(WireServer):
    """``fapi.binance.com`` subset: exchangeInfo, fundingRate, fundingInfo, klines, open interest."""

    venue = "binance"

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Reply:
        routes = {
            "/fapi/v1/exchangeInfo": self.exchange_info,
            "/fapi/v1/fundingRate": self.funding_rate,
            "/fapi/v1/fundingInfo": self.funding_info,
            "/fapi/v1/klines": self.klines,
            "/fapi/v1/openInterest": self.open_interest,
            "/futures/data/openInterestHist": self.open_interest_hist,
            "/fapi/v1/depth": self.depth,
            "/fapi/v1/time": lambda p: self.ok({"serverTime": self.clock_ms}),
        }
        fn = routes.get(path)
        return fn(params) if fn else self.not_found(path)

    def exchange_info(self, params: dict[str, str]) -> Reply:
        symbols = []
        for sym in self.symbols():
            quote = "USDC" if sym.endswith("USDC") else "USDT"
            base = sym[: -len(quote)]
            symbols.append({
                "symbol": sym, "pair": sym, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000", "baseAsset": base, "quoteAsset": quote,
                "marginAsset": quote, "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
                "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
                "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [
                    {"filterType": "PRICE_FILTER", "maxPrice": "4529764", "minPrice": "0.01",
                     "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "maxQty": "1000", "minQty": "0.001", "stepSize": "0.001"},
                    {"filterType": "MARKET_LOT_SIZE", "maxQty": "120", "minQty": "0.001",
                     "stepSize": "0.001"},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                     "multiplierDecimal": "4"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                "permissionSets": ["GRID", "COPY"],
            })
        return self.ok({"timezone": "UTC", "serverTime": self.clock_ms, "futuresType": "U_MARGINED",
                        "rateLimits": [], "exchangeFilters": [], "assets": [], "symbols": symbols})

    def funding_rate(self, params: dict[str, str]) -> Reply:
        limit = min(_int(params, "limit") or 100, 1000)
        df = rows_for("funding", self.venue, params.get("symbol", ""))
        df = _window(df, _int(params, "startTime"), _int(params, "endTime"))
        # oldest first from startTime; without startTime Binance returns the most recent rows
        df = df.head(limit) if "startTime" in params else df.tail(limit)
        return self.ok([
            {"symbol": r.venue_symbol, "fundingTime": int(r.ts_ms), "fundingRate": num(r.rate),
             "markPrice": num(r.mark_price)}
            for r in df.itertuples()
        ])

    def funding_info(self, params: dict[str, str]) -> Reply:
        """Only symbols with a non-default (≠ 8h) interval are listed, as on the real endpoint."""
        df = load_table("funding")
        df = df[(df["venue"] == self.venue) & (df["ts_ms"] <= self.clock_ms)]
        last = df.groupby("venue_symbol")["interval_hours"].last()
        return self.ok([
            {"symbol": s, "adjustedFundingRateCap": "0.02000000", "adjustedFundingRateFloor": "-0.02000000",
             "fundingIntervalHours": int(h), "disclaimer": False}
            for s, h in last.items() if np.isfinite(h) and h != 8
        ])

    def klines(self, params: dict[str, str]) -> Reply:
        if params.get("interval") != "1h":
            return Reply(400, json.dumps({"code": -1120, "msg": "Invalid interval."}).encode())
        limit = min(_int(params, "limit") or 500, 1500)
        df = rows_for("candles", self.venue, params.get("symbol", ""))
        df = _window(df, _int(params, "startTime"), _int(params, "endTime"))
        df = df.head(limit) if "startTime" in params else df.tail(limit)
        return self.ok([
            [int(r.ts_ms), num(r.open), num(r.high), num(r.low), num(r.close), num(r.volume),
             int(r.ts_ms) + HOUR_MS - 1, num(r.volume * r.close), 0, "0", "0", "0"]
            for r in df.itertuples()
        ])

    def open_interest(self, params: dict[str, str]) -> Reply:
        sym = params.get("symbol", "")
        oi = rows_for("open_interest", self.venue, sym)
        oi = oi[oi["ts_ms"] <= self.clock_ms]
        if oi.empty:
            return Reply(400, json.dumps({"code": -1121, "msg": "Invalid symbol."}).encode())
        r = oi.iloc[-1]
        amount = r.oi_usd / self.last_close(sym)
        return self.ok({"openInterest": num(amount), "symbol": sym, "time": int(r.ts_ms)})

    def depth(self, params: dict[str, str]) -> Reply:
        levels = book_levels(self.venue, params.get("symbol", ""))
        if levels is None:
            return Reply(400, json.dumps({"code": -1121, "msg": "Invalid symbol."}).encode())
        (bp, bs), (ap, asz) = levels
        return self.ok({"lastUpdateId": 1, "E": self.clock_ms, "T": self.clock_ms,
                        "bids": [[num(bp), num(bs)]], "asks": [[num(ap), num(asz)]]})

    def open_interest_hist(self, params: dict[str, str]) -> Reply:
        limit = min(_int(params, "limit") or 30, 500)
        sym = params.get("symbol", "")
        df = rows_for("open_interest", self.venue, sym)
        df = _window(df, _int(params, "startTime"), _int(params, "endTime"))
        df = df.head(limit) if "startTime" in params else df.tail(limit)
        px = self.last_close(sym)
        return self.ok([
            {"symbol": sym, "sumOpenInterest": num(r.oi_usd / px), "sumOpenInterestValue": num(r.oi_usd),
             "CMCCirculatingSupply": "0", "timestamp": int(r.ts_ms)}
            for r in df.itertuples()
        ])


# ======================================================================================
# Bybit v5
# ======================================================================================
class BybitServer(WireServer):
    """``api.bybit.com`` v5 subset: instruments-info (cursor pages), funding history, kline, OI."""

    venue = "bybit"

    def __init__(self, clock_ms: int | None = None, instruments_page: int = 20) -> None:
        super().__init__(clock_ms)
        # small on purpose so ccxt's own nextPageCursor loop in fetch_markets runs
        self.instruments_page = instruments_page

    def rate_limit_body(self) -> Any:
        return {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {},
                "time": self.clock_ms}

    def error_reply(self) -> Reply:
        return self.error(10001, "params error: symbol invalid")

    def envelope(self, result: Any) -> Reply:
        return self.ok({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {},
                        "time": self.clock_ms})

    def error(self, code: int, msg: str) -> Reply:
        return self.ok({"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {},
                        "time": self.clock_ms})

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Reply:
        routes = {
            "/v5/market/instruments-info": self.instruments,
            "/v5/market/funding/history": self.funding_history,
            "/v5/market/kline": self.kline,
            "/v5/market/open-interest": self.open_interest,
            "/v5/market/orderbook": self.orderbook,
            "/v5/market/time": lambda p: self.envelope({"timeSecond": str(self.clock_ms // 1000),
                                                         "timeNano": str(self.clock_ms * 1_000_000)}),
        }
        fn = routes.get(path)
        return fn(params) if fn else Reply(404, b'{"retCode":10001,"retMsg":"404 Not Found"}')

    def instruments(self, params: dict[str, str]) -> Reply:
        if params.get("category") != "linear":
            return self.error(10001, "params error: category only supports linear in this fake")
        if params.get("status") == "PreLaunch":
            return self.envelope({"category": "linear", "list": [], "nextPageCursor": ""})
        funding = load_table("funding")
        funding = funding[(funding["venue"] == self.venue) & (funding["ts_ms"] <= self.clock_ms)]
        last_interval = funding.groupby("venue_symbol")["interval_hours"].last()
        items = []
        for sym in self.symbols():
            if sym.endswith("PERP"):
                base, quote, settle, ctype = sym[:-4], "USDC", "USDC", "LinearPerpetual"
            else:
                quote = "USDC" if sym.endswith("USDC") else "USDT"
                base, settle, ctype = sym[: -len(quote)], quote, "LinearPerpetual"
            hours = last_interval.get(sym, 8.0)
            items.append({
                "symbol": sym, "contractType": ctype, "status": "Trading", "baseCoin": base,
                "quoteCoin": quote, "launchTime": "1585526400000", "deliveryTime": "0",
                "deliveryFeeRate": "", "priceScale": "2",
                "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
                "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                                  "postOnlyMaxOrderQty": "1190.000", "maxMktOrderQty": "500.000",
                                  "minNotionalValue": "5"},
                "unifiedMarginTrade": True,
                "fundingInterval": round(float(hours) * 60) if np.isfinite(hours) else 480,
                "settleCoin": settle, "copyTrading": "both", "upperFundingRate": "0.005",
                "lowerFundingRate": "-0.005", "isPreListing": False, "preListingInfo": None,
            })
        start = int(params.get("cursor") or 0)
        page = items[start: start + self.instruments_page]
        nxt = start + self.instruments_page
        cursor = str(nxt) if nxt < len(items) else ""
        return self.envelope({"category": "linear", "list": page, "nextPageCursor": cursor})

    def _newest_in_range(self, df: pd.DataFrame, params: dict[str, str], start_key: str, end_key: str,
                         limit: int) -> pd.DataFrame:
        """Bybit semantics: the newest ``limit`` rows of ``[start, end]``, newest first."""
        df = _window(df, _int(params, start_key), _int(params, end_key))
        return df.tail(limit).iloc[::-1]

    def funding_history(self, params: dict[str, str]) -> Reply:
        limit = _int(params, "limit") or 200
        if not 1 <= limit <= 200:
            return self.error(10001, "params error: limit must be in [1, 200]")
        if "startTime" in params and "endTime" not in params:
            return self.error(10001, "params error: endTime is required when startTime is given")
        sym = params.get("symbol", "")
        df = rows_for("funding", self.venue, sym)
        df = self._newest_in_range(df, params, "startTime", "endTime", limit)
        return self.envelope({"category": "linear", "list": [
            {"symbol": sym, "fundingRate": num(r.rate), "fundingRateTimestamp": str(int(r.ts_ms))}
            for r in df.itertuples()
        ]})

    def kline(self, params: dict[str, str]) -> Reply:
        if params.get("interval") != "60":
            return self.error(10001, "params error: interval only 60 in this fake")
        limit = min(_int(params, "limit") or 200, 1000)
        sym = params.get("symbol", "")
        df = self._newest_in_range(rows_for("candles", self.venue, sym), params, "start", "end", limit)
        return self.envelope({"category": "linear", "symbol": sym, "list": [
            [str(int(r.ts_ms)), num(r.open), num(r.high), num(r.low), num(r.close), num(r.volume),
             num(r.volume * r.close)]
            for r in df.itertuples()
        ]})

    def orderbook(self, params: dict[str, str]) -> Reply:
        sym = params.get("symbol", "")
        levels = book_levels(self.venue, sym)
        if levels is None:
            return self.error(10001, "params error: symbol invalid")
        (bp, bs), (ap, asz) = levels
        return self.envelope({"s": sym, "b": [[num(bp), num(bs)]], "a": [[num(ap), num(asz)]],
                              "ts": self.clock_ms, "u": 1, "seq": 1, "cts": self.clock_ms})

    def open_interest(self, params: dict[str, str]) -> Reply:
        limit = min(_int(params, "limit") or 50, 200)
        sym = params.get("symbol", "")
        df = self._newest_in_range(rows_for("open_interest", self.venue, sym), params, "startTime", "endTime",
                                   limit)
        px = self.last_close(sym)
        return self.envelope({"category": "linear", "symbol": sym, "list": [
            {"openInterest": num(r.oi_usd / px), "timestamp": str(int(r.ts_ms))} for r in df.itertuples()
        ], "nextPageCursor": ""})


# ======================================================================================
# Hyperliquid
# ======================================================================================
class HyperliquidServer(WireServer):
    """``api.hyperliquid.xyz/info`` subset: spotMeta, meta(AndAssetCtxs), perpDexs, fundingHistory,
    candleSnapshot, l2Book."""

    venue = "hyperliquid"

    def route_key(self, path: str, body: Any) -> str:
        kind = body.get("type") if isinstance(body, dict) else None
        return f"{path}:{kind}" if kind else path

    def rate_limit_body(self) -> Any:
        return None  # Hyperliquid answers 429 with an empty body

    def _fault_reply(self, kind: str) -> Reply:
        if kind == "429":
            return Reply(429, b"", "text/plain")
        if kind == "malformed":
            return Reply(200, b'[{"coin":"BTC","fundingRate":"0.0000125","premium":', "application/json")
        return super()._fault_reply(kind)

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Reply:
        if method != "POST" or path != "/info" or not isinstance(body, dict):
            return Reply(422, b"Failed to deserialize the JSON body into the target type", "text/plain")
        kind = body.get("type")
        if kind == "spotMeta":
            return self.ok({"universe": [], "tokens": [
                {"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0,
                 "tokenId": "0x6d1e7cde53ba9467b783cb7c530ce054", "isCanonical": True,
                 "evmContract": None, "fullName": None}]})
        if kind == "perpDexs":
            return self.ok([None, {"name": "xyz", "fullName": "XYZ", "deployer": "0x" + "0" * 40,
                                   "oracleUpdater": None, "feeRecipient": None, "assetToStreamingOiCap": []}])
        if kind in ("meta", "metaAndAssetCtxs"):
            return self.meta(kind, body.get("dex") or "")
        if kind == "fundingHistory":
            return self.funding_history(body)
        if kind == "candleSnapshot":
            return self.candles(body.get("req") or {})
        if kind == "l2Book":
            return self.l2_book(str(body.get("coin")))
        return Reply(422, b"Failed to deserialize the JSON body into the target type", "text/plain")

    def _venue_for(self, coin: str) -> str:
        return "hyperliquid-xyz" if ":" in coin else "hyperliquid"

    def meta(self, kind: str, dex: str) -> Reply:
        venue = "hyperliquid-xyz" if dex else "hyperliquid"
        df = load_table("funding")
        names = sorted(df.loc[df["venue"] == venue, "venue_symbol"].unique().tolist())
        universe = [{"name": n, "szDecimals": 5 if n == "BTC" else 2, "maxLeverage": 40, "marginTableId": 56}
                    for n in names]
        meta: dict[str, Any] = {"universe": universe, "marginTables": []}
        if dex:
            meta["collateralToken"] = 0
        if kind == "meta":
            return self.ok(meta)
        ctxs = []
        for n in names:
            f = rows_for("funding", venue, n)
            f = f[f["ts_ms"] <= self.clock_ms]
            px = self.last_close(n, asset_fallback=n.split(":")[-1])
            oi = rows_for("open_interest", venue, n)
            oi = oi[oi["ts_ms"] <= self.clock_ms]
            oi_coins = float(oi["oi_usd"].iloc[-1]) / px if len(oi) else 0.0
            funding = num(f["rate"].iloc[-1]) if len(f) else "0.0"
            ctxs.append({"funding": funding, "openInterest": num(oi_coins),
                         "prevDayPx": num(px), "dayNtlVlm": "0.0", "premium": "0.0", "oraclePx": num(px),
                         "markPx": num(px), "midPx": num(px), "impactPxs": [num(px), num(px)],
                         "dayBaseVlm": "0.0"})
        return self.ok([meta, ctxs])

    def funding_history(self, body: dict[str, Any]) -> Reply:
        coin = str(body.get("coin"))
        if "startTime" not in body:
            return Reply(422, b"Failed to deserialize the JSON body into the target type", "text/plain")
        df = _window(rows_for("funding", self._venue_for(coin), coin), int(body["startTime"]),
                     int(body["endTime"]) if body.get("endTime") is not None else None)
        return self.ok([
            {"coin": coin, "fundingRate": num(r.rate), "premium": "0.0", "time": int(r.ts_ms)}
            for r in df.head(500).itertuples()
        ])

    def candles(self, req: dict[str, Any]) -> Reply:
        coin = str(req.get("coin"))
        if req.get("interval") != "1h":
            return Reply(500, b"null", "application/json")
        df = _window(rows_for("candles", self._venue_for(coin), coin), int(req.get("startTime", 0)),
                     int(req["endTime"]) if req.get("endTime") is not None else None)
        return self.ok([
            {"t": int(r.ts_ms), "T": int(r.ts_ms) + HOUR_MS - 1, "s": coin, "i": "1h", "o": num(r.open),
             "c": num(r.close), "h": num(r.high), "l": num(r.low), "v": num(r.volume), "n": 0}
            for r in df.head(5000).itertuples()
        ])

    def l2_book(self, coin: str) -> Reply:
        levels = book_levels(self._venue_for(coin), coin)
        if levels is None:
            return self.ok(None)
        (bp, bs), (ap, asz) = levels
        return self.ok({"coin": coin, "time": self.clock_ms, "levels": [
            [{"px": num(bp), "sz": num(bs), "n": 1}], [{"px": num(ap), "sz": num(asz), "n": 1}],
        ]})


def loopback_urls(ccxt_id: str, base_url: str) -> dict[str, Any]:
    """Every entry of ``ccxt.<id>().urls['api']`` rewritten to ``base_url``, keeping the path.

    ``binanceusdm`` has ~20 entries (fapiPublic, fapiPublicV2/V3, fapiPrivate, fapiData, sapi …)
    whose paths differ (``/fapi/v1``, ``/futures/data``); Bybit and Hyperliquid use
    ``https://api.{hostname}`` with the whole path in the endpoint.  Pass the result as
    ``CcxtSource.make_exchange(venue, urls=...)``.
    """
    import ccxt

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("http"):
            return base_url.rstrip("/") + urlparse(value.replace("{hostname}", "host")).path
        return value

    api = getattr(ccxt, ccxt_id)().urls["api"]
    rewritten = rewrite(api)
    return rewritten if isinstance(rewritten, dict) else {"public": rewritten}
