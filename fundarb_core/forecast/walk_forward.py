"""Rolling-origin (walk-forward) evaluation: the only evaluation the project trusts (spec §8, §9).

Timeline at an origin ``T`` (an hour; everything known at the instant ``T`` may be used):

* **training rows** — ``hour`` in ``[T − train_window_hours, T)`` (or every ``hour < T`` when
  ``expanding``) *and* ``target_known_at <= T``.  The second condition matters: an 8 h venue's
  next-settlement target of hour ``T − 3 h`` is only paid at ``T + 5 h``, and a 24 h spread target
  is known a day later — fitting on such rows would train on the future.  ``walk_forward``
  re-checks this on every training slice and raises :class:`LeakageError` if it ever fails.
* **predicted rows** — the panel rows with ``hour == T`` (features as of ``T``, built causally
  by the SQL models).
* **context** — panel rows with ``hour <= T`` for sequence models, with ``target`` and
  ``target_known_at`` set to NaN/NaT wherever the target is not yet known.

Speed (a year of hourly data, every series, in minutes): the model is refitted every
``refit_every`` origins and every origin in between uses that fit, so all rows of all origins of
one block ``T0 < T1 < … < Tk`` are predicted in **one** ``predict`` call.

**Contract for ``predict(rows, context)`` (sequence models must follow it):** within one block
``rows`` holds the rows of several origins ``T0 … Tk`` and ``context`` holds every panel row with
``hour <= Tk`` (not only ``<= T0``), targets masked as of the fit origin ``T0`` (the conservative
choice: a target paid between ``T0`` and ``Tk`` is hidden for the whole block).  A model must
therefore build the input of a row at hour ``t`` **only from context rows of the same series with
``hour <= t``** — look backwards from each row, never at the latest rows of ``context`` as a whole.
Features of rows with ``hour <= t`` are as of their own hour, hence causal for ``t``.  A model that
obeys this gets exactly what a step-by-step walk-forward would give it (up to the target masking,
which only hides more).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd

from fundarb_core.forecast.base import PRED_COLUMNS, Forecaster, Panel

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = (
    "series_id",
    "hour",
    "pred",
    "lo",
    "hi",
    "target",
    "current",
    "venue_type",
    "model",
    "fit_origin",
    "target_name",
)


class LeakageError(RuntimeError):
    """A training slice contained a row whose target was not known at the fit origin."""


def _ts(value: datetime | str | pd.Timestamp) -> np.datetime64:
    t = pd.Timestamp(value)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return np.datetime64(t.to_datetime64(), "us")


def _hours(frame: pd.DataFrame) -> np.ndarray:
    return frame["hour"].to_numpy(dtype="datetime64[us]")


def training_slice(
    frame: pd.DataFrame,
    origin: datetime | str | pd.Timestamp,
    train_window_hours: int = 168,
    expanding: bool = False,
) -> pd.DataFrame:
    """Rows a model fitted at ``origin`` may learn from (``frame`` sorted by ``hour``).

    ``hour`` in ``[origin − window, origin)`` (all ``hour < origin`` when ``expanding``), target present
    and ``target_known_at <= origin``.
    """
    t = _ts(origin)
    hours = _hours(frame)
    lo = 0 if expanding else int(np.searchsorted(hours, t - np.timedelta64(train_window_hours, "h"), "left"))
    hi = int(np.searchsorted(hours, t, "left"))
    part = frame.iloc[lo:hi]
    known = part["target_known_at"].to_numpy(dtype="datetime64[us]")
    ok = part["target"].notna().to_numpy() & ~np.isnat(known) & (known <= t)
    return part[ok]


def masked_context(
    frame: pd.DataFrame, asof: datetime | str | pd.Timestamp, upto: datetime | str | pd.Timestamp | None = None
) -> pd.DataFrame:
    """Rows with ``hour <= upto`` (default ``asof``), targets hidden where not known at ``asof``.

    ``frame`` must be sorted by ``hour``.  Cheap: the slice is lazy (pandas copy-on-write) and only the
    two masked columns are materialised.
    """
    t = _ts(asof)
    u = t if upto is None else _ts(upto)
    hi = int(np.searchsorted(_hours(frame), u, "right"))
    ctx = frame.iloc[:hi].copy(deep=False)
    known = ctx["target_known_at"].to_numpy(dtype="datetime64[us]")
    hidden = np.isnat(known) | (known > t)
    ctx["target"] = np.where(hidden, np.nan, ctx["target"].to_numpy(dtype="float64", na_value=np.nan))
    ctx["target_known_at"] = np.where(hidden, np.datetime64("NaT", "us"), known)
    return ctx


def check_no_leak(train: pd.DataFrame, origin: datetime | str | pd.Timestamp) -> None:
    """Raise :class:`LeakageError` if any training row's target is unknown at ``origin``."""
    t = _ts(origin)
    known = train["target_known_at"].to_numpy(dtype="datetime64[us]")
    bad = np.isnat(known) | (known > t) | (train["hour"].to_numpy(dtype="datetime64[us]") >= t)
    if bad.any():
        raise LeakageError(f"{int(bad.sum())} training rows not usable at origin {pd.Timestamp(t)}")


def walk_forward(
    panel: Panel,
    model_factory: Callable[[], Forecaster],
    start: datetime | str | pd.Timestamp,
    end: datetime | str | pd.Timestamp,
    train_window_hours: int = 168,
    expanding: bool = False,
    step_hours: int = 1,
    refit_every: int = 24,
    min_train_rows: int = 200,
) -> pd.DataFrame:
    """Out-of-sample predictions of a freshly built model at every origin ``T`` in ``[start, end)``.

    Origins run from ``start`` by ``step_hours``; a new model (``model_factory()``) is fitted every
    ``refit_every`` origins on :func:`training_slice` at that origin and predicts the rows of that
    origin and the following ``refit_every − 1`` (see the module docstring for the context contract).
    A block whose training slice has fewer than ``min_train_rows`` rows is skipped (no predictions).

    Returns one row per predicted panel row with ``OUTPUT_COLUMNS``: ``hour`` is the origin,
    ``fit_origin`` when the model that predicted it was fitted, ``target`` NaN where never known.
    """
    if refit_every < 1 or step_hours < 1:
        raise ValueError("refit_every and step_hours must be >= 1")
    frame = panel.frame
    hours = _hours(frame)
    if len(hours) > 1 and (np.diff(hours) < np.timedelta64(0, "h")).any():
        frame = frame.sort_values("hour", kind="stable").reset_index(drop=True)
        hours = _hours(frame)
    t_start, t_end = _ts(start), _ts(end)
    origins = np.arange(t_start, t_end, np.timedelta64(step_hours, "h"), dtype="datetime64[us]")
    out: list[pd.DataFrame] = []
    name = ""
    for b in range(0, len(origins), refit_every):
        block = origins[b : b + refit_every]
        t0, tk = block[0], block[-1]
        train = training_slice(frame, t0, train_window_hours, expanding)
        check_no_leak(train, t0)
        if len(train) < min_train_rows:
            log.info("origin %s: %d training rows < %d, block skipped", t0, len(train), min_train_rows)
            continue
        lo, hi = int(np.searchsorted(hours, t0, "left")), int(np.searchsorted(hours, tk, "right"))
        rows = frame.iloc[lo:hi]
        if step_hours > 1:
            rows = rows[np.isin(hours[lo:hi], block)]
        if rows.empty:
            continue
        model = model_factory().fit(train, panel.feature_cols)
        name = getattr(model, "name", type(model).__name__)
        pred = model.predict(rows, masked_context(frame, t0, tk)).reindex(rows.index)
        res = rows[["series_id", "hour", "target", "current", "venue_type"]].copy()
        for c in PRED_COLUMNS:
            res[c] = pred[c].to_numpy(dtype="float64", na_value=np.nan)
        res["model"] = name
        res["fit_origin"] = pd.Timestamp(t0)
        out.append(res)
    if not out:
        return pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    result = pd.concat(out, ignore_index=True)
    result["target_name"] = panel.target_name
    result["fit_origin"] = result["fit_origin"].astype("datetime64[us]")
    return result[list(OUTPUT_COLUMNS)]
