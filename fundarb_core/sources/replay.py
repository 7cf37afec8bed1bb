"""Replay of recorded market data in the canonical layout (``<dir>/market/*.parquet``).

The default source: it makes the whole system runnable with no network on the real data
shipped inside the package, and lets any other directory in the same layout be ingested,
backtested or evaluated without code changes.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fundarb_core.schema import LAYOUT_FILES, RAW_TABLES

BUNDLED_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DATA_DIR_ENV = "FUNDARB_DATA_DIR"


def default_data_dir() -> Path:
    """``FUNDARB_DATA_DIR`` when set, else the dataset bundled with the package."""
    return Path(os.environ.get(DATA_DIR_ENV) or BUNDLED_DATA_DIR)


class DataLayoutError(FileNotFoundError):
    """The directory is not in the canonical layout."""


def table_path(data_dir: Path, table: str) -> Path:
    return Path(data_dir) / "market" / f"{LAYOUT_FILES[table]}.parquet"


@lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> pd.DataFrame:  # mtime in the key: edits invalidate the cache
    frame = pd.read_parquet(path)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _stamp_undated_snapshots(frame: pd.DataFrame, data_dir: Path) -> pd.DataFrame:
    """Give timestamp-less snapshot rows the time of their source's snapshot run.

    The bundled order-book depth file is one snapshot per venue/coin whose collector did not
    record a time; it was taken in the same collection run as the open-interest series of the
    same venue/coin, so each row is stamped with that series' last timestamp.  Rows with no
    such companion keep a missing ``ts`` and are rejected by validation, not guessed.
    """
    undated = frame["ts"].isna()
    if not undated.any():
        return frame
    oi_path = table_path(data_dir, "open_interest")
    if not oi_path.exists():
        return frame
    oi = _load(str(oi_path), oi_path.stat().st_mtime)
    last = oi.groupby(["venue", "venue_symbol"])["ts"].max()
    keys = pd.MultiIndex.from_frame(frame.loc[undated, ["venue", "venue_symbol"]])
    frame = frame.copy()
    frame.loc[undated, "ts"] = last.reindex(keys).to_numpy()
    return frame


class ReplaySource:
    """A ``MarketSource`` over a directory in the canonical layout."""

    name = "replay"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        if not (self.data_dir / "market").is_dir():
            raise DataLayoutError(
                f"{self.data_dir} is not a fundarb data directory: expected {self.data_dir / 'market'}/"
                f"{{{','.join(LAYOUT_FILES.values())}}}.parquet"
            )

    def table(self, table: str) -> pd.DataFrame:
        """The whole table as stored in the layout (empty if the file is absent)."""
        spec = RAW_TABLES[table]
        path = table_path(self.data_dir, table)
        if not path.exists():
            return spec.empty_source_frame()
        frame = _load(str(path), path.stat().st_mtime)
        missing = set(spec.source_columns) - set(frame.columns)
        if missing:
            raise DataLayoutError(f"{path}: missing columns {sorted(missing)}")
        if table == "orderbook_depth":
            frame = _stamp_undated_snapshots(frame, self.data_dir)
        return frame.loc[:, list(spec.source_columns)]

    def fetch(self, table: str, start: datetime, end: datetime) -> pd.DataFrame:
        frame = self.table(table)
        ts = frame["ts"]
        window = (ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))
        return frame[window].reset_index(drop=True)

    def venues(self) -> list[str]:
        path = table_path(self.data_dir, "funding_rates")
        return sorted(pq.read_table(path, columns=["venue"]).column(0).unique().to_pylist())

    def time_range(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last timestamp over every table: the range to backfill."""
        lo, hi = [], []
        for table in RAW_TABLES:
            ts = self.table(table)["ts"].dropna()
            if len(ts):
                lo.append(ts.min())
                hi.append(ts.max())
        if not lo:
            raise DataLayoutError(f"{self.data_dir}: no rows in any table")
        return min(lo), max(hi)
