"""What a horizon keeper decides with: its parameters (walk-forward) and the expected spread at each hour.

One home for the backtest (:func:`horizon_inputs`, every hour of a period) and the live keeper
(:func:`live_inputs`, one instant), so both read the same history, run the same parameter search and the same
predictor.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from fundarb_core.backtest.parameter_search import DEFAULT_CHOICE, ParameterChoice, choose_parameters
from fundarb_core.backtest.research_sim import ResearchMarket
from fundarb_core.storage.market_queries import spread_history
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.expected_spread import SpreadHistory, predictor_frame
from fundarb_core.strategy.horizon_rule import HorizonParams

if TYPE_CHECKING:
    from fundarb_core.backtest.engine import BacktestConfig, Strategy

KEYS = ["hour", "asset", "short_venue", "long_venue"]


def research_slippage_bps(kcfg: KeeperConfig) -> float:
    """The slippage the research simulator charges per fill: the keeper's flat fallback, which most legs of the
    bundled and public histories pay (no liquidity measure); where a measure exists the keeper's √-impact is
    usually lower, so the search ranks settings on slightly conservative costs."""
    return kcfg.fallback_slippage_bps if "slippage" in kcfg.fallbacks else 0.0
DATA_EPOCH = datetime(2000, 1, 1)
MODEL_FORECAST_HOURS = 24.0
"""The horizon of the walk-forward model forecasts ``keeper_forecast`` reads (the ``spread_24h`` target)."""
"""Before any funding history: the parameter search reads everything before a backtest's end."""


def horizon_inputs(conn: duckdb.DuckDBPyConnection, config: BacktestConfig, kcfg: KeeperConfig,
                   forecasts: pd.DataFrame | None) -> tuple[list[ParameterChoice], pd.DataFrame]:
    """For a horizon strategy: the parameters of each month (chosen walk-forward on all the history before it,
    :mod:`fundarb_core.backtest.parameter_search`, or the config's own without ``walk_forward``) and the
    expected spread the cycle reads at every hour — the predictor with that month's windows, blended with the
    walk-forward model forecast of the next 24 h where ``keeper_forecast`` has one (:func:`blend_model_forecast`).

    Read from the user's database, not the replica (whose history starts only ``warmup_hours`` before the
    period): the parameter search wants every month of history before the first one it chooses for.  Nothing
    after ``end`` is read: ``spread_panel`` is row-wise (no window, so no summation order that later rows could
    change) and its rows at an hour depend only on settlements up to one interval after it, which the search
    never scores (``SETTLEMENT_LAG_HOURS``) and the predictor never reads (observed spreads only)."""
    panel = spread_history(conn, DATA_EPOCH, config.end.to_pydatetime())
    market = ResearchMarket.from_panel(panel, kcfg, config.half_spread_bps, research_slippage_bps(kcfg))
    if config.walk_forward:
        choices = choose_parameters(market, config.start, config.end)
    else:
        rule = HorizonParams(kcfg.holding_hours, kcfg.entry_margin)
        choices = [ParameterChoice(config.start, config.predictor, rule, None, None, float("nan"), float("nan"))]
    edges = [c.month for c in choices[1:]] + [config.end]
    parts = []
    for c, e in zip(choices, edges, strict=True):
        part = predictor_frame(market.history, c.predictor, c.month, e)
        if config.strategy == "keeper_forecast" and forecasts is not None and len(forecasts):
            part = blend_model_forecast(part, forecasts, c.rule.horizon_hours)
        parts.append(part)
    expected = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=KEYS)
    return choices, expected


def blend_model_forecast(expected: pd.DataFrame, forecasts: pd.DataFrame, horizon_hours: float,
                         model_hours: float = MODEL_FORECAST_HOURS) -> pd.DataFrame:
    """The expected mean spread over ``horizon_hours`` when a model forecasts only the first ``model_hours``:
    ``(model_hours × model + (H − model_hours) × predictor) / H`` where both exist, the predictor alone elsewhere.

    Why not the model's value alone: it forecasts the next day's mean spread, and a keeper that enters, holds and
    switches on a one-day forecast over a two-to-four-week horizon trades on the same hourly noise the predictor
    exists to average out (measured: 600× annual turnover and −40 % APR on 2026-02 → 05).  The model still moves
    the estimate by its share of the horizon."""
    fc = forecasts.assign(hour=pd.to_datetime(forecasts["hour"]))[[*KEYS, "forecast_spread_per_hour"]]
    fc = fc.drop_duplicates(KEYS, keep="last").rename(columns={"forecast_spread_per_hour": "model"})
    out = expected.merge(fc, on=KEYS, how="left")
    w = min(model_hours / horizon_hours, 1.0) if horizon_hours > 0 else 1.0
    blended = w * out["model"] + (1.0 - w) * out["forecast_spread_per_hour"]
    out["forecast_spread_per_hour"] = blended.where(out["model"].notna(), out["forecast_spread_per_hour"])
    return out.drop(columns="model")


def month_config(kcfg: KeeperConfig, choice: ParameterChoice, strategy: Strategy | str = "keeper") -> KeeperConfig:
    """The keeper's config with a choice's horizon, margin and predictor name."""
    label = choice.predictor.label()
    if strategy == "keeper_forecast":
        label = f"{label} blended with the 24 h model forecast"
    return replace(kcfg, holding_hours=choice.rule.horizon_hours, entry_margin=choice.rule.entry_margin,
                   predictor=label)




def live_inputs(conn: duckdb.DuckDBPyConnection, now: datetime, kcfg: KeeperConfig, half_spread_bps: float = 1.0,
                walk_forward: bool = True) -> tuple[ParameterChoice, KeeperConfig, pd.DataFrame]:
    """For the live keeper at ``now``: the parameters the search chooses on everything known before ``now`` (or
    the a-priori defaults without ``walk_forward``), the config with them, and the predictor's expected spreads
    at ``now`` in the cycle's forecast format (no ``hour`` column)."""
    t = pd.Timestamp(now).floor("h")
    if walk_forward:
        panel = spread_history(conn, DATA_EPOCH, (t + pd.Timedelta(hours=1)).to_pydatetime())
        market = ResearchMarket.from_panel(panel, kcfg, half_spread_bps, research_slippage_bps(kcfg))
        choice = choose_parameters(market, t, t + pd.Timedelta(hours=1))[0]
    else:
        panel = None
        choice = ParameterChoice(t, *DEFAULT_CHOICE, None, None, float("nan"), float("nan"))
    back = t - pd.Timedelta(hours=choice.predictor.lookback_hours + 1)
    recent = spread_history(conn, back.to_pydatetime(), (t + pd.Timedelta(hours=1)).to_pydatetime()) \
        if panel is None else panel[pd.to_datetime(panel["hour"]) >= back]
    hist = SpreadHistory.from_panel(recent, pd.date_range(back, t, freq="h"))
    frame = predictor_frame(hist, choice.predictor, t, t + pd.Timedelta(hours=1)).drop(columns="hour")
    return choice, month_config(kcfg, choice), frame
