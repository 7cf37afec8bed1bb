"""Enter, hold, exit and switch on expected net income over the holding horizon: the keeper's default rule.

Why this rule and not the spec's (§6.4 break-even switching on the instantaneous spread, kept available as
``KeeperConfig.decision_rule = "spec"``): measured on the bundled data the spec's rule loses in every fee regime,
because the spread it sees this hour mean-reverts within hours while each trade pays a round trip.  Here every
decision compares *expected* income over the horizon ``H`` with the costs the decision commits, so hysteresis comes
from costs and horizons rather than from minimum holding times:

* **enter** a pair when ``E × H > (entry + exit costs) × (1 + entry_margin)`` — the expected spread over the horizon
  pays the round trip with a margin for the predictor's error;
* **hold** while ``E > 0``: the exit cost is committed whether the position leaves now or later, so a position is
  worth keeping as long as it is expected to earn anything at all;
* **exit to flat** when ``E ≤ 0`` and no switch is worth it;
* **switch** from the held pair ``p`` to ``q`` when ``(E_q − E_p) × H > (exit_p + entry_q) × (1 + entry_margin)``:
  the gain over the horizon pays the switch (the new position's eventual exit replaces the old one's).

``E`` is the expected spread per hour from the predictor the keeper runs with (a champion forecast of the horizon,
else :mod:`fundarb_core.strategy.expected_spread`); costs are fractions of notional.  The functions are numpy over
assets so the keeper's chooser (:mod:`fundarb_core.strategy.allocation`) and the research simulator
(:mod:`fundarb_core.backtest.research_sim`) run the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

HOLD, ENTER, EXIT, SWITCH, FLAT = 0, 1, 2, 3, 4
"""Decision codes per asset (``FLAT`` = stay flat)."""
DECISION_NAMES = ("hold", "enter", "exit", "switch", "flat")


@dataclass(frozen=True)
class HorizonParams:
    """The rule's horizon (hours) and entry margin; chosen walk-forward by the backtest."""

    horizon_hours: float = 336.0
    entry_margin: float = 0.5

    def label(self) -> str:
        return f"H={self.horizon_hours:g}h, margin={self.entry_margin:g}"


def decide(held: npt.NDArray[np.bool_], e_held: FloatArray, exit_held: FloatArray, e_best: FloatArray,
           entry_best: FloatArray, exit_best: FloatArray, params: HorizonParams) -> IntArray:
    """One decision per asset (module doc).

    ``held``: whether the asset holds a pair; ``e_held`` / ``exit_held`` its expected spread per hour and exit
    cost (fractions); ``e_best`` / ``entry_best`` / ``exit_best`` the best *other* pair of the asset (highest
    expected spread; NaN when none).  Returns codes ``HOLD``, ``ENTER``, ``EXIT``, ``SWITCH`` or ``FLAT``."""
    return decide_grid(held, e_held, exit_held, e_best, entry_best, exit_best, np.float64(params.horizon_hours),
                       np.float64(params.entry_margin))


def decide_grid(held: npt.NDArray[np.bool_], e_held: FloatArray, exit_held: FloatArray, e_best: FloatArray,
                entry_best: FloatArray, exit_best: FloatArray, horizon_hours: FloatArray | np.float64,
                entry_margin: FloatArray | np.float64) -> IntArray:
    """:func:`decide` with the horizon and margin as arrays broadcast against the others (the research
    simulator runs every setting of a grid in one pass)."""
    h, m = horizon_hours, 1.0 + entry_margin
    with np.errstate(invalid="ignore"):
        enter_ok = np.isfinite(e_best) & (e_best * h > (entry_best + exit_best) * m)
        switch_ok = np.isfinite(e_best) & ((e_best - np.nan_to_num(e_held, nan=0.0)) * h
                                           > (exit_held + entry_best) * m) & (e_best > 0)
        keep = np.isfinite(e_held) & (e_held > 0)
    out = np.where(held, np.where(switch_ok, SWITCH, np.where(keep, HOLD, EXIT)), np.where(enter_ok, ENTER, FLAT))
    return out.astype("int64")
