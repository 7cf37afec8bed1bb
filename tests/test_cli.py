"""The README's main command, end to end, on a small directory of real rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fundarb_core.schema import LAYOUT_FILES
from tests.conftest import write_layout


def test_fundarb_run_fills_every_raw_table_and_accounts_for_rejects(tmp_path: Path, small_real_dir: Path) -> None:
    # one real row made malformed, so the summary must subtract it
    funding = pd.read_parquet(small_real_dir / "market" / "funding.parquet")
    funding.loc[funding.index[0], "rate"] = float("nan")
    write_layout(small_real_dir, {"funding_rates": funding})
    env = {
        **os.environ,
        "FUNDARB_DATA_DIR": str(small_real_dir),
        "FUNDARB_DUCKDB": str(tmp_path / "cli.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bin_dir / "fundarb"), "run", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for table, name in LAYOUT_FILES.items():
        source_rows = len(pd.read_parquet(small_real_dir / "market" / f"{name}.parquet"))
        rejected = summary["rejected_by_table"].get(table, 0)
        assert summary["source_rows"][table] == source_rows
        assert summary["tables"][table] == source_rows - rejected > 0, table
    assert summary["rejected_by_table"] == {"funding_rates": 1}
    assert summary["rejects"][0]["field"] == "rate"
    assert summary["keeper"].startswith("keeper cycle at") and "(paper)" in summary["keeper"]
    # the backtest reports ran on their default period and the summary shows the comparison with the oracle
    assert summary["backtest"][0].startswith("backtest ") and "capture_ratio" in summary["backtest"][1]
    assert any("naive 24h, real fees" in line for line in summary["backtest"])
    assert (tmp_path / "home" / "dagster.yaml").read_text().count("default_limit: 1") == 1
