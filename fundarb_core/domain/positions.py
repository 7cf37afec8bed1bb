"""Fills, the one average-cost rule, and the keeper's pair position.

Why one rule: the paper venue's account, the ledger's wallets and the reports all turn a sequence of fills into a
quantity, an average price and realised P&L.  :meth:`LegBook.apply` is the only code that does it — the paper
venue keeps one book per market, the ledger one per (venue, asset) and :class:`PairPosition` one per leg — so the
venue and the ledger can be compared cent for cent.

Average cost: adding to a position moves the average price to the quantity-weighted mean; reducing realises
``closed qty × (fill − average)`` (sign of the position) and keeps the average; crossing through zero realises
the whole old position and opens the remainder at the fill price.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from fundarb_core.domain.markets import Pair


@dataclass(frozen=True)
class LegBook:
    """Signed quantity (base units, short < 0) and average entry price of one market."""

    qty: float = 0.0
    avg_price: float = 0.0

    def apply(self, dq: float, price: float) -> tuple[LegBook, float]:
        """The book after a fill of signed ``dq`` at ``price``, and the P&L it realised (module doc)."""
        q0, p0 = self.qty, self.avg_price
        if dq == 0:
            return self, 0.0
        if q0 == 0 or (q0 > 0) == (dq > 0):
            q1 = q0 + dq
            return LegBook(q1, (abs(q0) * p0 + abs(dq) * price) / abs(q1)), 0.0
        realised = min(abs(dq), abs(q0)) * (price - p0) * (1 if q0 > 0 else -1)
        q1 = q0 + dq
        p1 = p0 if abs(dq) <= abs(q0) else price
        if abs(q1) < 1e-12 * max(abs(q0), 1.0):
            q1, p1 = 0.0, 0.0
        return LegBook(q1, p1), realised

    def unrealised(self, mark: float) -> float:
        return self.qty * (mark - self.avg_price)


@dataclass(frozen=True)
class Fill:
    """One execution the ledger recorded (``qty`` signed: buy +, sell −)."""

    fill_id: str
    seq: int
    venue: str
    client_id: str
    position_id: str
    asset: str
    qty: float
    price: float
    fee_usd: float
    liquidity: str
    ts: datetime


class PositionStatus(StrEnum):
    """A pair position's life: ``opening`` → ``open`` (both legs hedged) / ``single_leg`` (one leg missing) →
    ``closing`` → ``closed``; ``failed`` when no leg filled; ``orphan`` for venue orders the ledger never sent."""

    OPENING = "opening"
    OPEN = "open"
    SINGLE_LEG = "single_leg"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"
    ORPHAN = "orphan"


LIVE_POSITION_STATUSES = frozenset({PositionStatus.OPENING, PositionStatus.OPEN, PositionStatus.SINGLE_LEG,
                                    PositionStatus.CLOSING, PositionStatus.ORPHAN})


@dataclass(frozen=True)
class PairPosition:
    """The keeper's record of one pair trade: what was planned (costs, expected return) and what was filled.

    ``legs`` is the average-cost book of each venue, moved only by :meth:`apply`."""

    position_id: str
    asset: str
    short_venue: str
    long_venue: str
    size_usd: float
    leverage: float
    status: PositionStatus
    opened_at: datetime
    closed_at: datetime | None = None
    entry_fees_usd: float | None = None
    exit_fees_usd: float | None = None
    total_costs_usd: float | None = None
    expected_hourly_usd: float | None = None
    break_even_hours: float | None = None
    expected_apy: float | None = None
    retry_attempts: int = 0
    close_ops: int = 0
    naked_since: datetime | None = None
    naked_cycles: int = 0
    reason: str | None = None
    legs: dict[str, LegBook] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", PositionStatus(self.status))

    @property
    def pair(self) -> Pair:
        return Pair(self.asset, self.short_venue, self.long_venue)

    def leg_qty(self) -> dict[str, float]:
        """Signed filled quantity per venue (venues with a fill only)."""
        return {v: b.qty for v, b in self.legs.items()}

    def apply(self, fill: Fill) -> tuple[PairPosition, float]:
        """The position after ``fill`` (its venue's leg moved by :meth:`LegBook.apply`) and the realised P&L."""
        book, realised = self.legs.get(fill.venue, LegBook()).apply(fill.qty, fill.price)
        return replace(self, legs={**self.legs, fill.venue: book}), realised

    def with_(self, **changes: object) -> PairPosition:
        return replace(self, **changes)  # type: ignore[arg-type]
