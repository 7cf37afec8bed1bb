"""Storage, kept apart from analytics: the warehouse's raw tables, transactions and connections
(:mod:`.warehouse`), every query the keeper runs on the warehouse (:mod:`.market_queries`, :mod:`.market_view`),
and the keeper's own trading state — ledger and paper accounts — in a DuckDB file of its own
(:mod:`.ledger_store`, :mod:`.paper_store`)."""

from fundarb_core.storage.warehouse import (
    DB_ENV,
    DB_WAIT_ENV,
    DEFAULT_DB_WAIT_S,
    WriteResult,
    check_location,
    connect,
    db_wait_limit,
    duplicate_counts,
    ensure_schema,
    lock_holder,
    table_counts,
    transaction,
    upsert,
)

__all__ = [
    "DB_ENV",
    "DB_WAIT_ENV",
    "DEFAULT_DB_WAIT_S",
    "WriteResult",
    "check_location",
    "connect",
    "db_wait_limit",
    "duplicate_counts",
    "ensure_schema",
    "lock_holder",
    "table_counts",
    "transaction",
    "upsert",
]
