"""Benchmark: the strategy backtest over the bundled data — hours × assets simulated per second.

The backtest replays every hour through the keeper's real cycle (:func:`fundarb_core.execution.cycle.run_cycle`)
against the paper exchange on a private replica, so its cost is the keeper's own per-cycle cost (DuckDB reads
for the snapshot and the venues' state, ledger writes) times the hours.  Measured here: the replica build (raw
rows copied, SQL models rebuilt), the hourly loop, the cost-aware oracle for the same period, and the peak RSS.
``assets`` counts the canonical assets with a funding rate in the period (every one is in each cycle's
snapshot).  Goal of the issue: a year of hourly data for every asset in under a minute on 2 cores; the figure
``year_seconds`` extrapolates the measured hourly rate to 8,760 hours.

    .venv/bin/python bench/backtest.py [--db data/fundarb.duckdb] [--start 2025-03-10] [--end 2026-05-01]
                                       [--strategy keeper]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import duckdb
import pandas as pd

from fundarb_core.backtest.engine import BacktestConfig, market_replica, run_backtest
from fundarb_core.backtest.report import summarise
from fundarb_core.backtest.suite import oracle_for

DEFAULT_DB = Path(__file__).resolve().parent.parent / "data" / "fundarb.duckdb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=str(DEFAULT_DB), help="a database with the raw tables (fundarb run builds it)")
    ap.add_argument("--start", default="2025-03-10")
    ap.add_argument("--end", default="2026-05-01")
    ap.add_argument("--strategy", default="keeper", choices=["keeper", "naive"])
    args = ap.parse_args()

    cfg = BacktestConfig(start=pd.Timestamp(args.start), end=pd.Timestamp(args.end), strategy=args.strategy)
    hours = len(cfg.hours)
    with duckdb.connect(args.db, read_only=True) as conn:
        t0 = time.perf_counter()
        replica = market_replica(conn, cfg.start, cfg.end, cfg.warmup_hours)
        replica_s = time.perf_counter() - t0
        assets = int(replica.execute("SELECT count(DISTINCT asset) FROM funding_rates WHERE ts >= ? AND ts <= ?",
                                     [cfg.start.to_pydatetime(), cfg.end.to_pydatetime()]).fetchall()[0][0])
        replica.close()
        t0 = time.perf_counter()
        oracle = oracle_for(conn, cfg)
        oracle_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = run_backtest(conn, cfg)
        run_s = time.perf_counter() - t0
    s = summarise(run.view(), oracle.slots_net_usd, oracle.all_assets_net_usd)
    cells = hours * assets
    figures = {
        "strategy": args.strategy, "start": str(cfg.start), "end": str(cfg.end), "hours": hours, "assets": assets,
        "replica_s": round(replica_s, 2), "backtest_s": round(run_s, 1), "oracle_s": round(oracle_s, 2),
        "ms_per_hour": round(1000 * run_s / hours, 1), "hour_assets_per_s": round(cells / run_s, 1),
        "year_seconds": round(run_s / hours * 8760, 1), "goal_seconds": 60.0,
        "year_over_goal": round(run_s / hours * 8760 / 60.0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "positions_opened": s["positions_opened"], "net_apr": round(s["net_apr"], 4),
        "capture_ratio": None if s["capture_ratio"] is None else round(s["capture_ratio"], 4),
    }
    print(f"{hours:,} hours × {assets} assets ({cfg.start} → {cfg.end}), strategy {args.strategy}")
    print(f"replica (raw rows + SQL models): {replica_s:.1f} s; oracle: {oracle_s:.2f} s")
    print(f"backtest: {run_s:.1f} s = {figures['ms_per_hour']} ms per hour = {figures['hour_assets_per_s']:,} "
          f"hour·assets/s; a year would take {figures['year_seconds']} s ({figures['year_over_goal']}x the 60 s goal)")
    print(f"peak RSS {figures['peak_rss_mb']} MB; {s['positions_opened']} positions, net APR {s['net_apr']:.2%}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
