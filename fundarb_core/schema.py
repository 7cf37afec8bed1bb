"""The canonical raw tables: one column list, key and DuckDB DDL per table.

Every source (replay or ccxt) yields pandas frames with exactly the *source* columns of a
table; ingestion adds the derived columns (asset, quote, per-hour rate …) before storing.
Keeping the contract in one place is what lets a new venue or a new data directory plug in
without touching the pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class TableSpec:
    """Shape of one raw table.

    ``source_columns`` are what a ``MarketSource`` yields; ``columns`` are what is stored
    (source columns plus the ones ingestion derives).  ``required`` columns must be finite;
    ``optional`` numeric columns may be null but, when present, must be finite and positive.
    """

    name: str
    source_columns: tuple[str, ...]
    columns: dict[str, str]
    key: tuple[str, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()

    def ddl(self) -> str:
        cols = ",\n  ".join(f"{c} {t}" for c, t in self.columns.items())
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols},\n"
            f"  PRIMARY KEY ({', '.join(self.key)})\n)"
        )

    def empty_source_frame(self) -> pd.DataFrame:
        """An empty frame with the source columns, for sources that found nothing."""
        return pd.DataFrame({c: pd.Series(dtype=_PANDAS_DTYPES.get(c, "float64")) for c in self.source_columns})


_PANDAS_DTYPES = {
    "venue": "object",
    "venue_symbol": "object",
    "timeframe": "object",
    "ts": "datetime64[us, UTC]",
}

KEY = ("venue", "venue_symbol", "ts")

FUNDING = TableSpec(
    name="funding_rates",
    source_columns=("venue", "venue_symbol", "ts", "rate", "interval_hours", "mark_price"),
    columns={
        "venue": "VARCHAR NOT NULL",
        "venue_symbol": "VARCHAR NOT NULL",
        "ts": "TIMESTAMP NOT NULL",  # settlement time, UTC
        "asset": "VARCHAR NOT NULL",
        "quote": "VARCHAR NOT NULL",
        "rate": "DOUBLE NOT NULL",  # per interval, decimal
        "interval_hours": "DOUBLE NOT NULL",  # interval in force for this row
        "interval_source": "VARCHAR NOT NULL",  # reported | venue_rule | inferred
        "reported_interval_hours": "DOUBLE",  # what the source said, kept for audit
        "rate_per_hour": "DOUBLE NOT NULL",
        "apr": "DOUBLE NOT NULL",
        "mark_price": "DOUBLE",
    },
    key=KEY,
    required=("rate",),
    optional=("mark_price",),
    positive=("mark_price",),
)

CANDLES = TableSpec(
    name="candles",
    source_columns=("venue", "venue_symbol", "ts", "timeframe", "open", "high", "low", "close", "volume"),
    columns={
        "venue": "VARCHAR NOT NULL",
        "venue_symbol": "VARCHAR NOT NULL",
        "ts": "TIMESTAMP NOT NULL",  # bar open, UTC
        "asset": "VARCHAR NOT NULL",
        "quote": "VARCHAR NOT NULL",
        "timeframe": "VARCHAR NOT NULL",
        "open": "DOUBLE NOT NULL",
        "high": "DOUBLE NOT NULL",
        "low": "DOUBLE NOT NULL",
        "close": "DOUBLE NOT NULL",
        "volume": "DOUBLE NOT NULL",
    },
    key=("venue", "venue_symbol", "ts", "timeframe"),
    required=("open", "high", "low", "close", "volume"),
    positive=("open", "high", "low", "close"),
)

OPEN_INTEREST = TableSpec(
    name="open_interest",
    source_columns=("venue", "venue_symbol", "ts", "oi_usd"),
    columns={
        "venue": "VARCHAR NOT NULL",
        "venue_symbol": "VARCHAR NOT NULL",
        "ts": "TIMESTAMP NOT NULL",
        "asset": "VARCHAR NOT NULL",
        "quote": "VARCHAR NOT NULL",
        "oi_usd": "DOUBLE NOT NULL",
    },
    key=KEY,
    required=("oi_usd",),
    positive=("oi_usd",),
)

ORDERBOOK_DEPTH = TableSpec(
    name="orderbook_depth",
    source_columns=("venue", "venue_symbol", "ts", "mid_price", "bid_depth_usd", "ask_depth_usd"),
    columns={
        "venue": "VARCHAR NOT NULL",
        "venue_symbol": "VARCHAR NOT NULL",
        "ts": "TIMESTAMP NOT NULL",
        "asset": "VARCHAR NOT NULL",
        "quote": "VARCHAR NOT NULL",
        "mid_price": "DOUBLE NOT NULL",
        "bid_depth_usd": "DOUBLE",
        "ask_depth_usd": "DOUBLE",
    },
    key=KEY,
    required=("mid_price",),
    optional=("bid_depth_usd", "ask_depth_usd"),
    positive=("mid_price", "bid_depth_usd", "ask_depth_usd"),
)

REJECTED_ROWS_DDL = """
CREATE TABLE IF NOT EXISTS rejected_rows (
  row_key VARCHAR NOT NULL,      -- hash of the raw record, so re-ingesting never duplicates
  raw_table VARCHAR NOT NULL,
  venue VARCHAR,
  venue_symbol VARCHAR,
  ts TIMESTAMP,
  field VARCHAR NOT NULL,
  value VARCHAR,
  reason VARCHAR NOT NULL,
  record VARCHAR NOT NULL,       -- the whole raw record as JSON: nothing is lost
  PRIMARY KEY (raw_table, row_key)
)
"""

DUPLICATE_ROWS_DDL = """
CREATE TABLE IF NOT EXISTS duplicate_rows (
  row_key VARCHAR NOT NULL,      -- hash of the raw record (same key as rejected_rows would give it)
  raw_table VARCHAR NOT NULL,
  venue VARCHAR,
  venue_symbol VARCHAR,
  ts TIMESTAMP,
  copies BIGINT NOT NULL,        -- extra exact copies of this row in its batch (stored once)
  record VARCHAR NOT NULL,
  PRIMARY KEY (raw_table, row_key)
)
"""

RAW_TABLES: dict[str, TableSpec] = {
    t.name: t for t in (FUNDING, CANDLES, OPEN_INTEREST, ORDERBOOK_DEPTH)
}

# file name of each table in the canonical data layout (``<dir>/market/<file>.parquet``)
LAYOUT_FILES: dict[str, str] = {
    "funding_rates": "funding",
    "candles": "candles",
    "open_interest": "open_interest",
    "orderbook_depth": "orderbook_depth",
}
