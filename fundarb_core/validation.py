"""Row validation: every incoming row is checked before it reaches a raw table.

A row that fails goes to ``rejected_rows`` with the venue, symbol, field, offending value,
reason and the whole raw record — never silently dropped — so a bad payload is visible and
recoverable.  Checks run vectorised over the batch; a row is reported under the *first*
check it fails, in the order listed in ``validate``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from fundarb_core.funding import ALLOWED_INTERVALS_HOURS, MAX_ABS_RATE_PER_HOUR
from fundarb_core.schema import FUNDING, TableSpec
from fundarb_core.sql_macros import TIMEFRAME_MINUTES
from fundarb_core.symbols import CanonicalSymbol, SymbolError, normalize_symbol
from fundarb_core.times import EARLIEST_PLAUSIBLE_TS, FUTURE_TOLERANCE
from fundarb_core.venues import UnknownVenueError

REJECTED_COLUMNS = ("row_key", "raw_table", "venue", "venue_symbol", "ts", "field", "value", "reason", "record")
DUPLICATE_COLUMNS = ("row_key", "raw_table", "venue", "venue_symbol", "ts", "copies", "record")


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass(frozen=True)
class Validated:
    """The outcome of validating one batch: rows to store, rows rejected, and exact copies of a row already in the
    batch (``duplicates``: one record per duplicated row, ``copies`` = how many extra copies came) — so that
    ``accepted + rejected + sum(copies) = rows in`` always holds."""

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    duplicates: pd.DataFrame = dc_field(default_factory=lambda: _empty(DUPLICATE_COLUMNS))

    @property
    def duplicate_rows(self) -> int:
        return int(self.duplicates["copies"].sum()) if not self.duplicates.empty else 0


def _record_json(row: dict[str, object]) -> str:
    def enc(v: object) -> object:
        if isinstance(v, pd.Timestamp):
            return None if pd.isna(v) else v.isoformat()
        if isinstance(v, float) and not np.isfinite(v):
            return repr(float(v))  # nan/inf survive JSON as strings ('nan', not numpy's 'np.float64(nan)')
        if isinstance(v, (np.floating, np.integer)):
            return enc(v.item())
        return v

    return json.dumps({k: enc(v) for k, v in row.items()}, sort_keys=True, default=str)


def rejected_frame(raw_table: str, rows: pd.DataFrame, field: pd.Series, reason: pd.Series) -> pd.DataFrame:
    """Build ``rejected_rows`` records for ``rows`` (aligned ``field``/``reason`` series)."""
    if rows.empty:
        return _empty(REJECTED_COLUMNS)
    records = [_record_json(r) for r in rows.to_dict(orient="records")]
    values = [
        None if f not in rows.columns else _record_json({"v": rows.at[i, f]})[6:-1]
        for i, f in zip(rows.index, field, strict=True)
    ]
    ts = pd.to_datetime(rows["ts"], utc=True, errors="coerce") if "ts" in rows else pd.NaT
    return pd.DataFrame(
        {
            "row_key": [hashlib.sha1(r.encode()).hexdigest() for r in records],
            "raw_table": raw_table,
            "venue": rows.get("venue"),
            "venue_symbol": rows.get("venue_symbol"),
            "ts": ts,
            "field": field.to_numpy(),
            "value": values,
            "reason": reason.to_numpy(),
            "record": records,
        }
    )


def duplicates_frame(raw_table: str, copies: pd.DataFrame) -> pd.DataFrame:
    """``duplicate_rows`` records for the extra copies in ``copies`` (one record per distinct row)."""
    if copies.empty:
        return _empty(DUPLICATE_COLUMNS)
    records = pd.Series([_record_json(r) for r in copies.to_dict(orient="records")], index=copies.index)
    first = ~records.duplicated()
    n = records.map(records.value_counts())
    rows = copies[first]
    ts = pd.to_datetime(rows["ts"], utc=True, errors="coerce") if "ts" in rows else pd.NaT
    return pd.DataFrame({
        "row_key": [hashlib.sha1(r.encode()).hexdigest() for r in records[first]],
        "raw_table": raw_table,
        "venue": rows["venue"].to_numpy() if "venue" in rows else None,
        "venue_symbol": rows["venue_symbol"].to_numpy() if "venue_symbol" in rows else None,
        "ts": ts.to_numpy() if isinstance(ts, pd.Series) else ts,
        "copies": n[first].astype("int64").to_numpy(),
        "record": records[first].to_numpy(),
    }).reset_index(drop=True)


def canonical_symbols(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Asset, quote and an error message per row (error empty where the symbol resolved)."""
    pairs = frame[["venue", "venue_symbol"]].drop_duplicates()
    resolved: dict[tuple[str, str], CanonicalSymbol | str] = {}
    for venue, sym in pairs.itertuples(index=False):
        try:
            resolved[(venue, sym)] = normalize_symbol(str(venue), str(sym))
        except (SymbolError, UnknownVenueError) as exc:
            resolved[(venue, sym)] = str(exc).strip("'\"")
    keys = list(zip(frame["venue"], frame["venue_symbol"], strict=True))
    out = [resolved[k] for k in keys]
    asset = pd.Series([o.asset if isinstance(o, CanonicalSymbol) else None for o in out], index=frame.index)
    quote = pd.Series([o.quote if isinstance(o, CanonicalSymbol) else None for o in out], index=frame.index)
    err = pd.Series([o if isinstance(o, str) else "" for o in out], index=frame.index)
    return asset, quote, err


def split_exact_copies(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` without exact copies of an earlier row, and those copies.  Done before anything derives columns
    from neighbouring rows (funding intervals from settlement gaps), so two copies stay identical."""
    frame = frame.reset_index(drop=True)
    if frame.empty:
        return frame, frame.iloc[:0]
    copy = frame.duplicated(keep="first")
    return frame[~copy].reset_index(drop=True), frame[copy]


def validate(
    spec: TableSpec, frame: pd.DataFrame, now: datetime | None = None, copies: pd.DataFrame | None = None
) -> Validated:
    """Split a batch into accepted and rejected rows.

    ``frame`` must hold the table's source columns (plus, for funding, the resolved
    ``interval_hours``).  Checks, in order: known venue and readable symbol; timestamp present
    not before 2016 and not in the future; required numbers finite; optional numbers finite where present;
    positivity; table rules (funding interval in {1,2,4,8} h and |rate per hour| below
    ``MAX_ABS_RATE_PER_HOUR``; candle timeframe known to ``sql_macros.TIMEFRAME_MINUTES``, high/low
    consistent, volume ≥ 0); and finally duplicate
    keys within the batch with conflicting values.  Exact copies of a row are not validated again: they are
    counted in ``duplicates`` (``copies``: those a caller already split off with :func:`split_exact_copies`).
    """
    now = now or datetime.now(UTC)
    if copies is None:
        frame, copies = split_exact_copies(frame)
    frame = frame.reset_index(drop=True)
    extra = [copies]
    n = len(frame)
    field = pd.Series([None] * n, dtype="object")
    reason = pd.Series([None] * n, dtype="object")

    def flag(mask: pd.Series | np.ndarray, fld: str, why: str | pd.Series) -> None:
        m = pd.Series(np.asarray(mask, dtype=bool)) & field.isna()
        if not m.any():
            return
        field[m] = fld
        reason[m] = why[m] if isinstance(why, pd.Series) else why

    asset, quote, sym_err = canonical_symbols(frame) if n else (pd.Series(dtype=object),) * 3
    flag(sym_err != "", "venue_symbol", sym_err)

    ts = pd.to_datetime(frame["ts"], utc=True, errors="coerce")
    flag(ts.isna(), "ts", "missing or unparseable timestamp")
    flag(ts < EARLIEST_PLAUSIBLE_TS.tz_localize("UTC"), "ts",
         f"timestamp before {EARLIEST_PLAUSIBLE_TS:%Y-%m-%d}, when no perpetual swap existed (an epoch or unit bug)")
    flag(ts > pd.Timestamp(now + FUTURE_TOLERANCE), "ts", f"timestamp is in the future (now {now:%Y-%m-%dT%H:%M}Z)")

    numeric = {c: pd.to_numeric(frame[c], errors="coerce") for c in (*spec.required, *spec.optional)}
    for col in spec.required:
        flag(~np.isfinite(numeric[col].to_numpy(dtype="float64")), col, "not a finite number")
    for col in spec.optional:
        v = numeric[col]
        raw_present = frame[col].notna()
        flag(raw_present & ~np.isfinite(v.to_numpy(dtype="float64")), col, "present but not a finite number")
    for col in spec.positive:
        v = numeric[col]
        flag(v.notna() & (v <= 0), col, "must be positive")

    if spec is FUNDING:
        interval = pd.to_numeric(frame["interval_hours"], errors="coerce")
        flag(~interval.isin(ALLOWED_INTERVALS_HOURS), "interval_hours",
             "interval not in {1, 2, 4, 8} hours (and not inferable from settlement gaps)")
        rph = (numeric["rate"] / interval).abs()
        flag(rph > MAX_ABS_RATE_PER_HOUR, "rate",
             f"|rate per hour| above the sane bound {MAX_ABS_RATE_PER_HOUR} (4 %/h, Hyperliquid's cap)")
    elif spec.name == "candles":
        # the bar length rule (sql_macros.bar_minutes): a bar of unknown length has no known close time
        flag(~frame["timeframe"].isin(list(TIMEFRAME_MINUTES)), "timeframe",
             f"unknown timeframe (known: {', '.join(TIMEFRAME_MINUTES)})")
        o, h, lo, c = (numeric[k] for k in ("open", "high", "low", "close"))
        flag(h < np.maximum.reduce([o, c, lo]), "high", "high below open/close/low")
        flag(lo > np.minimum(o, c), "low", "low above open/close")
        flag(numeric["volume"] < 0, "volume", "negative volume")

    ok = field.isna()
    accepted = frame[ok].copy()
    accepted["ts"] = ts[ok]
    accepted["asset"] = asset[ok]
    accepted["quote"] = quote[ok]

    # Same key twice in one batch: identical rows collapse; conflicting ones are rejected
    # after the first, so that an upsert never picks a winner silently.
    exact = accepted.drop_duplicates()
    extra.append(frame.loc[accepted.index.difference(exact.index), [c for c in copies.columns if c in frame]])
    dup = exact.duplicated(list(spec.key), keep="first")
    if dup.any():
        dup_rows = exact[dup]
        flag(pd.Series(frame.index.isin(dup_rows.index)), "ts", "duplicate key with conflicting values")
        exact = exact[~dup]
    accepted = exact

    bad = field.notna()
    rejected = rejected_frame(spec.name, frame[bad], field[bad], reason[bad])
    extra = [c for c in extra if len(c)]
    dups = duplicates_frame(spec.name, pd.concat(extra)) if extra else _empty(DUPLICATE_COLUMNS)
    return Validated(accepted=accepted.reset_index(drop=True), rejected=rejected, duplicates=dups)
