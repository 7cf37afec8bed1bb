"""Wall time of the forecast sweep in-process, and on the production profile with 1 and with 2 Celery workers.

    make deploy-bench            (or: FUNDARB_BIN=.venv/bin .venv/bin/python deploy/bench_workers.py [--quick])

Builds a private warehouse from the bundled data (``--start`` … ``--end``), runs ``forecast_sweep_job`` once
in-process, then for each worker count brings a private profile up (free ports, temp dir, fresh passwords),
submits the same sweep to its webserver, waits, and brings it down.  Prints the figures and ratios, then one JSON
line.  ``run`` is the run's own start → end as PostgreSQL recorded it; ``submit`` adds the queue and the launch.
The machine's cores and load average are printed too: on a shared box they decide the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import psycopg2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fundarb_core.ingest import ingest_table  # noqa: E402
from fundarb_core.schema import RAW_TABLES  # noqa: E402
from fundarb_core.sources.replay import ReplaySource  # noqa: E402
from fundarb_pipelines.sql_models import build_all  # noqa: E402

QUICK = {"eval_days": 2, "gbm_trees": 50, "deep_epochs": 1, "deep_max_train_windows": 2000}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_warehouse(path: Path, start: str, end: str) -> None:
    """The bundled rows in [start, end) ingested into ``path``, every SQL model built (as ``fundarb run`` does)."""
    conn = duckdb.connect(str(path))
    lo, hi = (datetime.fromisoformat(x).replace(tzinfo=UTC) for x in (start, end))
    for table in RAW_TABLES:
        ingest_table(conn, ReplaySource(), table, lo, hi, now=hi)
    build_all(conn)
    conn.close()


def in_process(warehouse: str, run_config: dict) -> float:
    os.environ["FUNDARB_DUCKDB"] = warehouse
    from fundarb_pipelines.definitions import defs

    t0 = time.perf_counter()
    assert defs().resolve_job_def("forecast_sweep_job").execute_in_process(run_config=run_config).success
    return time.perf_counter() - t0


def on_profile(warehouse: str, run_config: dict, workers: int) -> dict[str, float]:
    from dagster_graphql import DagsterGraphQLClient

    deploy_dir = Path(tempfile.mkdtemp(prefix="fundarb-bench-", dir="/tmp"))
    deploy_dir.chmod(0o711)
    env = {**os.environ, "FUNDARB_DEPLOY_DIR": str(deploy_dir), "FUNDARB_DUCKDB": warehouse,
           "FUNDARB_BIN": os.environ.get("FUNDARB_BIN", str(Path(sys.executable).parent)),
           "FUNDARB_CELERY_WORKERS": str(workers), "FUNDARB_PG_PASSWORD": secrets.token_hex(16),
           "FUNDARB_REDIS_PASSWORD": secrets.token_hex(16)}
    for name in ("PG", "REDIS", "MLFLOW", "DAGSTER", "CODE_SERVER"):
        env[f"FUNDARB_{name}_PORT"] = str(_port())
    profile = str(REPO / "deploy" / "profile.sh")
    try:
        subprocess.run([profile, "up"], env=env, check=True, capture_output=True, timeout=600)
        client = DagsterGraphQLClient("127.0.0.1", port_number=int(env["FUNDARB_DAGSTER_PORT"]))
        t0 = time.perf_counter()
        run_id = client.submit_job_execution("forecast_sweep_job", run_config=run_config)
        while (status := client.get_run_status(run_id).value) not in ("SUCCESS", "FAILURE", "CANCELED"):
            time.sleep(0.5)
        submit = time.perf_counter() - t0
        if status != "SUCCESS":
            raise SystemExit(f"sweep on {workers} worker(s): {status} (logs in {deploy_dir}/logs)")
        with psycopg2.connect(host="127.0.0.1", port=int(env["FUNDARB_PG_PORT"]), user="fundarb",
                              password=env["FUNDARB_PG_PASSWORD"], dbname="dagster") as pg, pg.cursor() as cur:
            cur.execute("SELECT end_time - start_time FROM runs WHERE run_id = %s", [run_id])
            (run,) = cur.fetchone()
        return {"run": float(run), "submit": submit}
    finally:
        subprocess.run([profile, "down"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(deploy_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", default="2026-02-01")
    ap.add_argument("--end", default="2026-03-08")
    ap.add_argument("--quick", action="store_true", help="the CI test's small walk-forward settings")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fundarb-bench-wh-"))
    try:
        warehouse = str(tmp / "fundarb.duckdb")
        build_warehouse(Path(warehouse), args.start, args.end)
        cfg = {**(QUICK if args.quick else {}), "out_dir": str(tmp / "sweeps")}
        run_config = {"ops": {"sweep_panels": {"config": cfg}}}
        load0 = os.getloadavg()[0]
        local = in_process(warehouse, run_config)
        print(f"in-process: {local:.1f} s", flush=True)
        res = {}
        for n in (1, 2):
            res[n] = on_profile(warehouse, run_config, n)
            print(f"{n} Celery worker(s): run {res[n]['run']:.1f} s, submit → success {res[n]['submit']:.1f} s",
                  flush=True)
        load1 = os.getloadavg()[0]
        speedup = res[1]["run"] / res[2]["run"]
        print(f"2 workers vs 1: {speedup:.2f}x  ({os.cpu_count()} cores, load average {load0:.1f} → {load1:.1f})")
        print(json.dumps({"bench": "sweep_workers", "cells": 12, "quick": args.quick, "cores": os.cpu_count(),
                          "in_process_s": round(local, 1), "one_worker_run_s": round(res[1]["run"], 1),
                          "two_workers_run_s": round(res[2]["run"], 1), "speedup_2_vs_1": round(speedup, 2),
                          "loadavg_start": round(load0, 1), "loadavg_end": round(load1, 1)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
