"""Market and pair identity: what a row, an order or a position is about.

Why named tuples: they are hashable keys for dicts and sets (the paper venue's books, the ledger's legs) and still
unpack like the ``(venue, asset)`` tuples the arrays are indexed by.
"""

from __future__ import annotations

from typing import NamedTuple


class Market(NamedTuple):
    """One perpetual on one venue, by canonical asset (``BTC`` on ``binance``)."""

    venue: str
    asset: str


class Pair(NamedTuple):
    """One spread trade: short the perp on ``short_venue``, long it on ``long_venue`` (spec §1)."""

    asset: str
    short_venue: str
    long_venue: str

    @property
    def short(self) -> Market:
        return Market(self.short_venue, self.asset)

    @property
    def long(self) -> Market:
        return Market(self.long_venue, self.asset)

    def key(self) -> str:
        """``asset|short|long``: the series id the forecasters use for a spread."""
        return f"{self.asset}|{self.short_venue}|{self.long_venue}"
