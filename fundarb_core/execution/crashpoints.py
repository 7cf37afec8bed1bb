"""Named crash points for testing the keeper's crash recovery.

Why: the keeper's safety rests on write-ahead intent (:func:`fundarb_core.execution.ledger.send_order`), deterministic
client ids and :func:`fundarb_core.execution.ledger.reconcile` at the start of every cycle.  Those only matter when a
process dies *between* two writes — a case ordinary exceptions do not reproduce (they unwind, roll back and run
``finally`` blocks).  :func:`crashpoint` marks every step boundary of a cycle; when the environment variable
``FUNDARB_CRASH_AT`` names one, the process kills itself there with a real ``SIGKILL`` (no cleanup, no ``atexit``,
no transaction commit), exactly like an OOM kill or a power cut.  ``tests/test_keeper_crash.py`` runs a keeper in a
subprocess for each point, then restarts one and checks that nothing was doubled or lost.

``FUNDARB_CRASH_AT=name`` crashes the first time ``name`` is reached; ``name:N`` the N-th time in this process
(e.g. ``send_order.after_exchange:2`` is the second order's send, the long leg of an entry).  Unset — always in
production — a call is one dictionary lookup and a string comparison.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "FUNDARB_CRASH_AT"

POINTS = (
    "after_reconcile",
    "after_single_legs",
    "after_health",
    "after_plan",
    "after_decisions",
    "send_order.before_intent",
    "send_order.after_intent",
    "send_order.after_exchange",
    "between_legs",
    "before_performance",
)
"""Every crash point the keeper calls, in the order a cycle that enters reaches them."""

_hits: dict[str, int] = {}


def _target(spec: str) -> tuple[str, int]:
    """``name`` or ``name:N`` → (name, N); N defaults to 1."""
    name, _, n = spec.partition(":")
    return name, int(n) if n else 1


def crashpoint(name: str) -> None:
    """SIGKILL this process when ``FUNDARB_CRASH_AT`` selects ``name`` (module doc); otherwise do nothing."""
    spec = os.environ.get(ENV_VAR)
    if not spec or not spec.startswith(name):
        return
    want, nth = _target(spec)
    if want != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
