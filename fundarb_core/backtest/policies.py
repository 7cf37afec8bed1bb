"""Decision rules a backtest can run instead of the keeper's own choice, through the same execution path.

The strategy backtest compares the keeper against a naive rule a trader would write in an afternoon, so both
must pay the same fees, slippage and risk limits: the naive rule is a
:data:`~fundarb_core.execution.cycle.Chooser`, i.e. it only replaces *which* plan is taken in
:func:`~fundarb_core.execution.cycle.run_cycle`; sizing, leverage, execution, funding and the ledger stay the keeper's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fundarb_core.domain.plan import Plan
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.planning import Action, Position
from fundarb_core.strategy.snapshot import Snapshot

UNSIZED_REASONS = frozenset({"no_liquidity_data", "low_volume", "below_min_size"})
"""Plans the naive rule may not take: without a liquidity measure or volume the keeper cannot size or cost a
trade, so both rules trade the same universe."""


def _trailing(plans: pd.DataFrame) -> np.ndarray:
    """Each plan's trailing 24 h mean spread per hour (the snapshot's ``mean_24h`` baseline forecast)."""
    return plans["expected_spread_per_hour"].to_numpy(dtype="float64", na_value=np.nan)


def naive_trailing_choice(plans: pd.DataFrame, positions: Sequence[Position], snapshot: Snapshot,
                          config: KeeperConfig, factor: float = 2.0) -> Action:
    """"Hold the best trailing-24 h pair, switch when twice as good".

    Choices: the rule ranks pairs by the trailing 24 h mean spread (the snapshot must be built with
    ``baseline_forecast="mean_24h"``, so ``expected_spread_per_hour`` is that mean and held positions are re-marked
    at it); it ignores the keeper's score, break-even and basis checks but not sizing or the risk limits (plans
    rejected for ``UNSIZED_REASONS`` or blocked by exposure limits are skipped).  With a free slot it enters the
    best pair on an unheld asset; with every slot used it switches the weakest position into the best pair on an
    unheld asset (or a better pair of the same asset) when that pair's trailing spread is at least ``factor`` ×
    the weakest's and positive.  One action per cycle, like the keeper.
    """
    if plans.empty:
        return Action("none", "no plan")
    reason = plans["reason"].astype(object).where(plans["reason"].notna(), "")
    blocked = plans["blocked"] if "blocked" in plans else pd.Series("", index=plans.index)
    trailing = _trailing(plans)
    size = plans["size_usd"].to_numpy(dtype="float64", na_value=np.nan)
    ok = (~reason.isin(UNSIZED_REASONS)).to_numpy() & (blocked.to_numpy() == "") & np.isfinite(trailing) \
        & (trailing > 0) & np.isfinite(size) & (size >= config.min_position_usd)
    if not ok.any():
        return Action("none", "no sized pair with a positive trailing spread")
    held = {p.asset for p in positions}
    gross = sum(2.0 * p.size_usd for p in positions)
    assets = plans["asset"].astype(str).to_numpy()
    order = np.argsort(-np.where(ok, trailing, -np.inf), kind="stable")
    order = order[ok[order]]

    def row(j: int) -> Plan:
        return Plan.from_row(plans.iloc[int(j)].to_dict())

    if len(positions) < config.max_positions:
        for j in order:
            if assets[j] not in held and gross + 2.0 * size[j] <= config.max_gross_exposure_usd:
                return Action("enter", "best trailing-24h pair on an unheld asset", plan=row(j))
    if not positions:
        return Action("none", "no pair fits the exposure limits")
    weakest = min(positions, key=lambda p: p.hourly_return_usd / p.size_usd if p.size_usd else 0.0)
    old = weakest.hourly_return_usd / weakest.size_usd if weakest.size_usd else 0.0
    for j in order:
        same = assets[j] == weakest.asset
        own = same and (plans["short_venue"].iat[j], plans["long_venue"].iat[j]) == (weakest.short_venue,
                                                                                      weakest.long_venue)
        if own or (assets[j] in held and not same):
            continue
        if gross - 2.0 * weakest.size_usd + 2.0 * size[j] > config.max_gross_exposure_usd:
            continue
        if trailing[j] >= factor * old:
            return Action("switch", f"trailing-24h spread {trailing[j]:.3g}/h >= {factor:g} x {old:.3g}/h",
                          plan=row(j), close=weakest)
        break  # pairs are in trailing order: no later one is twice as good either
    return Action("none", f"no pair {factor:g}x better than the weakest position")
