"""Sending an order the only safe way: write-ahead intent → send → record (spec §6's deterministic client ids).

1. :func:`send_order` writes the order as ``pending`` (its deterministic client id included) in one transaction;
2. it sends the order;
3. it records the venue's answer and the fill (as a delta over what the ledger already had) in one transaction.

A crash between 1 and 3 leaves a ``pending`` order that :func:`~fundarb_core.execution.reconcile.reconcile`
resolves at the next cycle by asking the venue for the client id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fundarb_core.domain.client_ids import client_id_str
from fundarb_core.domain.orders import OrderStatus, Side
from fundarb_core.execution.crashpoints import crashpoint
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.venue import ExchangeAdapter, ExchangeError, OrderTimeout


@dataclass(frozen=True)
class SentOrder:
    """What :func:`send_order` did: the client id, the final ledger status and the signed quantity filled."""

    venue: str
    client_id: str
    status: OrderStatus
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
            return SentOrder(venue, cid, OrderStatus.NOT_RECEIVED, 0.0, "known_id")
        dq = ledger.record_order(got, now)
        return SentOrder(venue, cid, got.status, dq)
    if price is None:
        ledger.mark_order(venue, cid, OrderStatus.REJECTED, now, "no_price")
        return SentOrder(venue, cid, OrderStatus.REJECTED, 0.0, "no_price")
    crashpoint("send_order.after_intent")
    try:
        order = exchange.place_limit_order(venue, asset, side, size_usd, price, cid, reduce_only)
        crashpoint("send_order.after_exchange")
    except ExchangeError as exc:
        try:
            got = exchange.fetch_order_by_client_id(venue, cid)
        except ExchangeError:
            ledger.mark_order(venue, cid, OrderStatus.UNKNOWN, now, type(exc).__name__)
            return SentOrder(venue, cid, OrderStatus.UNKNOWN, 0.0, type(exc).__name__)
        if got is None:
            ledger.mark_order(venue, cid, OrderStatus.NOT_RECEIVED, now, type(exc).__name__)
            return SentOrder(venue, cid, OrderStatus.NOT_RECEIVED, 0.0, type(exc).__name__)
        reason = "timeout_resolved" if isinstance(exc, OrderTimeout) else type(exc).__name__
        dq = ledger.record_order(got, now, reason=reason)
        return SentOrder(venue, cid, got.status, dq, reason)
    dq = ledger.record_order(order, now)
    return SentOrder(venue, cid, order.status, dq, order.reason)
