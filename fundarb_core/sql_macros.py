"""One home for the rules that both the SQL models and Python apply: quote ranking, bar length, the staleness of an
observed funding rate, and realised σ.

Why: each rule used to be written out wherever it was needed — USDT-first ranking in seven places, bar length by
timeframe in three that disagreed on an unknown timeframe (1440 minutes in SQL, an error in Python), the
two-interval staleness rule in ``spread_panel.sql``, ``regime_labels.sql`` and the keeper snapshot, σ in the
``volatility`` model and again in the leverage-safety backtest.  Here each rule is one table or constant; the
DuckDB macros are *rendered from* it by :func:`macro_sql`, and the Python functions of the same names read the same
table, so SQL and Python cannot drift apart.

Macros (installed by :func:`install_macros`; names and arguments are the public contract):

* ``quote_rank(quote)`` → INTEGER: 0 for USDT, 1 for USDC, 2 for anything else (NULL included).  Where a venue
  lists an asset against several quotes, the lowest rank is the one series kept.
* ``bar_minutes(timeframe)`` → INTEGER minutes of a ccxt timeframe in :data:`TIMEFRAME_MINUTES`.  An unknown
  timeframe (or NULL) **raises** ``unknown timeframe '7m' …`` — decided once for SQL and Python: a bar whose
  length is unknown has no known close time, and silently guessing one (the old SQL said a day) would let a
  model read a close before it existed.  Ingestion rejects such rows (:mod:`fundarb_core.validation`), so the
  error only fires on rows that bypassed it.
* ``rate_is_fresh(age_hours, interval_hours, max_intervals := 2.0)`` → BOOLEAN: an observed rate is fresh while
  its settlement is at most ``max_intervals`` of its own funding intervals old (a venue that stopped reporting
  drops out rather than contribute a stale rate).  Unknown age or interval → false (never NULL).
* ``consecutive_log_return(close, prev_close, gap_minutes, bar_minutes)`` → ``ln(close / prev_close)`` when the
  previous bar is the adjacent one (``gap_minutes = bar_minutes``), else NULL: a return is never spread over a gap.
* ``trailing_sigma_bar(log_return, series, close_ts, as_of_before)`` → sample σ (ddof 1) of the returns of the
  same ``series`` (a partition key, e.g. ``row(venue, asset)``) whose bar close lies in ``(as_of − 168 h, as_of]``
  with ``as_of = close_ts − as_of_before`` (an INTERVAL).  The ``volatility`` model asks as of its own row's close
  (``INTERVAL 0 MINUTE``); the leverage-safety backtest as of each bar's open (the bar length), including the
  open after a missing bar.  A window function: the query must hold every bar of the series it needs.
* ``trailing_return_count(log_return, series, close_ts, as_of_before)`` → how many returns that σ used.
* ``sigma_daily(sigma_bar, bar_minutes)`` → ``σ_bar × sqrt(1440 / bar_minutes)`` (bars per day).

Python twins: :func:`quote_rank`, :func:`bar_minutes` (``ValueError`` on an unknown timeframe),
:func:`rate_is_fresh` and :func:`sigma_daily` (NumPy-vectorised), :data:`MAX_RATE_AGE_INTERVALS`,
:data:`SIGMA_WINDOW_HOURS`.  This module imports no DuckDB (only for type checking): the strategy package may
import it without pulling in a database.

Macros are ``TEMP``: they live in the connection, not in the warehouse file, so a read-only connection can
install them and an old database file never carries a stale definition.  A DuckDB *cursor* is a new connection
and needs its own :func:`install_macros`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import duckdb

QUOTE_ORDER: tuple[str, ...] = ("USDT", "USDC")
"""Quote currencies in order of preference; any other quote ranks ``len(QUOTE_ORDER)`` (after all of them)."""

TIMEFRAME_MINUTES: Mapping[str, int] = MappingProxyType({
    "1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30,
    "1h": 60, "2h": 120, "4h": 240, "6h": 360, "8h": 480, "12h": 720,
    "1d": 1440, "3d": 4320, "1w": 10080, "1M": 43200,
})  # fmt: skip
"""Bar length in minutes of every ccxt unified timeframe (``1M`` = 30 days; ``m`` minute vs ``M`` month)."""

MINUTES_PER_DAY = 1440
MAX_RATE_AGE_INTERVALS = 2.0
"""An observed funding rate older than this many of its own intervals is stale."""
SIGMA_WINDOW_HOURS = 168
"""Realised σ look-back (spec §3: 7 days)."""


def quote_rank(quote: object) -> int:
    """0 for USDT, 1 for USDC, 2 for any other quote (a missing one — None, NaN, pd.NA — included): lower first."""
    return QUOTE_ORDER.index(quote) if isinstance(quote, str) and quote in QUOTE_ORDER else len(QUOTE_ORDER)


def _unknown_timeframe(timeframe: object) -> str:
    return f"unknown timeframe {timeframe!r} (known: {', '.join(TIMEFRAME_MINUTES)}; see fundarb_core.sql_macros)"


def bar_minutes(timeframe: str) -> int:
    """Bar length in minutes; ``ValueError`` naming the timeframe when it is not in :data:`TIMEFRAME_MINUTES`."""
    try:
        return TIMEFRAME_MINUTES[timeframe]
    except (KeyError, TypeError):
        raise ValueError(_unknown_timeframe(timeframe)) from None


def rate_is_fresh(
    age_hours: npt.ArrayLike, interval_hours: npt.ArrayLike, max_intervals: float = MAX_RATE_AGE_INTERVALS
) -> npt.NDArray[np.bool_]:
    """``age ≤ max_intervals × interval``, element-wise; NaN age or interval → ``False`` (as the SQL macro)."""
    age = np.asarray(age_hours, dtype="float64")
    interval = np.asarray(interval_hours, dtype="float64")
    with np.errstate(invalid="ignore"):
        return np.less_equal(age, max_intervals * interval)  # NaN compares False


def sigma_daily(sigma_bar: npt.ArrayLike, bar_minutes: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``σ_bar × sqrt(bars per day)``: a per-bar σ scaled to a day (NaN stays NaN)."""
    return np.multiply(sigma_bar, np.sqrt(np.divide(float(MINUTES_PER_DAY), bar_minutes)))


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def macro_sql() -> list[str]:
    """The ``CREATE OR REPLACE TEMP MACRO`` statements, rendered from the tables and constants above."""
    quotes = " ".join(f"WHEN {_sql_str(q)} THEN {i}" for i, q in enumerate(QUOTE_ORDER))
    frames = " ".join(f"WHEN {_sql_str(tf)} THEN {m}" for tf, m in TIMEFRAME_MINUTES.items())
    known = _sql_str(f" (known: {', '.join(TIMEFRAME_MINUTES)}; see fundarb_core.sql_macros)")
    # (as_of − window, as_of]: RANGE frames include both ends, so the far end is one microsecond (DuckDB's
    # timestamp resolution) inside the window
    window_us = SIGMA_WINDOW_HOURS * 3_600_000_000 - 1
    frame = (f"PARTITION BY series ORDER BY close_ts RANGE BETWEEN (INTERVAL {window_us} MICROSECONDS + as_of_before)"
             " PRECEDING AND as_of_before PRECEDING")
    return [
        f"CREATE OR REPLACE TEMP MACRO quote_rank(quote) AS CASE quote {quotes} ELSE {len(QUOTE_ORDER)} END",
        f"CREATE OR REPLACE TEMP MACRO bar_minutes(timeframe) AS CASE timeframe {frames} "
        f"ELSE error('unknown timeframe ' || coalesce('''' || timeframe || '''', 'NULL') || {known}) END",
        "CREATE OR REPLACE TEMP MACRO rate_is_fresh(age_hours, interval_hours, "
        f"max_intervals := {MAX_RATE_AGE_INTERVALS!r}) AS coalesce(age_hours <= max_intervals * interval_hours, false)",
        "CREATE OR REPLACE TEMP MACRO consecutive_log_return(close, prev_close, gap_minutes, bar_minutes) AS "
        "CASE WHEN gap_minutes = bar_minutes THEN ln(close / prev_close) END",
        "CREATE OR REPLACE TEMP MACRO trailing_sigma_bar(log_return, series, close_ts, as_of_before) AS "
        f"stddev_samp(log_return) OVER ({frame})",
        "CREATE OR REPLACE TEMP MACRO trailing_return_count(log_return, series, close_ts, as_of_before) AS "
        f"count(log_return) OVER ({frame})",
        "CREATE OR REPLACE TEMP MACRO sigma_daily(sigma_bar, bar_minutes) AS "
        f"sigma_bar * sqrt({float(MINUTES_PER_DAY)!r} / bar_minutes)",
    ]


def install_macros(conn: duckdb.DuckDBPyConnection) -> None:
    """Install every rule macro on ``conn`` (idempotent, a few milliseconds; read-only connections too)."""
    for statement in macro_sql():
        conn.execute(statement)
