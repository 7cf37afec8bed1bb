"""``kill -9`` of real ``fundarb ingest`` processes at the points where a dead run used to hold the ``duckdb``
pool slot forever, each followed by a rerun in the **same** Dagster home: no hang, and a clean run's rows.

Why real processes: a killed run leaves its slot claim (and the run ``STARTED``) in the instance's SQLite storage;
only another process finding it there reproduces the hang.  The kill points are observed from outside: the
DuckDB WAL appearing (the first write), a step's ``STEP_START`` in the run's event log plus a delay (mid-step,
slot held), and a step's ``STEP_SUCCESS`` (between steps).  The rerun must say that it freed the dead run's slot
and finish within its timeout with exactly the rows of an in-process reference ingestion of the same files.
The fast case runs in CI; the others (``-m slow``) exercise the same reaping at the remaining points.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from fundarb_core.ingest import ingest_table
from fundarb_core.schema import RAW_TABLES
from fundarb_core.sources.replay import ReplaySource
from fundarb_pipelines.instance import ensure_dagster_home
from fundarb_pipelines.runs import POOL
from tests.test_hostile_inputs import real_dir

REPO = Path(__file__).resolve().parents[1]


def cli_env(data: Path, db: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_CRASH")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               FUNDARB_DATA_DIR=str(data), FUNDARB_DUCKDB=str(db), DAGSTER_HOME=str(home), **extra)
    return env


def fundarb(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fundarb_pipelines.cli", *argv], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _step_event(instance: dg.DagsterInstance, event: dg.DagsterEventType, step: str) -> bool:
    runs = instance.get_runs(limit=1)
    if not runs:
        return False
    return any(e.step_key == step for e in instance.all_logs(runs[0].run_id, of_type=event))


def kill_at(proc: subprocess.Popen[str], point: str, db: Path, instance: dg.DagsterInstance) -> None:
    """SIGKILL ``proc`` at ``point``: ``wal``, ``start:<step>+<s>`` or ``success:<step>``."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if point == "wal":
            hit = Path(f"{db}.wal").exists()
        else:
            kind, _, rest = point.partition(":")
            step, _, delay = rest.partition("+")
            event = dg.DagsterEventType.STEP_START if kind == "start" else dg.DagsterEventType.STEP_SUCCESS
            hit = _step_event(instance, event, step)
            if hit and delay:
                time.sleep(float(delay))
        if hit:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the ingest ended before {point} ({proc.returncode})"


def reference(data: Path, path: Path) -> None:
    """A clean ingestion of the same files, in this process (no Dagster): what the rerun must store."""
    source = ReplaySource(data)
    with duckdb.connect(str(path)) as conn:
        for table in RAW_TABLES:
            ingest_table(conn, source, table, None, None)


def assert_same_rows(db: Path, ref: Path) -> None:
    with duckdb.connect(str(db), read_only=True) as conn:
        conn.execute(f"ATTACH '{ref}' AS ref (READ_ONLY)")
        for table in (*RAW_TABLES, "rejected_rows", "duplicate_rows"):
            n, m = (conn.execute(f"SELECT count(*) FROM {s}{table}").fetchall()[0][0] for s in ("", "ref."))
            diff = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {table} EXCEPT SELECT * FROM ref.{table})"
                                ).fetchall()[0][0]
            assert (n, diff) == (m, 0), table


def crash_then_rerun(tmp_path: Path, point: str) -> dict[str, object]:
    data = real_dir(tmp_path / "data")
    db, home, ref = tmp_path / "db" / "fundarb.duckdb", tmp_path / "home", tmp_path / "ref.duckdb"
    env = cli_env(data, db, home)
    ensure_dagster_home(home)  # the storage exists before this process and the CLI open it together
    reference(data, ref)
    with dg.DagsterInstance.get() as instance:
        kill_at(fundarb(env, "ingest"), point, db, instance)
        (dead,) = instance.get_runs(limit=1)
        held = [s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots]
    assert dead.status == dg.DagsterRunStatus.STARTED  # what used to block every later run
    started = time.monotonic()
    rerun = fundarb(env, "ingest")
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err[-3000:]
    assert f"run {dead.run_id[:8]} of `fundarb ingest` died" in err
    assert "MISMATCH" not in out and out.count("all accounted for") == len(RAW_TABLES)
    assert_same_rows(db, ref)
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info(POOL).claimed_slots
    return {"point": point, "slot_held_by_dead_run": dead.run_id in held, "rerun_s": time.monotonic() - started}


def test_ingest_killed_mid_step_holding_the_slot_then_rerun_in_the_same_home(tmp_path: Path) -> None:
    result = crash_then_rerun(tmp_path, "start:funding_rates+0.3")
    assert result["slot_held_by_dead_run"], result


@pytest.mark.slow
@pytest.mark.parametrize("point", ["wal", "start:candles+0", "success:funding_rates", "start:open_interest+0.2"])
def test_ingest_killed_at_each_point_then_rerun_in_the_same_home(tmp_path: Path, point: str) -> None:
    print(crash_then_rerun(tmp_path, point))
