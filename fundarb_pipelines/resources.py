"""Resources: the DuckDB file every writer shares, and the market-data source.

Every DuckDB writer runs in the ``duckdb`` concurrency pool (limit 1 in the project's
``dagster.yaml``) *and* takes an exclusive file lock next to the database before opening it:
the pool keeps Dagster from scheduling two writers at once, the lock covers everything the
pool cannot see (the CLI, a notebook, a second ``dagster dev``), so parallel runs queue
instead of failing on DuckDB's single-writer file lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from fundarb_core.sources.base import MarketSource
from fundarb_core.sources.replay import ReplaySource

DUCKDB_POOL = "duckdb"
DUCKDB_ENV = "FUNDARB_DUCKDB"
DEFAULT_DUCKDB_PATH = "data/fundarb.duckdb"
# DuckDB takes 80 % of RAM by default; a cap makes big model builds spill to disk instead of
# starving the machine (2 cores / 24 GiB here).  FUNDARB_DUCKDB_MEMORY overrides it.
DEFAULT_DUCKDB_MEMORY = "4GB"


def duckdb_memory_limit() -> str:
    return os.environ.get("FUNDARB_DUCKDB_MEMORY") or DEFAULT_DUCKDB_MEMORY


def default_duckdb_path() -> str:
    """``FUNDARB_DUCKDB`` when set, else ``data/fundarb.duckdb`` under the working directory."""
    return os.environ.get(DUCKDB_ENV) or DEFAULT_DUCKDB_PATH


class FundarbDuckDB(DuckDBResource):
    """dagster-duckdb's resource plus a cross-process writer lock on the database file."""

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.database == ":memory:":
            with super().get_connection() as conn:
                yield conn
            return
        path = Path(self.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # blocks until the other writer closes the file
            try:
                with super().get_connection() as conn:
                    conn.execute("SET TimeZone = 'UTC'")
                    conn.execute("SET enable_progress_bar = false")
                    conn.execute(f"SET memory_limit = '{duckdb_memory_limit()}'")
                    yield conn
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class MarketSourceResource(dg.ConfigurableResource):
    """Which market-data source the raw assets read.

    ``replay`` (default) reads a directory in the canonical layout — the dataset bundled with
    the package unless ``data_dir`` or ``FUNDARB_DATA_DIR`` names another.  ``ccxt`` reads
    the live venues listed in ``ccxt_symbols`` through ccxt.
    """

    kind: str = Field(default="replay", description="replay | ccxt")
    data_dir: str | None = Field(default=None, description="canonical-layout directory (replay)")
    ccxt_symbols: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "binance": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
            "bybit": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
            "hyperliquid": ["BTC", "ETH", "SOL"],
            "lighter": ["BTC", "ETH", "SOL"],
        },
        description="venue id -> venue symbols to ingest (ccxt)",
    )

    def build(self) -> MarketSource:
        if self.kind == "replay":
            return ReplaySource(self.data_dir)
        if self.kind == "ccxt":
            from fundarb_core.sources.ccxt_source import CcxtSource  # ccxt import is slow; only when used

            return CcxtSource(venues=self.ccxt_symbols)
        raise dg.DagsterInvalidConfigError(f"unknown source kind {self.kind!r}", [], None)

    def as_of(self) -> pd.Timestamp:
        """The 'now' of the data: the replay's last timestamp, or the wall clock when live."""
        if self.kind == "replay":
            return ReplaySource(self.data_dir).time_range()[1]
        return pd.Timestamp(datetime.now(UTC))


def source_kind_from_env() -> str:
    return os.environ.get("FUNDARB_SOURCE", "replay")
