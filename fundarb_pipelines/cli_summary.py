"""What the command line prints about a run: the database summary, the asset checks, the keeper's line and
performance block, and the backtest comparison (kept apart from the commands that produce them)."""

from __future__ import annotations

import math
import sys

import dagster as dg

from fundarb_core.errors import DatabaseError
from fundarb_core.schema import RAW_TABLES
from fundarb_core.sources.replay import ReplaySource
from fundarb_core.storage import connect, duplicate_counts, table_counts
from fundarb_pipelines.resources import source_kind_from_env
from fundarb_pipelines.sql_models import load_models


def _backtest_lines(res: dg.ExecuteInProcessResult) -> list[str]:
    meta = res.asset_materializations_for_node("strategy_backtest")[0].metadata
    lines = [f"backtest {meta['period'].value} (out-of-sample, real fees, vs the cost-aware oracle):"]
    lines += ["  " + line for line in meta["comparison"].value.splitlines()]
    safety = res.output_for_node("leverage_safety")
    if len(safety):
        lines.append(f"leverage safety (K 3–6, {len(safety)} runs): {int(safety['liquidated'].sum())} liquidated, "
                     f"average leverage {safety['avg_leverage'].min():.2f}–{safety['avg_leverage'].max():.2f}")
    return lines


def print_backtest(result: dict[str, object]) -> None:
    """``fundarb backtest``'s printout: with ``--all-policies`` the comparison table (every policy at every fee
    regime next to the oracle, total and per month), else each run's headline figures and the oracle bounds."""
    doc = result.get("comparison")
    if isinstance(doc, dict):
        from fundarb_core.backtest.comparison import comparison_text

        print(comparison_text(doc))
        if result.get("comparison_json"):
            print(f"\ncomparison written to {result['comparison_json']}")
        return
    from fundarb_core.backtest.report import comparison_table

    print(comparison_table(result["runs"]).to_string(index=False))  # type: ignore[arg-type]
    for key, o in result["oracle"].items():  # type: ignore[attr-defined]
        print(f"  oracle ({key}): {o['slots_net_usd']:,.2f} USD for the keeper's slots, "
              f"{o['all_assets_net_usd']:,.2f} USD over every asset, "
              f"{o.get('capacity_net_usd', 0.0):,.2f} USD at the keeper's collateral capacity")
    for s in result["runs"]:  # type: ignore[attr-defined]
        if s.get("parameters"):
            print(f"  {s['label']}: parameters chosen walk-forward before each month")
            for c in s["parameters"]:
                print(f"    {c['month']}: windows {c['windows_h']} h, shrink z {c['shrink_z']:g}, horizon "
                      f"{c['horizon_h']:g} h, margin {c['entry_margin']:g} (research P&L before it {c['score']:.4g})")


def _keeper_line(res: dg.ExecuteInProcessResult) -> str:
    meta = res.asset_materializations_for_node("keeper_cycle")[0].metadata
    return (f"keeper cycle at {meta['as_of'].value} ({meta['mode'].value}): {meta['action'].value} — "
            f"{meta['reason'].value}; {meta['plans_considered'].value} plans considered, "
            f"{meta['orders'].value} orders; paused: {meta['paused'].value}")


def _performance_block(res: dg.ExecuteInProcessResult) -> str:
    """The keeper's performance after the cycle (spec §8): the figures a person checks first."""
    meta = {k: v.value for k, v in res.asset_materializations_for_node("keeper_performance")[0].metadata.items()}
    if "note" in meta:
        return f"performance: {meta['note']}"

    def num(key: str) -> float:
        v = meta.get(key)
        return float(v) if isinstance(v, (int, float)) else float("nan")

    def pct(key: str) -> str:
        return f"{num(key) * 100:.2f} %" if math.isfinite(num(key)) else "-"

    hf = num("min_health_factor")
    health = f"{hf:.2f}" if math.isfinite(hf) else "- (no margin in use)"
    return (f"performance at {meta.get('as_of', '-')}: estimated APY {pct('estimated_apy')}, realised APY 7d "
            f"{pct('realised_apy_7d')}, realised APY {pct('realised_apy')}; {num('active_positions'):.0f} open "
            f"positions, margin {num('margin_deployed_usd'):,.2f} USD; minimum health factor {health}; "
            f"equity {num('equity_usd'):,.2f} USD")


def summary(database: str) -> dict[str, object]:
    """What is now in the database, as a dict (for --json) and printed for people.

    With the replay source it also counts the source rows of each table, so the summary can
    show stored = source − rejected − exact duplicates for every raw table.
    """
    source_rows: dict[str, int] = {}
    if source_kind_from_env() == "replay":
        replay = ReplaySource()
        source_rows = {t: len(replay.table(t)) for t in RAW_TABLES}
    with connect(database, read_only=True, on_wait=say) as conn:
        existing = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not set(RAW_TABLES) | {"rejected_rows"} <= existing:
            raise DatabaseError(f"{database} holds no fundarb tables (not a fundarb database?): run `fundarb ingest` "
                                "first, or set FUNDARB_DUCKDB to the project's database")
        counts = table_counts(conn)
        duplicates = duplicate_counts(conn)
        rejected_by_table = dict(conn.execute("SELECT raw_table, count(*) FROM rejected_rows GROUP BY 1").fetchall())
        span = conn.execute(
            "SELECT count(DISTINCT venue), count(DISTINCT asset), min(ts), max(ts) FROM funding_rates"
        ).fetchall()[0]
        models = {
            m.name: int(conn.execute(f"SELECT count(*) FROM {m.name}").fetchall()[0][0])
            for m in load_models()
            if m.name in existing
        }
        forecasts: list[dict[str, object]] = []
        if "model_leaderboard" in existing:
            forecasts = conn.execute(
                "SELECT target, model, mae, skill, coverage FROM model_leaderboard WHERE venue_type = 'all' "
                "ORDER BY target, mae"
            ).df().to_dict(orient="records")
        champions = (
            conn.execute("SELECT target, champion, reason FROM champion_models").df().to_dict(orient="records")
            if "champion_models" in existing
            else []
        )
        rejects = conn.execute(
            "SELECT raw_table, field, reason, count(*) FROM rejected_rows GROUP BY ALL ORDER BY 4 DESC"
        ).fetchall()
    return {
        "database": database,
        "tables": counts,
        "source_rows": source_rows,
        "models": models,
        "forecast_leaderboard": forecasts,
        "champions": champions,
        "rejected_by_table": rejected_by_table,
        "duplicates_by_table": duplicates,
        "funding_venues": span[0],
        "funding_assets": span[1],
        "funding_from": str(span[2]),
        "funding_to": str(span[3]),
        "rejects": [{"table": t, "field": f, "reason": r, "rows": n} for t, f, r, n in rejects],
    }


def print_summary(s: dict[str, object]) -> None:
    tables: dict[str, int] = s["tables"]  # type: ignore[assignment]
    source: dict[str, int] = s["source_rows"]  # type: ignore[assignment]
    rejected: dict[str, int] = s["rejected_by_table"]  # type: ignore[assignment]
    duplicates: dict[str, int] = s.get("duplicates_by_table", {})  # type: ignore[assignment]
    print(f"\nfundarb database {s['database']}:")
    for name, n in tables.items():
        line = f"  {name:<16} {n:>10,} rows"
        if name in source:
            r, d = rejected.get(name, 0), duplicates.get(name, 0)
            verdict = "all accounted for" if n == source[name] - r - d else "MISMATCH"
            dup = f" − exact duplicates {d:,}" if d else ""
            line += f"   (source {source[name]:,} − rejected {r:,}{dup}: {verdict})"
        print(line)
    print(
        f"  funding covers {s['funding_assets']} assets on {s['funding_venues']} venues, "
        f"{s['funding_from']} → {s['funding_to']} (UTC)"
    )
    models: dict[str, int] = s["models"]  # type: ignore[assignment]
    if models:
        print("  SQL models: " + ", ".join(f"{k} {v:,}" for k, v in models.items()))
    board: list[dict[str, object]] = s["forecast_leaderboard"]  # type: ignore[assignment]
    if board:
        print("  forecasters (walk-forward, out-of-sample, all venues; per-hour MAE as APR):")
        for r in board:
            print(f"    {r['target']:<16} {r['model']:<12} MAE {float(r['mae']) * 8760:7.4f}  "
                  f"skill vs persistence {float(r['skill']):+.3f}  80% coverage {float(r['coverage']):.2f}")
    for c in s["champions"]:  # type: ignore[attr-defined]
        print(f"  champion for {c['target']}: {c['champion']} ({c['reason']})")
    rejects: list[dict[str, object]] = s["rejects"]  # type: ignore[assignment]
    if rejects:
        print("  rejected rows by reason:")
        for r in rejects:
            print(f"    {r['table']}.{r['field']}: {r['reason']} — {r['rows']}")
    else:
        print("  no rows were rejected by validation")


def _run_ok(result: dg.ExecuteInProcessResult, checks: list[dict[str, object]]) -> None:
    checks.extend(
        {
            "check": f"{e.asset_key.to_user_string()}:{e.check_name}",
            "passed": e.passed,
            "severity": e.severity.value,
        }
        for e in result.get_asset_check_evaluations()
    )


def print_checks(checks: list[dict[str, object]]) -> None:
    failed = [c for c in checks if not c["passed"]]
    print(f"  asset checks: {len(checks) - len(failed)} passed, {len(failed)} failed")
    for c in failed:
        print(f"    {c['severity']}: {c['check']} (see its metadata in the Dagster UI)")


def say(message: str) -> None:
    """A progress or waiting line on stderr (stdout stays the command's result)."""
    print(f"fundarb: {message}", file=sys.stderr, flush=True)
