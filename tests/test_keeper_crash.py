"""Crash recovery: a keeper process SIGKILLed at every step boundary of a cycle that enters, then restarted.

Why a real process kill: write-ahead intent + deterministic client ids + reconcile-first only matter when a process
dies *between* two writes, which an exception never reproduces (it unwinds and rolls back).  Each case runs a keeper
in a subprocess with ``FUNDARB_CRASH_AT=<point>`` (:mod:`fundarb_core.execution.crashpoints`), checks that it died by
SIGKILL (so the point was really reached), restarts a normal keeper process on the same DuckDB file at the same hour
and the next, and checks that nothing was doubled or lost:

* per (venue, asset) the paper venue's position equals the ledger's fills, and reconcile found no mismatch;
* at most one live keeper position per asset, no entry filled twice, one venue order per client id;
* every fill the venue has is in the ledger (per order: same filled quantity), no order left unresolved;
* no leg left naked: every live position is hedged, every closed/failed one is flat;
* the ledger's wallets equal the venue's.

The market is the real bundled data of three assets on six venues over ten days (built once, ~2 s); before the
crash hour a normal cycle has already opened one position, so the crashed cycle has funding to reconcile, a position
to check the health of, and enters a second one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from fundarb_core.domain.positions import LIVE_POSITION_STATUSES as LIVE_POSITION
from fundarb_core.execution.crashpoints import ENV_VAR, POINTS
from fundarb_core.execution.risk import RiskConfig, is_hedged, leg_exposure
from fundarb_core.ingest import ingest_table
from fundarb_core.schema import LAYOUT_FILES, RAW_TABLES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR, ReplaySource
from fundarb_core.strategy.config import KeeperConfig
from fundarb_pipelines.sql_models import build_all
from tests.conftest import window_tables, write_layout
from tests.keeper_support import cycle, duck_ledger, paper_venue
from tests.test_keeper_execution import VENUE_IDS, assert_ledger_balances

REPO = Path(__file__).resolve().parents[1]
ASSETS = ("BTC", "ETH", "SOL")
FIRST = pd.Timestamp("2026-01-09 00:00")  # a normal cycle enters here, before any crash
CFG = KeeperConfig(decision_rule="spec")  # execution and recovery under the spec's eager one-action rule
RISK = RiskConfig()

# What a keeper process runs: cycles at the given hours on the DuckDB file, one JSON line per cycle.
KEEPER = """
import json, sys
import duckdb, pandas as pd
from fundarb_core.strategy.config import KeeperConfig
from tests.keeper_support import cycle, duck_ledger, paper_venue
db, venues, assets, hours = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4:]
conn = duckdb.connect(db)
cfg = KeeperConfig(decision_rule="spec")
ex = paper_venue(conn, cfg, initial_balances={v: 10_000.0 for v in venues})
ledger = duck_ledger(conn)
for h in hours:
    rep = cycle(conn, ex, cfg, pd.Timestamp(h), ledger=ledger, venues=venues, assets=assets)
    print(json.dumps({"now": h, "action": rep.action, "position_id": rep.position_id, "events": rep.events,
                      "mismatches": [list(m) for m in (rep.reconcile.mismatches if rep.reconcile else ())]}),
          flush=True)
conn.close()
"""

# The three send_order points also at the long leg of the entry (the second order the crashed cycle sends).
CASES = (*POINTS, "send_order.before_intent:2", "send_order.after_intent:2", "send_order.after_exchange:2")


def keeper(db: Path, hours: list[pd.Timestamp], crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the keeper in a fresh process (``crash_at`` sets ``FUNDARB_CRASH_AT``)."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if crash_at is not None:
        env[ENV_VAR] = crash_at
    args = [sys.executable, "-c", KEEPER, str(db), ",".join(VENUE_IDS), ",".join(ASSETS), *map(str, hours)]
    return subprocess.run(args, env=env, cwd=db.parent, capture_output=True, text=True, timeout=120)


def reports(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _build_market(path: Path) -> None:
    """The bundled real rows of :data:`ASSETS` over ten days, ingested with every SQL model, in a DuckDB file."""
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    source = ReplaySource(write_layout(path.parent / "data", window_tables(bundled, "2025-12-31", "2026-01-11")))
    everything = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    conn = duckdb.connect(str(path))
    for t in RAW_TABLES:
        ingest_table(conn, source, t, *everything, now=datetime(2026, 5, 1, tzinfo=UTC))
        conn.execute(f"DELETE FROM {t} WHERE asset NOT IN (SELECT unnest($a))", {"a": list(ASSETS)})
    build_all(conn)
    conn.close()


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.Timestamp]:
    """A DuckDB file where a normal cycle at :data:`FIRST` entered one position, and the first later hour at which
    the planner enters again (found by dry runs on a copy, so the crash cases start from the untouched file)."""
    root = tmp_path_factory.mktemp("keeper_crash")
    db = root / "start.duckdb"
    _build_market(db)
    (first,) = reports(keeper(db, [FIRST]))
    assert first["action"] == "enter", first
    probe = root / "probe.duckdb"
    shutil.copy(db, probe)
    conn = duckdb.connect(str(probe))
    try:
        ex, ledger = paper_venue(conn, CFG), duck_ledger(conn)
        for h in range(1, 24):
            hour = FIRST + pd.Timedelta(hours=h)
            if cycle(conn, ex, CFG, hour, ledger=ledger, venues=VENUE_IDS, assets=ASSETS,
                         dry_run=True).action == "enter":
                return db, hour
    finally:
        conn.close()
    pytest.fail("the planner never entered a second position in 24 h of real data")


def check_consistent(db: Path) -> None:
    """The invariants of the module doc, on the DuckDB file after the restarted keeper exited."""
    conn = duckdb.connect(str(db))
    try:
        ex, ledger = paper_venue(conn, CFG), duck_ledger(conn)
        # venue positions = ledger fills, per (venue, asset)
        mine = ledger.venue_qty()
        theirs = {(v, p.asset): p.qty for v in VENUE_IDS for p in ex.positions(v)}
        for key in set(mine) | set(theirs):
            assert mine.get(key, 0.0) == pytest.approx(theirs.get(key, 0.0), rel=1e-9, abs=1e-12), key
        # one venue order per client id; every venue fill in the ledger; nothing unresolved
        venue = ledger.store.query("SELECT venue, client_id, filled_qty FROM paper_orders")
        assert not venue.duplicated(["venue", "client_id"]).any()
        both = venue.merge(ledger.store.query(
            "SELECT venue, client_id, filled_qty, position_id FROM ledger_orders"),
                           on=["venue", "client_id"], how="left", suffixes=("_venue", "_ledger"))
        filled = both[both.filled_qty_venue > 0]
        assert filled.position_id.notna().all(), filled[filled.position_id.isna()]
        assert (filled.filled_qty_ledger - filled.filled_qty_venue).abs().max() < 1e-12
        assert not ledger.unresolved_orders()
        # at most one live keeper position per asset; no entry leg filled twice
        positions = ledger.positions(None)
        live = pd.Series([p.asset for p in positions if p.status in LIVE_POSITION])
        assert not live.duplicated().any(), [(p.position_id, p.status) for p in positions]
        opens = ledger.store.query("SELECT o.position_id, o.venue, sum(o.filled_qty * o.avg_price) AS usd, "
                             "any_value(p.size_usd) AS size FROM ledger_orders o JOIN ledger_positions p "
                             "USING (position_id) WHERE o.purpose IN ('open', 'retry') GROUP BY ALL")
        assert (opens.usd <= opens['size'] * 1.01).all(), opens  # 1 %: the fill's impact moves the price
        # no naked leg: live positions hedged, the others flat
        for p in positions:
            exposure = leg_exposure(ledger, ex, p)
            if p.status in LIVE_POSITION:
                assert p.status == "open" and is_hedged(p, exposure, CFG, RISK), (p.position_id, p.status, exposure)
            else:
                assert all(abs(q) == 0 for q in ledger.leg_qty(p.position_id).values()), (p.position_id, p.status)
        assert_ledger_balances(ledger, ex)
    finally:
        conn.close()


@pytest.mark.parametrize("point", CASES)
def test_keeper_recovers_from_a_kill_at(point: str, start: tuple[Path, pd.Timestamp], tmp_path: Path) -> None:
    """SIGKILL at ``point`` in a cycle that enters; a restarted keeper at the same hour and the next leaves the
    ledger and the venue consistent, with the planned position entered once (module doc)."""
    template, hour = start
    db = tmp_path / "keeper.duckdb"
    shutil.copy(template, db)
    crashed = keeper(db, [hour], crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stdout, crashed.stderr[-3000:])
    after = reports(keeper(db, [hour, hour + pd.Timedelta(hours=1)]))
    assert [r["mismatches"] for r in after] == [[], []], after
    check_consistent(db)
    conn = duckdb.connect(str(db))
    try:  # the planned entry happened exactly once (the restart re-derives the same position id at ``hour``)
        opened = duck_ledger(conn).store.query("SELECT position_id, status FROM ledger_positions WHERE opened_at = ?",
                                    [hour.to_pydatetime()])
    finally:
        conn.close()
    assert len(opened) == 1, opened


def test_without_a_crash_the_same_run_is_consistent(start: tuple[Path, pd.Timestamp], tmp_path: Path) -> None:
    """The baseline: the same two hours with no crash enter once and pass the same checks."""
    template, hour = start
    db = tmp_path / "keeper.duckdb"
    shutil.copy(template, db)
    first, _ = reports(keeper(db, [hour, hour + pd.Timedelta(hours=1)]))
    assert first["action"] == "enter", first
    check_consistent(db)


LATER = ("send_order.after_intent", "send_order.after_exchange", "between_legs", "send_order.after_intent:2",
         "send_order.after_exchange:2")


@pytest.mark.parametrize("point", LATER)
def test_keeper_recovers_when_restarted_at_the_next_cycle(point: str, start: tuple[Path, pd.Timestamp],
                                                          tmp_path: Path) -> None:
    """The usual restart: not a re-run of the same hour but the next 5-minute cycle (a new position id), so the
    crashed entry's legs must be found through reconcile and the single-leg repair alone."""
    template, hour = start
    db = tmp_path / "keeper.duckdb"
    shutil.copy(template, db)
    crashed = keeper(db, [hour], crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stdout, crashed.stderr[-3000:])
    after = reports(keeper(db, [hour + pd.Timedelta(minutes=5), hour + pd.Timedelta(hours=1)]))
    assert [r["mismatches"] for r in after] == [[], []], after
    check_consistent(db)
