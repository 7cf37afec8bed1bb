"""The sensor that runs the keeper when fresh inputs land.

It watches the keeper's inputs (raw funding, the spread panel, the forecasts); when any of them
has a materialisation newer than the cursor it launches ``keeper_job`` once for that batch (the
cursor moves to the newest storage ids, and the run key is derived from them), and never while a
keeper run is queued or in progress — that batch is picked up on a later tick instead.

Off by default (opt-in): opening the UI must not start the keeper behind the user's back.  Paper mode
would make a launch harmless to money, but it still writes positions and fills to the ledger tables,
so the user turns it on (Automation page, or ``dagster sensor start``).  It only ever launches paper
cycles: its run requests carry no run config, and live mode needs ``mode: live`` in the run config
*and* ``FUNDARB_LIVE=1``.
"""

import json

import dagster as dg

from fundarb_pipelines.assets.keeper import keeper_job

KEEPER_INPUTS = ("funding_rates", "spread_panel", "funding_forecasts")
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    job=keeper_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Off by default — turn it on to let the keeper follow the data. Launches keeper_job (a paper "
    "cycle: it never sets live mode) once per batch of fresh raw funding / spread panel / forecasts, never "
    "while a keeper run is in progress.",
)
def fresh_inputs_keeper_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    latest: dict[str, int] = {}
    for name in KEEPER_INPUTS:
        records = context.instance.fetch_materializations(dg.AssetKey(name), limit=1, ascending=False).records
        if records:
            latest[name] = int(records[0].storage_id)
    fresh = sorted(n for n, sid in latest.items() if sid > seen.get(n, -1))
    if not fresh:
        return dg.SkipReason("no fresh keeper inputs since the last launch")
    active = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=keeper_job.name, statuses=_ACTIVE), limit=1
    )
    if active:
        return dg.SkipReason(f"keeper run {active[0].run_id} is still in progress; fresh: {', '.join(fresh)}")
    cursor = json.dumps({**seen, **latest}, sort_keys=True)
    run_key = "keeper:" + ",".join(f"{n}={latest[n]}" for n in sorted(latest))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={"fundarb/fresh_inputs": ",".join(fresh)})],
        cursor=cursor,
    )
