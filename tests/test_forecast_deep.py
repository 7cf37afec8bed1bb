"""LSTM / Transformer forecasters on a small real panel: fit, predict, causality, determinism,
learning, persistence and the degenerate inputs a walk-forward will feed them.

The panel is built here from the bundled funding settlements (always shipped with the package),
with the same conventions as the SQL marts: ``current`` is the latest settled rate per hour at
``hour``, ``target`` the rate accruing in the hour starting at ``hour`` (known at its settlement).
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fundarb_core.forecast.base import PRED_COLUMNS, Forecaster
from fundarb_core.forecast.deep import LstmForecaster, SequenceForecaster, TransformerForecaster
from fundarb_core.sources.replay import BUNDLED_DATA_DIR

SERIES = {("hyperliquid", "BTC"): "BTC", ("hyperliquid", "ETH"): "ETH", ("hyperliquid", "SOL"): "SOL",
          ("binance", "BTCUSDT"): "BTC", ("binance", "ETHUSDT"): "ETH"}
LO, HI = pd.Timestamp("2026-02-01"), pd.Timestamp("2026-02-22")
FEATURES = ("rate_lag_1h", "rate_lag_8h", "rate_lag_24h", "rate_mean_24h", "rate_mean_168h", "rate_std_24h",
            "rate_z_168h", "observed_age_hours", "hours_to_next_settlement", "ret_24h")
# small and fast; one thread because nets this small gain nothing from more, and on shared CI cores
# intra-op threads that spin-wait behind other processes make a fit up to 10x slower
SMALL = {"seq_len": 24, "hidden": 16, "epochs": 3, "batch_size": 128, "max_train_windows": 1500,
         "max_val_windows": 400, "patience": 2, "num_threads": 1}


def build_panel(series: dict[tuple[str, str], str] = SERIES, lo: pd.Timestamp = LO,
                hi: pd.Timestamp = HI) -> pd.DataFrame:
    """A panel of real settlements on an hourly grid (a small, self-contained stand-in for the marts)."""
    raw = pd.read_parquet(BUNDLED_DATA_DIR / "market" / "funding.parquet")
    raw["settled"] = (raw["ts"].dt.tz_convert("UTC").dt.tz_localize(None) + pd.Timedelta(minutes=30)).dt.floor("h")
    frames = []
    for (venue, symbol), asset in series.items():
        s = raw[(raw.venue == venue) & (raw.venue_symbol == symbol)].sort_values("settled")
        s = s.drop_duplicates("settled", keep="last").set_index("settled")
        per_hour = s["rate"] / s["interval_hours"]
        grid = pd.date_range(lo - pd.Timedelta(days=8), hi, freq="h", inclusive="left")
        # observed at instant h: the latest settlement at or before h
        current = per_hour.reindex(grid, method="ffill")
        settled_at = pd.Series(s.index, index=s.index).reindex(grid, method="ffill")
        # accruing in [h, h+1): the first settlement strictly after h
        nxt = pd.Series(s.index, index=s.index).reindex(grid + pd.Timedelta(hours=1), method="bfill")
        target = per_hour.reindex(nxt.to_numpy())
        mark = s["mark_price"].reindex(grid, method="ffill")
        f = pd.DataFrame({"hour": grid, "current": current.to_numpy()})
        f["target"] = target.to_numpy()
        f["target_known_at"] = nxt.to_numpy()
        for lag in (1, 8, 24):
            f[f"rate_lag_{lag}h"] = f["current"].shift(lag)
        f["rate_mean_24h"] = f["current"].rolling(24, min_periods=1).mean()
        f["rate_mean_168h"] = f["current"].rolling(168, min_periods=24).mean()
        f["rate_std_24h"] = f["current"].rolling(24, min_periods=2).std()
        f["rate_z_168h"] = (f["current"] - f["rate_mean_168h"]) / f["current"].rolling(168, min_periods=24).std()
        f["observed_age_hours"] = (grid - settled_at.to_numpy()) / pd.Timedelta(hours=1)
        interval = float(s["interval_hours"].median())
        f["hours_to_next_settlement"] = (interval - f["observed_age_hours"]).clip(lower=0)
        f["ret_24h"] = np.log(mark / mark.shift(24)).to_numpy()
        f["series_id"] = f"{venue}|{asset}"
        f["venue_type"] = "1h" if interval == 1 else "8h"
        frames.append(f[(f.hour >= lo) & f.target.notna()])
    return pd.concat(frames, ignore_index=True)[["series_id", "hour", *FEATURES, "current", "target",
                                                   "target_known_at", "venue_type"]]


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return build_panel()


@pytest.fixture(scope="module")
def split(panel: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Train on rows whose target is known by the origin, forecast the next 24 hours."""
    origin = HI - pd.Timedelta(days=2)
    train = panel[panel.target_known_at <= origin]
    block = panel[(panel.hour > origin) & (panel.hour <= origin + pd.Timedelta(hours=24))]
    return train, block, origin


def _context(panel: pd.DataFrame, upto: pd.Timestamp) -> pd.DataFrame:
    ctx = panel[panel.hour <= upto].copy()
    ctx.loc[ctx.target_known_at > upto, "target"] = np.nan
    return ctx


MODELS = {"lstm": LstmForecaster, "transformer": TransformerForecaster}


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request: pytest.FixtureRequest, split: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]
           ) -> SequenceForecaster:
    train, _, _ = split
    model = MODELS[request.param](**SMALL)
    return model.fit(train, FEATURES)


def test_fit_and_predict_on_real_panel(fitted: SequenceForecaster, panel: pd.DataFrame,
                                       split: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]) -> None:
    _, block, _ = split
    assert isinstance(fitted, Forecaster)
    assert not fitted.fallback and fitted.module is not None
    assert fitted.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(fitted.epoch_seconds) == len(fitted.history) >= 1
    assert all(s > 0 for s in fitted.epoch_seconds)
    assert fitted.n_val_windows > 0 and 0 <= fitted.val_coverage <= 1
    # the walk-forward's block call: all rows of the block at once, context up to the last origin
    out = fitted.predict(block, _context(panel, block.hour.max()))
    assert list(out.columns) == list(PRED_COLUMNS)
    assert out.index.equals(block.index)
    assert np.isfinite(out.to_numpy()).all()
    assert (out.lo <= out.pred).all() and (out.pred <= out.hi).all()
    assert (out.hi - out.lo).mean() > 0  # a real interval, not a point
    coverage = ((block.target >= out.lo) & (block.target <= out.hi)).mean()
    assert coverage > 0.4  # 80 % nominal; loose, a 24 h block of 5 series is a small sample


def test_causal_later_context_changes_nothing(fitted: SequenceForecaster, panel: pd.DataFrame,
                                              split: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]) -> None:
    _, block, _ = split
    h = block.hour.min() + pd.Timedelta(hours=5)
    rows = block[block.hour == h]
    ctx = _context(panel, block.hour.max())
    base = fitted.predict(rows, ctx)
    tampered = ctx.copy()
    later = tampered.hour > h
    rng = np.random.default_rng(1)
    for col in (*FEATURES, "current", "target"):
        tampered.loc[later, col] = rng.normal(0, 1, later.sum())
    extra = tampered[later].copy()  # and rows beyond the context's end
    extra["hour"] = extra["hour"] + pd.Timedelta(days=30)
    tampered = pd.concat([tampered, extra])
    pd.testing.assert_frame_equal(base, fitted.predict(rows, tampered))
    # the same rows predicted alone, inside a block, or with a shuffled context agree
    alone = fitted.predict(rows, ctx[ctx.hour <= h])
    pd.testing.assert_frame_equal(base, alone)
    in_block = fitted.predict(block, ctx.sample(frac=1.0, random_state=0)).loc[rows.index]
    pd.testing.assert_frame_equal(base, in_block, check_exact=False, rtol=1e-5, atol=1e-9)
    # and earlier history does matter (the model is a sequence model, not a row model)
    earlier = ctx.copy()
    touch = earlier.hour.between(h - pd.Timedelta(hours=6), h - pd.Timedelta(hours=1))
    earlier.loc[touch, list(FEATURES)] = earlier.loc[touch, list(FEATURES)] * 5
    assert not np.allclose(base.pred, fitted.predict(rows, earlier).pred)


def test_deterministic_with_same_seed(fitted: SequenceForecaster, panel: pd.DataFrame,
                                      split: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]) -> None:
    train, block, _ = split
    ctx = _context(panel, block.hour.max())
    torch.manual_seed(1234)
    before = torch.rand(1)
    again = type(fitted)(**SMALL).fit(train, FEATURES)
    pd.testing.assert_frame_equal(fitted.predict(block, ctx), again.predict(block, ctx), check_exact=True)
    torch.manual_seed(1234)
    assert torch.equal(torch.rand(1), before)  # fitting forked the global RNG, did not consume it
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's mode is restored
    other = type(fitted)(**{**SMALL, "seed": 7}).fit(train, FEATURES)
    assert not np.allclose(fitted.predict(block, ctx).pred, other.predict(block, ctx).pred)


def test_learns_something_on_training_windows(split: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]) -> None:
    """In-sample, the net must beat 'no change' clearly: it can fit a real signal (mean reversion
    to the settled level, the 8 h settlement cycle)."""
    train, _, _ = split
    for cls in (LstmForecaster, TransformerForecaster):
        params = {**SMALL, "epochs": 6, "lr": 5e-3, "val_frac": 0.0, "max_train_windows": 2000, "dropout": 0.0}
        model = cls(**params).fit(train, FEATURES)
        rows = train[train.hour >= train.hour.min() + pd.Timedelta(hours=48)]
        out = model.predict(rows, train)
        mse_model = float(np.mean((out.pred - rows.target) ** 2))
        mse_zero = float(np.mean((rows.current - rows.target) ** 2))
        assert mse_model < 0.9 * mse_zero, (cls.name, mse_model, mse_zero)
        assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]


def test_save_load_and_pickle_round_trip(fitted: SequenceForecaster, panel: pd.DataFrame, tmp_path: Path,
                                         split: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]) -> None:
    _, block, _ = split
    ctx = _context(panel, block.hour.max())
    expected = fitted.predict(block, ctx)
    path = fitted.save(tmp_path / f"{fitted.name}.pt")
    loaded = SequenceForecaster.load(path)
    assert type(loaded) is type(fitted) and loaded.params == fitted.params
    assert loaded.epoch_seconds == fitted.epoch_seconds
    pd.testing.assert_frame_equal(expected, loaded.predict(block, ctx), check_exact=True)
    pd.testing.assert_frame_equal(expected, pickle.loads(pickle.dumps(fitted)).predict(block, ctx),
                                  check_exact=True)
    with pytest.raises(TypeError):
        (TransformerForecaster if isinstance(fitted, LstmForecaster) else LstmForecaster).load(path)


def test_short_series_nan_features_and_tiny_training_sets(panel: pd.DataFrame) -> None:
    t0 = time.perf_counter()
    start = panel.hour.min()
    # a series with 10 rows (< seq_len), one feature always NaN, plus ragged NaNs elsewhere
    short = panel[(panel.series_id == "binance|BTC") & (panel.hour < start + pd.Timedelta(hours=10))].copy()
    short["series_id"] = "new|BTC"
    rest = panel[(panel.series_id != "binance|BTC") & (panel.hour < start + pd.Timedelta(days=5))].copy()
    rest.loc[rest.index[::3], "rate_lag_8h"] = np.nan
    data = pd.concat([rest, short])
    data["ret_24h"] = np.nan
    model = LstmForecaster(**{**SMALL, "epochs": 1}).fit(data, FEATURES)
    assert not model.fallback
    out = model.predict(short, data)
    assert np.isfinite(out.to_numpy()).all()
    # a Transformer whose window is not a whole number of patches, on the same ragged data
    tf = TransformerForecaster(**{**SMALL, "epochs": 1, "seq_len": 10, "patch_len": 3}).fit(data, FEATURES)
    assert not tf.fallback and np.isfinite(tf.predict(short, data).to_numpy()).all()
    # tiny training sets: fallback to persistence + median change, never a crash
    for n in (0, 1, 5):
        tiny = short.head(n)
        m = TransformerForecaster(**SMALL).fit(tiny, FEATURES)
        assert m.fallback and m.module is None
        pred = m.predict(short, short)
        assert pred.index.equals(short.index) and np.isfinite(pred.pred).all()
        expected = float(np.median(tiny.target - tiny.current)) if n else 0.0
        np.testing.assert_allclose(pred.pred - short.current, expected)
    # NaN current in a row to predict: the forecast still comes out finite
    row = short.tail(1).copy()
    row["current"] = np.nan
    assert np.isfinite(model.predict(row, data).to_numpy()).all()
    assert model.predict(short.head(0), data).empty
    assert time.perf_counter() - t0 < 15
