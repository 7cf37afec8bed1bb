"""The SQL models refresh themselves after ingestion: a real successful ingest run makes the run-status sensor
request models_job once (keyed by that run), and models_job rebuilds every staging and marts model."""

from __future__ import annotations

import dagster as dg

from fundarb_core.sql_models import load_models
from fundarb_pipelines.definitions import defs
from fundarb_pipelines.model_refresh import models_job, refresh_models_after_ingest


def test_a_successful_ingest_requests_one_model_build() -> None:
    definitions = defs()
    job = definitions.resolve_job_def("models_job")
    built = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert built == {m.name for m in load_models()}  # every model, nothing else
    with dg.instance_for_test() as instance:

        @dg.op
        def ingest_stand_in() -> None:  # a real run of a job named ingest_job, recorded by the instance
            return None

        @dg.job(name="ingest_job")
        def ingest_job() -> None:
            ingest_stand_in()

        result = ingest_job.execute_in_process(instance=instance)
        assert result.success
        event = next(e for e in instance.all_logs(result.run_id)
                     if e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS)
        ctx = dg.build_run_status_sensor_context(
            sensor_name=refresh_models_after_ingest.name, dagster_instance=instance,
            dagster_event=event.dagster_event, dagster_run=instance.get_run_by_id(result.run_id))
        request = refresh_models_after_ingest(ctx)
    assert isinstance(request, dg.RunRequest) and request.run_key == f"models-after-{result.run_id}"
    assert refresh_models_after_ingest.job_name == models_job.name
    assert refresh_models_after_ingest.default_status == dg.DefaultSensorStatus.RUNNING
