"""Spec §6.4 break-even-aware switching, vectorised over (current position × new plan) pairs.

::

    remaining   = current.break_even_hours − hours_held
    switch_cost = current.exit_fees + new.entry_fees
    new_be      = new.break_even_hours + switch_cost / new_hourly

* current not yet profitable (remaining > 0): switch only if ``new_be < 0.8 × remaining``.
* current already profitable (remaining ≤ 0): the spec's ``new_be < 0.5 × remaining`` can never hold for a
  non-positive ``remaining``, so it is read as follows.  A profitable position keeps earning
  ``current_hourly`` if left alone, so only the *extra* earnings of the new plan pay for the switch, and the
  horizon they have is the holding horizon.  The switch's cost in USD is the numerator of ``new_be``
  (``new_be × new_hourly`` = new total costs + switch cost), so::

      profitable_be = new_be × new_hourly / (new_hourly − current_hourly)    (+inf unless new_hourly > current)
      switch only if profitable_be < 0.5 × holding_hours

  which is stricter than the 0.8 rule (factor 0.5, and measured on the earnings gain, never on the whole).

Hysteresis (why there is no oscillation): a switch must beat the threshold by the margin the factors 0.8 / 0.5
leave, it always counts the full round-trip costs of the new plan plus the exit of the old one (so switching
back immediately would have to pay them again and cannot pass with the same rates), positions younger than
``min_hold_hours_before_switch`` are never switched, and a plan on the position's own pair is never a switch.
A current position whose hourly return has turned non-positive has an infinite break-even, so any plan that
breaks even in time may replace it.

Choice (beyond the spec's rule): a switch also needs ``new_be ≤ max_break_even_hours`` (168 h), the bound a fresh
entry must meet.  Without it, a current position whose spread dips for an hour (its break-even, hence
``remaining``, jumps towards infinity) would be swapped into plans that would never be entered on their own —
on the bundled hourly data this cut switching churn several-fold.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fundarb_core.strategy.config import KeeperConfig

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ArrayLike = float | FloatArray


def switch_break_even(
    new_break_even_hours: ArrayLike, new_hourly_usd: ArrayLike, current_exit_fees_usd: ArrayLike,
    new_entry_fees_usd: ArrayLike,
) -> FloatArray:
    """``new_be = new.break_even_hours + (current.exit_fees + new.entry_fees) / new_hourly`` (+inf if hourly ≤ 0)."""
    hourly = np.asarray(new_hourly_usd, dtype="float64")
    cost = np.add(current_exit_fees_usd, new_entry_fees_usd)
    with np.errstate(divide="ignore", invalid="ignore"):
        be = np.add(new_break_even_hours, np.divide(cost, hourly))
    return np.where(hourly > 0, be, np.inf)


def should_switch(
    current_break_even_hours: ArrayLike,
    hours_held: ArrayLike,
    current_hourly_usd: ArrayLike,
    current_exit_fees_usd: ArrayLike,
    new_break_even_hours: ArrayLike,
    new_hourly_usd: ArrayLike,
    new_entry_fees_usd: ArrayLike,
    config: KeeperConfig,
) -> tuple[BoolArray, FloatArray, FloatArray]:
    """(switch?, the ``new_be`` compared, the threshold it was compared with), broadcast element-wise.

    For a profitable current position the compared figure is ``profitable_be`` (see the module docstring).
    """
    c = config
    remaining = np.subtract(current_break_even_hours, hours_held)
    new_be = switch_break_even(new_break_even_hours, new_hourly_usd, current_exit_fees_usd, new_entry_fees_usd)
    gain = np.subtract(new_hourly_usd, current_hourly_usd)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        profitable_be = np.where(gain > 0, new_be * np.asarray(new_hourly_usd, dtype="float64") / gain, np.inf)
    profitable = remaining <= 0
    compared = np.where(profitable, profitable_be, new_be)
    threshold = np.where(profitable, c.switch_factor_profitable * c.holding_hours,
                         c.switch_factor_unprofitable * remaining)
    ok = ((compared < threshold) & (new_be <= c.max_break_even_hours)
          & np.greater_equal(hours_held, c.min_hold_hours_before_switch))
    return ok, np.broadcast_to(compared, ok.shape), np.broadcast_to(threshold, ok.shape)
