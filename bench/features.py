"""Benchmark: time and peak memory to build every SQL model (staging → marts, features, regime
labels) from the raw tables, for the bundled data (1×) and for the same real series replicated
to 10× the assets under new names (same values), to show how cost grows with size.

DuckDB runs with the project's memory limit (FUNDARB_DUCKDB_MEMORY, default 4GB), as under
Dagster.  Each scale runs in its own process so its peak RSS (DuckDB's native memory included) is its own.

    .venv/bin/python bench/features.py [--scales 1 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from fundarb_core.ingest import ingest_table
from fundarb_core.schema import RAW_TABLES
from fundarb_core.sources.replay import ReplaySource

WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def make_raw(db: Path, scale: int) -> int:
    """Ingest the bundled data, then add ``scale − 1`` copies of every series under new asset and
    symbol names (``BTC`` → ``BTCX1`` …): real values, more assets."""
    with duckdb.connect(str(db)) as conn:
        for table in RAW_TABLES:
            ingest_table(conn, ReplaySource(), table, *WINDOW)
        for table, spec in RAW_TABLES.items():
            cols = list(spec.columns)
            select = ", ".join(
                "venue_symbol || '~X{i}'" if c == "venue_symbol" else "asset || 'X{i}'" if c == "asset" else c
                for c in cols
            )
            for i in range(1, scale):
                conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select.format(i=i)} FROM {table} "
                             "WHERE NOT contains(venue_symbol, '~X')")
        return int(conn.execute("SELECT count(DISTINCT asset) FROM funding_rates").fetchall()[0][0])


def child(db: str) -> None:
    from fundarb_pipelines.resources import duckdb_memory_limit
    from fundarb_pipelines.sql_models import build_all

    with duckdb.connect(db) as conn:
        conn.execute(f"SET memory_limit = '{duckdb_memory_limit()}'")  # as the Dagster resource runs it
        raw_rows = sum(int(conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in RAW_TABLES)
        t0 = time.perf_counter()
        counts = build_all(conn)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "raw_rows": raw_rows, "model_rows": counts}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            db = Path(tmp) / f"x{scale}.duckdb"
            assets = make_raw(db, scale)
            out = subprocess.run([sys.executable, __file__, "--child", str(db)], capture_output=True, text=True,
                                 check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            r["assets"] = assets
            results[scale] = r
            total = sum(r["model_rows"].values())
            print(f"{scale:>3}x: {assets} assets, {r['raw_rows']:,} raw rows → {total:,} model rows "
                  f"in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
            rows = r["model_rows"]
            largest = ", ".join(f"{m} {rows[m]:,}" for m in sorted(rows, key=lambda m: -rows[m])[:3])
            print(f"      largest models: {largest}")
    figures: dict[str, float | int] = {}
    for scale, r in results.items():
        figures[f"x{scale}_seconds"] = round(r["seconds"], 2)
        figures[f"x{scale}_peak_rss_mb"] = round(r["peak_rss_mb"])
        figures[f"x{scale}_assets"] = r["assets"]
        figures[f"x{scale}_model_rows"] = sum(r["model_rows"].values())
    if 1 in results and len(results) > 1:
        top = max(results)
        figures["time_ratio"] = round(results[top]["seconds"] / results[1]["seconds"], 2)
        figures["memory_ratio"] = round(results[top]["peak_rss_mb"] / results[1]["peak_rss_mb"], 2)
        figures["size_ratio"] = top
        print(f"{top}x the assets: {figures['time_ratio']}x the time, {figures['memory_ratio']}x the peak memory")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
