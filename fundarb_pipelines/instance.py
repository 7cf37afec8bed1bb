"""The project's own Dagster instance: ``DAGSTER_HOME`` with a ``dagster.yaml`` that caps the
``duckdb`` pool at one slot.

``fundarb`` commands and ``dagster dev`` (started as the README says) share this home, so runs
from the CLI, the UI and backfills all queue on the same pool instead of racing for DuckDB's
file lock.

The home's storage (SQLite run, event-log and schedule databases) is created once, under an
exclusive file lock, by whichever command comes first: two ``fundarb ingest`` started together on
a fresh home used to both create it and one died with ``table run_tags already exists``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from fundarb_core.errors import FundarbError

DAGSTER_YAML = """\
# Written by fundarb (fundarb_pipelines/instance.py). Every DuckDB writer is in the `duckdb`
# pool; one slot means parallel runs and backfills take turns instead of failing on the lock.
concurrency:
  pools:
    default_limit: 1
    granularity: op
  runs:
    max_concurrent_runs: 4
# The daemon of `fundarb dev` frees the pool slots of runs that ended without releasing them (a
# killed run worker marked failed in the UI); the fundarb CLI does the same for its own dead runs
# before it waits for a slot (fundarb_pipelines/runs.py).
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 5
telemetry:
  enabled: false
"""

DEFAULT_DAGSTER_HOME = ".dagster_home"


def ensure_dagster_home(home: str | Path | None = None) -> Path:
    """Create ``DAGSTER_HOME`` (default ``./.dagster_home``) with the project's dagster.yaml
    if missing, export it, and return it.  An existing dagster.yaml is left as the user has it.
    """
    path = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = open(path / ".fundarb-init.lock", "a")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise FundarbError(f"cannot use DAGSTER_HOME={path} ({exc.strerror or exc}): set DAGSTER_HOME to a writable "
                           "folder") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first command creates the storage; the others wait for it here
        cfg = path / "dagster.yaml"
        if not cfg.exists():
            cfg.write_text(DAGSTER_YAML)
        os.environ["DAGSTER_HOME"] = str(path)
        ready = path / ".fundarb-storage-ready"
        if not ready.exists():
            _create_storage()
            ready.touch()
    return path


def _create_storage() -> None:
    """Open the instance once and touch every storage, so their tables exist before any concurrent use."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        instance.get_runs(limit=1)
        instance.event_log_storage.get_concurrency_keys()
        if instance.schedule_storage is not None:
            instance.schedule_storage.all_instigator_state()
        instance.get_run_records(limit=1)
