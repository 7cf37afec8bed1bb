"""The Dagster code location of fundarb: every asset, check, job, schedule and resource.

Each domain module exports its own definitions; this file only gathers them and binds the
resources, so adding a layer means adding a module and one line here.
"""


import dagster as dg

from fundarb_pipelines.assets.backtest import backtest_assets, backtest_job
from fundarb_pipelines.assets.forecast import ForecastConfig, MlflowTracking, forecast_assets
from fundarb_pipelines.assets.keeper import keeper_assets, keeper_job
from fundarb_pipelines.assets.raw import raw_assets
from fundarb_pipelines.checks.raw import raw_checks
from fundarb_pipelines.model_refresh import models_job, refresh_models_after_ingest
from fundarb_pipelines.resources import (
    FundarbDuckDB,
    MarketSourceResource,
    default_duckdb_path,
    source_kind_from_env,
)
from fundarb_pipelines.runs import dead_run_reaper
from fundarb_pipelines.schedules import daily_retrain_schedule, hourly_ingest_schedule, ingest_job, retrain_job
from fundarb_pipelines.sensors import fresh_inputs_keeper_sensor
from fundarb_pipelines.sql_models import sql_assets, sql_checks
from fundarb_pipelines.sweep import forecast_sweep_job
from fundarb_pipelines.trading import trading_from_env


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources for the embedded default (or what the environment variables select)."""
    return {
        "duckdb": FundarbDuckDB(database=default_duckdb_path()),
        "market_source": MarketSourceResource(kind=source_kind_from_env()),
        "mlflow_tracking": MlflowTracking(),
        "forecast_config": ForecastConfig(),
        "trading": trading_from_env(),
    }


def build_definitions(resources: dict[str, dg.ConfigurableResource],
                      executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    """Everything, bound to ``resources`` and run by ``executor`` (the production profile passes Celery)."""
    return dg.Definitions(
        assets=[*raw_assets, *sql_assets, *forecast_assets, *keeper_assets, *backtest_assets],
        asset_checks=[*raw_checks, *sql_checks],
        jobs=[ingest_job, models_job, retrain_job, keeper_job, backtest_job, forecast_sweep_job],
        sensors=[fresh_inputs_keeper_sensor, dead_run_reaper, refresh_models_after_ingest],
        schedules=[hourly_ingest_schedule, daily_retrain_schedule],
        resources=resources,
        executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(build_resources())
