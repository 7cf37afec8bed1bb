"""Storage, kept apart from analytics: the warehouse's raw tables and transactions (:mod:`.warehouse`), every
query the keeper runs on the warehouse (:mod:`.market_queries`), and the keeper's own trading state — ledger
and paper accounts — in a separate DuckDB file (:mod:`.ledger_store`, :mod:`.paper_store`)."""

from fundarb_core.storage.warehouse import WriteResult, ensure_schema, table_counts, transaction, upsert

__all__ = ["WriteResult", "ensure_schema", "table_counts", "transaction", "upsert"]
