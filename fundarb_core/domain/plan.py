"""An execution plan (spec §5): the one trade a cycle may take, with its economics.

Why a frozen dataclass beside a DataFrame: the planner computes every candidate's plan as columns of one frame
(vectorised, :data:`PLAN_SCHEMA` declares them); the plan a cycle *takes* crosses into execution, the ledger and
reports, and there it is a typed value — no string-key look-ups, no missing field discovered at order time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from fundarb_core.domain.markets import Pair

PLAN_SCHEMA: Mapping[str, str] = MappingProxyType({
    "asset": "category", "short_venue": "category", "long_venue": "category", "valid": "bool",
    "reason": "category", "size_usd": "float64", "leverage": "float64", "entry_fees_usd": "float64",
    "exit_fees_usd": "float64", "slippage_usd": "float64", "total_costs_usd": "float64",
    "expected_hourly_return_usd": "float64", "break_even_hours": "float64", "expected_apy": "float64",
    "basis_risk_bp": "float64", "liquidation_distance": "float64", "score": "float64",
    "spread_per_hour": "float64", "expected_spread_per_hour": "float64",
})
"""The declared columns of a plan table (the planner adds working columns after these)."""


@dataclass(frozen=True)
class Plan:
    """One sized, costed plan (spec §5); ``details`` keeps the planner's working figures (k, σ, basis z, …)."""

    asset: str
    short_venue: str
    long_venue: str
    size_usd: float
    leverage: float
    entry_fees_usd: float
    exit_fees_usd: float
    slippage_usd: float
    total_costs_usd: float
    expected_hourly_return_usd: float
    break_even_hours: float
    expected_apy: float
    basis_risk_bp: float = float("nan")
    liquidation_distance: float = float("nan")
    score: float = float("nan")
    spread_per_hour: float = float("nan")
    expected_spread_per_hour: float = float("nan")
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def pair(self) -> Pair:
        return Pair(self.asset, self.short_venue, self.long_venue)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Plan:
        """A plan from one row of a plan table (extra columns go to ``details``)."""
        names = {f.name for f in fields(cls)} - {"details"}
        kw: dict[str, Any] = {}
        for n in names:
            if n in row:
                v = row[n]
                kw[n] = str(v) if n in ("asset", "short_venue", "long_venue") else float(v)
        extra = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items() if k not in names}
        return cls(**kw, details=MappingProxyType(extra))

    def as_dict(self) -> dict[str, Any]:
        """Every field and working figure as plain values (asset metadata, audit rows)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}
        out.update({k: v for k, v in self.details.items() if k not in out})
        return out
