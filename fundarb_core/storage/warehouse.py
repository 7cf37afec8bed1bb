"""DuckDB storage of the raw tables: schema creation and transactional, idempotent upserts.

Functions take an open ``duckdb`` connection so they work the same under Dagster's
``DuckDBResource``, the CLI and tests.  Timestamps are stored as naive ``TIMESTAMP`` in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import pandas as pd

from fundarb_core.schema import RAW_TABLES, REJECTED_ROWS_DDL, TableSpec


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN`` … ``COMMIT``, or ``ROLLBACK`` on any error: every project write to DuckDB goes through this,
    so a failure (or a kill) never leaves half a batch behind."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every raw table (and ``rejected_rows``) if missing."""
    for spec in RAW_TABLES.values():
        conn.execute(spec.ddl())
    conn.execute(REJECTED_ROWS_DDL)


def _naive_utc(ts: pd.Series) -> pd.Series:
    t = pd.to_datetime(ts, utc=True)
    return t.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")


@dataclass(frozen=True)
class WriteResult:
    """Rows upserted into the table and into ``rejected_rows`` by one transaction."""

    written: int
    rejected: int


def upsert(
    conn: duckdb.DuckDBPyConnection, spec: TableSpec, rows: pd.DataFrame, rejected: pd.DataFrame
) -> WriteResult:
    """Upsert accepted rows and their rejects in one transaction.

    Keyed by the table's primary key, so writing the same batch twice leaves identical rows;
    either both writes land or neither does (a failure rolls back), so a crash never leaves a
    half-written partition.
    """
    data = rows.loc[:, list(spec.columns)].copy()
    data["ts"] = _naive_utc(data["ts"])
    rej = rejected.copy()
    rej["ts"] = _naive_utc(rej["ts"]) if not rej.empty else pd.Series(dtype="datetime64[us]")
    cols = ", ".join(spec.columns)
    with transaction(conn):
        if not data.empty:
            conn.register("_fundarb_batch", data)
            conn.execute(f"INSERT OR REPLACE INTO {spec.name} ({cols}) SELECT {cols} FROM _fundarb_batch")
            conn.unregister("_fundarb_batch")
        if not rej.empty:
            conn.register("_fundarb_rejects", rej)
            conn.execute(
                "INSERT OR REPLACE INTO rejected_rows "
                "SELECT row_key, raw_table, venue, venue_symbol, ts, field, value, reason, record "
                "FROM _fundarb_rejects"
            )
            conn.unregister("_fundarb_rejects")
    return WriteResult(written=len(data), rejected=len(rej))


def table_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every raw table and of ``rejected_rows``."""
    names = [*RAW_TABLES, "rejected_rows"]
    return {n: int(conn.execute(f"SELECT count(*) FROM {n}").fetchall()[0][0]) for n in names}
