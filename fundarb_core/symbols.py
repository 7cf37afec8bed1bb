"""Symbol normalisation: every venue's own spelling → one canonical asset plus quote.

Cross-venue spreads only exist once ``BTCUSDT`` (Binance), ``BTCPERP`` (Bybit USDC perp),
``BTC`` (Hyperliquid), ``BTC-USDT-SWAP`` (OKX) and ``BTC-USD`` (dYdX) all mean ``BTC``.  The
quote currency is kept as an attribute (a USDT and a USDC perp of one asset are still the
same exposure) and so is the contract multiplier of ``1000PEPE``-style names, whose price
and size are quoted per 1,000 units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from fundarb_core.venues import get_venue


@dataclass(frozen=True)
class CanonicalSymbol:
    """A venue symbol resolved to the asset it tracks."""

    asset: str
    quote: str
    multiplier: int = 1


class SymbolError(ValueError):
    """A venue symbol the normaliser cannot read; names venue and symbol."""


# Quote suffixes in the order they must be tried (longest first so USDT beats USD).
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD")
# Hyperliquid, Lighter and Hyperliquid builder dexes settle in USDC; dYdX v4 quotes in USD.
_NATIVE_QUOTE = {"hyperliquid": "USDC", "hyperliquid-xyz": "USDC", "lighter": "USDC", "dydx": "USD"}
_MULTIPLIER = re.compile(r"^(1000000|100000|10000|1000|100|k)(?=[A-Z])")
_MULTIPLIER_VALUE = {"k": 1000}


def _split_multiplier(base: str) -> tuple[str, int]:
    m = _MULTIPLIER.match(base)
    if not m or len(base) == len(m.group(1)):
        return base, 1
    token = m.group(1)
    return base[len(token):], _MULTIPLIER_VALUE.get(token, int(token) if token.isdigit() else 1)


@lru_cache(maxsize=65536)
def normalize_symbol(venue: str, venue_symbol: str) -> CanonicalSymbol:
    """Map ``(venue, venue_symbol)`` to its canonical asset and quote.

    Also accepts ccxt's unified form (``BTC/USDT:USDT``) for any venue, which is what the
    ccxt source sees before it maps back to the venue's own id.
    """
    get_venue(venue)  # unknown venue -> clear error
    sym = venue_symbol.strip()
    if not sym:
        raise SymbolError(f"{venue}: empty venue_symbol")

    if "/" in sym:  # ccxt unified: BASE/QUOTE:SETTLE
        base, _, rest = sym.partition("/")
        quote = rest.split(":")[0]
    elif ":" in sym:  # builder dex: xyz:AAPL
        _dex, _, base = sym.partition(":")
        quote = _NATIVE_QUOTE.get(venue, "USDC")
    elif sym.endswith("-USDT-SWAP") or sym.endswith("-USDC-SWAP") or sym.endswith("-USD-SWAP"):
        base, quote, _ = sym.split("-")
    elif sym.endswith("-PERP"):
        base, quote = sym[: -len("-PERP")], "USDC"
    elif "-" in sym:  # dYdX BTC-USD
        base, _, quote = sym.partition("-")
    elif sym.endswith("PERP"):  # Bybit USDC-margined perps
        base, quote = sym[: -len("PERP")], "USDC"
    elif venue in _NATIVE_QUOTE:  # bare coin name on Hyperliquid / Lighter
        base, quote = sym, _NATIVE_QUOTE[venue]
    else:
        for q in _QUOTES:
            if sym.endswith(q) and len(sym) > len(q):
                base, quote = sym[: -len(q)], q
                break
        else:
            raise SymbolError(
                f"{venue}: cannot find a quote currency in venue_symbol {venue_symbol!r} "
                f"(expected a suffix among {', '.join(_QUOTES)})"
            )

    base = base.strip()
    if not base or not re.fullmatch(r"[A-Za-z0-9]+", base):
        raise SymbolError(f"{venue}: venue_symbol {venue_symbol!r} has no readable base asset")
    asset, multiplier = _split_multiplier(base)
    return CanonicalSymbol(asset=asset.upper(), quote=quote.upper(), multiplier=multiplier)
