"""What a venue reports besides orders: book top, positions, account balances and funding payments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class BookTop:
    """Best bid and ask (``source`` says where the price came from)."""

    bid: float
    ask: float
    mid: float
    source: str
    ts: datetime | None = None


@dataclass(frozen=True)
class VenuePosition:
    """A venue's net position in one asset (``qty`` signed base units)."""

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
    """One venue's account: wallet (realised), equity (with unrealised P&L), margin figures and health."""

    venue: str
    initial_usd: float
    wallet_usd: float
    equity_usd: float
    maintenance_usd: float
    margin_used_usd: float
    health_factor: float


@dataclass(frozen=True)
class FundingPayment:
    """One settlement paid to (amount > 0) or by (< 0) a position on one venue."""

    payment_id: str
    venue: str
    asset: str
    ts: datetime
    rate: float
    qty: float
    price: float
    amount_usd: float
