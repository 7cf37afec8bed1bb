"""Backtests as a researcher runs them: strategies side by side against the oracle, fee regimes, plots.

Why a suite module: the CLI (``fundarb backtest``), the Dagster assets and the benchmark must report the same
numbers for the same inputs, so the steps — walk-forward forecasts, one :func:`run_backtest` per strategy, the
cost-aware oracle with the same fees, :func:`summarise`, plots — live here once.
"""

from __future__ import annotations

import copyreg
import multiprocessing
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import pandas as pd

from fundarb_core.backtest import plots
from fundarb_core.backtest.capacity import capacity_bound, capacity_slots
from fundarb_core.backtest.engine import (
    REPLICA_TABLES,
    STRATEGIES,
    BacktestConfig,
    BacktestRun,
    Strategy,
    market_replica,
    run_backtest,
    traded_venues,
)
from fundarb_core.backtest.forecasts import backtest_forecasts
from fundarb_core.backtest.horizon_inputs import DATA_EPOCH
from fundarb_core.backtest.oracle import oracle_bound, oracle_inputs, solve
from fundarb_core.backtest.report import summarise
from fundarb_core.storage.market_queries import spread_history

FEE_REGIMES: tuple[float | None, ...] = (0.0, 1.44, 4.5, None)
"""Spec §2's report regimes (0, 1.44 and 4.5 bp per trade) and ``None`` = the venues' real schedules."""


def fee_label(fee_bps: float | None) -> str:
    return "real fees" if fee_bps is None else f"{fee_bps:g} bp"


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


copyreg.pickle(MappingProxyType, lambda m: (_mapping_proxy, (dict(m),)))
"""Configs hold read-only mappings (fee overrides); worker processes receive configs and return runs by pickle."""


@dataclass
class OracleResult:
    """The cost-aware perfect-foresight bound for one fee regime (per asset, and its P&L curve)."""

    table: pd.DataFrame  # oracle_bound's rows
    slots_net_usd: float  # the dedicated-slots bound (the capture ratio's denominator)
    all_assets_net_usd: float  # every asset held at full size: the looser bound
    curve: pd.Series  # cumulative net P&L (USD) of the slots bound over the period
    capacity_net_usd: float = 0.0  # the bound at the keeper's collateral capacity (backtest.capacity)
    capacity_slots: float = 0.0


@dataclass
class SuiteResult:
    """Runs, summaries, oracles (one per fee regime used) and plot files."""

    runs: list[BacktestRun]
    summaries: list[dict[str, Any]]
    oracles: dict[str, OracleResult]
    plots: dict[str, Path] = field(default_factory=dict)
    forecasts_rows: int = 0


def _venues(conn: duckdb.DuckDBPyConnection, cfg: BacktestConfig) -> tuple[str, ...]:
    return cfg.venues or traded_venues(conn, cfg.start, cfg.end)


def oracle_for(conn: duckdb.DuckDBPyConnection, cfg: BacktestConfig) -> OracleResult:
    """The oracle with ``cfg``'s fees, half spread, size cap (the keeper's ``max_position_size_usd``) and
    ``max_positions`` slots, over ``cfg``'s period, venues and assets."""
    venues = _venues(conn, cfg)
    kcfg = cfg.keeper_config(venues)
    kw: dict[str, Any] = {"size_usd": kcfg.max_position_size_usd, "half_spread_bps": cfg.half_spread_bps,
                          "assets": list(cfg.assets) if cfg.assets else None, "venues": list(venues)}
    table = oracle_bound(conn, cfg.start, cfg.end, kcfg, slots=kcfg.max_positions, **kw)
    inputs = oracle_inputs(conn, cfg.start, cfg.end, kcfg, **kw)
    in_slots = set(table.loc[table["in_slots"], "asset"].astype(str)) if len(table) else set()
    curve = pd.Series(0.0, index=cfg.hours.append(pd.DatetimeIndex([cfg.end])))
    for asset in sorted(in_slots):
        frame = solve(inputs[asset]).frame(inputs[asset])
        cum = pd.Series(frame["cum_value"].to_numpy() * kcfg.max_position_size_usd,
                        index=pd.DatetimeIndex(frame["hour"]) + pd.Timedelta(hours=1))  # earned by h + 1
        curve = curve.add(cum.reindex(curve.index).ffill().fillna(0.0), fill_value=0.0)
    slots = float(table.loc[table["in_slots"], "net_usd"].sum()) if len(table) else 0.0
    cap_slots = capacity_slots(cfg.capital_per_venue_usd * len(venues), kcfg)
    return OracleResult(table=table, slots_net_usd=slots,
                        all_assets_net_usd=float(table["net_usd"].clip(lower=0).sum()) if len(table) else 0.0,
                        curve=curve, capacity_net_usd=capacity_bound(table, cap_slots), capacity_slots=cap_slots)


def best_spreads(conn: duckdb.DuckDBPyConnection, cfg: BacktestConfig) -> pd.DataFrame:
    """Per asset and hour, the best observed ordered-pair spread (APR) a keeper saw: the heat map's input."""
    params: dict[str, object] = {"a": cfg.start.to_pydatetime(), "b": cfg.end.to_pydatetime()}
    where = ""
    if cfg.assets:
        where = " AND asset IN (SELECT unnest($assets))"
        params["assets"] = list(cfg.assets)
    return conn.execute(
        "SELECT hour, asset, max(observed_spread_per_hour) * 8760 AS spread_apr FROM spread_panel "
        f"WHERE hour >= $a AND hour < $b AND observed_spread_per_hour IS NOT NULL{where} GROUP BY ALL ORDER BY ALL",
        params).df()


def run_suite(
    conn: duckdb.DuckDBPyConnection, base: BacktestConfig, strategies: Sequence[Strategy] = STRATEGIES,
    fee_regimes: Sequence[float | None] | None = None, out_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    on_hour: Callable[[pd.Timestamp, int, int], None] | None = None, workers: int = 1, grid: bool = False,
) -> SuiteResult:
    """Every strategy at ``base``'s fees (or ``base.strategy`` at every fee regime; with ``grid`` every strategy at
    every fee regime, regime by regime), each next to the oracle.

    Forecasts for ``keeper_forecast`` are walk-forward over the period, computed once.  With ``out_dir`` the
    plots are written there: equity vs oracle, drawdown, best-spread heat map and the first run's positions
    (with ``grid`` also every policy against the oracle, one panel per fee regime).  ``progress`` hears each
    stage; ``on_hour`` each replayed hour of each run (for a progress bar; with workers, a run's hours at once
    when it finishes).  ``workers`` > 1 runs the backtests in that many processes (:func:`run_many`).
    """
    say = progress or (lambda _m: None)
    if grid:
        configs = [replace(base, strategy=st, fee_bps=f) for f in (fee_regimes or FEE_REGIMES) for st in strategies]
    elif fee_regimes is not None:
        configs = [replace(base, fee_bps=f) for f in fee_regimes]
    else:
        configs = [replace(base, strategy=st) for st in strategies]
    forecasts = None
    if any(c.strategy == "keeper_forecast" for c in configs):
        say(f"walk-forward {base.forecast_model} forecasts {base.start} → {base.end}")
        forecasts = backtest_forecasts(conn, base)
    oracles: dict[str, OracleResult] = {}

    def oracles_for_all() -> None:
        for cfg in configs:
            key = fee_label(cfg.fee_bps)
            if key not in oracles:
                say(f"oracle ({key})")
                oracles[key] = oracle_for(conn, cfg)

    runs = run_many(conn, configs, forecasts, workers=workers, progress=say, on_hour=on_hour,
                    meanwhile=oracles_for_all)
    summaries = []
    for cfg, run in zip(configs, runs, strict=True):
        o = oracles[fee_label(cfg.fee_bps)]
        s = summarise(run.view(), o.slots_net_usd, o.all_assets_net_usd)
        s["seconds"] = run.seconds
        s["capture_capacity"] = s["net_pnl"] / o.capacity_net_usd if o.capacity_net_usd > 0 else float("nan")
        s["parameters"] = [{k: (str(v) if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
                           for r in run.parameters.to_dict("records")]
        s["strategy"], s["fee_bps"] = cfg.strategy, cfg.fee_bps
        summaries.append(s)
    result = SuiteResult(runs=runs, summaries=summaries, oracles=oracles,
                         forecasts_rows=0 if forecasts is None else len(forecasts))
    if out_dir is not None:
        result.plots = write_plots(conn, result, base, Path(out_dir))
    return result


HISTORY_TABLE = "spread_panel"
"""The spread history a worker's horizon runs search their parameters on (the rows ``spread_history`` reads)."""


def _replica_file(conn: duckdb.DuckDBPyConnection, base: BacktestConfig, path: Path) -> None:
    """The raw rows every run of ``base``'s period copies (:func:`market_replica`, no model built), as a DuckDB
    file the workers attach read-only: the caller's connection never crosses a process boundary."""
    mem = market_replica(conn, base.start, base.end, base.warmup_hours, models=())
    try:
        mem.execute(f"ATTACH '{path}' AS out")
        for table in REPLICA_TABLES:
            mem.execute(f"CREATE TABLE out.{table} AS SELECT * FROM {table}")
        # the horizon keeper's parameter search reads every spread before the period (horizon_inputs)
        history = spread_history(conn, DATA_EPOCH, base.end.to_pydatetime())
        mem.register("_history", history)
        mem.execute(f"CREATE TABLE out.{HISTORY_TABLE} AS SELECT * FROM _history")
        mem.unregister("_history")
        mem.execute("DETACH out")
    finally:
        mem.close()


def _run_in_worker(path: str, cfg: BacktestConfig, forecasts: pd.DataFrame | None) -> BacktestRun:
    """One backtest in a worker process, on its own in-memory copy of the exported raw rows."""
    conn = duckdb.connect(":memory:", config={"threads": 1})
    try:
        conn.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
        for table in (*REPLICA_TABLES, HISTORY_TABLE):
            conn.execute(f"CREATE TABLE {table} AS SELECT * FROM src.{table}")
        conn.execute("DETACH src")
        return run_backtest(conn, cfg, forecasts=forecasts)
    finally:
        conn.close()


def run_many(conn: duckdb.DuckDBPyConnection, configs: Sequence[BacktestConfig], forecasts: pd.DataFrame | None,
             workers: int = 1, progress: Callable[[str], None] | None = None,
             on_hour: Callable[[pd.Timestamp, int, int], None] | None = None,
             meanwhile: Callable[[], None] | None = None) -> list[BacktestRun]:
    """:func:`run_backtest` for every config (same period), in order; ``meanwhile`` runs in this process while
    the workers replay.

    Runs are independent, so with ``workers`` > 1 they go to a process pool: the raw rows of the period are
    exported once to a temporary DuckDB file (:func:`_replica_file`), each worker copies them into its own
    in-memory database and rebuilds its replica from them.  A replica is built from the same rows in the same
    total order either way, so a run's result does not depend on where it ran (the determinism test compares
    both paths).  Processes are spawned, not forked: a fork would copy DuckDB's and the BLAS pools' threads
    mid-flight.
    """
    say = progress or (lambda _m: None)
    if workers <= 1 or len(configs) <= 1:
        if meanwhile is not None:
            meanwhile()
        runs = []
        for cfg in configs:
            say(f"backtest {cfg.label()}")
            runs.append(run_backtest(conn, cfg, forecasts=forecasts, progress=on_hour))
        return runs
    base = configs[0]
    if any((c.start, c.end, c.warmup_hours) != (base.start, base.end, base.warmup_hours) for c in configs):
        raise ValueError("run_many runs one period: every config must share start, end and warm-up")
    with tempfile.TemporaryDirectory(prefix="fundarb-suite-") as tmp:
        path = str(Path(tmp) / "replica.duckdb")
        _replica_file(conn, base, Path(path))
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(configs)), mp_context=ctx) as pool:
            say(f"backtests of {len(configs)} runs in {min(workers, len(configs))} processes")
            futures: list[Future[BacktestRun]] = [
                pool.submit(_run_in_worker, path, c, forecasts if c.strategy == "keeper_forecast" else None)
                for c in configs]
            if meanwhile is not None:
                meanwhile()
            runs = []
            for cfg, fut in zip(configs, futures, strict=True):
                runs.append(fut.result())
                say(f"backtest {cfg.label()} done ({runs[-1].seconds:.0f} s)")
                if on_hour is not None:
                    hours = cfg.hours
                    for i, t in enumerate(hours):
                        on_hour(t, i + 1, len(hours))
    return runs


def write_plots(conn: duckdb.DuckDBPyConnection, result: SuiteResult, base: BacktestConfig,
                out: Path) -> dict[str, Path]:
    """The report's PNGs (module doc of :mod:`fundarb_core.backtest.plots`)."""
    out.mkdir(parents=True, exist_ok=True)
    pnl = {s["label"]: r.equity - r.capital_usd for r, s in zip(result.runs, result.summaries, strict=True)}
    first = next(iter(result.oracles.values()), None)
    capital = result.runs[0].capital_usd if result.runs else 0.0
    files = {
        "equity_vs_oracle": plots.equity_vs_oracle(pnl, first.curve if first else None, out / "equity_vs_oracle.png"),
        "drawdown": plots.drawdown(pnl, capital, out / "drawdown.png") if capital > 0 else None,
        "spread_heatmap": plots.spread_heatmap(best_spreads(conn, base), out / "spread_heatmap.png"),
    }
    grid = {fee_label(r.config.fee_bps) for r in result.runs}, {r.config.strategy for r in result.runs}
    if len(grid[0]) > 1 and len(grid[1]) > 1:
        files["policies_vs_oracle"] = plots.equity_vs_oracle_regimes(
            regime_curves(result), {k: o.curve for k, o in result.oracles.items()}, out / "policies_vs_oracle.png")
    if result.runs:
        files["positions"] = plots.positions_over_time(result.runs[0].positions, base.start, base.end,
                                                       out / "positions.png",
                                                       title=f"Positions — {result.summaries[0]['label']}")
    return {k: v for k, v in files.items() if v is not None}


def regime_curves(result: SuiteResult) -> dict[str, dict[str, pd.Series]]:
    """Cumulative net P&L of every run, by fee regime (the oracle's key) and policy label."""
    from fundarb_core.backtest.engine import STRATEGY_LABELS

    out: dict[str, dict[str, pd.Series]] = {}
    for run in sorted(result.runs, key=lambda r: (r.config.fee_bps is not None, r.config.fee_bps or 0.0)):
        key = fee_label(run.config.fee_bps)
        out.setdefault(key, {})[STRATEGY_LABELS[run.config.strategy]] = run.equity - run.capital_usd
    return out

