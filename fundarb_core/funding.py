"""Funding-rate arithmetic: per-interval ↔ per-hour ↔ APR, and the interval of each row.

A rate is always *per its own interval*; comparing venues requires converting each row with
the interval in force **for that row** (it changes within one symbol's history), then
subtracting per-hour figures.  Mixing 1h and 8h rates is the commonest bug in public keepers,
so every conversion in the project goes through these functions.

Convention used everywhere: a rate with interval ``h`` settled at ``ts`` accrues evenly over
the ``h`` hours *before* ``ts``; per-hour rate = rate / h; APR = per-hour × 8760 (simple,
not compounded).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

HOURS_PER_YEAR = 8760.0
ALLOWED_INTERVALS_HOURS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)

# The sane bound on |rate per hour|.  Hyperliquid caps funding at 4 % per hour, the highest
# cap of any supported venue (Binance/Bybit cap at ±2-3 % per 8h for most symbols), so a
# per-hour magnitude above 4 % cannot be a real settlement: it is a unit bug (a percentage
# read as a decimal, or an APR read as a rate — payloads such as 1.79e11 % have been seen in
# public keepers).
MAX_ABS_RATE_PER_HOUR = 0.04

FloatArray = npt.NDArray[np.float64]


def per_hour(rate: float | FloatArray, interval_hours: float | FloatArray) -> float | FloatArray:
    """Rate per interval → rate per hour."""
    return np.divide(rate, interval_hours)


def per_interval(rate_per_hour: float | FloatArray, interval_hours: float | FloatArray) -> float | FloatArray:
    """Rate per hour → rate per interval of ``interval_hours``."""
    return np.multiply(rate_per_hour, interval_hours)


def to_apr(rate_per_hour: float | FloatArray) -> float | FloatArray:
    """Per-hour rate → annualised (simple) rate."""
    return np.multiply(rate_per_hour, HOURS_PER_YEAR)


def from_apr(apr: float | FloatArray) -> float | FloatArray:
    """Annualised (simple) rate → per-hour rate."""
    return np.divide(apr, HOURS_PER_YEAR)


def interval_to_apr(rate: float | FloatArray, interval_hours: float | FloatArray) -> float | FloatArray:
    """Rate per interval → APR, in one step."""
    return to_apr(per_hour(rate, interval_hours))


def snap_interval(hours: float | FloatArray, tolerance: float = 0.1) -> FloatArray:
    """Round a gap in hours to the allowed interval it matches, NaN where none matches.

    ``tolerance`` is relative: a 7.99h gap (ms jitter) is 8h, a 6h gap (a missed settlement
    on a 2h or 4h schedule, or a data hole) matches nothing and stays unknown.
    """
    h = np.atleast_1d(np.asarray(hours, dtype="float64"))
    out = np.full(h.shape, np.nan)
    for allowed in ALLOWED_INTERVALS_HOURS:
        out = np.where(np.isnan(out) & (np.abs(h - allowed) <= tolerance * allowed), allowed, out)
    return out


def infer_intervals(frame: pd.DataFrame) -> pd.Series:
    """Infer each settlement's interval from the gaps between consecutive settlements.

    Used where a source gives no interval.  For each (venue, venue_symbol) sorted by ``ts``
    the gap to the previous settlement is the interval that ended at this one; the first row
    (and a row after a hole) takes the gap to the next settlement.  Only gaps that snap to an
    allowed interval count, so a data hole never invents a 5h or 24h interval.  Returns a
    float series aligned to ``frame.index`` (NaN where nothing can be inferred).
    """
    if frame.empty:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    ordered = frame.sort_values(["venue", "venue_symbol", "ts"])
    grp = ordered.groupby(["venue", "venue_symbol"], sort=False)["ts"]
    prev_gap = grp.diff().dt.total_seconds() / 3600.0
    next_gap = -grp.diff(-1).dt.total_seconds() / 3600.0
    prev = pd.Series(snap_interval(prev_gap.to_numpy()), index=ordered.index)
    nxt = pd.Series(snap_interval(next_gap.to_numpy()), index=ordered.index)
    return prev.fillna(nxt).reindex(frame.index)


def resolve_intervals(frame: pd.DataFrame, fixed_interval: dict[str, float]) -> tuple[pd.Series, pd.Series]:
    """The interval in force for every row, and where it came from.

    ``fixed_interval`` maps venue ids whose interval is a venue rule (hourly venues) to that
    interval; on those venues a reported interval different from the rule comes from a gap in
    the source's collection and is overridden (``venue_rule``).  Elsewhere the reported
    interval is used (``reported``) and, where missing, inferred from gaps (``inferred``).
    Rows left NaN are caught by validation.
    """
    reported = pd.to_numeric(frame["interval_hours"], errors="coerce")
    rule = frame["venue"].map(fixed_interval).astype("float64")
    interval = reported.copy()
    source = pd.Series("reported", index=frame.index, dtype="object")

    has_rule = rule.notna()
    overridden = has_rule & (reported != rule)
    interval[has_rule] = rule[has_rule]
    source[overridden] = "venue_rule"

    missing = interval.isna()
    if missing.any():
        inferred = infer_intervals(frame)
        interval[missing] = inferred[missing]
        source[missing] = "inferred"
    return interval, source
