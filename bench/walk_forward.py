"""Benchmark: the walk-forward of the global LightGBM vs. mlforecast's ``cross_validation``, same windows.

Target ``next_settlement`` over the last three months of the bundled data: origins every hour in
[2026-01-30, 2026-04-30) (2,160 origins), 168 h rolling training window, refit every 24 origins,
one-step-ahead predictions.  Series: every (venue, asset) with a panel row at every hour from the
first training hour to the last origin — mlforecast refuses series with missing periods, so both
tools get exactly the same complete series (okx, dydx and lighter stop on 2026-03-07 and drop out).

Each tool runs in a fresh subprocess so its peak RSS (``ru_maxrss``, data loading included) is its
own.  The peer is configured as close to ours as it allows: the same LightGBM parameters, the same
features as dynamic exogenous columns (no extra lags), the same change target (``target − current``,
added back), ``input_size=168``, ``refit=24``.  What it cannot express: ``target_known_at`` — it
trains on every row before the cutoff, including up to 7 rows per 8 h series whose target was not
yet paid (a slight look-ahead in its favour), and it needs a target on every row (the 1-2 % of
unknown targets are filled with ``current``, i.e. "no change", for its training only).  Ours is
timed twice: point model only (like-for-like with the peer) and with its two quantile models.

    .venv/bin/python bench/walk_forward.py [--db data/fundarb.duckdb]
    .venv/bin/python bench/walk_forward.py --leaderboard   # every model, both targets, same period

``--leaderboard`` instead runs persistence, EWMA, LightGBM and the ensemble through the walk-forward
for both targets (all series) and prints the metrics by venue type.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from fundarb_core.forecast.base import Panel
from fundarb_core.forecast.baselines import Ewma, Persistence
from fundarb_core.forecast.ensemble import Ensemble
from fundarb_core.forecast.gbm import VENUE_TYPE_CODES, LightGbm
from fundarb_core.forecast.metrics import evaluate, leaderboard
from fundarb_core.forecast.targets import build_panel
from fundarb_core.forecast.walk_forward import walk_forward

ROOT = Path(__file__).resolve().parent.parent
START, END = pd.Timestamp("2026-01-30"), pd.Timestamp("2026-04-30")
WINDOW, REFIT = 168, 24
MARGIN = pd.Timedelta(hours=WINDOW + 24)  # panel rows needed before the first origin


def _panel(db: str, target: str, complete_only: bool) -> Panel:
    with duckdb.connect(db, read_only=True) as conn:
        panel = build_panel(conn, target, start=START - MARGIN, end=END)
    if not complete_only:
        return panel
    f = panel.frame
    n_hours = int((END - (START - MARGIN)) / pd.Timedelta(hours=1))
    full = f.groupby("series_id").hour.nunique()
    keep = full[full == n_hours].index
    return Panel(f[f.series_id.isin(keep)].reset_index(drop=True), panel.feature_cols, panel.target_name)


def _mae(pred: pd.Series, target: pd.Series) -> float:
    ok = target.notna() & pred.notna()
    return float(np.mean(np.abs(pred[ok] - target[ok])))


def run_ours(db: str, quantiles: bool) -> dict[str, float]:
    panel = _panel(db, "next_settlement", complete_only=True)
    t0 = time.perf_counter()
    out = walk_forward(panel, lambda: LightGbm(quantiles=quantiles), START, END, WINDOW, refit_every=REFIT)
    wall = time.perf_counter() - t0
    ok = out[out.target.notna()]
    return {"wall_s": wall, "mae": _mae(ok.pred, ok.target), "rows": len(ok), "series": out.series_id.nunique()}


def run_peer(db: str) -> dict[str, float]:
    import warnings

    import lightgbm as lgb
    from mlforecast import MLForecast

    warnings.filterwarnings("ignore", message="Found null values")  # NaN features are fine for LightGBM

    panel = _panel(db, "next_settlement", complete_only=True)
    f = panel.frame
    df = f[["series_id", "hour", *panel.feature_cols]].rename(columns={"series_id": "unique_id", "hour": "ds"})
    df["cur"] = f["current"]
    df["vt"] = f["venue_type"].map(VENUE_TYPE_CODES)
    df["y"] = (f["target"] - f["current"]).fillna(0.0)
    df = df[df.ds < END].sort_values(["unique_id", "ds"]).reset_index(drop=True)
    params = LightGbm(quantiles=False).params
    t0 = time.perf_counter()
    fcst = MLForecast(models={"lgb": lgb.LGBMRegressor(objective=LightGbm().point_objective, **params)}, freq="h")
    n_windows = int((END - START) / pd.Timedelta(hours=1))
    cv = fcst.cross_validation(
        df, n_windows=n_windows, h=1, step_size=1, refit=REFIT, input_size=WINDOW, static_features=[]
    )
    wall = time.perf_counter() - t0
    # the peer has no scaling: it predicts the raw change; add current back and score on known targets
    cv = cv.merge(
        f[["series_id", "hour", "current", "target"]],
        left_on=["unique_id", "ds"],
        right_on=["series_id", "hour"],
        how="left",
    )
    cv = cv[cv.target.notna()]
    return {
        "wall_s": wall,
        "mae": _mae(cv.current + cv.lgb, cv.target),
        "rows": len(cv),
        "series": cv.unique_id.nunique(),
    }


def _child(args: argparse.Namespace) -> None:
    res = run_peer(args.db) if args.only == "peer" else run_ours(args.db, quantiles=args.only == "ours_full")
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def _spawn(tool: str, db: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--only", tool, "--db", db], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(db: str) -> None:
    ours = _spawn("ours", db)
    full = _spawn("ours_full", db)
    peer = _spawn("peer", db)
    print(
        f"period: origins {START} .. {END} hourly, {WINDOW} h window, refit every {REFIT}; "
        f"{ours['series']} complete series, {ours['rows']:,} scored predictions"
    )
    print(
        f"fundarb walk_forward, LightGBM point model: {ours['wall_s']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MB,"
        f" MAE {ours['mae']:.3e}"
    )
    print(
        f"fundarb walk_forward, point + 2 quantile models: {full['wall_s']:.1f} s, peak RSS "
        f"{full['peak_rss_mb']:.0f} MB, MAE {full['mae']:.3e}"
    )
    print(
        f"mlforecast cross_validation, LightGBM: {peer['wall_s']:.1f} s, peak RSS {peer['peak_rss_mb']:.0f} MB, "
        f"MAE {peer['mae']:.3e} ({peer['rows']:,} scored)"
    )
    ratio = peer["wall_s"] / ours["wall_s"]
    print(f"mlforecast / fundarb wall time (point models): {ratio:.2f}x")
    figures = {
        "origins": int((END - START) / pd.Timedelta(hours=1)),
        "series": ours["series"],
        "rows_scored": ours["rows"],
        "ours_point_s": round(ours["wall_s"], 2),
        "ours_point_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "ours_point_mae": ours["mae"],
        "ours_full_s": round(full["wall_s"], 2),
        "ours_full_peak_rss_mb": round(full["peak_rss_mb"], 1),
        "ours_full_mae": full["mae"],
        "mlforecast_s": round(peer["wall_s"], 2),
        "mlforecast_peak_rss_mb": round(peer["peak_rss_mb"], 1),
        "mlforecast_mae": peer["mae"],
        "mlforecast_rows_scored": peer["rows"],
        "mlforecast_over_ours": round(ratio, 2),
    }
    print(json.dumps(figures))


def run_leaderboard(db: str, out: str | None) -> None:
    factories = {
        "persistence": Persistence,
        "ewma": Ewma,
        "lightgbm": LightGbm,
        "ensemble": lambda: Ensemble([Persistence(), Ewma(), LightGbm()]),
    }
    preds = []
    for target in ("next_settlement", "spread_24h"):
        panel = _panel(db, target, complete_only=False)
        for name, factory in factories.items():
            t0 = time.perf_counter()
            preds.append(walk_forward(panel, factory, START, END, WINDOW, refit_every=REFIT))
            print(
                f"{target:16s} {name:12s} {time.perf_counter() - t0:7.1f} s  {len(preds[-1]):,} predictions", flush=True
            )
    allp = pd.concat(preds, ignore_index=True)
    if out:
        allp.to_parquet(out, index=False)
    board = leaderboard(evaluate(allp))
    with pd.option_context("display.width", 200, "display.max_rows", 200, "display.float_format", "{:.4g}".format):
        print(board.to_string(index=False))
    print(json.dumps(board.to_dict(orient="records")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=str(ROOT / "data" / "fundarb.duckdb"))
    parser.add_argument("--only", choices=["ours", "ours_full", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--leaderboard", action="store_true", help="every model, both targets, metrics table")
    parser.add_argument("--out", default=None, help="with --leaderboard: write all predictions to this parquet")
    args = parser.parse_args()
    if args.only:
        _child(args)
    elif args.leaderboard:
        run_leaderboard(args.db, args.out)
    else:
        bench(args.db)


if __name__ == "__main__":
    main()
