"""Jobs and schedules of the ingestion layer."""


import dagster as dg

from fundarb_pipelines.assets.raw import RAW_GROUP
from fundarb_pipelines.partitions import daily_partitions
from fundarb_pipelines.resources import source_kind_from_env

ingest_job = dg.define_asset_job(
    name="ingest_job",
    selection=dg.AssetSelection.groups(RAW_GROUP),
    description="Ingest every raw table for one day (or a range, as a single-run backfill).",
)


@dg.schedule(
    job=ingest_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Live mode: re-ingest the current day every hour (upserts make this idempotent). "
    "Off by default — the replay dataset does not grow; turn it on with FUNDARB_SOURCE=ccxt.",
)
def hourly_ingest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    key = daily_partitions().get_last_partition_key(current_time=context.scheduled_execution_time)
    if key is None:
        return dg.SkipReason("no partition exists yet")
    return dg.RunRequest(run_key=f"{key}:{context.scheduled_execution_time:%Y%m%d%H}", partition_key=key)


retrain_job = dg.define_asset_job(
    name="retrain_job",
    selection=dg.AssetSelection.groups("forecasting"),
    description="Rebuild the training set, re-run every walk-forward evaluation, update the leaderboard, "
    "the champion aliases and the latest forecasts.",
)

daily_retrain_schedule = dg.ScheduleDefinition(
    name="daily_retrain_schedule",
    job=retrain_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    # On by default when the data is live (it grows daily); off on the static replay dataset.
    default_status=dg.DefaultScheduleStatus.RUNNING
    if source_kind_from_env() == "ccxt"
    else dg.DefaultScheduleStatus.STOPPED,
    description="Scheduled retraining: every day at 00:30 UTC.",
)
