"""Loopback servers that add the venues' real *private trading* endpoints to the public wire servers.

Why: :class:`fundarb_core.venues.ccxt_venue.CcxtExchange` must be tested with the real ccxt classes
building, signing and parsing real requests; only the network peer is fake.  These servers extend
:mod:`tests.wire.servers` (same request log, same fault injection, same bundled prices) with the endpoints
ccxt 4.5.90 calls for orders, positions, balances and leverage:

* Binance USDT-M: ``POST/GET/DELETE /fapi/v1/order`` (``newClientOrderId`` / ``origClientOrderId``),
  ``GET /fapi/v1/openOrders``, ``GET /fapi/v3/positionRisk``, ``GET /fapi/v1/leverageBracket`` (ccxt loads it
  before parsing positions), ``GET /fapi/v3/account`` (``fetch_balance``), ``POST /fapi/v1/leverage``,
  ``GET /fapi/v1/premiumIndex`` (mark price) and ``GET /fapi/v1/income`` (funding history).  Signed requests
  are accepted whatever the signature: the server checks the wire format, not the HMAC.
* Hyperliquid: ``POST /exchange`` with ``action.type`` ``order`` / ``cancelByCloid`` / ``cancel`` /
  ``updateLeverage``; ``POST /info`` types ``orderStatus`` (by cloid or oid), ``openOrders`` /
  ``frontendOpenOrders``, ``clearinghouseState``, ``userAbstraction`` and ``userFunding``.  Signatures are
  not verified (ccxt signs with the test's throwaway key).

State (orders by client id, positions, wallet) is in memory.  A limit order that crosses the server's book
(rebuilt from the bundled depth snapshot by :func:`tests.wire.servers.book_levels`) fills at once at the
touch; otherwise it rests.  A second order with a client id the server already knows is refused, as the
venues do, so ``len(server.orders)`` counts orders that really exist.  The route key of a Hyperliquid
``/exchange`` request is ``"/exchange:<action type>"``.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.wire.servers import BinanceUsdmServer, HyperliquidServer, Reply, book_levels, load_table, num


@dataclass
class SimOrder:
    """One order as the fake venue keeps it (``qty`` unsigned base units)."""

    oid: int
    client_id: str
    symbol: str
    side: str  # "buy" | "sell"
    qty: float
    price: float
    reduce_only: bool
    ts: int
    status: str = "open"  # open | filled | canceled
    filled: float = 0.0
    avg_price: float = 0.0


@dataclass
class SimPosition:
    qty: float = 0.0
    entry: float = 0.0
    leverage: int = 20


@dataclass
class TradingState:
    """The account: orders by client id, positions by symbol, wallet in the settlement currency."""

    wallet: float = 10_000.0
    orders: dict[str, SimOrder] = field(default_factory=dict)
    positions: dict[str, SimPosition] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    funding: list[dict[str, Any]] = field(default_factory=list)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1000))


class _TradingMixin:
    """Book, fills and positions shared by both venues (``venue`` and ``clock_ms`` come from the server)."""

    venue: str
    clock_ms: int
    state: TradingState
    _state_lock: threading.Lock

    def book(self, symbol: str) -> tuple[float, float]:
        """(bid, ask) from the bundled depth snapshot; ±1 bp around the last close when none was recorded."""
        levels = book_levels(self.venue, symbol)
        if levels is not None:
            return levels[0][0], levels[1][0]
        mid = self.last_close(symbol, asset_fallback=self.base_of(symbol))  # type: ignore[attr-defined]
        return mid * (1 - 1e-4), mid * (1 + 1e-4)

    def base_of(self, symbol: str) -> str:
        return symbol

    def mark(self, symbol: str) -> float:
        bid, ask = self.book(symbol)
        return (bid + ask) / 2

    def new_order(self, client_id: str, symbol: str, side: str, qty: float, price: float,
                  reduce_only: bool) -> SimOrder | None:
        """Store and maybe fill a new order; None when the client id is already known (a duplicate)."""
        with self._state_lock:
            if client_id in self.state.orders:
                return None
            order = SimOrder(next(self.state.ids), client_id, symbol, side, qty, price, reduce_only, self.clock_ms)
            self.state.orders[client_id] = order
            bid, ask = self.book(symbol)
            if (side == "buy" and price >= ask) or (side == "sell" and price <= bid):
                self._fill(order, ask if side == "buy" else bid)
            return order

    def _fill(self, order: SimOrder, px: float) -> None:
        pos = self.state.positions.setdefault(order.symbol, SimPosition(leverage=self.state.leverage.get(
            order.symbol, 20)))
        dq = order.qty if order.side == "buy" else -order.qty
        if pos.qty == 0 or (pos.qty > 0) == (dq > 0):
            pos.entry = (abs(pos.qty) * pos.entry + abs(dq) * px) / (abs(pos.qty) + abs(dq))
            pos.qty += dq
        else:
            closing = min(abs(dq), abs(pos.qty))
            self.state.wallet += closing * (px - pos.entry) * (1 if pos.qty > 0 else -1)
            pos.qty += dq
            if abs(pos.qty) < 1e-12:
                pos.qty, pos.entry = 0.0, 0.0
            elif (pos.qty > 0) == (dq > 0):
                pos.entry = px
        order.status, order.filled, order.avg_price = "filled", order.qty, px

    def cancel(self, client_id: str) -> SimOrder | None:
        """Cancel an open order; None when unknown or no longer open."""
        with self._state_lock:
            order = self.state.orders.get(client_id)
            if order is None or order.status != "open":
                return None
            order.status = "canceled"
            return order

    def by_oid(self, oid: int) -> SimOrder | None:
        return next((o for o in self.state.orders.values() if o.oid == oid), None)

    def open_positions(self) -> list[tuple[str, SimPosition]]:
        return [(s, p) for s, p in sorted(self.state.positions.items()) if p.qty != 0]

    def upnl(self) -> float:
        return sum(p.qty * (self.mark(s) - p.entry) for s, p in self.open_positions())


# ======================================================================================
# Binance USDT-M
# ======================================================================================
class BinanceTradingServer(_TradingMixin, BinanceUsdmServer):
    """``fapi.binance.com`` public subset plus the private trading endpoints ccxt's binanceusdm calls."""

    maint_ratio = 0.004

    def __init__(self, clock_ms: int | None = None, wallet: float = 10_000.0) -> None:
        super().__init__(clock_ms)
        self.state = TradingState(wallet=wallet)
        self._state_lock = threading.Lock()
        self.lose_replies = 0
        # the base handler speaks GET and POST only; ccxt cancels with DELETE
        handler = self._httpd.RequestHandlerClass
        handler.do_DELETE = lambda h: h._serve("DELETE")  # type: ignore[attr-defined]

    def base_of(self, symbol: str) -> str:
        return symbol[:-4]

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Reply:
        if isinstance(body, str) and body:
            params = {**params, **{k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}}
        routes = {
            ("POST", "/fapi/v1/order"): self.post_order,
            ("GET", "/fapi/v1/order"): self.get_order,
            ("DELETE", "/fapi/v1/order"): self.delete_order,
            ("GET", "/fapi/v1/openOrders"): self.get_open_orders,
            ("GET", "/fapi/v3/positionRisk"): self.position_risk,
            ("GET", "/fapi/v2/positionRisk"): self.position_risk,
            ("GET", "/fapi/v1/leverageBracket"): self.leverage_bracket,
            ("GET", "/fapi/v3/account"): self.account,
            ("GET", "/fapi/v2/account"): self.account,
            ("POST", "/fapi/v1/leverage"): self.post_leverage,
            ("GET", "/fapi/v1/depth"): self.depth,
            ("GET", "/fapi/v1/premiumIndex"): self.premium_index,
            ("GET", "/fapi/v1/income"): self.income,
        }
        fn = routes.get((method, path))
        if fn is not None:
            return fn(params)
        return super().handle(method, path, params, body)

    @staticmethod
    def err(code: int, msg: str) -> Reply:
        return Reply(400, json.dumps({"code": code, "msg": msg}).encode())

    def order_json(self, o: SimOrder) -> dict[str, Any]:
        status = {"open": "NEW", "filled": "FILLED", "canceled": "CANCELED"}[o.status]
        return {
            "orderId": o.oid, "symbol": o.symbol, "status": status, "clientOrderId": o.client_id,
            "price": num(o.price), "avgPrice": num(o.avg_price), "origQty": num(o.qty),
            "executedQty": num(o.filled), "cumQuote": num(o.filled * o.avg_price), "timeInForce": "GTC",
            "type": "LIMIT", "reduceOnly": o.reduce_only, "closePosition": False, "side": o.side.upper(),
            "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": "LIMIT", "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0, "time": o.ts, "updateTime": self.clock_ms,
        }

    def post_order(self, p: dict[str, str]) -> Reply:
        """``lose_replies`` > 0: the order is processed but the reply is a 502 (a proxy lost it)."""
        reply = self._post_order(p)
        if self.lose_replies > 0:
            self.lose_replies -= 1
            return Reply(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        return reply

    def _post_order(self, p: dict[str, str]) -> Reply:
        if p.get("type") != "LIMIT":
            return self.err(-1116, "Invalid orderType.")
        cid = p.get("newClientOrderId", "")
        if not cid:
            return self.err(-1102, "Mandatory parameter 'newClientOrderId' was not sent.")
        order = self.new_order(cid, p.get("symbol", ""), p.get("side", "").lower(), float(p["quantity"]),
                               float(p["price"]), p.get("reduceOnly") == "true")
        if order is None:
            return self.err(-4116, "ClientOrderId is duplicated.")
        return self.ok(self.order_json(order))

    def _find(self, p: dict[str, str]) -> SimOrder | None:
        if p.get("origClientOrderId"):
            o = self.state.orders.get(p["origClientOrderId"])
        elif p.get("orderId"):
            o = self.by_oid(int(p["orderId"]))
        else:
            return None
        return o if o is not None and o.symbol == p.get("symbol") else None

    def get_order(self, p: dict[str, str]) -> Reply:
        o = self._find(p)
        return self.ok(self.order_json(o)) if o else self.err(-2013, "Order does not exist.")

    def delete_order(self, p: dict[str, str]) -> Reply:
        o = self._find(p)
        if o is None or self.cancel(o.client_id) is None:
            return self.err(-2011, "Unknown order sent.")
        return self.ok(self.order_json(o))

    def get_open_orders(self, p: dict[str, str]) -> Reply:
        sym = p.get("symbol")
        return self.ok([self.order_json(o) for o in self.state.orders.values()
                        if o.status == "open" and (sym is None or o.symbol == sym)])

    def position_risk(self, p: dict[str, str]) -> Reply:
        out = []
        for sym, pos in self.open_positions():
            mark = self.mark(sym)
            notional = pos.qty * mark
            out.append({
                "symbol": sym, "positionSide": "BOTH", "positionAmt": num(pos.qty), "entryPrice": num(pos.entry),
                "breakEvenPrice": num(pos.entry), "markPrice": num(mark),
                "unRealizedProfit": num(pos.qty * (mark - pos.entry)), "liquidationPrice": "0",
                "isolatedMargin": "0", "notional": num(notional), "marginAsset": "USDT", "isolatedWallet": "0",
                "initialMargin": num(abs(notional) / pos.leverage),
                "maintMargin": num(abs(notional) * self.maint_ratio),
                "positionInitialMargin": num(abs(notional) / pos.leverage), "openOrderInitialMargin": "0",
                "adl": 1, "bidNotional": "0", "askNotional": "0", "updateTime": self.clock_ms,
            })
        return self.ok(out)

    def leverage_bracket(self, p: dict[str, str]) -> Reply:
        return self.ok([
            {"symbol": s, "notionalCoef": 1.0, "brackets": [
                {"bracket": 1, "initialLeverage": 125, "notionalCap": 50_000_000, "notionalFloor": 0,
                 "maintMarginRatio": self.maint_ratio, "cum": 0.0}]}
            for s in self.symbols()
        ])

    def account(self, p: dict[str, str]) -> Reply:
        positions = self.open_positions()
        upnl = self.upnl()
        maint = sum(abs(q.qty) * self.mark(s) * self.maint_ratio for s, q in positions)
        init = sum(abs(q.qty) * self.mark(s) / q.leverage for s, q in positions)
        wallet = self.state.wallet
        asset = {
            "asset": "USDT", "walletBalance": num(wallet), "unrealizedProfit": num(upnl),
            "marginBalance": num(wallet + upnl), "maintMargin": num(maint), "initialMargin": num(init),
            "positionInitialMargin": num(init), "openOrderInitialMargin": "0", "crossWalletBalance": num(wallet),
            "crossUnPnl": num(upnl), "availableBalance": num(wallet + upnl - init),
            "maxWithdrawAmount": num(wallet + upnl - init), "updateTime": self.clock_ms,
        }
        return self.ok({
            "totalInitialMargin": num(init), "totalMaintMargin": num(maint), "totalWalletBalance": num(wallet),
            "totalUnrealizedProfit": num(upnl), "totalMarginBalance": num(wallet + upnl),
            "totalPositionInitialMargin": num(init), "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": num(wallet), "totalCrossUnPnl": num(upnl),
            "availableBalance": num(wallet + upnl - init), "maxWithdrawAmount": num(wallet + upnl - init),
            "assets": [asset],
            "positions": [
                {"symbol": s, "positionSide": "BOTH", "positionAmt": num(q.qty),
                 "unrealizedProfit": num(q.qty * (self.mark(s) - q.entry)), "isolatedMargin": "0",
                 "notional": num(q.qty * self.mark(s)), "isolatedWallet": "0",
                 "initialMargin": num(abs(q.qty) * self.mark(s) / q.leverage),
                 "maintMargin": num(abs(q.qty) * self.mark(s) * self.maint_ratio), "updateTime": self.clock_ms}
                for s, q in positions
            ],
        })

    def post_leverage(self, p: dict[str, str]) -> Reply:
        sym, lev = p.get("symbol", ""), int(p.get("leverage", "0"))
        if not 1 <= lev <= 125:
            return self.err(-4028, "Leverage is not valid")
        self.state.leverage[sym] = lev
        if sym in self.state.positions:
            self.state.positions[sym].leverage = lev
        return self.ok({"leverage": lev, "maxNotionalValue": "50000000", "symbol": sym})

    def depth(self, params: dict[str, str]) -> Reply:
        """The public book, with the same fallback as fills (the bundle has no Binance depth snapshot)."""
        sym = params.get("symbol", "")
        if sym not in self.symbols():
            return self.err(-1121, "Invalid symbol.")
        bid, ask = self.book(sym)
        return self.ok({"lastUpdateId": 1, "E": self.clock_ms, "T": self.clock_ms,
                        "bids": [[num(bid), "10"]], "asks": [[num(ask), "10"]]})

    def premium_index(self, p: dict[str, str]) -> Reply:
        def one(sym: str) -> dict[str, Any]:
            f = load_table("funding")
            f = f[(f["venue"] == self.venue) & (f["venue_symbol"] == sym) & (f["ts_ms"] <= self.clock_ms)]
            rate = num(f["rate"].iloc[-1]) if len(f) else "0"
            mark = self.mark(sym)
            return {"symbol": sym, "markPrice": num(mark), "indexPrice": num(mark),
                    "estimatedSettlePrice": num(mark), "lastFundingRate": rate, "interestRate": "0.00010000",
                    "nextFundingTime": self.clock_ms + 3_600_000, "time": self.clock_ms}
        if p.get("symbol"):
            return self.ok(one(p["symbol"]))
        return self.ok([one(s) for s in self.symbols()])

    def income(self, p: dict[str, str]) -> Reply:
        return self.ok([r for r in self.state.funding
                        if p.get("incomeType") in (None, r["incomeType"])
                        and int(r["time"]) >= int(p.get("startTime") or 0)])


# ======================================================================================
# Hyperliquid
# ======================================================================================
class HyperliquidTradingServer(_TradingMixin, HyperliquidServer):
    """``api.hyperliquid.xyz`` public ``/info`` subset plus ``/exchange`` and the private ``/info`` types."""

    maint_ratio = 0.0125

    def __init__(self, clock_ms: int | None = None, wallet: float = 10_000.0) -> None:
        super().__init__(clock_ms)
        self.state = TradingState(wallet=wallet)
        self._state_lock = threading.Lock()
        df = load_table("funding")
        # the same asset-index order the public ``meta`` endpoint announces
        self.coins: list[str] = sorted(df.loc[df["venue"] == "hyperliquid", "venue_symbol"].unique().tolist())

    def route_key(self, path: str, body: Any) -> str:
        if path == "/exchange" and isinstance(body, dict) and isinstance(body.get("action"), dict):
            return f"/exchange:{body['action'].get('type')}"
        return super().route_key(path, body)

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Reply:
        if method == "POST" and path == "/exchange" and isinstance(body, dict):
            return self.exchange(body)
        if method == "POST" and path == "/info" and isinstance(body, dict):
            kind = body.get("type")
            private = {
                "orderStatus": self.order_status,
                "openOrders": self.open_orders,
                "frontendOpenOrders": self.open_orders,
                "clearinghouseState": self.clearinghouse,
                "userAbstraction": lambda b: self.ok("default"),
                "userFunding": lambda b: self.ok([r for r in self.state.funding
                                                   if int(r["time"]) >= int(b.get("startTime") or 0)]),
            }
            if kind in private:
                return private[kind](body)
        return super().handle(method, path, params, body)

    # -- /exchange --------------------------------------------------------------------------
    def exchange(self, body: dict[str, Any]) -> Reply:
        action = body.get("action") or {}
        if "signature" not in body or "nonce" not in body:
            return self.ok({"status": "err", "response": "Missing signature or nonce"})
        kind = action.get("type")
        if kind == "order":
            return self.ok({"status": "ok", "response": {"type": "order", "data": {
                "statuses": [self.place(o) for o in action.get("orders", [])]}}})
        if kind in ("cancelByCloid", "cancel"):
            statuses: list[Any] = []
            for c in action.get("cancels", []):
                if kind == "cancelByCloid":
                    order = self.state.orders.get(str(c.get("cloid")))
                else:
                    order = self.by_oid(int(c.get("o", -1)))
                done = self.cancel(order.client_id) if order is not None else None
                statuses.append("success" if done else
                                {"error": "Order was never placed, already canceled, or filled."})
            return self.ok({"status": "ok", "response": {"type": "cancel", "data": {"statuses": statuses}}})
        if kind == "updateLeverage":
            coin = self.coins[int(action["asset"])]
            self.state.leverage[coin] = int(action["leverage"])
            if coin in self.state.positions:
                self.state.positions[coin].leverage = int(action["leverage"])
            return self.ok({"status": "ok", "response": {"type": "default"}})
        return self.ok({"status": "err", "response": f"Unsupported action type {kind!r} in this fake"})

    def place(self, o: dict[str, Any]) -> dict[str, Any]:
        coin = self.coins[int(o["a"])]
        cid = o.get("c")
        if not cid:
            return {"error": "this fake requires a cloid"}
        order = self.new_order(str(cid), coin, "buy" if o["b"] else "sell", float(o["s"]), float(o["p"]),
                               bool(o.get("r")))
        if order is None:
            return {"error": "Duplicate cloid."}
        if order.status == "filled":
            return {"filled": {"totalSz": num(order.filled), "avgPx": num(order.avg_price), "oid": order.oid,
                               "cloid": order.client_id}}
        return {"resting": {"oid": order.oid, "cloid": order.client_id}}

    # -- /info (private) --------------------------------------------------------------------
    def order_obj(self, o: SimOrder) -> dict[str, Any]:
        return {"coin": o.symbol, "side": "B" if o.side == "buy" else "A", "limitPx": num(o.price),
                "sz": num(o.qty - o.filled), "oid": o.oid, "timestamp": o.ts, "triggerCondition": "N/A",
                "isTrigger": False, "triggerPx": "0.0", "children": [], "isPositionTpsl": False,
                "reduceOnly": o.reduce_only, "orderType": "Limit", "origSz": num(o.qty), "tif": "Gtc",
                "cloid": o.client_id}

    def order_status(self, body: dict[str, Any]) -> Reply:
        key = body.get("oid")
        order = self.state.orders.get(key) if isinstance(key, str) else self.by_oid(int(key or -1))
        if order is None:
            return self.ok({"status": "unknownOid"})
        return self.ok({"status": "order", "order": {"order": self.order_obj(order), "status": order.status,
                                                      "statusTimestamp": self.clock_ms}})

    def open_orders(self, body: dict[str, Any]) -> Reply:
        return self.ok([self.order_obj(o) for o in self.state.orders.values() if o.status == "open"])

    def clearinghouse(self, body: dict[str, Any]) -> Reply:
        asset_positions = []
        maint = used = ntl = 0.0
        for coin, p in self.open_positions():
            mark = self.mark(coin)
            value = abs(p.qty) * mark
            ntl += value
            used += value / p.leverage
            maint += value * self.maint_ratio
            asset_positions.append({"type": "oneWay", "position": {
                "coin": coin, "szi": num(p.qty), "entryPx": num(p.entry), "positionValue": num(value),
                "unrealizedPnl": num(p.qty * (mark - p.entry)), "returnOnEquity": "0.0",
                "liquidationPx": None, "marginUsed": num(value / p.leverage), "maxLeverage": 40,
                "leverage": {"type": "cross", "value": p.leverage},
                "cumFunding": {"allTime": "0.0", "sinceChange": "0.0", "sinceOpen": "0.0"}}})
        value = self.state.wallet + self.upnl()
        summary = {"accountValue": num(value), "totalNtlPos": num(ntl), "totalRawUsd": num(self.state.wallet),
                   "totalMarginUsed": num(used)}
        return self.ok({"marginSummary": summary, "crossMarginSummary": summary,
                        "crossMaintenanceMarginUsed": num(maint), "withdrawable": num(value - used),
                        "assetPositions": asset_positions, "time": self.clock_ms})
