"""The production profile end to end, on real engines started on loopback by ``deploy/profile.sh``.

A real PostgreSQL (Dagster's run / event-log / schedule storage and MLflow's backend store), a real Redis (the
Celery broker), the MLflow tracking server, the Dagster gRPC code server, webserver and daemon, and two Celery
workers.  The forecast sweep (12 cells: 6 models × 2 targets, on five weeks of bundled data) is run once in-process
from the local code location, then submitted to the webserver: queued, launched by the daemon, every cell a Celery
task.  Both must give the same scores and predictions; the run must still be there after the webserver restarts
(it lives in PostgreSQL); the cells' MLflow runs must be rows in PostgreSQL with their artifacts in the shared
root; and neither password may appear in any log, command line, run record or event.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import psycopg2
import pytest

from tests.conftest import real_db, window_tables

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "deploy" / "profile.sh"
# small walk-forward settings: every model still fits and predicts on real rows, in seconds
SWEEP = {"eval_days": 2, "gbm_trees": 50, "deep_epochs": 1, "deep_max_train_windows": 2000}
CELLS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require_engines() -> None:
    missing = [p for p, ok in (("postgresql", any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))),
                               ("redis-server", shutil.which("redis-server") is not None)) if not ok]
    if missing:
        pytest.fail(f"the production-profile test needs Debian's {' and '.join(missing)}: "
                    f"apt-get install -y {' '.join(missing)} (.ci/run does)")


def _profile(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    res = subprocess.run([str(PROFILE), *args], env=env, capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"deploy/profile.sh {' '.join(args)} failed:\n{out}"
    return out


@pytest.fixture
def deploy_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Settings for a private profile: free ports, fresh passwords, a deploy dir the postgres user can reach."""
    _require_engines()
    deploy_dir = Path(tempfile.mkdtemp(prefix="fundarb-deploy-", dir="/tmp"))
    deploy_dir.chmod(0o711)  # run as root, PostgreSQL runs as `postgres` and must reach its data directory
    env = {
        **os.environ,
        "FUNDARB_DEPLOY_DIR": str(deploy_dir),
        "FUNDARB_BIN": str(Path(sys.executable).parent),
        "FUNDARB_PG_PORT": str(_free_port()), "FUNDARB_REDIS_PORT": str(_free_port()),
        "FUNDARB_MLFLOW_PORT": str(_free_port()), "FUNDARB_DAGSTER_PORT": str(_free_port()),
        "FUNDARB_CODE_SERVER_PORT": str(_free_port()),
        "FUNDARB_PG_PASSWORD": secrets.token_hex(16), "FUNDARB_REDIS_PASSWORD": secrets.token_hex(16),
        "FUNDARB_CELERY_WORKERS": "2",
    }
    try:
        yield env
    finally:
        subprocess.run([str(PROFILE), "down"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(deploy_dir, ignore_errors=True)


def _pg(env: dict[str, str], db: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(host="127.0.0.1", port=int(env["FUNDARB_PG_PORT"]), user="fundarb",
                            password=env["FUNDARB_PG_PASSWORD"], dbname=db)


def _wait_run(client: object, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value  # type: ignore[attr-defined]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return str(status)
        time.sleep(1)
    raise AssertionError(f"run {run_id} not finished after {timeout} s")


def _group_cmdlines(pgid: int) -> list[str]:
    """Command lines of every process in a process group (each service runs in its own session)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                out.append((stat.parent / "cmdline").read_bytes().decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return out


def _cell_frames(root: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(root)): pd.read_parquet(p) for p in sorted(root.glob("*/*/*.parquet"))}


@pytest.mark.timeout(600)
def test_sweep_on_celery_workers_equals_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   bundled: dict[str, pd.DataFrame],
                                                   deploy_env: dict[str, str]) -> None:
    from dagster import DagsterEventType
    from dagster_graphql import DagsterGraphQLClient

    # --- the warehouse: five weeks of real bundled rows, ingested, every SQL model built
    wh = tmp_path / "warehouse"
    real_db(wh, window_tables(bundled, "2026-02-01", "2026-03-08")).close()
    warehouse = str(wh / "db.duckdb")
    sweeps = tmp_path / "sweeps"
    run_config = {"ops": {"sweep_panels": {"config": {**SWEEP, "out_dir": str(sweeps)}}}}

    # --- 1. in-process, from the local code location (SQLite MLflow store of the test's temp dir)
    monkeypatch.setenv("FUNDARB_DUCKDB", warehouse)
    from fundarb_pipelines.definitions import defs

    local = defs().resolve_job_def("forecast_sweep_job")
    assert local.executor_def.name != "fundarb_celery"
    t_local = time.monotonic()
    res = local.execute_in_process(run_config=run_config)
    assert res.success
    local_run = res.run_id
    local_s = time.monotonic() - t_local

    # --- 2. the production profile: one command up
    env = {**deploy_env, "FUNDARB_DUCKDB": warehouse}
    t0 = time.monotonic()
    up = _profile(env, "up")
    up_s = time.monotonic() - t0
    assert "2 Celery workers" in up, up
    deploy_dir = Path(env["FUNDARB_DEPLOY_DIR"])

    client = DagsterGraphQLClient("127.0.0.1", port_number=int(env["FUNDARB_DAGSTER_PORT"]))
    t0 = time.monotonic()
    run_id = client.submit_job_execution("forecast_sweep_job", run_config=run_config)
    status = _wait_run(client, run_id)
    run_s = time.monotonic() - t0
    logs = deploy_dir / "logs"
    assert status == "SUCCESS", (logs / "code_server.log").read_text()[-4000:]

    # --- the same results: the warehouse rows of both runs, and every cell's own files
    with duckdb.connect(warehouse, read_only=True) as conn:
        rows = conn.execute("SELECT * FROM forecast_sweep_scores").df()
    by_run = {r: g.drop(columns="run_id").sort_values(["target", "model", "venue_type", "metric"])
              .reset_index(drop=True) for r, g in rows.groupby("run_id")}
    assert set(by_run) == {local_run, run_id}
    assert by_run[run_id]["model"].nunique() == 6 and by_run[run_id]["target"].nunique() == 2
    pd.testing.assert_frame_equal(by_run[run_id], by_run[local_run], check_exact=True)
    here, there = _cell_frames(sweeps / local_run), _cell_frames(sweeps / run_id)
    assert len(there) == 2 * CELLS and set(here) == set(there)
    for name, frame in there.items():
        pd.testing.assert_frame_equal(frame, here[name], check_exact=True, obj=name)

    # --- the cells really ran on both workers (each worker logs the Celery tasks it executed)
    done = {w: len(re.findall(r"Task execute_plan\[[^]]+\] succeeded", (logs / f"{w}.log").read_text()))
            for w in ("worker1", "worker2")}
    assert sum(done.values()) == CELLS + 2 and min(done.values()) >= 1, done  # + sweep_panels, store_sweep

    # --- the run and its events live in PostgreSQL; it went through the queue (queued run coordinator)
    with _pg(env, "dagster") as pg, pg.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", [run_id])
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute("SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s GROUP BY 1", [run_id])
        events = dict(cur.fetchall())
        enqueued, step_ok = DagsterEventType.RUN_ENQUEUED.value, DagsterEventType.STEP_SUCCESS.value
        assert events.get(enqueued) == 1 and events.get(step_ok) == CELLS + 2, events
        # the DuckDB steps claimed the `duckdb` pool in PostgreSQL: one slot, shared by every run and worker
        cur.execute('SELECT "limit" FROM concurrency_limits WHERE concurrency_key = %s', ["duckdb"])
        assert cur.fetchone() == (1,)
        # secrets: neither password in any run record or event (executor and resources name env vars only)
        for pw in (env["FUNDARB_PG_PASSWORD"], env["FUNDARB_REDIS_PASSWORD"]):
            cur.execute("SELECT (SELECT count(*) FROM runs WHERE run_body LIKE %s)"
                        " + (SELECT count(*) FROM event_logs WHERE event LIKE %s)", [f"%{pw}%"] * 2)
            assert cur.fetchone() == (0,)

    # --- the history survives a restart of the webserver: the new process reads it from PostgreSQL
    _profile(env, "restart", "webserver")
    client = DagsterGraphQLClient("127.0.0.1", port_number=int(env["FUNDARB_DAGSTER_PORT"]))
    assert client.get_run_status(run_id).value == "SUCCESS"

    # --- MLflow: one run per cell, logged through the tracking server, stored in PostgreSQL
    with _pg(env, "mlflow") as pg, pg.cursor() as cur:
        cur.execute("SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                    "WHERE t.key = 'fundarb.dagster_run_id' AND t.value = %s AND r.status = 'FINISHED'", [run_id])
        mlflow_runs = [r[0] for r in cur.fetchall()]
        assert len(mlflow_runs) == CELLS
        cur.execute("SELECT count(DISTINCT run_uuid) FROM latest_metrics WHERE key = 'mae_bp_per_hour' "
                    "AND run_uuid = ANY(%s)", [mlflow_runs])
        assert cur.fetchone() == (CELLS,)
    artifacts = list((deploy_dir / "mlflow-artifacts").rglob("scores.parquet"))
    assert len(artifacts) == CELLS  # the shared artifact root, through the server's artifact proxy

    # --- secrets never logged, never on a command line, never in the files the profile writes
    pids = [int(p.read_text()) for p in (deploy_dir / "run").glob("*.pid")]
    assert len(pids) == 7  # redis, mlflow, code server, webserver, daemon, 2 workers (PostgreSQL: pg_ctl)
    cmdlines = [c for pgid in pids for c in _group_cmdlines(pgid)]
    assert len(cmdlines) > len(pids)  # the groups' children too (uvicorn, Celery's pool processes)
    written = [p for d in ("logs", "dagster_home") for p in (deploy_dir / d).rglob("*") if p.is_file()]
    written += [deploy_dir / "profile.env", deploy_dir / "workspace.yaml"]
    for pw in (env["FUNDARB_PG_PASSWORD"], env["FUNDARB_REDIS_PASSWORD"]):
        assert not any(pw in c for c in cmdlines)
        leaked = [str(p) for p in written if pw.encode() in p.read_bytes()]
        assert not leaked, leaked

    # --- one command down: every process it started is gone
    _profile(env, "down")
    time.sleep(0.5)
    assert not [p for p in pids if Path(f"/proc/{p}").exists() and
                "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    print(f"in-process sweep {local_s:.0f} s, profile up {up_s:.0f} s, sweep on 2 Celery workers {run_s:.0f} s")
