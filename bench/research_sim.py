"""Benchmark: the research simulator and the walk-forward parameter search on every bundled asset.

The parameter search simulates every setting of ``PREDICTOR_GRID × RULE_GRID`` over all the history before each
month (:mod:`fundarb_core.backtest.parameter_search`); this measures what that costs, on the bundled year:

* one predictor setting with every rule setting in one pass (the unit of the search), in seconds and in
  microseconds per hour · asset · setting;
* the whole search (every setting, every month's choice), in seconds;
* the search run twice: identical choices (``deterministic``).

    .venv/bin/python bench/research_sim.py [--db data/fundarb.duckdb]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import duckdb
import pandas as pd

from fundarb_core.backtest.horizon_inputs import research_slippage_bps
from fundarb_core.backtest.parameter_search import PREDICTOR_GRID, RULE_GRID, choices_frame, choose_parameters
from fundarb_core.backtest.research_sim import ResearchMarket, simulate
from fundarb_core.storage.market_queries import spread_history
from fundarb_core.strategy.config import KeeperConfig

DEFAULT_DB = Path(__file__).resolve().parent.parent / "data" / "fundarb.duckdb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=str(DEFAULT_DB), help="a database with the SQL models built (fundarb run)")
    ap.add_argument("--start", default="2025-06-01")
    ap.add_argument("--end", default="2026-05-01")
    args = ap.parse_args()
    with duckdb.connect(args.db, read_only=True) as conn:
        panel = spread_history(conn, pd.Timestamp("2000-01-01").to_pydatetime(),
                               pd.Timestamp(args.end).to_pydatetime())
    t0 = time.perf_counter()
    cfg = KeeperConfig()
    market = ResearchMarket.from_panel(panel, cfg, half_spread_bps=1.0, slippage_bps=research_slippage_bps(cfg))
    build_s = time.perf_counter() - t0
    hours, pairs = market.history.spread.shape
    assets = market.history.pairs["asset"].nunique()

    t0 = time.perf_counter()
    simulate(market, PREDICTOR_GRID[4], RULE_GRID)
    one_s = time.perf_counter() - t0
    per_unit_us = one_s / (hours * assets * len(RULE_GRID)) * 1e6

    start, end = pd.Timestamp(args.start), pd.Timestamp(args.end)
    t0 = time.perf_counter()
    first = choices_frame(choose_parameters(market, start, end))
    search_s = time.perf_counter() - t0
    second = choices_frame(choose_parameters(market, start, end))
    same = first.equals(second)

    print(f"history: {hours:,} hours x {assets} assets ({pairs} venue pairs); market built in {build_s:.1f} s")
    print(f"one predictor setting x {len(RULE_GRID)} rule settings: {one_s:.2f} s "
          f"({per_unit_us:.2f} us per hour.asset.setting)")
    print(f"walk-forward search, {len(PREDICTOR_GRID) * len(RULE_GRID)} settings, {len(first)} months: "
          f"{search_s:.1f} s; deterministic: {same}")
    print(first[["month", "windows_h", "shrink_z", "horizon_h", "entry_margin", "score"]].to_string(index=False))
    print(json.dumps({"bench": "research_sim", "hours": hours, "assets": int(assets), "pairs": pairs,
                      "settings": len(PREDICTOR_GRID) * len(RULE_GRID), "one_predictor_s": round(one_s, 3),
                      "us_per_hour_asset_setting": round(per_unit_us, 3), "search_s": round(search_s, 2),
                      "months": len(first), "deterministic": same}))


if __name__ == "__main__":
    main()
