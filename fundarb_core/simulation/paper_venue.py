"""The paper venue: :class:`PaperVenue` fills the keeper's orders against a market view, pays funding, keeps
cross-margin accounts — in memory, with an optional store that persists every change (paper trading across
process restarts) or none (the simulator).

Why memory first: the rules below run in Python on plain dicts, so a year of hourly simulation costs
microseconds per call; a paper keeper that must survive a restart passes a
:class:`~fundarb_core.storage.paper_store.DuckDBPaperStore`, which loads the state at start and writes each
change in one transaction — the same rules either way.

Rules (each a choice the spec leaves open):

* **Price** of ``(venue, asset)`` at the clock: the market view's paper price (book mid, else the last bar
  close, each at most 2 h old; :mod:`fundarb_core.storage.market_queries`), else the price fallbacks of
  :func:`fundarb_core.strategy.fallbacks.resolve_price` — the funding rows' mark price, then the same asset's
  price on another venue (the legs are one underlying; the bundled data has no Hyperliquid/Lighter bars) — the
  rule the planner checks a plan's legs against.
* **Book top**: the data has mids, not quotes, so bid/ask = mid × (1 ∓ ``half_spread_bps``) (1 bp each side).
* **Fills**: a limit sell at or below the bid (buy at or above the ask) fills at once at the touch moved by the
  keeper's √-impact (:func:`fundarb_core.strategy.costs.sqrt_impact`, ``base_impact`` of the config, liquidity
  = that side's book depth, else open interest, else 24 h volume; with none known the flat fallback slippage
  of :func:`fundarb_core.strategy.costs.fill_impact`, the planner's cost — no impact when that fallback is
  off).  :attr:`PaperVenue.fallback_fills` counts the fills that used a data fallback (price or slippage).  A limit that
  does not cross rests (``open``) and is re-tried at every :meth:`PaperVenue.advance_to`.  Fees: maker on
  opening orders, taker on ``reduce_only`` (exit) orders, the venue's schedule from ``KeeperConfig.fees``.
  ``reduce_only`` orders are capped at the position (a size above it closes it), and rejected without one.
* **Idempotency**: an order is keyed by ``(venue, client_id)``; placing a known id returns the stored order.
* **Funding**: at every settlement (stamp rounded to the minute) after the position's last accrual and up to
  the clock, the position receives ``−qty × price × rate`` (a short receives positive funding); price = the
  row's mark price, else the price rule at the settlement.  One symbol per position
  (:meth:`~fundarb_core.execution.market_view.MarketView.funding_symbol`), fixed when it opens.  A position
  opened at a settlement instant does not receive that settlement.
* **Margin**: cross margin per venue.  wallet = initial + realised P&L (:meth:`LegBook.apply`, the one
  average-cost rule) − fees + funding; equity = wallet + unrealised P&L; health = equity / Σ |qty| × mark ×
  ``maintenance_margin``.
* **Faults** (tests): :mod:`fundarb_core.simulation.faults`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd

from fundarb_core.domain.orders import Order, OrderStatus, Side
from fundarb_core.domain.positions import LegBook
from fundarb_core.domain.venue_state import Balance, BookTop, FundingPayment, VenuePosition
from fundarb_core.execution.market_view import MarketView
from fundarb_core.execution.venue import ExchangeError, OrderTimeout
from fundarb_core.simulation.faults import FaultInjector, FaultKind, FaultPlan
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.costs import fill_impact
from fundarb_core.strategy.fallbacks import fill_fallbacks, resolve_price, slippage_fallback_frac
from fundarb_core.times import to_naive_dt


@dataclass(frozen=True)
class PaperPosition:
    """The venue's book on one market, its leverage, the symbol it is funded on and its last accrual."""

    book: LegBook = field(default_factory=LegBook)
    leverage: float = 1.0
    venue_symbol: str | None = None
    funded_to: datetime | None = None


@dataclass(frozen=True)
class PaperAccount:
    venue: str
    initial_usd: float
    wallet_usd: float


class PaperStore(Protocol):
    """Where a paper venue's state survives the process (e.g. :class:`~fundarb_core.storage.paper_store.
    DuckDBPaperStore`)."""

    def load(self) -> PaperState:
        """The stored state (empty when new)."""

    def commit(self, change: PaperChange) -> None:
        """Write one change in one transaction."""


@dataclass
class PaperState:
    """Everything a paper venue remembers."""

    orders: dict[tuple[str, str], tuple[Order, int]]
    positions: dict[tuple[str, str], PaperPosition]
    accounts: dict[str, PaperAccount]
    funding: list[FundingPayment]
    clock: datetime | None = None
    seq: int = 0

    @classmethod
    def empty(cls) -> PaperState:
        return cls({}, {}, {}, [])


@dataclass
class PaperChange:
    """What one operation changed (a store writes it in one transaction)."""

    orders: list[tuple[Order, int]]
    positions: list[tuple[str, str, PaperPosition]]
    accounts: list[PaperAccount]
    funding: list[FundingPayment]
    clock: datetime | None = None
    seq: int | None = None


def _change(**kw: object) -> PaperChange:
    base: dict[str, object] = {"orders": [], "positions": [], "accounts": [], "funding": []}
    base.update(kw)
    return PaperChange(**base)  # type: ignore[arg-type]


class PaperVenue:
    """Paper venue over a :class:`MarketView` (rules in the module docstring).

    ``initial_balances`` seed accounts only for venues not yet stored (a restart keeps the wallet); ``now`` is
    the clock (a restart reads the stored one when None)."""

    def __init__(self, market: MarketView, config: KeeperConfig | None = None,
                 initial_balances: Mapping[str, float] | None = None, faults: FaultPlan | None = None,
                 seed: int = 0, half_spread_bps: float = 1.0, default_leverage: float = 1.0,
                 now: datetime | pd.Timestamp | str | None = None,
                 price_overrides: dict[tuple[str, str], float] | None = None,
                 store: PaperStore | None = None) -> None:
        self.market = market
        self.config = config or KeeperConfig()
        self.faults = FaultInjector(faults or FaultPlan(), seed)
        self.half_spread_bps = half_spread_bps
        self.default_leverage = default_leverage
        self.price_overrides = price_overrides if price_overrides is not None else {}
        self.store = store
        self.state = store.load() if store is not None else PaperState.empty()
        self._version = 0
        self.fills = 0  # fills made by this object (not stored: a count for the backtest's assumptions)
        self.fallback_fills: dict[str, int] = {}  # of those, how many used each data fallback
        self._positions_cache: tuple[tuple[object, ...], dict[str, list[VenuePosition]]] | None = None
        if now is not None:
            self.state.clock = to_naive_dt(now)
            self._commit(_change(clock=self.state.clock))
        new = [PaperAccount(v, float(a), float(a)) for v, a in (initial_balances or {}).items()
               if v not in self.state.accounts]
        for acc in new:
            self.state.accounts[acc.venue] = acc
        if new:
            self._commit(_change(accounts=new))

    @property
    def now(self) -> datetime | None:
        return self.state.clock

    def _commit(self, change: PaperChange) -> None:
        self._version += 1
        if self.store is not None:
            self.store.commit(change)

    def _cache_key(self) -> tuple[object, ...]:
        """What account figures depend on: the state's version, the clock and any price override."""
        return (self._version, self.state.clock, tuple(sorted(self.price_overrides.items())))

    # ------------------------------------------------------------------------------------------ clock

    def _clock(self) -> datetime:
        if self.state.clock is None:
            raise RuntimeError("PaperVenue has no clock: call advance_to(now) first")
        return self.state.clock

    def advance_to(self, now: datetime | pd.Timestamp | str) -> None:
        """Move the clock forward: accrue funding up to ``now`` and re-try resting orders at the new prices."""
        t = to_naive_dt(now)
        if self.state.clock is not None and t < self.state.clock:
            raise ValueError(f"the paper clock cannot go back ({t} < {self.state.clock})")
        self.state.clock = t
        self._commit(_change(clock=t))
        self._accrue_funding(t)
        for o in self._orders(lambda o: o.status == OrderStatus.OPEN):
            self._try_fill_resting(o)

    # ------------------------------------------------------------------------------------------ market data

    def _price(self, venue: str, asset: str, at: datetime | None = None) -> tuple[float, str] | None:
        if (venue, asset) in self.price_overrides:
            return self.price_overrides[(venue, asset)], "override"
        return resolve_price(self.market.prices(at or self._clock()), venue, asset, self.config)

    def order_book_top(self, venue: str, asset: str) -> BookTop | None:
        p = self._price(venue, asset)
        if p is None:
            return None
        mid, src = p
        h = self.half_spread_bps * 1e-4
        return BookTop(bid=mid * (1 - h), ask=mid * (1 + h), mid=mid, source=src, ts=self.state.clock)

    def mark_price(self, venue: str, asset: str) -> float | None:
        p = self._price(venue, asset)
        return None if p is None else p[0]

    # ------------------------------------------------------------------------------------------ faults

    def inject(self, kind: FaultKind, venue: str | None = None, asset: str | None = None, count: int = 1,
               fraction: float | None = None) -> None:
        """Queue ``count`` explicit faults for the next matching orders (``None`` matches any venue/asset)."""
        self.faults.inject(kind, venue, asset, count, fraction)

    # ------------------------------------------------------------------------------------------ orders

    def _orders(self, keep: object) -> list[Order]:
        rows = sorted(self.state.orders.values(), key=lambda x: x[1])
        return [o for o, _ in rows if keep(o)]  # type: ignore[operator]

    def fetch_order_by_client_id(self, venue: str, client_id: str) -> Order | None:
        got = self.state.orders.get((venue, str(client_id)))
        return got[0] if got else None

    def open_orders(self, venue: str) -> list[Order]:
        return self._orders(lambda o: o.venue == venue and o.status == OrderStatus.OPEN)

    def all_orders(self, venue: str | None = None, since: datetime | None = None) -> list[Order]:
        """Every order the venue has seen (what ccxt's ``fetch_orders`` returns), oldest first; ``since`` keeps
        those stamped at or after it."""
        lo = to_naive_dt(since) if since is not None else None
        return self._orders(lambda o: (not venue or o.venue == venue)
                            and (lo is None or (o.ts is not None and o.ts >= lo)))

    def cancel_order(self, venue: str, client_id: str) -> Order | None:
        got = self.state.orders.get((venue, str(client_id)))
        if got is None or got[0].status != OrderStatus.OPEN:
            return got[0] if got else None
        done = got[0].with_(status=OrderStatus.CANCELED)
        self.state.orders[(venue, str(client_id))] = (done, got[1])
        self._commit(_change(orders=[(done, got[1])]))
        return done

    def _position(self, venue: str, asset: str) -> PaperPosition:
        return self.state.positions.get((venue, asset), PaperPosition(leverage=self.default_leverage))

    def set_leverage(self, venue: str, asset: str, leverage: float) -> None:
        pos = replace(self._position(venue, asset), leverage=float(leverage))
        self.state.positions[(venue, asset)] = pos
        self._commit(_change(positions=[(venue, asset, pos)]))

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
        seq = self.state.seq
        self.state.seq += 1
        self._commit(_change(seq=self.state.seq))
        fault, frac = self.faults.next(venue, asset, reduce_only, seq)
        if fault == "fail":
            raise ExchangeError(f"injected failure: {venue} {asset} {side} {cid} never reached the venue")
        base = Order(venue=venue, asset=asset, client_id=cid, side=side, size_usd=float(size_usd),
                     price=float(price), reduce_only=bool(reduce_only), status=OrderStatus.OPEN, ts=now,
                     liquidity="taker" if reduce_only else "maker")
        if fault == "reject":
            order = base.with_(status=OrderStatus.REJECTED, reason="injected_reject")
            self.state.orders[(venue, cid)] = (order, seq)
            self._commit(_change(orders=[(order, seq)]))
            return order
        order = self._execute(base, seq, partial=frac if fault == "partial" else None)
        if fault == "timeout":
            raise OrderTimeout(f"injected timeout: {venue} {asset} {side} {cid} (the venue processed it)")
        return order

    def _fill_terms(self, o: Order, partial: float | None) -> tuple[OrderStatus, float, float, float, str] | None:
        """(status, qty, fill price, fee, reason), or None when the limit does not cross (the order rests); a fill
        is counted in :attr:`fallback_fills` by the data fallbacks it used."""
        book = self.order_book_top(o.venue, o.asset)
        if book is None:
            return OrderStatus.REJECTED, 0.0, 0.0, 0.0, "no_price"
        buy = o.side == "buy"
        touch = book.ask if buy else book.bid
        if (buy and o.price < touch) or (not buy and o.price > touch):
            return None
        qty = o.size_usd / touch
        if o.reduce_only:
            pos_qty = self._position(o.venue, o.asset).book.qty
            if pos_qty == 0 or (pos_qty > 0) == buy:
                return OrderStatus.REJECTED, 0.0, 0.0, 0.0, "reduce_only_without_position"
            qty = min(qty, abs(pos_qty))
        status = OrderStatus.FILLED
        if partial is not None:
            qty *= partial
            status = OrderStatus.PARTIAL
        liq = self.market.liquidity(o.venue, o.asset, self._clock(), buy)
        impact = float(np.nan_to_num(fill_impact(qty * touch, liq, self.config.base_impact,
                                                 slippage_fallback_frac(self.config)), nan=0.0))
        if qty > 0:
            self.fills += 1
            for name in fill_fallbacks(book.source, not math.isnan(liq), self.config):
                self.fallback_fills[name] = self.fallback_fills.get(name, 0) + 1
        px = touch * (1 + impact) if buy else touch * (1 - impact)
        fees = self.config.fees(o.venue)
        fee = qty * px * (fees.taker if o.reduce_only else fees.maker)
        return status, qty, px, fee, ""

    def _execute(self, o: Order, seq: int, partial: float | None = None) -> Order:
        terms = self._fill_terms(o, partial)
        if terms is None:
            self.state.orders[(o.venue, o.client_id)] = (o, seq)
            self._commit(_change(orders=[(o, seq)]))
            return o
        status, qty, px, fee, reason = terms
        done = o.with_(status=status, filled_qty=qty, avg_price=px, fee_usd=fee, reason=reason)
        self._commit_fill(done, seq)
        return done

    def _try_fill_resting(self, o: Order) -> None:
        terms = self._fill_terms(o, None)
        if terms is None:
            return
        status, qty, px, fee, reason = terms
        seq = self.state.orders[(o.venue, o.client_id)][1]
        self._commit_fill(o.with_(status=status, filled_qty=qty, avg_price=px, fee_usd=fee, reason=reason,
                                  ts=self._clock()), seq)

    def _commit_fill(self, o: Order, seq: int) -> None:
        """Store the order, move the position (:meth:`LegBook.apply`) and the wallet, in one transaction."""
        change = _change(orders=[(o, seq)])
        self.state.orders[(o.venue, o.client_id)] = (o, seq)
        dq = o.signed_qty
        if dq != 0:
            pos = self._position(o.venue, o.asset)
            book, realised = pos.book.apply(dq, o.avg_price)
            if pos.book.qty == 0:
                pos = replace(pos, funded_to=self._clock(),
                              venue_symbol=self.market.funding_symbol(o.venue, o.asset, self._clock()))
            pos = replace(pos, book=book)
            self.state.positions[(o.venue, o.asset)] = pos
            acc = self.state.accounts.get(o.venue) or PaperAccount(o.venue, self.config.default_balance_usd,
                                                                     self.config.default_balance_usd)
            acc = replace(acc, wallet_usd=acc.wallet_usd + (realised - o.fee_usd))
            self.state.accounts[o.venue] = acc
            change.positions.append((o.venue, o.asset, pos))
            change.accounts.append(acc)
        self._commit(change)

    # ------------------------------------------------------------------------------------------ funding

    def _accrue_funding(self, now: datetime) -> None:
        """Pay every settlement in (funded_to, now] to the open positions, in one transaction."""
        due = {k: p for k, p in self.state.positions.items()
               if p.book.qty != 0 and p.venue_symbol is not None and p.funded_to is not None and p.funded_to < now}
        if not due:
            return
        lo = min(p.funded_to for p in due.values())  # type: ignore[type-var]
        payments = []
        for s in self.market.settlements(lo, now):
            p = due.get((s.venue, s.asset))
            if p is None or p.venue_symbol != s.venue_symbol or not s.ts > p.funded_to:  # type: ignore[operator]
                continue
            px = s.mark_price if s.mark_price > 0 else None
            if px is None:
                got = self._price(s.venue, s.asset, s.ts)
                px = got[0] if got else p.book.avg_price
            payments.append(FundingPayment(f"{s.venue}|{s.asset}|{s.ts.isoformat()}", s.venue, s.asset, s.ts,
                                           s.rate, p.book.qty, px, -p.book.qty * px * s.rate))
        totals: dict[str, float] = {}
        for pay in payments:
            totals[pay.venue] = totals.get(pay.venue, 0.0) + pay.amount_usd
        change = _change(funding=payments)
        for venue, total in totals.items():
            acc = self.state.accounts[venue]
            acc = replace(acc, wallet_usd=acc.wallet_usd + total)
            self.state.accounts[venue] = acc
            change.accounts.append(acc)
        for k, p in due.items():
            pos = replace(p, funded_to=now)
            self.state.positions[k] = pos
            change.positions.append((*k, pos))
        self.state.funding.extend(payments)
        self._commit(change)

    def funding_payments(self, since: datetime | None = None) -> list[FundingPayment]:
        lo = to_naive_dt(since) if since is not None else None
        got = [p for p in self.state.funding if lo is None or p.ts > lo]
        return sorted(got, key=lambda p: (p.ts, p.payment_id))

    # ------------------------------------------------------------------------------------------ account

    def positions(self, venue: str) -> list[VenuePosition]:
        key = self._cache_key()
        if self._positions_cache is None or self._positions_cache[0] != key:
            by_venue: dict[str, list[VenuePosition]] = {}
            for (v, asset), p in sorted(self.state.positions.items()):
                if p.book.qty == 0:
                    continue
                mark = self.mark_price(v, asset)
                by_venue.setdefault(v, []).append(VenuePosition(v, asset, p.book.qty, p.book.avg_price,
                                                                mark if mark is not None else p.book.avg_price,
                                                                p.leverage))
            self._positions_cache = (key, by_venue)
        return list(self._positions_cache[1].get(venue, ()))

    def venues(self) -> list[str]:
        """Venues with an account or a position."""
        return sorted({*self.state.accounts, *(v for v, _ in self.state.positions)})

    def balances(self) -> dict[str, Balance]:
        out: dict[str, Balance] = {}
        default = self.config.default_balance_usd
        for venue in self.venues():
            acc = self.state.accounts.get(venue) or PaperAccount(venue, default, default)
            pos = self.positions(venue)
            upnl = sum(p.unrealised_pnl_usd for p in pos)
            mm = sum(p.notional_usd for p in pos) * self.config.maintenance_margin
            used = sum(p.notional_usd / max(p.leverage, 1e-9) for p in pos)
            equity = acc.wallet_usd + upnl
            hf = equity / mm if mm > 0 else math.inf
            out[venue] = Balance(venue, acc.initial_usd, acc.wallet_usd, equity, mm, used, hf)
        return out
