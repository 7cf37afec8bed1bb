"""``fundarb backtest --all-policies`` on real rows: every policy at every fee regime next to the oracle, the same
JSON twice (sequential and in worker processes), and monthly figures that add up to the totals."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fundarb_core.backtest.comparison import comparison_frame
from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_pipelines.cli import main
from tests.conftest import window_tables, write_layout

ASSETS = ("BTC", "ETH", "SOL")
# eight hours across a month boundary, after ten days of history (the patient rule needs 7 of its 14 days)
START, END = "2026-01-31 20:00", "2026-02-01 04:00"


def _data(root: Path) -> Path:
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    tables = window_tables(bundled, "2026-01-22", "2026-02-02")
    keep = "|".join(ASSETS)
    return write_layout(root, {t: f[f["venue_symbol"].astype(str).str.contains(keep)].reset_index(drop=True)
                               if "venue_symbol" in f else f for t, f in tables.items()})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("comparison")
    data = _data(root / "data")
    args = ["backtest", "--data", str(data), "--start", START, "--end", END, "--assets", *ASSETS, "--all-policies",
            "--gbm-trees", "20", "--no-mlflow"]
    out = root / "out"
    assert main([*args, "--comparison-json", str(root / "a.json")]) == 0
    assert main([*args, "--workers", "2", "--out", str(out)]) == 0
    return root / "a.json", out / "comparison.json", (out / "report.md").read_text()


def test_comparison_json_is_identical_across_runs_and_workers(runs: tuple[Path, Path, str]) -> None:
    a, b, _ = runs
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert [r["fees"] for r in doc["regimes"]] == ["real fees", "0 bp", "1.44 bp", "4.5 bp"]
    for reg in doc["regimes"]:
        assert [p["policy"] for p in reg["policies"]] == ["naive 24h", "patient 336h", "keeper", "keeper + forecasts",
                                                          "keeper (spec rule)", "oracle (slots)"]
    assert (b.parent / "policies_vs_oracle.png").stat().st_size > 0
    report = runs[2]  # the markdown report opens with the comparison as text
    assert report.startswith("```\npolicies vs the cost-aware oracle") and "cap 2026-02" in report
    frame = comparison_frame(doc)  # the flat table MLflow stores: a row per regime × policy × (total, months)
    assert len(frame) == 4 * 6 * 3 and set(frame["month"]) == {"total", "2026-01", "2026-02"}
    total = frame[(frame["fees"] == "real fees") & (frame["policy"] == "patient 336h") & (frame["month"] == "total")]
    assert total["net_apr"].item() == doc["regimes"][0]["policies"][1]["net_apr"]


def test_monthly_figures_add_up_to_the_totals(runs: tuple[Path, Path, str]) -> None:
    doc = json.loads(runs[0].read_text())
    cap, hours = doc["capital_usd"], doc["hours"]
    assert hours == 8
    traded_any = False
    for reg in doc["regimes"]:
        oracle = reg["policies"][-1]
        assert sum(m["net_pnl_usd"] for m in oracle["months"]) == pytest.approx(reg["oracle_slots_net_usd"], abs=1e-6)
        for p in reg["policies"]:
            ms = p["months"]
            assert [m["month"] for m in ms] == ["2026-01", "2026-02"] and [m["hours"] for m in ms] == [4, 4]
            assert sum(m["net_pnl_usd"] for m in ms) == pytest.approx(p["net_pnl_usd"], abs=1e-6)
            # each month's oracle P&L is the oracle's own month, the same for every policy
            assert [m["oracle_net_usd"] for m in ms] == pytest.approx([m["net_pnl_usd"] for m in oracle["months"]])
            for m in ms:
                assert m["net_apr"] == pytest.approx(m["net_pnl_usd"] / cap * 8760 / m["hours"])
                if m["oracle_net_usd"] > 0:
                    assert m["capture_ratio"] == pytest.approx(m["net_pnl_usd"] / m["oracle_net_usd"])
                else:
                    assert m["capture_ratio"] is None
            if p["strategy"] == "oracle":
                continue
            traded = sum(m["traded_usd"] for m in ms)
            traded_any |= traded > 0
            assert p["turnover"] == pytest.approx(traded / cap * 8760 / hours)
            if reg["oracle_slots_net_usd"] > 0:
                assert p["capture_ratio"] == pytest.approx(p["net_pnl_usd"] / reg["oracle_slots_net_usd"])
    assert traded_any  # the sums are not trivially zero
