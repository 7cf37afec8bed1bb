"""Real Dagster materialisations of the raw assets against a DuckDB file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from fundarb_core.sources.replay import ReplaySource
from fundarb_pipelines.assets.raw import raw_assets
from fundarb_pipelines.checks.raw import raw_checks
from fundarb_pipelines.definitions import defs
from fundarb_pipelines.instance import ensure_dagster_home
from fundarb_pipelines.partitions import daily_partitions
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB, MarketSourceResource

RAW = {"funding_rates", "candles", "open_interest", "orderbook_depth"}


def _resources(db: Path) -> dict[str, object]:
    return {"duckdb": FundarbDuckDB(database=str(db)), "market_source": MarketSourceResource()}


def test_definitions_load_with_every_raw_asset_in_the_duckdb_pool() -> None:
    d = defs()
    keys = {k.to_user_string() for k in d.resolve_all_asset_keys()}
    assert keys >= RAW
    graph = d.resolve_asset_graph()
    for key in RAW:
        node = graph.get(dg.AssetKey(key))
        assert node.partitions_def == daily_partitions()
        assert node.pools == {DUCKDB_POOL}
    first, last = ReplaySource().time_range()
    keys_ = daily_partitions().get_partition_keys()
    assert keys_[0] == first.strftime("%Y-%m-%d") and keys_[-1] == last.strftime("%Y-%m-%d")
    sched = d.resolve_schedule_def("hourly_ingest_schedule")
    assert sched.default_status == dg.DefaultScheduleStatus.STOPPED
    check_keys = {c.to_user_string() for c in d.resolve_asset_graph().asset_check_keys}
    assert {"funding_rates:unique_key", "funding_rates:rate_bounds", "funding_rates:gaps",
            "funding_rates:freshness"} <= check_keys


def test_materialise_partition_twice_gives_identical_rows(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    results = []
    snapshots = []
    for _ in range(2):
        res = dg.materialize([*raw_assets, *raw_checks], partition_key="2026-03-07", resources=_resources(db))
        assert res.success
        results.append(res)
        with duckdb.connect(str(db), read_only=True) as conn:
            snapshots.append(
                {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").df() for t in RAW}
            )
    for t in RAW:
        pd.testing.assert_frame_equal(snapshots[0][t], snapshots[1][t])
    meta = results[0].asset_materializations_for_node("funding_rates")[0].metadata
    day = ReplaySource().table("funding_rates")
    expected = ((day.ts >= "2026-03-07") & (day.ts < "2026-03-08")).sum()
    assert meta["rows"].value == expected > 0
    assert meta["rejects"].value == 0
    assert "hyperliquid" in meta["venues"].value and meta["min_ts"].value.startswith("2026-03-07")
    checks = {e.check_name: e.passed for e in results[0].get_asset_check_evaluations()}
    assert checks["unique_key"] and checks["rate_bounds"]
    # a second day: its partition shows its own row count, the table's is beside it
    other = dg.materialize(raw_assets, partition_key="2026-03-06", resources=_resources(db))
    meta2 = other.asset_materializations_for_node("funding_rates")[0].metadata
    day2 = ((day.ts >= "2026-03-06") & (day.ts < "2026-03-07")).sum()
    assert meta2["dagster/row_count"].value == day2 > 0
    assert meta2["table_rows"].value == day2 + expected


_CHILD = textwrap.dedent(
    """
    import sys, warnings
    warnings.filterwarnings("ignore")
    import dagster as dg
    from fundarb_pipelines.assets.raw import raw_assets
    from fundarb_pipelines.resources import FundarbDuckDB, MarketSourceResource
    with dg.DagsterInstance.get() as instance:
        res = dg.materialize(
            raw_assets, instance=instance, partition_key=sys.argv[1],
            resources={"duckdb": FundarbDuckDB(database=sys.argv[2]), "market_source": MarketSourceResource()},
            raise_on_error=False,
        )
    sys.exit(0 if res.success else 3)
    """
)


def test_parallel_processes_queue_on_the_duckdb_file(tmp_path: Path) -> None:
    """Two runs in two processes write one DuckDB file while a third holder has it open:
    they wait for the writer lock instead of failing on DuckDB's file lock."""
    db = tmp_path / "p.duckdb"
    home = ensure_dagster_home(tmp_path / "home")
    with dg.DagsterInstance.from_config(str(home)) as instance:  # create the run storage once, up front
        assert instance.event_log_storage.supports_global_concurrency_limits
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    days = ["2026-01-10", "2026-01-11"]
    holder = FundarbDuckDB(database=str(db))
    with holder.get_connection() as conn:
        conn.execute("CREATE TABLE held (x INT)")
        procs = [
            subprocess.Popen([sys.executable, "-c", _CHILD, d, str(db)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for d in days
        ]
        # while we hold the file, a plain DuckDB connection from elsewhere fails on the lock…
        probe = subprocess.run(
            [sys.executable, "-c", f"import duckdb; duckdb.connect({str(db)!r})"], capture_output=True, text=True
        )
        assert "lock" in probe.stderr.lower()
        time.sleep(6)
        early = [p.communicate()[0][-3000:] for p in procs if p.poll() is not None]
        assert not early, early  # …while the runs wait their turn
    outs = [p.communicate(timeout=180)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
        assert "Could not set lock" not in out
    src = ReplaySource().table("funding_rates")
    with duckdb.connect(str(db), read_only=True) as conn:
        got = dict(conn.execute("SELECT ts::DATE::VARCHAR, count(*) FROM funding_rates GROUP BY 1").fetchall())
    for d in days:
        day = pd.Timestamp(d, tz="UTC")
        assert got[d] == ((src.ts >= day) & (src.ts < day + pd.Timedelta(days=1))).sum()
