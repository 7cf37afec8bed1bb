"""Strategy: pure, vectorised decisions — the snapshot struct, costs, leverage, sizing, basis, scoring,
switching and planning (spec §1–§7).  Imports neither duckdb nor ccxt (``tests/test_boundaries.py``).

* :mod:`~fundarb_core.strategy.config` — :class:`KeeperConfig`, every number of the spec;
* formulas — :mod:`~fundarb_core.strategy.costs` (§2), :mod:`~fundarb_core.strategy.leverage` and
  :mod:`~fundarb_core.strategy.sizing` (§3), :mod:`~fundarb_core.strategy.basis` (§5),
  :mod:`~fundarb_core.strategy.health` (§6.2), :mod:`~fundarb_core.strategy.switching` (§6.4),
  :mod:`~fundarb_core.strategy.scoring` (§4);
* :mod:`~fundarb_core.strategy.snapshot` — the market state as arrays; :mod:`~fundarb_core.strategy.market_tape`
  — snapshots, paper prices and liquidity at many instants, from the warehouse's rows;
* :mod:`~fundarb_core.strategy.planning` — discover → plans → one action per cycle.
"""

from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.planning import (
    REASONS,
    Action,
    CycleResult,
    Position,
    build_plans,
    choose_action,
    discover,
    mark_positions,
    plan_cycle,
)
from fundarb_core.strategy.snapshot import Snapshot, snapshot_from_frames

__all__ = [
    "REASONS",
    "Action",
    "CycleResult",
    "KeeperConfig",
    "Position",
    "Snapshot",
    "build_plans",
    "choose_action",
    "discover",
    "mark_positions",
    "plan_cycle",
    "snapshot_from_frames",
]
