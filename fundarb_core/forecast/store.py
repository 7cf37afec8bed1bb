"""DuckDB persistence of panels, predictions, scores and run records (one transaction each)."""

from __future__ import annotations

import duckdb
import pandas as pd

from fundarb_core.forecast.base import Panel
from fundarb_core.storage import transaction


def write_frame(conn: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    """Replace ``table`` with ``frame`` atomically."""
    with transaction(conn):
        conn.register("_fundarb_frame", frame)
        conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _fundarb_frame")
        conn.unregister("_fundarb_frame")


def replace_rows(conn: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, where: dict[str, str]) -> None:
    """Delete the rows matching ``where`` and insert ``frame`` in one transaction (creating the table
    from ``frame``'s schema the first time): re-running an evaluation replaces its rows, never
    duplicates them."""
    cond = " AND ".join(f"{k} = ?" for k in where)
    with transaction(conn):
        conn.register("_fundarb_rows", frame)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _fundarb_rows LIMIT 0")
        conn.execute(f"DELETE FROM {table} WHERE {cond}", list(where.values()))
        conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _fundarb_rows")
        conn.unregister("_fundarb_rows")


def save_panel(conn: duckdb.DuckDBPyConnection, panel: Panel) -> None:
    write_frame(conn, f"training_set_{panel.target_name}", panel.frame)
    cols = pd.DataFrame({"target": panel.target_name, "feature": list(panel.feature_cols),
                         "position": range(len(panel.feature_cols))})
    conn.execute("CREATE TABLE IF NOT EXISTS training_set_features (target VARCHAR, feature VARCHAR, position INT)")
    replace_rows(conn, "training_set_features", cols, {"target": panel.target_name})


def load_panel(conn: duckdb.DuckDBPyConnection, target: str) -> Panel:
    frame = conn.execute(f"SELECT * FROM training_set_{target} ORDER BY hour, series_id").df()
    feats = [r[0] for r in conn.execute(
        "SELECT feature FROM training_set_features WHERE target = ? ORDER BY position", [target]).fetchall()]
    return Panel(frame=frame, feature_cols=tuple(feats), target_name=target)
