"""Benchmark: full replay ingestion of the bundled data into a fresh DuckDB file.

Prints rows/s and peak memory of the first (cold) ingestion, the time of a second, idempotent
run over the same data, and ends with one JSON line of the figures.

    .venv/bin/python bench/ingest.py [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from fundarb_core.ingest import ingest_table
from fundarb_core.schema import RAW_TABLES
from fundarb_core.sources.replay import ReplaySource
from fundarb_core.storage import table_counts

WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def ingest_all(db: Path, source: ReplaySource) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = 0
    with duckdb.connect(str(db)) as conn:
        for table in RAW_TABLES:
            rows += ingest_table(conn, source, table, *WINDOW).rows_written
    return time.perf_counter() - t0, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="canonical-layout directory (default: bundled)")
    args = parser.parse_args()
    source = ReplaySource(args.data)
    for t in RAW_TABLES:  # parquet read once, outside the timing: we time ingestion, not disk
        source.table(t)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        cold_s, rows = ingest_all(db, source)
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rerun_s, rows2 = ingest_all(db, source)
        with duckdb.connect(str(db), read_only=True) as conn:
            counts = table_counts(conn)
        size_mb = db.stat().st_size / 2**20
    figures = {
        "rows": rows,
        "cold_s": round(cold_s, 3),
        "rows_per_s": round(rows / cold_s),
        "rerun_s": round(rerun_s, 3),
        "rerun_over_cold": round(rerun_s / cold_s, 2),
        "python_peak_mb": round(py_peak / 2**20, 1),
        "process_peak_rss_mb": round(rss1, 1),
        "rss_growth_mb": round(rss1 - rss0, 1),
        "duckdb_file_mb": round(size_mb, 1),
        "rerun_rows_equal": rows2 == rows and sum(v for k, v in counts.items() if k != "rejected_rows") == rows,
    }
    print(f"full replay ingestion: {rows:,} rows in {cold_s:.2f} s = {figures['rows_per_s']:,} rows/s")
    print(f"idempotent re-run:     {rerun_s:.2f} s ({figures['rerun_over_cold']}x the cold run), rows unchanged: "
          f"{figures['rerun_rows_equal']}")
    print(f"memory: python peak {figures['python_peak_mb']} MB, process peak RSS {figures['process_peak_rss_mb']} MB "
          f"(+{figures['rss_growth_mb']} MB during ingestion); DuckDB file {figures['duckdb_file_mb']} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
