"""Resources: the DuckDB file every writer shares, and the market-data source.

Every DuckDB writer runs in the ``duckdb`` concurrency pool (limit 1 in the project's
``dagster.yaml``) *and* takes an exclusive file lock next to the database before opening it:
the pool keeps Dagster from scheduling two writers at once, the lock covers everything the
pool cannot see (the CLI, a notebook, a second ``dagster dev``), so parallel runs queue
instead of failing on DuckDB's single-writer file lock.

Neither wait is silent or endless: a writer that finds the lock file or the DuckDB file held
says who holds it (the lock file records the holder's PID, command and start time; DuckDB's
error names the reader's PID) every 15 s, and gives up after ``FUNDARB_DB_WAIT_S`` seconds
(default 120) with one line saying what to close (``fundarb_core.storage.connect``).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import dagster as dg
import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from fundarb_core.errors import BusyError, DatabaseError, FundarbError
from fundarb_core.sources.base import MarketSource
from fundarb_core.sources.replay import ReplaySource
from fundarb_core.storage import DB_WAIT_ENV, check_location, connect, db_wait_limit

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


def _say(message: str) -> None:
    print(f"fundarb: {message}", file=sys.stderr, flush=True)


def _take_writer_lock(lock: IO[str], path: Path, say: Callable[[str], None]) -> None:
    """Exclusive ``flock`` on ``<db>.lock``, waiting with a message naming the holder, up to the limit."""
    limit, started, said = db_wait_limit(), time.monotonic(), -1e9
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        lock.seek(0)
        holder = lock.read().strip() or "another fundarb process"
        waited = time.monotonic() - started
        if waited >= limit:
            raise BusyError(f"the database {path} is being written by {holder} for {waited:.0f} s (limit "
                            f"{limit:.0f} s, {DB_WAIT_ENV}): wait for it to finish or stop it, then retry")
        if waited - said >= 15:
            said = waited
            say(f"waiting for the database {path}: being written by {holder} (gives up after {limit:.0f} s, "
                f"{DB_WAIT_ENV})")
        time.sleep(0.2)
    lock.seek(0)
    lock.truncate()
    lock.write(f"PID {os.getpid()} ({' '.join(sys.argv[:2]) or 'python'}) since "
               f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
    lock.flush()


class FundarbDuckDB(DuckDBResource):
    """dagster-duckdb's resource plus a cross-process writer lock on the database file, and waits that say
    who holds the file and end after a limit (module docstring)."""

    @contextmanager
    def get_connection(self, log: Callable[[str], None] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.database == ":memory:":
            with super().get_connection() as conn:
                yield conn
            return
        say = log or _say
        try:  # a user error here fails the step with its one line as the description, not a nested chain
            path = check_location(self.database)
            try:
                lock = open(f"{path}.lock", "a+")  # noqa: SIM115 - closed in the finally below
            except OSError as exc:
                raise DatabaseError(f"cannot create the lock file {path}.lock ({exc.strerror or exc}): set "
                                    "FUNDARB_DUCKDB to a writable path") from None
        except FundarbError as exc:
            raise dg.Failure(description=str(exc), metadata={"error": type(exc).__name__}) from None
        try:
            try:
                _take_writer_lock(lock, path, say)
                conn = connect(path, on_wait=say, config={"custom_user_agent": "dagster", **self.connection_config})
            except FundarbError as exc:
                raise dg.Failure(description=str(exc), metadata={"error": type(exc).__name__}) from None
            try:
                conn.execute("SET TimeZone = 'UTC'")
                conn.execute("SET enable_progress_bar = false")
                conn.execute(f"SET memory_limit = '{duckdb_memory_limit()}'")
                yield conn
            finally:
                conn.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()


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
