"""Replay ingestion into a real DuckDB file: counts, idempotence, rejects, transactions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from fundarb_core.ingest import ingest_table, prepare
from fundarb_core.schema import FUNDING, RAW_TABLES
from fundarb_core.sources.replay import DataLayoutError, ReplaySource
from fundarb_core.storage import ensure_schema, table_counts, upsert
from tests.conftest import write_layout

ALL = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def _snapshot(conn: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    return {
        t: conn.execute(f"SELECT * FROM {t} ORDER BY {', '.join(s.key)}").df() for t, s in RAW_TABLES.items()
    }


def test_full_replay_counts_and_idempotent_rerun(tmp_path: Path, bundled: dict[str, pd.DataFrame]) -> None:
    source = ReplaySource()
    with duckdb.connect(str(tmp_path / "a.duckdb")) as conn:
        reports = {t: ingest_table(conn, source, t, *ALL, now=NOW) for t in RAW_TABLES}
        counts = table_counts(conn)
        first = _snapshot(conn)
        for t in RAW_TABLES:
            ingest_table(conn, source, t, *ALL, now=NOW)
        assert table_counts(conn) == counts
        second = _snapshot(conn)
    for t, frame in bundled.items():
        assert counts[t] == len(frame) - reports[t].rejected, t
        pd.testing.assert_frame_equal(first[t], second[t])
    assert counts["orderbook_depth"] == 10  # undated snapshot rows stamped, not dropped


def test_malformed_row_lands_in_rejected_rows(tmp_path: Path, small_real_dir: Path) -> None:
    funding = pd.read_parquet(small_real_dir / "market" / "funding.parquet")
    idx = funding.index[(funding.venue == "okx") & (funding.venue_symbol == "BTC-USDT-SWAP")][0]
    funding.loc[idx, "rate"] = 1.79e9
    write_layout(small_real_dir, {"funding_rates": funding})
    with duckdb.connect(str(tmp_path / "b.duckdb")) as conn:
        report = ingest_table(conn, ReplaySource(small_real_dir), "funding_rates", *ALL, now=NOW)
        rej = conn.execute("SELECT venue, venue_symbol, field, value, reason FROM rejected_rows").fetchall()
        stored = table_counts(conn)["funding_rates"]
        # re-ingesting records the same reject once
        ingest_table(conn, ReplaySource(small_real_dir), "funding_rates", *ALL, now=NOW)
        assert table_counts(conn)["rejected_rows"] == 1
    assert report.rejected == 1 and stored == len(funding) - 1
    venue, sym, field, value, reason = rej[0]
    assert (venue, sym, field, value) == ("okx", "BTC-USDT-SWAP", "rate", "1790000000.0")
    assert "sane bound" in reason


def test_failed_write_rolls_back_the_whole_batch(tmp_path: Path, bundled: dict[str, pd.DataFrame]) -> None:
    rows = bundled["funding_rates"].head(50)
    good = prepare(FUNDING, rows, now=NOW)
    broken_rejects = good.accepted.head(1).assign(
        row_key="x", raw_table="funding_rates", field=None, value=None, reason=None, record="{}"
    )[["row_key", "raw_table", "venue", "venue_symbol", "ts", "field", "value", "reason", "record"]]
    with duckdb.connect(str(tmp_path / "c.duckdb")) as conn:
        ensure_schema(conn)
        with pytest.raises(duckdb.ConstraintException):
            upsert(conn, FUNDING, good.accepted, broken_rejects)  # NOT NULL field violated
        assert table_counts(conn)["funding_rates"] == 0  # the valid rows did not land either


def test_window_is_half_open_and_partitions_add_up(tmp_path: Path) -> None:
    source = ReplaySource()
    days = [datetime(2026, 1, d, tzinfo=UTC) for d in (10, 11, 12)]
    with duckdb.connect(str(tmp_path / "d.duckdb")) as conn:
        a = ingest_table(conn, source, "funding_rates", days[0], days[1], now=NOW)
        b = ingest_table(conn, source, "funding_rates", days[1], days[2], now=NOW)
        both = source.fetch("funding_rates", days[0], days[2])
        assert a.rows_written + b.rows_written == len(both) == table_counts(conn)["funding_rates"]


def test_bad_directory_error_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="market"):
        ReplaySource(tmp_path)
