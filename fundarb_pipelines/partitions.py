"""Daily partitions of the raw assets, spanning the data's own plausible range — computed on first use.

With the replay source the backfillable range is the days the dataset covers, read from the ``ts`` column of
each file the first time a partitions definition is needed (not at import: ``fundarb summary`` or a broken data
directory must not pay for, or fail on, reading the data).  Rows stamped before 2016 or in the future do not
count, so one absurd timestamp never stretches the range back to 1970; the first and last partitions are
open-ended for the replay source (see ``fundarb_pipelines.assets.raw``), so such rows — and rows with no
timestamp — still reach validation and ``rejected_rows``.  With the live ccxt source the range runs up to today.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

import dagster as dg

from fundarb_core.sources.replay import ReplaySource, default_data_dir
from fundarb_pipelines.resources import source_kind_from_env


@lru_cache(maxsize=8)
def _partitions(data_dir: str, kind: str) -> dg.DailyPartitionsDefinition:
    first, last = ReplaySource(data_dir).time_range()
    start = first.strftime("%Y-%m-%d")
    if kind == "ccxt":
        return dg.DailyPartitionsDefinition(start_date=start, end_offset=1)  # today is ingestible
    end = (last.normalize() + timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end)


def daily_partitions() -> dg.DailyPartitionsDefinition:
    """The raw assets' partitions for the configured data directory and source kind (cached per pair)."""
    return _partitions(str(default_data_dir()), source_kind_from_env())


def open_edges(start_key: str, end_key: str) -> tuple[bool, bool]:
    """Whether a run over ``[start_key, end_key]`` starts at the first partition and ends at the last one."""
    keys = daily_partitions().get_partition_keys()
    return start_key == keys[0], end_key == keys[-1]

