"""The live venue adapter: :class:`CcxtExchange` implements
:class:`~fundarb_core.execution.venue.ExchangeAdapter` with the real ccxt exchange classes.

Why each rule:

* **Same construction as the data source.**  Exchanges are built by
  :meth:`fundarb_core.sources.ccxt_source.CcxtSource.make_exchange` with ``api_key_env=True``: credentials come
  only from ``FUNDARB_<VENUE>_API_KEY`` / ``_SECRET`` / ``_WALLET_ADDRESS`` / ``_PRIVATE_KEY`` (…), and the
  registry's ``ccxt_options`` (builder / integrator / broker fees off) are re-applied after construction.
  Hyperliquid's ccxt class additionally runs ``initialize_client`` before every order, which *approves* a builder
  (at 0 % when ``builderFee`` is off), sets a referrer and attaches ``builder`` to every order once approved; this
  adapter replaces that hook on its own instances with a no-op and keeps ``approvedBuilderFee`` false, so no
  builder, fee or referral action ever leaves the process.
* **A retry never opens twice** (spec §6).  :meth:`CcxtExchange.place_limit_order` first asks the venue for the
  deterministic client id (Binance ``origClientOrderId``, Hyperliquid ``orderStatus`` by cloid, Bybit
  ``orderLinkId``) and returns the venue's order when it exists.  The order is then sent with the id in the
  venue's own field (ccxt maps ``params['clientOrderId']`` to ``newClientOrderId`` / ``c`` (cloid) /
  ``orderLinkId``).  A timeout or network error after sending is resolved by asking again: found → that order,
  not found → :class:`OrderTimeout` (the keeper re-tries with the same id, which is safe for the same reason).
  A venue rejecting a duplicate id is also answered with the stored order.
* **One request at a time per account.**  Hyperliquid nonces must increase and Binance signs with a timestamp;
  concurrent calls on one ccxt instance (not thread-safe) would race.  Each account (ccxt id + a hash of its
  credential) has one re-entrant lock, shared by venues that trade the same account (``hyperliquid`` and
  ``hyperliquid-xyz``).
* **Secrets never leave.**  ``repr`` shows venue ids only; every error message is scrubbed of the credential
  values before it is raised (and raised ``from None``, so a ccxt exception that echoes a request cannot carry
  one along); log records name venue, asset, method and client id only.
* **Canonical names in, canonical names out.**  The keeper speaks ``(venue, asset)``; the venue's market is found
  in ``load_markets()`` (swap, linear, settled in USDT first, then USDC: binance BTC → ``BTC/USDT:USDT``,
  hyperliquid BTC → ``BTC/USDC:USDC``) and positions / orders are mapped back to the asset.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import ccxt

from fundarb_core.domain.orders import Order, Side
from fundarb_core.domain.venue_state import Balance, BookTop, FundingPayment, VenuePosition
from fundarb_core.execution.venue import ExchangeError, OrderTimeout
from fundarb_core.sources.ccxt_source import CcxtSource
from fundarb_core.venues import get_venue
from fundarb_core.venues.ccxt_client import Redact, account_lock

T = TypeVar("T")
log = logging.getLogger(__name__)

_SETTLE_ORDER = ("USDT", "USDC", "USD")
_SECRET_ATTRS = ("apiKey", "secret", "password", "privateKey", "uid", "token")
# Python errors ccxt's parsers raise on a payload of the wrong shape
_PARSE_ERRORS: tuple[type[BaseException], ...] = (TypeError, KeyError, ValueError, IndexError, AttributeError)
_STATUS = {"open": "open", "closed": "filled", "canceled": "canceled", "cancelled": "canceled",
           "rejected": "rejected", "expired": "canceled"}
# venue error messages that mean "this client id was already used" (the order exists)
_DUPLICATE_HINTS = ("duplicate", "-4116", "orderlinkid is duplicate", "10014")


def _f(value: Any, default: float = math.nan) -> float:
    """A payload number as float (``None`` / ``""`` → ``default``)."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _tradable_price(ex: ccxt.Exchange, symbol: str, side: Side, price: float) -> float:
    """``price`` on the venue's price grid, rounded towards the other side of the book (sell down, buy up).

    Why: the keeper prices a sell at the best bid (a buy at the best ask) to take the touch; ccxt rounds to the
    nearest tick / significant figure (Hyperliquid: 5), which can move a sell above the bid and leave it resting.
    Rounding towards the book keeps the intent at a cost of less than one tick.
    """
    px = float(ex.price_to_precision(symbol, price))
    step = abs(px - price) or abs(price) * 1e-9
    for _ in range(64):
        if (side == "sell" and px <= price) or (side == "buy" and px >= price):
            return px
        px = float(ex.price_to_precision(symbol, price - step if side == "sell" else price + step))
        step *= 1.5
    return px


class CcxtExchange:
    """:class:`ExchangeAdapter` over live ccxt exchanges (rules in the module docstring).

    ``venues``: registry venue ids to trade.  ``exchanges``: pre-built ccxt instances (tests); missing ones are
    built from the environment.  ``urls``: per venue, replacements for ``exchange.urls['api']`` (tests: loopback
    servers).  ``assets``: assets whose markets are searched when an order's market is not known to this process
    (after a restart; Binance needs a symbol to look an order up).  ``initial_balances`` fills
    :attr:`Balance.initial_usd` (the venue does not know it; the wallet is used when absent).
    """

    def __init__(
        self,
        venues: Iterable[str],
        exchanges: Mapping[str, ccxt.Exchange] | None = None,
        urls: Mapping[str, Mapping[str, Any]] | None = None,
        assets: Iterable[str] = (),
        initial_balances: Mapping[str, float] | None = None,
        rate_limit_ms: int | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        self._venues = list(dict.fromkeys(venues))
        for v in self._venues:
            get_venue(v)  # unknown venue -> clear error now
        self._urls = dict(urls or {})
        self._given = dict(exchanges or {})
        self._rate_limit_ms = rate_limit_ms
        self._timeout_ms = timeout_ms
        self._exchanges: dict[str, ccxt.Exchange] = {}
        self._symbols: dict[tuple[str, str], str] = {}
        self._cid_symbol: dict[tuple[str, str], str] = {}
        self._assets = list(assets)
        self._initial = dict(initial_balances or {})
        self._leverage: dict[tuple[str, str], float] = {}

    def __repr__(self) -> str:  # never shows exchange objects: they hold credentials
        return f"CcxtExchange(venues={self._venues!r})"

    __str__ = __repr__

    # ------------------------------------------------------------------------------------------ plumbing

    def exchange(self, venue: str) -> ccxt.Exchange:
        """The venue's ccxt instance, built on first use with credentials from the environment."""
        if venue not in self._venues:
            raise ExchangeError(f"{venue}: not configured in this CcxtExchange (venues: {self._venues})")
        ex = self._exchanges.get(venue)
        if ex is None:
            ex = self._given.get(venue) or CcxtSource.make_exchange(
                venue, api_key_env=True, urls=self._urls.get(venue), rate_limit_ms=self._rate_limit_ms,
                timeout_ms=self._timeout_ms)
            self._harden(venue, ex)
            ex.verbose = False  # verbose prints requests (headers included) to stdout
            wire = logging.getLogger(f"{__name__}.wire.{venue}.{id(self):x}")
            wire.addFilter(Redact(self._secrets))
            ex.logger = wire  # ccxt's DEBUG request log goes through the redacting logger
            self._exchanges[venue] = ex
        return ex

    @staticmethod
    def _harden(venue: str, ex: ccxt.Exchange) -> None:
        """Re-apply the registry's fee-off options and switch off ccxt's builder/referrer side effects."""
        for key, value in get_venue(venue).ccxt_options.items():
            ex.options[key] = value
        if ex.id == "hyperliquid":
            ex.options["approvedBuilderFee"] = False  # False: no ``builder`` attached to orders
            ex.initialize_client = lambda: True  # type: ignore[method-assign]  # no builder approval, no referrer
        if ex.id == "binanceusdm":
            ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
            ex.options["fetchCurrencies"] = False  # a private wallet (sapi) call a futures account does not need

    def _lock(self, venue: str) -> threading.RLock:
        """One lock per account: ccxt id + a hash of the credential (never the credential itself)."""
        return account_lock(self.exchange(venue))

    def _secrets(self) -> list[str]:
        out = []
        for ex in list(self._exchanges.values()) + list(self._given.values()):
            for attr in _SECRET_ATTRS:
                value = getattr(ex, attr, None)
                if isinstance(value, str) and len(value) >= 4:
                    out.append(value)
        return sorted(set(out), key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        for s in self._secrets():
            text = text.replace(s, "***")
        return text

    def _error(self, venue: str, asset: str, method: str, exc: BaseException | str,
               cls: type[ExchangeError] = ExchangeError) -> ExchangeError:
        cause = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return cls(self._scrub(f"{venue} {asset}: {method} failed: {cause}"))

    def _call(self, venue: str, asset: str, method: str, fn: Callable[[], T]) -> T:
        """Run one ccxt call under the account lock; ccxt / parse errors → scrubbed :class:`ExchangeError`."""
        try:
            with self._lock(venue):
                return fn()
        except ExchangeError:
            raise
        except ccxt.BaseError as exc:
            raise self._error(venue, asset, method, exc) from None
        except _PARSE_ERRORS as exc:
            raise self._error(venue, asset, method, f"malformed payload: {exc!r}") from None

    # ------------------------------------------------------------------------------------------ symbols

    def symbol(self, venue: str, asset: str) -> str:
        """The ccxt unified symbol of ``asset``'s perpetual on ``venue`` (USDT-settled first, then USDC)."""
        key = (venue, asset)
        if key not in self._symbols:
            ex = self.exchange(venue)
            markets = self._call(venue, asset, "load_markets", ex.load_markets)
            cands = []
            for m in markets.values():
                info = m.get("info") if isinstance(m.get("info"), dict) else {}
                names = {m.get("base"), m.get("baseName"), info.get("name"), m.get("id")}
                if asset in names and m.get("swap") and m.get("linear") is not False and m.get("active") is not False:
                    settle = str(m.get("settle") or "")
                    rank = _SETTLE_ORDER.index(settle) if settle in _SETTLE_ORDER else len(_SETTLE_ORDER)
                    cands.append((rank, m["symbol"]))
            if not cands:
                raise ExchangeError(f"{venue} {asset}: load_markets failed: no perpetual market for {asset} "
                                    f"on {ex.id}")
            self._symbols[key] = min(cands)[1]
        return self._symbols[key]

    def asset_of(self, venue: str, symbol: str) -> str:
        """The canonical asset of a unified symbol (inverse of :meth:`symbol`)."""
        for (v, a), s in self._symbols.items():
            if v == venue and s == symbol:
                return a
        ex = self.exchange(venue)
        m = ex.markets.get(symbol) if ex.markets else None
        if m is None:
            return symbol.split("/")[0]
        return str(m.get("baseName") or m.get("base") or symbol.split("/")[0])

    # ------------------------------------------------------------------------------------------ prices

    def order_book_top(self, venue: str, asset: str) -> BookTop | None:
        ex = self.exchange(venue)
        sym = self.symbol(venue, asset)
        limit = 5 if ex.id == "binanceusdm" else None
        book = self._call(venue, asset, "fetch_order_book", lambda: ex.fetch_order_book(sym, limit))
        bids, asks = book.get("bids") or [], book.get("asks") or []
        if not bids or not asks:
            return None
        bid, ask = float(bids[0][0]), float(asks[0][0])
        ts = book.get("timestamp")
        stamp = datetime.fromtimestamp(ts / 1000, UTC).replace(tzinfo=None) if ts else None
        return BookTop(bid=bid, ask=ask, mid=(bid + ask) / 2, source=f"ccxt:{ex.id}:orderbook", ts=stamp)

    def mark_price(self, venue: str, asset: str) -> float | None:
        """The venue's mark price (funding-rate payload first, then the ticker, then the book mid)."""
        ex = self.exchange(venue)
        sym = self.symbol(venue, asset)
        if ex.has.get("fetchFundingRate"):
            fr = self._call(venue, asset, "fetch_funding_rate", lambda: ex.fetch_funding_rate(sym))
            px = _f(fr.get("markPrice"))
            if math.isfinite(px) and px > 0:
                return px
        if ex.has.get("fetchTicker"):
            try:
                t = self._call(venue, asset, "fetch_ticker", lambda: ex.fetch_ticker(sym))
                for k in ("markPrice", "last", "close"):
                    px = _f(t.get(k))
                    if math.isfinite(px) and px > 0:
                        return px
            except ExchangeError:
                pass
        book = self.order_book_top(venue, asset)
        return book.mid if book else None

    # ------------------------------------------------------------------------------------------ orders

    def _to_order(self, venue: str, o: Mapping[str, Any], client_id: str | None = None,
                  asset: str | None = None) -> Order | None:
        """A ccxt order → :class:`Order`; None for a payload that names no order (unknown id)."""
        info = o.get("info") if isinstance(o.get("info"), dict) else {}
        if not o.get("id") and not o.get("clientOrderId"):
            return None
        if info.get("status") == "unknownOid":
            return None
        symbol = o.get("symbol")
        filled = abs(_f(o.get("filled"), 0.0))
        amount = abs(_f(o.get("amount"), 0.0))
        price = _f(o.get("price"), 0.0)
        avg = _f(o.get("average"), 0.0) or (price if filled > 0 else 0.0)
        status = _STATUS.get(str(o.get("status") or "").lower(), "open")
        if status == "canceled" and filled > 0:
            status = "partial"
        fee = o.get("fee") or {}
        cid = str(o.get("clientOrderId") or client_id or "")
        side = str(o.get("side") or "").lower()
        ts = o.get("timestamp")
        return Order(
            venue=venue, asset=asset or (self.asset_of(venue, symbol) if symbol else ""), client_id=cid,
            side="buy" if side == "buy" else "sell", size_usd=amount * price, price=price,
            reduce_only=bool(o.get("reduceOnly")), status=status, filled_qty=filled, avg_price=avg,
            fee_usd=abs(_f(fee.get("cost"), 0.0)) if isinstance(fee, dict) else 0.0,
            liquidity="taker" if o.get("takerOrMaker") == "taker" else "maker",
            ts=datetime.fromtimestamp(ts / 1000, UTC).replace(tzinfo=None) if ts else None,
        )

    def _lookup(self, venue: str, client_id: str, symbol: str | None) -> dict[str, Any] | None:
        """The venue's raw order for ``client_id`` (None when the venue does not know it)."""
        ex = self.exchange(venue)
        if ex.id == "bybit":
            params: dict[str, Any] = {"clientOrderId": client_id, "acknowledged": True}
        else:
            params = {"clientOrderId": client_id}
        try:
            with self._lock(venue):
                return ex.fetch_order(None, symbol, params)  # type: ignore[no-any-return]
        except ccxt.OrderNotFound:
            return None
        # a malformed payload is NOT "not found" (that could send the order twice): _call raises it

    def _candidate_symbols(self, venue: str, client_id: str) -> list[str | None]:
        known = self._cid_symbol.get((venue, client_id))
        if known is not None:
            return [known]
        if self.exchange(venue).id == "hyperliquid":
            return [None]  # orderStatus by cloid needs no symbol
        syms = {s for (v, _), s in self._symbols.items() if v == venue}
        syms |= {self.symbol(venue, a) for a in self._assets}
        return sorted(syms)

    def fetch_order_by_client_id(self, venue: str, client_id: str) -> Order | None:
        return self._fetch_cid(venue, str(client_id), "*")

    def _fetch_cid(self, venue: str, cid: str, asset: str) -> Order | None:
        """:meth:`fetch_order_by_client_id` with the asset (when known) for error messages."""
        for sym in self._candidate_symbols(venue, cid):
            raw = self._call(venue, asset, "fetch_order", lambda sym=sym: self._lookup(venue, cid, sym))
            if raw is not None:
                order = self._to_order(venue, raw, cid)
                if order is not None:
                    if raw.get("symbol"):
                        self._cid_symbol[(venue, cid)] = raw["symbol"]
                    return order
        return None

    def place_limit_order(
        self, venue: str, asset: str, side: Side, size_usd: float, price: float, client_id: str,
        reduce_only: bool = False,
    ) -> Order:
        """Place a limit order with the deterministic ``client_id``; a known id returns the venue's order."""
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {side!r}")
        if not (price > 0 and size_usd > 0):
            raise ValueError(f"price and size_usd must be positive, got {price!r}, {size_usd!r}")
        ex = self.exchange(venue)
        cid = str(client_id)
        sym = self.symbol(venue, asset)
        with self._lock(venue):
            self._cid_symbol.setdefault((venue, cid), sym)
            existing = self._fetch_cid(venue, cid, asset)
            if existing is not None:
                log.info("%s %s: client id %s already on the venue (%s); not sent again", venue, asset, cid,
                         existing.status)
                return existing
            try:
                amount = float(ex.amount_to_precision(sym, size_usd / price))
                px = _tradable_price(ex, sym, side, price)
            except ccxt.BaseError as exc:
                raise self._error(venue, asset, "create_order", exc) from None
            params: dict[str, Any] = {"clientOrderId": cid}
            if reduce_only:
                params["reduceOnly"] = True
            log.info("%s %s: create_order limit %s %s @ %s client id %s", venue, asset, side, amount, px, cid)
            try:
                raw = ex.create_order(sym, "limit", side, amount, px, params)
            except (ccxt.RequestTimeout, ccxt.NetworkError) as exc:
                found = self._fetch_cid(venue, cid, asset)
                if found is not None:
                    return found
                raise self._error(venue, asset, "create_order", exc, OrderTimeout) from None
            except ccxt.BaseError as exc:
                if any(h in str(exc).lower() for h in _DUPLICATE_HINTS):
                    found = self.fetch_order_by_client_id(venue, cid)
                    if found is not None:
                        return found
                raise self._error(venue, asset, "create_order", exc) from None
            except _PARSE_ERRORS as exc:
                raise self._error(venue, asset, "create_order", f"malformed payload: {exc!r}") from None
            # the create response is partial on some venues (Hyperliquid: oid + fill only): ask for the full order
            found = self.fetch_order_by_client_id(venue, cid)
            if found is not None:
                return found
            order = self._to_order(venue, raw, cid, asset)
            if order is None:
                raise self._error(venue, asset, "create_order", "the venue returned no order")
            return order

    def cancel_order(self, venue: str, client_id: str) -> Order | None:
        cid = str(client_id)
        ex = self.exchange(venue)
        with self._lock(venue):
            current = self.fetch_order_by_client_id(venue, cid)
            if current is None or current.status != "open":
                return current
            sym = self._cid_symbol.get((venue, cid))
            try:
                ex.cancel_order(None, sym, {"clientOrderId": cid})
            except ccxt.OrderNotFound:
                pass  # filled or cancelled meanwhile: the re-fetch below says which
            except ccxt.BaseError as exc:
                raise self._error(venue, current.asset, "cancel_order", exc) from None
            return self.fetch_order_by_client_id(venue, cid)

    def open_orders(self, venue: str) -> list[Order]:
        ex = self.exchange(venue)
        raw = self._call(venue, "*", "fetch_open_orders", lambda: ex.fetch_open_orders())
        out = []
        for o in raw:
            order = self._to_order(venue, o)
            if order is not None:
                if o.get("symbol") and order.client_id:
                    self._cid_symbol[(venue, order.client_id)] = o["symbol"]
                out.append(order)
        return out

    # ------------------------------------------------------------------------------------------ account

    def positions(self, venue: str) -> list[VenuePosition]:
        ex = self.exchange(venue)
        raw = self._call(venue, "*", "fetch_positions", lambda: ex.fetch_positions())
        out = []
        for p in raw:
            contracts = _f(p.get("contracts"), 0.0) * _f(p.get("contractSize"), 1.0)
            if not contracts:
                continue
            side = str(p.get("side") or "").lower()
            qty = -abs(contracts) if side == "short" else abs(contracts)
            asset = self.asset_of(venue, str(p.get("symbol")))
            entry = _f(p.get("entryPrice"), 0.0)
            mark = _f(p.get("markPrice"))
            if not math.isfinite(mark):
                notional = _f(p.get("notional"))
                mark = abs(notional / qty) if math.isfinite(notional) else entry
            lev = _f(p.get("leverage"))
            if not math.isfinite(lev) or lev <= 0:
                lev = self._leverage.get((venue, asset), 1.0)
            out.append(VenuePosition(venue, asset, qty, entry, mark, lev))
        return out

    def balance(self, venue: str) -> Balance:
        """One venue's account (:meth:`balances` for all)."""
        ex = self.exchange(venue)
        raw = self._call(venue, "*", "fetch_balance", lambda: ex.fetch_balance())
        info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
        pos = self.positions(venue)
        upnl = sum(p.unrealised_pnl_usd for p in pos)
        if ex.id == "binanceusdm" and "totalWalletBalance" in info:
            wallet = _f(info.get("totalWalletBalance"), 0.0)
            equity = _f(info.get("totalMarginBalance"), wallet + upnl)
            maint = _f(info.get("totalMaintMargin"), 0.0)
            used = _f(info.get("totalInitialMargin"), 0.0)
        elif ex.id == "hyperliquid" and isinstance(info.get("marginSummary"), dict):
            equity = _f(info["marginSummary"].get("accountValue"), 0.0)
            wallet = equity - upnl
            maint = _f(info.get("crossMaintenanceMarginUsed"), 0.0)
            used = _f(info["marginSummary"].get("totalMarginUsed"), 0.0)
        else:
            totals = raw.get("total") or {}
            equity = sum(_f(totals.get(c), 0.0) for c in _SETTLE_ORDER)
            wallet = equity - upnl
            maint = 0.0  # not in the unified balance: health is then reported as infinite
            used = sum(p.notional_usd / max(p.leverage, 1e-9) for p in pos)
        hf = equity / maint if maint > 0 else math.inf
        return Balance(venue, float(self._initial.get(venue, wallet)), wallet, equity, maint, used, hf)

    def balances(self) -> dict[str, Balance]:
        return {v: self.balance(v) for v in self._venues}

    def set_leverage(self, venue: str, asset: str, leverage: float) -> None:
        ex = self.exchange(venue)
        sym = self.symbol(venue, asset)
        lev = max(1, round(leverage))
        self._call(venue, asset, "set_leverage", lambda: ex.set_leverage(lev, sym))
        self._leverage[(venue, asset)] = float(lev)

    def funding_payments(self, since: datetime | None = None) -> list[FundingPayment]:
        """Funding history of every venue whose ccxt class has ``fetchFundingHistory`` (others: none)."""
        since_ms = None
        if since is not None:
            s = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
            since_ms = int(s.timestamp() * 1000) + 1
        out = []
        for venue in self._venues:
            ex = self.exchange(venue)
            if not ex.has.get("fetchFundingHistory"):
                continue
            rows = self._call(venue, "*", "fetch_funding_history",
                              lambda ex=ex: ex.fetch_funding_history(None, since_ms))
            for r in rows:
                info = r.get("info") if isinstance(r.get("info"), dict) else {}
                delta = info.get("delta") if isinstance(info.get("delta"), dict) else {}
                ts = datetime.fromtimestamp(int(r["timestamp"]) / 1000, UTC).replace(tzinfo=None)
                if since is not None and ts <= since.replace(tzinfo=None):
                    continue
                asset = self.asset_of(venue, str(r.get("symbol")))
                qty = _f(delta.get("szi"), 0.0)
                rate = _f(delta.get("fundingRate"), math.nan)
                amount = _f(r.get("amount"), 0.0)
                out.append(FundingPayment(
                    payment_id=f"{venue}|{r.get('id') or ts.isoformat()}|{asset}", venue=venue, asset=asset,
                    ts=ts, rate=rate, qty=qty, price=math.nan, amount_usd=amount))
        return sorted(out, key=lambda p: (p.ts, p.payment_id))
