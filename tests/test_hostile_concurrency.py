"""Concurrency at the edges: a fresh Dagster home opened by several processes at once, a writer that finds the
DuckDB file held by a reader (a notebook, ``duckdb -readonly``), and a run that waits for a pool slot a live run
holds.  Each wait says who holds what, and ends with one line after its configurable limit."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from fundarb_pipelines.instance import ensure_dagster_home
from fundarb_pipelines.runs import COMMAND_TAG, POOL, process_tags
from tests.test_crash_ingest import REPO, cli_env, fundarb
from tests.test_hostile_inputs import assert_one_line, real_dir, run_cli

OPEN_HOME = """
import sys
from fundarb_pipelines.instance import ensure_dagster_home
import dagster as dg
ensure_dagster_home(sys.argv[1])
with dg.DagsterInstance.get() as instance:
    print(len(instance.get_runs()))
"""

HOLD_READ_ONLY = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1], read_only=True)
print("open", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_fresh_home_opened_by_four_processes_at_once(tmp_path: Path) -> None:
    env = cli_env(tmp_path, tmp_path / "db.duckdb", tmp_path / "home")
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_HOME, str(tmp_path / "home")], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["0"] * 4


def hold_read_only(db: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_READ_ONLY, str(db), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    return proc


def test_writer_waits_for_a_reader_with_a_message_then_gives_up_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNDARB_DATA_DIR", str(real_dir(tmp_path / "data")))
    assert run_cli(capsys, "ingest")[0] == 0
    db = tmp_path / "fundarb.duckdb"
    reader = hold_read_only(db, 60)
    try:
        monkeypatch.setenv("FUNDARB_DB_WAIT_S", "2")
        code, err, _ = run_cli(capsys, "ingest")
    finally:
        reader.kill()
        reader.wait()
    assert any(re.search(rf"waiting for the database {re.escape(str(db))}: held by .+ \(PID {reader.pid}\)", line)
               for line in err), err
    assert_one_line(code, err, 6, rf"fundarb ingest: the database {re.escape(str(db))} is held by .+ \(PID "
                    rf"{reader.pid}\) for [23] s \(limit 2 s, FUNDARB_DB_WAIT_S\): close that process \(a notebook "
                    r"or `duckdb` shell that has it open\), then retry")
    reader = hold_read_only(db, 3)  # a reader that goes away within the limit: the writer just waits
    monkeypatch.setenv("FUNDARB_DB_WAIT_S", "120")
    code, err, _ = run_cli(capsys, "ingest")
    reader.wait()
    assert code == 0, err


def test_a_run_waiting_for_a_live_runs_slot_says_who_holds_it_and_gives_up(tmp_path: Path) -> None:
    data = real_dir(tmp_path / "data")
    env = cli_env(data, tmp_path / "fundarb.duckdb", tmp_path / "home", FUNDARB_POOL_WAIT_S="3")
    ensure_dagster_home(tmp_path / "home")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with dg.DagsterInstance.get() as instance:  # a live `fundarb ingest` in another process holds the slot
            run_id = str(uuid.uuid4())
            tags = {**process_tags(), COMMAND_TAG: "ingest", "fundarb/pid": str(holder.pid),
                    "fundarb/proc_start": ""}
            instance.add_run(dg.DagsterRun(job_name="__ephemeral_asset_job__", run_id=run_id,
                                           status=dg.DagsterRunStatus.STARTED, tags=tags))
            instance.event_log_storage.initialize_concurrency_limit_to_default(POOL)
            assert instance.event_log_storage.claim_concurrency_slot(POOL, run_id, "candles").is_claimed
            started = time.monotonic()
            waiting = fundarb(env, "ingest")
            _, err = waiting.communicate(timeout=240)
            lines = [line for line in err.splitlines() if line.strip()]
            assert waiting.returncode == 6, err[-3000:]
            assert any(f"waiting for the duckdb pool slot: held by run {run_id[:8]} (fundarb ingest, PID "
                       f"{holder.pid}) since " in line for line in lines), err[-3000:]
            assert re.fullmatch(rf"fundarb ingest: the duckdb pool slot is held by run {run_id[:8]} \(fundarb ingest, "
                                rf"PID {holder.pid}\) since .+ UTC; gave up after [3-9] s \(FUNDARB_POOL_WAIT_S=3\): "
                                "wait for that run to finish, or terminate it in the Dagster UI if it is stuck",
                                lines[-1]), lines[-1]
            assert time.monotonic() - started < 200
            print(f"\nCASE | pool slot held by a live run | {waiting.returncode} | {lines[-1]}", file=sys.__stdout__)
            info = instance.event_log_storage.get_concurrency_info(POOL)
            assert [s.run_id for s in info.claimed_slots] == [run_id]  # the live holder keeps its slot
            assert {s.run_id for s in info.pending_steps} == {run_id}  # and our pending claim is gone
    finally:
        holder.kill()
        holder.wait()


def test_the_dev_sensor_frees_the_slot_of_a_killed_cli_run(tmp_path: Path) -> None:
    """Under ``fundarb dev`` the ``free_slots_of_dead_runs`` sensor does what every CLI command does first."""
    from fundarb_pipelines.definitions import defs
    from fundarb_pipelines.runs import dead_run_reaper

    assert defs().resolve_sensor_def("free_slots_of_dead_runs") is not None
    ensure_dagster_home(tmp_path / "home")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a real PID whose process has exited
    with dg.DagsterInstance.get() as instance:
        run_id = str(uuid.uuid4())
        tags = {**process_tags(), COMMAND_TAG: "ingest", "fundarb/pid": str(gone.pid), "fundarb/proc_start": ""}
        instance.add_run(dg.DagsterRun(job_name="__ephemeral_asset_job__", run_id=run_id,
                                       status=dg.DagsterRunStatus.STARTED, tags=tags))
        instance.event_log_storage.initialize_concurrency_limit_to_default(POOL)
        assert instance.event_log_storage.claim_concurrency_slot(POOL, run_id, "candles").is_claimed
        result = dead_run_reaper(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SkipReason) and result.skip_message == "freed the pool slots of 1 run(s)"
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info(POOL).claimed_slots
