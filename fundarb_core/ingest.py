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
from fundarb_core.validation import Validated, split_exact_copies, validate
from fundarb_core.venues import VENUES


@dataclass(frozen=True)
class IngestReport:
    """What one ingestion of one table over one window did; becomes asset metadata."""

    table: str
    rows_in: int
    rows_written: int
    rejected: int
    duplicates: int = 0  # exact copies of a row already in the batch: stored once, counted here
    venues: list[str] = field(default_factory=list)
    min_ts: str | None = None
    max_ts: str | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)


def prepare(spec: TableSpec, raw: pd.DataFrame, now: datetime | None = None) -> Validated:
    """Resolve intervals (funding), validate, and add the derived columns of ``spec``."""
    frame, copies = split_exact_copies(raw)
    frame = frame.copy()
    if spec is FUNDING:
        fixed = {v.id: v.default_interval_hours for v in VENUES.values() if v.interval_rule == "fixed"}
        frame["reported_interval_hours"] = pd.to_numeric(frame["interval_hours"], errors="coerce")
        interval, source = resolve_intervals(frame, fixed)
        frame["interval_hours"] = interval
        frame["interval_source"] = source
    result = validate(spec, frame, now=now, copies=copies)
    rows = result.accepted
    for col in (*spec.required, *spec.optional):  # validated numbers, whatever type the source column had
        rows[col] = pd.to_numeric(rows[col], errors="coerce").astype("float64")
    if spec is FUNDING and not rows.empty:
        rows["rate_per_hour"] = per_hour(rows["rate"].astype("float64"), rows["interval_hours"])
        rows["apr"] = to_apr(rows["rate_per_hour"])
    return Validated(accepted=rows, rejected=result.rejected, duplicates=result.duplicates)


def ingest_table(
    conn: duckdb.DuckDBPyConnection,
    source: MarketSource,
    table: str,
    start: datetime | None,
    end: datetime | None,
    now: datetime | None = None,
) -> IngestReport:
    """Fetch ``table`` for ``[start, end)`` from ``source`` and upsert it into DuckDB.

    ``None`` leaves that side of the window open (a replay source then also returns rows with no timestamp, so
    they reach validation and ``rejected_rows`` instead of vanishing).  The fetch completes before anything is
    written, and the write is one transaction, so a source that fails part-way leaves the database as it was.
    A batch with no valid row still records its rejects and duplicates.
    """
    spec = RAW_TABLES[table]
    raw = source.fetch(table, start, end)  # type: ignore[arg-type]
    result = prepare(spec, raw, now=now)
    ensure_schema(conn)
    written = upsert(conn, spec, result.accepted, result.rejected, result.duplicates)
    rows = result.accepted
    reasons = result.rejected.groupby(["field", "reason"]).size() if not result.rejected.empty else None
    return IngestReport(
        table=table,
        rows_in=len(raw),
        rows_written=written.written,
        rejected=written.rejected,
        duplicates=result.duplicate_rows,
        venues=sorted(rows["venue"].unique().tolist()) if not rows.empty else [],
        min_ts=rows["ts"].min().isoformat() if not rows.empty else None,
        max_ts=rows["ts"].max().isoformat() if not rows.empty else None,
        reject_reasons={f"{f}: {r}": int(n) for (f, r), n in reasons.items()} if reasons is not None else {},
    )
