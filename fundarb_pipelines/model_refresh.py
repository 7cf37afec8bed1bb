"""The SQL models refresh themselves after every successful ingestion.

Why: the keeper plans on the models (spread panel, volatility, pair statistics, regime labels), not on the raw
tables; with the live source the hourly ingest must be followed by a model build or the keeper trades on a stale
market.  ``models_job`` rebuilds every model (staging → marts, each in the one-slot ``duckdb`` pool); the
run-status sensor launches it once per successful ``ingest_job`` run (its run key is the ingest run's id, so a
retried tick never builds twice).  On by default: it only rebuilds tables, it never trades.
"""

import dagster as dg

from fundarb_pipelines.schedules import ingest_job

models_job = dg.define_asset_job(
    name="models_job",
    selection=dg.AssetSelection.groups("staging", "marts"),
    description="Rebuild every SQL model (staging → marts) on what the raw tables hold now.",
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=models_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful ingest_job run, rebuild the SQL models once (models_job).",
)
def refresh_models_after_ingest(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    run = context.dagster_run
    return dg.RunRequest(run_key=f"models-after-{run.run_id}", tags={"fundarb/after_ingest": run.run_id})
