"""Test helpers for the keeper on a real DuckDB: the paper venue and the ledger persisted in the same file as the
market (the product keeps them in a trading file of its own; one file keeps the tests short), and one cycle
called with the keeper's usual arguments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb
import pandas as pd

from fundarb_core.execution.cycle import Chooser, CycleContext, CycleReport, run_cycle
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.risk import RiskConfig
from fundarb_core.simulation.paper_venue import PaperVenue
from fundarb_core.storage.ledger_store import DuckDBLedgerStore
from fundarb_core.storage.market_view import WarehouseMarketView
from fundarb_core.storage.paper_store import DuckDBPaperStore
from fundarb_core.strategy.config import KeeperConfig


def paper_venue(conn: duckdb.DuckDBPyConnection, config: KeeperConfig | None = None, **kw: object) -> PaperVenue:
    """A paper venue priced from ``conn``'s warehouse tables, its state in ``conn``'s ``paper_*`` tables."""
    cfg = config or KeeperConfig()
    return PaperVenue(market_view(conn, cfg), cfg, store=DuckDBPaperStore(conn), **kw)  # type: ignore[arg-type]


def duck_ledger(conn: duckdb.DuckDBPyConnection) -> Ledger:
    """A ledger persisted in ``conn``'s ``ledger_*`` tables (``ledger.store.query`` reads them back)."""
    return Ledger(DuckDBLedgerStore(conn))


_VIEWS: dict[tuple[int, str], tuple[duckdb.DuckDBPyConnection, WarehouseMarketView]] = {}


def market_view(conn: duckdb.DuckDBPyConnection, config: KeeperConfig | None = None) -> WarehouseMarketView:
    """One market view per connection and config, reading a week ahead (the tests' data never changes)."""
    cfg = config or KeeperConfig()
    got = _VIEWS.get((id(conn), repr(cfg)))
    if got is None or got[0] is not conn:
        got = (conn, WarehouseMarketView(conn, cfg, read_ahead_hours=168))
        _VIEWS[(id(conn), repr(cfg))] = got
    return got[1]


def cycle(conn: duckdb.DuckDBPyConnection, exchange: object, config: KeeperConfig | None = None,
          now: datetime | pd.Timestamp | str | None = None, forecasts: pd.DataFrame | None = None, *,
          ledger: Ledger | None = None, venues: Sequence[str] | None = None, assets: Sequence[str] | None = None,
          risk: RiskConfig | None = None, dry_run: bool = False, plan: bool = True, chooser: Chooser | None = None,
          baseline_forecast: str = "none") -> CycleReport:
    """One keeper cycle on ``conn``'s market."""
    cfg = config or KeeperConfig()
    ctx = CycleContext(market_view(conn, cfg), exchange, ledger or duck_ledger(conn), cfg,  # type: ignore
                       risk or RiskConfig(), venues=venues, assets=assets, chooser=chooser,
                       baseline_forecast=baseline_forecast)
    return run_cycle(ctx, now, forecasts, dry_run=dry_run, plan=plan)


def snapshot_at(conn: duckdb.DuckDBPyConnection, as_of: datetime | pd.Timestamp | str,
                balances_usd: dict[str, float] | None = None, config: KeeperConfig | None = None,
                venues: Sequence[str] | None = None, baseline_forecast: str = "none") -> object:
    """The keeper's snapshot at ``as_of`` from ``conn``'s warehouse (what the live keeper reads)."""
    return WarehouseMarketView(conn, config).snapshot(pd.Timestamp(as_of).to_pydatetime(), balances_usd, config,
                                                      venues, baseline_forecast)
