"""The one place a user's time becomes the project's time: naive ``datetime64`` in UTC.

Why one helper: every command takes times (``--start``, ``--end``, ``--as-of``, a Launchpad field) and the
project stores naive UTC.  ``pd.Timestamp("…+05:00").tz_localize(None)`` silently keeps the wall-clock digits and
drops the offset (10:00+05:00 became 10:00 UTC); converting first and then dropping the zone is the only correct
order, so every entry point goes through :func:`parse_user_time` / :func:`to_naive_utc`.

Also the bounds of a plausible market timestamp: data stamped before perpetual swaps existed (epoch 0, a
seconds/milliseconds mix-up) or ahead of the wall clock is a unit or clock bug, rejected by validation and never
allowed to stretch the daily partitions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from fundarb_core.errors import BadArgumentError

EARLIEST_PLAUSIBLE_TS = pd.Timestamp("2016-01-01")
"""No perpetual swap settled funding before BitMEX's XBTUSD (May 2016); anything earlier is an epoch/unit bug."""

FUTURE_TOLERANCE = timedelta(minutes=5)
"""A settlement or bar stamped this far ahead of the wall clock is a clock or unit bug."""


def to_naive_utc(value: object) -> pd.Timestamp:
    """A timestamp-like value as a naive UTC ``pd.Timestamp``: aware values are converted, naive ones are UTC."""
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def to_naive_dt(value: object) -> datetime:
    """:func:`to_naive_utc` as a ``datetime`` (what DuckDB parameters and the keeper's records hold); a naive
    ``datetime`` is returned as it is."""
    if type(value) is datetime and value.tzinfo is None:
        return value
    return to_naive_utc(value).to_pydatetime()


def optional_dt(value: object) -> datetime | None:
    """:func:`to_naive_dt`, with None for a missing value (a NULL read back from a table)."""
    return None if value is None or pd.isna(value) else to_naive_dt(value)  # type: ignore[arg-type]


def parse_user_time(text: str | None, what: str) -> pd.Timestamp:
    """Parse a time typed by a user, honouring its UTC offset; raise a one-line error naming ``what``."""
    if text is None or not str(text).strip():
        raise BadArgumentError(f"{what} is empty: give a time such as 2026-02-01 or 2026-02-01T08:00+02:00")
    try:
        ts = pd.Timestamp(str(text).strip())
    except (ValueError, TypeError, OverflowError):
        ts = None
    if ts is None or pd.isna(ts):
        raise BadArgumentError(
            f"{what} {text!r} is not a time: use ISO 8601, e.g. 2026-02-01 or 2026-02-01T08:00+02:00 (UTC unless "
            "an offset is given)")
    return to_naive_utc(ts)


def parse_period(start: str, end: str, command: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``--start`` and ``--end`` as naive UTC, end strictly after start."""
    lo, hi = parse_user_time(start, "--start"), parse_user_time(end, "--end")
    if hi <= lo:
        raise BadArgumentError(f"{command} end {hi} must be after start {lo} (UTC)")
    return lo, hi


def utc_now() -> datetime:
    return datetime.now(UTC)


def plausible(ts: pd.Series, now: datetime | None = None) -> pd.Series:
    """Mask of timestamps (aware UTC or naive UTC) inside the plausible range; NaT is not plausible."""
    now_ts = to_naive_utc(now or utc_now()) + FUTURE_TOLERANCE
    t = pd.to_datetime(ts, utc=True, errors="coerce").dt.tz_localize(None)
    return t.notna() & (t >= EARLIEST_PLAUSIBLE_TS) & (t <= now_ts)
