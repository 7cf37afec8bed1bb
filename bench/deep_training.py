"""Benchmark: training time per epoch of the LSTM and Transformer forecasters, default sizes.

Builds the settlement panel of every (venue, asset) series of the DuckDB ``features`` mart over
the last ``--days`` days (``current`` = the observed rate per hour, ``target`` = the rate accruing
in the hour starting at ``hour``, known at its settlement), fits each model with its default
sizes on rows whose target is known a week before the end, for ``--epochs`` epochs without
early stopping, and prints seconds per epoch, training windows per second, the prediction time
of the held-out week and, as a sanity figure, its MSE relative to persistence and its 80 %
interval coverage.  CPU always; CUDA too when available.  Ends with one JSON line.

    .venv/bin/python bench/deep_training.py [--db data/fundarb.duckdb] [--days 90] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import torch

from fundarb_core.forecast.deep import LstmForecaster, SequenceForecaster, TransformerForecaster

NON_FEATURES = {"venue", "asset", "hour", "rate_apr"}  # rate_apr = rate_per_hour * 8760, redundant


def load_panel(db: Path, days: int) -> tuple[pd.DataFrame, tuple[str, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        frame = conn.sql(f"""
            WITH lim AS (SELECT max(hour) - INTERVAL {int(days)} DAY AS lo FROM features)
            SELECT f.*, s.rate_per_hour AS target, s.known_at AS target_known_at
            FROM features f
            JOIN stg_funding_hourly s USING (venue, asset, hour)
            WHERE f.hour >= (SELECT lo FROM lim)
            ORDER BY f.venue, f.asset, f.hour
        """).df()
    feature_cols = tuple(c for c in frame.columns if c not in NON_FEATURES | {"target", "target_known_at"})
    frame["hourly_venue"] = frame["hourly_venue"].astype("float64")
    frame["series_id"] = frame["venue"] + "|" + frame["asset"]
    frame["current"] = frame["rate_per_hour"]
    frame["venue_type"] = np.where(frame["interval_hours"] == 1, "1h", "8h")
    return frame, feature_cols


def run(cls: type[SequenceForecaster], panel: pd.DataFrame, feature_cols: tuple[str, ...], epochs: int,
        device: str, threads: int | None) -> dict[str, float | int | str]:
    end = panel["hour"].max()
    origin = end - pd.Timedelta(days=7)
    train = panel[panel["target_known_at"] <= origin]
    test = panel[(panel["hour"] > origin) & panel["target"].notna()]
    model = cls(epochs=epochs, patience=epochs + 1, device=device, num_threads=threads)
    t0 = time.perf_counter()
    model.fit(train, feature_cols)
    fit_s = time.perf_counter() - t0
    context = panel.assign(target=panel["target"].where(panel["target_known_at"] <= end))
    t0 = time.perf_counter()
    out = model.predict(test, context)
    predict_s = time.perf_counter() - t0
    err = float(np.mean((out["pred"] - test["target"]) ** 2))
    err0 = float(np.mean((test["current"] - test["target"]) ** 2))
    later = model.epoch_seconds[1:] or model.epoch_seconds
    per_epoch = statistics.median(later)
    return {
        "model": cls.name, "device": str(model.device), "threads": threads or torch.get_num_threads(),
        "params": sum(p.numel() for p in model.module.parameters()) if model.module is not None else 0,
        "train_windows": model.n_train_windows, "val_windows": model.n_val_windows,
        "first_epoch_s": round(model.epoch_seconds[0], 3), "epoch_s": round(per_epoch, 3),
        "windows_per_s": round(model.n_train_windows / per_epoch), "fit_s": round(fit_s, 2),
        "predict_rows": len(test), "predict_s": round(predict_s, 3),
        "holdout_mse_vs_persistence": round(err / err0, 3),
        "holdout_coverage_80": round(float(((test["target"] >= out["lo"]) & (test["target"] <= out["hi"])).mean()), 3),
        "val_coverage_80": round(model.val_coverage, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="data/fundarb.duckdb", help="DuckDB file with the marts built")
    parser.add_argument("--days", type=int, default=90, help="panel length, days back from the last hour")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per model (no early stop)")
    parser.add_argument("--threads", type=int, nargs="*", default=None,
                        help="CPU thread counts to time (default: what is available, and 1)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    panel, feature_cols = load_panel(Path(args.db), args.days)
    load_s = time.perf_counter() - t0
    print(f"panel: {len(panel):,} rows, {panel['series_id'].nunique()} series, {len(feature_cols)} features, "
          f"{panel['hour'].min()} → {panel['hour'].max()} (loaded in {load_s:.1f} s)")
    available = len(os.sched_getaffinity(0))
    threads = args.threads or sorted({available, 1}, reverse=True)
    results = []
    for cls in (LstmForecaster, TransformerForecaster):
        for n in threads:
            results.append(run(cls, panel, feature_cols, args.epochs, "cpu", n))
        if torch.cuda.is_available():
            results.append(run(cls, panel, feature_cols, args.epochs, "cuda", available))
    if not torch.cuda.is_available():
        print("cuda: not available")
    for r in results:
        print(f"{r['model']:<12} {r['device']:<5} threads={r['threads']:<2} params={r['params']:>6,}  "
              f"{r['train_windows']:,} windows/epoch: {r['epoch_s']:.2f} s/epoch ({r['windows_per_s']:,} windows/s, "
              f"first epoch {r['first_epoch_s']:.2f} s), fit {r['fit_s']:.1f} s; "
              f"predict {r['predict_rows']:,} rows in {r['predict_s']:.2f} s; "
              f"hold-out MSE/persistence {r['holdout_mse_vs_persistence']}, "
              f"80% coverage {r['holdout_coverage_80']} (val {r['val_coverage_80']})")
    print(json.dumps({"panel_rows": len(panel), "series": int(panel["series_id"].nunique()),
                      "features": len(feature_cols), "epochs": args.epochs,
                      "cuda": torch.cuda.is_available(), "results": results}))


if __name__ == "__main__":
    main()
