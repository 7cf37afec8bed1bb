"""Benchmark: one keeper planning cycle (discover → filter → plan → choose one action), vectorised vs per-pair loop.

Two universes:

* ``real`` — the snapshot the loader builds from the bundled DuckDB at ``--as-of`` (every asset and venue with a
  fresh rate then);
* ``scaled`` — 1,000 assets × 8 venues (56,000 ordered pairs): every (new asset, venue) cell is a copy of a real
  (asset, venue) cell — rate, interval, σ, baseline, OI, depth, volume — drawn at random from the real snapshots
  of the ``--pool-hours`` hours up to ``--as-of``, and every pair cell a copy of a real pair's statistics
  (consistency, mean spread, basis history), so the numbers are real series under new names while every asset
  is listed everywhere (the real data list most assets on 2–3 venues only).

Each is timed over ``--cycles`` cycles of :func:`fundarb_core.strategy.planning.plan_cycle` (median, p95), with
three open
positions filling ``max_positions`` = 3 so the switching branch runs, and the same discovery + planning by
:func:`tests.oracles.reference_planner.reference_cycle` (the per-pair Python loop, without the action choice), whose
plans are checked equal.  Ends with one JSON line of the figures.

    .venv/bin/python bench/keeper_cycle.py [--db data/fundarb.duckdb] [--as-of "2026-03-05 12:00"]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from fundarb_core.storage.market_view import WarehouseMarketView
from fundarb_core.strategy import KeeperConfig, Position, Snapshot, plan_cycle
from fundarb_core.strategy.snapshot import PAIR_FIELDS, VENUE_FIELDS
from fundarb_core.venues import VENUES
from tests.oracles.reference_planner import reference_cycle

DEFAULT_DB = Path(__file__).resolve().parent.parent / "data" / "fundarb.duckdb"


def scaled_snapshot(pool: list[Snapshot], n_assets: int, venues: tuple[str, ...], seed: int = 0) -> Snapshot:
    """``n_assets`` × ``venues`` with every cell a copy of a real listed cell from the pool snapshots."""
    rng = np.random.default_rng(seed)
    v = len(venues)
    cells: dict[str, list[np.ndarray]] = {f: [] for f in VENUE_FIELDS}
    pairs: dict[str, list[np.ndarray]] = {f: [] for f in PAIR_FIELDS}
    for snap in pool:
        listed = ~np.isnan(snap.rate_per_hour)
        for f in VENUE_FIELDS:
            cells[f].append(getattr(snap, f)[listed])
        has_pair = ~np.isnan(snap.consistency) | ~np.isnan(snap.basis_bp)
        for f in PAIR_FIELDS:
            pairs[f].append(getattr(snap, f)[has_pair])
    cell_pool = {f: np.concatenate(x) for f, x in cells.items()}
    pair_pool = {f: np.concatenate(x) for f, x in pairs.items()}
    out = Snapshot.empty([f"A{i:04d}" for i in range(n_assets)], venues)
    pick = rng.integers(0, len(cell_pool["rate_per_hour"]), size=(n_assets, v))
    for f in VENUE_FIELDS:
        getattr(out, f)[:] = cell_pool[f][pick]
    pick_pair = rng.integers(0, len(pair_pool["consistency"]), size=(n_assets, v, v))
    for f in PAIR_FIELDS:
        getattr(out, f)[:] = pair_pool[f][pick_pair]
    return out


def _positions(snapshot: Snapshot, config: KeeperConfig) -> list[Position]:
    """Three open positions taken from the snapshot's first valid plans (so the switching branch runs)."""
    plans = plan_cycle(snapshot, (), config).plans
    top = plans[plans.valid].head(3)
    return [Position.from_plan(row, hours_held=12.0) for _, row in top.iterrows()]


def _time(fn: object, cycles: int) -> list[float]:
    out = []
    for _ in range(cycles):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def _labels(col: pd.Series) -> np.ndarray:
    """Labels as plain strings, missing (accepted rows' reason) as ''."""
    return col.astype(object).where(col.notna(), "").astype(str).to_numpy()


def _same_plans(snapshot: Snapshot, positions: list[Position], config: KeeperConfig) -> bool:
    vec = plan_cycle(snapshot, positions, config).plans
    _, ref = reference_cycle(snapshot, config)
    labels = ("asset", "short_venue", "long_venue", "reason", "binding_constraint", "fallbacks")
    cols = [c for c in ref.columns if c not in labels]
    if len(vec) != len(ref):
        return False
    keys_equal = all((_labels(vec[k]) == _labels(ref[k])).all() for k in labels)
    nums = np.allclose(vec[cols].to_numpy(dtype="float64"), ref[cols].to_numpy(dtype="float64"), rtol=1e-9,
                       atol=1e-12, equal_nan=True)
    return bool(keys_equal and nums)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=str(DEFAULT_DB))
    parser.add_argument("--as-of", default="2026-03-05 12:00")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--ref-cycles", type=int, default=3)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--pool-hours", type=int, default=24)
    args = parser.parse_args()
    config = KeeperConfig(max_positions=3)  # the three open positions fill the book: the switching branch runs
    as_of = pd.Timestamp(args.as_of)

    with duckdb.connect(args.db, read_only=True) as conn:
        t0 = time.perf_counter()
        view = WarehouseMarketView(conn, config)
        real = view.snapshot(as_of.to_pydatetime(), config=config)
        load_ms = (time.perf_counter() - t0) * 1e3
        pool = [real] + [view.snapshot((as_of - pd.Timedelta(hours=h)).to_pydatetime(), config=config)
                         for h in range(1, args.pool_hours)]
    scaled = scaled_snapshot(pool, args.assets, tuple(VENUES))

    figures: dict[str, object] = {"as_of": str(as_of), "snapshot_load_ms": round(load_ms, 1)}
    for name, snap in (("real", real), ("scaled", scaled)):
        positions = _positions(snap, config)
        res = plan_cycle(snap, positions, config)
        vec = _time(lambda s=snap, p=positions: plan_cycle(s, p, config), args.cycles)
        ref = _time(lambda s=snap: reference_cycle(s, config), args.ref_cycles)
        figures[name] = {
            "assets": snap.n_assets, "venues": snap.n_venues,
            "ordered_pairs": int(sum(k * (k - 1) for k in (~np.isnan(snap.rate_per_hour)).sum(axis=1) if k >= 2)),
            "candidates": len(res.candidates), "plans": len(res.plans), "valid_plans": int(res.plans.valid.sum()),
            "action": res.action.kind,
            "vectorised_median_ms": round(statistics.median(vec), 2), "vectorised_p95_ms": round(_p95(vec), 2),
            "loop_median_ms": round(statistics.median(ref), 1), "loop_p95_ms": round(_p95(ref), 1),
            "speedup": round(statistics.median(ref) / statistics.median(vec), 1),
            "plans_equal_to_loop": _same_plans(snap, positions, config),
        }
        f = figures[name]
        print(f"{name:>6}: {f['assets']} assets × {f['venues']} venues, {f['ordered_pairs']:,} ordered pairs → "
              f"{f['candidates']:,} candidates, {f['plans']:,} plans ({f['valid_plans']:,} valid), action "
              f"{f['action']}")
        print(f"        vectorised cycle median {f['vectorised_median_ms']} ms, p95 {f['vectorised_p95_ms']} ms "
              f"({args.cycles} cycles); per-pair loop median {f['loop_median_ms']} ms ({args.ref_cycles} cycles); "
              f"speed-up {f['speedup']}×; plans equal: {f['plans_equal_to_loop']}")
    figures["goal_met"] = figures["scaled"]["vectorised_median_ms"] < 50.0  # type: ignore[index]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
