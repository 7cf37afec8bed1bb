"""The Celery app the production workers run: ``celery -A fundarb_pipelines.celery_worker worker -Q dagster``.

dagster-celery's own ``dagster-celery worker start`` writes the broker URL into a config file under
``DAGSTER_HOME``; the URL carries the Redis password, so the workers build the same app from the environment
instead (:meth:`CeleryExecutor.for_cli` is what that command uses) and nothing secret reaches the disk.
"""

from __future__ import annotations

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from fundarb_pipelines.production import BACKEND_ENV, BROKER_ENV, CELERY_QUEUE

app = make_app(CeleryExecutor.for_cli(
    broker=os.environ[BROKER_ENV], backend=os.environ[BACKEND_ENV],
    config_source={"worker_prefetch_multiplier": 1, "task_default_queue": CELERY_QUEUE},
).app_args())
execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
