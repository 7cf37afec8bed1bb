"""Forecasting assets: training set → one walk-forward evaluation per model → leaderboard →
champion aliases in the MLflow registry → the latest forecasts the keeper reads.

Each asset is a thin wrapper over ``fundarb_core.forecast``; one evaluation asset per model so the
UI shows the six side by side.  Every figure they report is out-of-sample (walk-forward only).
"""

import dataclasses
import json

import dagster as dg
import duckdb as duckdb_lib
import mlflow
import pandas as pd
from pydantic import Field

from fundarb_core.forecast.evaluate import evaluate_model, evaluation_period
from fundarb_core.forecast.metrics import leaderboard
from fundarb_core.forecast.registry import MODEL_NAMES, TARGET_NAMES, ForecastSettings
from fundarb_core.forecast.store import load_panel, replace_rows, save_panel, write_frame
from fundarb_core.forecast.targets import build_panel
from fundarb_core.forecast.tracking import (
    CHAMPION,
    LoggedEvaluation,
    default_tracking_uri,
    log_evaluation,
    registered_name,
    update_champion,
)
from fundarb_pipelines.metadata import markdown_table
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB

FORECAST_GROUP = "forecasting"


class MlflowTracking(dg.ConfigurableResource):
    """Where runs and the registry live: ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow/mlflow.db``.

    (dagster-mlflow's op hook does not fit assets; this is the small wrapper the assets share.)
    """

    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI (sqlite:///… by default)")

    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()


class ForecastConfig(dg.ConfigurableResource):
    """Walk-forward settings shared by every evaluation asset (logged as MLflow params)."""

    eval_days: int = Field(default=7, description="evaluate on the last N days of known targets")
    train_window_hours: int = 168
    expanding: bool = False
    refit_every: int = 24
    deep_refit_every: int = 168
    deep_epochs: int = 4
    deep_max_train_windows: int = 8_000
    gbm_trees: int = 200
    assets: list[str] | None = Field(default=None, description="restrict to these canonical assets")

    def settings(self) -> ForecastSettings:
        """The core settings object from the fields this resource shares with it."""
        shared = {f.name for f in dataclasses.fields(ForecastSettings)} & set(type(self).model_fields)
        return ForecastSettings(**{name: getattr(self, name) for name in shared})


def _has_table(conn: duckdb_lib.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.execute("SELECT 1 FROM information_schema.tables WHERE table_name = ?", [name]).fetchall())


@dg.asset(
    group_name=FORECAST_GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "python"},
    deps=["features", "pair_features", "spread_panel", "stg_funding_hourly"],
    description="Both forecasting panels (next settlement per venue/asset; 24 h spread per pair): features "
    "as of each hour, the target and when it becomes known. Stored as training_set_<target> tables.",
)
def training_set(duckdb: FundarbDuckDB, forecast_config: ForecastConfig) -> dg.MaterializeResult:
    meta: dict[str, dg.RawMetadataValue] = {}
    with duckdb.get_connection() as conn:
        for target in TARGET_NAMES:
            panel = build_panel(conn, target, assets=forecast_config.assets)
            save_panel(conn, panel)
            f = panel.frame
            meta[f"{target}_rows"] = len(f)
            meta[f"{target}_series"] = int(f["series_id"].nunique())
            meta[f"{target}_features"] = len(panel.feature_cols)
            meta[f"{target}_span"] = f"{f['hour'].min()} → {f['hour'].max()}"
    return dg.MaterializeResult(metadata=meta)


def build_evaluation_asset(model: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{model}_evaluation", group_name=FORECAST_GROUP, pool=DUCKDB_POOL, kinds={"python", "mlflow"},
        deps=[training_set],
        description=f"Walk-forward (out-of-sample) evaluation of {model} on both targets, logged to MLflow "
        "with its fitted model; predictions and scores in forecast_predictions / forecast_scores.",
    )
    def _evaluation(
        context: dg.AssetExecutionContext, duckdb: FundarbDuckDB, forecast_config: ForecastConfig,
        mlflow_tracking: MlflowTracking,
    ) -> dg.MaterializeResult:
        settings = forecast_config.settings()
        meta: dict[str, dg.RawMetadataValue] = {}
        for target in TARGET_NAMES:
            with duckdb.get_connection() as conn:
                panel = load_panel(conn, target)
            start, end = evaluation_period(panel, forecast_config.eval_days)
            ev = evaluate_model(panel, model, start, end, settings)
            if ev.predictions.empty or ev.final_model is None:
                context.log.warning(f"{model}/{target}: not enough history for a walk-forward over {start} → {end}")
                meta[f"{target}_mae"] = float("nan")
                continue
            last_rows = panel.frame[panel.frame["hour"] <= end].groupby("series_id").tail(1)
            logged = log_evaluation(
                target=target, model_name=model,
                params={**settings.params(), "eval_start": str(start), "eval_end": str(end)},
                metrics=ev.scores, predictions=ev.predictions, fitted=ev.final_model,
                feature_cols=panel.feature_cols,
                example=last_rows[["series_id", "hour", "current", "venue_type", *panel.feature_cols]],
                tracking_uri=mlflow_tracking.uri(),
            )
            run = pd.DataFrame([{"model": model, "target": target, "run_id": logged.run_id,
                                 "model_uri": logged.model_uri, "mae": logged.mae, "windows": logged.windows}])
            preds = ev.predictions.assign(model=model)
            with duckdb.get_connection() as conn:
                where = {"model": model, "target": target}
                replace_rows(conn, "forecast_predictions", preds.assign(target_name=target), {
                    "model": model, "target_name": target})
                replace_rows(conn, "forecast_scores", ev.scores.assign(model=model), where)
                replace_rows(conn, "forecast_runs", run, where)
            allv = ev.scores[ev.scores["venue_type"] == "all"].set_index("metric")["value"]
            meta[f"{target}_mae"] = float(allv.get("mae", float("nan")))
            meta[f"{target}_skill_vs_persistence"] = float(allv.get("skill", float("nan")))
            meta[f"{target}_mlflow_run"] = logged.run_id
            meta[f"{target}_window"] = f"{start} → {end}"
            context.log.info(f"{model}/{target}: MAE {meta[f'{target}_mae']:.3e} in {ev.seconds:.1f} s")
        return dg.MaterializeResult(metadata=meta)

    return _evaluation


evaluation_assets = [build_evaluation_asset(m) for m in MODEL_NAMES]


@dg.asset(
    group_name=FORECAST_GROUP, pool=DUCKDB_POOL, kinds={"duckdb"},
    deps=evaluation_assets,
    description="Model × target × venue type × metric (MAE, RMSE, direction, coverage, skill vs persistence), "
    "all out-of-sample on the same walk-forward windows.",
)
def model_leaderboard(duckdb: FundarbDuckDB) -> dg.MaterializeResult:
    with duckdb.get_connection() as conn:
        if not _has_table(conn, "forecast_scores"):
            return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no evaluation had enough history"})
        scores = conn.execute("SELECT * FROM forecast_scores").df()
        board = leaderboard(scores)
        write_frame(conn, "model_leaderboard", board)
    meta: dict[str, dg.RawMetadataValue] = {"dagster/row_count": len(board)}
    for target, part in board.groupby("target"):
        meta[f"{target}"] = dg.MetadataValue.md(markdown_table(part.drop(columns=["target"])))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    group_name=FORECAST_GROUP, pool=DUCKDB_POOL, kinds={"mlflow"}, deps=[model_leaderboard],
    description="The registry's champion per target (alias 'champion' on fundarb-<target>); it moves only when a "
    "challenger beats it on the same windows.",
)
def champion_models(duckdb: FundarbDuckDB, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    with duckdb.get_connection() as conn:
        if not _has_table(conn, "forecast_runs"):
            return dg.MaterializeResult(metadata={"note": "no evaluation had enough history; no champion"})
        runs = conn.execute("SELECT * FROM forecast_runs").df()
    decisions = []
    for target, part in runs.groupby("target"):
        evs = {r.model: LoggedEvaluation(r.run_id, r.model_uri, float(r.mae), r.windows) for r in part.itertuples()}
        decisions.append(update_champion(str(target), evs, tracking_uri=mlflow_tracking.uri()))
    table = pd.DataFrame(decisions)
    with duckdb.get_connection() as conn:
        write_frame(conn, "champion_models", table.astype(str))
    return dg.MaterializeResult(metadata={
        "champions": dg.MetadataValue.md(markdown_table(table)),
        "model_uris": json.dumps({str(t): f"models:/{registered_name(str(t))}@{CHAMPION}" for t in runs["target"]}),
    })


@dg.asset(
    group_name=FORECAST_GROUP, pool=DUCKDB_POOL, kinds={"duckdb", "mlflow"}, deps=[champion_models, training_set],
    description="Latest forecasts for the current hour per series from models:/fundarb-<target>@champion; "
    "the keeper reads this table.",
)
def funding_forecasts(duckdb: FundarbDuckDB, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    mlflow.set_tracking_uri(mlflow_tracking.uri())
    out = []
    for target in TARGET_NAMES:
        with duckdb.get_connection() as conn:
            panel = load_panel(conn, target)
        frame = panel.frame
        latest = frame["hour"].max()
        history = frame[frame["hour"] > latest - pd.Timedelta(hours=96)]  # enough for sequence models
        try:
            model = mlflow.pyfunc.load_model(f"models:/{registered_name(target)}@{CHAMPION}")
        except mlflow.exceptions.MlflowException:
            continue  # no champion yet for this target (not enough history)
        cols = ["series_id", "hour", "current", "venue_type", *panel.feature_cols]
        pred = model.predict(history[cols].reset_index(drop=True))
        rows = history[cols[:4]].reset_index(drop=True).join(pred)
        uri = f"models:/{registered_name(target)}@{CHAMPION}"
        rows = rows[rows["hour"] == latest].assign(target=target, model_uri=uri)
        out.append(rows)
    if not out:
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "note": "no champion model yet"})
    table = pd.concat(out, ignore_index=True)
    with duckdb.get_connection() as conn:
        write_frame(conn, "funding_forecasts", table)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(table),
        "as_of": str(table["hour"].max()),
        "top_spreads": dg.MetadataValue.md(markdown_table(
            table[table["target"] == "spread_24h"].assign(pred_apr=lambda d: d["pred"] * 8760)
            .nlargest(10, "pred_apr")[["series_id", "hour", "pred_apr"]])),
    })


forecast_assets = [training_set, *evaluation_assets, model_leaderboard, champion_models, funding_forecasts]
