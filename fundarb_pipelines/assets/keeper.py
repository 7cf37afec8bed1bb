"""The keeper as Dagster assets: one cycle (reconcile → plan → execute → ledger) and its performance.

``keeper_job`` materialises both; the sensor in ``sensors.py`` launches it when fresh inputs land.
The plan (every candidate considered and why it was taken or rejected) and the performance block
are asset metadata, so the UI shows what the keeper saw and did.  Paper mode is the default; live
mode (``CcxtExchange``: real venues through ccxt, keys only from the environment) needs the run config
*and* ``FUNDARB_LIVE=1``.
"""

import json
import os
from datetime import datetime

import dagster as dg
import duckdb as duckdb_lib
import pandas as pd
from pydantic import Field

from fundarb_core.keeper.config import KeeperConfig
from fundarb_core.keeper.cycle import run_cycle
from fundarb_core.keeper.exchange import ExchangeAdapter, PaperExchange
from fundarb_pipelines.metadata import markdown_table
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB

KEEPER_GROUP = "keeper"
LIVE_ENV = "FUNDARB_LIVE"


class KeeperRunConfig(dg.Config):
    """Run config of one keeper cycle (the Launchpad form in the UI)."""

    mode: str = Field(default="paper", description="paper | live (live also needs FUNDARB_LIVE=1)")
    dry_run: bool = Field(default=False, description="plan and record decisions, send no orders")
    capital_usd_per_venue: float = Field(default=10_000.0, description="paper wallet per venue on first use")
    max_position_size_usd: float = Field(default=10_000.0)
    as_of: str | None = Field(default=None, description="cycle time (UTC); default: the data's latest hour")
    live_venues: list[str] = Field(default_factory=lambda: ["binance", "hyperliquid"],
                                   description="venues traded in live mode (keys from FUNDARB_<VENUE>_* env vars)")


def _as_of(conn: duckdb_lib.DuckDBPyConnection, configured: str | None) -> datetime:
    if configured:
        return pd.Timestamp(configured).tz_localize(None).to_pydatetime()
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


@dg.asset(
    group_name=KEEPER_GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "python"},
    deps=["funding_rates", "spread_panel", "regime_labels", "funding_forecasts"],
    description="One keeper cycle: reconcile with the venues, repair single legs, health actions, plan, at most "
    "one entry or switch, all recorded in the ledger tables (ledger_*, cycle_decisions).",
)
def keeper_cycle(context: dg.AssetExecutionContext, config: KeeperRunConfig, duckdb: FundarbDuckDB) -> (
    dg.MaterializeResult
):
    if config.mode not in ("paper", "live"):
        raise dg.Failure(f"unknown keeper mode {config.mode!r}; expected paper or live")
    if config.mode == "live" and os.environ.get(LIVE_ENV) != "1":
        raise dg.Failure(f"live mode needs {LIVE_ENV}=1 in the environment as well as mode=live")
    kcfg = KeeperConfig(max_position_size_usd=config.max_position_size_usd)
    with duckdb.get_connection() as conn:
        now = _as_of(conn, config.as_of)
        exchange: ExchangeAdapter
        if config.mode == "live":
            from fundarb_core.keeper.ccxt_exchange import CcxtExchange  # real venues, keys from the environment

            exchange = CcxtExchange(venues=config.live_venues)
            venues: list[str] | None = list(config.live_venues)
        else:
            all_venues = [r[0] for r in conn.execute("SELECT DISTINCT venue FROM funding_rates").fetchall()]
            exchange = PaperExchange(conn, config=kcfg, now=now,
                                     initial_balances={v: config.capital_usd_per_venue for v in all_venues})
            venues = None
        report = run_cycle(conn, exchange, kcfg, now, forecasts=_forecasts(conn), dry_run=config.dry_run,
                           venues=venues)
        decisions = conn.execute(
            "SELECT stage, asset, short_venue, long_venue, valid, taken, reason, score, size_usd, break_even_hours, "
            "expected_apy FROM cycle_decisions WHERE cycle_ts = ? ORDER BY taken DESC, score DESC NULLS LAST LIMIT 25",
            [now],
        ).df() if report.decisions else pd.DataFrame()
    context.log.info(f"keeper cycle at {now}: {report.action} ({report.reason})")
    return dg.MaterializeResult(metadata={
        "as_of": str(now),
        "mode": config.mode + (" (dry run)" if config.dry_run else ""),
        "action": report.action,
        "reason": report.reason,
        "position_id": report.position_id or "-",
        "orders": len(report.orders),
        "events": dg.MetadataValue.md("\n".join(f"- {e}" for e in report.events) or "(none)"),
        "paused": ", ".join(report.paused) or "-",
        "plans_considered": report.decisions,
        "plan": dg.MetadataValue.md(markdown_table(decisions)),
    })


@dg.asset(
    group_name=KEEPER_GROUP, pool=DUCKDB_POOL, kinds={"duckdb"}, deps=[keeper_cycle],
    description="The keeper's performance block (spec §8): estimated APY, realised 7-day APY, break-even "
    "progress, positions, margin, minimum health factor, funding win rate and payment metrics.",
)
def keeper_performance(duckdb: FundarbDuckDB) -> dg.MaterializeResult:
    with duckdb.get_connection() as conn:
        perf = conn.execute("SELECT ts, metrics FROM performance_snapshots ORDER BY ts DESC LIMIT 1").fetchall()
    if not perf:
        return dg.MaterializeResult(metadata={"note": "no cycle has run yet"})
    row = {"as_of": str(perf[0][0]), **json.loads(perf[0][1])}
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
