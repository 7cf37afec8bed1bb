"""The keeper's trading resource: paper or live, and the trading file its ledger and paper accounts live in.

Why a resource and not a branch in the asset: how the keeper trades is deployment configuration — the same
asset runs paper in a notebook and live on a desk — so it comes from the environment
(``FUNDARB_KEEPER_MODE=live`` through :class:`dagster.EnvVar`, and live also needs ``FUNDARB_LIVE=1``: two
deliberate settings), is shown on the resource in the UI, and the asset only asks the resource for a venue.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

import dagster as dg
import duckdb
from pydantic import Field

from fundarb_core.execution.market_view import MarketView
from fundarb_core.execution.venue import ExchangeAdapter
from fundarb_core.simulation.paper_venue import PaperVenue
from fundarb_core.storage.ledger_store import trading_db_path
from fundarb_core.storage.paper_store import DuckDBPaperStore
from fundarb_core.strategy.config import KeeperConfig
from fundarb_pipelines.resources import FundarbDuckDB

MODE_ENV = "FUNDARB_KEEPER_MODE"
LIVE_ENV = "FUNDARB_LIVE"


class KeeperTrading(dg.ConfigurableResource):
    """How the keeper trades (module doc)."""

    mode: str = Field(default="paper", description="paper | live (live also needs FUNDARB_LIVE=1)")
    live_venues: list[str] = Field(default_factory=lambda: ["binance", "hyperliquid"],
                                   description="venues traded in live mode (keys from FUNDARB_<VENUE>_* env vars)")
    ledger_path: str = Field(default="", description="the trading file (default: ledger.duckdb beside the "
                             "warehouse, or FUNDARB_LEDGER)")

    def check(self) -> None:
        """The mode is known, and live mode has its second switch."""
        if self.mode not in ("paper", "live"):
            raise dg.Failure(f"unknown keeper mode {self.mode!r}; expected paper or live ({MODE_ENV})")
        if self.mode == "live" and os.environ.get(LIVE_ENV) != "1":
            raise dg.Failure(f"live mode needs {LIVE_ENV}=1 in the environment as well as mode=live")

    @contextmanager
    def trading_db(self, warehouse: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """The trading file, with the same cross-process writer lock as the warehouse (one keeper at a time)."""
        path = self.ledger_path or str(trading_db_path(warehouse))
        with FundarbDuckDB(database=path).get_connection() as conn:
            yield conn

    def venue(self, market: MarketView, config: KeeperConfig, trading: duckdb.DuckDBPyConnection,
              now: datetime, capital: Mapping[str, float]) -> ExchangeAdapter:
        """The paper venue (its accounts in the trading file) or the live venues through ccxt."""
        self.check()
        if self.mode == "live":
            from fundarb_core.venues.ccxt_venue import CcxtExchange  # real venues, keys from the environment

            return CcxtExchange(venues=self.live_venues)
        return PaperVenue(market, config, initial_balances=capital, now=now, store=DuckDBPaperStore(trading))


def trading_from_env() -> KeeperTrading:
    """The resource as the environment configures it: ``FUNDARB_KEEPER_MODE`` when set (an ``EnvVar``, so the UI
    shows where the value came from), paper otherwise."""
    if os.environ.get(MODE_ENV):
        return KeeperTrading(mode=dg.EnvVar(MODE_ENV), ledger_path=os.environ.get("FUNDARB_LEDGER", ""))
    return KeeperTrading(ledger_path=os.environ.get("FUNDARB_LEDGER", ""))
