"""Backtest reports in MLflow: one run per report (strategy comparison, fee regimes, oracle, leverage safety).

Why MLflow for backtests too: the researcher compares a backtest with the forecasting runs that fed it in the same
UI, and a report's plots and figures stay with the parameters that produced them.  Runs go to the experiment
``fundarb/backtests`` of the project's SQLite store (:func:`fundarb_core.forecast.tracking.default_tracking_uri`).
Metrics are ``<run slug>.<figure>`` (``keeper.net_apr``, ``naive_24h.capture_ratio`` …).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from fundarb_core.forecast.tracking import default_tracking_uri, ensure_experiment

EXPERIMENT_TARGET = "backtests"
METRIC_KEYS = ("net_apr", "net_pnl", "gross_funding", "fees", "slippage", "sharpe", "sortino", "max_drawdown",
               "turnover", "funding_win_rate", "oracle_apr", "capture_ratio", "positions_opened")


def slug(label: str) -> str:
    """A metric-safe name for a run label ('keeper + forecasts, 1.44 bp' → 'keeper_forecasts_1.44bp')."""
    s = re.sub(r"[^A-Za-z0-9.]+", "_", label.replace(" bp", "bp")).strip("_")
    return s.replace("_real_fees", "").lower()


def _metrics(summaries: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out = {}
    for s in summaries:
        for k in METRIC_KEYS:
            v = s.get(k)
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                out[f"{slug(str(s['label']))}.{k}"] = float(v)
    return out


def log_report(kind: str, *, params: Mapping[str, Any], summaries: Sequence[Mapping[str, Any]] = (),
               plots: Mapping[str, Path] | None = None, tables: Mapping[str, pd.DataFrame] | None = None,
               markdown: str = "", metrics: Mapping[str, float] | None = None,
               tracking_uri: str | None = None) -> str:
    """Log one report as an MLflow run and return its id: params, the summaries' headline metrics (plus
    ``metrics``), the PNG plots under ``plots/``, tables as CSV, the markdown report and the summaries as JSON."""
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    exp_id = ensure_experiment(client, EXPERIMENT_TARGET)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{kind} {params.get('start', '')}→{params.get('end', '')}"
                          ) as run:
        mlflow.set_tags({"fundarb.kind": "backtest", "report": kind})
        mlflow.log_params({k: (json.dumps(v, default=str) if isinstance(v, (list, dict, tuple)) else v)
                           for k, v in params.items()})
        mlflow.log_metrics({**_metrics(summaries), **(metrics or {})})
        for p in (plots or {}).values():
            mlflow.log_artifact(str(p), artifact_path="plots")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            if markdown:
                (out / "report.md").write_text(markdown)
            if summaries:
                (out / "summaries.json").write_text(json.dumps(list(summaries), default=str, indent=1))
            for name, frame in (tables or {}).items():
                frame.to_csv(out / f"{name}.csv", index=False)
            for f in sorted(out.iterdir()):
                mlflow.log_artifact(str(f))
    return run.info.run_id
