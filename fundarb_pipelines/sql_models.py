"""The SQL model layer as Dagster assets: every ``dbt_like_sql/<layer>/<name>.sql`` becomes one asset that
(re)builds the DuckDB table ``<name>`` (parsing and the plain build live in :mod:`fundarb_core.sql_models`).

Why not Dagster's ``TemplatedSqlComponent``: it needs one YAML file per model, takes its
dependencies from that YAML rather than from the SQL, has no DuckDB client, and reports no
row counts or tests.  This loader keeps the dbt habit instead — ``{{ ref('model') }}`` in the
SQL is both the table reference and the asset dependency — in one small module.
"""

import dagster as dg

from fundarb_core.sql_macros import install_macros
from fundarb_core.sql_models import SQL_DIR, SqlModel, build_all, load_models, parse_model, topological
from fundarb_core.storage import transaction
from fundarb_pipelines.metadata import markdown_table
from fundarb_pipelines.resources import DUCKDB_POOL, FundarbDuckDB

__all__ = [
    "SQL_DIR",
    "SqlModel",
    "build_all",
    "load_models",
    "parse_model",
    "sql_assets",
    "sql_checks",
    "sql_models",
    "topological",
]


def build_model_asset(model: SqlModel) -> dg.AssetsDefinition:
    """The asset that rebuilds ``model.name`` atomically (CREATE OR REPLACE in a transaction)."""

    @dg.asset(
        name=model.name,
        deps=[dg.AssetKey(d) for d in model.deps],
        group_name=model.layer,
        pool=DUCKDB_POOL,
        kinds={"duckdb", "sql"},
        description=model.description or None,
        code_version=model.code_version,
        tags={"layer": model.layer},
        metadata={"sql_file": dg.MetadataValue.path(str(model.path.relative_to(SQL_DIR.parent)))},
    )
    def _model(context: dg.AssetExecutionContext, duckdb: FundarbDuckDB) -> dg.MaterializeResult:
        with duckdb.get_connection() as conn:
            install_macros(conn)  # the shared rules (quote rank, bar length, staleness, σ) the models call
            with transaction(conn):
                conn.execute(f"CREATE OR REPLACE TABLE {model.name} AS\n{model.sql}")
            rows = int(conn.execute(f"SELECT count(*) FROM {model.name}").fetchall()[0][0])
            schema = conn.execute(f"DESCRIBE {model.name}").fetchall()
            summary = conn.execute(model.summary_sql).df() if model.summary_sql else None
        meta: dict[str, dg.RawMetadataValue] = {
            "dagster/row_count": rows,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name=c[0], type=str(c[1])) for c in schema]
            ),
            "sql": dg.MetadataValue.md(f"```sql\n{model.sql}\n```"),
        }
        if summary is not None:
            meta["summary"] = dg.MetadataValue.md(markdown_table(summary))
        context.log.info(f"{model.name}: {rows} rows")
        return dg.MaterializeResult(metadata=meta)

    return _model


def build_model_checks(model: SqlModel) -> list[dg.AssetChecksDefinition]:
    """The tests a model declares in its header, as blocking asset checks."""
    tests: list[tuple[str, str, str]] = []  # (check name, SQL counting offending rows, description)
    if model.unique_key:
        key = ", ".join(model.unique_key)
        tests.append((
            "unique_key",
            f"SELECT count(*) FROM (SELECT {key} FROM {model.name} GROUP BY ALL HAVING count(*) > 1)",
            f"no two rows share ({key})",
        ))
    for col in model.not_null:
        sql = f"SELECT count(*) FROM {model.name} WHERE {col} IS NULL"
        tests.append((f"not_null_{col}", sql, f"{col} is never null"))
    for col, lo, hi in model.accepted_ranges:
        tests.append((
            f"range_{col}",
            f"SELECT count(*) FROM {model.name} WHERE {col} < {lo} OR {col} > {hi}",
            f"{col} within [{lo}, {hi}]",
        ))

    def make(check_name: str, sql: str, description: str) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=model.name, name=check_name, pool=DUCKDB_POOL, blocking=True, description=description)
        def _check(duckdb: FundarbDuckDB) -> dg.AssetCheckResult:
            with duckdb.get_connection() as conn:
                bad = int(conn.execute(sql).fetchall()[0][0])
            return dg.AssetCheckResult(passed=bad == 0, metadata={"offending_rows": bad, "query": sql})

        return _check

    return [make(*t) for t in tests]


sql_models = load_models()
sql_assets: list[dg.AssetsDefinition] = [build_model_asset(m) for m in sql_models]
sql_checks: list[dg.AssetChecksDefinition] = [c for m in sql_models for c in build_model_checks(m)]
