"""DuckDB storage of the raw tables: schema creation and transactional, idempotent upserts.

Functions take an open ``duckdb`` connection so they work the same under Dagster's
``DuckDBResource``, the CLI and tests.  Timestamps are stored as naive ``TIMESTAMP`` in UTC.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from fundarb_core.errors import BusyError, DatabaseError
from fundarb_core.schema import DUPLICATE_ROWS_DDL, RAW_TABLES, REJECTED_ROWS_DDL, TableSpec


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
    """Create every raw table (and ``rejected_rows``, ``duplicate_rows``) if missing."""
    for spec in RAW_TABLES.values():
        conn.execute(spec.ddl())
    conn.execute(REJECTED_ROWS_DDL)
    conn.execute(DUPLICATE_ROWS_DDL)


def _naive_utc(ts: pd.Series) -> pd.Series:
    t = pd.to_datetime(ts, utc=True)
    return t.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")


@dataclass(frozen=True)
class WriteResult:
    """Rows upserted into the table and into ``rejected_rows`` by one transaction."""

    written: int
    rejected: int


def upsert(
    conn: duckdb.DuckDBPyConnection,
    spec: TableSpec,
    rows: pd.DataFrame,
    rejected: pd.DataFrame,
    duplicates: pd.DataFrame | None = None,
) -> WriteResult:
    """Upsert accepted rows, their rejects and the count of exact duplicates in one transaction.

    Keyed by the table's primary key, so writing the same batch twice leaves identical rows;
    either all writes land or none does (a failure rolls back), so a crash never leaves a
    half-written partition.  A batch with no accepted row (every row invalid, an empty window)
    still writes its rejects.
    """
    data = rows.loc[:, list(spec.columns)].copy() if not rows.empty else pd.DataFrame()
    if not data.empty:
        data["ts"] = _naive_utc(data["ts"])
    rej = rejected.copy()
    rej["ts"] = _naive_utc(rej["ts"]) if not rej.empty else pd.Series(dtype="datetime64[us]")
    dup = duplicates.copy() if duplicates is not None else pd.DataFrame()
    if not dup.empty:
        dup["ts"] = _naive_utc(dup["ts"])
    cols = ", ".join(spec.columns)
    with transaction(conn):
        if not dup.empty:
            conn.register("_fundarb_dups", dup)
            conn.execute(
                "INSERT OR REPLACE INTO duplicate_rows "
                "SELECT row_key, raw_table, venue, venue_symbol, ts, copies, record FROM _fundarb_dups"
            )
            conn.unregister("_fundarb_dups")
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


def duplicate_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Exact duplicate source rows per raw table (extra copies, stored once), 0 where the table is not there."""
    has = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'duplicate_rows'").fetchall()
    if not has:
        return {}
    return {t: int(n) for t, n in conn.execute(
        "SELECT raw_table, sum(copies) FROM duplicate_rows GROUP BY 1").fetchall()}


def table_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every raw table and of ``rejected_rows``."""
    names = [*RAW_TABLES, "rejected_rows"]
    return {n: int(conn.execute(f"SELECT count(*) FROM {n}").fetchall()[0][0]) for n in names}


DB_ENV = "FUNDARB_DUCKDB"
DB_WAIT_ENV = "FUNDARB_DB_WAIT_S"
DEFAULT_DB_WAIT_S = 120.0
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<cmd>.+?) \(PID (?P<pid>\d+)\)")


def db_wait_limit() -> float:
    """Seconds a command waits for a DuckDB file held by another process (``FUNDARB_DB_WAIT_S``, default 120)."""
    raw = os.environ.get(DB_WAIT_ENV)
    try:
        return float(raw) if raw else DEFAULT_DB_WAIT_S
    except ValueError:
        raise DatabaseError(f"{DB_WAIT_ENV}={raw!r} is not a number of seconds") from None


def check_location(path: str | Path) -> Path:
    """The database path, its folder created; a one-line ``DatabaseError`` when the location cannot hold it."""
    p = Path(path)
    if p.exists() and p.is_dir():
        raise DatabaseError(f"{DB_ENV}={p} is a directory: set it to a file path such as {p / 'fundarb.duckdb'}")
    existing = next((a for a in p.parents if a.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DatabaseError(f"cannot create the folder of the database {p}: {existing} is a file, not a folder; set "
                            f"{DB_ENV} to a writable path")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create the folder of the database {p} ({exc.strerror or exc}): set {DB_ENV} "
                            "to a writable path") from None
    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise DatabaseError(f"the database {p} is not writable (permission denied): set {DB_ENV} to a writable "
                            "path") from None
    return p


def lock_holder(message: str) -> str | None:
    """``"<command> (PID n)"`` from DuckDB's lock error, or None when the error is not a lock conflict."""
    m = _LOCK_HOLDER.search(message)
    if m:
        return f"{m['cmd']} (PID {m['pid']})"
    return "another process" if "Could not set lock" in message else None


def connect(
    path: str | Path,
    read_only: bool = False,
    wait_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    config: dict[str, object] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the project's DuckDB file, waiting (with a message) while another process holds it.

    Why: DuckDB allows one writing process, or several readers, per file; a notebook or ``duckdb -readonly`` left
    open blocks every writer.  Instead of a lock traceback after DuckDB's own retries, this names the process that
    holds the file, says so every 15 s through ``on_wait``, and after ``wait_s`` (``FUNDARB_DB_WAIT_S``) raises a
    ``BusyError`` saying what to close.  A missing file (for a reader) or an unusable location is a
    ``DatabaseError``.
    """
    p = Path(path)
    if read_only and not p.exists():
        raise DatabaseError(f"no database at {p}: run `fundarb ingest` first, or set {DB_ENV} to an existing file")
    if not read_only:
        check_location(p)
    limit = db_wait_limit() if wait_s is None else wait_s
    started = time.monotonic()
    said = -math.inf
    while True:
        try:
            return duckdb.connect(str(p), read_only=read_only, config=config or {})
        except duckdb.IOException as exc:
            holder = lock_holder(str(exc))
            if holder is None:
                raise DatabaseError(f"cannot open the database {p}: {str(exc).splitlines()[0]}") from None
            waited = time.monotonic() - started
            if waited >= limit:
                raise BusyError(
                    f"the database {p} is held by {holder} for {waited:.0f} s (limit {limit:.0f} s, "
                    f"{DB_WAIT_ENV}): close that process (a notebook or `duckdb` shell that has it open), then "
                    "retry") from None
            if on_wait is not None and waited - said >= 15:
                said = waited
                on_wait(f"waiting for the database {p}: held by {holder} for {waited:.0f} s "
                        f"(gives up after {limit:.0f} s, {DB_WAIT_ENV})")
            time.sleep(min(1.0, max(0.05, limit - waited)))
