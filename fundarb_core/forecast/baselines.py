"""Baselines every model must beat: persistence (last observed value) and an EWMA of the observed series.

Both are point rules with no parameters to learn; ``fit`` only learns an 80 % interval from the
empirical quantiles of the training residuals (target − pred), per ``venue_type`` because hourly
and interval venues have residual scales an order of magnitude apart (one global band would
over-cover one and under-cover the other).  That makes their interval coverage measurable and
comparable with the learnt models'.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fundarb_core.forecast.base import INTERVAL_LEVEL, PRED_COLUMNS

# the EWMA feature to use, by target: the first of these present in the panel's features wins
EWMA_COLUMNS = ("rate_ewma_24h", "spread_mean_24h")
_MIN_RESIDUALS = 20  # fewer residuals in a venue_type than this: use the global quantiles


class ResidualBands:
    """Empirical central interval of residuals, by ``venue_type`` with a global fallback."""

    def __init__(self, level: float = INTERVAL_LEVEL) -> None:
        self.q = ((1 - level) / 2, (1 + level) / 2)
        self.by_type: dict[str, tuple[float, float]] = {}
        self.overall: tuple[float, float] = (np.nan, np.nan)

    def fit(self, residual: pd.Series, venue_type: pd.Series) -> ResidualBands:
        """Learn the quantiles of ``residual`` (NaNs ignored)."""
        ok = residual.notna()
        r, vt = residual[ok], venue_type[ok]
        if len(r):
            self.overall = tuple(float(x) for x in np.quantile(r.to_numpy(), self.q))  # type: ignore[assignment]
        self.by_type = {}
        for key, grp in r.groupby(vt, sort=True):
            if len(grp) >= _MIN_RESIDUALS:
                lo, hi = np.quantile(grp.to_numpy(), self.q)
                self.by_type[str(key)] = (float(lo), float(hi))
        return self

    def apply(self, pred: pd.Series, venue_type: pd.Series) -> tuple[pd.Series, pd.Series]:
        """``pred`` + the residual quantiles of each row's venue type."""
        lo_q = venue_type.map(lambda v: self.by_type.get(v, self.overall)[0]).astype("float64")
        hi_q = venue_type.map(lambda v: self.by_type.get(v, self.overall)[1]).astype("float64")
        return pred + lo_q, pred + hi_q


class _PointRule:
    """A forecaster whose point forecast is a fixed function of the row; only the interval is learnt."""

    name = "point_rule"

    def __init__(self) -> None:
        self.bands = ResidualBands()
        self.feature_cols: tuple[str, ...] = ()

    def _point(self, rows: pd.DataFrame) -> pd.Series:
        raise NotImplementedError

    def fit(self, train: pd.DataFrame, feature_cols: tuple[str, ...]) -> _PointRule:
        """Learn the residual bands on the training rows."""
        self.feature_cols = tuple(feature_cols)
        self._on_fit(feature_cols)
        self.bands.fit(train["target"] - self._point(train), train["venue_type"])
        return self

    def _on_fit(self, feature_cols: tuple[str, ...]) -> None:  # optional hook
        pass

    def predict(self, rows: pd.DataFrame, context: pd.DataFrame) -> pd.DataFrame:
        """Point forecast plus residual band; ``context`` is unused (these rules are row-local)."""
        pred = self._point(rows).astype("float64")
        lo, hi = self.bands.apply(pred, rows["venue_type"])
        return pd.DataFrame({PRED_COLUMNS[0]: pred, PRED_COLUMNS[1]: lo, PRED_COLUMNS[2]: hi}, index=rows.index)


class Persistence(_PointRule):
    """Tomorrow looks like now: pred = ``current`` (the last observed value at the origin)."""

    name = "persistence"

    def _point(self, rows: pd.DataFrame) -> pd.Series:
        return rows["current"]


class Ewma(_PointRule):
    """pred = an exponentially weighted mean of the observed series (``rate_ewma_24h`` for settlements,
    ``spread_mean_24h`` for spreads), falling back to ``current`` where the feature is missing.

    Smoothing removes the settlement-to-settlement noise of hourly venues, which persistence carries
    into every forecast.
    """

    name = "ewma"

    def __init__(self, column: str | None = None) -> None:
        super().__init__()
        self.column = column
        self._col: str | None = column

    def _on_fit(self, feature_cols: tuple[str, ...]) -> None:
        if self.column is None:
            self._col = next((c for c in EWMA_COLUMNS if c in feature_cols), None)

    def _point(self, rows: pd.DataFrame) -> pd.Series:
        if self._col is None or self._col not in rows:
            return rows["current"]
        return rows[self._col].fillna(rows["current"])
