"""One walk-forward evaluation of one model on one target, and a final fit for the registry.

Shared by the Dagster evaluation assets and ``fundarb forecast-eval`` so both report the same
numbers.  Every figure is out-of-sample: predictions come from ``walk_forward`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from fundarb_core.forecast.base import Forecaster, Panel
from fundarb_core.forecast.metrics import evaluate
from fundarb_core.forecast.registry import ForecastSettings, model_factory, refit_every
from fundarb_core.forecast.walk_forward import check_no_leak, training_slice, walk_forward


@dataclass
class Evaluation:
    """Out-of-sample predictions and scores of one model on one target, plus the model fitted on
    the latest training window (what the registry stores and the keeper would use next)."""

    model: str
    target: str
    predictions: pd.DataFrame
    scores: pd.DataFrame
    final_model: Forecaster | None
    final_origin: pd.Timestamp | None
    seconds: float


def evaluation_period(panel: Panel, days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The last ``days`` of origins whose target is known (the most recent out-of-sample stretch)."""
    known = panel.frame.loc[panel.frame["target"].notna(), "hour"]
    end = pd.Timestamp(known.max()) + pd.Timedelta(hours=1)
    return end - pd.Timedelta(days=days), end


def evaluate_model(
    panel: Panel,
    model: str,
    start: datetime | pd.Timestamp,
    end: datetime | pd.Timestamp,
    settings: ForecastSettings,
    final_fit: bool = True,
) -> Evaluation:
    """Walk-forward ``model`` over origins in ``[start, end)``, score it, and (optionally) fit it once
    more on the training window ending at ``end`` for the registry."""
    import time

    t0 = time.perf_counter()
    if not panel.frame["hour"].is_monotonic_increasing:
        panel = Panel(panel.frame.sort_values("hour", kind="stable").reset_index(drop=True),
                      panel.feature_cols, panel.target_name)
    factory = model_factory(model, settings)
    preds = walk_forward(
        panel, factory, start, end,
        train_window_hours=settings.train_window_hours, expanding=settings.expanding,
        step_hours=settings.step_hours, refit_every=refit_every(model, settings),
    )
    preds["target_name"] = panel.target_name
    scores = evaluate(preds, panel.target_name)
    final, origin = None, None
    if final_fit:
        origin = pd.Timestamp(end)
        train = training_slice(panel.frame, origin, settings.train_window_hours, settings.expanding)
        check_no_leak(train, origin)
        if len(train):
            final = factory().fit(train, panel.feature_cols)
    return Evaluation(model=model, target=panel.target_name, predictions=preds, scores=scores,
                      final_model=final, final_origin=origin, seconds=time.perf_counter() - t0)
