"""The keeper's own record (DuckDB ``ledger_*`` tables, ``cycle_decisions``, ``performance_snapshots``) and the
order protocol that keeps it consistent with the venues.

Why a ledger separate from the venue: the venue is the truth about fills, the ledger is the keeper's memory of
*why* (which position, leg and attempt an order belongs to, which plans were rejected).  They can disagree after
a crash or a lost write, so every order follows write-ahead intent:

1. :func:`send_order` writes the order as ``pending`` (its deterministic client id included) in one transaction;
2. it sends the order;
3. it records the venue's answer and the fill (as a delta over what the ledger already had) in one transaction.

A crash between 1 and 3 leaves a ``pending`` order; :func:`reconcile`, run at the start of every cycle before
anything else, asks the venue for it by client id and records the fill that happened, or marks it
``not_received``.  Orders the venue has but the ledger lacks entirely (the intent write was lost too) are imported
under an ``orphan:`` position, which the cycle closes.  Every write is one transaction.

Money: per venue, ``wallet = initial + realised PnL (average cost, fills in order) − fees + funding`` — the
same rule as the paper venue, computed independently here from the ledger's fills (:meth:`Ledger.wallets`), so
comparing the two checks that nothing was lost or counted twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from fundarb_core.domain.client_ids import client_id_str
from fundarb_core.execution.crashpoints import crashpoint
from fundarb_core.simulation.paper_venue import (
    ExchangeAdapter,
    ExchangeError,
    FundingPayment,
    Order,
    OrderTimeout,
    Side,
    insert_rows,
)

FINAL = ("filled", "partial", "rejected", "canceled", "not_received")
UNRESOLVED = ("pending", "unknown", "open")
LIVE_POSITION = ("opening", "open", "single_leg", "closing", "orphan")

_DDL = (
    """CREATE TABLE IF NOT EXISTS ledger_accounts (venue VARCHAR PRIMARY KEY, initial_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_positions (
        position_id VARCHAR PRIMARY KEY, asset VARCHAR NOT NULL, short_venue VARCHAR NOT NULL,
        long_venue VARCHAR NOT NULL, size_usd DOUBLE NOT NULL, leverage DOUBLE NOT NULL, status VARCHAR NOT NULL,
        opened_at TIMESTAMP NOT NULL, closed_at TIMESTAMP, entry_fees_usd DOUBLE, exit_fees_usd DOUBLE,
        total_costs_usd DOUBLE, expected_hourly_usd DOUBLE, break_even_hours DOUBLE, expected_apy DOUBLE,
        retry_attempts INTEGER NOT NULL DEFAULT 0, close_ops INTEGER NOT NULL DEFAULT 0,
        naked_since TIMESTAMP, naked_cycles INTEGER NOT NULL DEFAULT 0, reason VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ledger_orders (
        venue VARCHAR NOT NULL, client_id VARCHAR NOT NULL, position_id VARCHAR NOT NULL, asset VARCHAR NOT NULL,
        leg VARCHAR NOT NULL, purpose VARCHAR NOT NULL, attempt INTEGER NOT NULL, side VARCHAR NOT NULL,
        size_usd DOUBLE NOT NULL, price DOUBLE NOT NULL, reduce_only BOOLEAN NOT NULL, status VARCHAR NOT NULL,
        filled_qty DOUBLE NOT NULL DEFAULT 0, avg_price DOUBLE NOT NULL DEFAULT 0, fee_usd DOUBLE NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, reason VARCHAR,
        PRIMARY KEY (venue, client_id))""",
    """CREATE TABLE IF NOT EXISTS ledger_fills (
        fill_id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, venue VARCHAR NOT NULL, client_id VARCHAR NOT NULL,
        position_id VARCHAR NOT NULL, asset VARCHAR NOT NULL, qty DOUBLE NOT NULL, price DOUBLE NOT NULL,
        fee_usd DOUBLE NOT NULL, liquidity VARCHAR NOT NULL, ts TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_funding (
        payment_id VARCHAR PRIMARY KEY, venue VARCHAR NOT NULL, asset VARCHAR NOT NULL, position_id VARCHAR,
        ts TIMESTAMP NOT NULL, rate DOUBLE NOT NULL, qty DOUBLE NOT NULL, price DOUBLE NOT NULL,
        amount_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_cooldowns (
        asset VARCHAR PRIMARY KEY, failed_at TIMESTAMP NOT NULL, until TIMESTAMP NOT NULL, failures INTEGER)""",
    """CREATE TABLE IF NOT EXISTS ledger_events (
        ts TIMESTAMP NOT NULL, kind VARCHAR NOT NULL, position_id VARCHAR, venue VARCHAR, detail VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS cycle_decisions (
        cycle_ts TIMESTAMP NOT NULL, seq INTEGER NOT NULL, stage VARCHAR NOT NULL, asset VARCHAR,
        short_venue VARCHAR, long_venue VARCHAR, valid BOOLEAN, taken BOOLEAN NOT NULL, reason VARCHAR,
        score DOUBLE, size_usd DOUBLE, break_even_hours DOUBLE, expected_apy DOUBLE, details VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS performance_snapshots (ts TIMESTAMP NOT NULL, metrics VARCHAR NOT NULL,
        equity_usd DOUBLE, estimated_apy DOUBLE, realised_apy_7d DOUBLE, active_positions INTEGER,
        margin_deployed_usd DOUBLE, min_health_factor DOUBLE, funding_win_rate DOUBLE)""",
)

DECISION_COLUMNS = ("cycle_ts", "seq", "stage", "asset", "short_venue", "long_venue", "valid", "taken", "reason",
                    "score", "size_usd", "break_even_hours", "expected_apy", "details")


@dataclass(frozen=True)
class LedgerPosition:
    """A row of ``ledger_positions``."""

    position_id: str
    asset: str
    short_venue: str
    long_venue: str
    size_usd: float
    leverage: float
    status: str
    opened_at: datetime
    closed_at: datetime | None
    entry_fees_usd: float | None
    exit_fees_usd: float | None
    total_costs_usd: float | None
    expected_hourly_usd: float | None
    break_even_hours: float | None
    expected_apy: float | None
    retry_attempts: int
    close_ops: int
    naked_since: datetime | None
    naked_cycles: int
    reason: str | None


def _naive(ts: datetime | pd.Timestamp | str) -> datetime:
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t.to_pydatetime()


def _num(x: object) -> float | None:
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class Ledger:
    """The keeper's tables on its own cursor of ``conn`` (so its transactions never nest with the venue's)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.db = conn.cursor()
        self._accounts: set[str] = set()
        self._last_perf_ts: datetime | None = None
        self.last_reconciled: datetime | None = None  # in memory: a restart re-scans every venue order once
        self._qty: dict[str, dict[str, float]] | None = None  # position -> venue -> qty, reset on fill writes
        self._pos: list[LedgerPosition] | None = None  # every position, reset on position writes
        for ddl in _DDL:
            self.db.execute(ddl)

    # ------------------------------------------------------------------------------------------ plumbing

    def tx(self, fn: Callable[[duckdb.DuckDBPyConnection], None], touches: tuple[str, ...] = ("qty", "pos")) -> None:
        """Run ``fn`` in one transaction (rolled back on any error); drops the read caches it ``touches``."""
        if "qty" in touches:
            self._qty = None
        if "pos" in touches:
            self._pos = None
        self.db.begin()
        try:
            fn(self.db)
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise

    def query(self, sql: str, params: list[object] | dict[str, object] | None = None) -> pd.DataFrame:
        """A fully fetched frame (DuckDB 2: fetch before the next statement)."""
        return self.db.execute(sql, params or []).df()

    def rows(self, sql: str, params: list[object] | dict[str, object] | None = None) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params or []).fetchall()

    # ------------------------------------------------------------------------------------------ accounts

    def ensure_accounts(self, initial: Mapping[str, float]) -> None:
        """Record each venue's starting balance once (the base of :meth:`wallets`)."""
        new = {v: a for v, a in initial.items() if v not in self._accounts}
        if not new:
            return

        def go(db: duckdb.DuckDBPyConnection) -> None:
            for v, amt in new.items():
                db.execute("INSERT INTO ledger_accounts VALUES (?, ?) ON CONFLICT DO NOTHING", [v, float(amt)])
        self.tx(go, touches=())
        self._accounts |= set(new)

    # ------------------------------------------------------------------------------------------ positions

    def add_position(self, position_id: str, plan: Mapping[str, Any], now: datetime, status: str = "opening") -> None:
        """A new position from a plan (``asset``, ``short_venue``, ``long_venue``, ``size_usd``, …)."""
        vals = [position_id, str(plan["asset"]), str(plan["short_venue"]), str(plan["long_venue"]),
                float(plan["size_usd"]), float(plan.get("leverage", 1.0)), status, _naive(now),
                _num(plan.get("entry_fees_usd")), _num(plan.get("exit_fees_usd")), _num(plan.get("total_costs_usd")),
                _num(plan.get("expected_hourly_return_usd")), _num(plan.get("break_even_hours")),
                _num(plan.get("expected_apy"))]
        self.tx(lambda db: db.execute(
            "INSERT INTO ledger_positions (position_id, asset, short_venue, long_venue, size_usd, leverage, status, "
            "opened_at, entry_fees_usd, exit_fees_usd, total_costs_usd, expected_hourly_usd, break_even_hours, "
            "expected_apy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", vals))

    def update_position(self, position_id: str, **fields: object) -> None:
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.tx(lambda db: db.execute(f"UPDATE ledger_positions SET {sets} WHERE position_id = ?",
                                      [*fields.values(), position_id]), touches=("pos",))

    def positions(self, statuses: Iterable[str] | None = LIVE_POSITION) -> list[LedgerPosition]:
        if self._pos is None:
            self._pos = [LedgerPosition(*r) for r in self.rows(
                "SELECT * FROM ledger_positions ORDER BY opened_at, position_id")]
        keep = None if statuses is None else set(statuses)
        return [p for p in self._pos if keep is None or p.status in keep]

    def position(self, position_id: str) -> LedgerPosition | None:
        return next((p for p in self.positions(None) if p.position_id == position_id), None)

    def leg_qty(self, position_id: str) -> dict[str, float]:
        """Signed filled quantity per venue of one position (from the fills)."""
        if self._qty is None:
            self._qty = {}
            for pid, v, q in self.rows("SELECT position_id, venue, sum(qty) FROM ledger_fills GROUP BY ALL"):
                self._qty.setdefault(pid, {})[v] = float(q)
        return dict(self._qty.get(position_id, {}))

    def last_fill_price(self, position_id: str, venue: str) -> float | None:
        """The price of the position's latest fill on ``venue`` (None without one)."""
        rows = self.rows("SELECT price FROM ledger_fills WHERE position_id = ? AND venue = ? ORDER BY seq DESC "
                         "LIMIT 1", [position_id, venue])
        return float(rows[0][0]) if rows else None

    def venue_qty(self) -> dict[tuple[str, str], float]:
        """Signed quantity per (venue, asset) over every fill: what the venues should hold."""
        rows = self.rows("SELECT venue, asset, sum(qty) FROM ledger_fills GROUP BY venue, asset")
        return {(v, a): float(q) for v, a, q in rows}

    # ------------------------------------------------------------------------------------------ orders and fills

    def record_intent(self, venue: str, client_id: str, position_id: str, asset: str, leg: str, purpose: str,
                      attempt: int, side: Side, size_usd: float, price: float, reduce_only: bool,
                      now: datetime) -> bool:
        """Write an order as ``pending`` before it is sent; False when the id is already known (never re-sent
        blindly: the caller fetches it instead)."""
        if self.rows("SELECT 1 FROM ledger_orders WHERE venue = ? AND client_id = ?", [venue, client_id]):
            return False
        t = _naive(now)
        self.tx(lambda db: db.execute(
            "INSERT INTO ledger_orders (venue, client_id, position_id, asset, leg, purpose, attempt, side, size_usd, "
            "price, reduce_only, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', "
            "?, ?)", [venue, client_id, position_id, asset, leg, purpose, attempt, side, size_usd, price, reduce_only,
                      t, t]), touches=())
        return True

    def order_row(self, venue: str, client_id: str) -> dict[str, Any] | None:
        df = self.query("SELECT * FROM ledger_orders WHERE venue = ? AND client_id = ?", [venue, client_id])
        return None if df.empty else df.iloc[0].to_dict()

    def record_order(self, order: Order, now: datetime, status: str | None = None, reason: str = "") -> float:
        """Record the venue's view of an order and the fill delta over what the ledger had, in one transaction.
        Returns the signed quantity newly recorded."""
        row = self.order_row(order.venue, order.client_id)
        if row is None:
            raise KeyError(f"order {order.venue}/{order.client_id} has no intent row")
        f0, p0, fee0 = float(row["filled_qty"]), float(row["avg_price"]), float(row["fee_usd"])
        dq = order.filled_qty - f0
        t = _naive(now)
        fill: list[object] | None = None
        if dq > 1e-15:
            px = (order.filled_qty * order.avg_price - f0 * p0) / dq
            n = len(self.rows("SELECT 1 FROM ledger_fills WHERE venue = ? AND client_id = ?",
                              [order.venue, order.client_id]))
            signed = dq if order.side == "buy" else -dq
            fill = [f"{order.venue}|{order.client_id}|{n}", order.venue, order.client_id, row["position_id"],
                    order.asset, signed, px, order.fee_usd - fee0, order.liquidity,
                    _naive(order.ts) if order.ts is not None else t]
        st = status or order.status

        def go(db: duckdb.DuckDBPyConnection) -> None:
            db.execute("UPDATE ledger_orders SET status = ?, filled_qty = ?, avg_price = ?, fee_usd = ?, "
                       "updated_at = ?, reason = ? WHERE venue = ? AND client_id = ?",
                       [st, max(order.filled_qty, f0), order.avg_price if fill else p0,
                        max(order.fee_usd, fee0), t, reason or order.reason, order.venue, order.client_id])
            if fill is not None:
                seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM ledger_fills").fetchall()[0][0]
                db.execute("INSERT INTO ledger_fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [fill[0], seq, *fill[1:]])
        self.tx(go)
        return float(fill[5]) if fill else 0.0  # type: ignore[arg-type]

    def mark_order(self, venue: str, client_id: str, status: str, now: datetime, reason: str = "") -> None:
        self.tx(lambda db: db.execute("UPDATE ledger_orders SET status = ?, updated_at = ?, reason = ? "
                                      "WHERE venue = ? AND client_id = ?",
                                      [status, _naive(now), reason, venue, client_id]), touches=())

    def unresolved_orders(self) -> pd.DataFrame:
        return self.query("SELECT * FROM ledger_orders WHERE status IN ('pending', 'unknown', 'open') "
                          "ORDER BY created_at, client_id")

    # ------------------------------------------------------------------------------------------ funding

    def record_funding(self, payments: Iterable[FundingPayment]) -> int:
        """Insert new funding payments (deduplicated by id), attributed to the live position on that market."""
        pays = list(payments)
        if not pays:
            return 0
        # a market carries at most one keeper position at a time: the live one, else the latest opened
        owner: dict[tuple[str, str], str] = {}
        for p in self.positions(None):
            for v in (p.short_venue, p.long_venue):
                if p.status in LIVE_POSITION or (v, p.asset) not in owner:
                    owner[(v, p.asset)] = p.position_id
        lo = min(_naive(p.ts) for p in pays)
        known = {r[0] for r in self.rows("SELECT payment_id FROM ledger_funding WHERE ts >= ?", [lo])}
        rows: list[list[object]] = []
        for p in pays:
            if p.payment_id not in known:
                known.add(p.payment_id)
                rows.append([p.payment_id, p.venue, p.asset, owner.get((p.venue, p.asset)), _naive(p.ts), p.rate,
                             p.qty, p.price, p.amount_usd])
        self.tx(lambda db: insert_rows(db, "ledger_funding", rows), touches=())
        return len(rows)

    def last_funding_ts(self) -> datetime | None:
        r = self.rows("SELECT max(ts) FROM ledger_funding")[0][0]
        return r

    # ------------------------------------------------------------------------------------------ money

    def wallets(self) -> dict[str, float]:
        """Per venue: initial + realised PnL (average cost over the fills in order) − fees + funding."""
        init = dict(self.rows("SELECT venue, initial_usd FROM ledger_accounts"))
        fills = self.rows("SELECT venue, asset, qty, price, fee_usd FROM ledger_fills ORDER BY ts, seq")
        funding = dict(self.rows("SELECT venue, sum(amount_usd) FROM ledger_funding GROUP BY venue"))
        out = {v: float(a) for v, a in init.items()}
        book: dict[tuple[str, str], tuple[float, float]] = {}
        for venue, asset, dq, px, fee in fills:
            q0, p0 = book.get((venue, asset), (0.0, 0.0))
            realised = 0.0
            if q0 == 0 or (q0 > 0) == (dq > 0):
                q1 = q0 + dq
                p1 = (abs(q0) * p0 + abs(dq) * px) / abs(q1)
            else:
                realised = min(abs(dq), abs(q0)) * (px - p0) * (1 if q0 > 0 else -1)
                q1 = q0 + dq
                p1 = p0 if abs(dq) <= abs(q0) else px
                if abs(q1) < 1e-12 * max(abs(q0), 1.0):
                    q1, p1 = 0.0, 0.0
            book[(venue, asset)] = (q1, p1)
            out[venue] = out.get(venue, 0.0) + realised - fee
        for v, f in funding.items():
            out[v] = out.get(v, 0.0) + float(f)
        return out

    # ------------------------------------------------------------------------------------------ cooldowns

    def set_cooldown(self, asset: str, now: datetime, minutes: float, failures: int) -> None:
        t = _naive(now)
        self.tx(lambda db: db.execute("INSERT OR REPLACE INTO ledger_cooldowns VALUES (?, ?, ?, ?)",
                                      [asset, t, t + pd.Timedelta(minutes=minutes), failures]), touches=())

    def cooldowns(self, now: datetime) -> dict[str, tuple[datetime, int]]:
        """Assets still cooling down at ``now``: failed_at and the failure count."""
        return {a: (f, int(n)) for a, f, n in self.rows(
            "SELECT asset, failed_at, failures FROM ledger_cooldowns WHERE until > ?", [_naive(now)])}

    # ------------------------------------------------------------------------------------------ decisions, events

    def record_decisions(self, frame: pd.DataFrame) -> None:
        """Append decision rows (columns :data:`DECISION_COLUMNS`) in one transaction."""
        if frame.empty:
            return
        df = frame.reindex(columns=list(DECISION_COLUMNS))

        def go(db: duckdb.DuckDBPyConnection) -> None:
            db.register("_decisions", df)
            try:
                db.execute("INSERT INTO cycle_decisions SELECT * FROM _decisions")
            finally:
                db.unregister("_decisions")
        self.tx(go, touches=())

    def event(self, now: datetime, kind: str, position_id: str | None = None, venue: str | None = None,
              **detail: object) -> None:
        self.tx(lambda db: db.execute("INSERT INTO ledger_events VALUES (?, ?, ?, ?, ?)",
                                      [_naive(now), kind, position_id, venue, json.dumps(detail, default=str)]),
                touches=())

    def write_performance(self, now: datetime, metrics: Mapping[str, Any]) -> None:
        cols = ("equity_usd", "estimated_apy", "realised_apy_7d", "active_positions", "margin_deployed_usd",
                "min_health_factor", "funding_win_rate")
        vals = [_num(metrics.get(c)) for c in cols]
        row = [_naive(now), json.dumps({k: _num(v) if not isinstance(v, str) else v for k, v in metrics.items()}),
               *vals]

        def go(db: duckdb.DuckDBPyConnection) -> None:  # no primary key: an upsert costs more than this
            if self._last_perf_ts is None or self._last_perf_ts >= row[0]:  # type: ignore[operator]
                db.execute("DELETE FROM performance_snapshots WHERE ts = ?", [row[0]])
            db.execute("INSERT INTO performance_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        self.tx(go, touches=())
        self._last_perf_ts = row[0]  # type: ignore[assignment]

    def peak_equity(self) -> float | None:
        r = self.rows("SELECT max(equity_usd) FROM performance_snapshots")[0][0]
        return None if r is None else float(r)


# ---------------------------------------------------------------------------------------------- order protocol


@dataclass(frozen=True)
class SentOrder:
    """What :func:`send_order` did: the client id, the final ledger status and the signed quantity filled."""

    venue: str
    client_id: str
    status: str
    filled_qty: float
    reason: str = ""


def order_price(exchange: ExchangeAdapter, venue: str, asset: str, side: Side) -> float | None:
    """Spec §6: sell at the best bid, buy at the best ask, the mark price when no book is known."""
    book = exchange.order_book_top(venue, asset)
    if book is not None:
        return book.bid if side == "sell" else book.ask
    return exchange.mark_price(venue, asset)


def send_order(ledger: Ledger, exchange: ExchangeAdapter, *, position_id: str, venue: str, asset: str, side: Side,
               size_usd: float, leg: str, purpose: str, attempt: int, now: datetime,
               reduce_only: bool = False) -> SentOrder:
    """Write-ahead intent → send → record (module doc).  Never raises for venue errors: they become statuses.

    A known client id is not re-sent but fetched (the venue is idempotent on it anyway).  ``not_received`` means
    the venue confirmed it does not have the order; ``unknown`` means it could not be asked (reconcile resolves).
    """
    cid = client_id_str(venue, position_id, leg, attempt)
    price = order_price(exchange, venue, asset, side)
    crashpoint("send_order.before_intent")
    if not ledger.record_intent(venue, cid, position_id, asset, leg, purpose, attempt, side, size_usd,
                                price if price is not None else 0.0, reduce_only, now):
        got = exchange.fetch_order_by_client_id(venue, cid)
        if got is None:
            return SentOrder(venue, cid, "not_received", 0.0, "known_id")
        dq = ledger.record_order(got, now)
        return SentOrder(venue, cid, got.status, dq)
    if price is None:
        ledger.mark_order(venue, cid, "rejected", now, "no_price")
        return SentOrder(venue, cid, "rejected", 0.0, "no_price")
    crashpoint("send_order.after_intent")
    try:
        order = exchange.place_limit_order(venue, asset, side, size_usd, price, cid, reduce_only)
        crashpoint("send_order.after_exchange")
    except ExchangeError as exc:
        try:
            got = exchange.fetch_order_by_client_id(venue, cid)
        except ExchangeError:
            ledger.mark_order(venue, cid, "unknown", now, type(exc).__name__)
            return SentOrder(venue, cid, "unknown", 0.0, type(exc).__name__)
        if got is None:
            ledger.mark_order(venue, cid, "not_received", now, type(exc).__name__)
            return SentOrder(venue, cid, "not_received", 0.0, type(exc).__name__)
        reason = "timeout_resolved" if isinstance(exc, OrderTimeout) else type(exc).__name__
        dq = ledger.record_order(got, now, reason=reason)
        return SentOrder(venue, cid, got.status, dq, reason)
    dq = ledger.record_order(order, now)
    return SentOrder(venue, cid, order.status, dq, order.reason)


# ---------------------------------------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class ReconcileReport:
    """What :func:`reconcile` changed."""

    fills_recorded: int
    not_received: int
    still_unknown: int
    orphans_imported: int
    canceled_unknown_open: int
    funding_recorded: int
    mismatches: tuple[tuple[str, str, float, float], ...]


def reconcile(ledger: Ledger, exchange: ExchangeAdapter, now: datetime) -> ReconcileReport:
    """Bring the ledger in line with the venues before the cycle does anything else.

    1. every ``pending`` / ``unknown`` / ``open`` ledger order is fetched by client id: its fill is recorded, or it
       is marked ``not_received`` when the venue does not have it;
    2. orders the venue has and the ledger lacks (their intent write was lost): when the adapter can list them
       (``all_orders``), filled ones are imported under ``orphan:<venue>:<asset>`` (closed by the cycle) and open
       ones are cancelled;
    3. funding the venue paid since the ledger's last record is recorded;
    4. remaining differences between the ledger's quantity and the venue's position per (venue, asset) are
       logged as ``reconcile_mismatch`` events (returned in ``mismatches``) — never silently overwritten.
    """
    fills = not_rec = unknown = orphans = canceled = 0
    for _, row in ledger.unresolved_orders().iterrows():
        venue, cid = str(row["venue"]), str(row["client_id"])
        try:
            got = exchange.fetch_order_by_client_id(venue, cid)
        except ExchangeError:
            unknown += 1
            continue
        if got is None:
            ledger.mark_order(venue, cid, "not_received", now, "reconcile: venue has no such order")
            not_rec += 1
            continue
        if abs(ledger.record_order(got, now, reason="reconciled")) > 0:
            fills += 1
            ledger.event(now, "reconcile_fill", str(row["position_id"]), venue, client_id=cid)
    lister = getattr(exchange, "all_orders", None)
    if callable(lister):
        since = ledger.last_reconciled - pd.Timedelta(days=1) if ledger.last_reconciled is not None else None
        known = {(v, c) for v, c in ledger.rows(
            "SELECT venue, client_id FROM ledger_orders" + (" WHERE updated_at >= ?" if since is not None else ""),
            [since] if since is not None else [])}
        for o in lister(since=since):
            if (o.venue, o.client_id) in known:
                continue
            if o.status == "open":
                exchange.cancel_order(o.venue, o.client_id)
                canceled += 1
                o = exchange.fetch_order_by_client_id(o.venue, o.client_id) or o
            if o.filled_qty <= 0:
                continue
            pid = f"orphan:{o.venue}:{o.asset}"
            if ledger.position(pid) is None:
                ledger.add_position(pid, {"asset": o.asset, "short_venue": o.venue, "long_venue": o.venue,
                                          "size_usd": o.filled_usd}, now, status="orphan")
            else:
                ledger.update_position(pid, status="orphan", closed_at=None)
            ledger.record_intent(o.venue, o.client_id, pid, o.asset, "orphan", "orphan", 0, o.side, o.size_usd,
                                 o.price, o.reduce_only, now)
            ledger.record_order(o, now, reason="orphan_imported")
            ledger.event(now, "reconcile_orphan", pid, o.venue, client_id=o.client_id)
            orphans += 1
    funding = ledger.record_funding(exchange.funding_payments(ledger.last_funding_ts()))
    mismatches = []
    expected = ledger.venue_qty()
    venues = {v for v, _ in expected} | {r[0] for r in ledger.rows("SELECT venue FROM ledger_accounts")}
    seen: set[tuple[str, str]] = set()
    for venue in sorted(venues):
        for p in exchange.positions(venue):
            seen.add((venue, p.asset))
            want = expected.get((venue, p.asset), 0.0)
            if abs(p.qty - want) > 1e-9 * max(1.0, abs(p.qty)):
                mismatches.append((venue, p.asset, want, p.qty))
    for (venue, asset), q in expected.items():
        if (venue, asset) not in seen and abs(q) > 1e-9 * max(1.0, abs(q)):
            mismatches.append((venue, asset, q, 0.0))
    for venue, asset, want, have in mismatches:
        ledger.event(now, "reconcile_mismatch", None, venue, asset=asset, ledger_qty=want, venue_qty=have)
    ledger.last_reconciled = _naive(now)
    return ReconcileReport(fills, not_rec, unknown, orphans, canceled, funding, tuple(mismatches))
