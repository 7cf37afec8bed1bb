"""The expected spread over the holding horizon from a pair's own past: the keeper's default predictor.

Why a predictor and not the instantaneous spread: funding spreads between venues mean-revert within hours, while the
premium of one venue over another persists for weeks.  A keeper that orients, enters, holds and switches on the
spread it sees this hour pays a round trip for noise; one that decides on the mean spread it can expect over the
next ``H`` hours pays only for the persistent part.  Where a champion forecast of that horizon exists the keeper
reads it instead (:mod:`fundarb_core.backtest.forecasts`); this estimator is the fallback that needs nothing but
funding history, so it works on every public funding dataset.

The estimator, per ordered pair and hour ``t``, from the *observed* spread (what a trader saw at each past instant,
``spread_panel.observed_spread_per_hour``, never a rate settled after ``t``):

* ``m_w`` = trailing mean over the last ``w`` hours (``t − w, t]`` for each window ``w`` of ``windows``; a window
  counts only when at least ``min_coverage`` of its hours have a spread (a pair listed yesterday has no 720 h mean);
* ``blend`` = the mean of the ``m_w`` that count — short windows follow a regime change, long ones average out
  the hourly noise, and equal weights need no fitting;
* ``noise`` = the standard error of the longest counting window's mean, ``sd / sqrt(n / decorrelation_hours)``
  (spreads are autocorrelated over about a day, so ``n`` hours hold ``n / 24`` independent observations);
* ``expected = sign(blend) × max(|blend| − shrink_z × noise, 0)``: shrunk towards zero by its noise (soft
  thresholding), so a pair whose mean is within the noise predicts no edge and is neither entered nor held.

The predictor is antisymmetric (``E(a, b) = −E(b, a)``) and causal by construction (cumulative sums up to ``t``);
the leakage test alters every spread after ``t`` and checks nothing at or before ``t`` moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

PREDICTOR_NAME = "trailing_blend"
"""How decisions name this predictor (``Action.details['predictor']``)."""


@dataclass(frozen=True)
class PredictorParams:
    """The estimator's windows (hours), shrinkage and coverage (module doc); chosen walk-forward by the backtest."""

    windows: tuple[int, ...] = (168, 336, 720)
    shrink_z: float = 1.0
    decorrelation_hours: float = 24.0
    min_coverage: float = 0.5

    def __post_init__(self) -> None:
        if not self.windows or any(w <= 0 for w in self.windows):
            raise ValueError(f"predictor windows must be positive hours, got {self.windows}")
        object.__setattr__(self, "windows", tuple(sorted(int(w) for w in self.windows)))

    @property
    def lookback_hours(self) -> int:
        return max(self.windows)

    def label(self) -> str:
        return f"{PREDICTOR_NAME}({'/'.join(str(w) for w in self.windows)}h, z={self.shrink_z:g})"


@dataclass(frozen=True)
class SpreadHistory:
    """Observed spreads as a dense ``(hours, pairs)`` matrix: each unordered pair once, as ``a − b`` with venue
    ``a < b`` (the reverse pair is its negative), NaN where the pair had no fresh spread."""

    hours: pd.DatetimeIndex
    pairs: pd.DataFrame  # asset, venue_a, venue_b
    spread: FloatArray  # (len(hours), len(pairs))

    @classmethod
    def from_panel(cls, panel: pd.DataFrame, hours: pd.DatetimeIndex | None = None) -> SpreadHistory:
        """From ``spread_panel`` rows (``hour``, ``asset``, ``short_venue``, ``long_venue``,
        ``observed_spread_per_hour``) on a whole-hour grid (``hours``: the panel's span by default)."""
        p = panel[panel["short_venue"].astype(str) < panel["long_venue"].astype(str)]
        p = p[p["observed_spread_per_hour"].notna()]
        hour = pd.to_datetime(p["hour"])
        if hours is None:
            hours = (pd.date_range(hour.min(), hour.max(), freq="h") if len(p)
                     else pd.DatetimeIndex([], dtype="datetime64[ns]"))
        keys = p[["asset", "short_venue", "long_venue"]].astype(str)
        codes, uniques = pd.factorize(pd.MultiIndex.from_frame(keys), sort=True)
        pairs = pd.DataFrame(list(uniques), columns=["asset", "venue_a", "venue_b"]) if len(uniques) else \
            pd.DataFrame(columns=["asset", "venue_a", "venue_b"])
        mat = np.full((len(hours), len(pairs)), np.nan)
        row = hours.get_indexer(hour)
        ok = row >= 0
        mat[row[ok], codes[ok]] = p["observed_spread_per_hour"].to_numpy(dtype="float64")[ok]
        return cls(hours=hours, pairs=pairs, spread=mat)


def _trailing_sums(x: FloatArray, w: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Sum, sum of squares and count of the non-NaN values in each trailing window of ``w`` rows."""
    known = ~np.isnan(x)
    v = np.where(known, x, 0.0)
    zeros = np.zeros((1, x.shape[1]))
    cs = np.vstack([zeros, np.cumsum(v, axis=0)])
    cs2 = np.vstack([zeros, np.cumsum(v * v, axis=0)])
    cn = np.vstack([zeros, np.cumsum(known, axis=0, dtype="float64")])
    lo = np.maximum(np.arange(1, x.shape[0] + 1) - w, 0)
    hi = np.arange(1, x.shape[0] + 1)
    return cs[hi] - cs[lo], cs2[hi] - cs2[lo], cn[hi] - cn[lo]


def expected_spread(history: SpreadHistory, params: PredictorParams) -> FloatArray:
    """The predictor (module doc) at every hour of ``history``, ``(hours, pairs)`` like its matrix.

    The value at row ``t`` uses the rows ``≤ t`` only: the observed spread at the instant ``t`` is known then."""
    x = history.spread
    blend_sum = np.zeros_like(x)
    blend_n = np.zeros_like(x)
    noise = np.full_like(x, np.nan)
    for w in params.windows:  # ascending: the longest counting window's noise wins
        s, s2, n = _trailing_sums(x, w)
        counts = n >= params.min_coverage * w
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s / n
            var = np.maximum(s2 / n - mean * mean, 0.0) * n / np.maximum(n - 1.0, 1.0)
            se = np.sqrt(var) / np.sqrt(np.maximum(n / params.decorrelation_hours, 1.0))
        blend_sum += np.where(counts, mean, 0.0)
        blend_n += counts
        noise = np.where(counts, se, noise)
    with np.errstate(divide="ignore", invalid="ignore"):
        blend = np.where(blend_n > 0, blend_sum / blend_n, np.nan)
    return np.sign(blend) * np.maximum(np.abs(blend) - params.shrink_z * noise, 0.0)


def predictor_frame(history: SpreadHistory, params: PredictorParams, start: pd.Timestamp | None = None,
                    end: pd.Timestamp | None = None) -> pd.DataFrame:
    """The predictor at the hours of ``[start, end)`` in the keeper's forecast format (``hour``, ``asset``,
    ``short_venue``, ``long_venue``, ``forecast_spread_per_hour``), both directions of each pair."""
    values = expected_spread(history, params)
    keep = np.ones(len(history.hours), dtype=bool)
    if start is not None:
        keep &= history.hours >= start
    if end is not None:
        keep &= history.hours < end
    rows, cols = np.nonzero(~np.isnan(values) & keep[:, None])
    pairs = history.pairs
    fwd = pd.DataFrame({
        "hour": history.hours[rows], "asset": pairs["asset"].to_numpy()[cols],
        "short_venue": pairs["venue_a"].to_numpy()[cols], "long_venue": pairs["venue_b"].to_numpy()[cols],
        "forecast_spread_per_hour": values[rows, cols]})
    rev = fwd.rename(columns={"short_venue": "long_venue", "long_venue": "short_venue"}).assign(
        forecast_spread_per_hour=-fwd["forecast_spread_per_hour"])
    return pd.concat([fwd, rev[fwd.columns]], ignore_index=True).sort_values(
        ["hour", "asset", "short_venue", "long_venue"], kind="stable", ignore_index=True)
