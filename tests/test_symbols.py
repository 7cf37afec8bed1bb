"""Every venue symbol in the bundled data maps to the expected canonical asset and quote."""

from __future__ import annotations

import pandas as pd
import pytest

from fundarb_core.symbols import SymbolError, normalize_symbol
from fundarb_core.venues import VENUES, UnknownVenueError

_CRYPTO = "APT ARB AVAX BNB BTC DOGE ETH HYPE INJ LINK LTC NEAR OP ORDI SEI SOL SUI TIA TON TRX WIF XRP".split()

# Written out by hand from each venue's naming rules (data README), not derived from the code.
EXPECTED: dict[tuple[str, str], tuple[str, str]] = {
    **{("binance", f"{a}USDT"): (a, "USDT") for a in _CRYPTO},
    **{("binance", f"{a}USDC"): (a, "USDC") for a in _CRYPTO},
    **{("bybit", f"{a}USDT"): (a, "USDT") for a in [*_CRYPTO, "AAPL", "AMZN", "COIN", "GOOGL", "META", "MSTR", "TSLA"]},
    **{("bybit", f"{a}PERP"): (a, "USDC") for a in _CRYPTO},
    **{("hyperliquid", a): (a, "USDC") for a in _CRYPTO},
    **{("lighter", a): (a, "USDC") for a in _CRYPTO},
    **{("hyperliquid-xyz", f"xyz:{a}"): (a, "USDC") for a in ["AAPL", "AMD", "AMZN", "COIN", "NVDA", "SKHX", "TSLA"]},
    **{("okx", f"{a}-USDT-SWAP"): (a, "USDT") for a in _CRYPTO},
    **{("dydx", f"{a}-USD"): (a, "USD") for a in _CRYPTO},
}


def test_every_bundled_symbol_maps_to_expected_asset(bundled: dict[str, pd.DataFrame]) -> None:
    pairs = set()
    for frame in bundled.values():
        pairs |= set(map(tuple, frame[["venue", "venue_symbol"]].drop_duplicates().to_numpy()))
    assert len(pairs) > 100
    unexpected = pairs - EXPECTED.keys()
    assert not unexpected, f"symbols with no expectation: {sorted(unexpected)}"
    for venue, sym in sorted(pairs):
        got = normalize_symbol(venue, sym)
        assert (got.asset, got.quote) == EXPECTED[(venue, sym)], (venue, sym, got)
        assert got.multiplier == 1


def test_stock_perps_match_across_venues() -> None:
    assert normalize_symbol("hyperliquid-xyz", "xyz:AAPL").asset == normalize_symbol("bybit", "AAPLUSDT").asset


@pytest.mark.parametrize(
    ("venue", "symbol", "asset", "quote", "mult"),
    [
        ("binance", "1000PEPEUSDT", "PEPE", "USDT", 1000),
        ("hyperliquid", "kPEPE", "PEPE", "USDC", 1000),
        ("binance", "BTC/USDT:USDT", "BTC", "USDT", 1),
        ("okx", "ETH-USD-SWAP", "ETH", "USD", 1),
        ("aster", "SOLUSDT", "SOL", "USDT", 1),
        ("dydx", "BTC-PERP", "BTC", "USDC", 1),
    ],
)
def test_multipliers_and_other_spellings(venue: str, symbol: str, asset: str, quote: str, mult: int) -> None:
    got = normalize_symbol(venue, symbol)
    assert (got.asset, got.quote, got.multiplier) == (asset, quote, mult)


def test_errors_name_venue_and_symbol() -> None:
    with pytest.raises(SymbolError, match=r"binance.*'BTCEUR'"):
        normalize_symbol("binance", "BTCEUR")
    with pytest.raises(UnknownVenueError, match="kraken"):
        normalize_symbol("kraken", "BTCUSDT")


def test_registry_covers_required_venues() -> None:
    for vid in ["hyperliquid", "lighter", "aster", "binance", "bybit", "okx", "dydx"]:
        v = VENUES[vid]
        assert v.ccxt_id and v.fees.maker <= v.fees.taker and v.symbol_format
    assert VENUES["binance"].ccxt_id == "binanceusdm"
    assert VENUES["lighter"].has_funding_history is False
    assert VENUES["hyperliquid"].ccxt_options["builderFee"] is False
