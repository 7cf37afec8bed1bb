"""The one protocol through which execution talks to a venue — paper (:mod:`fundarb_core.simulation`) or live
(:mod:`fundarb_core.venues.ccxt_venue`) — and the errors a venue call may raise.

Sizes are USD notional, quantities base units (signed: short < 0), client ids strings
(:mod:`fundarb_core.domain.client_ids`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from fundarb_core.domain.orders import Order, Side
from fundarb_core.domain.venue_state import Balance, BookTop, FundingPayment, VenuePosition


class ExchangeError(RuntimeError):
    """The venue could not be reached or refused the request; the order did not arrive."""


class OrderTimeout(ExchangeError):
    """The request went out but no answer came back: the order's status is unknown until fetched."""


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
