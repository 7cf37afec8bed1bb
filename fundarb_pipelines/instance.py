"""The project's own Dagster instance: ``DAGSTER_HOME`` with a ``dagster.yaml`` that caps the
``duckdb`` pool at one slot.

``fundarb`` commands and ``dagster dev`` (started as the README says) share this home, so runs
from the CLI, the UI and backfills all queue on the same pool instead of racing for DuckDB's
file lock.
"""

from __future__ import annotations

import os
from pathlib import Path

DAGSTER_YAML = """\
# Written by fundarb (fundarb_pipelines/instance.py). Every DuckDB writer is in the `duckdb`
# pool; one slot means parallel runs and backfills take turns instead of failing on the lock.
concurrency:
  pools:
    default_limit: 1
    granularity: op
  runs:
    max_concurrent_runs: 4
telemetry:
  enabled: false
"""

DEFAULT_DAGSTER_HOME = ".dagster_home"


def ensure_dagster_home(home: str | Path | None = None) -> Path:
    """Create ``DAGSTER_HOME`` (default ``./.dagster_home``) with the project's dagster.yaml
    if missing, export it, and return it.  An existing dagster.yaml is left as the user has it.
    """
    path = Path(home or os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(path)
    return path
