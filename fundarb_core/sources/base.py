"""The one protocol every market-data source implements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

import pandas as pd


@runtime_checkable
class MarketSource(Protocol):
    """A source of raw market rows for a half-open time window ``[start, end)``.

    ``fetch`` returns a frame with exactly ``RAW_TABLES[table].source_columns`` (``ts`` as a
    UTC ``datetime64``); rows are *not* validated here — validation is ingestion's job, so
    that a bad row is recorded in ``rejected_rows`` instead of vanishing inside a source.
    """

    name: str

    def fetch(self, table: str, start: datetime, end: datetime) -> pd.DataFrame: ...

    def venues(self) -> list[str]: ...
