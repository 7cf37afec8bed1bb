"""Every source row is stored, rejected with its reason, or counted as an exact duplicate — on a real funding file
with 16 faults, through ``fundarb ingest``.

The faults are the issue's: NaN / ±inf / absurd rates, a bad interval, non-positive and infinite mark prices, an
unknown venue, an unreadable symbol, a row stamped in the future (2027-06), one with no timestamp, one stamped
1970-01-01 (which used to stretch the daily partitions back to 1970), a conflicting duplicate key and two exact
duplicates.  ``stored + rejected + duplicates = source`` must hold for every table, the summary must never say
MISMATCH, the future and timestamp-less rows must be in ``rejected_rows``, and a rerun must change nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_pipelines.partitions import daily_partitions
from tests.test_hostile_inputs import real_dir, real_rows, run_cli


def sixteen_faults(funding: pd.DataFrame) -> pd.DataFrame:
    """Real funding rows with the 16 faults of the issue (values replaced in place, bad rows appended)."""
    f = funding.copy()
    binance = f.index[f.venue == "binance"]  # an interval the venue reports (not fixed by a venue rule)
    rows = iter(f.index[f.venue == "bybit"])
    f.loc[next(rows), "rate"] = np.nan
    f.loc[next(rows), "rate"] = np.inf
    f.loc[next(rows), "rate"] = -np.inf
    f.loc[next(rows), "rate"] = 0.5  # 50 % per 8 h: a unit bug
    f.loc[binance[5], "interval_hours"] = 3.0
    f.loc[next(rows), "mark_price"] = -1.0
    f.loc[next(rows), "mark_price"] = 0.0
    f.loc[next(rows), "mark_price"] = np.inf
    f.loc[next(rows), "venue"] = "notavenue"
    f.loc[next(rows), "venue_symbol"] = "???"
    src = f.loc[binance[10:16]].copy()
    extra = [
        src.iloc[[0]].assign(ts=pd.Timestamp("2027-06-01 08:00", tz="UTC")),  # future
        src.iloc[[1]].assign(ts=pd.NaT),  # no timestamp
        src.iloc[[2]].assign(ts=pd.Timestamp("1970-01-01", tz="UTC")),  # epoch 0
        src.iloc[[3]].assign(rate=src.iloc[3]["rate"] + 1e-4),  # same key, another value
        src.iloc[[4]],  # exact duplicate
        src.iloc[[5]],  # exact duplicate
    ]
    return pd.concat([f, *extra], ignore_index=True)


def test_every_row_of_a_sixteen_fault_file_is_accounted_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    funding = sixteen_faults(real_rows()["funding_rates"])
    data = real_dir(tmp_path / "data", funding_rates=funding)
    monkeypatch.setenv("FUNDARB_DATA_DIR", str(data))
    assert len(daily_partitions().get_partition_keys()) == 3  # the 1970 and 2027 rows do not widen the range

    code, err, out = run_cli(capsys, "ingest", "--json")
    assert code == 0, err
    first = json.loads(out.strip().splitlines()[-1])
    for table, source in first["source_rows"].items():
        stored = first["tables"][table]
        rejected = first["rejected_by_table"].get(table, 0)
        duplicates = first["duplicates_by_table"].get(table, 0)
        assert stored + rejected + duplicates == source, table
    assert first["source_rows"]["funding_rates"] == len(funding)
    assert first["rejected_by_table"] == {"funding_rates": 14}
    assert first["duplicates_by_table"] == {"funding_rates": 2}

    with duckdb.connect(str(tmp_path / "fundarb.duckdb"), read_only=True) as conn:
        reasons = conn.execute("SELECT field, reason, value, ts FROM rejected_rows ORDER BY field, reason").df()
    ts_reasons = reasons[reasons.field == "ts"]
    assert sorted(ts_reasons.reason.str.split(" ").str[:3].str.join(" ")) == [
        "duplicate key with", "missing or unparseable", "timestamp before 2016-01-01,", "timestamp is in"]
    assert (ts_reasons.ts.dropna().astype(str) >= "2027-06-01").any()  # the future row, with its time
    assert {"rate", "mark_price", "interval_hours", "venue_symbol"} <= set(reasons.field)
    values = set(reasons[reasons.field.isin(["rate", "mark_price"])].value)
    assert values == {'"nan"', '"inf"', '"-inf"', "0.5", "-1.0", "0.0"}  # each value as it came

    code, err, out = run_cli(capsys, "ingest")  # the human summary, and a rerun that changes nothing
    assert code == 0, err
    assert "MISMATCH" not in out and out.count("all accounted for") == 4
    assert "source 3,272 − rejected 14 − exact duplicates 2: all accounted for" in out
    code, _, again = run_cli(capsys, "summary", "--json")
    second = json.loads(again.strip().splitlines()[-1])
    for key in ("tables", "rejected_by_table", "duplicates_by_table", "source_rows"):
        assert second[key] == first[key], key


def test_a_batch_with_no_valid_row_still_records_its_rejects(tmp_path: Path) -> None:
    """Every row invalid, or an empty window: no KeyError, the rejects are written, nothing else changes."""
    from fundarb_core.ingest import ingest_table
    from fundarb_core.sources.replay import ReplaySource

    funding = real_rows()["funding_rates"].head(40).assign(rate=np.nan)
    source = ReplaySource(real_dir(tmp_path / "data", funding_rates=funding))
    with duckdb.connect(str(tmp_path / "db.duckdb")) as conn:
        report = ingest_table(conn, source, "funding_rates", None, None)
        empty = ingest_table(conn, source, "funding_rates", pd.Timestamp("2020-01-01", tz="UTC"),
                             pd.Timestamp("2020-01-02", tz="UTC"))
        stored, rejected = conn.execute("SELECT (SELECT count(*) FROM funding_rates), "
                                        "(SELECT count(*) FROM rejected_rows)").fetchall()[0]
    assert (report.rows_in, report.rows_written, report.rejected) == (40, 0, 40)
    assert (empty.rows_in, empty.rows_written, empty.rejected) == (0, 0, 0)
    assert (stored, rejected) == (0, 40)
