"""The keeper as Dagster assets: one cycle (reconcile → plan → execute → ledger) and its performance.

``keeper_job`` materialises both; the sensor in ``sensors.py`` launches it when fresh inputs land.  The plan
(every candidate considered and why it was taken or rejected) and the performance block are asset metadata, so
the UI shows what the keeper saw and did.  ``keeper_cycle`` declares every warehouse table the keeper reads
(:data:`~fundarb_core.storage.market_queries.KEEPER_TABLES`) and the forecasts.

Why two phases: the cycle first reads what it needs from the warehouse — the market as of its instant, the
forecasts — under the warehouse's lock, releases it, and only then trades, writing to its own trading file
(:class:`~fundarb_pipelines.trading.KeeperTrading`): an ingest or a model build never delays an order, and
a slow venue never blocks an ingest.  Paper mode is the default; live mode (``CcxtExchange``: real venues through
ccxt, keys only from the environment) needs ``FUNDARB_KEEPER_MODE=live`` *and* ``FUNDARB_LIVE=1``.
"""

import json
from datetime import datetime

import dagster as dg
import duckdb as duckdb_lib
import pandas as pd
from pydantic import Field

from fundarb_core.backtest.horizon_inputs import blend_model_forecast, live_inputs
from fundarb_core.execution.cycle import CycleContext, run_cycle
from fundarb_core.execution.ledger import Ledger
from fundarb_core.storage.ledger_store import DuckDBLedgerStore
from fundarb_core.storage.market_queries import KEEPER_TABLES
from fundarb_core.storage.market_view import WarehouseMarketView
from fundarb_core.storage.paper_store import DuckDBPaperStore
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.times import parse_user_time
from fundarb_pipelines.metadata import markdown_table
from fundarb_pipelines.resources import FundarbDuckDB
from fundarb_pipelines.trading import KeeperTrading

KEEPER_GROUP = "keeper"
KEEPER_INPUTS = (*KEEPER_TABLES, "funding_forecasts")


class KeeperRunConfig(dg.Config):
    """Run config of one keeper cycle (the Launchpad form in the UI)."""

    dry_run: bool = Field(default=False, description="plan and record decisions, send no orders")
    capital_usd_per_venue: float = Field(default=10_000.0, description="paper wallet per venue on first use")
    max_position_size_usd: float = Field(default=10_000.0)
    as_of: str | None = Field(default=None, description="cycle time (UTC); default: the data's latest hour")
    walk_forward: bool = Field(default=True, description="choose the horizon, margin and predictor windows on "
                               "all history before the cycle (else the a-priori defaults)")
    model_forecasts: bool = Field(default=False, description="blend the champion's 24 h spread forecast into the "
                                  "expected spread over the horizon (its 24 h share of it)")


def _as_of(conn: duckdb_lib.DuckDBPyConnection, configured: str | None) -> datetime:
    if configured:
        return parse_user_time(configured, "as_of").to_pydatetime()  # honours a UTC offset
    latest = conn.execute("SELECT max(hour) FROM spread_panel WHERE observed_spread_per_hour IS NOT NULL").fetchall()
    return pd.Timestamp(latest[0][0]).to_pydatetime()


def _forecasts(conn: duckdb_lib.DuckDBPyConnection) -> pd.DataFrame | None:
    """The champion's 24 h spread forecasts, in the keeper's format (both directions of each pair)."""
    has = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_name = 'funding_forecasts'").fetchall()
    if not has:
        return None
    f = conn.execute("SELECT series_id, pred FROM funding_forecasts WHERE target = 'spread_24h'").df()
    if f.empty:
        return None
    parts = f["series_id"].str.split("|", expand=True)
    fwd = pd.DataFrame({"asset": parts[0], "short_venue": parts[1], "long_venue": parts[2],
                        "forecast_spread_per_hour": f["pred"]})
    rev = fwd.rename(columns={"short_venue": "long_venue", "long_venue": "short_venue"}).assign(
        forecast_spread_per_hour=-fwd["forecast_spread_per_hour"])
    return pd.concat([fwd, rev], ignore_index=True)


def _read_market(conn: duckdb_lib.DuckDBPyConnection, kcfg: KeeperConfig, now: datetime,
                 since: datetime) -> WarehouseMarketView:
    """Everything the cycle will read of the market, from ``since`` (the paper venue's oldest unpaid funding) to
    ``now``, then detached from the warehouse."""
    return WarehouseMarketView(conn, kcfg).preload(min(since, now), now, first=now).detach()


@dg.asset(
    group_name=KEEPER_GROUP, kinds={"duckdb", "python"}, deps=list(KEEPER_INPUTS),
    description="One keeper cycle: reconcile with the venues, repair single legs, health actions, plan on the "
    "expected spread over the holding horizon, exits / switches / allocated entries, all recorded in the "
    "keeper's trading file (ledger_*, cycle_decisions, paper_*). Reads "
    "the warehouse first, then trades without holding it.",
)
def keeper_cycle(context: dg.AssetExecutionContext, config: KeeperRunConfig, duckdb: FundarbDuckDB,
                 trading: KeeperTrading) -> dg.MaterializeResult:
    trading.check()
    kcfg = KeeperConfig(max_position_size_usd=config.max_position_size_usd)
    with trading.trading_db(duckdb.database) as tconn:
        funded = [p.funded_to for p in DuckDBPaperStore(tconn).load().positions.values()
                  if p.funded_to is not None and p.book.qty != 0] if trading.mode == "paper" else []
        with duckdb.get_connection() as conn:  # phase 1: read, then release the warehouse
            now = _as_of(conn, config.as_of)
            market = _read_market(conn, kcfg, now, min(funded, default=now))
            choice, kcfg, forecasts = live_inputs(conn, now, kcfg, walk_forward=config.walk_forward)
            if config.model_forecasts and (model := _forecasts(conn)) is not None:
                forecasts = blend_model_forecast(forecasts.assign(hour=now), model.assign(hour=now),
                                                 kcfg.holding_hours).drop(columns="hour")
            all_venues = [r[0] for r in conn.execute("SELECT DISTINCT venue FROM funding_rates").fetchall()]
        capital = {v: config.capital_usd_per_venue for v in all_venues}
        exchange = trading.venue(market, kcfg, tconn, now, capital)  # phase 2: trade on the trading file only
        ledger = Ledger(DuckDBLedgerStore(tconn))
        ctx = CycleContext(market, exchange, ledger, kcfg,
                           venues=list(trading.live_venues) if trading.mode == "live" else None)
        report = run_cycle(ctx, now, forecasts=forecasts, dry_run=config.dry_run)
    decisions = ledger.decisions()
    if len(decisions):
        decisions = decisions[pd.to_datetime(decisions["cycle_ts"]) == pd.Timestamp(now)]
        decisions = decisions.sort_values(["taken", "score"], ascending=[False, False], na_position="last").head(25)
        decisions = decisions[["stage", "asset", "short_venue", "long_venue", "valid", "taken", "reason", "score",
                               "size_usd", "break_even_hours", "expected_apy"]]
    context.log.info(f"keeper cycle at {now}: {report.action} ({report.reason})")
    return dg.MaterializeResult(metadata={
        "as_of": str(now),
        "mode": trading.mode + (" (dry run)" if config.dry_run else ""),
        "action": report.action,
        "reason": report.reason,
        "position_id": report.position_id or "-",
        "orders": len(report.orders),
        "events": dg.MetadataValue.md("\n".join(f"- {e}" for e in report.events) or "(none)"),
        "paused": ", ".join(report.paused) or "-",
        "plans_considered": report.decisions,
        "actions": dg.MetadataValue.md("\n".join(f"- {d['kind']}: {d['reason']}" for d in report.taken) or "(none)"),
        "decision_rule": kcfg.decision_rule,
        "parameters": f"{choice.predictor.label()}, {choice.rule.label()}"
                      + (" (walk-forward)" if choice.scored_to is not None else " (defaults)"),
        "plan": dg.MetadataValue.md(markdown_table(decisions)),
    })


@dg.asset(
    group_name=KEEPER_GROUP, kinds={"duckdb"}, deps=[keeper_cycle],
    description="The keeper's performance block (spec §8): estimated APY, realised 7-day APY, break-even "
    "progress, positions, margin, minimum health factor, funding win rate and payment metrics.",
)
def keeper_performance(duckdb: FundarbDuckDB, trading: KeeperTrading) -> dg.MaterializeResult:
    with trading.trading_db(duckdb.database) as tconn:
        perf = DuckDBLedgerStore(tconn).query("SELECT ts, metrics FROM performance_snapshots ORDER BY ts DESC LIMIT 1")
    if perf.empty:
        return dg.MaterializeResult(metadata={"note": "no cycle has run yet"})
    row = {"as_of": str(perf["ts"].iloc[0]), **json.loads(perf["metrics"].iloc[0])}
    meta: dict[str, dg.RawMetadataValue] = {}
    for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            meta[k] = float(v)
        else:
            meta[k] = str(v)
    return dg.MaterializeResult(metadata=meta)


keeper_assets = [keeper_cycle, keeper_performance]

keeper_job = dg.define_asset_job(
    name="keeper_job",
    # the whole group, so keeper_ledger_report (defined with the backtests) is refreshed by the job that
    # makes it stale
    selection=dg.AssetSelection.groups(KEEPER_GROUP),
    description="plan → execute → ledger → performance → ledger report, once (paper unless configured live).",
)
