"""Housekeeping of the project's Dagster runs: a killed run never blocks the next one.

Why: every DuckDB writer is in the ``duckdb`` pool (one slot).  A run whose process is SIGKILLed keeps its slot
claim (and any pending claim) in the instance's storage and stays ``STARTED`` forever, so every later run waited
for that slot with no message and no end.  Dagster's run monitoring only frees the slots of runs that *ended*
(``free_slots_after_run_end_seconds``, on in the project's ``dagster.yaml`` for ``fundarb dev``), and the default
run launcher cannot tell that a run worker died.  So:

* every run the CLI starts carries its process id, host and process start time as tags (:func:`process_tags`);
* before a command starts a run, :func:`reap_dead_runs` marks failed the unfinished runs whose process is gone
  (same host, PID not alive or reused) and frees, through Dagster's own ``free_concurrency_slots_for_run``, the
  slots and pending claims of every run that is no longer running;
* while the run waits for the slot, :class:`PoolWatch` says which run holds it and since when, keeps reaping
  (a holder that dies meanwhile is freed), and after ``FUNDARB_POOL_WAIT_S`` (default 600 s) marks its own run
  failed, releases its claim and exits with one line (exit code of ``BusyError``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import dagster as dg

from fundarb_core.errors import ERROR_TYPES, BusyError, FundarbError

PID_TAG = "fundarb/pid"
HOST_TAG = "fundarb/host"
PROC_START_TAG = "fundarb/proc_start"
COMMAND_TAG = "fundarb/command"
INVOCATION_TAG = "fundarb/invocation"
POOL = "duckdb"
POOL_WAIT_ENV = "FUNDARB_POOL_WAIT_S"
DEFAULT_POOL_WAIT_S = 600.0


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc``), '' where unknown: guards PID reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_tags() -> dict[str, str]:
    """Tags naming this process, for :func:`reap_dead_runs` to tell a dead run from a slow one."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), PROC_START_TAG: _proc_start(os.getpid())}


def process_alive(pid: int, started: str = "") -> bool:
    """Whether ``pid`` is a live process on this host, and the same one (same start time) when ``started``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if started and _proc_start(pid) not in ("", started):
        return False  # the PID was reused by another process
    try:  # a zombie (killed, not yet reaped by its parent) is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def pool_wait_limit() -> float:
    raw = os.environ.get(POOL_WAIT_ENV)
    try:
        return float(raw) if raw else DEFAULT_POOL_WAIT_S
    except ValueError:
        raise BusyError(f"{POOL_WAIT_ENV}={raw!r} is not a number of seconds") from None


def _dead(run: dg.DagsterRun) -> bool:
    tags = run.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False  # not ours to judge: another host, or launched by dagster dev (its daemon monitors it)
    pid = int(tags[PID_TAG])
    return pid != os.getpid() and not process_alive(pid, tags.get(PROC_START_TAG, ""))


def reap_dead_runs(instance: dg.DagsterInstance, say: Callable[[str], None]) -> list[str]:
    """Mark failed the unfinished runs whose process is gone; free the pool slots of every run that is not
    running any more.  Returns the ids of the runs whose slots were freed."""
    storage = instance.event_log_storage
    unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.QUEUED], tags={HOST_TAG: socket.gethostname()}))
    for run in unfinished:
        if _dead(run):
            why = (f"process {run.tags[PID_TAG]} ({run.tags.get(COMMAND_TAG, 'fundarb')}) is gone (killed?); "
                   "marked failed by fundarb so its pool slot is freed")
            instance.report_run_failed(run, message=why)
            say(f"run {run.run_id[:8]} of `fundarb {run.tags.get(COMMAND_TAG, '?')}` died (PID {run.tags[PID_TAG]}"
                "); marked failed and its duckdb pool slot freed")
    freed = []
    if not storage.supports_global_concurrency_limits:
        return freed
    for run_id in storage.get_concurrency_run_ids():
        record = instance.get_run_record_by_id(run_id)
        if record is None or record.dagster_run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed


def describe_run(instance: dg.DagsterInstance, run_id: str) -> str:
    """``run 1a2b3c4d (fundarb ingest, PID 123) since 03:40:12 UTC`` — or what is known of it."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return f"run {run_id[:8]} (deleted)"
    tags = record.dagster_run.tags
    who = f"fundarb {tags[COMMAND_TAG]}" if COMMAND_TAG in tags else record.dagster_run.job_name
    if PID_TAG in tags:
        who += f", PID {tags[PID_TAG]}"
    started = record.start_time or record.create_timestamp.timestamp()
    return f"run {run_id[:8]} ({who}) since {datetime.fromtimestamp(started, UTC):%Y-%m-%d %H:%M:%S} UTC"


class PoolWatch:
    """While a CLI run is in flight: if it waits for the ``duckdb`` pool, say who holds the slot (every 15 s),
    reap dead holders, and give up after the limit (module docstring).  Used as a context manager."""

    def __init__(self, instance: dg.DagsterInstance, invocation: str, say: Callable[[str], None],
                 limit: float | None = None, poll_s: float = 1.0) -> None:
        self._instance = instance
        self._invocation = invocation
        self._say = say
        self._limit = pool_wait_limit() if limit is None else limit
        self._poll = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fundarb-pool-watch", daemon=True)

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _our_run(self) -> dg.DagsterRun | None:
        runs = self._instance.get_runs(filters=dg.RunsFilter(tags={INVOCATION_TAG: self._invocation}), limit=1)
        return runs[0] if runs else None

    def _loop(self) -> None:
        run: dg.DagsterRun | None = None
        blocked_since: float | None = None
        said = -1e9
        while not self._stop.wait(self._poll):
            try:
                run = run or self._our_run()
                if run is None:
                    continue
                info = self._instance.event_log_storage.get_concurrency_info(POOL)
                waiting = any(s.run_id == run.run_id and s.assigned_timestamp is None for s in info.pending_steps)
                holders = sorted({s.run_id for s in info.claimed_slots if s.run_id != run.run_id})
                if not waiting or not holders:
                    blocked_since = None
                    continue
                now = time.monotonic()
                blocked_since = blocked_since or now
                if reap_dead_runs(self._instance, self._say):
                    continue
                who = "; ".join(describe_run(self._instance, h) for h in holders)
                waited = now - blocked_since
                if waited >= self._limit:
                    self._give_up(run, who, waited)
                if waited - said >= 15:
                    said = waited
                    self._say(f"waiting for the duckdb pool slot: held by {who} (gives up after {self._limit:.0f} s, "
                              f"{POOL_WAIT_ENV})")
            except Exception as exc:  # a watcher must never kill the run it watches
                self._say(f"(pool watch: {type(exc).__name__}: {exc})")

    def _give_up(self, run: dg.DagsterRun, who: str, waited: float) -> None:
        line = (f"the duckdb pool slot is held by {who}; gave up after {waited:.0f} s "
                f"({POOL_WAIT_ENV}={self._limit:.0f}): wait for that run to finish, or terminate it in the Dagster UI "
                "if it is stuck")
        try:
            self._instance.report_run_failed(run, message=line)
            self._instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        finally:
            command = run.tags.get(COMMAND_TAG, "")
            print(f"fundarb {command}: {line}".replace("fundarb : ", "fundarb: "), file=sys.stderr, flush=True)
            os._exit(BusyError.exit_code)  # the main thread is inside Dagster's wait loop, which has no limit


class RunFailed(Exception):
    """A Dagster run failed on something that is not a user error (a bug): carries the step's full error."""


def _user_error(error: Any) -> FundarbError | None:
    """The project's user error inside a step failure's error chain, rebuilt with its own type and message."""
    while error is not None:
        cls = ERROR_TYPES.get(error.cls_name or "")
        if cls is not None:
            return cls(error.message.split(": ", 1)[-1].strip())
        error = error.cause or error.context
    return None


def run_failure(result: dg.ExecuteInProcessResult, what: str) -> Exception:
    """Why a run failed: the user error it carried (one line), else ``RunFailed`` with the step's traceback."""
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        data = event.step_failure_data
        user = data.user_failure_data if data else None
        if user is not None and user.description:
            name = user.metadata.get("error")
            cls = ERROR_TYPES.get(str(name.value) if name is not None else "", FundarbError)
            return cls(user.description)
        found = _user_error(data.error if data else None)
        if found is not None:
            return found
        if data and data.error:
            return RunFailed(f"{what} failed in step {event.step_key} (run {result.run_id}):\n"
                             f"{data.error.to_string()}")
    return RunFailed(f"{what} failed (run {result.run_id}); see the Dagster UI or the logs above")


class _QuietUserErrors(logging.Filter):
    """Drops the console records of a step that failed on a user error (the CLI prints that error as its one
    line; the run's event log keeps the whole event) and the skipped-step / run-failure lines that follow it.
    A step that fails on anything else keeps its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.user_error = False

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "dagster_event", None)
        if event is not None and event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            user = data.user_failure_data if data else None
            if (user is not None and user.description) or _user_error(data.error if data else None):
                self.user_error = True
                return False
        follows = (event is not None and event.event_type_value in ("RUN_FAILURE", "STEP_SKIPPED")) or (
            "Dependencies for step" in record.getMessage())
        return not (self.user_error and follows)


@dg.logger(
    {"log_level": dg.Field(str, is_required=False, default_value="INFO"),
     "name": dg.Field(str, is_required=False, default_value="dagster")},
    description="Dagster's colored console logger, quiet about user errors (the CLI prints them as one line).",
)
def console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    logger.addFilter(_QuietUserErrors())
    return logger


@dg.sensor(
    name="free_slots_of_dead_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s under `fundarb dev`: marks failed the unfinished fundarb CLI runs whose process is gone "
    "(killed) and frees the duckdb pool slots of runs that are no longer running, so a killed CLI run never "
    "blocks the runs launched from the UI.",
)
def dead_run_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    freed = reap_dead_runs(context.instance, context.log.info)
    return dg.SkipReason(f"freed the pool slots of {len(freed)} run(s)" if freed else "no dead run holds a slot")
