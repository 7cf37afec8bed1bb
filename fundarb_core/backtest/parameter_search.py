"""Walk-forward choice of the keeper's parameters: before each month, the setting that earned most before it.

Why walk-forward: a horizon or a window picked by looking at the period it is scored on reports a figure nobody
could have earned.  Here every month of a backtest trades with the setting of :data:`PREDICTOR_GRID` ×
:data:`RULE_GRID` whose research-simulator run (:mod:`fundarb_core.backtest.research_sim`: the keeper's rule and
predictor, unit notional per asset, the backtest's fees) earned the most over every hour *known* before the month
began (expanding window).  An hour's earnings are known at its settlement, up to one 8 h interval later, so the
score stops ``SETTLEMENT_LAG_HOURS`` before the month; the simulator itself is causal (each decision reads only the
spreads observed up to it), so changing any data after a month's start cannot change what was chosen for it — the
leakage test alters it and checks.

Choices: expanding rather than rolling (no look-back length to choose in turn); months with less than
``MIN_HISTORY_HOURS`` of scored history keep :data:`DEFAULT_CHOICE`, the a-priori setting (the keeper's defaults);
ties go to the earlier setting of the grid, so the choice is deterministic.  The grids are deliberately coarse and
fixed in code, not fitted: short / medium / long trailing windows, no / some / strong shrinkage; horizons of one,
two and four weeks with a small or a large margin (the rule depends on ``H / (1 + margin)``, so each pair of
values is a distinct effective horizon).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fundarb_core.backtest.research_sim import ResearchMarket, simulate
from fundarb_core.strategy.expected_spread import PredictorParams, expected_spread
from fundarb_core.strategy.horizon_rule import HorizonParams

PREDICTOR_GRID: tuple[PredictorParams, ...] = tuple(
    PredictorParams(windows=w, shrink_z=z) for w in ((24, 168), (168, 336, 720), (336, 720), (336,))
    for z in (0.0, 0.5, 1.0))
RULE_GRID: tuple[HorizonParams, ...] = tuple(
    HorizonParams(horizon_hours=h, entry_margin=m) for h in (168.0, 336.0, 720.0) for m in (0.25, 1.0))
SETTLEMENT_LAG_HOURS = 9
"""An hour's accrued funding is known at its settlement, at most one 8 h interval later (plus the hour itself)."""
MIN_HISTORY_HOURS = 24 * 30
"""A month is chosen for only when a month of scored history precedes it."""


@dataclass(frozen=True)
class ParameterChoice:
    """The setting a month trades with and the evidence for it."""

    month: pd.Timestamp
    predictor: PredictorParams
    rule: HorizonParams
    scored_from: pd.Timestamp | None
    scored_to: pd.Timestamp | None
    score: float  # research P&L per unit notional per asset-slot over the scored hours (NaN: default)
    runner_up_score: float

    def as_row(self) -> dict[str, object]:
        return {"month": self.month.strftime("%Y-%m"), "windows_h": "/".join(map(str, self.predictor.windows)),
                "shrink_z": self.predictor.shrink_z, "horizon_h": self.rule.horizon_hours,
                "entry_margin": self.rule.entry_margin, "scored_from": self.scored_from, "scored_to": self.scored_to,
                "score": self.score, "runner_up_score": self.runner_up_score}


DEFAULT_CHOICE = (PredictorParams(), HorizonParams())


def month_starts(start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """The start of the backtest and every calendar month start inside ``(start, end)``."""
    inner = pd.date_range(start.to_period("M").to_timestamp() + pd.offsets.MonthBegin(1), end, freq="MS",
                          inclusive="left")
    return [start, *[m for m in inner if start < m < end]]


def grid_pnl(market: ResearchMarket) -> pd.DataFrame:
    """Hourly research P&L of every grid setting, columns ``(predictor index, rule index)``."""
    out: dict[tuple[int, int], pd.Series] = {}
    for i, pred in enumerate(PREDICTOR_GRID):
        runs = simulate(market, pred, RULE_GRID, expected=expected_spread(market.history, pred))
        for j, run in enumerate(runs):
            out[(i, j)] = run.pnl
    return pd.DataFrame(out)


def choose_parameters(market: ResearchMarket, start: pd.Timestamp, end: pd.Timestamp,
                      pnl: pd.DataFrame | None = None,
                      min_history_hours: int = MIN_HISTORY_HOURS) -> list[ParameterChoice]:
    """One :class:`ParameterChoice` per month of ``[start, end)`` (module doc); a month with less than
    ``min_history_hours`` of scored history keeps :data:`DEFAULT_CHOICE`."""
    table = grid_pnl(market) if pnl is None else pnl
    first_scored = market.history.hours[0] + pd.Timedelta(hours=max(p.lookback_hours for p in PREDICTOR_GRID))
    choices = []
    for m in month_starts(start, end):
        upto = m - pd.Timedelta(hours=SETTLEMENT_LAG_HOURS)
        window = table[(table.index >= first_scored) & (table.index < upto)]
        if len(window) < min_history_hours:
            choices.append(ParameterChoice(m, *DEFAULT_CHOICE, None, None, float("nan"), float("nan")))
            continue
        score = window.sum(axis=0).to_numpy()
        best = int(np.argmax(score))  # first maximum: ties go to the earlier setting
        runner = float(np.max(np.delete(score, best))) if len(score) > 1 else float("nan")
        i, j = table.columns[best]
        choices.append(ParameterChoice(m, PREDICTOR_GRID[i], RULE_GRID[j], window.index[0],
                                       window.index[-1], float(score[best]), runner))
    return choices


def choices_frame(choices: list[ParameterChoice]) -> pd.DataFrame:
    return pd.DataFrame([c.as_row() for c in choices])
