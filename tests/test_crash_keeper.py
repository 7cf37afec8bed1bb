"""``kill -9`` of a real ``fundarb keeper --once`` inside its cycle (the keeper's own crash points, a real SIGKILL
while the ``keeper_cycle`` step holds the ``duckdb`` pool slot), then ``fundarb keeper --once`` again in the same
Dagster home: it frees the dead run's slot instead of waiting forever, and the ledger is reconciled with the paper
venue (the invariants of ``tests/test_keeper_crash.py``).  Slow (four keeper processes); the reaping itself is
covered in CI by ``tests/test_crash_ingest.py`` and the ledger recovery by ``tests/test_keeper_crash.py``."""

from __future__ import annotations

import signal
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from fundarb_core.execution.crashpoints import ENV_VAR
from fundarb_pipelines.instance import ensure_dagster_home
from tests.test_crash_ingest import cli_env, fundarb
from tests.test_keeper_crash import FIRST, _build_market, check_consistent


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_reconcile", "send_order.after_exchange"])
def test_keeper_cycle_killed_then_rerun_in_the_same_home(tmp_path: Path, point: str) -> None:
    db, home = tmp_path / "market" / "fundarb.duckdb", tmp_path / "home"
    db.parent.mkdir()
    _build_market(db)
    ensure_dagster_home(home)
    env = cli_env(tmp_path / "market" / "data", db, home)
    crashed = fundarb({**env, ENV_VAR: point}, "keeper", "--once", "--as-of", str(FIRST))
    _, err = crashed.communicate(timeout=300)
    assert crashed.returncode == -signal.SIGKILL, err[-3000:]
    with dg.DagsterInstance.get() as instance:
        (dead,) = instance.get_runs(limit=1)
        assert dead.status == dg.DagsterRunStatus.STARTED
        held = [s.run_id for s in instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots]
    assert held == [dead.run_id]
    rerun = fundarb(env, "keeper", "--once", "--as-of", str(FIRST + pd.Timedelta(hours=1)))
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert f"run {dead.run_id[:8]} of `fundarb keeper` died" in err
    assert out.startswith(f"keeper cycle at {FIRST + pd.Timedelta(hours=1)} (paper)"), out
    print(point, out.strip())
    check_consistent(db)
