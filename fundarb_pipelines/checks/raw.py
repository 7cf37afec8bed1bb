"""Asset checks on the raw tables: unique keys, settlement gaps, rate bounds, freshness.

The SQL lives with the check so the UI shows what was tested; every check reads DuckDB and
so runs in the same pool as the writers.
"""


from datetime import timedelta

import dagster as dg

from fundarb_core.funding import ALLOWED_INTERVALS_HOURS, MAX_ABS_RATE_PER_HOUR
from fundarb_core.schema import RAW_TABLES
from fundarb_core.sql_macros import install_macros
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB, MarketSourceResource

# A series is stale when its last row is older than this, relative to the data's "now".
FRESHNESS_LAG = {"funding_rates": timedelta(hours=16), "candles": timedelta(hours=3)}
# A gap counts when consecutive rows are further apart than this multiple of the expected step.
GAP_FACTOR = 1.5


def _unique_key_check(table: str) -> dg.AssetChecksDefinition:
    key = ", ".join(RAW_TABLES[table].key)

    @dg.asset_check(asset=table, name="unique_key", pool=DUCKDB_POOL, blocking=True,
                    description=f"No two rows of {table} share ({key}).")
    def _check(duckdb: FundarbDuckDB) -> dg.AssetCheckResult:
        with duckdb.get_connection() as conn:
            dupes = conn.execute(
                f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
            ).fetchall()[0][0]
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicate_keys": int(dupes)})

    return _check


@dg.asset_check(asset="funding_rates", name="rate_bounds", pool=DUCKDB_POOL, blocking=True,
                description="Every interval is 1/2/4/8 h and |rate per hour| is within the sane bound.")
def funding_rate_bounds(duckdb: FundarbDuckDB) -> dg.AssetCheckResult:
    allowed = ", ".join(str(a) for a in ALLOWED_INTERVALS_HOURS)
    with duckdb.get_connection() as conn:
        bad_interval, bad_rate, max_abs = conn.execute(
            f"SELECT count(*) FILTER (WHERE interval_hours NOT IN ({allowed})),"
            f" count(*) FILTER (WHERE abs(rate_per_hour) > {MAX_ABS_RATE_PER_HOUR}),"
            " coalesce(max(abs(rate_per_hour)), 0) FROM funding_rates"
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bad_interval == 0 and bad_rate == 0,
        metadata={
            "bad_interval_rows": int(bad_interval),
            "out_of_bound_rows": int(bad_rate),
            "max_abs_rate_per_hour": float(max_abs),
            "bound_per_hour": MAX_ABS_RATE_PER_HOUR,
        },
    )


def _gap_check(table: str, step_sql: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table, name="gaps", pool=DUCKDB_POOL,
        description=f"Consecutive rows per venue symbol are at most {GAP_FACTOR}x the expected step apart. "
        "Real data has holes (TON stops in June on two venues), so this warns rather than fails.",
    )
    def _check(duckdb: FundarbDuckDB) -> dg.AssetCheckResult:
        with duckdb.get_connection() as conn:
            install_macros(conn)  # bar_minutes
            gaps = conn.execute(
                f"""
                WITH s AS (
                  SELECT venue, venue_symbol, ts, {step_sql} AS step_h,
                         epoch(ts - lag(ts) OVER (PARTITION BY venue, venue_symbol ORDER BY ts)) / 3600 AS gap_h
                  FROM {table})
                SELECT venue, venue_symbol, count(*) AS gaps, max(gap_h) AS longest_h
                FROM s WHERE gap_h > {GAP_FACTOR} * step_h
                GROUP BY ALL ORDER BY gaps DESC
                """
            ).df()
        top = gaps.head(15)
        table_md = "| venue | symbol | gaps | longest (h) |\n|---|---|---|---|\n" + "\n".join(
            f"| {r.venue} | {r.venue_symbol} | {r.gaps} | {r.longest_h:.0f} |" for r in top.itertuples()
        )
        return dg.AssetCheckResult(
            passed=gaps.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "series_with_gaps": len(gaps),
                "total_gaps": int(gaps["gaps"].sum()) if not gaps.empty else 0,
                "worst": dg.MetadataValue.md(table_md),
            },
        )

    return _check


def _freshness_check(table: str) -> dg.AssetChecksDefinition:
    lag = FRESHNESS_LAG[table]

    @dg.asset_check(
        asset=table, name="freshness", pool=DUCKDB_POOL,
        description=f"Every venue's latest {table} row is within {lag} of the data's 'now' "
        "(the replay's last timestamp, or the wall clock when live).",
    )
    def _check(duckdb: FundarbDuckDB, market_source: MarketSourceResource) -> dg.AssetCheckResult:
        as_of = market_source.as_of().tz_convert("UTC").tz_localize(None)
        with duckdb.get_connection() as conn:
            latest = conn.execute(f"SELECT venue, max(ts) AS last_ts FROM {table} GROUP BY venue").df()
        latest["lag_h"] = (as_of - latest["last_ts"]).dt.total_seconds() / 3600
        stale = latest[latest["lag_h"] > lag.total_seconds() / 3600]
        return dg.AssetCheckResult(
            passed=stale.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "as_of": as_of.isoformat(),
                "stale_venues": ", ".join(f"{r.venue} ({r.lag_h:.0f} h)" for r in stale.itertuples()) or "-",
            },
        )

    return _check


raw_checks: list[dg.AssetChecksDefinition] = [
    *(_unique_key_check(t) for t in RAW_TABLES),
    funding_rate_bounds,
    _gap_check("funding_rates", "interval_hours"),
    _gap_check("candles", "bar_minutes(timeframe) / 60.0"),  # the bar length rule of fundarb_core.sql_macros
    *(_freshness_check(t) for t in FRESHNESS_LAG),
]
