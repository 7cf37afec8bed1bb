"""Spec §2 economics as numpy-vectorised formulas (scalars or arrays of candidates, broadcast together).

Conventions (see :mod:`fundarb_core.strategy.config`): spreads per hour or APR, sizes the USD notional of one
leg, costs in USD unless the name says ``frac``.

Why yields are on margin: the spec's gross yield ``(F_high − F_low) × L`` is the return on the margin of one
leg (notional / L).  Its net yield subtracts costs "as fractions of notional" annualised over the holding; for
the two terms to be on the same base, the cost fraction must be a fraction of that margin, which is the
fraction of notional × L.  :func:`net_yield` takes the cost on the gross yield's base; :func:`plan_net_apy`
does the conversion.  (On the capital of both legs together every yield is half.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fundarb_core.funding import HOURS_PER_YEAR

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray


def gross_yield(f_high_apr: ArrayLike, f_low_apr: ArrayLike, leverage: ArrayLike) -> FloatArray:
    """Gross annual yield on margin: ``(F_high − F_low) × L`` (F annualised rates of the short/long legs)."""
    return np.multiply(np.subtract(f_high_apr, f_low_apr), leverage)


def net_yield(gross: ArrayLike, cost_frac: ArrayLike, holding_days: ArrayLike) -> FloatArray:
    """Net annual yield: ``gross − cost_frac × 365 / holding_days``.

    ``cost_frac`` = (entry fees + exit fees + slippage) as a fraction of the base ``gross`` is measured on: the
    round-trip cost is paid once per holding, so it is annualised by the number of holdings per year.
    """
    return np.subtract(gross, np.multiply(cost_frac, np.divide(365.0, holding_days)))


def plan_net_apy(
    spread_per_hour: ArrayLike, leverage: ArrayLike, total_costs_usd: ArrayLike, size_usd: ArrayLike,
    holding_hours: ArrayLike,
) -> FloatArray:
    """Expected APY of a plan on the margin of one leg: :func:`net_yield` with costs as a fraction of margin.

    ``cost_frac(margin) = total_costs / (size / L)``; equivalently ``L × (spread_apr − cost_frac(notional) ×
    8760 / holding_hours)``.
    """
    apr = np.multiply(spread_per_hour, HOURS_PER_YEAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        cost_frac_margin = np.divide(np.multiply(total_costs_usd, leverage), size_usd)
    return net_yield(gross_yield(apr, 0.0, leverage), cost_frac_margin, np.divide(holding_hours, 24.0))


def hourly_funding_return(spread_apr: ArrayLike, size_usd: ArrayLike) -> FloatArray:
    """USD earned per hour: ``spread × size / 8760`` with the spread annualised (= spread per hour × size)."""
    return np.divide(np.multiply(spread_apr, size_usd), HOURS_PER_YEAR)


def break_even_hours(total_costs_usd: ArrayLike, hourly_return_usd: ArrayLike) -> FloatArray:
    """Hours of funding that pay the costs: ``total_costs / hourly_funding_return``; +inf when the return ≤ 0.

    A non-positive hourly return never pays anything back, so its break-even is infinite (not negative), which
    makes every "break-even > X" rule reject it.
    """
    costs = np.asarray(total_costs_usd, dtype="float64")
    hourly = np.asarray(hourly_return_usd, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        be = np.divide(costs, hourly)
    return np.where(hourly > 0, be, np.where(np.isnan(hourly) | np.isnan(costs), np.nan, np.inf))


def sqrt_impact(size_usd: ArrayLike, liquidity_usd: ArrayLike, base_impact: float) -> FloatArray:
    """Square-root impact of one fill as a fraction of notional: ``base_impact × sqrt(size / liquidity)``.

    ``liquidity`` is open interest or book depth (NaN where unknown gives NaN; zero liquidity gives +inf).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.multiply(base_impact, np.sqrt(np.divide(size_usd, liquidity_usd)))


def fill_impact(size_usd: ArrayLike, liquidity_usd: ArrayLike, base_impact: float,
                fallback_frac: float = float("nan")) -> FloatArray:
    """The slippage of one fill as a fraction of notional — the one rule the planner costs and the paper venue
    charges: :func:`sqrt_impact` against a known liquidity measure, else the flat ``fallback_frac`` (the
    ``slippage`` data fallback, :func:`fundarb_core.strategy.fallbacks.slippage_fallback_frac`; NaN when it is
    switched off, so an unknown liquidity stays unknown)."""
    liq = np.asarray(liquidity_usd, dtype="float64")
    return np.where(np.isnan(liq), fallback_frac, sqrt_impact(size_usd, liq, base_impact))


def entry_fees_usd(size_usd: ArrayLike, maker_short: ArrayLike, maker_long: ArrayLike) -> FloatArray:
    """Entry is two maker orders (limit at best bid / ask), one per leg, each on ``size`` notional."""
    return np.multiply(size_usd, np.add(maker_short, maker_long))


def exit_fees_usd(size_usd: ArrayLike, taker_short: ArrayLike, taker_long: ArrayLike) -> FloatArray:
    """Exit is two taker orders (an exit must be certain to fill), one per leg."""
    return np.multiply(size_usd, np.add(taker_short, taker_long))


def round_trip_slippage_usd(
    size_usd: ArrayLike, liquidity_short: ArrayLike, liquidity_long: ArrayLike, base_impact: float,
    fallback_frac: float = float("nan"),
) -> FloatArray:
    """Slippage of entering and exiting both legs: ``2 × size × (impact_short + impact_long)``.

    The exit is assumed to meet the same liquidity as the entry (the only estimate available at planning); each
    impact is :func:`fill_impact` (a leg with no liquidity measure costs ``fallback_frac`` per fill).
    """
    per_trip = np.add(fill_impact(size_usd, liquidity_short, base_impact, fallback_frac),
                      fill_impact(size_usd, liquidity_long, base_impact, fallback_frac))
    return np.multiply(2.0, np.multiply(size_usd, per_trip))


def break_even_reject(
    be_hours: ArrayLike, expected_net_usd: ArrayLike, max_break_even_hours: float = 168.0
) -> npt.NDArray[np.bool_]:
    """Spec §2: reject when break-even > ``max_break_even_hours`` and the expected net return ≤ 0.

    NaN break-even (unknown costs) is not rejected here; missing inputs carry their own rejection reason.
    """
    return np.greater(be_hours, max_break_even_hours) & np.less_equal(expected_net_usd, 0.0)
