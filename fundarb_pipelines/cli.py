"""``fundarb``: the project's command line.

Commands materialise Dagster assets through the project's own instance (so every run shows up
in the Dagster UI) and end with a human summary of what is in the database.

One error path: a user error (bad path, unreadable or empty file, nothing valid, empty period, bad
time, unusable database) is a ``fundarb_core.errors.FundarbError``; ``main`` prints it as one
line on stderr and returns its exit code.  A traceback appears only with ``--debug`` or for a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb as duckdb_lib
import pandas as pd

from fundarb_core.errors import BadArgumentError, DatabaseError, FundarbError, NothingToDoError
from fundarb_core.forecast.registry import MODEL_NAMES, TARGET_NAMES
from fundarb_core.progress import Progress
from fundarb_core.schema import RAW_TABLES
from fundarb_core.sources.replay import ReplaySource, table_path
from fundarb_core.storage import connect
from fundarb_core.times import parse_period, parse_user_time
from fundarb_pipelines.cli_summary import (
    _backtest_lines,
    _keeper_line,
    _performance_block,
    _run_ok,
    print_backtest,
    print_checks,
    print_summary,
    say,
    summary,
)
from fundarb_pipelines.instance import ensure_dagster_home
from fundarb_pipelines.resources import default_duckdb_path
from fundarb_pipelines.runs import (
    COMMAND_TAG,
    INVOCATION_TAG,
    PoolWatch,
    RunFailed,
    console_logger,
    process_tags,
    reap_dead_runs,
    run_failure,
)


def materialise(
    instance: dg.DagsterInstance,
    assets: Sequence[dg.AssetsDefinition | dg.AssetChecksDefinition],
    command: str,
    what: str,
    log_level: str = "INFO",
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    resources: Mapping[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """The one way the CLI runs assets: through the project's instance, after freeing the pool slots of dead
    runs, tagged with this process (so a later command can tell if it died), watched while it waits for the
    ``duckdb`` pool slot; a failure comes back as the user error it carried, or ``RunFailed``.  ``resources``
    replace the project's defaults by key (e.g. the keeper's trading mode from ``--mode``)."""
    from fundarb_pipelines.definitions import build_resources

    reap_dead_runs(instance, say)
    invocation = uuid.uuid4().hex
    defs = dg.Definitions(  # what dg.materialize builds, plus the console logger that keeps user errors quiet
        jobs=[dg.define_asset_job(name="__ephemeral_asset_job__")], assets=assets,
        resources={**build_resources(), **(resources or {})},
        loggers={"console": console_logger})
    with PoolWatch(instance, invocation, say):
        result = defs.resolve_job_def("__ephemeral_asset_job__").execute_in_process(
            instance=instance,
            run_config={**(run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}},
            tags={**process_tags(), COMMAND_TAG: command, INVOCATION_TAG: invocation, **(tags or {})},
            raise_on_error=False,
        )
    if not result.success:
        raise run_failure(result, what)
    return result


def _raw_assets_and_checks() -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    from fundarb_pipelines.assets.raw import raw_assets
    from fundarb_pipelines.checks.raw import raw_checks

    return [*raw_assets, *raw_checks]


def ingest(instance: dg.DagsterInstance, command: str = "ingest") -> dg.ExecuteInProcessResult:
    """Every raw asset over every partition of the data, as one single-run backfill."""
    from fundarb_pipelines.partitions import daily_partitions

    connect(default_duckdb_path(), on_wait=say).close()  # writable and free, or one line (after a visible wait)
    keys = daily_partitions().get_partition_keys()
    return materialise(instance, _raw_assets_and_checks(), command, "ingestion", tags={
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    })


def nothing_valid(result: dg.ExecuteInProcessResult, command: str) -> None:
    """``NothingToDoError`` when no funding row of the source was valid (everything downstream needs them)."""
    meta = result.asset_materializations_for_node("funding_rates")[0].metadata
    rows, rows_in = int(meta["rows"].value), int(meta["rows_in"].value)
    if rows:
        return
    if not rows_in:
        raise NothingToDoError("no funding rows to ingest: the source has none (an empty or missing "
                               f"market/funding.parquet?); nothing to {command}")
    table = str(meta["reject_reasons"].value) if "reject_reasons" in meta else ""
    counts = [row.strip("| ").rsplit(" | ", 1) for row in table.splitlines()[2:]]  # "| field: reason | rows |"
    reason, n = max(counts, key=lambda kv: int(kv[1])) if counts else ("see rejected_rows", "0")
    top = f"{reason} — {int(n):,} rows"
    raise NothingToDoError(f"nothing valid to ingest: all {rows_in:,} funding rows were rejected (e.g. {top}); "
                           "see `fundarb summary` and the rejected_rows table, fix the source and rerun")


def build_models(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """Every SQL model (staging → marts) and its checks, on what the raw tables now hold."""
    from fundarb_pipelines.sql_models import sql_assets, sql_checks

    return materialise(instance, [*sql_assets, *sql_checks], "run", "SQL models")


def build_forecasts(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """Training set, the six walk-forward evaluations, leaderboard, champions and latest forecasts."""
    from fundarb_pipelines.assets.forecast import forecast_assets

    return materialise(instance, forecast_assets, "run", "forecasting")


def forecast_eval(args: argparse.Namespace) -> dict[str, object]:
    """Walk-forward leaderboard on any canonical-layout directory, outside Dagster: ingest it into a
    temporary DuckDB file, build the SQL models, evaluate each model from --start to --end (each fit
    only on what precedes its origin)."""
    from fundarb_core.forecast.evaluate import evaluate_model
    from fundarb_core.forecast.metrics import leaderboard
    from fundarb_core.forecast.registry import ForecastSettings
    from fundarb_core.forecast.targets import build_panel

    start, end = parse_period(args.start, args.end, "forecast-eval")
    settings = ForecastSettings(train_window_hours=args.train_window_hours, expanding=args.expanding,
                                refit_every=args.refit_every)
    scores, timings = [], {}
    with (scratch_database(args.data, "evaluate") as (conn, data_dir),
          Progress(len(args.targets) * len(args.models), "forecast-eval", unit="evaluation") as bar):
        require_period(conn, data_dir, start, end, "evaluate")
        for target in args.targets:
            panel = build_panel(conn, target, end=end + pd.Timedelta(days=2))
            for model in args.models:
                bar.note(f"{model}/{target}")
                ev = evaluate_model(panel, model, start, end, settings, final_fit=False)
                if len(ev.scores):
                    scores.append(ev.scores)
                timings[f"{model}/{target}"] = round(ev.seconds, 1)
                bar.advance(note=f"{model}/{target} took {ev.seconds:.1f} s")
    if not scores:
        raise NothingToDoError(f"no forecast origin between {start} and {end} (UTC) has enough history in "
                               f"{data_dir} to be evaluated: widen the period or move it later")
    board = leaderboard(pd.concat(scores, ignore_index=True))
    return {"data": str(data_dir), "start": str(start), "end": str(end), "settings": settings.params(),
            "seconds": timings, "leaderboard": board.to_dict(orient="records")}


@contextmanager
def scratch_database(data_dir: str | None, verb: str = "work on") -> Iterator[
    tuple[duckdb_lib.DuckDBPyConnection, Path]
]:
    """A temporary DuckDB file holding a canonical-layout directory ingested and every SQL model built — the
    user's database is never touched by research commands.  Every row of the directory is read (no window), so
    a row with no or an absurd timestamp is rejected, not skipped; no valid funding row is a one-line error."""
    import tempfile

    from fundarb_core.ingest import ingest_table
    from fundarb_core.sql_models import build_all

    source = ReplaySource(data_dir)
    with tempfile.TemporaryDirectory() as tmp, duckdb_lib.connect(f"{tmp}/scratch.duckdb") as conn:
        reports = {table: ingest_table(conn, source, table, None, None) for table in RAW_TABLES}
        funding = reports["funding_rates"]
        path = table_path(source.data_dir, "funding_rates")
        if not funding.rows_in:
            raise NothingToDoError(f"{path}: no funding rows (the file is missing or empty); nothing to {verb}")
        if not funding.rows_written:
            top = max(funding.reject_reasons.items(), key=lambda kv: kv[1])
            raise NothingToDoError(f"{path}: nothing valid to {verb}: all {funding.rows_in:,} funding rows were "
                                   f"rejected (e.g. {top[0]} — {top[1]:,} rows); fix the file")
        build_all(conn)
        yield conn, source.data_dir


def require_period(conn: duckdb_lib.DuckDBPyConnection, data_dir: Path, start: pd.Timestamp, end: pd.Timestamp,
                   verb: str) -> None:
    """``NothingToDoError`` naming the data's own range when no funding row falls in ``[start, end)``."""
    n, lo, hi = conn.execute("SELECT count(*) FILTER (WHERE ts >= ? AND ts < ?), min(ts), max(ts) FROM funding_rates",
                             [start.to_pydatetime(), end.to_pydatetime()]).fetchall()[0]
    if not n:
        raise NothingToDoError(f"no funding rows between {start} and {end} (UTC) in {data_dir}: it covers "
                               f"{lo} → {hi}; nothing to {verb} — choose a period inside that range")


def parse_fees(text: str) -> float | None:
    """``real`` (the venues' schedules) or a flat fee per trade in bp."""
    if text.strip().lower() in ("real", "venue", "schedule"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fees must be 'real' or a number of bp, got {text!r}") from None


def backtest(args: argparse.Namespace) -> dict[str, object]:
    """``fundarb backtest``: strategies (or fee regimes) over --start → --end on a data directory, next to the
    cost-aware oracle; plots and report under --out, a run in MLflow unless --no-mlflow."""
    from fundarb_core.backtest.engine import STRATEGIES, BacktestConfig
    from fundarb_core.backtest.report import markdown
    from fundarb_core.backtest.suite import FEE_REGIMES, run_suite
    from fundarb_core.backtest.tracking import log_report
    from fundarb_core.forecast.registry import ForecastSettings

    start, end = parse_period(args.start, args.end, "backtest")
    strategies = STRATEGIES if ("all" in args.strategy or args.all_policies) else tuple(args.strategy)
    base = BacktestConfig(start=start, end=end, strategy=strategies[0],
                          fee_bps=args.fees, capital_per_venue_usd=args.capital,
                          assets=tuple(args.assets) if args.assets else None,
                          venues=tuple(args.venues) if args.venues else None,
                          forecast=ForecastSettings(gbm_trees=args.gbm_trees))
    runs = (len(FEE_REGIMES) * len(strategies) if args.all_policies
            else len(FEE_REGIMES) if args.fee_regimes else len(strategies))
    with (scratch_database(args.data, "backtest") as (conn, data_dir),
          Progress(runs * len(base.hours), "backtest", unit="hour") as bar):
        require_period(conn, data_dir, start, end, "backtest")
        res = run_suite(conn, base, strategies=strategies,
                        fee_regimes=FEE_REGIMES if (args.fee_regimes or args.all_policies) else None,
                        out_dir=Path(args.out) if args.out else None, progress=bar.note,
                        on_hour=lambda *_: bar.advance(), workers=args.workers, grid=args.all_policies)
    doc, parts = None, [markdown(s) for s in res.summaries]
    if args.all_policies:  # the comparison table: first in the report, CSV in MLflow, JSON below
        from fundarb_core.backtest.comparison import comparison, comparison_frame, comparison_text, to_json

        doc = comparison(res)
        parts.insert(0, f"```\n{comparison_text(doc)}\n```")
    report = "\n\n".join(parts)
    if args.out:
        (Path(args.out) / "report.md").write_text(report)
    params = {"data": str(data_dir), "start": str(base.start), "end": str(base.end),
              "fees": "fee regimes" if args.fee_regimes else ("real" if args.fees is None else args.fees),
              "strategies": list(strategies), "capital_per_venue_usd": args.capital}
    run_id = None
    if not args.no_mlflow:
        run_id = log_report("fee_regimes" if args.fee_regimes and not args.all_policies else "strategy_backtest",
                            params=params,
                            summaries=res.summaries, plots=res.plots, markdown=report,
                            tables={"comparison": comparison_frame(doc)} if doc is not None else None)
    oracles = {k: {"slots_net_usd": o.slots_net_usd, "all_assets_net_usd": o.all_assets_net_usd,
                   "capacity_net_usd": o.capacity_net_usd, "capacity_slots": o.capacity_slots,
                   "per_asset": o.table.to_dict(orient="records")} for k, o in res.oracles.items()}
    out: dict[str, object] = {"config": params, "runs": res.summaries, "oracle": oracles, "mlflow_run_id": run_id,
                              "plots": {k: str(v) for k, v in res.plots.items()}}
    if doc is not None:
        out["comparison"] = doc
        path = Path(args.comparison_json) if args.comparison_json else (
            Path(args.out) / "comparison.json" if args.out else None)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(to_json(doc))
            out["comparison_json"] = str(path)
    return out


def keeper_once(instance: dg.DagsterInstance, args: argparse.Namespace, command: str = "keeper") -> (
    dg.ExecuteInProcessResult
):
    """One keeper cycle (the assets of keeper_job) through the project's instance, so it shows in the UI."""
    from fundarb_pipelines.assets.keeper import keeper_assets

    cfg: dict[str, object] = {"dry_run": args.dry_run}
    if args.as_of:
        cfg["as_of"] = args.as_of
    resources: dict[str, object] = {}
    if args.mode:  # the command line's --mode overrides FUNDARB_KEEPER_MODE for this cycle
        from fundarb_pipelines.trading import KeeperTrading

        resources["trading"] = KeeperTrading(mode=args.mode, ledger_path=os.environ.get("FUNDARB_LEDGER", ""))
    return materialise(instance, keeper_assets, command, "keeper cycle", log_level="WARNING",
                       run_config={"ops": {"keeper_cycle": {"config": cfg}}}, resources=resources)


def build_backtests(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The backtest reports on their default period and the keeper's ledger report."""
    from fundarb_pipelines.assets.backtest import backtest_assets

    return materialise(instance, backtest_assets, "run", "backtests", log_level="WARNING")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fundarb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("ingest", "ingest every raw table over all partitions of the data"),
        ("run", "materialise every asset of the project on the embedded default, then summarise"),
        ("summary", "print what is in the database"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    fe = sub.add_parser("forecast-eval", help="walk-forward leaderboard of every model on a data directory")
    fe.add_argument("--data", default=None, help="canonical-layout directory (default: the bundled data)")
    fe.add_argument("--start", required=True, help="first origin evaluated (UTC), e.g. 2026-02-01")
    fe.add_argument("--end", required=True, help="end of the evaluated origins (exclusive)")
    fe.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    fe.add_argument("--targets", nargs="+", default=list(TARGET_NAMES), choices=TARGET_NAMES)
    fe.add_argument("--train-window-hours", type=int, default=168)
    fe.add_argument("--expanding", action="store_true", help="expanding instead of rolling training window")
    fe.add_argument("--refit-every", type=int, default=24)
    fe.add_argument("--json", action="store_true", help="print the leaderboard as one JSON document")
    bt = sub.add_parser("backtest", help="strategy backtest through the keeper's cycle, next to the oracle")
    bt.add_argument("--data", default=None, help="canonical-layout directory (default: the bundled data)")
    bt.add_argument("--start", required=True, help="first hour (UTC), e.g. 2026-02-01")
    bt.add_argument("--end", required=True, help="end of the period (exclusive, UTC)")
    bt.add_argument("--fees", type=parse_fees, default=None,
                    help="'real' (the venues' schedules, default) or a flat fee per trade in bp, e.g. 1.44")
    bt.add_argument("--fee-regimes", action="store_true", help="the first strategy at 0, 1.44, 4.5 bp and real fees")
    bt.add_argument("--strategy", nargs="+", default=["all"],
                    choices=["all", "keeper", "keeper_forecast", "naive", "patient", "keeper_spec"])
    bt.add_argument("--all-policies", action="store_true",
                    help="every policy (naive, patient, keeper, keeper + forecasts) at real fees and 0, 1.44, 4.5 bp "
                    "next to the oracle: the comparison table, total and per month (JSON: --comparison-json or "
                    "OUT/comparison.json)")
    bt.add_argument("--comparison-json", default=None, help="where --all-policies writes the comparison as JSON")
    bt.add_argument("--workers", type=int, default=1,
                    help="backtests run in this many processes (runs are independent; results do not depend on it)")
    bt.add_argument("--assets", nargs="+", default=None)
    bt.add_argument("--venues", nargs="+", default=None)
    bt.add_argument("--capital", type=float, default=10_000.0, help="starting balance per venue (USD)")
    bt.add_argument("--gbm-trees", type=int, default=200, help="LightGBM trees of the walk-forward forecasts")
    bt.add_argument("--out", default=None, help="directory for the plots and report.md")
    bt.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    bt.add_argument("--json", action="store_true", help="print the report as one JSON document")
    kp = sub.add_parser("keeper", help="run the keeper")
    kp.add_argument("--once", action="store_true", required=True, help="one cycle, then exit")
    kp.add_argument("--mode", default=None, choices=["paper", "live"],
                    help="default: FUNDARB_KEEPER_MODE, else paper; live also needs FUNDARB_LIVE=1")
    kp.add_argument("--dry-run", action="store_true", help="plan and record decisions, send no orders")
    kp.add_argument("--as-of", default=None, help="cycle time (UTC); default: the data's latest hour")
    dev = sub.add_parser("dev", help="serve the Dagster UI on this project (dagster dev with the project's home)")
    dev.add_argument("--port", default="3000")
    for command_parser in sub.choices.values():
        command_parser.add_argument("--debug", action="store_true",
                                    help="show the full traceback of an error instead of its one line")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    try:
        return run_command(args)
    except FundarbError as exc:
        if args.debug or os.environ.get("FUNDARB_DEBUG") == "1":
            raise
        print(f"fundarb {args.command}: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except RunFailed as exc:  # not a user error: a bug, shown with the step's traceback
        print(f"fundarb {args.command}: {exc}", file=sys.stderr, flush=True)
        return 1


def keeper_as_of(text: str, database: str) -> str:
    """``--as-of`` as naive UTC, inside the hours the database covers and not before the paper account's clock."""
    ts = parse_user_time(text, "--as-of")
    with connect(database, read_only=True, on_wait=say) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "funding_rates" not in tables:
            raise DatabaseError(f"{database} holds no funding data: run `fundarb ingest` (or `fundarb run`) first")
        lo, hi = conn.execute("SELECT min(ts), max(ts) FROM funding_rates").fetchall()[0]
        clock = conn.execute("SELECT value FROM paper_state WHERE key = 'clock'").fetchall() if (
            "paper_state" in tables) else []
    if lo is None:
        raise NothingToDoError(f"{database} has no valid funding rows: ingest data before running the keeper")
    if ts < pd.Timestamp(lo):
        raise BadArgumentError(f"--as-of {ts} (UTC) is before the first funding row {lo}: the keeper needs data up "
                               "to its cycle time; choose a time inside the data")
    if ts > pd.Timestamp(hi) + pd.Timedelta(hours=1):
        raise BadArgumentError(f"--as-of {ts} (UTC) is after the latest funding row {hi}: ingest newer data, or "
                               "choose a time inside the data (omit --as-of for its latest hour)")
    if clock and clock[0][0] and ts < pd.Timestamp(clock[0][0]):
        raise BadArgumentError(f"--as-of {ts} (UTC) is before the paper account's clock {clock[0][0]} (its last "
                               "cycle): the keeper cannot go back in time; use a later time or omit --as-of")
    return ts.isoformat()


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; a user error comes out as a ``FundarbError`` (``main`` prints it)."""
    if args.command == "forecast-eval":
        result = forecast_eval(args)
        if args.json:
            print(json.dumps(result, default=str))
        else:
            opts = ("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.4g}".format)
            with pd.option_context(*opts):
                print(pd.DataFrame(result["leaderboard"]).to_string(index=False))
        return 0
    if args.command == "backtest":
        try:
            result = backtest(args)
        except ValueError as exc:  # a bad period, strategy or data directory from the backtest's own checks
            if isinstance(exc, FundarbError):
                raise
            raise BadArgumentError(str(exc)) from exc
        if args.json:
            print(json.dumps(result, default=str))
        else:
            print_backtest(result)
            from fundarb_core.backtest.assumptions import assumptions_block

            for s in result["runs"]:  # type: ignore[union-attr]
                print("\n".join(assumptions_block(s)))
        return 0
    if args.command == "summary":  # reads only: no Dagster home needed
        return _print_result(args, summary(default_duckdb_path()))
    home = ensure_dagster_home()

    if args.command == "dev":
        with dg.DagsterInstance.get() as instance:  # slots of CLI runs that died are freed before the UI starts
            reap_dead_runs(instance, say)
        print(f"DAGSTER_HOME={home}; UI on http://127.0.0.1:{args.port}", flush=True)
        dagster = Path(sys.executable).with_name("dagster")  # the one installed beside this interpreter
        os.execv(dagster, [str(dagster), "dev", "-w", "workspace.yaml", "--port", str(args.port)])

    if args.command == "keeper":
        if args.as_of:
            args.as_of = keeper_as_of(args.as_of, default_duckdb_path())
        with dg.DagsterInstance.get() as instance:
            res = keeper_once(instance, args)
        print(_keeper_line(res))
        print(_performance_block(res))
        return 0
    checks: list[dict[str, object]] = []
    extra: dict[str, object] = {}
    stages = 5 if args.command == "run" else 1
    with dg.DagsterInstance.get() as instance, Progress(stages, f"fundarb {args.command}", unit="stage") as bar:
        bar.note("ingestion")
        ingested = ingest(instance, args.command)
        _run_ok(ingested, checks)
        nothing_valid(ingested, args.command)
        bar.advance(note="ingestion done")
        if args.command == "run":
            for name, build in (("SQL models", build_models), ("forecasting (six models × two targets)",
                                                                 build_forecasts)):
                bar.note(name)
                _run_ok(build(instance), checks)
                bar.advance(note=f"{name} done")
            bar.note("keeper cycle")
            keeper = keeper_once(instance, argparse.Namespace(mode="paper", dry_run=False, as_of=None), "run")
            _run_ok(keeper, checks)
            extra["keeper"] = _keeper_line(keeper)
            bar.advance(note="keeper cycle done")
            bar.note("backtests")
            backtests = build_backtests(instance)
            _run_ok(backtests, checks)
            extra["backtest"] = _backtest_lines(backtests)
            bar.advance(note="backtests done")
    return _print_result(args, {**summary(default_duckdb_path()), "checks": checks, **extra})


def _print_result(args: argparse.Namespace, s: dict[str, Any]) -> int:
    if not s.get("checks"):
        s.pop("checks", None)
    if args.json:
        print(json.dumps(s, default=str))
        return 0
    print_summary(s)
    if s.get("checks"):
        print_checks(s["checks"])
    if s.get("keeper"):
        print(f"  {s['keeper']}")
    for line in s.get("backtest", []):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
