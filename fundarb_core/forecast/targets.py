"""Build the two forecasting panels (see ``base.py``) from the SQL feature tables in DuckDB.

Both panels keep one row per (series, hour) where the *observed* value at the instant ``hour`` is
known (``current`` not null): that is the set of rows a trader could act on, and its presence
never depends on later data (the SQL models' contract), so the rows themselves are causal too.

* ``next_settlement`` — series ``venue|asset``.  At hour ``h`` the target is the per-hour rate of
  the next settlement after ``h``: ``stg_funding_hourly.rate_per_hour`` of row ``h`` (NaN where
  ``value_source = 'missing'``), known at that settlement (``known_at``).  ``current`` is the last
  settled rate seen at ``h`` (``observed_rate_per_hour``).  Features: the numeric columns of
  ``features``, all as of ``h``.
* ``spread_24h`` — series ``asset|short|long``.  At hour ``h`` the target is the mean of
  ``spread_panel.spread_per_hour`` over the hours ``[h, h + 24 h)`` (what holding the pair for the
  next day earns per hour), NaN unless all 24 hours are present; it is known when the last of them
  settles (``max(known_at)``).  ``current`` is ``observed_spread_per_hour`` at ``h``.  Features:
  ``pair_features`` plus a few of each leg's ``features`` columns (prefixed ``short_`` /
  ``long_``).  Only one direction per unordered pair is kept (``short_venue < long_venue``):
  the reverse direction is exactly the negation (target, current and every spread feature), so it
  would duplicate rows, double-count metrics and let a global model see each example twice.

``venue_type`` splits metrics by settlement regime: ``"1h"`` for hourly venues and ``"8h"`` for
*interval* venues (any interval above one hour — 4 h and 8 h alike, the label follows
``base.py``); pairs get ``"mixed"`` when one leg is hourly and the other is not.  It is taken
from the *observed* interval (known at ``h``), falling back to the accrual interval only where
nothing has been observed yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from fundarb_core.forecast.base import Panel

VENUE_TYPE_HOURLY = "1h"
VENUE_TYPE_INTERVAL = "8h"  # any venue settling less often than hourly (4 h or 8 h)
VENUE_TYPE_MIXED = "mixed"  # pairs only: one hourly leg, one interval leg

SPREAD_HORIZON_HOURS = 24

# key / label columns never used as features
_KEYS = {"venue", "asset", "hour", "short_venue", "long_venue"}
# exact rescalings of another feature (x 8760): no information, only double the split search
_REDUNDANT = {"rate_apr", "spread_apr"}
# the per-leg venue features joined into the spread panel (cheap: two equi-joins in DuckDB)
LEG_FEATURES = (
    "rate_ewma_24h",
    "rate_std_24h",
    "rate_z_168h",
    "hours_to_next_settlement",
    "oi_change_24h",
    "sigma_daily",
)


def _filters(
    alias: str, start: datetime | str | None, end: datetime | str | None, assets: list[str] | tuple[str, ...] | None
) -> tuple[str, list[Any]]:
    """SQL ``AND …`` conditions (and their parameters) for the optional hour window and assets."""
    parts: list[str] = []
    params: list[Any] = []
    if start is not None:
        parts.append(f"{alias}.hour >= ?")
        params.append(pd.Timestamp(start).tz_localize(None) if pd.Timestamp(start).tzinfo else pd.Timestamp(start))
    if end is not None:
        parts.append(f"{alias}.hour < ?")
        params.append(pd.Timestamp(end).tz_localize(None) if pd.Timestamp(end).tzinfo else pd.Timestamp(end))
    if assets:
        parts.append(f"{alias}.asset IN ({', '.join('?' for _ in assets)})")
        params.extend(assets)
    return "".join(f" AND {p}" for p in parts), params


def _numeric_features(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The numeric (and boolean) columns of ``table`` that are features (not keys, not rescalings)."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    numeric = ("DOUBLE", "FLOAT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT", "BOOLEAN", "DECIMAL")
    return [c for c, t in rows if c not in _KEYS | _REDUNDANT and t.upper().startswith(numeric)]


def _finish(frame: pd.DataFrame, feature_cols: list[str], target_name: str) -> Panel:
    """Common dtypes and ordering: float features, naive datetime hours, rows sorted by (hour, series)."""
    for c in feature_cols:
        frame[c] = frame[c].astype("float64")
    for c in ("current", "target"):
        frame[c] = frame[c].astype("float64")
    for c in ("hour", "target_known_at"):
        frame[c] = pd.to_datetime(frame[c]).astype("datetime64[us]")
    frame["series_id"] = frame["series_id"].astype(str)
    frame["venue_type"] = frame["venue_type"].astype(str)
    frame = frame.sort_values(["hour", "series_id"], kind="stable").reset_index(drop=True)
    return Panel(frame=frame, feature_cols=tuple(feature_cols), target_name=target_name)


def next_settlement_panel(
    conn: duckdb.DuckDBPyConnection,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    assets: list[str] | tuple[str, ...] | None = None,
) -> Panel:
    """Panel for the next settlement's per-hour rate of every (venue, asset), rows with ``start <= hour < end``."""
    feats = _numeric_features(conn, "features")
    where, params = _filters("s", start, end, assets)
    cols = ", ".join(f"f.{c}" for c in feats)
    sql = f"""
        SELECT s.venue || '|' || s.asset AS series_id, s.venue, s.asset, s.hour,
               s.observed_rate_per_hour AS current,
               CASE WHEN s.value_source <> 'missing' THEN s.rate_per_hour END AS target,
               CASE WHEN s.value_source <> 'missing' AND s.rate_per_hour IS NOT NULL THEN s.known_at END
                 AS target_known_at,
               CASE WHEN coalesce(s.observed_interval_hours, s.interval_hours) = 1 THEN '{VENUE_TYPE_HOURLY}'
                    ELSE '{VENUE_TYPE_INTERVAL}' END AS venue_type,
               {cols}
        FROM stg_funding_hourly s
        JOIN features f ON f.venue = s.venue AND f.asset = s.asset AND f.hour = s.hour
        WHERE s.observed_rate_per_hour IS NOT NULL {where}
    """
    frame = conn.execute(sql, params).df()
    return _finish(frame, feats, "next_settlement")


def spread_24h_panel(
    conn: duckdb.DuckDBPyConnection,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    assets: list[str] | tuple[str, ...] | None = None,
) -> Panel:
    """Panel for the next-24 h mean spread of every unordered venue pair (``short_venue < long_venue``).

    The target window reads ``spread_panel`` up to 23 h past ``end`` so rows near ``end`` still get
    their (future) target; their ``target_known_at`` says when it becomes usable.
    """
    pair_feats = _numeric_features(conn, "pair_features")
    where_p, params_p = _filters("p", start, end, assets)
    # the target scan is widened by the horizon at the end (and never needs rows before start)
    t_end = None if end is None else pd.Timestamp(end) + pd.Timedelta(hours=SPREAD_HORIZON_HOURS)
    where_t, params_t = _filters("sp", start, t_end, assets)
    leg_cols = ", ".join(f"{leg}.{c} AS {leg}_{c}" for leg in ("short", "long") for c in LEG_FEATURES)
    pcols = ", ".join(f"p.{c}" for c in pair_feats)
    h = SPREAD_HORIZON_HOURS
    sql = f"""
        WITH tgt AS (
            SELECT asset, short_venue, long_venue, hour,
                   avg(spread_per_hour) OVER w AS mean_next,
                   count(spread_per_hour) OVER w AS n_next,
                   max(known_at) OVER w AS known_next
            FROM spread_panel sp
            WHERE sp.short_venue < sp.long_venue {where_t}
            WINDOW w AS (PARTITION BY asset, short_venue, long_venue ORDER BY hour
                         RANGE BETWEEN CURRENT ROW AND INTERVAL {h - 1} HOURS FOLLOWING)
        )
        SELECT p.asset || '|' || p.short_venue || '|' || p.long_venue AS series_id,
               p.asset, p.short_venue, p.long_venue, p.hour,
               p.spread_per_hour AS current,
               CASE WHEN t.n_next = {h} THEN t.mean_next END AS target,
               CASE WHEN t.n_next = {h} THEN t.known_next END AS target_known_at,
               CASE WHEN p.short_interval_hours = 1 AND p.long_interval_hours = 1 THEN '{VENUE_TYPE_HOURLY}'
                    WHEN p.short_interval_hours > 1 AND p.long_interval_hours > 1 THEN '{VENUE_TYPE_INTERVAL}'
                    ELSE '{VENUE_TYPE_MIXED}' END AS venue_type,
               {pcols}, {leg_cols}
        FROM pair_features p
        LEFT JOIN tgt t ON t.asset = p.asset AND t.short_venue = p.short_venue
                       AND t.long_venue = p.long_venue AND t.hour = p.hour
        LEFT JOIN features short ON short.venue = p.short_venue AND short.asset = p.asset AND short.hour = p.hour
        LEFT JOIN features long ON long.venue = p.long_venue AND long.asset = p.asset AND long.hour = p.hour
        WHERE p.short_venue < p.long_venue AND p.spread_per_hour IS NOT NULL {where_p}
    """
    frame = conn.execute(sql, params_t + params_p).df()
    feats = pair_feats + [f"{leg}_{c}" for leg in ("short", "long") for c in LEG_FEATURES]
    return _finish(frame, feats, "spread_24h")


def build_panel(
    conn: duckdb.DuckDBPyConnection,
    target_name: str,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    assets: list[str] | tuple[str, ...] | None = None,
) -> Panel:
    """Dispatch on the target's name (``"next_settlement"`` or ``"spread_24h"``)."""
    builders = {"next_settlement": next_settlement_panel, "spread_24h": spread_24h_panel}
    if target_name not in builders:
        raise ValueError(f"unknown target {target_name!r}; expected one of {sorted(builders)}")
    return builders[target_name](conn, start=start, end=end, assets=assets)
