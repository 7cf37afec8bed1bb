"""The forecasting assets materialised through Dagster: six models × two targets in MLflow,
a leaderboard, champion aliases and the latest forecasts, on real rows."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pytest
from mlflow import MlflowClient

from fundarb_core.forecast.registry import MODEL_NAMES, TARGET_NAMES
from fundarb_core.forecast.tracking import CHAMPION, experiment_name, registered_name
from fundarb_pipelines.assets.forecast import ForecastConfig, MlflowTracking, forecast_assets
from fundarb_pipelines.resources import FundarbDuckDB
from tests.conftest import real_db, window_tables


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dg.ExecuteInProcessResult]:
    root = tmp_path_factory.mktemp("forecast")
    import pandas as pd

    from fundarb_core.schema import LAYOUT_FILES as files
    from fundarb_core.sources.replay import BUNDLED_DATA_DIR

    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in files.items()}
    real_db(root, window_tables(bundled, "2026-02-01", "2026-02-20")).close()
    db = root / "db.duckdb"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    resources = {
        "duckdb": FundarbDuckDB(database=str(db)),
        "mlflow_tracking": MlflowTracking(tracking_uri=uri),
        # small and quick: the models' quality is measured by forecast-eval, not here
        "forecast_config": ForecastConfig(eval_days=2, assets=["BTC"], deep_epochs=1, deep_max_train_windows=300,
                                          deep_refit_every=48, refit_every=48, gbm_trees=20),
    }
    result = dg.materialize(forecast_assets, resources=resources)
    assert result.success
    return db, uri, result


Built = tuple[Path, str, dg.ExecuteInProcessResult]


def test_six_models_on_both_targets_are_logged_and_comparable(pipeline: Built) -> None:
    db, uri, result = pipeline
    client = MlflowClient(tracking_uri=uri)
    for target in TARGET_NAMES:
        exp = client.get_experiment_by_name(experiment_name(target))
        runs = client.search_runs([exp.experiment_id])
        assert {r.data.tags["model"] for r in runs} == set(MODEL_NAMES)
        assert len({r.data.tags["windows"] for r in runs}) == 1  # all on the same windows
        assert all("mae_apr_pct_all" in r.data.metrics for r in runs)
    with duckdb.connect(str(db), read_only=True) as conn:
        board = conn.execute("SELECT DISTINCT model, target FROM model_leaderboard").fetchall()
        assert len(board) == len(MODEL_NAMES) * len(TARGET_NAMES)
        forecasts = conn.execute("SELECT target, count(*), count(pred) FROM funding_forecasts GROUP BY 1").fetchall()
    assert {t for t, n, k in forecasts if n > 0 and k == n} == set(TARGET_NAMES)
    meta = result.asset_materializations_for_node("model_leaderboard")[0].metadata
    assert "skill" in meta["next_settlement"].value


def test_champion_aliases_exist_and_load(pipeline: Built) -> None:
    _, uri, _ = pipeline
    client = MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    for target in TARGET_NAMES:
        version = client.get_model_version_by_alias(registered_name(target), CHAMPION)
        assert version.tags["model"] in MODEL_NAMES
        assert mlflow.pyfunc.load_model(f"models:/{registered_name(target)}@{CHAMPION}") is not None
