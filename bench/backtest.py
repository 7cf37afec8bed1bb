"""Benchmark: the strategy backtest's fast simulator — a year of hourly keeper cycles for every bundled asset.

The backtest replays every hour through the keeper's real cycle (:func:`fundarb_core.execution.cycle.run_cycle`)
against the paper venue, with the market read once as a tape and the ledger in memory (the path the equivalence
test proves identical to the DuckDB-backed trading path).  Measured, each over the same hours:

* all assets: wall time split into the replica (raw rows copied, the keeper's SQL models rebuilt on them), the
  market read (one query set for every hour) and the hourly loop; peak RSS; the ratio to the 952 s the previous
  engine took for the same 10,008 hours × 32 assets, and to the 60 s goal;
* half the assets (every other one, sorted): the loop's time per hour·asset at 1× and 2× assets, and their ratio
  (1.0 = cost linear in assets);
* the all-assets run again: its figures must be identical (determinism), printed as ``deterministic``.

    .venv/bin/python bench/backtest.py [--db data/fundarb.duckdb] [--start 2025-03-10] [--end 2026-05-01]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time
from pathlib import Path

import duckdb
import pandas as pd

from fundarb_core.backtest.engine import BacktestConfig, BacktestRun, run_backtest

DEFAULT_DB = Path(__file__).resolve().parent.parent / "data" / "fundarb.duckdb"
PREVIOUS_ENGINE_S = 952.0  # bench/backtest.py before the fast simulator: 10,008 h × 32 assets
GOAL_S = 60.0


def digest(run: BacktestRun) -> str:
    """A fingerprint of everything the run produced (equity, positions, fills, funding)."""
    h = hashlib.sha256()
    h.update(run.equity.to_numpy().tobytes())
    for frame in (run.positions, run.fills, run.funding):
        h.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def timed(conn: duckdb.DuckDBPyConnection, cfg: BacktestConfig) -> tuple[BacktestRun, float]:
    t0 = time.perf_counter()
    run = run_backtest(conn, cfg)
    return run, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=str(DEFAULT_DB), help="a database with the raw tables (fundarb run builds it)")
    ap.add_argument("--start", default="2025-03-10")
    ap.add_argument("--end", default="2026-05-01")
    args = ap.parse_args()

    with duckdb.connect(args.db, read_only=True) as conn:
        assets = tuple(sorted(r[0] for r in conn.execute(
            "SELECT DISTINCT asset FROM funding_rates WHERE ts >= ? AND ts < ?",
            [pd.Timestamp(args.start).to_pydatetime(), pd.Timestamp(args.end).to_pydatetime()]).fetchall()))
        full_cfg = BacktestConfig(start=pd.Timestamp(args.start), end=pd.Timestamp(args.end))
        half_cfg = BacktestConfig(start=full_cfg.start, end=full_cfg.end, assets=assets[::2])
        full, full_s = timed(conn, full_cfg)
        half, half_s = timed(conn, half_cfg)
        again, _ = timed(conn, full_cfg)
    hours = len(full_cfg.hours)
    per_cell_full = full.phases["loop"] / (hours * len(assets))
    per_cell_half = half.phases["loop"] / (hours * len(half_cfg.assets or ()))
    figures = {
        "start": str(full_cfg.start), "end": str(full_cfg.end), "hours": hours, "assets": len(assets),
        "wall_s": round(full_s, 1), "replica_s": round(full.phases["replica"], 1),
        "market_read_s": round(full.phases["market_read"], 1), "loop_s": round(full.phases["loop"], 1),
        "ms_per_hour": round(1000 * full.phases["loop"] / hours, 2),
        "ratio_to_previous_engine": round(PREVIOUS_ENGINE_S / full_s, 1), "goal_s": GOAL_S,
        "within_goal": full_s <= GOAL_S,
        "half_assets": len(half_cfg.assets or ()), "half_wall_s": round(half_s, 1),
        "half_loop_s": round(half.phases["loop"], 1),
        "loop_us_per_hour_asset_1x": round(1e6 * per_cell_half, 1),
        "loop_us_per_hour_asset_2x": round(1e6 * per_cell_full, 1),
        "scaling_ratio_2x_over_1x": round(per_cell_full / per_cell_half, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "positions": len(full.positions), "fills": len(full.fills), "funding_payments": len(full.funding),
        "final_equity_usd": round(float(full.equity.iloc[-1]), 2),
        "digest": digest(full), "deterministic": digest(full) == digest(again),
    }
    print(f"{hours:,} hours × {len(assets)} assets ({full_cfg.start} → {full_cfg.end})")
    print(f"wall {full_s:.1f} s = replica {figures['replica_s']} s + market read {figures['market_read_s']} s + "
          f"hourly loop {figures['loop_s']} s ({figures['ms_per_hour']} ms per hour); "
          f"{figures['ratio_to_previous_engine']}x faster than the previous engine's {PREVIOUS_ENGINE_S:.0f} s; "
          f"goal {GOAL_S:.0f} s: {'met' if figures['within_goal'] else 'NOT met'}")
    print(f"loop per hour·asset: {figures['loop_us_per_hour_asset_1x']} µs with {figures['half_assets']} assets, "
          f"{figures['loop_us_per_hour_asset_2x']} µs with {len(assets)} (ratio {figures['scaling_ratio_2x_over_1x']})")
    print(f"peak RSS {figures['peak_rss_mb']} MB; {len(full.positions)} positions, {len(full.fills)} fills, "
          f"{len(full.funding)} funding payments; two runs identical: {figures['deterministic']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
