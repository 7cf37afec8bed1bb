"""Daily partitions of the raw assets, spanning the data's own range.

With the replay source the backfillable range is exactly the days the dataset covers, read
from the data at load time (so pointing ``FUNDARB_DATA_DIR`` elsewhere moves it); with the
live ccxt source the range runs up to today.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from fundarb_core.sources.replay import ReplaySource
from fundarb_pipelines.resources import source_kind_from_env


def _daily_partitions() -> dg.DailyPartitionsDefinition:
    first, last = ReplaySource().time_range()
    start = first.strftime("%Y-%m-%d")
    if source_kind_from_env() == "ccxt":
        return dg.DailyPartitionsDefinition(start_date=start, end_offset=1)  # today is ingestible
    end = (last.normalize() + timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end)


daily_partitions = _daily_partitions()
