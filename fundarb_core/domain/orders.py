"""Orders and their status machine (Nautilus Trader's model, reduced to what a funding keeper sends).

Why an explicit machine: the ledger and the venues disagree after crashes and timeouts, and the reconciler may
only move an order forward — a ``filled`` order read back as ``open`` from a lagging venue must not re-open it.
:meth:`OrderStatus.can_become` is the one place that says which moves are legal; every ledger write goes through
it (:class:`IllegalTransition` otherwise).

Statuses: ``pending`` (intent written, not yet sent), ``unknown`` (sent, no answer), ``open`` (resting on the
venue), and the final ones ``filled``, ``partial`` (part filled, the rest cancelled), ``rejected``, ``canceled``
and ``not_received`` (the venue confirmed it never got it).  Re-recording the same status is always legal (a
reconcile may read an order twice).  One exception to "final": an order the venue confirmed missing
(``not_received``) that the venue later reports after all takes the venue's status — exposure is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal

Side = Literal["buy", "sell"]


class OrderStatus(StrEnum):
    """Where an order is in its life (module doc)."""

    PENDING = "pending"
    UNKNOWN = "unknown"
    OPEN = "open"
    FILLED = "filled"
    PARTIAL = "partial"
    REJECTED = "rejected"
    CANCELED = "canceled"
    NOT_RECEIVED = "not_received"

    @property
    def is_final(self) -> bool:
        return self in FINAL_ORDER_STATUSES

    def can_become(self, new: OrderStatus | str) -> bool:
        """Whether a recorded order may move from this status to ``new`` (module doc)."""
        target = OrderStatus(new)
        return target == self or target in _NEXT[self]


FINAL_ORDER_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.PARTIAL, OrderStatus.REJECTED,
                                  OrderStatus.CANCELED, OrderStatus.NOT_RECEIVED})
UNRESOLVED_ORDER_STATUSES = frozenset({OrderStatus.PENDING, OrderStatus.UNKNOWN, OrderStatus.OPEN})
_NEXT: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(OrderStatus) - {OrderStatus.PENDING},
    OrderStatus.UNKNOWN: frozenset(OrderStatus) - {OrderStatus.PENDING, OrderStatus.UNKNOWN},
    OrderStatus.OPEN: frozenset({OrderStatus.FILLED, OrderStatus.PARTIAL, OrderStatus.CANCELED,
                                 OrderStatus.REJECTED}),
    **{s: frozenset() for s in FINAL_ORDER_STATUSES},
    # the venue is the truth about exposure: an order confirmed missing that a venue later reports (it arrived
    # late) takes the venue's status, or a real position would go unrecorded
    OrderStatus.NOT_RECEIVED: frozenset({OrderStatus.OPEN, OrderStatus.FILLED, OrderStatus.PARTIAL,
                                         OrderStatus.CANCELED, OrderStatus.REJECTED}),
}


class IllegalTransition(ValueError):
    """An order status change the machine forbids (e.g. ``filled`` → ``open``)."""


def check_transition(venue: str, client_id: str, old: OrderStatus | str, new: OrderStatus | str) -> OrderStatus:
    """``new`` as an :class:`OrderStatus`, or :class:`IllegalTransition` naming the order."""
    src, dst = OrderStatus(old), OrderStatus(new)
    if not src.can_become(dst):
        raise IllegalTransition(f"order {venue}/{client_id}: {src.value} cannot become {dst.value}")
    return dst


@dataclass(frozen=True)
class Order:
    """An order as a venue reports it (``filled_qty`` unsigned, base units; sizes in USD notional)."""

    venue: str
    asset: str
    client_id: str
    side: Side
    size_usd: float
    price: float
    reduce_only: bool
    status: OrderStatus
    filled_qty: float = 0.0
    avg_price: float = 0.0
    fee_usd: float = 0.0
    liquidity: str = "maker"
    ts: datetime | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", OrderStatus(self.status))

    @property
    def signed_qty(self) -> float:
        """Filled quantity with the position sign (buy +, sell −)."""
        return self.filled_qty if self.side == "buy" else -self.filled_qty

    @property
    def filled_usd(self) -> float:
        return self.filled_qty * self.avg_price

    def with_(self, **changes: object) -> Order:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OrderRecord:
    """An order as the keeper's ledger knows it: the venue's view plus why it was sent (position, leg, purpose,
    attempt) and when the ledger last changed it."""

    venue: str
    client_id: str
    position_id: str
    asset: str
    leg: str
    purpose: str
    attempt: int
    side: Side
    size_usd: float
    price: float
    reduce_only: bool
    status: OrderStatus
    filled_qty: float
    avg_price: float
    fee_usd: float
    created_at: datetime
    updated_at: datetime
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", OrderStatus(self.status))

    def with_(self, **changes: object) -> OrderRecord:
        return replace(self, **changes)  # type: ignore[arg-type]
