"""Spec §3 σ-distance leverage: ``L = clip(1 / (K × σ_daily), L_min, L_max)`` with K adjusted per candidate.

``1 / L`` is (close to) the adverse price move that liquidates a leg, so ``L = 1 / (K σ)`` keeps liquidation K
daily standard deviations away.  K's adjustments (spec §3):

* +1.0 when σ > 1.5 × its baseline (volatility regime is elevated);
* +0.5 when the expected slippage > 0.5 % (a thin market: a forced exit would be costly);
* +1.0 when the historical win rate < 50 %;
* × sqrt(duration_hours / 24) for a long expected holding.

Choices: the additive terms are summed first and the duration factor multiplies the total, because the factor
converts a *daily* σ-distance into one over the holding, and every term of K is a distance in σ units.  The
factor is floored at 1 (a holding shorter than a day does not lower K below its base).  Unknown inputs (NaN σ
ratio, slippage or win rate) add nothing.  An unknown σ gives ``L_min`` (no estimate, no leverage); σ = 0
gives ``L_max``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fundarb_core.strategy.config import KeeperConfig

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray


def adjusted_k(
    sigma_daily: ArrayLike,
    sigma_baseline: ArrayLike,
    expected_slippage: ArrayLike,
    win_rate: ArrayLike,
    duration_hours: ArrayLike,
    config: KeeperConfig,
) -> FloatArray:
    """K per candidate: ``(K0 + Δvol + Δslippage + Δwin) × max(1, sqrt(duration_hours / 24))``."""
    c = config
    add = np.where(np.greater(sigma_daily, np.multiply(c.high_vol_ratio, sigma_baseline)), c.k_high_vol_add, 0.0)
    add = add + np.where(np.greater(expected_slippage, c.slippage_k_threshold), c.k_slippage_add, 0.0)
    add = add + np.where(np.less(win_rate, c.low_win_rate), c.k_low_win_rate_add, 0.0)
    scale = np.maximum(1.0, np.sqrt(np.divide(duration_hours, c.k_duration_reference_hours)))
    return np.multiply(np.add(c.k_base, add), scale)


def sigma_distance_leverage(k: ArrayLike, sigma_daily: ArrayLike, config: KeeperConfig) -> FloatArray:
    """``min(L_max, 1 / (K σ_daily))`` clipped to ``[L_min, L_max]``; NaN σ → ``L_min``."""
    sigma = np.asarray(sigma_daily, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.divide(1.0, np.multiply(k, sigma))
    lev = np.clip(raw, config.leverage_min, config.leverage_max)
    return np.where(np.isnan(lev), config.leverage_min, lev)


def liquidation_distance(leverage: ArrayLike, maintenance_margin: float) -> FloatArray:
    """Adverse price move (fraction of price) that liquidates one leg: ``max(1 / L − mm, 0)``."""
    return np.maximum(np.subtract(np.divide(1.0, leverage), maintenance_margin), 0.0)
