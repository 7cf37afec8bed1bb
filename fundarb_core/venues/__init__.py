"""The venue registry: what the project knows about each perpetual-futures venue.

One ``Venue`` per venue id used in the data (``venue`` column).  Each carries its ccxt class,
how its funding interval is decided, its fee schedule and how it spells symbols, so that
funding math, symbol matching, ingestion and (later) execution all read the same facts.

Fee schedules are the venues' published base-tier (VIP 0 / no-stake) perpetual fees as
fractions of notional; they are defaults, every caller may override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

IntervalRule = Literal["fixed", "reported"]


@dataclass(frozen=True)
class FeeSchedule:
    """Maker/taker fees as fractions of notional (0.0002 = 0.02 % = 2 bp)."""

    maker: float
    taker: float


@dataclass(frozen=True)
class Venue:
    """Static facts about one venue.

    ``interval_rule`` says where a row's funding interval comes from:

    * ``fixed`` — the venue settles every ``default_interval_hours`` (Hyperliquid, Lighter,
      dYdX settle hourly).  A source that reports another interval for such a venue has
      derived it from a gap in its own collection, and the rate is still a 1h rate, so the
      venue rule wins.
    * ``reported`` — the interval is per symbol and changes over time (Binance moves capped
      symbols from 8h to 4h or 1h; Bybit and OKX likewise).  The row's reported interval is
      used; when a source gives none it is inferred from the settlement gaps.
    """

    id: str
    ccxt_id: str
    interval_rule: IntervalRule
    default_interval_hours: float
    fees: FeeSchedule
    symbol_format: str
    has_funding_history: bool = True
    # ccxt options that switch off builder/integrator/broker fees or tags ccxt adds by default
    ccxt_options: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # the data venue id for builder-deployed markets on the same exchange (hyperliquid-xyz)
    dex: str | None = None


def _opts(**kwargs: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType(kwargs)


VENUES: MappingProxyType[str, Venue] = MappingProxyType(
    {
        v.id: v
        for v in (
            Venue(
                id="hyperliquid",
                ccxt_id="hyperliquid",
                interval_rule="fixed",
                default_interval_hours=1.0,
                fees=FeeSchedule(maker=0.00015, taker=0.00045),
                symbol_format="BTC",
                ccxt_options=_opts(builderFee=False, approvedBuilderFee=False),
            ),
            Venue(
                id="hyperliquid-xyz",
                ccxt_id="hyperliquid",
                interval_rule="fixed",
                default_interval_hours=1.0,
                # builder-deployed (HIP-3) markets charge the deployer's fee on top; 2x base
                fees=FeeSchedule(maker=0.0003, taker=0.0009),
                symbol_format="xyz:AAPL",
                ccxt_options=_opts(builderFee=False, approvedBuilderFee=False),
                dex="xyz",
            ),
            Venue(
                id="lighter",
                ccxt_id="lighter",
                interval_rule="fixed",
                default_interval_hours=1.0,
                # Lighter's standard accounts trade at zero fees; the spec's default (2/5 bp) is
                # kept as the conservative figure for premium accounts
                fees=FeeSchedule(maker=0.0002, taker=0.0005),
                symbol_format="BTC",
                has_funding_history=False,
                ccxt_options=_opts(
                    builderFee=False, integratorAccountIndex=None, integratorMakerFee=0, integratorTakerFee=0
                ),
            ),
            Venue(
                id="aster",
                ccxt_id="aster",
                interval_rule="reported",
                default_interval_hours=8.0,
                fees=FeeSchedule(maker=0.0001, taker=0.00035),
                symbol_format="BTCUSDT",
                ccxt_options=_opts(builderFee=False, builder=None, builderRate="0"),
            ),
            Venue(
                id="binance",
                ccxt_id="binanceusdm",
                interval_rule="reported",
                default_interval_hours=8.0,
                fees=FeeSchedule(maker=0.0002, taker=0.0005),
                symbol_format="BTCUSDT",
                ccxt_options=_opts(broker={}),
            ),
            Venue(
                id="bybit",
                ccxt_id="bybit",
                interval_rule="reported",
                default_interval_hours=8.0,
                fees=FeeSchedule(maker=0.0002, taker=0.00055),
                symbol_format="BTCUSDT | BTCPERP",
                ccxt_options=_opts(brokerId=""),
            ),
            Venue(
                id="okx",
                ccxt_id="okx",
                interval_rule="reported",
                default_interval_hours=8.0,
                fees=FeeSchedule(maker=0.0002, taker=0.0005),
                symbol_format="BTC-USDT-SWAP",
                ccxt_options=_opts(brokerId=""),
            ),
            Venue(
                id="dydx",
                ccxt_id="dydx",
                interval_rule="fixed",
                default_interval_hours=1.0,
                fees=FeeSchedule(maker=0.0001, taker=0.0005),
                symbol_format="BTC-USD",
            ),
        )
    }
)


class UnknownVenueError(KeyError):
    """Raised for a venue id the registry does not know."""


def get_venue(venue_id: str) -> Venue:
    """Look a venue up by its data id, with an error that lists the known ones."""
    try:
        return VENUES[venue_id]
    except KeyError:
        raise UnknownVenueError(
            f"unknown venue {venue_id!r}; known venues: {', '.join(sorted(VENUES))}"
        ) from None
