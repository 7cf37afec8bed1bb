"""Spec §5 basis checks on the price divergence between the short and the long venue.

``basis_bp = (price_short / price_long − 1) × 10⁴`` (the ``basis`` model's definition).  The position sells the
short venue and buys the long one, so a **negative** basis is against it: when prices converge the short leg
loses ``|basis|`` of notional.  Likewise a low z-score (basis far below its own mean) is against it.

* z-score ``(basis − mean) / std`` over the trailing history: reject when ≤ −2;
* payback ``|basis| × size / hourly return`` > 48 h while the basis is against the position: reject (the
  funding must earn back the entry basis within two days);
* no history (fewer than ``basis_min_history`` observations or zero σ): reject when ``|basis|`` > 150 bp.

Choices: the payback rule applies whenever the basis is known, with or without history; "against" means
basis < 0 (the loss if prices converge), independently of the z-score.  A plan with no basis at all (no
price on a leg) passes unless ``require_basis``.  The plan's ``basis_risk_bp`` is the basis against the
position, ``max(−basis_bp, 0)`` (0 when the basis is in its favour).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fundarb_core.strategy.config import KeeperConfig

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ArrayLike = float | FloatArray


def basis_z(basis_bp: ArrayLike, mean_bp: ArrayLike, std_bp: ArrayLike, n_obs: ArrayLike,
            config: KeeperConfig) -> FloatArray:
    """z-score of the basis against its history; NaN where there is no usable history."""
    std = np.asarray(std_bp, dtype="float64")
    ok = (std > 0) & np.greater_equal(n_obs, config.basis_min_history)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.divide(np.subtract(basis_bp, mean_bp), std)
    return np.where(ok, z, np.nan)


def basis_payback_hours(basis_bp: ArrayLike, size_usd: ArrayLike, hourly_return_usd: ArrayLike) -> FloatArray:
    """Hours of funding to earn back the entry basis ``|basis| × size / hourly``; 0 when the basis is in favour.

    +inf when the basis is against the position and the hourly return is not positive.
    """
    b = np.asarray(basis_bp, dtype="float64")
    h = np.asarray(hourly_return_usd, dtype="float64")
    loss = np.abs(b) / 1e4 * np.asarray(size_usd, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        hours = np.where(h > 0, loss / h, np.inf)
    return np.where(b < 0, hours, np.where(np.isnan(b), np.nan, 0.0))


def basis_checks(
    basis_bp: ArrayLike,
    mean_bp: ArrayLike,
    std_bp: ArrayLike,
    n_obs: ArrayLike,
    size_usd: ArrayLike,
    hourly_return_usd: ArrayLike,
    config: KeeperConfig,
) -> tuple[BoolArray, BoolArray, BoolArray]:
    """(reject on z-score, reject on payback, reject on the no-history fallback), element-wise."""
    b = np.asarray(basis_bp, dtype="float64")
    z = basis_z(b, mean_bp, std_bp, n_obs, config)
    z_reject = z <= config.basis_z_reject
    payback_reject = basis_payback_hours(b, size_usd, hourly_return_usd) > config.basis_payback_max_hours
    fallback_reject = np.isnan(z) & (np.abs(b) > config.max_basis_risk_bps)
    return z_reject, payback_reject, fallback_reject


def basis_risk_bp(basis_bp: ArrayLike) -> FloatArray:
    """The entry basis against the position in bp, ``max(−basis, 0)``; NaN when unknown."""
    b = np.asarray(basis_bp, dtype="float64")
    return np.where(np.isnan(b), np.nan, np.maximum(-b, 0.0))
