"""Fault injection: 1,000 hourly paper cycles over real rates with randomly failing, partial, timed-out and rejected
legs, and a process restart half way.

Invariants checked at every cycle end:
* no position stays single-legged for more than the retry budget (5 attempts) plus one cycle;
* no client id opens twice (each order's fills never exceed what it asked for; one venue order per id);
* per-venue and portfolio net delta within the limits (portfolio counted over hedged positions; a naked leg under
  repair is bounded by the first invariant instead);
* the ledger's wallets equal the venue's (initial + realised − fees + funding), i.e. nothing lost or counted twice.

Speed: the market is three assets on six venues; planning (snapshot + plans) runs every sixth cycle and the risk
half (reconcile, single legs, health, funding, performance) every cycle.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.risk import RiskConfig, is_hedged, leg_exposure, net_deltas
from fundarb_core.simulation.faults import FaultPlan
from fundarb_core.simulation.paper_venue import PaperVenue
from fundarb_core.strategy.config import KeeperConfig
from tests.keeper_support import cycle, duck_ledger, paper_venue
from tests.test_keeper_execution import VENUE_IDS, assert_ledger_balances, build_db

START = pd.Timestamp("2026-01-08 00:00")
CYCLES = 1_000
PLAN_EVERY = 6
FAULTS = FaultPlan(p_fail=0.12, p_reject=0.08, p_partial=0.12, p_timeout=0.1)
CFG = KeeperConfig(max_positions=3, decision_rule="spec")
RISK = RiskConfig()


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    c = build_db(tmp_path_factory.mktemp("keeper_faults"), lo="2025-12-10", hi="2026-02-25")
    yield c
    c.close()


def _check_cycle(ledger: Ledger, ex: PaperVenue) -> None:
    for p in ledger.positions(None):
        assert p.naked_cycles <= RISK.max_leg_attempts + 1, (p.position_id, p.naked_cycles)
        assert p.retry_attempts <= RISK.max_leg_attempts
    d = net_deltas(ledger, ex, CFG, RISK)
    assert abs(d.portfolio_hedged) <= RISK.max_portfolio_net_delta_usd, d
    for v, x in d.venue.items():
        assert abs(x) <= RISK.max_venue_net_delta_usd * 1.01, (v, x)  # 1 %: prices move after the entry check
    for p in ledger.positions(("open",)):
        assert is_hedged(p, leg_exposure(ledger, ex, p), CFG, RISK)


def test_thousand_faulty_cycles_keep_every_invariant(conn: duckdb.DuckDBPyConnection) -> None:
    ex = paper_venue(conn, CFG, initial_balances={v: 10_000.0 for v in VENUE_IDS}, faults=FAULTS, seed=7,
                       now=START.to_pydatetime())
    ledger = duck_ledger(conn)
    actions: list[str] = []
    for h in range(CYCLES):
        if h == CYCLES // 2:  # a restarted process: new objects, same DuckDB state
            ex = paper_venue(conn, CFG, faults=FAULTS, seed=7)
            ledger = duck_ledger(conn)
        now = START + pd.Timedelta(hours=h)
        rep = cycle(conn, ex, CFG, now, ledger=ledger, venues=VENUE_IDS, risk=RISK, plan=h % PLAN_EVERY == 0)
        actions.append(rep.action)
        assert rep.reconcile is not None and not rep.reconcile.mismatches, rep.reconcile
        _check_cycle(ledger, ex)
        if h % 100 == 99:
            assert_ledger_balances(ledger, ex)
    assert_ledger_balances(ledger, ex)

    # no duplicate open for any client id
    orders = ledger.store.query("SELECT * FROM ledger_orders")
    assert not orders.duplicated(["venue", "client_id"]).any()
    per_order = ledger.store.query("SELECT o.venue, o.client_id, o.side, o.filled_qty, o.avg_price, o.size_usd, "
                             "coalesce(sum(abs(f.qty)), 0) AS fill_qty FROM ledger_orders o LEFT JOIN ledger_fills f "
                             "USING (venue, client_id) GROUP BY ALL")
    assert (per_order.fill_qty <= per_order.filled_qty * (1 + 1e-9) + 1e-12).all()
    opening = per_order.merge(orders[["venue", "client_id", "reduce_only", "price"]], on=["venue", "client_id"])
    opening = opening[~opening.reduce_only & (opening.fill_qty > 0)]
    assert (opening.fill_qty * opening.price <= opening.size_usd * (1 + 1e-9)).all()  # never filled twice
    venue_orders = ex.all_orders()
    assert len({(o.venue, o.client_id) for o in venue_orders}) == len(venue_orders)

    # the faults really happened and were handled
    statuses = orders.status.value_counts()
    reasons = orders.reason.fillna("").value_counts()
    assert statuses.get("rejected", 0) > 5 and statuses.get("partial", 0) > 5
    assert statuses.get("not_received", 0) > 5 and reasons.get("timeout_resolved", 0) > 5
    assert (orders.purpose == "retry").sum() > 10
    events = ledger.store.query("SELECT kind, count(*) AS n FROM ledger_events GROUP BY kind").set_index("kind").n
    assert events.get("leg_retry", 0) > 10
    positions = ledger.store.query("SELECT status, reason, count(*) AS n FROM ledger_positions GROUP BY ALL")
    assert positions.n.sum() >= 10 and actions.count("enter") + actions.count("switch") >= 10
    assert (ledger.store.query("SELECT count(*) AS n FROM ledger_funding").n[0]) > 500
    perf = ledger.store.query("SELECT * FROM performance_snapshots")
    assert len(perf) == CYCLES
    # cooldowns were set after exhausted retries, or no position ever exhausted them
    gave_up = positions[positions.reason.fillna("") == "single_leg_retries_exhausted"].n.sum()
    cooled = ledger.store.query("SELECT count(*) AS n FROM ledger_cooldowns").n[0]
    assert (gave_up == 0) or cooled >= 1


def test_exhausted_retries_close_the_exposed_leg_and_cool_the_asset_down(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The missing leg is rejected on the entry and on all 5 retries (5-minute cycles, the spec's cadence): the
    exposed leg is closed at the next cycle and the asset is not re-entered for 30 minutes."""
    conn = build_db(tmp_path_factory.mktemp("keeper_giveup"), lo="2025-12-20", hi="2026-01-20")
    start = pd.Timestamp("2026-01-10 00:00")
    ex = paper_venue(conn, CFG, initial_balances={v: 10_000.0 for v in VENUE_IDS}, now=start.to_pydatetime())
    ledger = duck_ledger(conn)
    dry = cycle(conn, ex, CFG, start, ledger=ledger, venues=VENUE_IDS, dry_run=True)
    plan = ledger.store.query("SELECT * FROM cycle_decisions WHERE taken")
    asset, long_venue = plan.asset[0], plan.long_venue[0]
    assert dry.action == "enter"
    ex.inject("reject", venue=long_venue, asset=asset, count=1 + RISK.max_leg_attempts)
    naked = []
    pid = ""
    for i in range(12):
        now = start + pd.Timedelta(minutes=5 * i)
        rep = cycle(conn, ex, CFG, now, ledger=ledger, venues=VENUE_IDS, risk=RISK, plan=True)
        pid = pid or str(rep.position_id)
        naked.append(ledger.position(pid).status == "single_leg")  # type: ignore[union-attr]
        _check_cycle(ledger, ex)
        if i < 6:  # cooling down: no new entry on that asset
            taken = ledger.store.query("SELECT asset FROM cycle_decisions WHERE taken AND cycle_ts = ?",
                                 [now.to_pydatetime()])
            assert i == 0 or asset not in set(taken.asset)
    final = ledger.position(pid)
    assert final is not None and final.status == "closed" and final.reason == "single_leg_retries_exhausted"
    assert final.retry_attempts == RISK.max_leg_attempts and final.naked_cycles <= RISK.max_leg_attempts + 1
    budget = RISK.max_leg_attempts
    assert naked[:budget] == [True] * budget and not any(naked[budget:])  # closed at the cycle after the 5th retry
    orders = ledger.store.query("SELECT * FROM ledger_orders WHERE position_id = ? ORDER BY created_at", [pid])
    retries = orders[orders.purpose == "retry"]
    assert list(retries.attempt) == list(range(1, RISK.max_leg_attempts + 1))
    assert retries.client_id.nunique() == RISK.max_leg_attempts and (retries.status == "rejected").all()
    assert ledger.cooldowns(final.closed_at)  # type: ignore[arg-type]
    cd = ledger.store.query("SELECT * FROM cycle_decisions WHERE reason = 'cooldown' AND asset = ?", [asset])
    assert len(cd) > 0  # the planner saw the cooldown
    assert_ledger_balances(ledger, ex)
    conn.close()
