"""The venue side of the keeper: the :class:`ExchangeAdapter` protocol and :class:`PaperExchange`, the default.

Why a protocol: the cycle (:mod:`fundarb_core.execution.cycle`) talks to venues only through these calls, so paper
trading, tests with injected faults and (later) a live ccxt adapter are interchangeable.  Sizes are USD notional,
quantities base units (signed: short < 0), client ids strings (:mod:`fundarb_core.domain.client_ids`).

:class:`PaperExchange` — rules (each a choice the spec leaves open):

* **Price** of ``(venue, asset)`` at the clock: the latest ``orderbook_depth`` mid at or before it, else the
  latest ``stg_candles`` close whose bar had closed by then, else the latest ``funding_rates.mark_price``, each
  at most ``max_price_age_hours`` (2 h) old (two symbols stamped at the same instant: the lower price, so the
  choice never depends on row order); when the venue has none of them, the same asset's price on another
  venue by the same rule (the legs are one underlying; the bundled data has no Hyperliquid/Lighter bars).
* **Book top**: the data has mids, not quotes, so bid/ask = mid × (1 ∓ ``half_spread_bps``) (1 bp each side).
* **Fills**: a limit sell at or below the bid (buy at or above the ask) fills at once at the touch moved by the
  keeper's √-impact (:func:`fundarb_core.strategy.costs.sqrt_impact`, ``base_impact`` of the config, liquidity =
  that side's book depth, else open interest, else 24 h volume; no impact when none is known).  A limit that
  does not cross rests (``open``) and is re-tried at every :meth:`PaperExchange.advance_to`.  Fees: maker on
  opening orders, taker on ``reduce_only`` (exit) orders, the venue's schedule from ``KeeperConfig.fees``.
  ``reduce_only`` orders are capped at the position (a size above it closes it), and rejected without one.
* **Idempotency**: an order is keyed by ``(venue, client_id)``; placing a known id returns the stored order.
* **Funding**: at every settlement in ``funding_rates`` (stamp rounded to the minute: stamps carry collection
  jitter) after the position's last accrual and up to the clock, the position receives
  ``−qty × price × rate`` (a short receives positive funding); price = the row's mark price, else the price
  rule at the settlement.  One symbol per position (USDT-quoted first, then USDC), fixed when it opens.  A
  position opened at a settlement instant does not receive that settlement.
* **Margin**: cross margin per venue.  wallet = initial + realised PnL (average cost) − fees + funding;
  equity = wallet + unrealised PnL; health = equity / Σ |qty| × mark × ``maintenance_margin``.
* **Faults** (tests): per call, an explicit queued instruction (:meth:`PaperExchange.inject`) or, failing that,
  a seeded draw from :class:`FaultPlan`: ``fail`` (never reaches the venue: :class:`ExchangeError`),
  ``reject`` (venue refuses: status ``rejected``), ``partial`` (fills 20–80 %, the rest is cancelled) and
  ``timeout`` (the venue fills it but the call raises :class:`OrderTimeout`: status unknown until fetched).
  Random faults hit opening orders only unless ``FaultPlan.on_reduce_only``: an exit is a taker order that a
  real keeper would re-send until done.  The draw is seeded by ``(seed, orders so far)``, so a restarted
  process continues the same fault sequence.
* **State** lives in ``paper_*`` tables (orders, positions, balances, funding, state) of the same DuckDB,
  written through the adapter's own cursor in one transaction per change, so a restarted process sees it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import duckdb
import numpy as np
import pandas as pd

from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.costs import sqrt_impact

Side = Literal["buy", "sell"]
FaultKind = Literal["fail", "reject", "partial", "timeout", "none"]
OPEN_STATUSES = frozenset({"open"})
FINAL_STATUSES = frozenset({"filled", "partial", "rejected", "canceled"})


class ExchangeError(RuntimeError):
    """The venue could not be reached or refused the request; the order did not arrive."""


class OrderTimeout(ExchangeError):
    """The request went out but no answer came back: the order's status is unknown until fetched."""


@dataclass(frozen=True)
class BookTop:
    """Best bid and ask (``source`` says where the price came from)."""

    bid: float
    ask: float
    mid: float
    source: str
    ts: datetime | None = None


@dataclass(frozen=True)
class Order:
    """A venue order as the venue reports it (``filled_qty`` unsigned, base units)."""

    venue: str
    asset: str
    client_id: str
    side: Side
    size_usd: float
    price: float
    reduce_only: bool
    status: str
    filled_qty: float = 0.0
    avg_price: float = 0.0
    fee_usd: float = 0.0
    liquidity: str = "maker"
    ts: datetime | None = None
    reason: str = ""

    @property
    def signed_qty(self) -> float:
        """Filled quantity with the position sign (buy +, sell −)."""
        return self.filled_qty if self.side == "buy" else -self.filled_qty

    @property
    def filled_usd(self) -> float:
        return self.filled_qty * self.avg_price


@dataclass(frozen=True)
class VenuePosition:
    """A venue's position in one asset (``qty`` signed base units)."""

    venue: str
    asset: str
    qty: float
    avg_price: float
    mark_price: float
    leverage: float

    @property
    def notional_usd(self) -> float:
        return abs(self.qty) * self.mark_price

    @property
    def unrealised_pnl_usd(self) -> float:
        return self.qty * (self.mark_price - self.avg_price)


@dataclass(frozen=True)
class Balance:
    """One venue's account: wallet (realised), equity (with unrealised PnL), margin figures and health."""

    venue: str
    initial_usd: float
    wallet_usd: float
    equity_usd: float
    maintenance_usd: float
    margin_used_usd: float
    health_factor: float


@dataclass(frozen=True)
class FundingPayment:
    """One settlement paid to (amount > 0) or by (< 0) a position."""

    payment_id: str
    venue: str
    asset: str
    ts: datetime
    rate: float
    qty: float
    price: float
    amount_usd: float


@runtime_checkable
class ExchangeAdapter(Protocol):
    """What the keeper needs from venues (paper or live)."""

    def order_book_top(self, venue: str, asset: str) -> BookTop | None:
        """Best bid/ask now, None when the venue has no price."""

    def mark_price(self, venue: str, asset: str) -> float | None:
        """Mark price now, None when unknown."""

    def place_limit_order(
        self, venue: str, asset: str, side: Side, size_usd: float, price: float, client_id: str,
        reduce_only: bool = False,
    ) -> Order:
        """Place (or, for a known ``client_id``, return) a limit order; raises :class:`ExchangeError`."""

    def cancel_order(self, venue: str, client_id: str) -> Order | None:
        """Cancel an open order; returns it (None when the venue does not know it)."""

    def fetch_order_by_client_id(self, venue: str, client_id: str) -> Order | None:
        """The venue's view of an order, None when it never arrived."""

    def open_orders(self, venue: str) -> list[Order]:
        """Orders resting on the venue."""

    def positions(self, venue: str) -> list[VenuePosition]:
        """Non-zero positions on the venue."""

    def balances(self) -> dict[str, Balance]:
        """Every venue's account."""

    def set_leverage(self, venue: str, asset: str, leverage: float) -> None:
        """Leverage for new orders on a market."""

    def funding_payments(self, since: datetime | None = None) -> list[FundingPayment]:
        """Funding paid or received with settlement time after ``since`` (all when None)."""


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities of each injected fault per order (the rest succeed)."""

    p_fail: float = 0.0
    p_reject: float = 0.0
    p_partial: float = 0.0
    p_timeout: float = 0.0
    partial_range: tuple[float, float] = (0.2, 0.8)
    on_reduce_only: bool = False

    def draw(self, u: float) -> FaultKind:
        """The fault for a uniform draw ``u``."""
        edges = np.cumsum([self.p_fail, self.p_reject, self.p_partial, self.p_timeout])
        kinds: tuple[FaultKind, ...] = ("fail", "reject", "partial", "timeout")
        for kind, edge in zip(kinds, edges, strict=True):
            if u < edge:
                return kind
        return "none"


_DDL = (
    """CREATE TABLE IF NOT EXISTS paper_orders (
        venue VARCHAR NOT NULL, client_id VARCHAR NOT NULL, asset VARCHAR NOT NULL, side VARCHAR NOT NULL,
        size_usd DOUBLE NOT NULL, price DOUBLE NOT NULL, reduce_only BOOLEAN NOT NULL, status VARCHAR NOT NULL,
        filled_qty DOUBLE NOT NULL, avg_price DOUBLE NOT NULL, fee_usd DOUBLE NOT NULL, liquidity VARCHAR NOT NULL,
        ts TIMESTAMP, reason VARCHAR, seq BIGINT NOT NULL, PRIMARY KEY (venue, client_id))""",
    """CREATE TABLE IF NOT EXISTS paper_positions (
        venue VARCHAR NOT NULL, asset VARCHAR NOT NULL, qty DOUBLE NOT NULL, avg_price DOUBLE NOT NULL,
        leverage DOUBLE NOT NULL, venue_symbol VARCHAR, funded_to TIMESTAMP, PRIMARY KEY (venue, asset))""",
    """CREATE TABLE IF NOT EXISTS paper_balances (
        venue VARCHAR PRIMARY KEY, initial_usd DOUBLE NOT NULL, wallet_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS paper_funding (
        payment_id VARCHAR PRIMARY KEY, venue VARCHAR NOT NULL, asset VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
        rate DOUBLE NOT NULL, qty DOUBLE NOT NULL, price DOUBLE NOT NULL, amount_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS paper_state (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""",
)

_PRICE_SQL = """
WITH c AS (
    SELECT 1 AS prio, venue, asset, mid_price AS px, ts FROM orderbook_depth
    WHERE ts <= $t AND ts >= $t - to_hours($age)
    UNION ALL
    SELECT 2, venue, asset, close, hour FROM stg_candles WHERE hour <= $t AND hour >= $t - to_hours($age)
    UNION ALL
    SELECT 3, venue, asset, mark_price, ts FROM funding_rates
    WHERE mark_price IS NOT NULL AND ts <= $t AND ts >= $t - to_hours($age)
)
SELECT venue, asset, px, prio, ts FROM c
QUALIFY row_number() OVER (PARTITION BY venue, asset ORDER BY prio, ts DESC, px) = 1
"""

_LIQ_SQL = """
WITH c AS (
    SELECT 1 AS prio, CASE WHEN $buy THEN coalesce(ask_depth_usd, bid_depth_usd)
                           ELSE coalesce(bid_depth_usd, ask_depth_usd) END AS liq, ts
    FROM orderbook_depth WHERE venue = $v AND asset = $a AND ts <= $t AND ts >= $t - to_hours($age)
    UNION ALL
    SELECT 2, oi_usd, ts FROM open_interest WHERE venue = $v AND asset = $a AND ts <= $t AND ts >= $t - to_hours($age)
    UNION ALL
    SELECT 3, volume_usd_24h, hour FROM volatility
    WHERE venue = $v AND asset = $a AND hour <= $t AND hour >= $t - to_hours($age)
)
SELECT liq FROM c WHERE liq > 0 ORDER BY prio, ts DESC LIMIT 1
"""

_SETTLE_SQL = """
SELECT p.venue, p.asset, p.qty, p.avg_price, f.ts_r, f.rate, f.mark_price
FROM paper_positions p
JOIN (
    SELECT venue, asset, venue_symbol, date_trunc('minute', ts + INTERVAL 30 SECOND) AS ts_r, rate, mark_price
    FROM funding_rates WHERE ts > $lo - INTERVAL 1 MINUTE AND ts <= $now + INTERVAL 1 MINUTE
) f ON f.venue = p.venue AND f.asset = p.asset AND f.venue_symbol = p.venue_symbol
WHERE p.qty <> 0 AND f.ts_r > p.funded_to AND f.ts_r <= $now
ORDER BY f.ts_r, p.venue, p.asset
"""

_SYMBOL_SQL = """
SELECT venue_symbol FROM funding_rates WHERE venue = $v AND asset = $a AND ts <= $t AND ts >= $t - INTERVAL 7 DAY
GROUP BY venue_symbol, quote
ORDER BY CASE quote WHEN 'USDT' THEN 0 WHEN 'USDC' THEN 1 ELSE 2 END, max(ts) DESC, venue_symbol LIMIT 1
"""


def insert_rows(db: duckdb.DuckDBPyConnection, table: str, rows: list[list[object]]) -> None:
    """One multi-row ``INSERT`` (DuckDB runs one statement far faster than many; callers deduplicate first,
    ``ON CONFLICT`` costs more than the insert)."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    db.execute(f"INSERT INTO {table} VALUES " + ", ".join([one] * len(rows)), [x for r in rows for x in r])


def _naive(ts: datetime | pd.Timestamp | str) -> datetime:
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t.to_pydatetime()


@dataclass
class _Instruction:
    kind: FaultKind
    venue: str | None
    asset: str | None
    fraction: float | None = None


@dataclass
class PaperExchange:
    """Paper venue over the DuckDB's real market data (rules in the module docstring).

    ``initial_balances`` seed ``paper_balances`` only for venues not yet stored (a restart keeps the wallet);
    ``now`` is the clock (a restart reads the stored one when None).
    """

    conn: duckdb.DuckDBPyConnection
    config: KeeperConfig = field(default_factory=KeeperConfig)
    initial_balances: Mapping[str, float] | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0
    half_spread_bps: float = 1.0
    max_price_age_hours: float = 2.0
    max_liquidity_age_hours: float = 24.0
    default_leverage: float = 1.0
    now: datetime | None = None
    price_overrides: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._db = self.conn.cursor()
        for ddl in _DDL:
            self._db.execute(ddl)
        self._db.execute("INSERT INTO paper_state VALUES ('clock', ''), ('seq', '0') ON CONFLICT DO NOTHING")
        self._queue: deque[_Instruction] = deque()
        self._venues: list[str] | None = None
        self._price_cache: dict[datetime, dict[tuple[str, str], tuple[float, int, datetime]]] = {}
        self._pos_cache: list[tuple[str, str, float, float, float]] | None = None
        if self.now is None:
            row = self._db.execute("SELECT value FROM paper_state WHERE key = 'clock'").fetchall()
            self.now = _naive(row[0][0]) if row and row[0][0] else None
        else:
            self.now = _naive(self.now)
            self._db.execute("UPDATE paper_state SET value = ? WHERE key = 'clock'", [self.now.isoformat()])
        venues = list(self.initial_balances or {})
        known = {r[0] for r in self._db.execute("SELECT venue FROM paper_balances").fetchall()}
        for v in venues:
            if v not in known:
                amt = float(self.initial_balances[v])  # type: ignore[index]
                self._db.execute("INSERT INTO paper_balances VALUES (?, ?, ?)", [v, amt, amt])

    # ------------------------------------------------------------------------------------------ clock

    def _clock(self) -> datetime:
        if self.now is None:
            raise RuntimeError("PaperExchange has no clock: call advance_to(now) first")
        return self.now

    def advance_to(self, now: datetime | pd.Timestamp | str) -> None:
        """Move the clock forward: accrue funding up to ``now`` and re-try resting orders at the new prices."""
        t = _naive(now)
        if self.now is not None and t < self.now:
            raise ValueError(f"the paper clock cannot go back ({t} < {self.now})")
        self.now = t
        self._tx(lambda db: db.execute("UPDATE paper_state SET value = ? WHERE key = 'clock'", [t.isoformat()]),
                 positions=False)
        self._accrue_funding(t)
        for o in self._orders_where("status = 'open'"):
            self._try_fill_resting(o)

    def _tx(self, fn: object, positions: bool = True) -> None:
        if positions:
            self._pos_cache = self._venues = None
        db = self._db
        db.begin()
        try:
            fn(db)  # type: ignore[operator]
            db.commit()
        except BaseException:
            db.rollback()
            raise

    # ------------------------------------------------------------------------------------------ market data

    def _price(self, venue: str, asset: str, at: datetime | None = None) -> tuple[float, str] | None:
        if (venue, asset) in self.price_overrides:
            return self.price_overrides[(venue, asset)], "override"
        t = at or self._clock()
        if t not in self._price_cache:
            if len(self._price_cache) > 64:
                self._price_cache.clear()
            rows = self._db.execute(_PRICE_SQL, {"t": t, "age": math.ceil(self.max_price_age_hours)}).fetchall()
            self._price_cache[t] = {(v, a): (float(px), int(prio), ts) for v, a, px, prio, ts in rows}
        table = self._price_cache[t]
        names = {1: "book", 2: "candle", 3: "funding_mark"}
        if (venue, asset) in table:
            px, prio, _ = table[(venue, asset)]
            return px, names[prio]
        others = sorted((prio, -pd.Timestamp(ts).value, px) for (v, a), (px, prio, ts) in table.items() if a == asset)
        if not others:
            return None
        return others[0][2], f"cross_venue_{names[others[0][0]]}"

    def _liquidity(self, venue: str, asset: str, buy: bool) -> float:
        rows = self._db.execute(_LIQ_SQL, {"v": venue, "a": asset, "t": self._clock(), "buy": buy,
                                           "age": math.ceil(self.max_liquidity_age_hours)}).fetchall()
        return float(rows[0][0]) if rows else float("nan")

    def order_book_top(self, venue: str, asset: str) -> BookTop | None:
        p = self._price(venue, asset)
        if p is None:
            return None
        mid, src = p
        h = self.half_spread_bps * 1e-4
        return BookTop(bid=mid * (1 - h), ask=mid * (1 + h), mid=mid, source=src, ts=self.now)

    def mark_price(self, venue: str, asset: str) -> float | None:
        p = self._price(venue, asset)
        return None if p is None else p[0]

    # ------------------------------------------------------------------------------------------ faults

    def inject(self, kind: FaultKind, venue: str | None = None, asset: str | None = None, count: int = 1,
               fraction: float | None = None) -> None:
        """Queue ``count`` explicit faults for the next matching orders (``None`` matches any venue/asset)."""
        for _ in range(count):
            self._queue.append(_Instruction(kind, venue, asset, fraction))

    def _next_fault(self, venue: str, asset: str, reduce_only: bool, seq: int) -> tuple[FaultKind, float]:
        rng = np.random.default_rng([self.seed, seq])
        u, frac_u = float(rng.random()), float(rng.random())
        lo, hi = self.faults.partial_range
        frac = lo + (hi - lo) * frac_u
        for i, ins in enumerate(self._queue):
            if (ins.venue in (None, venue)) and (ins.asset in (None, asset)):
                del self._queue[i]
                return ins.kind, ins.fraction if ins.fraction is not None else frac
        if reduce_only and not self.faults.on_reduce_only:
            return "none", frac
        return self.faults.draw(u), frac

    # ------------------------------------------------------------------------------------------ orders

    def _row_to_order(self, r: tuple) -> Order:
        return Order(venue=r[0], client_id=r[1], asset=r[2], side=r[3], size_usd=r[4], price=r[5],
                     reduce_only=bool(r[6]), status=r[7], filled_qty=r[8], avg_price=r[9], fee_usd=r[10],
                     liquidity=r[11], ts=r[12], reason=r[13] or "")

    _COLS = ("venue, client_id, asset, side, size_usd, price, reduce_only, status, filled_qty, avg_price, fee_usd, "
             "liquidity, ts, reason")

    def _orders_where(self, where: str, params: list[object] | None = None) -> list[Order]:
        rows = self._db.execute(f"SELECT {self._COLS} FROM paper_orders WHERE {where} ORDER BY seq",
                                params or []).fetchall()
        return [self._row_to_order(r) for r in rows]

    def fetch_order_by_client_id(self, venue: str, client_id: str) -> Order | None:
        got = self._orders_where("venue = ? AND client_id = ?", [venue, str(client_id)])
        return got[0] if got else None

    def open_orders(self, venue: str) -> list[Order]:
        return self._orders_where("venue = ? AND status = 'open'", [venue])

    def all_orders(self, venue: str | None = None, since: datetime | None = None) -> list[Order]:
        """Every order the venue has seen (what ccxt's ``fetch_orders`` returns), oldest first; ``since`` keeps
        those stamped at or after it."""
        where, params = ["TRUE"], []
        if venue:
            where.append("venue = ?")
            params.append(venue)
        if since is not None:
            where.append("ts >= ?")
            params.append(_naive(since))
        return self._orders_where(" AND ".join(where), params)

    def cancel_order(self, venue: str, client_id: str) -> Order | None:
        o = self.fetch_order_by_client_id(venue, client_id)
        if o is None or o.status not in OPEN_STATUSES:
            return o
        self._tx(lambda db: db.execute("UPDATE paper_orders SET status = 'canceled' WHERE venue = ? AND client_id = ?",
                                       [venue, str(client_id)]))
        return self.fetch_order_by_client_id(venue, client_id)

    def set_leverage(self, venue: str, asset: str, leverage: float) -> None:
        lev = float(leverage)

        def go(db: duckdb.DuckDBPyConnection) -> None:
            db.execute("INSERT INTO paper_positions VALUES (?, ?, 0, 0, ?, NULL, NULL) "
                       "ON CONFLICT (venue, asset) DO UPDATE SET leverage = excluded.leverage", [venue, asset, lev])
        self._tx(go)

    def _position_row(self, venue: str, asset: str) -> tuple[float, float, float, str | None, datetime | None]:
        rows = self._db.execute("SELECT qty, avg_price, leverage, venue_symbol, funded_to FROM paper_positions "
                                "WHERE venue = ? AND asset = ?", [venue, asset]).fetchall()
        return rows[0] if rows else (0.0, 0.0, self.default_leverage, None, None)

    def place_limit_order(
        self, venue: str, asset: str, side: Side, size_usd: float, price: float, client_id: str,
        reduce_only: bool = False,
    ) -> Order:
        """Place a limit order (idempotent on ``(venue, client_id)``); see the module doc for fills and faults."""
        cid = str(client_id)
        existing = self.fetch_order_by_client_id(venue, cid)
        if existing is not None:
            return existing
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be buy or sell, got {side!r}")
        now = self._clock()
        self._accrue_funding(now)
        seq = self._next_seq()
        fault, frac = self._next_fault(venue, asset, reduce_only, seq)
        if fault == "fail":
            raise ExchangeError(f"injected failure: {venue} {asset} {side} {cid} never reached the venue")
        base = dict(venue=venue, asset=asset, client_id=cid, side=side, size_usd=float(size_usd),
                    price=float(price), reduce_only=bool(reduce_only), ts=now,
                    liquidity="taker" if reduce_only else "maker")
        if fault == "reject":
            order = Order(status="rejected", reason="injected_reject", **base)  # type: ignore[arg-type]
            self._store(order, seq)
            return order
        order = self._execute(Order(status="open", **base), seq, partial=frac if fault == "partial" else None)
        if fault == "timeout":
            raise OrderTimeout(f"injected timeout: {venue} {asset} {side} {cid} (the venue processed it)")
        return order

    def _next_seq(self) -> int:
        """A persistent placement counter (every attempt, failed ones included): seeds the fault draw."""
        rows = self._db.execute("SELECT value FROM paper_state WHERE key = 'seq'").fetchall()
        seq = int(rows[0][0]) if rows else 0
        self._tx(lambda db: db.execute("UPDATE paper_state SET value = ? WHERE key = 'seq'", [str(seq + 1)]),
                 positions=False)
        return seq

    def _store(self, o: Order, seq: int) -> None:
        self._tx(lambda db: db.execute(
            "INSERT INTO paper_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [o.venue, o.client_id, o.asset, o.side, o.size_usd, o.price, o.reduce_only, o.status, o.filled_qty,
             o.avg_price, o.fee_usd, o.liquidity, o.ts, o.reason, seq]), positions=False)

    def _fill_terms(self, o: Order, partial: float | None) -> tuple[str, float, float, float, str] | None:
        """(status, qty, fill price, fee, reason), or None when the limit does not cross (the order rests)."""
        book = self.order_book_top(o.venue, o.asset)
        if book is None:
            return "rejected", 0.0, 0.0, 0.0, "no_price"
        buy = o.side == "buy"
        touch = book.ask if buy else book.bid
        if (buy and o.price < touch) or (not buy and o.price > touch):
            return None
        qty = o.size_usd / touch
        if o.reduce_only:
            pos_qty = self._position_row(o.venue, o.asset)[0]
            if pos_qty == 0 or (pos_qty > 0) == buy:
                return "rejected", 0.0, 0.0, 0.0, "reduce_only_without_position"
            qty = min(qty, abs(pos_qty))
        status = "filled"
        if partial is not None:
            qty *= partial
            status = "partial"
        impact = float(np.nan_to_num(sqrt_impact(qty * touch, self._liquidity(o.venue, o.asset, buy),
                                                 self.config.base_impact), nan=0.0))
        px = touch * (1 + impact) if buy else touch * (1 - impact)
        fees = self.config.fees(o.venue)
        fee = qty * px * (fees.taker if o.reduce_only else fees.maker)
        return status, qty, px, fee, ""

    def _execute(self, o: Order, seq: int, partial: float | None = None) -> Order:
        terms = self._fill_terms(o, partial)
        if terms is None:
            self._store(o, seq)
            return o
        status, qty, px, fee, reason = terms
        done = Order(**{**o.__dict__, "status": status, "filled_qty": qty, "avg_price": px, "fee_usd": fee,
                        "reason": reason})
        self._commit_fill(done, seq, insert=True)
        return done

    def _try_fill_resting(self, o: Order) -> None:
        terms = self._fill_terms(o, None)
        if terms is None:
            return
        status, qty, px, fee, reason = terms
        done = Order(**{**o.__dict__, "status": status, "filled_qty": qty, "avg_price": px, "fee_usd": fee,
                        "reason": reason, "ts": self._clock()})
        self._commit_fill(done, 0, insert=False)

    def _commit_fill(self, o: Order, seq: int, insert: bool) -> None:
        """Store the order, move the position (average cost) and the wallet, in one transaction."""
        q0, p0, lev, sym, funded_to = self._position_row(o.venue, o.asset)
        dq = o.signed_qty
        realised = 0.0
        if dq != 0:
            if q0 == 0 or (q0 > 0) == (dq > 0):
                q1 = q0 + dq
                p1 = (abs(q0) * p0 + abs(dq) * o.avg_price) / abs(q1)
            else:
                closing = min(abs(dq), abs(q0))
                realised = closing * (o.avg_price - p0) * (1 if q0 > 0 else -1)
                q1 = q0 + dq
                p1 = p0 if abs(dq) <= abs(q0) else o.avg_price
                if abs(q1) < 1e-12 * max(abs(q0), 1.0):
                    q1, p1 = 0.0, 0.0
            if q0 == 0:
                funded_to = self._clock()
                sym = self._symbol(o.venue, o.asset)
        else:
            q1, p1 = q0, p0

        def go(db: duckdb.DuckDBPyConnection) -> None:
            if insert:
                db.execute("INSERT INTO paper_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [o.venue, o.client_id, o.asset, o.side, o.size_usd, o.price, o.reduce_only, o.status,
                            o.filled_qty, o.avg_price, o.fee_usd, o.liquidity, o.ts, o.reason, seq])
            else:
                db.execute("UPDATE paper_orders SET status = ?, filled_qty = ?, avg_price = ?, fee_usd = ?, ts = ? "
                           "WHERE venue = ? AND client_id = ?",
                           [o.status, o.filled_qty, o.avg_price, o.fee_usd, o.ts, o.venue, o.client_id])
            if dq != 0:
                db.execute("INSERT OR REPLACE INTO paper_positions VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [o.venue, o.asset, q1, p1, lev, sym, funded_to])
                self._ensure_balance(db, o.venue)
                db.execute("UPDATE paper_balances SET wallet_usd = wallet_usd + ? WHERE venue = ?",
                           [realised - o.fee_usd, o.venue])
        self._tx(go)

    def _ensure_balance(self, db: duckdb.DuckDBPyConnection, venue: str) -> None:
        amt = float(self.config.default_balance_usd)
        db.execute("INSERT INTO paper_balances VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [venue, amt, amt])

    def _symbol(self, venue: str, asset: str) -> str | None:
        rows = self._db.execute(_SYMBOL_SQL, {"v": venue, "a": asset, "t": self._clock()}).fetchall()
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------------------------------ funding

    def _accrue_funding(self, now: datetime) -> None:
        """Pay every settlement in (funded_to, now] to the open positions: one query, one transaction."""
        lo = self._db.execute("SELECT min(funded_to) FROM paper_positions WHERE qty <> 0 AND venue_symbol IS NOT NULL "
                              "AND funded_to < ?", [now]).fetchall()[0][0]
        if lo is None:
            return
        rows = self._db.execute(_SETTLE_SQL, {"lo": lo, "now": now}).fetchall()
        payments = []
        for venue, asset, qty, avg, ts_r, rate, mark in rows:
            px = mark if mark is not None and mark > 0 else None
            if px is None:
                got = self._price(venue, asset, ts_r)
                px = got[0] if got else avg
            payments.append([f"{venue}|{asset}|{ts_r.isoformat()}", venue, asset, ts_r, rate, qty, px,
                             -qty * px * rate])
        totals: dict[str, float] = {}
        for p in payments:
            totals[str(p[1])] = totals.get(str(p[1]), 0.0) + float(p[7])  # type: ignore[arg-type]

        def go(db: duckdb.DuckDBPyConnection) -> None:
            if payments:
                insert_rows(db, "paper_funding", payments)
            for venue, total in totals.items():
                db.execute("UPDATE paper_balances SET wallet_usd = wallet_usd + ? WHERE venue = ?", [total, venue])
            db.execute("UPDATE paper_positions SET funded_to = ? WHERE qty <> 0 AND venue_symbol IS NOT NULL "
                       "AND funded_to < ?", [now, now])
        self._tx(go)

    def funding_payments(self, since: datetime | None = None) -> list[FundingPayment]:
        q = "SELECT * FROM paper_funding" + (" WHERE ts > ?" if since is not None else "") + " ORDER BY ts, payment_id"
        rows = self._db.execute(q, [_naive(since)] if since is not None else []).fetchall()
        return [FundingPayment(*r) for r in rows]

    # ------------------------------------------------------------------------------------------ account

    def positions(self, venue: str) -> list[VenuePosition]:
        if self._pos_cache is None:
            self._pos_cache = self._db.execute("SELECT venue, asset, qty, avg_price, leverage FROM paper_positions "
                                               "WHERE qty <> 0 ORDER BY venue, asset").fetchall()
        out = []
        for v, asset, qty, avg, lev in self._pos_cache:
            if v != venue:
                continue
            mark = self.mark_price(venue, asset)
            out.append(VenuePosition(venue, asset, qty, avg, mark if mark is not None else avg, lev))
        return out

    def venues(self) -> list[str]:
        """Venues with an account or a position."""
        if self._venues is None:
            self._venues = [r[0] for r in self._db.execute(
                "SELECT venue FROM paper_balances UNION SELECT venue FROM paper_positions ORDER BY 1").fetchall()]
        return list(self._venues)

    def balances(self) -> dict[str, Balance]:
        rows = self._db.execute("SELECT venue, initial_usd, wallet_usd FROM paper_balances ORDER BY venue").fetchall()
        out: dict[str, Balance] = {}
        known = {r[0] for r in rows}
        for v in self.venues():
            if v not in known:
                rows.append((v, self.config.default_balance_usd, self.config.default_balance_usd))
        for venue, initial, wallet in rows:
            pos = self.positions(venue)
            upnl = sum(p.unrealised_pnl_usd for p in pos)
            mm = sum(p.notional_usd for p in pos) * self.config.maintenance_margin
            used = sum(p.notional_usd / max(p.leverage, 1e-9) for p in pos)
            equity = wallet + upnl
            hf = equity / mm if mm > 0 else math.inf
            out[venue] = Balance(venue, initial, wallet, equity, mm, used, hf)
        return out
