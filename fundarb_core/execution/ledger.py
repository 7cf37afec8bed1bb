"""The keeper's own record — accounts, pair positions, orders, fills, funding, cooldowns, events, decisions,
performance — held in memory, every change passed to an optional store in one transaction.

Why a ledger separate from the venue: the venue is the truth about fills, the ledger is the keeper's memory of
*why* (which position, leg and attempt an order belongs to, which plans were rejected).  They can disagree after
a crash or a lost write, so every order follows write-ahead intent (:mod:`fundarb_core.execution.orders`) and a
reconcile at the start of every cycle (:mod:`fundarb_core.execution.reconcile`).

Why memory first: the rules below run on dicts, so the simulator replays a year in seconds; the live and paper
keeper pass a :class:`~fundarb_core.storage.ledger_store.DuckDBLedgerStore` (its own DuckDB file, so trading
never waits on analytics), which loads the state at start and writes each change before the call returns.
Statuses move only as :class:`~fundarb_core.domain.orders.OrderStatus` allows; fills move positions only
through :meth:`~fundarb_core.domain.positions.PairPosition.apply`.

Money: per venue, ``wallet = initial + realised P&L (average cost, fills in order) − fees + funding`` — the
paper venue's rule (:class:`~fundarb_core.domain.positions.LegBook`), computed here from the ledger's own fills
(:meth:`Ledger.wallets`), so comparing the two checks that nothing was lost or counted twice.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from fundarb_core.domain.orders import (
    UNRESOLVED_ORDER_STATUSES,
    Order,
    OrderRecord,
    OrderStatus,
    Side,
    check_transition,
)
from fundarb_core.domain.plan import Plan
from fundarb_core.domain.positions import (
    LIVE_POSITION_STATUSES,
    Fill,
    LegBook,
    PairPosition,
    PositionStatus,
)
from fundarb_core.domain.venue_state import FundingPayment
from fundarb_core.times import to_naive_dt

DECISION_COLUMNS = ("cycle_ts", "seq", "stage", "asset", "short_venue", "long_venue", "valid", "taken", "reason",
                    "score", "size_usd", "break_even_hours", "expected_apy", "details")
PERFORMANCE_COLUMNS = ("equity_usd", "estimated_apy", "realised_apy_7d", "active_positions", "margin_deployed_usd",
                       "min_health_factor", "funding_win_rate")
QUALITY_FAILURES = frozenset({OrderStatus.REJECTED, OrderStatus.NOT_RECEIVED, OrderStatus.PARTIAL})
"""Order outcomes that count against a market's execution quality (the market-quality filter)."""



def _num(x: object) -> float | None:
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class FundingRecord:
    """A funding payment and the keeper position it is attributed to."""

    payment: FundingPayment
    position_id: str | None


@dataclass(frozen=True)
class Cooldown:
    asset: str
    failed_at: datetime
    until: datetime
    failures: int


@dataclass(frozen=True)
class Event:
    ts: datetime
    kind: str
    position_id: str | None
    venue: str | None
    detail: str


@dataclass
class LedgerChange:
    """What one ledger operation changed (a store writes it in one transaction)."""

    accounts: dict[str, float] = field(default_factory=dict)
    positions: list[PairPosition] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    funding: list[FundingRecord] = field(default_factory=list)
    cooldowns: list[Cooldown] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    decisions: pd.DataFrame | None = None
    performance: tuple[datetime, str, list[float | None]] | None = None


@dataclass
class LedgerState:
    """Everything a ledger remembers (what a store loads)."""

    accounts: dict[str, float] = field(default_factory=dict)
    positions: list[PairPosition] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    funding: list[FundingRecord] = field(default_factory=list)
    cooldowns: list[Cooldown] = field(default_factory=list)
    peak_equity: float | None = None


class LedgerStore(Protocol):
    """Where a ledger's state survives the process."""

    def load(self) -> LedgerState:
        """The stored state (empty when new)."""

    def commit(self, change: LedgerChange) -> None:
        """Write one change in one transaction."""


class Ledger:
    """The keeper's record (module doc); ``store=None`` keeps it in memory only (the simulator)."""

    def __init__(self, store: LedgerStore | None = None) -> None:
        self.store = store
        self.last_reconciled: datetime | None = None  # in memory: a restart re-scans every venue order once
        self._accounts: dict[str, float] = {}
        self._positions: dict[str, PairPosition] = {}
        self._pos_order: list[str] | None = None
        self._orders: dict[tuple[str, str], OrderRecord] = {}
        self._orders_by_position: dict[str, list[tuple[str, str]]] = {}
        self._unresolved: set[tuple[str, str]] = set()
        self._entries: list[tuple[datetime, str, str]] = []  # (created_at, venue, client_id) of open/retry orders
        self._fills: list[Fill] = []
        self._fill_count: dict[tuple[str, str], int] = {}
        self._last_fill_px: dict[tuple[str, str], float] = {}
        self._venue_qty: dict[tuple[str, str], float] = {}
        self._funding: list[FundingRecord] = []
        self._payment_ids: set[str] = set()
        self._last_funding: datetime | None = None
        self._cooldowns: dict[str, Cooldown] = {}
        self._events: list[Event] = []
        self._decisions: list[pd.DataFrame] = []
        self._performance: list[tuple[datetime, str, list[float | None]]] = []
        self._peak: float | None = None
        self._last_perf_ts: datetime | None = None
        if store is not None:
            self._load(store.load())

    def _load(self, state: LedgerState) -> None:
        self._accounts = dict(state.accounts)
        for p in state.positions:
            self._positions[p.position_id] = p.with_(legs={})
        for o in state.orders:
            self._index_order(o)
        for f in sorted(state.fills, key=lambda f: f.seq):
            self._index_fill(f)
        for r in state.funding:
            self._add_funding(r)
        self._cooldowns = {c.asset: c for c in state.cooldowns}
        self._peak = state.peak_equity

    def _commit(self, change: LedgerChange) -> None:
        if self.store is not None:
            self.store.commit(change)

    # ------------------------------------------------------------------------------------------ accounts

    def ensure_accounts(self, initial: Mapping[str, float]) -> None:
        """Record each venue's starting balance once (the base of :meth:`wallets`)."""
        new = {v: float(a) for v, a in initial.items() if v not in self._accounts}
        if new:
            self._accounts.update(new)
            self._commit(LedgerChange(accounts=new))

    def accounts(self) -> dict[str, float]:
        return dict(self._accounts)

    # ------------------------------------------------------------------------------------------ positions

    def add_position(self, position_id: str, plan: Plan | Mapping[str, Any], now: datetime,
                     status: PositionStatus | str = PositionStatus.OPENING) -> None:
        """A new position from a plan (ignored when the id exists: a re-run after a crash)."""
        if position_id in self._positions:
            return
        get = (lambda k, d=None: getattr(plan, k, d)) if isinstance(plan, Plan) else plan.get  # type: ignore[union-attr]
        p = PairPosition(
            position_id=position_id, asset=str(get("asset")), short_venue=str(get("short_venue")),
            long_venue=str(get("long_venue")), size_usd=float(get("size_usd")),  # type: ignore[arg-type]
            leverage=float(get("leverage", 1.0)), status=status, opened_at=to_naive_dt(now),  # type: ignore[arg-type]
            entry_fees_usd=_num(get("entry_fees_usd")), exit_fees_usd=_num(get("exit_fees_usd")),
            total_costs_usd=_num(get("total_costs_usd")), expected_hourly_usd=_num(get("expected_hourly_return_usd")),
            break_even_hours=_num(get("break_even_hours")), expected_apy=_num(get("expected_apy")))
        self._positions[position_id] = p
        self._pos_order = None
        self._commit(LedgerChange(positions=[p]))

    def update_position(self, position_id: str, **changes: object) -> None:
        if not changes:
            return
        p = self._positions[position_id].with_(**changes)
        self._positions[position_id] = p
        self._commit(LedgerChange(positions=[p]))

    def positions(self, statuses: Iterable[str] | None = LIVE_POSITION_STATUSES) -> list[PairPosition]:
        """Positions in (opened_at, position_id) order, those with a status in ``statuses`` (all when None)."""
        if self._pos_order is None:
            self._pos_order = sorted(self._positions, key=lambda k: (self._positions[k].opened_at, k))
        if statuses is None:
            return [self._positions[k] for k in self._pos_order]
        keep = {PositionStatus(s) for s in statuses}
        return [p for k in self._pos_order if (p := self._positions[k]).status in keep]

    def position(self, position_id: str) -> PairPosition | None:
        return self._positions.get(position_id)

    def leg_qty(self, position_id: str) -> dict[str, float]:
        """Signed filled quantity per venue of one position (venues with a fill only)."""
        p = self._positions.get(position_id)
        return p.leg_qty() if p is not None else {}

    def last_fill_price(self, position_id: str, venue: str) -> float | None:
        """The price of the position's latest fill on ``venue`` (None without one)."""
        return self._last_fill_px.get((position_id, venue))

    def venue_qty(self) -> dict[tuple[str, str], float]:
        """Signed quantity per (venue, asset) over every fill: what the venues should hold."""
        return dict(self._venue_qty)

    # ------------------------------------------------------------------------------------------ orders and fills

    def _index_order(self, o: OrderRecord) -> None:
        key = (o.venue, o.client_id)
        if key not in self._orders:
            self._orders_by_position.setdefault(o.position_id, []).append(key)
            if o.purpose in ("open", "retry"):
                bisect.insort(self._entries, (o.created_at, o.venue, o.client_id))
        self._orders[key] = o
        if o.status in UNRESOLVED_ORDER_STATUSES:
            self._unresolved.add(key)
        else:
            self._unresolved.discard(key)

    def _index_fill(self, f: Fill) -> None:
        self._fills.append(f)
        key = (f.venue, f.client_id)
        self._fill_count[key] = self._fill_count.get(key, 0) + 1
        self._last_fill_px[(f.position_id, f.venue)] = f.price
        self._venue_qty[(f.venue, f.asset)] = self._venue_qty.get((f.venue, f.asset), 0.0) + f.qty
        p = self._positions.get(f.position_id)
        if p is not None:
            self._positions[f.position_id] = p.apply(f)[0]

    def record_intent(self, venue: str, client_id: str, position_id: str, asset: str, leg: str, purpose: str,
                      attempt: int, side: Side, size_usd: float, price: float, reduce_only: bool,
                      now: datetime) -> bool:
        """Write an order as ``pending`` before it is sent; False when the id is already known (never re-sent
        blindly: the caller fetches it instead)."""
        if (venue, client_id) in self._orders:
            return False
        t = to_naive_dt(now)
        o = OrderRecord(venue, client_id, position_id, asset, leg, purpose, int(attempt), side, float(size_usd),
                        float(price), bool(reduce_only), OrderStatus.PENDING, 0.0, 0.0, 0.0, t, t, None)
        self._index_order(o)
        self._commit(LedgerChange(orders=[o]))
        return True

    def order(self, venue: str, client_id: str) -> OrderRecord | None:
        return self._orders.get((venue, client_id))

    def record_order(self, order: Order, now: datetime, status: OrderStatus | str | None = None,
                     reason: str = "") -> float:
        """Record the venue's view of an order and the fill delta over what the ledger had, in one transaction.
        Returns the signed quantity newly recorded."""
        row = self._orders.get((order.venue, order.client_id))
        if row is None:
            raise KeyError(f"order {order.venue}/{order.client_id} has no intent row")
        st = check_transition(order.venue, order.client_id, row.status, status or order.status)
        f0, p0, fee0 = row.filled_qty, row.avg_price, row.fee_usd
        dq = order.filled_qty - f0
        t = to_naive_dt(now)
        fill: Fill | None = None
        if dq > 1e-15:
            px = (order.filled_qty * order.avg_price - f0 * p0) / dq
            n = self._fill_count.get((order.venue, order.client_id), 0)
            fill = Fill(f"{order.venue}|{order.client_id}|{n}", len(self._fills) + 1, order.venue, order.client_id,
                        row.position_id, order.asset, dq if order.side == "buy" else -dq, px,
                        order.fee_usd - fee0, order.liquidity, to_naive_dt(order.ts) if order.ts is not None else t)
        new = row.with_(status=st, filled_qty=max(order.filled_qty, f0), avg_price=order.avg_price if fill else p0,
                        fee_usd=max(order.fee_usd, fee0), updated_at=t, reason=reason or order.reason)
        self._index_order(new)
        change = LedgerChange(orders=[new])
        if fill is not None:
            self._index_fill(fill)
            change.fills.append(fill)
        self._commit(change)
        return fill.qty if fill else 0.0

    def mark_order(self, venue: str, client_id: str, status: OrderStatus | str, now: datetime,
                   reason: str = "") -> None:
        row = self._orders[(venue, client_id)]
        new = row.with_(status=check_transition(venue, client_id, row.status, status), updated_at=to_naive_dt(now),
                        reason=reason)
        self._index_order(new)
        self._commit(LedgerChange(orders=[new]))

    def unresolved_orders(self) -> list[OrderRecord]:
        """Orders whose outcome the ledger does not know yet (pending, unknown, open), oldest first."""
        return sorted((self._orders[k] for k in self._unresolved), key=lambda o: (o.created_at, o.client_id))

    def open_orders(self) -> list[OrderRecord]:
        return [o for o in self.unresolved_orders() if o.status == OrderStatus.OPEN]

    def has_unresolved(self, position_id: str) -> bool:
        """Whether any order of the position may still fill (pending, unknown or open)."""
        return any(k in self._unresolved for k in self._orders_by_position.get(position_id, ()))

    def orders_of(self, position_id: str) -> list[OrderRecord]:
        return sorted((self._orders[k] for k in self._orders_by_position.get(position_id, ())),
                      key=lambda o: (o.created_at, o.client_id))

    def known_order_ids(self, since: datetime | None = None) -> set[tuple[str, str]]:
        """(venue, client id) of every order, or of those the ledger changed at or after ``since``."""
        if since is None:
            return set(self._orders)
        lo = to_naive_dt(since)
        return {k for k, o in self._orders.items() if o.updated_at >= lo}

    def execution_quality(self, since: datetime) -> dict[tuple[str, str], tuple[int, int]]:
        """Per (asset, venue): opening/retry orders created after ``since`` and how many failed
        (:data:`QUALITY_FAILURES`) — the market-quality filter's inputs."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        lo = bisect.bisect_right(self._entries, (to_naive_dt(since), "\uffff", "\uffff"))
        for _, venue, cid in self._entries[lo:]:
            o = self._orders[(venue, cid)]
            n, f = out.get((o.asset, venue), (0, 0))
            out[(o.asset, venue)] = (n + 1, f + (o.status in QUALITY_FAILURES))
        return out

    # ------------------------------------------------------------------------------------------ funding

    def record_funding(self, payments: Iterable[FundingPayment]) -> int:
        """Insert new funding payments (deduplicated by id), attributed to the live position on that market."""
        pays = [p for p in payments if p.payment_id not in self._payment_ids]
        if not pays:
            return 0
        # a market carries at most one keeper position at a time: the live one, else the first opened
        owner: dict[tuple[str, str], str] = {}
        for p in self.positions(None):
            for v in (p.short_venue, p.long_venue):
                if p.status in LIVE_POSITION_STATUSES or (v, p.asset) not in owner:
                    owner[(v, p.asset)] = p.position_id
        rows, seen = [], set()
        for p in pays:
            if p.payment_id in seen:
                continue
            seen.add(p.payment_id)
            rows.append(FundingRecord(p.__class__(p.payment_id, p.venue, p.asset, to_naive_dt(p.ts), p.rate, p.qty,
                                                  p.price, p.amount_usd), owner.get((p.venue, p.asset))))
        for r in rows:
            self._add_funding(r)
        self._commit(LedgerChange(funding=rows))
        return len(rows)

    def _add_funding(self, r: FundingRecord) -> None:
        self._funding.append(r)
        self._payment_ids.add(r.payment.payment_id)
        if self._last_funding is None or r.payment.ts > self._last_funding:
            self._last_funding = r.payment.ts

    def funding(self) -> list[FundingRecord]:
        return sorted(self._funding, key=lambda r: (r.payment.ts, r.payment.payment_id))

    def last_funding_ts(self) -> datetime | None:
        return self._last_funding

    # ------------------------------------------------------------------------------------------ money

    def fills(self) -> list[Fill]:
        return list(self._fills)

    def wallets(self) -> dict[str, float]:
        """Per venue: initial + realised P&L (:meth:`LegBook.apply` over the fills in order) − fees + funding."""
        out = dict(self._accounts)
        books: dict[tuple[str, str], LegBook] = {}
        for f in sorted(self._fills, key=lambda f: (f.ts, f.seq)):
            book, realised = books.get((f.venue, f.asset), LegBook()).apply(f.qty, f.price)
            books[(f.venue, f.asset)] = book
            out[f.venue] = out.get(f.venue, 0.0) + realised - f.fee_usd
        for r in self._funding:
            out[r.payment.venue] = out.get(r.payment.venue, 0.0) + r.payment.amount_usd
        return out

    # ------------------------------------------------------------------------------------------ cooldowns

    def set_cooldown(self, asset: str, now: datetime, minutes: float, failures: int) -> None:
        t = to_naive_dt(now)
        c = Cooldown(asset, t, t + pd.Timedelta(minutes=minutes), int(failures))
        self._cooldowns[asset] = c
        self._commit(LedgerChange(cooldowns=[c]))

    def cooldowns(self, now: datetime) -> dict[str, tuple[datetime, int]]:
        """Assets still cooling down at ``now``: failed_at and the failure count."""
        t = to_naive_dt(now)
        return {a: (c.failed_at, c.failures) for a, c in self._cooldowns.items() if c.until > t}

    # ------------------------------------------------------------------------------------------ decisions, events

    def record_decisions(self, frame: pd.DataFrame) -> None:
        """Append decision rows (columns :data:`DECISION_COLUMNS`) in one transaction."""
        if frame.empty:
            return
        df = frame.reindex(columns=list(DECISION_COLUMNS))
        self._decisions.append(df)
        self._commit(LedgerChange(decisions=df))

    def decisions(self) -> pd.DataFrame:
        return (pd.concat(self._decisions, ignore_index=True) if self._decisions
                else pd.DataFrame(columns=list(DECISION_COLUMNS)))

    def event(self, now: datetime, kind: str, position_id: str | None = None, venue: str | None = None,
              **detail: object) -> None:
        e = Event(to_naive_dt(now), kind, position_id, venue, json.dumps(detail, default=str))
        self._events.append(e)
        self._commit(LedgerChange(events=[e]))

    def events(self) -> list[Event]:
        return list(self._events)

    def write_performance(self, now: datetime, metrics: Mapping[str, Any]) -> None:
        t = to_naive_dt(now)
        vals = [_num(metrics.get(c)) for c in PERFORMANCE_COLUMNS]
        row = (t, json.dumps({k: _num(v) if not isinstance(v, str) else v for k, v in metrics.items()}), vals)
        self._performance.append(row)
        if vals[0] is not None:
            self._peak = vals[0] if self._peak is None else max(self._peak, vals[0])
        self._commit(LedgerChange(performance=row))
        self._last_perf_ts = t

    def peak_equity(self) -> float | None:
        return self._peak

    # ------------------------------------------------------------------------------------------ report frames

    def positions_frame(self) -> pd.DataFrame:
        cols = [f.name for f in fields(PairPosition) if f.name != "legs"]
        rows = [{c: getattr(p, c) for c in cols} for p in self.positions(None)]
        df = pd.DataFrame(rows, columns=cols)
        df["status"] = df["status"].astype(str)
        return df

    def fills_frame(self) -> pd.DataFrame:
        """Fills joined with their order's side, limit price, purpose and reduce-only flag, in seq order."""
        cols = [f.name for f in fields(Fill)]
        rows = []
        for f in self._fills:
            o = self._orders[(f.venue, f.client_id)]
            rows.append({**{c: getattr(f, c) for c in cols}, "side": o.side, "limit_price": o.price,
                         "purpose": o.purpose, "reduce_only": o.reduce_only})
        return pd.DataFrame(rows, columns=[*cols, "side", "limit_price", "purpose", "reduce_only"])

    def funding_frame(self) -> pd.DataFrame:
        cols = ["payment_id", "venue", "asset", "position_id", "ts", "rate", "qty", "price", "amount_usd"]
        rows = [{**{c: getattr(r.payment, c) for c in cols if c != "position_id"}, "position_id": r.position_id}
                for r in self.funding()]
        return pd.DataFrame(rows, columns=cols)

    def orders_frame(self) -> pd.DataFrame:
        cols = [f.name for f in fields(OrderRecord)]
        rows = [{c: getattr(o, c) for c in cols} for o in sorted(self._orders.values(),
                                                                  key=lambda o: (o.created_at, o.client_id))]
        df = pd.DataFrame(rows, columns=cols)
        df["status"] = df["status"].astype(str)
        return df
