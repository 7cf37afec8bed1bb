"""The paper venue's state in DuckDB (``paper_*`` tables), so a paper keeper survives a restart.

Why a store beside an in-memory venue: :class:`~fundarb_core.simulation.paper_venue.PaperVenue` keeps its rules
in Python; this module only loads the state at start and writes each change in one transaction (a crash
between two changes loses neither, and never half of one).  It lives in the keeper's trading file
(:func:`fundarb_core.storage.ledger_store.trading_db_path`), not in the warehouse.
"""

from __future__ import annotations

import duckdb

from fundarb_core.domain.orders import Order
from fundarb_core.domain.positions import LegBook
from fundarb_core.domain.venue_state import FundingPayment
from fundarb_core.simulation.paper_venue import (
    PaperAccount,
    PaperChange,
    PaperPosition,
    PaperState,
    PaperVenue,
)
from fundarb_core.storage.market_view import WarehouseMarketView
from fundarb_core.storage.warehouse import transaction
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.times import optional_dt

_DDL = (
    """CREATE TABLE IF NOT EXISTS paper_orders (
        venue VARCHAR NOT NULL, client_id VARCHAR NOT NULL, asset VARCHAR NOT NULL, side VARCHAR NOT NULL,
        size_usd DOUBLE NOT NULL, price DOUBLE NOT NULL, reduce_only BOOLEAN NOT NULL, status VARCHAR NOT NULL,
        filled_qty DOUBLE NOT NULL, avg_price DOUBLE NOT NULL, fee_usd DOUBLE NOT NULL, liquidity VARCHAR NOT NULL,
        ts TIMESTAMP, reason VARCHAR, seq BIGINT NOT NULL, PRIMARY KEY (venue, client_id))""",
    """CREATE TABLE IF NOT EXISTS paper_positions (
        venue VARCHAR NOT NULL, asset VARCHAR NOT NULL, qty DOUBLE NOT NULL, avg_price DOUBLE NOT NULL,
        leverage DOUBLE NOT NULL, venue_symbol VARCHAR, funded_to TIMESTAMP, PRIMARY KEY (venue, asset))""",
    """CREATE TABLE IF NOT EXISTS paper_balances (
        venue VARCHAR PRIMARY KEY, initial_usd DOUBLE NOT NULL, wallet_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS paper_funding (
        payment_id VARCHAR PRIMARY KEY, venue VARCHAR NOT NULL, asset VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
        rate DOUBLE NOT NULL, qty DOUBLE NOT NULL, price DOUBLE NOT NULL, amount_usd DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS paper_state (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""",
)
ORDER_COLUMNS = ("venue", "client_id", "asset", "side", "size_usd", "price", "reduce_only", "status", "filled_qty",
                 "avg_price", "fee_usd", "liquidity", "ts", "reason")



class DuckDBPaperStore:
    """``paper_*`` tables on their own cursor of ``conn``."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, create: bool = True) -> None:
        self.db = conn.cursor()
        for ddl in _DDL if create else ():
            self.db.execute(ddl)

    def load(self) -> PaperState:
        state = PaperState.empty()
        for r in self.db.execute(f"SELECT {', '.join(ORDER_COLUMNS)}, seq FROM paper_orders ORDER BY seq").fetchall():
            o = Order(venue=r[0], client_id=r[1], asset=r[2], side=r[3], size_usd=r[4], price=r[5],
                      reduce_only=bool(r[6]), status=r[7], filled_qty=r[8], avg_price=r[9], fee_usd=r[10],
                      liquidity=r[11], ts=optional_dt(r[12]), reason=r[13] or "")
            state.orders[(o.venue, o.client_id)] = (o, int(r[14]))
        for v, a, q, p, lev, sym, funded in self.db.execute("SELECT * FROM paper_positions").fetchall():
            state.positions[(v, a)] = PaperPosition(LegBook(float(q), float(p)), float(lev), sym, optional_dt(funded))
        for v, init, wallet in self.db.execute("SELECT * FROM paper_balances").fetchall():
            state.accounts[v] = PaperAccount(v, float(init), float(wallet))
        state.funding = [FundingPayment(r[0], r[1], r[2], optional_dt(r[3]), *r[4:])  # type: ignore[arg-type]
                         for r in self.db.execute("SELECT * FROM paper_funding ORDER BY ts, payment_id").fetchall()]
        kv = dict(self.db.execute("SELECT key, value FROM paper_state").fetchall())
        state.clock = optional_dt(kv["clock"]) if kv.get("clock") else None
        state.seq = int(kv.get("seq", 0))
        return state

    def commit(self, change: PaperChange) -> None:
        with transaction(self.db) as db:
            for o, seq in change.orders:
                db.execute("INSERT OR REPLACE INTO paper_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [o.venue, o.client_id, o.asset, o.side, o.size_usd, o.price, o.reduce_only,
                            o.status.value, o.filled_qty, o.avg_price, o.fee_usd, o.liquidity, o.ts, o.reason, seq])
            for v, a, p in change.positions:
                db.execute("INSERT OR REPLACE INTO paper_positions VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [v, a, p.book.qty, p.book.avg_price, p.leverage, p.venue_symbol, p.funded_to])
            for acc in change.accounts:
                db.execute("INSERT OR REPLACE INTO paper_balances VALUES (?, ?, ?)",
                           [acc.venue, acc.initial_usd, acc.wallet_usd])
            if change.funding:
                rows = [[p.payment_id, p.venue, p.asset, p.ts, p.rate, p.qty, p.price, p.amount_usd]
                        for p in change.funding]
                db.executemany("INSERT OR IGNORE INTO paper_funding VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if change.clock is not None:
                db.execute("INSERT OR REPLACE INTO paper_state VALUES ('clock', ?)", [change.clock.isoformat()])
            if change.seq is not None:
                db.execute("INSERT OR REPLACE INTO paper_state VALUES ('seq', ?)", [str(change.seq)])


def paper_venue_on(market_conn: duckdb.DuckDBPyConnection, config: KeeperConfig | None = None,
                   store: DuckDBPaperStore | None = None, max_price_age_hours: float = 2.0,
                   max_liquidity_age_hours: float = 24.0, **kwargs: object) -> PaperVenue:
    """A paper venue priced from the warehouse on ``market_conn`` (read at each call), its state in ``store``
    (None: in memory only)."""
    cfg = config or KeeperConfig()
    market = WarehouseMarketView(market_conn, cfg, max_price_age_hours, max_liquidity_age_hours)
    return PaperVenue(market, cfg, store=store, **kwargs)  # type: ignore[arg-type]
