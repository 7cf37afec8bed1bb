"""Hostile input on every command: one line on stderr naming what is wrong, a non-zero exit, no traceback.

Every file is built from real bundled rows (three days of every table); the faults are the ones a user meets: a
funding file whose rates are all NaN, a truncated / zero-byte / non-parquet file, an empty ``market/`` folder,
a period with no data or backwards, a garbage time, a keeper ``--as-of`` outside the data, a missing database,
a database location that cannot be used.  Each case asserts the exit code and the exact line; the table in the
README (and the issue-15 note) is this module's ``CASES`` output.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_pipelines.cli import main
from tests.conftest import write_layout

LO, HI = "2026-03-05", "2026-03-08"


@lru_cache(maxsize=1)
def _real_rows() -> dict[str, pd.DataFrame]:
    """Three days of real rows from every bundled table (read once per test session)."""
    a, b = pd.Timestamp(LO, tz="UTC"), pd.Timestamp(HI, tz="UTC")
    out = {}
    for table, name in LAYOUT_FILES.items():
        f = pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{name}.parquet")
        out[table] = f[f.ts.isna() | ((f.ts >= a) & (f.ts < b))].reset_index(drop=True)
    return out


def real_rows() -> dict[str, pd.DataFrame]:
    return {t: f.copy() for t, f in _real_rows().items()}


def real_dir(root: Path, **replace: pd.DataFrame) -> Path:
    """A canonical-layout directory of the real rows, with some tables replaced."""
    return write_layout(root, {**real_rows(), **replace})


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    """``fundarb <argv>`` in this process: exit code, stderr lines, stdout."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [line for line in err.splitlines() if line.strip()], out


def assert_one_line(code: int, err: list[str], want_code: int, pattern: str) -> str:
    """Exit code as expected; the last stderr line matches; no traceback anywhere."""
    assert code == want_code, err
    assert not any("Traceback" in line or line.startswith("  File ") for line in err), err
    assert re.fullmatch(pattern, err[-1]), err[-1]
    case = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].split("::")[-1]
    print(f"\nCASE | {case} | {code} | {err[-1]}", file=sys.__stdout__)  # `pytest -s … | grep CASE`
    return err[-1]


def test_all_nan_rates_reject_every_row_with_its_reason_then_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    funding = real_rows()["funding_rates"].assign(rate=np.nan)
    data = real_dir(tmp_path / "data", funding_rates=funding)
    monkeypatch.setenv("FUNDARB_DATA_DIR", str(data))
    n = len(funding)
    code, err, _ = run_cli(capsys, "ingest")
    assert_one_line(code, err, 4, rf"fundarb ingest: nothing valid to ingest: all {n:,} funding rows were rejected "
                    rf"\(e\.g\. rate: not a finite number — {n:,} rows\); see `fundarb summary` and the rejected_rows "
                    "table, fix the source and rerun")
    with duckdb.connect(str(tmp_path / "fundarb.duckdb"), read_only=True) as conn:
        rejects = conn.execute("SELECT field, reason, count(*) FROM rejected_rows WHERE raw_table = 'funding_rates' "
                               "GROUP BY ALL").fetchall()
        candles = conn.execute("SELECT count(*) FROM candles").fetchall()[0][0]
    assert rejects == [("rate", "not a finite number", n)]  # every row recorded with its reason
    assert candles == len(real_rows()["candles"])  # the other tables were ingested
    for command, verb in (("backtest", "backtest"), ("forecast-eval", "evaluate")):
        code, err, _ = run_cli(capsys, command, "--data", str(data), "--start", "2026-03-06", "--end", "2026-03-07",
                               *(["--no-mlflow"] if command == "backtest" else []))
        assert_one_line(code, err, 4, rf"fundarb {command}: {re.escape(str(data))}/market/funding\.parquet: nothing "
                        rf"valid to {verb}: all {n:,} funding rows were rejected \(e\.g\. rate: not a finite number "
                        rf"— {n:,} rows\); fix the file")


@pytest.mark.parametrize("fault", ["truncated", "zero-byte", "not-parquet"])
def test_unreadable_file_is_one_line_naming_it(
    fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = real_dir(tmp_path / "data")
    path = data / "market" / "funding.parquet"
    if fault == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif fault == "zero-byte":
        path.write_bytes(b"")
    else:
        path.write_text(real_rows()["funding_rates"].head(50).to_csv(index=False))
    monkeypatch.setenv("FUNDARB_DATA_DIR", str(data))
    what = "an empty file \\(0 bytes\\)" if fault == "zero-byte" else "not a readable parquet file \\(.+\\)"
    tail = "; replace it with a parquet file of the canonical layout, or remove it"
    for argv in (["ingest"], ["forecast-eval", "--data", str(data), "--start", "2026-03-06", "--end", "2026-03-07"],
                 ["backtest", "--data", str(data), "--start", "2026-03-06", "--end", "2026-03-07", "--no-mlflow"]):
        code, err, _ = run_cli(capsys, *argv)
        assert_one_line(code, err, 3, rf"fundarb {argv[0]}: {re.escape(str(path))}: {what}{tail}")


def test_empty_market_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "empty"
    (data / "market").mkdir(parents=True)
    monkeypatch.setenv("FUNDARB_DATA_DIR", str(data))
    code, err, _ = run_cli(capsys, "ingest")
    assert_one_line(code, err, 3, rf"fundarb ingest: {re.escape(str(data))}/market: no row with a plausible "
                    r"timestamp in any table \(funding\.parquet, .+\); point FUNDARB_DATA_DIR \(or --data\) at a "
                    "directory with data")
    for command, verb in (("backtest", "backtest"), ("forecast-eval", "evaluate")):
        code, err, _ = run_cli(capsys, command, "--data", str(data), "--start", "2026-03-06", "--end", "2026-03-07",
                               *(["--no-mlflow"] if command == "backtest" else []))
        assert_one_line(code, err, 4, rf"fundarb {command}: {re.escape(str(data))}/market/funding\.parquet: no "
                        rf"funding rows \(the file is missing or empty\); nothing to {verb}")


def test_periods_and_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(real_dir(tmp_path / "data"))
    for command, verb in (("backtest", "backtest"), ("forecast-eval", "evaluate")):
        extra = ["--no-mlflow"] if command == "backtest" else []
        code, err, _ = run_cli(capsys, command, "--data", data, "--start", "2020-01-01", "--end", "2020-02-01", *extra)
        assert_one_line(code, err, 4, rf"fundarb {command}: no funding rows between 2020-01-01 00:00:00 and "
                        rf"2020-02-01 00:00:00 \(UTC\) in {re.escape(data)}: it covers 2026-03-05 00:00:00 → "
                        rf"2026-03-07 23:00:00\.068000; nothing to {verb} — choose a period inside that range")
        code, err, _ = run_cli(capsys, command, "--data", data, "--start", "2026-03-07", "--end", "2026-03-06", *extra)
        assert_one_line(code, err, 2, rf"fundarb {command}: {command} end 2026-03-06 00:00:00 must be after start "
                        r"2026-03-07 00:00:00 \(UTC\)")
        code, err, _ = run_cli(capsys, command, "--data", data, "--start", "garbage", "--end", "2026-03-06", *extra)
        assert_one_line(code, err, 2, rf"fundarb {command}: --start 'garbage' is not a time: use ISO 8601, e.g\. "
                        r"2026-02-01 or 2026-02-01T08:00\+02:00 \(UTC unless an offset is given\)")


def test_database_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "fundarb.duckdb"
    monkeypatch.setenv("FUNDARB_DUCKDB", str(missing))
    code, err, _ = run_cli(capsys, "summary")
    assert_one_line(code, err, 5, rf"fundarb summary: no database at {re.escape(str(missing))}: run `fundarb ingest` "
                    "first, or set FUNDARB_DUCKDB to an existing file")
    code, err, _ = run_cli(capsys, "keeper", "--once", "--as-of", "2026-03-06")
    assert_one_line(code, err, 5, rf"fundarb keeper: no database at {re.escape(str(missing))}: .+")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FUNDARB_DUCKDB", str(blocker / "fundarb.duckdb"))
    code, err, _ = run_cli(capsys, "ingest")
    assert_one_line(code, err, 5, rf"fundarb ingest: cannot create the folder of the database "
                    rf"{re.escape(str(blocker))}/fundarb\.duckdb: {re.escape(str(blocker))} is a file, not a folder; "
                    "set FUNDARB_DUCKDB to a writable path")
    monkeypatch.setenv("FUNDARB_DUCKDB", "/proc/fundarb/fundarb.duckdb")  # read-only even for root
    code, err, _ = run_cli(capsys, "ingest")
    assert_one_line(code, err, 5, r"fundarb ingest: cannot create the folder of the database "
                    r"/proc/fundarb/fundarb\.duckdb \(.+\): set FUNDARB_DUCKDB to a writable path")


def test_keeper_as_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Garbage, before-the-data and after-the-data ``--as-of`` are one line; an offset is honoured."""
    from tests.conftest import real_db

    conn = real_db(tmp_path / "kdb", real_rows())
    conn.close()
    Path(tmp_path / "kdb" / "db.duckdb").rename(tmp_path / "fundarb.duckdb")  # FUNDARB_DUCKDB of the test
    for as_of, pattern in (
        ("garbage", r"--as-of 'garbage' is not a time: use ISO 8601, e\.g\. 2026-02-01 or 2026-02-01T08:00\+02:00 "
                    r"\(UTC unless an offset is given\)"),
        ("2020-01-01", r"--as-of 2020-01-01 00:00:00 \(UTC\) is before the first funding row 2026-03-05 00:00:00: "
                       "the keeper needs data up to its cycle time; choose a time inside the data"),
        ("2031-01-01T00:00Z", r"--as-of 2031-01-01 00:00:00 \(UTC\) is after the latest funding row "
                              r"2026-03-07 23:00:00\.068000: ingest newer data, or choose a time inside the data "
                              r"\(omit --as-of for its latest hour\)"),
    ):
        code, err, _ = run_cli(capsys, "keeper", "--once", "--as-of", as_of)
        assert_one_line(code, err, 2, f"fundarb keeper: {pattern}")
    code, err, out = run_cli(capsys, "keeper", "--once", "--dry-run", "--as-of", "2026-03-06T10:00+05:00")
    assert code == 0, err
    assert out.startswith("keeper cycle at 2026-03-06 05:00:00 (paper (dry run))"), out


def test_a_dagster_run_fails_with_the_same_line_as_its_description(tmp_path: Path) -> None:
    """A run from the UI or a schedule: the failed step's description is the user error's one line."""
    import dagster as dg

    from fundarb_pipelines.assets.raw import build_raw_asset
    from fundarb_pipelines.resources import FundarbDuckDB, MarketSourceResource

    data = real_dir(tmp_path / "data")
    (data / "market" / "funding.parquet").write_bytes(b"")
    res = dg.materialize([build_raw_asset("funding_rates")], partition_key="2026-03-06", raise_on_error=False,
                         resources={"duckdb": FundarbDuckDB(database=str(tmp_path / "db.duckdb")),
                                    "market_source": MarketSourceResource(data_dir=str(data))})
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data
    assert failure.user_failure_data.description == (
        f"{data}/market/funding.parquet: an empty file (0 bytes); replace it with a parquet file of the canonical "
        "layout, or remove it")
