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
import pyarrow as pa
import pyarrow.parquet as pq

from fundarb_core.errors import DataFileError
from fundarb_core.schema import LAYOUT_FILES, RAW_TABLES
from fundarb_core.times import plausible

BUNDLED_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DATA_DIR_ENV = "FUNDARB_DATA_DIR"


def default_data_dir() -> Path:
    """``FUNDARB_DATA_DIR`` when set, else the dataset bundled with the package."""
    return Path(os.environ.get(DATA_DIR_ENV) or BUNDLED_DATA_DIR)


class DataLayoutError(DataFileError, FileNotFoundError):
    """The directory is not in the canonical layout, or one of its files cannot be read."""


def _flat(data_dir: Path) -> bool:
    """A directory holding the layout's files itself (``DIR/funding.parquet``) rather than under ``market/``."""
    return not (Path(data_dir) / "market").is_dir() and (Path(data_dir) / f"{LAYOUT_FILES['funding_rates']}.parquet"
                                                         ).is_file()


def table_path(data_dir: Path, table: str) -> Path:
    """Where ``table`` lives: ``DIR/market/<file>.parquet``, or ``DIR/<file>.parquet`` for a flat directory (one
    holding ``funding.parquet`` itself, e.g. a funding-only history)."""
    return Path(data_dir) / ("" if _flat(data_dir) else "market") / f"{LAYOUT_FILES[table]}.parquet"


_READ_ERRORS = (pa.ArrowException, OSError, ValueError)


def _unreadable(path: str | Path, exc: BaseException) -> DataLayoutError:
    size = Path(path).stat().st_size if Path(path).exists() else 0
    what = "an empty file (0 bytes)" if size == 0 else f"not a readable parquet file ({str(exc).splitlines()[0]})"
    return DataLayoutError(f"{path}: {what}; replace it with a parquet file of the canonical layout, or remove it")


@lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> pd.DataFrame:  # mtime in the key: edits invalidate the cache
    try:
        frame = pd.read_parquet(path)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None
    if "ts" not in frame.columns:
        raise DataLayoutError(f"{path}: missing column 'ts' (the time of each row, UTC)")
    try:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, errors="coerce")
    except (TypeError, ValueError) as exc:
        raise DataLayoutError(f"{path}: column 'ts' is not a time ({exc})") from None
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
        if not (self.data_dir / "market").is_dir() and not _flat(self.data_dir):
            raise DataLayoutError(
                f"{self.data_dir} is not a fundarb data directory: expected {self.data_dir / 'market'}/"
                f"{{{','.join(LAYOUT_FILES.values())}}}.parquet (or {self.data_dir}/funding.parquet alone)"
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

    def fetch(self, table: str, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        """Rows with ``start <= ts < end``; ``None`` opens that side.  An open start also returns the rows with no
        (readable) timestamp, so that they reach validation — the first partition of a backfill asks for them."""
        frame = self.table(table)
        ts = frame["ts"]
        window = pd.Series(True, index=frame.index)
        if start is not None:
            window &= ts >= pd.Timestamp(start)
        if end is not None:
            window &= ts < pd.Timestamp(end)
        if start is None:
            window |= ts.isna()
        return frame[window].reset_index(drop=True)

    def venues(self) -> list[str]:
        path = table_path(self.data_dir, "funding_rates")
        try:
            return sorted(pq.read_table(path, columns=["venue"]).column(0).unique().to_pylist())
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from None

    def time_range(self, now: datetime | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last *plausible* timestamp over every table: the range to backfill.

        Reads only the ``ts`` column of each file.  Rows stamped before 2016 or in the future (a unit bug, epoch 0)
        are left out, so one absurd row never stretches the partitions over decades; those rows still reach
        validation through the open-ended first and last partitions and are rejected there.
        """
        lo, hi = [], []
        for table in RAW_TABLES:
            path = table_path(self.data_dir, table)
            if not path.exists():
                continue
            try:
                has_ts = "ts" in pq.read_schema(path).names
                ts = pq.read_table(path, columns=["ts"]).column(0).to_pandas() if has_ts else None
            except _READ_ERRORS as exc:
                raise _unreadable(path, exc) from None
            if ts is None:
                raise DataLayoutError(f"{path}: missing column 'ts' (the time of each row, UTC)")
            ts = pd.to_datetime(ts, utc=True, errors="coerce")
            ts = ts[plausible(ts, now)]
            if len(ts):
                lo.append(ts.min())
                hi.append(ts.max())
        if not lo:
            raise DataLayoutError(
                f"{table_path(self.data_dir, 'funding_rates').parent}: no row with a plausible timestamp in any table "
                f"({', '.join(f'{f}.parquet' for f in LAYOUT_FILES.values())}); point FUNDARB_DATA_DIR (or --data) at "
                "a directory with data")
        return min(lo), max(hi)
