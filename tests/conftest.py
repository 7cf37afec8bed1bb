"""Shared fixtures: real bundled data, temp DuckDB files, small real-data directories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches the user's database, Dagster home or MLflow store."""
    monkeypatch.chdir(tmp_path)  # relative defaults (data/, mlflow/) land in the temp dir too
    monkeypatch.setenv("FUNDARB_DUCKDB", str(tmp_path / "fundarb.duckdb"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("FUNDARB_DATA_DIR", raising=False)
    monkeypatch.delenv("FUNDARB_SOURCE", raising=False)
    yield


@pytest.fixture
def bundled() -> dict[str, pd.DataFrame]:
    """The bundled parquet tables, as shipped."""
    return {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}


def write_layout(root: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write frames as a canonical-layout data directory (``root/market/*.parquet``)."""
    (root / "market").mkdir(parents=True, exist_ok=True)
    for table, frame in tables.items():
        frame.to_parquet(root / "market" / f"{LAYOUT_FILES[table]}.parquet", index=False)
    return root


@pytest.fixture
def small_real_dir(tmp_path: Path, bundled: dict[str, pd.DataFrame]) -> Path:
    """Three days of real rows (2026-03-05 → 2026-03-08) from every bundled table."""
    lo, hi = pd.Timestamp("2026-03-05", tz="UTC"), pd.Timestamp("2026-03-08", tz="UTC")
    tables = {}
    for table, frame in bundled.items():
        ts = frame["ts"]
        keep = ts.isna() | ((ts >= lo) & (ts < hi))
        tables[table] = frame[keep].reset_index(drop=True)
    return write_layout(tmp_path / "small_data", tables)


def env_path(name: str) -> str:
    return os.environ[name]


def window_tables(bundled: dict[str, pd.DataFrame], lo: str, hi: str) -> dict[str, pd.DataFrame]:
    """Every bundled table cut to real rows with ``lo <= ts < hi`` (undated snapshots kept)."""
    a, b = pd.Timestamp(lo, tz="UTC"), pd.Timestamp(hi, tz="UTC")
    return {t: f[f.ts.isna() | ((f.ts >= a) & (f.ts < b))].reset_index(drop=True) for t, f in bundled.items()}


def real_db(root: Path, tables: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    """A DuckDB file under ``root`` holding ``tables`` (real rows) ingested and every SQL model built."""
    from datetime import UTC, datetime

    from fundarb_core.ingest import ingest_table
    from fundarb_core.schema import RAW_TABLES
    from fundarb_core.sources.replay import ReplaySource
    from fundarb_pipelines.sql_models import build_all

    source = ReplaySource(write_layout(root, tables))
    conn = duckdb.connect(str(root / "db.duckdb"))
    everything = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    for t in RAW_TABLES:
        ingest_table(conn, source, t, *everything, now=datetime(2026, 5, 1, tzinfo=UTC))
    build_all(conn)
    return conn


def alter_after(
    tables: dict[str, pd.DataFrame], cut: pd.Timestamp, seed: int = 7, drop_share: float = 0.2
) -> dict[str, pd.DataFrame]:
    """Every raw row whose information arrives after ``cut`` changed, and ``drop_share`` of them deleted.

    A bar is known at its close (open + 1 h); everything else at its ``ts``.  Used by the leakage tests:
    nothing stamped at or before ``cut`` may change when this is applied.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, frame in tables.items():
        f = frame.copy()
        known = f.ts + pd.Timedelta(hours=1) if name == "candles" else f.ts
        after = (known > cut).to_numpy()
        if name == "funding_rates":
            f.loc[after, "rate"] = -3 * f.loc[after, "rate"] + 1e-4
        elif name == "candles":
            for c in ("open", "high", "low", "close"):
                f.loc[after, c] = f.loc[after, c] * 1.37
            f.loc[after, "volume"] = f.loc[after, "volume"] * 0.1
        elif name == "open_interest":
            f.loc[after, "oi_usd"] = f.loc[after, "oi_usd"] * 0.2
        drop = after & (rng.random(len(f)) < drop_share)
        out[name] = f[~drop].reset_index(drop=True)
    return out
