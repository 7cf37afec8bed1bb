"""The research simulator: the keeper's decision rule over every asset and hour in seconds, for parameter search.

Why a second simulator beside the hour-by-hour replay of the keeper's cycle (:mod:`fundarb_core.backtest.engine`):
choosing the horizon, margin and predictor windows walk-forward means simulating every candidate setting over all
the history before each month — dozens of full runs per month.  This simulator runs the *same* rule
(:func:`fundarb_core.strategy.horizon_rule.decide`) on the *same* predictor
(:func:`fundarb_core.strategy.expected_spread.expected_spread`) with the paper venue's costs, but per asset at unit
notional, without capital, sizing, liquidity or execution: it ranks settings, and the replay then measures the
chosen one through the real cycle.  A year of 30 assets takes about a second per setting.

Conventions (the oracle's, :mod:`fundarb_core.backtest.oracle`): the state chosen at the instant ``t`` is held over
``[t, t + 1 h)`` and earns that hour's accrued spread (``spread_panel.spread_per_hour``, the rate a position earned
in the hour, known at its settlement); entering costs both legs' maker fee plus the half spread per leg, exiting
both legs' taker fee plus the half spread, and a switch both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.expected_spread import PredictorParams, SpreadHistory, expected_spread
from fundarb_core.strategy.horizon_rule import ENTER, EXIT, SWITCH, HorizonParams, decide_grid

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ResearchMarket:
    """What the simulator reads: observed spreads (for the predictor), the spread each pair earned per hour, and
    each pair's entry and exit cost as fractions of notional."""

    history: SpreadHistory
    earned: FloatArray  # (hours, pairs): accrued spread a − b per hour, 0 where not both listed
    entry_cost: FloatArray  # (pairs,)
    exit_cost: FloatArray  # (pairs,)

    @classmethod
    def from_panel(cls, panel: pd.DataFrame, config: KeeperConfig, half_spread_bps: float,
                   slippage_bps: float = 0.0) -> ResearchMarket:
        """From ``spread_panel`` rows (``hour``, ``asset``, ``short_venue``, ``long_venue``,
        ``observed_spread_per_hour``, ``spread_per_hour``) and the keeper's fee schedules (with any fee regime
        override); ``slippage_bps`` per leg and side where the real cycle would cost impact."""
        history = SpreadHistory.from_panel(panel)
        p = panel[(panel["short_venue"].astype(str) < panel["long_venue"].astype(str))
                  & panel["spread_per_hour"].notna()]
        index = pd.MultiIndex.from_frame(history.pairs[["asset", "venue_a", "venue_b"]])
        col = index.get_indexer(pd.MultiIndex.from_frame(p[["asset", "short_venue", "long_venue"]].astype(str)))
        row = history.hours.get_indexer(pd.to_datetime(p["hour"]))
        earned = np.zeros(history.spread.shape)
        ok = (row >= 0) & (col >= 0)
        earned[row[ok], col[ok]] = p["spread_per_hour"].to_numpy(dtype="float64")[ok]
        extra = 2.0 * (half_spread_bps + slippage_bps) * 1e-4
        fees = {v: config.fees(v) for v in {*history.pairs["venue_a"], *history.pairs["venue_b"]}}
        a, b = history.pairs["venue_a"], history.pairs["venue_b"]
        entry = np.array([fees[x].maker + fees[y].maker for x, y in zip(a, b, strict=True)]) + extra
        exit_ = np.array([fees[x].taker + fees[y].taker for x, y in zip(a, b, strict=True)]) + extra
        return cls(history=history, earned=earned, entry_cost=entry, exit_cost=exit_)


@dataclass(frozen=True)
class ResearchRun:
    """Per-hour net P&L (unit notional per asset, summed over assets) and trade counts of one setting."""

    pnl: pd.Series
    trades: int


def simulate(market: ResearchMarket, predictor: PredictorParams, rules: Sequence[HorizonParams],
             expected: FloatArray | None = None) -> list[ResearchRun]:
    """Run the rule with each of ``rules`` over every hour of ``market`` (module doc), all settings in one pass
    over the hours.  ``expected`` may pass the predictor's matrix when it is already computed."""
    hist = market.history
    e = expected_spread(hist, predictor) if expected is None else expected
    n_hours, n_pairs = e.shape
    assets, pair_asset = np.unique(hist.pairs["asset"].to_numpy(dtype=str), return_inverse=True)
    n_assets, n_rules = len(assets), len(rules)
    # ordered pairs: column k < n_pairs is a − b, k ≥ n_pairs is b − a; padded (asset, slot) table of them
    order = np.argsort(np.concatenate([pair_asset, pair_asset]), kind="stable")
    counts = np.bincount(pair_asset, minlength=n_assets) * 2
    width = int(counts.max()) if n_assets else 0
    table = np.full((n_assets, width), -1, dtype="int64")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype("int64")
    for i in range(n_assets):
        table[i, :counts[i]] = order[starts[i]:starts[i] + counts[i]]
    pad = table < 0
    safe = np.where(pad, 0, table)
    cost_in = np.concatenate([market.entry_cost, market.entry_cost])
    cost_out = np.concatenate([market.exit_cost, market.exit_cost])
    horizon = np.array([r.horizon_hours for r in rules], dtype="float64")[:, None]
    margin = np.array([r.entry_margin for r in rules], dtype="float64")[:, None]
    held = np.full((n_rules, n_assets), -1, dtype="int64")  # ordered pair column held per setting, -1 flat
    pnl = np.zeros((n_hours, n_rules))
    trades = np.zeros(n_rules, dtype="int64")
    rows = np.arange(n_assets)[None, :]
    for t in range(n_hours):
        eo = np.concatenate([e[t], -e[t]])
        base = np.where(pad | np.isnan(eo[safe]), -np.inf, eo[safe])  # (assets, slots)
        vals = np.where(table[None, :, :] == held[:, :, None], -np.inf, base[None, :, :])  # best *other* pair
        j = np.argmax(vals, axis=2)
        best = table[rows, j]
        top = np.take_along_axis(vals, j[:, :, None], axis=2)[:, :, 0]
        e_best = np.where(np.isfinite(top), top, np.nan)
        is_held = held >= 0
        h = np.where(is_held, held, 0)
        code = decide_grid(is_held, np.where(is_held, eo[h], np.nan), np.where(is_held, cost_out[h], 0.0),
                           e_best, cost_in[best], cost_out[best], horizon, margin)
        leave = (code == EXIT) | (code == SWITCH)
        come = (code == ENTER) | (code == SWITCH)
        cost = np.where(leave, cost_out[h], 0.0).sum(axis=1) + np.where(come, cost_in[best], 0.0).sum(axis=1)
        trades += leave.sum(axis=1) + come.sum(axis=1)
        held = np.where(come, best, np.where(leave, -1, held))
        on = held >= 0
        k = np.where(on, held, 0)
        earned = market.earned[t, k % n_pairs]
        pnl[t] = np.where(on, np.where(k < n_pairs, earned, -earned), 0.0).sum(axis=1) - cost
    return [ResearchRun(pnl=pd.Series(pnl[:, r], index=hist.hours, name="pnl"), trades=int(trades[r]))
            for r in range(n_rules)]
