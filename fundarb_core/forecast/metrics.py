"""Walk-forward scores (spec §8 prediction backtest): MAE, RMSE, direction, interval coverage, skill.

Every metric of one (model, target, venue_type) cell is computed on the same rows — those with a
known target, a prediction and a ``current`` — so the skill against persistence
(``1 − MAE / MAE_persistence``, persistence being ``|target − current|`` on exactly those rows)
compares like with like and needs no separate persistence run.

Directional accuracy scores the predicted *change*: ``sign(pred − current) == sign(target − current)``
over rows where the target actually moved (``target != current``).  A forecast of "no change"
counts as wrong there, so persistence scores 0 by construction — it never calls a direction.
Coverage is the share of targets inside ``[lo, hi]`` over rows that have an interval (nominal
``INTERVAL_LEVEL`` = 0.8); NaN for a model without intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error

from fundarb_core.forecast.base import INTERVAL_LEVEL

ALL = "all"
METRICS = ("mae", "rmse", "direction", "coverage", "skill", "n")


def _cell(frame: pd.DataFrame) -> dict[str, float]:
    y = frame["target"].to_numpy(dtype="float64")
    p = frame["pred"].to_numpy(dtype="float64")
    cur = frame["current"].to_numpy(dtype="float64")
    mae = float(mean_absolute_error(y, p))
    mae_persist = float(np.mean(np.abs(y - cur)))
    moved = y != cur
    hits = np.sign(p[moved] - cur[moved]) == np.sign(y[moved] - cur[moved])
    direction = float(np.mean(hits)) if moved.any() else np.nan
    lo = frame["lo"].to_numpy(dtype="float64")
    hi = frame["hi"].to_numpy(dtype="float64")
    has = np.isfinite(lo) & np.isfinite(hi)
    coverage = float(np.mean((y[has] >= lo[has]) & (y[has] <= hi[has]))) if has.any() else np.nan
    return {
        "mae": mae,
        "rmse": float(np.sqrt(mean_squared_error(y, p))),
        "direction": direction,
        "coverage": coverage,
        "skill": 1 - mae / mae_persist if mae_persist > 0 else np.nan,
        "n": float(len(y)),
    }


def evaluate(predictions: pd.DataFrame, target_name: str | None = None) -> pd.DataFrame:
    """Tidy scores ``(model, target, venue_type, metric, value)`` per model × target × venue_type and ``"all"``.

    ``predictions`` is the output of ``walk_forward`` (several models/targets may be concatenated);
    the target's name comes from its ``target_name`` column, else from ``target_name``.
    """
    cols = ["model", "target", "venue_type", "metric", "value"]
    frame = predictions.copy()
    if "target_name" not in frame:
        frame["target_name"] = target_name if target_name is not None else "target"
    for c in ("target", "pred", "current", "lo", "hi"):
        frame[c] = frame[c].astype("float64") if c in frame else np.nan
    frame = frame[frame["target"].notna() & frame["pred"].notna() & frame["current"].notna()]
    records: list[tuple[str, str, str, str, float]] = []
    for (model, tname), grp in frame.groupby(["model", "target_name"], sort=True):
        cells = [(ALL, grp), *((str(vt), g) for vt, g in grp.groupby("venue_type", sort=True))]
        for vt, g in cells:
            for metric, value in _cell(g).items():
                records.append((str(model), str(tname), vt, metric, value))
    return pd.DataFrame.from_records(records, columns=cols)


def leaderboard(scores: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per (target, venue_type, model), one column per metric; best MAE first within each cell."""
    table = scores[scores["metric"].isin(metrics)].pivot_table(
        index=["target", "venue_type", "model"], columns="metric", values="value", aggfunc="first"
    )
    table = table[[m for m in metrics if m in table.columns]]
    table.columns.name = None
    return table.reset_index().sort_values(["target", "venue_type", "mae"], kind="stable").reset_index(drop=True)


__all__ = ["ALL", "INTERVAL_LEVEL", "METRICS", "evaluate", "leaderboard"]
