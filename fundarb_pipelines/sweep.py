"""The forecaster sweep: every (target, model) walk-forward evaluation as its own step, fanned out by the executor.

Why this job: the six forecasters × two targets are the heaviest work that splits cleanly — each cell is an
independent walk-forward (seconds to minutes) that needs only the panel, never the warehouse.  So the job has
three kinds of step, and only the first and the last touch DuckDB, both in the one-slot ``duckdb`` pool:

1. ``sweep_panels`` (pool ``duckdb``) builds both panels from the SQL models under the writer lock, writes them as
   Parquet into the run's own folder (``out_dir/<run id>/``), creates the MLflow experiment (two cells creating it
   at the same instant collide on its unique name) and emits one dynamic output per cell;
2. ``evaluate_cell`` (no pool: as many at once as the executor has workers) reads its panel, runs
   :func:`fundarb_core.forecast.evaluate.evaluate_model`, writes ``predictions.parquet`` / ``scores.parquet`` into
   its own sub-folder and logs one MLflow run (experiment ``fundarb/sweeps``);
3. ``store_sweep`` (pool ``duckdb``) gathers the cells' scores into ``forecast_sweep_scores`` in one transaction,
   keyed by the Dagster run id so a re-run replaces its rows and runs stay comparable side by side.

In-process (the local code location) the cells run one after another; under the production profile
(:mod:`fundarb_pipelines.production`) each is a Celery task on whichever worker is free.  The output folder must
be shared by every worker (one machine here; NFS / an object store across machines).
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
from mlflow import MlflowClient
from pydantic import Field

from fundarb_core.forecast.base import Panel
from fundarb_core.forecast.evaluate import evaluate_model, evaluation_period
from fundarb_core.forecast.registry import MODEL_NAMES, TARGET_NAMES, ForecastSettings
from fundarb_core.forecast.store import replace_rows
from fundarb_core.forecast.targets import build_panel
from fundarb_core.forecast.tracking import ensure_experiment
from fundarb_pipelines.assets.forecast import MlflowTracking
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB

SWEEP_EXPERIMENT = "sweeps"  # → MLflow experiment ``fundarb/sweeps``
SWEEP_TABLE = "forecast_sweep_scores"
SWEEP_LANE_TAG = "fundarb/lane"  # the production dagster.yaml caps runs per lane (tag concurrency limits)
BP = 1e4  # per-hour rates → basis points per hour, the unit a person reads


class SweepConfig(dg.Config):
    """Which cells to run and the walk-forward settings every cell shares (logged as MLflow params)."""

    models: list[str] = Field(default_factory=lambda: list(MODEL_NAMES))
    targets: list[str] = Field(default_factory=lambda: list(TARGET_NAMES))
    assets: list[str] | None = Field(default=None, description="restrict the panels to these canonical assets")
    eval_days: int = Field(default=7, description="walk-forward origins over the last N days of known targets")
    train_window_hours: int = 168
    refit_every: int = 24
    deep_refit_every: int = 168
    deep_epochs: int = 4
    deep_max_train_windows: int = 8_000
    gbm_trees: int = 200
    seed: int = 0
    out_dir: str = Field(default="data/sweeps", description="folder shared by every worker; one sub-folder per run")

    def settings(self) -> ForecastSettings:
        return ForecastSettings(
            train_window_hours=self.train_window_hours, refit_every=self.refit_every,
            deep_refit_every=self.deep_refit_every, deep_epochs=self.deep_epochs,
            deep_max_train_windows=self.deep_max_train_windows, gbm_trees=self.gbm_trees, seed=self.seed)


@dataclass(frozen=True)
class Cell:
    """One (target, model) evaluation: where its panel is, where it writes, and the shared settings."""

    target: str
    model: str
    panel_path: str
    features: tuple[str, ...]
    eval_days: int
    settings: ForecastSettings
    cell_dir: str
    mlflow_experiment_id: str


@dataclass(frozen=True)
class CellResult:
    target: str
    model: str
    scores_path: str
    predictions_path: str
    mlflow_run_id: str
    seconds: float


def _check_names(config: SweepConfig) -> None:
    bad = [m for m in config.models if m not in MODEL_NAMES] + [t for t in config.targets if t not in TARGET_NAMES]
    if bad:
        raise dg.Failure(f"forecast sweep: unknown model/target {', '.join(bad)}; models are {', '.join(MODEL_NAMES)}"
                         f", targets {', '.join(TARGET_NAMES)}")


@dg.op(pool=DUCKDB_POOL, out=dg.DynamicOut(Cell),
       description="Both panels from the SQL models (read under the DuckDB writer lock) → Parquet in the run's "
       "folder; one dynamic output per (target, model).")
def sweep_panels(context: dg.OpExecutionContext, config: SweepConfig, duckdb: FundarbDuckDB,
                 mlflow_tracking: MlflowTracking) -> Iterator[dg.DynamicOutput[Cell]]:
    _check_names(config)
    # created here, once: cells creating it on two workers at the same instant collide on its unique name
    exp_id = ensure_experiment(MlflowClient(tracking_uri=mlflow_tracking.uri()), SWEEP_EXPERIMENT)
    root = Path(config.out_dir).resolve() / context.run_id
    panels: dict[str, Panel] = {}
    with duckdb.get_connection() as conn:
        for target in config.targets:
            panels[target] = build_panel(conn, target, assets=config.assets)
    for target, panel in panels.items():
        path = root / target / "panel.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        panel.frame.to_parquet(path, index=False)
        context.log.info(f"sweep panel {target}: {len(panel.frame)} rows, {len(panel.feature_cols)} features")
        for model in config.models:
            cell = Cell(target=target, model=model, panel_path=str(path), features=tuple(panel.feature_cols),
                        eval_days=config.eval_days, settings=config.settings(),
                        cell_dir=str(root / target / model), mlflow_experiment_id=exp_id)
            yield dg.DynamicOutput(cell, mapping_key=f"{target}__{model}")


def _log_cell(tracking_uri: str, cell: Cell, run_id: str, scores: pd.DataFrame, window: tuple[str, str],
              files: list[Path]) -> str:
    """One MLflow run per cell: settings as params, the overall scores as metrics (MAE/RMSE in bp per hour)."""
    mlflow.set_tracking_uri(tracking_uri)
    overall = scores[scores["venue_type"] == "all"].set_index("metric")["value"]
    metrics = {f"{m}_bp_per_hour" if m in ("mae", "rmse") else m: float(v) * (BP if m in ("mae", "rmse") else 1.0)
               for m, v in overall.items()}
    with mlflow.start_run(experiment_id=cell.mlflow_experiment_id, run_name=f"{cell.model} · {cell.target}") as run:
        mlflow.set_tags({"fundarb.kind": "sweep", "fundarb.dagster_run_id": run_id, "model": cell.model,
                         "target": cell.target})
        mlflow.log_params({**cell.settings.params(), "eval_start": window[0], "eval_end": window[1]})
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f))
    return run.info.run_id


@dg.op(description="One walk-forward evaluation on its panel: predictions and scores to its own files and one "
       "MLflow run; never opens the DuckDB warehouse.")
def evaluate_cell(context: dg.OpExecutionContext, cell: Cell, mlflow_tracking: MlflowTracking) -> CellResult:
    frame = pd.read_parquet(cell.panel_path)
    panel = Panel(frame=frame, feature_cols=cell.features, target_name=cell.target)
    start, end = evaluation_period(panel, cell.eval_days)
    t0 = time.perf_counter()
    ev = evaluate_model(panel, cell.model, start, end, cell.settings, final_fit=False)
    out = Path(cell.cell_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds, scores = out / "predictions.parquet", out / "scores.parquet"
    ev.predictions.to_parquet(preds, index=False)
    ev.scores.to_parquet(scores, index=False)
    (out / "cell.json").write_text(json.dumps({"target": cell.target, "model": cell.model, "eval_start": str(start),
                                               "eval_end": str(end), "seconds": ev.seconds}, indent=1))
    run_id = _log_cell(mlflow_tracking.uri(), cell, context.run_id, ev.scores, (str(start), str(end)),
                       [scores, out / "cell.json"])
    seconds = time.perf_counter() - t0
    context.log.info(f"{cell.model}/{cell.target}: {len(ev.predictions)} predictions in {seconds:.1f} s")
    return CellResult(target=cell.target, model=cell.model, scores_path=str(scores), predictions_path=str(preds),
                      mlflow_run_id=run_id, seconds=seconds)


def gather_scores(results: list[CellResult]) -> pd.DataFrame:
    """Every cell's tidy scores in one frame, in (target, model) order whatever order the workers finished in."""
    frames = [pd.read_parquet(r.scores_path) for r in sorted(results, key=lambda r: (r.target, r.model))]
    if not frames:
        return pd.DataFrame(columns=["model", "target", "venue_type", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


@dg.op(pool=DUCKDB_POOL, description="The only warehouse write: every cell's scores into forecast_sweep_scores, "
       "one transaction, keyed by the Dagster run id.")
def store_sweep(context: dg.OpExecutionContext, results: list[CellResult], duckdb: FundarbDuckDB) -> pd.DataFrame:
    scores = gather_scores(results).assign(run_id=context.run_id)
    with duckdb.get_connection() as conn:
        replace_rows(conn, SWEEP_TABLE, scores, {"run_id": context.run_id})
    context.add_output_metadata({"cells": len(results), "rows": len(scores),
                                 "cell_seconds": sum(r.seconds for r in results)})
    return scores


@dg.job(tags={SWEEP_LANE_TAG: "sweep"},
        description="Walk-forward evaluation of every forecaster on every target, one step per (target, model): "
        "in-process locally, fanned out over the Celery workers under the production profile.")
def forecast_sweep_job() -> None:
    store_sweep(sweep_panels().map(evaluate_cell).collect())
