"""One home per rule (issue 10 §3): quote ranking, bar length, rate staleness and σ live in fundarb_core.sql_macros.

Two kinds of checks: the repository holds no second definition (a grep of every .sql and .py file outside the
tests and sql_macros), and the macros behave as documented on a real DuckDB, on real bundled rows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.leverage_safety import trailing_sigma_daily
from fundarb_core.schema import CANDLES, LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_core.sql_macros import (
    MAX_RATE_AGE_INTERVALS,
    TIMEFRAME_MINUTES,
    bar_minutes,
    install_macros,
    macro_sql,
    quote_rank,
    rate_is_fresh,
    sigma_daily,
)
from fundarb_core.sql_models import load_models
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.validation import canonical_symbols, validate

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2030, 1, 1, tzinfo=UTC)
SKIP_DIRS = {".venv", ".git", "tests", "mlflow", "node_modules", "__pycache__", ".dagster_home"}

# A second definition of a rule, as it has been written in this repository (SQL or Python).
RULES: dict[str, re.Pattern[str]] = {
    "quote_rank": re.compile(r"WHEN\s+'USD[TC]'|[\"']USD[TC][\"']\s*:\s*\d", re.IGNORECASE),
    "bar_minutes": re.compile(r"WHEN\s+'\d+[mhdwM]'|[\"']\d+m[\"']\s*:\s*\d|[\"']1h[\"']\s*:\s*60\b|_UNIT_MINUTES"),
    "rate_is_fresh": re.compile(r"(<=|>=|<|>)\s*[\w$.()]+\s*\*\s*(observed_)?interval_hours\b"),
    "sigma": re.compile(r"sqrt\((np\.divide\()?\s*1440|stddev_samp\(\s*log_return"),
}

# Definitions still written out in modules the issue-10 lead is moving (engine, strategy, simulation): each entry
# must disappear when he switches them to sql_macros — then delete it here.  Anything else is a failure.
PENDING: dict[str, set[str]] = {}


def _sources() -> list[Path]:
    out = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if path.suffix not in (".py", ".sql") or not path.is_file() or SKIP_DIRS & set(rel.parts):
            continue
        if rel.as_posix() != "fundarb_core/sql_macros.py":
            out.append(path)
    return out


def test_each_rule_is_defined_once() -> None:
    sources = _sources()
    assert len(sources) > 50 and any(p.suffix == ".sql" for p in sources)
    found: dict[str, set[str]] = {}
    for path in sources:
        text = path.read_text()
        hits = {rule for rule, pattern in RULES.items() if pattern.search(text)}
        if hits:
            found[path.relative_to(ROOT).as_posix()] = hits
    unexpected = {p: r - PENDING.get(p, set()) for p, r in found.items() if r - PENDING.get(p, set())}
    assert not unexpected, f"a rule written out again (use fundarb_core.sql_macros): {unexpected}"
    done = {p: r - found.get(p, set()) for p, r in PENDING.items() if r - found.get(p, set())}
    assert not done, f"now using sql_macros — remove from PENDING in tests/test_sql_rules.py: {done}"
    # the patterns do match the old definitions (a grep that finds nothing proves nothing)
    old = {
        "quote_rank": "ORDER BY CASE quote WHEN 'USDT' THEN 0 WHEN 'USDC' THEN 1 ELSE 2 END",
        "bar_minutes": "CASE timeframe WHEN '1m' THEN 1 WHEN '15m' THEN 15 ELSE 1440 END",
        "bar_minutes ": '_TF = {"15m": 15, "1h": 60}',
        "rate_is_fresh": "coalesce(observed_age_hours <= 2 * observed_interval_hours, false)",
        "sigma": "stddev_samp(log_return) OVER w168 * sqrt(1440.0 / bar_minutes)",
    }
    assert {key: bool(RULES[key.strip()].search(text)) for key, text in old.items()} == dict.fromkeys(old, True)
    assert not RULES["bar_minutes"].search('VENUE_TYPE_CODES = {"1h": 0.0, "8h": 1.0}')  # funding intervals
    calls = {m.name: m.sql for m in load_models()}  # and the models call the macros instead
    assert "quote_rank(quote)" in calls["stg_funding_hourly"] and "quote_rank(quote)" in calls["stg_candles"]
    assert "bar_minutes(timeframe)" in calls["stg_candles"] and "trailing_sigma_bar(" in calls["volatility"]
    assert "rate_is_fresh(" in calls["spread_panel"] and "rate_is_fresh(" in calls["regime_labels"]


@pytest.fixture
def conn() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect(":memory:")
    install_macros(c)
    return c


def _bundled(table: str) -> pd.DataFrame:
    return pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{LAYOUT_FILES[table]}.parquet")


def _ingested_candles(rows: pd.DataFrame) -> pd.DataFrame:
    """Real bundled bars as the warehouse holds them (validated: asset and quote added; naive UTC)."""
    out = validate(CANDLES, rows.reset_index(drop=True), now=NOW).accepted
    assert len(out) == len(rows)
    out["ts"] = out["ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def test_quote_rank_orders_real_quotes(conn: duckdb.DuckDBPyConnection) -> None:
    funding = _bundled("funding_rates")
    _, quote, _ = canonical_symbols(funding[["venue", "venue_symbol"]].drop_duplicates())  # as ingestion does
    real = sorted(set(quote.dropna()))
    assert {"USDT", "USDC"} <= set(real) and len(real) >= 3  # USD-quoted symbols exist too
    conn.register("q", pd.DataFrame({"quote": [*real, None]}))
    rows = conn.execute("SELECT quote, quote_rank(quote) FROM q ORDER BY quote_rank(quote), quote").fetchall()
    assert rows[0] == ("USDT", 0) and rows[1] == ("USDC", 1)
    assert all(rank == 2 for _, rank in rows[2:])  # any other quote, and an unknown one, after both
    assert all(quote_rank(q) == rank for q, rank in rows)  # the Python twin agrees on every value
    assert quote_rank(pd.NA) == quote_rank(float("nan")) == 2  # pandas' missing values rank last too


def test_bar_minutes_and_unknown_timeframe(conn: duckdb.DuckDBPyConnection) -> None:
    table = pd.DataFrame({"timeframe": list(TIMEFRAME_MINUTES)})
    conn.register("tf", table)
    got = dict(conn.execute("SELECT timeframe, bar_minutes(timeframe) FROM tf").fetchall())
    assert got == dict(TIMEFRAME_MINUTES) == {tf: bar_minutes(tf) for tf in TIMEFRAME_MINUTES}
    assert (got["1m"], got["15m"], got["1h"], got["4h"], got["1d"], got["1M"]) == (1, 15, 60, 240, 1440, 43200)
    for bad in ("7m", "1H", "", None):  # an unknown timeframe is an error in SQL and in Python, never a guess
        with pytest.raises(duckdb.InvalidInputException, match="unknown timeframe"):
            conn.execute("SELECT bar_minutes(?)", [bad]).fetchall()
        with pytest.raises(ValueError, match="unknown timeframe"):
            bar_minutes(bad)  # type: ignore[arg-type]

    # real bundled bars: stg_candles builds; one bar re-stamped with an unknown timeframe fails the model,
    # and ingestion would have rejected that row naming the field
    candles = _bundled("candles").head(200).copy()
    (stg,) = [m for m in load_models() if m.name == "stg_candles"]
    raw = _ingested_candles(candles)
    conn.register("candles", raw)
    assert len(conn.execute(stg.sql).df()) == len(raw)
    bad = raw.copy()
    bad.loc[17, "timeframe"] = "7m"
    conn.unregister("candles")
    conn.register("candles", bad)
    with pytest.raises(duckdb.InvalidInputException, match="unknown timeframe '7m'"):
        conn.execute(stg.sql).fetchall()
    odd = candles.copy()
    odd.loc[17, "timeframe"] = "7m"
    rejected = validate(CANDLES, odd, now=NOW).rejected
    assert len(rejected) == 1 and rejected["field"].iloc[0] == "timeframe"


def test_rate_is_fresh(conn: duckdb.DuckDBPyConnection) -> None:
    assert KeeperConfig().max_rate_age_intervals == MAX_RATE_AGE_INTERVALS == 2.0
    ages = [0.0, 1.0, 2.0, 2.0001, 7.5, 16.0, 16.5, None, 3.0]
    intervals = [1.0, 1.0, 1.0, 1.0, 4.0, 8.0, 8.0, 8.0, None]
    conn.register("r", pd.DataFrame({"age": ages, "iv": intervals}))
    sql = conn.execute("SELECT rate_is_fresh(age, iv), rate_is_fresh(age, iv, max_intervals := 1.0) FROM r").fetchall()
    want = [True, True, True, False, True, True, False, False, False]  # at exactly two intervals: still fresh
    assert [s[0] for s in sql] == want
    assert rate_is_fresh(np.array(ages, dtype="float64"), np.array(intervals, dtype="float64")).tolist() == want
    strict = [True, True, False, False, False, False, False, False, False]
    assert [s[1] for s in sql] == strict
    assert rate_is_fresh(np.array(ages, dtype="float64"), np.array(intervals, dtype="float64"), 1.0).tolist() == strict


def test_sigma_one_definition_for_the_model_and_the_backtest(conn: duckdb.DuckDBPyConnection) -> None:
    """volatility (σ as of each close) and the leverage backtest (σ as of each open) agree: one formula."""
    candles = _bundled("candles")
    one = candles[(candles["venue"] == "binance") & (candles["venue_symbol"] == candles["venue_symbol"].iloc[0])]
    one = one.sort_values("ts").iloc[:900]
    raw = _ingested_candles(one).drop(index=[400, 401]).reset_index(drop=True)  # a gap: two missing bars
    conn.register("candles", raw)
    models = {m.name: m for m in load_models()}
    conn.execute(f"CREATE TABLE stg_candles AS {models['stg_candles'].sql}")
    vol = conn.execute(f"SELECT hour, sigma_daily, n_returns FROM ({models['volatility'].sql}) ORDER BY hour").df()
    vol = vol.set_index(pd.DatetimeIndex(vol["hour"]).as_unit("ns"))

    ts = pd.DatetimeIndex(raw["ts"]).as_unit("ns")
    by_open = pd.Series(trailing_sigma_daily(ts, raw["close"], 60.0, min_coverage=0.0), index=ts)
    closes = pd.Series(raw["close"].to_numpy(), index=ts)
    checked = 0
    for t in ts[200:]:
        if t not in vol.index:  # the open after the gap: no model row closes there, the backtest still has σ
            continue
        assert by_open[t] == pytest.approx(vol.loc[t, "sigma_daily"], rel=1e-12)
        window = closes[(closes.index >= t - pd.Timedelta(hours=169)) & (closes.index < t)]
        rets = np.log(window / window.shift(1))[np.diff(window.index.asi8, prepend=0) == 3_600_000_000_000]
        assert vol.loc[t, "n_returns"] == len(rets.dropna())
        assert vol.loc[t, "sigma_daily"] == pytest.approx(float(np.std(rets.dropna(), ddof=1)) * np.sqrt(24), rel=1e-9)
        checked += 1
    assert checked > 300
    after_gap = ts[400]  # the bar opening after the two missing bars
    assert after_gap not in vol.index and np.isfinite(by_open[after_gap])

    # the window is (as_of − 168 h, as_of] for any bar length: the same real closes re-stamped as 15 m bars give
    # 168 × 4 returns in a full window (the model's old 167-hour RANGE frame held 669 of them)
    q = raw.assign(ts=raw["ts"].iloc[0] + pd.to_timedelta(np.arange(len(raw)) * 15, unit="min"), timeframe="15m")
    conn.execute("DROP TABLE stg_candles")
    conn.unregister("candles")
    conn.register("candles", q)
    conn.execute(f"CREATE TABLE stg_candles AS {models['stg_candles'].sql}")
    vol15 = conn.execute(f"SELECT hour, sigma_daily, n_returns FROM ({models['volatility'].sql}) ORDER BY hour").df()
    assert int(vol15["n_returns"].max()) == 672
    qts = pd.DatetimeIndex(q["ts"]).as_unit("ns")
    by_open15 = pd.Series(trailing_sigma_daily(qts, q["close"], 15.0, min_coverage=0.0), index=qts)
    model15 = pd.Series(vol15["sigma_daily"].to_numpy(), index=pd.DatetimeIndex(vol15["hour"]).as_unit("ns"))
    both = model15.index.intersection(qts)[1:]  # closes that are also opens (not the last), σ defined
    assert len(both) == len(q) - 2
    np.testing.assert_allclose(by_open15[both].to_numpy(), model15[both].to_numpy(), rtol=1e-12)
    assert float(sigma_daily(0.01, 15)) == pytest.approx(0.01 * np.sqrt(96))
    assert conn.execute("SELECT sigma_daily(0.01, 15)").fetchone()[0] == pytest.approx(0.01 * np.sqrt(96))


def test_macros_are_per_connection_and_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    duckdb.connect(str(db)).close()
    with duckdb.connect(str(db), read_only=True) as ro:  # a reader installs them too (TEMP: nothing written)
        install_macros(ro)
        install_macros(ro)
        assert ro.execute("SELECT quote_rank('USDC'), bar_minutes('15m')").fetchone() == (1, 15)
        with pytest.raises(duckdb.CatalogException):  # a cursor is a new connection: its own install
            ro.cursor().execute("SELECT quote_rank('USDT')").fetchall()
    assert len(macro_sql()) == 7
