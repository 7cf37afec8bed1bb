"""What the keeper and its paper venue need to know about the market, as one protocol.

Why a protocol: the live keeper reads the warehouse at each cycle and the simulator reads arrays loaded once per
run; both implement this (:mod:`fundarb_core.storage.market_view`), so the cycle, the risk rules and the paper
venue run unchanged on either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.market_tape import PriceEntry
from fundarb_core.strategy.snapshot import Snapshot


class Settlement(NamedTuple):
    """One funding settlement of one symbol (stamp rounded to the minute; ``mark_price`` may be NaN)."""

    venue: str
    asset: str
    venue_symbol: str
    ts: datetime
    rate: float
    mark_price: float


@runtime_checkable
class MarketView(Protocol):
    """The market as known at an instant (nothing after it)."""

    def snapshot(self, t: datetime, balances_usd: Mapping[str, float] | None = None,
                 config: KeeperConfig | None = None, venues: Sequence[str] | None = None,
                 baseline_forecast: str = "none") -> Snapshot:
        """The planner's snapshot at ``t``."""

    def prices(self, t: datetime) -> Mapping[tuple[str, str], PriceEntry]:
        """Every market's paper price at ``t``, keyed by (venue, asset)."""

    def liquidity(self, venue: str, asset: str, t: datetime, buy: bool) -> float:
        """The liquidity (USD) a buy or a sell on the market meets at ``t`` (NaN when unknown)."""

    def settlements(self, lo: datetime, hi: datetime) -> Sequence[Settlement]:
        """Settlements stamped in ``(lo, hi]``, in (time, venue, asset, symbol) order."""

    def funding_symbol(self, venue: str, asset: str, t: datetime) -> str | None:
        """The symbol whose settlements a position on the market opened at ``t`` receives."""

    def newest_settlement(self, t: datetime) -> datetime | None:
        """The newest funding stamp at or before ``t`` (the data-age pause)."""
