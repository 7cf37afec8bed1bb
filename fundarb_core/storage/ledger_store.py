"""The keeper's ledger in DuckDB (``ledger_*``, ``cycle_decisions``, ``performance_snapshots``), in a trading
file of its own.

Why its own file (``data/ledger.duckdb`` beside the warehouse by default, ``FUNDARB_LEDGER`` to move it): DuckDB
allows one writer process per file, and an ingest or a model build can hold the warehouse for minutes; a keeper
whose orders waited on that lock would trade late or not at all.  The keeper reads the warehouse (a short,
read-only snapshot of the market) and writes only here.  Every :class:`~fundarb_core.execution.ledger.
LedgerChange` is one transaction, so a crash never leaves half of one (the crash tests kill the process between
any two of them).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pandas as pd

from fundarb_core.domain.orders import OrderRecord
from fundarb_core.domain.positions import Fill, PairPosition
from fundarb_core.domain.venue_state import FundingPayment
from fundarb_core.execution.ledger import (
    DECISION_COLUMNS,
    Cooldown,
    FundingRecord,
    LedgerChange,
    LedgerState,
)
from fundarb_core.storage.warehouse import transaction
from fundarb_core.times import optional_dt

LEDGER_ENV = "FUNDARB_LEDGER"

_DDL = (
    """CREATE TABLE IF NOT EXISTS ledger_accounts (venue VARCHAR PRIMARY KEY, initial_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_positions (
        position_id VARCHAR PRIMARY KEY, asset VARCHAR NOT NULL, short_venue VARCHAR NOT NULL,
        long_venue VARCHAR NOT NULL, size_usd DOUBLE NOT NULL, leverage DOUBLE NOT NULL, status VARCHAR NOT NULL,
        opened_at TIMESTAMP NOT NULL, closed_at TIMESTAMP, entry_fees_usd DOUBLE, exit_fees_usd DOUBLE,
        total_costs_usd DOUBLE, expected_hourly_usd DOUBLE, break_even_hours DOUBLE, expected_apy DOUBLE,
        retry_attempts INTEGER NOT NULL DEFAULT 0, close_ops INTEGER NOT NULL DEFAULT 0,
        naked_since TIMESTAMP, naked_cycles INTEGER NOT NULL DEFAULT 0, reason VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ledger_orders (
        venue VARCHAR NOT NULL, client_id VARCHAR NOT NULL, position_id VARCHAR NOT NULL, asset VARCHAR NOT NULL,
        leg VARCHAR NOT NULL, purpose VARCHAR NOT NULL, attempt INTEGER NOT NULL, side VARCHAR NOT NULL,
        size_usd DOUBLE NOT NULL, price DOUBLE NOT NULL, reduce_only BOOLEAN NOT NULL, status VARCHAR NOT NULL,
        filled_qty DOUBLE NOT NULL DEFAULT 0, avg_price DOUBLE NOT NULL DEFAULT 0, fee_usd DOUBLE NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, reason VARCHAR,
        PRIMARY KEY (venue, client_id))""",
    """CREATE TABLE IF NOT EXISTS ledger_fills (
        fill_id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, venue VARCHAR NOT NULL, client_id VARCHAR NOT NULL,
        position_id VARCHAR NOT NULL, asset VARCHAR NOT NULL, qty DOUBLE NOT NULL, price DOUBLE NOT NULL,
        fee_usd DOUBLE NOT NULL, liquidity VARCHAR NOT NULL, ts TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_funding (
        payment_id VARCHAR PRIMARY KEY, venue VARCHAR NOT NULL, asset VARCHAR NOT NULL, position_id VARCHAR,
        ts TIMESTAMP NOT NULL, rate DOUBLE NOT NULL, qty DOUBLE NOT NULL, price DOUBLE NOT NULL,
        amount_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ledger_cooldowns (
        asset VARCHAR PRIMARY KEY, failed_at TIMESTAMP NOT NULL, until TIMESTAMP NOT NULL, failures INTEGER)""",
    """CREATE TABLE IF NOT EXISTS ledger_events (
        ts TIMESTAMP NOT NULL, kind VARCHAR NOT NULL, position_id VARCHAR, venue VARCHAR, detail VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS cycle_decisions (
        cycle_ts TIMESTAMP NOT NULL, seq INTEGER NOT NULL, stage VARCHAR NOT NULL, asset VARCHAR,
        short_venue VARCHAR, long_venue VARCHAR, valid BOOLEAN, taken BOOLEAN NOT NULL, reason VARCHAR,
        score DOUBLE, size_usd DOUBLE, break_even_hours DOUBLE, expected_apy DOUBLE, details VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS performance_snapshots (ts TIMESTAMP NOT NULL, metrics VARCHAR NOT NULL,
        equity_usd DOUBLE, estimated_apy DOUBLE, realised_apy_7d DOUBLE, active_positions INTEGER,
        margin_deployed_usd DOUBLE, min_health_factor DOUBLE, funding_win_rate DOUBLE)""",
)
_POSITION_COLUMNS = ("position_id", "asset", "short_venue", "long_venue", "size_usd", "leverage", "status",
                     "opened_at", "closed_at", "entry_fees_usd", "exit_fees_usd", "total_costs_usd",
                     "expected_hourly_usd", "break_even_hours", "expected_apy", "retry_attempts", "close_ops",
                     "naked_since", "naked_cycles", "reason")
_ORDER_COLUMNS = ("venue", "client_id", "position_id", "asset", "leg", "purpose", "attempt", "side", "size_usd",
                  "price", "reduce_only", "status", "filled_qty", "avg_price", "fee_usd", "created_at", "updated_at",
                  "reason")
_FILL_COLUMNS = ("fill_id", "seq", "venue", "client_id", "position_id", "asset", "qty", "price", "fee_usd",
                 "liquidity", "ts")


def trading_db_path(warehouse: str | Path | None = None) -> Path:
    """Where the keeper's ledger and paper accounts live: ``FUNDARB_LEDGER``, else ``ledger.duckdb`` beside the
    warehouse file (``data/ledger.duckdb`` by default)."""
    env = os.environ.get(LEDGER_ENV, "").strip()
    if env:
        return Path(env)
    base = Path(warehouse) if warehouse is not None else Path("data") / "fundarb.duckdb"
    return base.with_name("ledger.duckdb")



def _ph(n: int) -> str:
    return "(" + ", ".join("?" * n) + ")"


class DuckDBLedgerStore:
    """The ledger tables on their own cursor of ``conn``."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, create: bool = True) -> None:
        self.db = conn.cursor()
        for ddl in _DDL if create else ():
            self.db.execute(ddl)

    def query(self, sql: str, params: list[object] | dict[str, object] | None = None) -> pd.DataFrame:
        """A read of the stored tables (reports and tests; the keeper itself reads the ledger's memory)."""
        return self.db.execute(sql, params or []).df()

    def load(self) -> LedgerState:
        db = self.db
        state = LedgerState()
        accounts = db.execute("SELECT venue, initial_usd FROM ledger_accounts").fetchall()
        state.accounts = {v: float(a) for v, a in accounts}
        for r in db.execute(f"SELECT {', '.join(_POSITION_COLUMNS)} FROM ledger_positions").fetchall():
            kw = dict(zip(_POSITION_COLUMNS, r, strict=True))
            for k in ("opened_at", "closed_at", "naked_since"):
                kw[k] = optional_dt(kw[k])
            state.positions.append(PairPosition(**kw))
        for r in db.execute(f"SELECT {', '.join(_ORDER_COLUMNS)} FROM ledger_orders").fetchall():
            kw = dict(zip(_ORDER_COLUMNS, r, strict=True))
            kw["created_at"], kw["updated_at"] = optional_dt(kw["created_at"]), optional_dt(kw["updated_at"])
            state.orders.append(OrderRecord(**kw))
        for r in db.execute(f"SELECT {', '.join(_FILL_COLUMNS)} FROM ledger_fills ORDER BY seq").fetchall():
            kw = dict(zip(_FILL_COLUMNS, r, strict=True))
            kw["ts"] = optional_dt(kw["ts"])
            state.fills.append(Fill(**kw))
        for r in db.execute("SELECT payment_id, venue, asset, ts, rate, qty, price, amount_usd, position_id "
                            "FROM ledger_funding ORDER BY ts, payment_id").fetchall():
            state.funding.append(FundingRecord(FundingPayment(r[0], r[1], r[2], optional_dt(r[3]), *r[4:8]), r[8]))
        state.cooldowns = [Cooldown(a, optional_dt(f), optional_dt(u), int(n or 0))  # type: ignore[arg-type]
                           for a, f, u, n in db.execute("SELECT * FROM ledger_cooldowns").fetchall()]
        peak = db.execute("SELECT max(equity_usd) FROM performance_snapshots").fetchall()[0][0]
        state.peak_equity = None if peak is None else float(peak)
        return state

    def commit(self, change: LedgerChange) -> None:
        with transaction(self.db) as db:
            for v, amt in change.accounts.items():
                db.execute("INSERT INTO ledger_accounts VALUES (?, ?) ON CONFLICT DO NOTHING", [v, amt])
            for p in change.positions:
                vals = [getattr(p, c) for c in _POSITION_COLUMNS]
                vals[_POSITION_COLUMNS.index("status")] = p.status.value
                db.execute(f"INSERT OR REPLACE INTO ledger_positions ({', '.join(_POSITION_COLUMNS)}) VALUES "
                           f"{_ph(len(vals))}", vals)
            for o in change.orders:
                vals = [getattr(o, c) for c in _ORDER_COLUMNS]
                vals[_ORDER_COLUMNS.index("status")] = o.status.value
                db.execute(f"INSERT OR REPLACE INTO ledger_orders ({', '.join(_ORDER_COLUMNS)}) VALUES "
                           f"{_ph(len(vals))}", vals)
            for f in change.fills:
                db.execute(f"INSERT INTO ledger_fills ({', '.join(_FILL_COLUMNS)}) VALUES {_ph(len(_FILL_COLUMNS))}",
                           [getattr(f, c) for c in _FILL_COLUMNS])
            if change.funding:
                db.executemany("INSERT INTO ledger_funding VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               [[r.payment.payment_id, r.payment.venue, r.payment.asset, r.position_id, r.payment.ts,
                                 r.payment.rate, r.payment.qty, r.payment.price, r.payment.amount_usd]
                                for r in change.funding])
            for c in change.cooldowns:
                db.execute("INSERT OR REPLACE INTO ledger_cooldowns VALUES (?, ?, ?, ?)",
                           [c.asset, c.failed_at, c.until, c.failures])
            for e in change.events:
                db.execute("INSERT INTO ledger_events VALUES (?, ?, ?, ?, ?)",
                           [e.ts, e.kind, e.position_id, e.venue, e.detail])
            if change.decisions is not None and len(change.decisions):
                df = change.decisions.reindex(columns=list(DECISION_COLUMNS))
                db.register("_decisions", df)
                try:
                    db.execute("INSERT INTO cycle_decisions SELECT * FROM _decisions")
                finally:
                    db.unregister("_decisions")
            if change.performance is not None:
                ts, metrics, vals = change.performance
                db.execute("DELETE FROM performance_snapshots WHERE ts = ?", [ts])
                db.execute("INSERT INTO performance_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [ts, metrics, *vals])
