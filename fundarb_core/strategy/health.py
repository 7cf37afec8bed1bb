"""Spec §6.2 position health: health factor per position and the action it calls for.

health factor = margin equity / maintenance margin requirement of a leg (a position's health is its weaker
leg's).  Below 1.5 the position is reduced by 50 %; below 1.2 it is closed at once; 2.0 is the target.

Choices: the thresholds are strict (``< 1.5``, ``< 1.2``) as the spec words them, so exactly 1.5 holds; an
unknown health factor (NaN) closes, because a position whose margin cannot be read is not safe to keep; a
position between 1.5 and 2.0 is held but flagged ``below_target`` (margin should be topped up, not traded).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fundarb_core.strategy.config import KeeperConfig

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray

HOLD, REDUCE, CLOSE = 0, 1, 2
HEALTH_ACTIONS: tuple[str, ...] = ("hold", "reduce_50", "close")
"""Action names by code (:data:`HOLD`, :data:`REDUCE`, :data:`CLOSE`)."""


def health_factor(equity_usd: ArrayLike, maintenance_margin_usd: ArrayLike) -> FloatArray:
    """``equity / maintenance requirement``; +inf with no requirement (no position), NaN where unknown."""
    eq = np.asarray(equity_usd, dtype="float64")
    mm = np.asarray(maintenance_margin_usd, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mm > 0, eq / mm, np.where(np.isnan(mm) | np.isnan(eq), np.nan, np.inf))


def health_action_codes(hf: ArrayLike, config: KeeperConfig) -> npt.NDArray[np.int64]:
    """Action code per position: :data:`CLOSE` below 1.2 (or unknown), :data:`REDUCE` below 1.5, else hold."""
    h = np.asarray(hf, dtype="float64")
    return np.where(np.isnan(h) | (h < config.health_close), CLOSE,
                    np.where(h < config.health_reduce, REDUCE, HOLD)).astype("int64")


def health_actions(hf: ArrayLike, config: KeeperConfig) -> npt.NDArray[np.object_]:
    """Action name per position (``hold`` / ``reduce_50`` / ``close``)."""
    return np.asarray(HEALTH_ACTIONS, dtype=object)[health_action_codes(hf, config)]


def below_target(hf: ArrayLike, config: KeeperConfig) -> npt.NDArray[np.bool_]:
    """True where a position is under the 2.0 target (add margin when possible)."""
    return ~np.greater(hf, config.health_target)


def reduce_size(size_usd: ArrayLike, hf: ArrayLike, config: KeeperConfig) -> FloatArray:
    """Size each position should have after the health actions (× 0.5 on reduce, 0 on close)."""
    codes = health_action_codes(hf, config)
    factor = np.where(codes == CLOSE, 0.0, np.where(codes == REDUCE, 1.0 - config.health_reduce_fraction, 1.0))
    return np.multiply(size_usd, factor)
