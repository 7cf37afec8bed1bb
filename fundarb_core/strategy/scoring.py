"""Spec §4 composite score: 0.3 consistency + 0.3 rate + 0.2 liquidity + 0.2 × (1 / break-even).

Each term is mapped to [0, 1] by a fixed, monotone transform so that the weights mean what they say (a
term cannot dominate by its units) and a score is comparable across cycles and independent of the other
candidates (which a cross-sectional min-max or rank would not be):

* consistency — share of the last 168 h with a positive spread, already in [0, 1] (unknown → 0);
* rate — the expected spread as APR ``x``: ``max(x, 0) / (max(x, 0) + 10 %)`` (0.5 at 10 % APR).  The
  spec's "historical mean rate" is the pair's trailing 168 h mean spread; where a forecast of the spread over
  the holding horizon is present it replaces the historical mean (spec: forecasts enter as the expected
  spread); with neither, the observed spread is used;
* liquidity — ``log10(min OI)`` mapped linearly from [5, 9] (100 k … 1 bn USD) to [0, 1] and clipped; where
  no OI is known the planner's liquidity measure of the thinner leg (depth, else volume) stands in;
* break-even — ``24 / (24 + BE)``: monotone in 1 / BE, 0.5 at one day, 0 at an infinite break-even.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fundarb_core.funding import HOURS_PER_YEAR
from fundarb_core.strategy.config import KeeperConfig

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray


def consistency_term(consistency: ArrayLike) -> FloatArray:
    """Consistency in [0, 1]; NaN → 0."""
    return np.clip(np.nan_to_num(np.asarray(consistency, dtype="float64"), nan=0.0), 0.0, 1.0)


def rate_term(spread_per_hour: ArrayLike, config: KeeperConfig) -> FloatArray:
    """Saturating map of a per-hour spread: ``apr⁺ / (apr⁺ + ref)``; NaN → 0."""
    apr = np.maximum(np.nan_to_num(np.multiply(spread_per_hour, HOURS_PER_YEAR), nan=0.0), 0.0)
    return apr / (apr + config.score_rate_ref_apr)


def liquidity_term(liquidity_usd: ArrayLike, config: KeeperConfig) -> FloatArray:
    """``log10`` of liquidity mapped from [lo, hi] to [0, 1]; unknown or ≤ 0 → 0."""
    liq = np.asarray(liquidity_usd, dtype="float64")
    lo, hi = np.log10(config.score_liquidity_lo_usd), np.log10(config.score_liquidity_hi_usd)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (np.log10(liq) - lo) / (hi - lo)
    return np.clip(np.nan_to_num(x, nan=0.0, neginf=0.0), 0.0, 1.0)


def break_even_term(break_even_hours: ArrayLike, config: KeeperConfig) -> FloatArray:
    """``ref / (ref + BE)``: 1 at zero break-even, 0 at +inf or unknown."""
    be = np.asarray(break_even_hours, dtype="float64")
    ref = config.score_break_even_ref_hours
    with np.errstate(invalid="ignore"):
        t = ref / (ref + np.maximum(be, 0.0))
    return np.nan_to_num(t, nan=0.0)


def composite_score(
    consistency: ArrayLike,
    rate_spread_per_hour: ArrayLike,
    liquidity_usd: ArrayLike,
    break_even_hours: ArrayLike,
    config: KeeperConfig,
) -> FloatArray:
    """Weighted sum of the four normalised terms (weights default 0.3 / 0.3 / 0.2 / 0.2; the score ∈ [0, 1])."""
    w = config.score_weights
    return (w[0] * consistency_term(consistency) + w[1] * rate_term(rate_spread_per_hour, config)
            + w[2] * liquidity_term(liquidity_usd, config) + w[3] * break_even_term(break_even_hours, config))
