"""Raw market-data assets: one DuckDB table each, partitioned by day.

Each asset is a thin wrapper over ``fundarb_core.ingest.ingest_table``: fetch the partition
window (or the whole range of a single-run backfill) from the configured source, validate,
upsert in one transaction, and report rows, rejects, exact duplicates, venues and time range as
metadata.  With the replay source the first partition's window is open to the past and the last
one's to the future (rows with no timestamp come with the first), so every source row is stored,
rejected with its reason or counted as a duplicate: ``rows + rejects + duplicates = rows_in``.
A user error (an unreadable file) fails the step with that one line as the failure's description.
"""


import dagster as dg

from fundarb_core.errors import FundarbError
from fundarb_core.ingest import IngestReport, ingest_table
from fundarb_core.schema import RAW_TABLES
from fundarb_pipelines.partitions import daily_partitions, open_edges
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB, MarketSourceResource

RAW_GROUP = "raw"

_DESCRIPTIONS = {
    "funding_rates": "Funding settlements per venue symbol: rate per interval, the interval in force, "
    "per-hour rate and APR, canonical asset and quote.",
    "candles": "1h OHLCV bars per venue symbol (bar open time).",
    "open_interest": "Open interest in USD per venue symbol (hourly series or snapshots).",
    "orderbook_depth": "Order-book top snapshots: mid price and USD depth per side.",
}


def report_metadata(report: IngestReport, partition_rows: int, table_rows: int) -> dict[str, dg.MetadataValue]:
    """Asset metadata for one ingestion: ``dagster/row_count`` is the rows of the partitions this run covered
    (what the UI shows on a partition), ``table_rows`` the whole table's."""
    meta: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(report.rows_written),
        "rows_in": dg.MetadataValue.int(report.rows_in),
        "rejects": dg.MetadataValue.int(report.rejected),
        "duplicates": dg.MetadataValue.int(report.duplicates),
        "venues": dg.MetadataValue.text(", ".join(report.venues) or "-"),
        "min_ts": dg.MetadataValue.text(report.min_ts or "-"),
        "max_ts": dg.MetadataValue.text(report.max_ts or "-"),
        "dagster/row_count": dg.MetadataValue.int(partition_rows),
        "table_rows": dg.MetadataValue.int(table_rows),
    }
    if report.reject_reasons:
        lines = ["| field: reason | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(report.reject_reasons.items())]
        meta["reject_reasons"] = dg.MetadataValue.md("\n".join(lines))
    return meta


def build_raw_asset(table: str) -> dg.AssetsDefinition:
    """The ingestion asset for one raw table."""

    @dg.asset(
        name=table,
        group_name=RAW_GROUP,
        partitions_def=daily_partitions(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=DUCKDB_POOL,
        kinds={"duckdb", "python"},
        description=_DESCRIPTIONS[table],
        tags={"layer": "raw"},
    )
    def _raw(context: dg.AssetExecutionContext, duckdb: FundarbDuckDB, market_source: MarketSourceResource) -> (
        dg.MaterializeResult
    ):
        window = context.partition_time_window
        keys = context.partition_key_range
        first, last = open_edges(keys.start, keys.end) if market_source.kind == "replay" else (False, False)
        try:
            source = market_source.build()
            with duckdb.get_connection(log=context.log.warning) as conn:
                report = ingest_table(conn, source, table, None if first else window.start,
                                      None if last else window.end)
                table_rows = int(conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
                lo = None if first else window.start.replace(tzinfo=None)
                hi = None if last else window.end.replace(tzinfo=None)
                part_rows = int(conn.execute(  # the partition's own rows, not the whole table's
                    f"SELECT count(*) FROM {table} WHERE ($lo IS NULL OR ts >= $lo) AND ($hi IS NULL OR ts < $hi)",
                    {"lo": lo, "hi": hi}).fetchall()[0][0])
        except FundarbError as exc:
            raise dg.Failure(description=str(exc), metadata={"error": type(exc).__name__}) from None
        if report.duplicates:
            context.log.info(f"{table}: {report.duplicates} exact duplicate rows counted (stored once)")
        if report.rejected:
            context.log.warning(f"{table}: {report.rejected} rows rejected: {report.reject_reasons}")
        context.log.info(
            f"{table} [{window.start:%Y-%m-%d} → {window.end:%Y-%m-%d}) from {source.name}: "
            f"{report.rows_written} rows, {report.rejected} rejected, {report.duplicates} duplicates"
        )
        return dg.MaterializeResult(metadata=report_metadata(report, part_rows, table_rows))

    return _raw


raw_assets: list[dg.AssetsDefinition] = [build_raw_asset(t) for t in RAW_TABLES]
