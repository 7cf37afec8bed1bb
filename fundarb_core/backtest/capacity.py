"""The oracle at the keeper's capacity: how much of the perfect-foresight bound the keeper's capital can carry.

Why: the oracle's slot bound holds ``max_positions`` full-size positions (5 × 10,000 USD) whatever the collateral;
the keeper posts ``size / L`` of margin on *each* leg's venue, so 10,000 USD per venue at ``L_min`` = 1 (every
funding-only plan, and most plans at a two-to-four-week horizon, whose σ-distance K is scaled up by the horizon)
carries at most ``Σ capital × balance_fraction × L_min / 2`` of notional — 31,500 USD on seven venues, about three
full positions.  A capture ratio against the slot bound then mixes two things, decisions and capacity; against
this bound it measures decisions.

The bound: ``slots = min(max_gross_exposure / (2 × max_position_size), Σ capital × balance_fraction × L_min /
(2 × max_position_size))`` (fractional), and the oracle's per-asset net P&L of the best ``floor(slots)`` assets
plus the fractional share of the next one.  Still an upper bound in the oracle's own terms (dedicated positions,
perfect foresight, the same costs); a keeper that finds leverage above ``L_min`` can carry more and could exceed
it, which the report would show as a capture above 100 %.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fundarb_core.strategy.config import KeeperConfig


def capacity_slots(capital_usd: float, config: KeeperConfig) -> float:
    """Full-size positions the keeper's collateral (and its gross exposure limit) can carry at ``L_min``."""
    per_position = 2.0 * config.max_position_size_usd
    by_capital = capital_usd * config.balance_fraction * config.leverage_min / per_position
    return float(min(config.max_gross_exposure_usd / per_position, by_capital))


def capacity_bound(table: pd.DataFrame, slots: float) -> float:
    """Σ ``net_usd`` of the best ``floor(slots)`` assets of an oracle table plus the fractional share of the next
    (assets whose bound is negative add nothing: the oracle would stay flat)."""
    if table.empty or slots <= 0:
        return 0.0
    net = np.sort(table["net_usd"].clip(lower=0.0).to_numpy(dtype="float64"))[::-1]
    whole = min(math.floor(slots), len(net))
    frac = slots - math.floor(slots)
    extra = frac * net[whole] if whole < len(net) else 0.0
    return float(net[:whole].sum() + extra)
