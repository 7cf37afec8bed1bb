"""Ingestion: source → validation → derived columns → one transactional upsert.

Dagster assets and the CLI both call ``ingest_table``; it holds no orchestration, so the
same path runs in a test, a backfill and a live schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pandas as pd

from fundarb_core.funding import per_hour, resolve_intervals, to_apr
from fundarb_core.schema import FUNDING, RAW_TABLES, TableSpec
from fundarb_core.sources.base import MarketSource
from fundarb_core.storage import ensure_schema, upsert
from fundarb_core.validation import Validated, validate
from fundarb_core.venues import VENUES


@dataclass(frozen=True)
class IngestReport:
    """What one ingestion of one table over one window did; becomes asset metadata."""

    table: str
    rows_in: int
    rows_written: int
    rejected: int
    venues: list[str] = field(default_factory=list)
    min_ts: str | None = None
    max_ts: str | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)


def prepare(spec: TableSpec, raw: pd.DataFrame, now: datetime | None = None) -> Validated:
    """Resolve intervals (funding), validate, and add the derived columns of ``spec``."""
    frame = raw.reset_index(drop=True).copy()
    if spec is FUNDING:
        fixed = {v.id: v.default_interval_hours for v in VENUES.values() if v.interval_rule == "fixed"}
        frame["reported_interval_hours"] = pd.to_numeric(frame["interval_hours"], errors="coerce")
        interval, source = resolve_intervals(frame, fixed)
        frame["interval_hours"] = interval
        frame["interval_source"] = source
    result = validate(spec, frame, now=now)
    rows = result.accepted
    if spec is FUNDING and not rows.empty:
        rows["rate_per_hour"] = per_hour(rows["rate"].astype("float64"), rows["interval_hours"])
        rows["apr"] = to_apr(rows["rate_per_hour"])
    return Validated(accepted=rows, rejected=result.rejected)


def ingest_table(
    conn: duckdb.DuckDBPyConnection,
    source: MarketSource,
    table: str,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
) -> IngestReport:
    """Fetch ``table`` for ``[start, end)`` from ``source`` and upsert it into DuckDB.

    The fetch completes before anything is written, and the write is one transaction, so a
    source that fails part-way leaves the database as it was.
    """
    spec = RAW_TABLES[table]
    raw = source.fetch(table, start, end)
    result = prepare(spec, raw, now=now)
    ensure_schema(conn)
    written = upsert(conn, spec, result.accepted, result.rejected)
    rows = result.accepted
    reasons = result.rejected.groupby(["field", "reason"]).size() if not result.rejected.empty else None
    return IngestReport(
        table=table,
        rows_in=len(raw),
        rows_written=written.written,
        rejected=written.rejected,
        venues=sorted(rows["venue"].unique().tolist()) if not rows.empty else [],
        min_ts=rows["ts"].min().isoformat() if not rows.empty else None,
        max_ts=rows["ts"].max().isoformat() if not rows.empty else None,
        reject_reasons={f"{f}: {r}": int(n) for (f, r), n in reasons.items()} if reasons is not None else {},
    )
