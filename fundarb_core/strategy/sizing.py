"""Spec §3 sizing: the notional of one leg is the smallest of its constraints.

``size = min(min(balance_short, balance_long) × 0.9 × L, max_position_size_usd, 0.05 × min(OI_short, OI_long),
twap_size, 0.05 × min(volume_short, volume_long))`` then × the §7 drawdown scale.

Choices: a constraint whose input is unknown (NaN) does not bind — open interest and volume are missing for
many real markets, and a missing number is not evidence of a small market; the planner instead requires at
least one liquidity measure per leg for the slippage estimate (``no_liquidity_data``).  Where only one leg's
OI or volume is known, that leg's figure bounds the size (``nanmin``).  A known smaller-venue volume below
``min_volume_usd`` rejects the plan (``low_volume``) rather than shrinking it.  The minimum position (5 USD)
is a rejection (``below_min_size``), never a rounding up.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fundarb_core.strategy.config import KeeperConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ArrayLike = float | FloatArray

SIZE_CONSTRAINTS: tuple[str, ...] = ("balance", "max_position", "open_interest", "twap", "volume")
"""Names of the sizing constraints, in the order of the ``binding`` codes :func:`position_size` returns."""


def _nanmin2(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Element-wise min ignoring NaN (NaN only where both are NaN), without numpy's all-NaN warning."""
    a_, b_ = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return np.where(np.isnan(a_), b_, np.where(np.isnan(b_), a_, np.minimum(a_, b_)))


def drawdown_scale(drawdown: ArrayLike, max_drawdown: float) -> FloatArray:
    """§7 drawdown-based scaling: 1 at no drawdown, falling linearly to 0 at ``max_drawdown``."""
    return np.clip(1.0 - np.divide(drawdown, max_drawdown), 0.0, 1.0)


def position_size(
    balance_short: ArrayLike,
    balance_long: ArrayLike,
    leverage: ArrayLike,
    oi_short: ArrayLike,
    oi_long: ArrayLike,
    volume_short: ArrayLike,
    volume_long: ArrayLike,
    twap_size: ArrayLike,
    config: KeeperConfig,
    drawdown: float = 0.0,
) -> tuple[FloatArray, IntArray]:
    """Size per candidate and the index (into :data:`SIZE_CONSTRAINTS`) of the constraint that binds.

    Ties go to the first constraint in :data:`SIZE_CONSTRAINTS` order.
    """
    c = config
    bal = np.minimum(balance_short, balance_long) * c.balance_fraction * np.asarray(leverage, dtype="float64")
    shape = np.broadcast_shapes(np.shape(bal), np.shape(oi_short), np.shape(oi_long), np.shape(volume_short),
                                np.shape(volume_long), np.shape(twap_size))
    caps = np.full((len(SIZE_CONSTRAINTS), *shape), np.inf)
    caps[0] = bal
    caps[1] = c.max_position_size_usd
    caps[2] = c.oi_fraction * _nanmin2(oi_short, oi_long)
    caps[3] = twap_size
    caps[4] = c.volume_fraction * _nanmin2(volume_short, volume_long)
    caps = np.where(np.isnan(caps), np.inf, caps)
    binding = np.argmin(caps, axis=0)
    size = np.take_along_axis(caps, binding[None, ...], axis=0)[0] * drawdown_scale(drawdown, c.max_drawdown)
    return size, binding.astype("int64")


def low_volume(volume_short: ArrayLike, volume_long: ArrayLike, config: KeeperConfig) -> npt.NDArray[np.bool_]:
    """True where the smaller known 24 h volume of the two venues is below ``min_volume_usd``."""
    return np.less(_nanmin2(volume_short, volume_long), config.min_volume_usd)


def below_min_size(size_usd: ArrayLike, config: KeeperConfig) -> npt.NDArray[np.bool_]:
    """True where the size is under the minimum position (or not a number)."""
    return ~np.greater_equal(size_usd, config.min_position_usd)
