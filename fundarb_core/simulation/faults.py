"""Fault injection for the paper venue: what goes wrong with an order, drawn reproducibly.

Why seeded by (seed, placement number): a keeper restarted after a crash re-creates its paper venue, which must
continue the same fault sequence, so a crash test replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

FaultKind = Literal["fail", "reject", "partial", "timeout", "none"]


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities of each injected fault per order (the rest succeed)."""

    p_fail: float = 0.0
    p_reject: float = 0.0
    p_partial: float = 0.0
    p_timeout: float = 0.0
    partial_range: tuple[float, float] = (0.2, 0.8)
    on_reduce_only: bool = False

    def draw(self, u: float) -> FaultKind:
        """The fault for a uniform draw ``u``."""
        edges = np.cumsum([self.p_fail, self.p_reject, self.p_partial, self.p_timeout])
        kinds: tuple[FaultKind, ...] = ("fail", "reject", "partial", "timeout")
        for kind, edge in zip(kinds, edges, strict=True):
            if u < edge:
                return kind
        return "none"


@dataclass
class Instruction:
    """An explicit fault queued for the next matching order (``None`` matches any venue / asset)."""

    kind: FaultKind
    venue: str | None
    asset: str | None
    fraction: float | None = None


class FaultInjector:
    """Explicit queued faults first, else a seeded draw from the :class:`FaultPlan` (module doc).

    Random faults hit opening orders only unless ``FaultPlan.on_reduce_only``: an exit is a taker order a real
    keeper would re-send until done."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan, self.seed = plan, seed
        self.queue: deque[Instruction] = deque()

    def inject(self, kind: FaultKind, venue: str | None = None, asset: str | None = None, count: int = 1,
               fraction: float | None = None) -> None:
        for _ in range(count):
            self.queue.append(Instruction(kind, venue, asset, fraction))

    def next(self, venue: str, asset: str, reduce_only: bool, seq: int) -> tuple[FaultKind, float]:
        """The fault for placement number ``seq`` and the filled fraction a ``partial`` would have."""
        rng = np.random.default_rng([self.seed, seq])
        u, frac_u = float(rng.random()), float(rng.random())
        lo, hi = self.plan.partial_range
        frac = lo + (hi - lo) * frac_u
        for i, ins in enumerate(self.queue):
            if (ins.venue in (None, venue)) and (ins.asset in (None, asset)):
                del self.queue[i]
                return ins.kind, ins.fraction if ins.fraction is not None else frac
        if reduce_only and not self.plan.on_reduce_only:
            return "none", frac
        return self.plan.draw(u), frac
