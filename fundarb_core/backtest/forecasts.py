"""Forecasts for a backtest: walk-forward predictions of the 24 h spread, in the keeper's format.

Why walk-forward here and not the registry's champion: a champion fitted on the whole history has seen the
backtest's future.  :func:`walk_forward_forecasts` fits the first model on data known before ``start`` only and
refits inside the period at each block origin on what was known then (:func:`fundarb_core.forecast.walk_forward`
re-checks every training slice), so the keeper at hour ``t`` reads a forecast made at ``t`` from a model that never
saw a target paid after its fit origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from fundarb_core.forecast.registry import ForecastSettings, model_factory, refit_every
from fundarb_core.forecast.targets import build_panel
from fundarb_core.forecast.walk_forward import walk_forward

if TYPE_CHECKING:
    from fundarb_core.backtest.engine import BacktestConfig

KEEPER_FORECAST_COLUMNS = ("hour", "asset", "short_venue", "long_venue", "forecast_spread_per_hour")


def keeper_forecasts(series_id: pd.Series, pred: pd.Series, hour: pd.Series | None = None) -> pd.DataFrame:
    """Spread forecasts (series ``asset|venue_a|venue_b``, spread = a − b) as the keeper reads them: both
    directions of each pair, the reverse with the opposite sign, plus ``hour`` when given."""
    parts = series_id.astype(str).str.split("|", expand=True)
    fwd = pd.DataFrame({"asset": parts[0].to_numpy(), "short_venue": parts[1].to_numpy(),
                        "long_venue": parts[2].to_numpy(), "forecast_spread_per_hour": pred.to_numpy(dtype="float64")})
    if hour is not None:
        fwd.insert(0, "hour", pd.to_datetime(hour).to_numpy())
    rev = fwd.rename(columns={"short_venue": "long_venue", "long_venue": "short_venue"}).assign(
        forecast_spread_per_hour=-fwd["forecast_spread_per_hour"])
    return pd.concat([fwd, rev[fwd.columns]], ignore_index=True)


def walk_forward_forecasts(
    conn: duckdb.DuckDBPyConnection, start: datetime | pd.Timestamp, end: datetime | pd.Timestamp,
    model: str = "lightgbm", settings: ForecastSettings | None = None, assets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Out-of-sample 24 h spread forecasts at every hour of ``[start, end)`` (columns ``KEEPER_FORECAST_COLUMNS``).

    The panel starts a training window (plus two days of slack) before ``start``; targets near ``end`` read
    spread rows past it, but a row is trained on only once its ``target_known_at`` ≤ the fit origin < ``end``,
    so nothing after ``end`` reaches a prediction.
    """
    cfg = settings or ForecastSettings()
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
    lo = t0 - pd.Timedelta(hours=cfg.train_window_hours + 48)
    panel = build_panel(conn, "spread_24h", lo.to_pydatetime(), t1.to_pydatetime(),
                        list(assets) if assets is not None else None)
    preds = walk_forward(panel, model_factory(model, cfg), t0, t1, train_window_hours=cfg.train_window_hours,
                         expanding=cfg.expanding, step_hours=cfg.step_hours, refit_every=refit_every(model, cfg))
    preds = preds[preds["pred"].notna()]
    if preds.empty:
        return pd.DataFrame(columns=list(KEEPER_FORECAST_COLUMNS))
    return keeper_forecasts(preds["series_id"], preds["pred"], preds["hour"])


def backtest_forecasts(conn: duckdb.DuckDBPyConnection, config: BacktestConfig) -> pd.DataFrame:
    """Walk-forward forecasts for a backtest, computed on the same replica it replays (raw rows known by its end,
    models rebuilt), so the forecasts cannot depend on anything after ``config.end`` either."""
    from fundarb_core.backtest.engine import market_replica

    replica = market_replica(conn, config.start, config.end, config.warmup_hours)
    try:
        return walk_forward_forecasts(replica, config.start, config.end, config.forecast_model, config.forecast,
                                      config.assets)
    finally:
        replica.close()
