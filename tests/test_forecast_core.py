"""Forecast core: targets, the walk-forward's causality, models, metrics — on a slice of real bundled data.

The DuckDB is built exactly as in production (replay ingestion + every SQL model) from five weeks of
the bundled parquet for four assets traded on hourly and interval venues alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.forecast.base import PRED_COLUMNS, Forecaster, Panel
from fundarb_core.forecast.baselines import Ewma, Persistence
from fundarb_core.forecast.ensemble import Ensemble
from fundarb_core.forecast.gbm import LightGbm
from fundarb_core.forecast.metrics import evaluate, leaderboard
from fundarb_core.forecast.targets import next_settlement_panel, spread_24h_panel
from fundarb_core.forecast.walk_forward import (
    LeakageError,
    check_no_leak,
    masked_context,
    training_slice,
    walk_forward,
)
from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_core.symbols import SymbolError, normalize_symbol
from tests.conftest import alter_after, real_db, window_tables

ASSETS = ("BTC", "ETH", "SOL", "DOGE")
ALL = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
NOW = datetime(2026, 5, 1, tzinfo=UTC)
ORIGIN = pd.Timestamp("2026-02-10 12:00")  # the walk-forward origin of the leakage test (naive UTC)
# raw rows whose information arrives after this are altered; one minute past the origin because the
# SQL layer rounds settlement stamps to the hour (sub-second collection jitter belongs to the hour)
CUT = pd.Timestamp("2026-02-10 12:01", tz="UTC")
EVAL = (pd.Timestamp("2026-02-12"), pd.Timestamp("2026-02-15"))  # short walk-forward for model tests


def _asset(venue: str, symbol: str) -> str | None:
    try:
        return normalize_symbol(venue, symbol).asset
    except SymbolError:
        return None


@pytest.fixture(scope="module")
def raw_tables() -> dict[str, pd.DataFrame]:
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    tables = window_tables(bundled, "2026-01-20", "2026-02-24")
    out = {}
    for name, frame in tables.items():
        assets = [_asset(v, s) for v, s in zip(frame.venue, frame.venue_symbol, strict=True)]
        out[name] = frame[[a in ASSETS for a in assets]].reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory, raw_tables: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    c = real_db(tmp_path_factory.mktemp("forecast_base"), raw_tables)
    yield c
    c.close()


@pytest.fixture(scope="module")
def settle(conn: duckdb.DuckDBPyConnection) -> Panel:
    return next_settlement_panel(conn)


@pytest.fixture(scope="module")
def spread(conn: duckdb.DuckDBPyConnection) -> Panel:
    return spread_24h_panel(conn)


# --------------------------------------------------------------------------------------------- targets


def test_next_settlement_target_is_the_accrual_of_row_h(conn: duckdb.DuckDBPyConnection, settle: Panel) -> None:
    f = settle.frame
    assert set(f.venue_type) == {"1h", "8h"} and len(f) > 5000
    raw = conn.execute(
        "SELECT venue || '|' || asset AS series_id, hour, rate_per_hour AS raw_rate, known_at, value_source, "
        "observed_rate_per_hour, observed_interval_hours, venue_symbol FROM stg_funding_hourly"
    ).df()
    m = f.merge(raw, on=["series_id", "hour"], validate="one_to_one")
    assert len(m) == len(f)
    settled = m.value_source != "missing"
    np.testing.assert_array_equal(m.target[settled], m.raw_rate[settled])
    assert m.target[~settled].isna().all() and (~settled).any()
    assert (m.target_known_at[settled] == m.known_at[settled]).all()
    assert (m.target_known_at[settled] > m.hour[settled]).all()  # a target is never known at its own hour
    np.testing.assert_array_equal(m.current, m.observed_rate_per_hour)
    assert ((m.observed_interval_hours == 1) == (m.venue_type == "1h")).all()
    # a hand check on one real 8h row: the rate paid at the next settlement, spread over its 8 hours
    row = m[(m.venue_type == "8h") & settled].iloc[100]
    venue, asset = row.series_id.split("|")
    rate, interval = conn.execute(
        "SELECT rate, interval_hours FROM funding_rates WHERE venue = ? AND asset = ? AND venue_symbol = ? "
        "AND date_trunc('hour', ts + INTERVAL 30 MINUTE) = ? ORDER BY ts DESC LIMIT 1",
        [venue, asset, row.venue_symbol, row.known_at],
    ).fetchone()
    assert row.target == pytest.approx(rate / interval)
    assert row.known_at - row.hour <= pd.Timedelta(hours=interval)


def test_spread_24h_is_the_mean_of_the_next_24_spread_rows(conn: duckdb.DuckDBPyConnection, spread: Panel) -> None:
    f = spread.frame
    assert len(f) > 5000 and {"1h", "8h", "mixed"} <= set(f.venue_type)
    parts = f.series_id.str.split("|", expand=True)
    assert (parts[1] < parts[2]).all()  # one direction per unordered pair
    sp = conn.execute("SELECT * FROM spread_panel").df()
    rng = np.random.default_rng(0)
    known = f[f.target.notna()]
    for i in rng.choice(len(known), 25, replace=False):
        row = known.iloc[i]
        asset, short, long = row.series_id.split("|")
        win = sp[
            (sp.asset == asset)
            & (sp.short_venue == short)
            & (sp.long_venue == long)
            & (sp.hour >= row.hour)
            & (sp.hour < row.hour + pd.Timedelta(hours=24))
        ]
        assert len(win) == 24 and win.spread_per_hour.notna().all()
        assert row.target == pytest.approx(win.spread_per_hour.mean(), rel=1e-9, abs=1e-15)
        assert row.target_known_at == win.known_at.max()
        now = sp[(sp.asset == asset) & (sp.short_venue == short) & (sp.long_venue == long) & (sp.hour == row.hour)]
        assert row.current == pytest.approx(now.observed_spread_per_hour.iloc[0])
    # the last 23 hours of every series cannot have a complete window
    last = f.groupby("series_id").hour.transform("max")
    assert f.target[f.hour > last - pd.Timedelta(hours=23)].isna().all()


# -------------------------------------------------------------------------------------- walk-forward


class Recorder:
    """Predicts ``current``; remembers every training slice and context it was given."""

    name = "recorder"
    log: ClassVar[list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]] = []

    def fit(self, train: pd.DataFrame, feature_cols: tuple[str, ...]) -> Recorder:
        self.train = train.copy()
        return self

    def predict(self, rows: pd.DataFrame, context: pd.DataFrame) -> pd.DataFrame:
        Recorder.log.append((self.train, rows.copy(), context.copy()))
        return pd.DataFrame({"pred": rows.current, "lo": np.nan, "hi": np.nan}, index=rows.index)


@pytest.mark.parametrize("which", ["settle", "spread"])
def test_walk_forward_never_trains_on_unknown_targets(which: str, request: pytest.FixtureRequest) -> None:
    panel: Panel = request.getfixturevalue(which)
    Recorder.log = []
    out = walk_forward(panel, Recorder, "2026-02-05", "2026-02-08", refit_every=12, min_train_rows=10)
    assert isinstance(Recorder(), Forecaster)
    assert len(Recorder.log) == 6 and out.fit_origin.nunique() == 6
    hidden_somewhere = 0
    for (train, rows, ctx), t0 in zip(Recorder.log, sorted(out.fit_origin.unique()), strict=True):
        assert (train.target_known_at <= t0).all() and (train.hour < t0).all()
        assert (train.hour >= t0 - pd.Timedelta(hours=168)).all() and train.target.notna().all()
        assert rows.hour.min() == t0 and rows.hour.max() == t0 + pd.Timedelta(hours=11)
        assert ctx.hour.max() == rows.hour.max()  # context reaches the block's last origin…
        assert ctx.target_known_at.dropna().le(t0).all()  # …with every target unknown at t0 masked
        assert ctx.target.isna().equals(ctx.target_known_at.isna())
        # the known_at filter is binding: the panel has rows before t0 whose targets come later
        f = panel.frame
        pending = f[(f.hour < t0) & (f.hour >= t0 - pd.Timedelta(hours=168)) & (f.target_known_at > t0)]
        hidden_somewhere += len(pending)
        assert not train.index.isin(pending.index).any()
    assert hidden_somewhere > 0
    np.testing.assert_array_equal(out.pred, out.current)


def test_leak_guard_raises(settle: Panel) -> None:
    train = training_slice(settle.frame, ORIGIN)
    check_no_leak(train, ORIGIN)
    bad = settle.frame[(settle.frame.hour < ORIGIN) & (settle.frame.target_known_at > ORIGIN)]
    with pytest.raises(LeakageError):
        check_no_leak(pd.concat([train, bad]), ORIGIN)


def test_training_slice_and_origin_rows_ignore_the_future(
    tmp_path: Path, raw_tables: dict[str, pd.DataFrame], settle: Panel, spread: Panel
) -> None:
    """The leakage test extended to what a model sees: its training rows (targets included) and the
    features of the rows it predicts at the origin are identical whatever happens after the origin."""
    with real_db(tmp_path / "altered", alter_after(raw_tables, CUT)) as alt:
        for base, other in ((settle, next_settlement_panel(alt)), (spread, spread_24h_panel(alt))):
            a, b = base.frame, other.frame
            ta, tb = training_slice(a, ORIGIN), training_slice(b, ORIGIN)
            assert len(ta) > 500, base.target_name
            pd.testing.assert_frame_equal(ta.reset_index(drop=True), tb.reset_index(drop=True))
            cols = ["series_id", "hour", "current", "venue_type", *base.feature_cols]
            ra, rb = a.loc[a.hour == ORIGIN, cols], b.loc[b.hour == ORIGIN, cols]
            assert len(ra) > 5
            pd.testing.assert_frame_equal(ra.reset_index(drop=True), rb.reset_index(drop=True))
            ca, cb = masked_context(a, ORIGIN), masked_context(b, ORIGIN)
            pd.testing.assert_frame_equal(ca.reset_index(drop=True), cb.reset_index(drop=True))
            # the alteration is visible: targets pending at the origin and later rows differ
            pend = (a.hour < ORIGIN) & (a.target_known_at > ORIGIN)
            ka = a[pend].set_index(["series_id", "hour"]).target
            kb = b.set_index(["series_id", "hour"]).target.reindex(ka.index)
            assert pend.any() and not np.allclose(ka, kb, equal_nan=True)


# -------------------------------------------------------------------------------------------- models


class LastKnownTarget:
    """A toy *sequence* model: the latest target known in ``context`` for the row's series, looking
    backwards from the row's own hour only (the walk-forward contract); ``current`` if none."""

    name = "last_known"

    def fit(self, train: pd.DataFrame, feature_cols: tuple[str, ...]) -> LastKnownTarget:
        return self

    def predict(self, rows: pd.DataFrame, context: pd.DataFrame) -> pd.DataFrame:
        ctx = context[context.target.notna()].sort_values("hour")[["series_id", "hour", "target"]]
        r = rows[["series_id", "hour"]].reset_index().sort_values("hour")
        m = pd.merge_asof(r, ctx, on="hour", by="series_id", direction="backward").set_index("index")
        pred = m.target.reindex(rows.index).fillna(rows.current)
        return pd.DataFrame({"pred": pred, "lo": np.nan, "hi": np.nan}, index=rows.index)


@pytest.fixture(scope="module")
def model_runs(settle: Panel, spread: Panel) -> dict[str, pd.DataFrame]:
    factories = {
        "persistence": Persistence,
        "ewma": Ewma,
        "lightgbm": lambda: LightGbm(n_estimators=60),
        "ensemble": lambda: Ensemble([Persistence(), Ewma(), LightGbm(n_estimators=60), LastKnownTarget()]),
    }
    return {f"{p.target_name}/{k}": walk_forward(p, f, *EVAL) for p in (settle, spread) for k, f in factories.items()}


def test_persistence_metrics_equal_hand_computation(model_runs: dict[str, pd.DataFrame]) -> None:
    for target in ("next_settlement", "spread_24h"):
        out = model_runs[f"{target}/persistence"]
        ok = out[out.target.notna()]
        assert len(ok) > 500
        scores = evaluate(out).set_index(["venue_type", "metric"]).value
        assert scores["all", "mae"] == pytest.approx(np.mean(np.abs(ok.target - ok.current)))
        assert scores["all", "rmse"] == pytest.approx(np.sqrt(np.mean((ok.target - ok.current) ** 2)))
        assert scores["all", "skill"] == pytest.approx(0.0) and scores["all", "direction"] == 0.0
        assert scores["all", "n"] == len(ok)


def test_models_are_sane_against_baselines(model_runs: dict[str, pd.DataFrame]) -> None:
    scores = evaluate(pd.concat(model_runs.values()))
    board = leaderboard(scores)
    allrows = board[board.venue_type == "all"].set_index(["target", "model"])
    for target in ("next_settlement", "spread_24h"):
        mae = allrows.loc[target].mae
        zero = model_runs[f"{target}/persistence"].pipe(lambda o: o[o.target.notna()].target.abs().mean())
        for model in ("ewma", "lightgbm", "ensemble"):
            assert mae[model] < zero, (target, model)  # better than forecasting no funding at all
            assert mae[model] < 1.5 * mae["persistence"], (target, model)
            cov = allrows.loc[(target, model), "coverage"]
            assert 0.4 < cov < 0.99, (target, model, cov)
        # never much worse than its best member (a 3-day window: weights learnt on 42 h are noisy)
        assert mae["ensemble"] <= 1.25 * min(mae) and mae["ensemble"] <= max(mae), target
        assert allrows.loc[(target, "lightgbm"), "direction"] > 0.5
        out = model_runs[f"{target}/lightgbm"]
        assert (out.lo <= out.pred).all() and (out.pred <= out.hi).all()


def test_ensemble_learns_convex_weights_on_validation(settle: Panel) -> None:
    train = training_slice(settle.frame, ORIGIN)

    class Oracle(Persistence):  # knows the target: only validation can reveal it's the best member
        name = "oracle"

        def _point(self, rows: pd.DataFrame) -> pd.Series:
            return rows["target"].fillna(rows["current"])

    ens = Ensemble([Persistence(), Oracle(), LastKnownTarget()]).fit(train, settle.feature_cols)
    w = ens.weights_by_member()
    assert ens.weights.min() >= 0 and ens.weights.sum() == pytest.approx(1.0)
    assert w["oracle"] > 0.99
    assert ens.validation_origin is not None and ens.validation_origin > train.hour.min()
    rows = settle.frame[settle.frame.hour == ORIGIN]
    out = ens.predict(rows, masked_context(settle.frame, ORIGIN))
    assert list(out.columns) == list(PRED_COLUMNS) and out.index.equals(rows.index)


def test_walk_forward_is_deterministic(settle: Panel, model_runs: dict[str, pd.DataFrame]) -> None:
    for name in ("lightgbm", "ensemble"):
        factory = (
            (lambda: LightGbm(n_estimators=60))
            if name == "lightgbm"
            else (lambda: Ensemble([Persistence(), Ewma(), LightGbm(n_estimators=60), LastKnownTarget()]))
        )
        again = walk_forward(settle, factory, *EVAL)
        pd.testing.assert_frame_equal(again, model_runs[f"next_settlement/{name}"])


# ------------------------------------------------------------------------------------------- metrics


def test_metrics_on_a_hand_made_frame() -> None:
    frame = pd.DataFrame(
        {
            "model": "m",
            "target_name": "t",
            "venue_type": ["1h", "1h", "8h", "8h"],
            "current": [0.0, 1.0, 2.0, 3.0],
            "target": [1.0, 1.0, 1.0, 5.0],
            "pred": [2.0, 0.0, 2.5, np.nan],  # the NaN row is not scored
            "lo": [0.5, -1.0, 2.2, 0.0],
            "hi": [2.5, 0.5, 3.0, 9.0],
        }
    )
    s = evaluate(frame).set_index(["venue_type", "metric"]).value
    # scored rows: (cur 0, y 1, p 2), (cur 1, y 1, p 0), (cur 2, y 1, p 2.5)
    assert s["all", "n"] == 3
    assert s["all", "mae"] == pytest.approx((1 + 1 + 1.5) / 3)
    assert s["all", "rmse"] == pytest.approx(np.sqrt((1 + 1 + 2.25) / 3))
    # moved rows: row 1 (up, predicted up: hit) and row 3 (down, predicted up: miss); row 2 did not move
    assert s["all", "direction"] == pytest.approx(0.5)
    assert s["all", "coverage"] == pytest.approx(1 / 3)  # only row 1 inside its band
    assert s["all", "skill"] == pytest.approx(1 - (3.5 / 3) / (2 / 3))
    assert s["1h", "mae"] == pytest.approx(1.0) and s["1h", "skill"] == pytest.approx(-1.0)
    assert s["8h", "n"] == 1 and s["8h", "direction"] == 0.0 and s["8h", "coverage"] == 0.0
    board = leaderboard(evaluate(frame))
    metrics = ["mae", "rmse", "direction", "coverage", "skill", "n"]
    assert list(board.columns) == ["target", "venue_type", "model", *metrics]
    assert len(board) == 3
