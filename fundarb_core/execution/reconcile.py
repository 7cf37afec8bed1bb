"""Bring the ledger in line with the venues before a cycle does anything else.

Why first: every later step (single legs, health, sizing) must see the venues' truth — a fill the previous
process never recorded is still exposure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from fundarb_core.domain.orders import OrderStatus
from fundarb_core.domain.positions import PositionStatus
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.venue import ExchangeAdapter, ExchangeError


@dataclass(frozen=True)
class ReconcileReport:
    """What :func:`reconcile` changed."""

    fills_recorded: int
    not_received: int
    still_unknown: int
    orphans_imported: int
    canceled_unknown_open: int
    funding_recorded: int
    mismatches: tuple[tuple[str, str, float, float], ...]


def reconcile(ledger: Ledger, exchange: ExchangeAdapter, now: datetime) -> ReconcileReport:
    """1. every ``pending`` / ``unknown`` / ``open`` ledger order is fetched by client id: its fill is recorded,
    or it is marked ``not_received`` when the venue does not have it;
    2. orders the venue has and the ledger lacks (their intent write was lost): when the adapter can list them
    (``all_orders``), filled ones are imported under ``orphan:<venue>:<asset>`` (closed by the cycle) and open
    ones are cancelled;
    3. funding the venue paid since the ledger's last record is recorded;
    4. remaining differences between the ledger's quantity and the venue's position per (venue, asset) are
    logged as ``reconcile_mismatch`` events (returned in ``mismatches``) — never silently overwritten.
    """
    fills = not_rec = unknown = orphans = canceled = 0
    for row in ledger.unresolved_orders():
        try:
            got = exchange.fetch_order_by_client_id(row.venue, row.client_id)
        except ExchangeError:
            unknown += 1
            continue
        if got is None:
            ledger.mark_order(row.venue, row.client_id, OrderStatus.NOT_RECEIVED, now,
                              "reconcile: venue has no such order")
            not_rec += 1
            continue
        if abs(ledger.record_order(got, now, reason="reconciled")) > 0:
            fills += 1
            ledger.event(now, "reconcile_fill", row.position_id, row.venue, client_id=row.client_id)
    lister = getattr(exchange, "all_orders", None)
    if callable(lister):
        since = ledger.last_reconciled - pd.Timedelta(days=1) if ledger.last_reconciled is not None else None
        known = ledger.known_order_ids(since)
        for o in lister(since=since):
            if (o.venue, o.client_id) in known:
                continue
            if o.status == OrderStatus.OPEN:
                exchange.cancel_order(o.venue, o.client_id)
                canceled += 1
                o = exchange.fetch_order_by_client_id(o.venue, o.client_id) or o
            if o.filled_qty <= 0:
                continue
            pid = f"orphan:{o.venue}:{o.asset}"
            if ledger.position(pid) is None:
                ledger.add_position(pid, {"asset": o.asset, "short_venue": o.venue, "long_venue": o.venue,
                                          "size_usd": o.filled_usd}, now, status=PositionStatus.ORPHAN)
            else:
                ledger.update_position(pid, status=PositionStatus.ORPHAN, closed_at=None)
            ledger.record_intent(o.venue, o.client_id, pid, o.asset, "orphan", "orphan", 0, o.side, o.size_usd,
                                 o.price, o.reduce_only, now)
            ledger.record_order(o, now, reason="orphan_imported")
            ledger.event(now, "reconcile_orphan", pid, o.venue, client_id=o.client_id)
            orphans += 1
    funding = ledger.record_funding(exchange.funding_payments(ledger.last_funding_ts()))
    mismatches = []
    expected = ledger.venue_qty()
    venues = {v for v, _ in expected} | set(ledger.accounts())
    seen: set[tuple[str, str]] = set()
    for venue in sorted(venues):
        for p in exchange.positions(venue):
            seen.add((venue, p.asset))
            want = expected.get((venue, p.asset), 0.0)
            if abs(p.qty - want) > 1e-9 * max(1.0, abs(p.qty)):
                mismatches.append((venue, p.asset, want, p.qty))
    for (venue, asset), q in expected.items():
        if (venue, asset) not in seen and abs(q) > 1e-9 * max(1.0, abs(q)):
            mismatches.append((venue, asset, q, 0.0))
    for venue, asset, want, have in mismatches:
        ledger.event(now, "reconcile_mismatch", None, venue, asset=asset, ledger_qty=want, venue_qty=have)
    ledger.last_reconciled = pd.Timestamp(now).to_pydatetime()
    return ReconcileReport(fills, not_rec, unknown, orphans, canceled, funding, tuple(mismatches))
