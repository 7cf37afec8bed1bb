"""The production profile's code location: the same definitions, every run on Celery workers, every connection
setting from the environment.

``deploy/profile.sh up`` serves this module from a ``dagster code-server``; the webserver and the daemon reach it
over gRPC, the daemon's queued run coordinator launches runs (``deploy/dagster.yaml``: PostgreSQL storage, the
one-slot ``duckdb`` pool, tag concurrency limits), and each step of a run becomes a Celery task on a Redis broker
(:mod:`fundarb_pipelines.celery_worker`).  Nothing here holds a secret: the executor config and the resources name
environment variables, resolved in each process, so run configs and event logs in PostgreSQL only ever hold the
variables' names.
"""

from __future__ import annotations

import dagster as dg
from dagster_celery import celery_executor

from fundarb_pipelines.assets.forecast import ForecastConfig, MlflowTracking
from fundarb_pipelines.definitions import build_definitions
from fundarb_pipelines.resources import DUCKDB_ENV, FundarbDuckDB, MarketSourceResource
from fundarb_pipelines.trading import trading_from_env

BROKER_ENV = "FUNDARB_CELERY_BROKER_URL"
BACKEND_ENV = "FUNDARB_CELERY_BACKEND_URL"
SOURCE_ENV = "FUNDARB_SOURCE"
MLFLOW_ENV = "MLFLOW_TRACKING_URI"
CELERY_QUEUE = "dagster"

# Broker and result backend by name ({"env": ...}): the URLs carry the Redis password.  Prefetch 1 so a worker
# busy with a long walk-forward does not hold back queued cells another worker could take.
production_executor = celery_executor.configured(
    {"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV},
     "config_source": {"worker_prefetch_multiplier": 1, "task_default_queue": CELERY_QUEUE}},
    name="fundarb_celery",
)


def production_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of :func:`fundarb_pipelines.definitions.build_resources`, every setting an ``dg.EnvVar``."""
    return {
        "duckdb": FundarbDuckDB(database=dg.EnvVar(DUCKDB_ENV)),
        "market_source": MarketSourceResource(kind=dg.EnvVar(SOURCE_ENV)),
        "mlflow_tracking": MlflowTracking(tracking_uri=dg.EnvVar(MLFLOW_ENV)),
        "forecast_config": ForecastConfig(),
        "trading": trading_from_env(),  # paper unless FUNDARB_KEEPER_MODE (an EnvVar) says live
    }


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(production_resources(), production_executor)
