"""Research integrity: no feature or label at or before t may change when data after t changes.

Builds every SQL model from real rows, then alters every raw row whose information arrives after
a cut time t (funding and open interest stamped after t, bars that close after t) and deletes
some, rebuilds, and compares everything stamped at or before t.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.conftest import alter_after, real_db, window_tables

CUT = pd.Timestamp("2026-02-10 12:30", tz="UTC")
CUT_NAIVE = CUT.tz_localize(None)
ALL = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
NOW = datetime(2026, 5, 1, tzinfo=UTC)

# model -> SQL predicate selecting rows fully determined by data known at or before CUT
AS_OF_CUT = {
    "stg_funding_hourly": "hour <= $cut",  # observed_* columns only, see below
    "stg_candles": "hour <= $cut",
    "volatility": "hour <= $cut",
    "basis": "hour <= $cut",
    "features": "hour <= $cut",
    "pair_features": "hour <= $cut",
    "regime_labels": "hour <= $cut",
    "spread_panel": "known_at <= $cut",
}
OBSERVED_ONLY = {
    "stg_funding_hourly": "venue, asset, hour, observed_rate_per_hour, observed_interval_hours, observed_settled_at",
}


@pytest.fixture(scope="module")
def base_tables() -> dict[str, pd.DataFrame]:
    from fundarb_core.schema import LAYOUT_FILES
    from fundarb_core.sources.replay import BUNDLED_DATA_DIR

    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    return window_tables(bundled, "2026-01-20", "2026-02-20")


def _rows(conn: duckdb.DuckDBPyConnection, model: str) -> pd.DataFrame:
    cols = OBSERVED_ONLY.get(model, "*")
    where = AS_OF_CUT[model].replace("$cut", f"TIMESTAMP '{CUT_NAIVE}'")
    return conn.execute(f"SELECT {cols} FROM {model} WHERE {where} ORDER BY ALL").df()


def test_features_and_labels_at_or_before_t_ignore_the_future(
    tmp_path: Path, base_tables: dict[str, pd.DataFrame]
) -> None:
    altered = alter_after(base_tables, CUT)
    assert sum(len(base_tables[t]) - len(altered[t]) for t in base_tables) > 1000  # really deleted rows
    with real_db(tmp_path / "a", base_tables) as a, real_db(tmp_path / "b", altered) as b:
        for model in AS_OF_CUT:
            before, after = _rows(a, model), _rows(b, model)
            assert len(before) > 100, model
            pd.testing.assert_frame_equal(before, after, obj=f"{model} at or before {CUT}")
        # …and the alteration is visible after t, so the comparison above can fail
        later = f"hour > TIMESTAMP '{CUT_NAIVE}'"
        diff = a.execute(f"SELECT count(*) FROM features WHERE {later}").fetchall()[0][0]
        changed = a.execute(f"SELECT * FROM features WHERE {later} ORDER BY ALL").df()
        changed_b = b.execute(f"SELECT * FROM features WHERE {later} ORDER BY ALL").df()
        assert diff > 0 and not changed.equals(changed_b)
