"""Backtests as Dagster assets: the strategy comparison, the oracle bound, fee regimes and leverage safety.

Each asset is a thin wrapper over :mod:`fundarb_core.backtest`: it copies the raw rows known by the period's end
out of the DuckDB file (a short read under the resource's file lock), rebuilds the SQL models in memory, runs the
core function there, logs the report to MLflow (``fundarb/backtests``) and shows it as markdown metadata with the
plots embedded.  The asset's value is the report itself (Dagster's IO manager stores it), so a backtest never
writes to the shared DuckDB file and never waits for, or blocks, the ingestion writers.

Default period: the ``days`` before the last hour at which the keeper could trade — the latest hour with both a
funding rate and market data (open interest or a closed bar) — because after that the keeper has no liquidity
figure and plans nothing; ``start`` / ``end`` in the run config override it.
"""

import base64
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb as duckdb_lib
import pandas as pd
from pydantic import Field

from fundarb_core.backtest.assumptions import assumptions_markdown
from fundarb_core.backtest.engine import BacktestConfig, market_replica
from fundarb_core.backtest.leverage_safety import leverage_safety as run_leverage_safety
from fundarb_core.backtest.leverage_safety import safety_table
from fundarb_core.backtest.plots import leverage_sweep
from fundarb_core.backtest.report import comparison_table, estimated_vs_realised, ledger_view, markdown, summarise
from fundarb_core.backtest.suite import FEE_REGIMES, SuiteResult, fee_label, oracle_for, run_suite
from fundarb_core.backtest.tracking import log_report
from fundarb_core.forecast.registry import ForecastSettings
from fundarb_pipelines.assets.forecast import MlflowTracking
from fundarb_pipelines.metadata import markdown_table
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB
from fundarb_pipelines.trading import KeeperTrading

BACKTEST_GROUP = "backtest"
RAW_DEPS = ["funding_rates", "open_interest", "orderbook_depth", "candles"]


class BacktestRunConfig(dg.Config):
    """The period and universe of a backtest asset (the Launchpad form)."""

    start: str | None = Field(default=None, description="first hour (UTC); default: end − days")
    end: str | None = Field(default=None, description="end (exclusive, UTC); default: last tradable hour")
    days: int = Field(default=7, description="length of the default period")
    assets: list[str] | None = Field(default=None, description="restrict to these canonical assets")
    fee_bps: float | None = Field(default=None, description="flat fee per trade in bp; default: real schedules")
    capital_per_venue_usd: float = Field(default=10_000.0)
    gbm_trees: int = Field(default=200, description="LightGBM trees of the walk-forward forecasts")
    reports_dir: str = Field(default="data/reports", description="where the PNG plots are written")


def tradable_end(conn: duckdb_lib.DuckDBPyConnection) -> pd.Timestamp:
    """The latest whole hour with a funding rate and market data (open interest or a closed bar)."""
    row = conn.execute("""
        SELECT least((SELECT max(ts) FROM funding_rates),
                     greatest((SELECT max(ts) FROM open_interest),
                              (SELECT max(ts) + INTERVAL 1 HOUR FROM candles)))""").fetchall()[0][0]
    if row is None:
        raise ValueError("no funding rates or market data in the database: ingest first")
    return pd.Timestamp(row).floor("h")


def _period(conn: duckdb_lib.DuckDBPyConnection, cfg: BacktestRunConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    end = pd.Timestamp(cfg.end).floor("h") if cfg.end else tradable_end(conn)
    start = pd.Timestamp(cfg.start).floor("h") if cfg.start else end - pd.Timedelta(days=cfg.days)
    return start, end


def _base(cfg: BacktestRunConfig, start: pd.Timestamp, end: pd.Timestamp) -> BacktestConfig:
    return BacktestConfig(start=start, end=end, fee_bps=cfg.fee_bps, capital_per_venue_usd=cfg.capital_per_venue_usd,
                          assets=tuple(cfg.assets) if cfg.assets else None,
                          forecast=ForecastSettings(gbm_trees=cfg.gbm_trees))


def _replica(duckdb: FundarbDuckDB, base: BacktestConfig) -> duckdb_lib.DuckDBPyConnection:
    """The raw rows known by ``base.end`` (plus warm-up), models rebuilt, in memory: the file is read once."""
    with duckdb.get_connection() as conn:
        return market_replica(conn, base.start, base.end, base.warmup_hours)


def embedded(plots: dict[str, Path]) -> str:
    """PNG files as markdown images (data URIs), so the Dagster UI shows them in the asset's metadata."""
    parts = []
    for name, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"**{name}**\n\n![{name}](data:image/png;base64,{data})")
    return "\n\n".join(parts)


def _out_dir(cfg: BacktestRunConfig, name: str, start: pd.Timestamp, end: pd.Timestamp) -> Path:
    return Path(cfg.reports_dir) / name / f"{start:%Y%m%dT%H}-{end:%Y%m%dT%H}"


def _params(base: BacktestConfig) -> dict[str, object]:
    return {"start": str(base.start), "end": str(base.end), "fees": fee_label(base.fee_bps),
            "capital_per_venue_usd": base.capital_per_venue_usd, "assets": list(base.assets or []),
            "forecast_model": base.forecast_model, "gbm_trees": base.forecast.gbm_trees}


def _suite(context: dg.AssetExecutionContext, config: BacktestRunConfig, duckdb: FundarbDuckDB, name: str,
           fee_regimes: tuple[float | None, ...] | None = None,
           ) -> tuple[pd.Timestamp, pd.Timestamp, BacktestConfig, SuiteResult]:
    """Period, replica and :func:`run_suite` (strategies, or the keeper at each fee regime) for one asset."""
    with duckdb.get_connection() as conn:
        start, end = _period(conn, config)
    base = _base(config, start, end)
    src = _replica(duckdb, base)
    try:
        res = run_suite(src, base, fee_regimes=fee_regimes, out_dir=_out_dir(config, name, start, end),
                        progress=context.log.info)
    finally:
        src.close()
    return start, end, base, res


@dg.asset(group_name=BACKTEST_GROUP, deps=RAW_DEPS, kinds={"python", "mlflow"},
          description="The keeper (without and with walk-forward forecasts), the naive trailing-24h rule and the "
          "patient 336h rule, each "
          "replayed hour by hour through the keeper's cycle and the paper exchange, next to the cost-aware oracle.")
def strategy_backtest(context: dg.AssetExecutionContext, config: BacktestRunConfig, duckdb: FundarbDuckDB,
                      mlflow_tracking: MlflowTracking) -> dg.Output[list[dict[str, object]]]:
    start, end, base, res = _suite(context, config, duckdb, "strategy_backtest")
    report = "\n\n".join(markdown(s) for s in res.summaries)
    run_id = log_report("strategy_backtest", params=_params(base), summaries=res.summaries, plots=res.plots,
                        markdown=report, tracking_uri=mlflow_tracking.uri())
    table = comparison_table(res.summaries)
    return dg.Output(res.summaries, metadata={
        "period": f"{start} → {end}", "comparison": dg.MetadataValue.md(table.to_markdown(index=False)),
        "report": dg.MetadataValue.md(report), "plots": dg.MetadataValue.md(embedded(res.plots)),
        "assumptions": dg.MetadataValue.md(assumptions_markdown(res.summaries)),
        "equity_vs_oracle_png": dg.MetadataValue.path(str(res.plots["equity_vs_oracle"])),
        "mlflow_run_id": run_id, "forecast_rows": res.forecasts_rows})


@dg.asset(group_name=BACKTEST_GROUP, deps=RAW_DEPS, kinds={"python", "mlflow"},
          description="The cost-aware perfect-foresight bound: a dynamic programme over flat and every ordered "
          "venue pair per asset with the keeper's fees, spread and impact, per asset and for the keeper's slots.")
def oracle_bound(context: dg.AssetExecutionContext, config: BacktestRunConfig, duckdb: FundarbDuckDB,
                 mlflow_tracking: MlflowTracking) -> dg.Output[pd.DataFrame]:
    with duckdb.get_connection() as conn:
        start, end = _period(conn, config)
    base = _base(config, start, end)
    src = _replica(duckdb, base)
    try:
        res = oracle_for(src, base)
    finally:
        src.close()
    hours = (end - start) / pd.Timedelta(hours=1)
    metrics = {"slots_net_usd": res.slots_net_usd, "all_assets_net_usd": res.all_assets_net_usd}
    md = markdown_table(res.table.drop(columns=[c for c in ("value_per_unit",) if c in res.table]))
    run_id = log_report("oracle_bound", params=_params(base), metrics=metrics, markdown=md,
                        tables={"oracle_bound": res.table}, tracking_uri=mlflow_tracking.uri())
    context.log.info(f"oracle {start} → {end}: slots {res.slots_net_usd:,.2f} USD, all {res.all_assets_net_usd:,.2f}")
    return dg.Output(res.table, metadata={
        "period": f"{start} → {end}", "hours": hours, "slots_net_usd": res.slots_net_usd,
        "all_assets_net_usd": res.all_assets_net_usd,
        "per_asset": dg.MetadataValue.md(md), "mlflow_run_id": run_id})


@dg.asset(group_name=BACKTEST_GROUP, deps=RAW_DEPS, kinds={"python", "mlflow"},
          description="The keeper's backtest at 0, 1.44 and 4.5 bp per trade and at the venues' real schedules, "
          "each next to the oracle with the same fees.")
def fee_regimes(context: dg.AssetExecutionContext, config: BacktestRunConfig, duckdb: FundarbDuckDB,
                mlflow_tracking: MlflowTracking) -> dg.Output[list[dict[str, object]]]:
    start, end, base, res = _suite(context, config, duckdb, "fee_regimes", FEE_REGIMES)
    table = comparison_table(res.summaries)
    assumptions = assumptions_markdown(res.summaries)
    run_id = log_report("fee_regimes", params=_params(base), summaries=res.summaries, plots=res.plots,
                        markdown=table.to_markdown(index=False) + "\n\n" + assumptions,
                        tracking_uri=mlflow_tracking.uri())
    return dg.Output(res.summaries, metadata={
        "period": f"{start} → {end}", "regimes": dg.MetadataValue.md(table.to_markdown(index=False)),
        "assumptions": dg.MetadataValue.md(assumptions),
        "plots": dg.MetadataValue.md(embedded({k: v for k, v in res.plots.items() if k == "equity_vs_oracle"})),
        "mlflow_run_id": run_id})


class LeverageSafetyConfig(dg.Config):
    """Spec §8 (1): the K sweep over the last ``days`` of the finest bars per asset."""

    days: int = Field(default=30)
    ks: list[float] = Field(default_factory=lambda: [3.0, 4.0, 5.0, 6.0])
    assets: list[str] | None = Field(default=None)
    end: str | None = Field(default=None, description="window end (UTC); default: each asset's last bar")
    reports_dir: str = Field(default="data/reports")


@dg.asset(group_name=BACKTEST_GROUP, deps=["candles", "funding_rates"], kinds={"python", "mlflow"},
          description="Leverage safety backtest: σ-distance leverage per bar for K = 3…6 over 30 days of the "
          "finest bars, liquidation when the worst intra-bar move exceeds the margin; capital path with funding.")
def leverage_safety(context: dg.AssetExecutionContext, config: LeverageSafetyConfig, duckdb: FundarbDuckDB,
                    mlflow_tracking: MlflowTracking) -> dg.Output[pd.DataFrame]:
    with duckdb.get_connection() as conn:
        end: datetime | None = pd.Timestamp(config.end).to_pydatetime() if config.end else None
        runs = run_leverage_safety(conn, end=end, days=config.days, ks=tuple(config.ks), assets=config.assets)
    table = safety_table(runs)
    out = Path(config.reports_dir) / "leverage_safety"
    png = leverage_sweep(table, out / "leverage_sweep.png")
    md = markdown_table(table)
    run_id = log_report("leverage_safety", params={"days": config.days, "ks": list(config.ks)},
                        metrics={"liquidated_runs": float(table["liquidated"].sum()) if len(table) else 0.0},
                        plots={"leverage_sweep": png}, markdown=md, tables={"leverage_safety": table},
                        tracking_uri=mlflow_tracking.uri())
    context.log.info(f"leverage safety: {len(table)} runs, {int(table['liquidated'].sum()) if len(table) else 0} "
                     "liquidated")
    return dg.Output(table, metadata={"table": dg.MetadataValue.md(md),
                                      "plot": dg.MetadataValue.md(embedded({"leverage_sweep": png})),
                                      "mlflow_run_id": run_id})


@dg.asset(group_name="keeper", deps=["keeper_cycle"], pool=DUCKDB_POOL, kinds={"duckdb"},
          description="The backtest report for the keeper's realised ledger (paper or live): the same figures as "
          "a backtest, from what was actually filled and paid, and per position the funding and costs the plan "
          "expected against what was realised.")
def keeper_ledger_report(duckdb: FundarbDuckDB, trading: KeeperTrading) -> dg.Output[dict[str, object]]:
    with trading.trading_db(duckdb.database) as tconn, duckdb.get_connection() as conn:
        view = ledger_view(tconn, conn)
        perf = tconn.execute("SELECT avg(estimated_apy), avg(realised_apy_7d) FROM performance_snapshots "
                             "WHERE estimated_apy IS NOT NULL").fetchall() if view is not None else []
    if view is None:
        return dg.Output({}, metadata={"note": "the keeper has not run on this database yet"})
    summary = summarise(view)
    evr = estimated_vs_realised(view)
    est, real = (perf[0] if perf else (None, None))
    return dg.Output(summary, metadata={
        "report": dg.MetadataValue.md(markdown(summary)),
        "estimated_vs_realised": dg.MetadataValue.md(markdown_table(evr)),
        "mean_estimated_apy": float(est) if est is not None else float("nan"),
        "mean_realised_apy_7d": float(real) if real is not None else float("nan"),
        "positions": len(view.positions), "net_pnl_usd": float(summary["net_pnl"])})


backtest_assets = [strategy_backtest, oracle_bound, fee_regimes, leverage_safety, keeper_ledger_report]
backtest_job = dg.define_asset_job("backtest_job", selection=dg.AssetSelection.groups(BACKTEST_GROUP),
                                   description="Every backtest report on the default period (run config to change it).")
