"""Leverage-safety backtest (spec §8 (1)) on ~45 days of real bundled rows (BTC, SOL; 2026-01-05 → 2026-03-01)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from types import MappingProxyType

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.leverage_safety import (
    DEFAULT_REBALANCE_BAND,
    SafetyRun,
    finest_series,
    hourly_spread,
    leverage_safety,
    load_bars,
    safety_table,
    simulate_path,
    window_inputs,
)
from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.leverage import liquidation_distance, sigma_distance_leverage
from fundarb_core.symbols import normalize_symbol
from fundarb_core.venues import VENUES, FeeSchedule
from tests.conftest import alter_after, real_db, window_tables

ASSETS = ("BTC", "SOL")
KS = (3.0, 4.0, 5.0, 6.0)
C0 = 10_000.0
END = pd.Timestamp("2026-03-01")  # close of the last bar in the test DB
ZERO = FeeSchedule(maker=0.0, taker=0.0)
ZERO_FEES = KeeperConfig(fee_overrides=MappingProxyType(dict.fromkeys(VENUES, ZERO)), default_fees=ZERO)


def _tables() -> dict[str, pd.DataFrame]:
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    tables = window_tables(bundled, "2026-01-05", "2026-03-01")
    out = {}
    for name, frame in tables.items():
        pairs = frame[["venue", "venue_symbol"]].drop_duplicates()
        keep = {(v, s) for v, s in pairs.itertuples(index=False) if normalize_symbol(v, s).asset in ASSETS}
        mask = [(v, s) in keep for v, s in zip(frame["venue"], frame["venue_symbol"], strict=True)]
        out[name] = frame[mask].reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return _tables()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, tables: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    return real_db(tmp_path_factory.mktemp("lev_db"), tables)


@pytest.fixture(scope="module")
def runs(db: duckdb.DuckDBPyConnection) -> list[SafetyRun]:
    return leverage_safety(db, ks=KS)  # the default rebalance band (0.10)


@pytest.fixture(scope="module")
def runs0(db: duckdb.DuckDBPyConnection) -> list[SafetyRun]:
    return leverage_safety(db, ks=KS, rebalance_band=0.0)  # re-levered to the target at every bar


def _run(runs: list[SafetyRun], asset: str, k: float) -> SafetyRun:
    (r,) = [r for r in runs if r.asset == asset and r.k == k]
    return r


def _inputs(db: duckdb.DuckDBPyConnection, run: SafetyRun, bars: pd.DataFrame | None = None) -> pd.DataFrame:
    """The window's real inputs, built with the module's own loaders (bars may be replaced by a test)."""
    series = finest_series(db, run.asset, run.start)
    assert series is not None
    bar = pd.Timedelta(minutes=series.bar_minutes)
    if bars is None:
        bars = load_bars(db, series, run.start - pd.Timedelta(hours=168) - bar, run.end)
    spread = hourly_spread(db, run.asset, run.short_venue, run.long_venue, run.start - pd.Timedelta(hours=1), run.end)
    return window_inputs(bars, spread, start=run.start, end=run.end, bar_minutes=series.bar_minutes)


def _closes(db: duckdb.DuckDBPyConnection, asset: str) -> pd.Series:
    frame = db.execute(
        "SELECT ts, close FROM candles WHERE venue = 'binance' AND asset = ? AND timeframe = '1h' ORDER BY ts", [asset]
    ).df()
    return pd.Series(frame["close"].to_numpy(), index=pd.DatetimeIndex(frame["ts"]))


def _every_bar_path(
    inputs: pd.DataFrame, *, k: float, short_venue: str, long_venue: str, config: KeeperConfig, capital: float = C0
) -> pd.DataFrame:
    """The rule before the rebalance band, kept verbatim as the reference: re-lever to the target at every bar."""
    fs, fl = config.fees(short_venue), config.fees(long_venue)
    entry_rate, rebalance_rate = fs.maker + fl.maker, fs.taker + fl.taker
    o = inputs["open"].to_numpy(dtype="float64")
    up = inputs["high"].to_numpy(dtype="float64") / o - 1.0
    down = 1.0 - inputs["low"].to_numpy(dtype="float64") / o
    lev = np.asarray(sigma_distance_leverage(k, inputs["sigma_daily"].to_numpy(dtype="float64"), config), "float64")
    dist = np.asarray(liquidation_distance(lev, config.maintenance_margin), dtype="float64")
    liq_short, liq_long = up >= dist, down >= dist
    rate = inputs["funding_rate"].to_numpy(dtype="float64")
    n = len(o)
    equity, notional, fees, funding = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    liquidated = np.zeros(n, dtype=bool)
    e, q = float(capital), 0.0
    for i in range(n):
        big_n = e / 2.0 * lev[i]
        fee = entry_rate * big_n if q == 0.0 else rebalance_rate * abs(big_n - q * o[i])
        e_open = e - fee
        if liq_short[i] or liq_long[i]:
            d = dist[i]
            exits = []
            if liq_short[i]:
                exits.append(fl.taker * big_n * (1.0 + d))
            if liq_long[i]:
                exits.append(fs.taker * big_n * (1.0 - d))
            exit_fee = max(exits)
            e_close = e_open / 2.0 + big_n * d - exit_fee
            fee += exit_fee
            liquidated[i] = True
            q = 0.0
        else:
            funding[i] = rate[i] * big_n
            e_close = e_open + funding[i]
            q = big_n / o[i]
        e = max(e_close, 0.0)
        if e == 0.0:
            q = 0.0
        equity[i], notional[i], fees[i] = e, big_n, fee
    cols = {"leverage": lev, "liq_distance": dist, "notional": notional, "fees_usd": fees, "funding_usd": funding}
    return pd.DataFrame({**cols, "liquidated": liquidated, "equity": equity}, index=inputs.index)


def test_sweep_and_leverage_by_hand(db: duckdb.DuckDBPyConnection, runs: list[SafetyRun]) -> None:
    assert {(r.asset, r.k) for r in runs} == {(a, k) for a in ASSETS for k in KS}
    table = safety_table(runs)
    assert list(table[["asset", "k"]].itertuples(index=False, name=None)) == [(a, k) for a in ASSETS for k in KS]
    rng = np.random.default_rng(3)
    for asset in ASSETS:
        avg = [_run(runs, asset, k).avg_leverage for k in KS]
        assert all(a >= b for a, b in pairwise(avg)), avg
        assert avg[-1] < avg[0] - 0.5  # the sweep bites: K = 6 is well below K = 3
        closes = _closes(db, asset)
        vol = db.execute("SELECT hour, sigma_daily FROM volatility WHERE venue = 'binance' AND asset = ?", [asset]).df()
        vol = pd.Series(vol["sigma_daily"].to_numpy(), index=pd.DatetimeIndex(vol["hour"]))
        for k in KS:
            run = _run(runs, asset, k)
            assert (run.venue, run.timeframe, run.bars) == ("binance", "1h", 720)
            assert run.start == END - pd.Timedelta(days=30) and run.end == END
            assert run.avg_leverage == pytest.approx(run.leverage.mean(), rel=1e-12)
            assert run.leverage.index.equals(run.equity.index)
            idx = run.leverage.index
            picks = [0, len(idx) - 1, *rng.choice(len(idx), 6, replace=False)]
            for t in idx[picks]:
                # the 7 days of closes before the bar: closes at t−168 h … t (bars opening t−169 h … t−1 h)
                window = closes[(closes.index >= t - pd.Timedelta(hours=169)) & (closes.index < t)]
                assert len(window) == 169
                sigma = np.std(np.diff(np.log(window.to_numpy())), ddof=1) * np.sqrt(24.0)
                assert vol[t] == pytest.approx(sigma, rel=1e-9)  # the SQL volatility model agrees
                want = float(sigma_distance_leverage(k, sigma, KeeperConfig()))
                assert run.target_leverage[t] == pytest.approx(want, rel=1e-9)
        inner = _run(runs, asset, 6.0).target_leverage
        assert ((inner > 1.0) & (inner < 10.0)).mean() > 0.5  # not just the clip bounds


def test_liquidation_rule(db: duckdb.DuckDBPyConnection, runs0: list[SafetyRun]) -> None:
    """The liquidation mechanics, on the every-bar re-levered path (band 0: held leverage = target)."""
    run = _run(runs0, "BTC", 4.0)
    inputs = _inputs(db, run)
    cfg = KeeperConfig()
    args = {"k": 4.0, "short_venue": run.short_venue, "long_venue": run.long_venue, "capital": C0, "config": cfg}
    args = {**args, "rebalance_band": 0.0}
    base = simulate_path(inputs, **args)
    pd.testing.assert_series_equal(base["equity"], run.equity, check_names=False)  # the same path as the sweep
    assert not base["liquidated"].any()
    j = 400
    o, lev = inputs["open"].iloc[j], base["leverage"].iloc[j]
    d = 1.0 / lev - cfg.maintenance_margin
    assert 1.0 - inputs["low"].iloc[j] / o < d
    e_prev, n_j = base["equity"].iloc[j - 1], base["notional"].iloc[j]
    assert n_j == pytest.approx(e_prev / 2.0 * lev, rel=1e-12)
    fs, fl = cfg.fees(run.short_venue), cfg.fees(run.long_venue)
    q_prev = base["notional"].iloc[j - 1] / inputs["open"].iloc[j - 1]
    fee_j = (fs.taker + fl.taker) * abs(n_j - q_prev * o)

    # just below the threshold (a real bar whose high is scaled up): nothing happens, the path is unchanged
    below = inputs.copy()
    below.iloc[j, below.columns.get_loc("high")] = o * (1.0 + d - 1e-7)
    pd.testing.assert_frame_equal(simulate_path(below, **args).drop(columns="high"), base.drop(columns="high"))

    # the short leg crosses: its venue's margin is lost, the long leg gains N·d and exits at taker
    up = inputs.copy()
    up.iloc[j, up.columns.get_loc("high")] = o * (1.0 + d + 1e-7)
    path = simulate_path(up, **args)
    assert path["liquidated"].sum() == 1 and bool(path["liquidated"].iloc[j])
    want = (e_prev - fee_j) / 2.0 + n_j * d - fl.taker * n_j * (1.0 + d)
    assert path["equity"].iloc[j] == pytest.approx(want, rel=1e-12)
    assert e_prev - path["equity"].iloc[j] == pytest.approx(
        cfg.maintenance_margin * n_j + fee_j / 2 + fl.taker * n_j * (1 + d)
    )
    assert path["funding_usd"].iloc[j] == 0.0
    n_next = path["equity"].iloc[j] / 2.0 * path["leverage"].iloc[j + 1]  # re-deployed next bar at maker
    assert path["fees_usd"].iloc[j + 1] == pytest.approx((fs.maker + fl.maker) * n_next, rel=1e-12)
    pd.testing.assert_series_equal(path["equity"].iloc[:j], base["equity"].iloc[:j])

    # the long leg crosses, zero fees: the capital loses exactly maintenance margin × notional
    down = inputs.copy()
    down.iloc[j, down.columns.get_loc("low")] = o * (1.0 - d - 1e-7)
    free = simulate_path(down, **{**args, "config": ZERO_FEES})
    free_base = simulate_path(inputs, **{**args, "config": ZERO_FEES})
    assert free["liquidated"].sum() == 1 and bool(free["liquidated"].iloc[j])
    e0 = free_base["equity"].iloc[j - 1]
    assert free["equity"].iloc[j] == pytest.approx(e0 - cfg.maintenance_margin * e0 / 2.0 * lev, rel=1e-12)


def test_real_liquidation_counted(db: duckdb.DuckDBPyConnection) -> None:
    """K = 1 keeps L at 10 (d = 9.5 %): SOL's real 2026-02-06 00:00 bar fell 14 % — it must be counted."""
    (run,) = leverage_safety(db, ks=(1.0,), assets=["SOL"])
    inputs = _inputs(db, run)
    d = 1.0 / run.leverage - KeeperConfig().maintenance_margin
    worst = np.maximum(inputs["high"] / inputs["open"] - 1.0, 1.0 - inputs["low"] / inputs["open"])
    crossed = worst.index[(worst >= d).to_numpy()]
    assert pd.Timestamp("2026-02-06 00:00") in crossed
    assert run.liquidated and run.liquidations == len(crossed)
    assert run.max_drawdown > 0.02  # ≈ mm × N = 0.5 % × 5 × capital, plus fees
    assert run.final_capital < _run(leverage_safety(db, ks=(3.0,), assets=["SOL"]), "SOL", 3.0).final_capital


def test_funding_only_path(db: duckdb.DuckDBPyConnection, runs: list[SafetyRun]) -> None:
    for asset in ASSETS:
        (run,) = leverage_safety(db, ks=(5.0,), assets=[asset], config=ZERO_FEES)
        assert run.liquidations == 0 and run.fees_usd == 0.0
        # the pair: highest mean spread over the 30 days before the window, from rows known by then
        sel = db.execute(
            "SELECT short_venue, long_venue, avg(spread_per_hour) m, count(*) n FROM spread_panel WHERE asset = ? "
            "AND hour >= ? AND hour < ? AND known_at <= ? AND spread_per_hour IS NOT NULL GROUP BY 1, 2",
            [asset, run.start - pd.Timedelta(days=30), run.start, run.start],
        ).df()
        best = sel[sel["n"] >= 360].sort_values("m").iloc[-1]
        assert (run.short_venue, run.long_venue) == (best["short_venue"], best["long_venue"])
        spread = db.execute(
            "SELECT hour, spread_per_hour FROM spread_panel WHERE asset = ? AND short_venue = ? AND long_venue = ?",
            [asset, run.short_venue, run.long_venue],
        ).df()
        spread = pd.Series(spread["spread_per_hour"].to_numpy(), index=pd.DatetimeIndex(spread["hour"]))
        s = spread.reindex(run.equity.index).fillna(0.0).to_numpy()  # 1 h bars: the bar earns its hour
        prev = np.concatenate([[C0], run.equity.to_numpy()[:-1]])
        notional = prev / 2.0 * run.leverage.to_numpy()
        np.testing.assert_allclose(run.notional.to_numpy(), notional, rtol=1e-12)
        accrued = float(np.sum(s * notional))
        assert abs(accrued) > 1.0
        assert run.final_capital - C0 == pytest.approx(accrued, rel=1e-9)
        assert run.funding_usd == pytest.approx(accrued, rel=1e-9)

    # sub-hour bars get their share of the hour: four 15 m bars each earn a quarter of the hour's spread
    run = _run(runs, "BTC", 5.0)
    sp = hourly_spread(db, "BTC", run.short_venue, run.long_venue, run.start, run.start + pd.Timedelta(days=1))
    ts = pd.date_range(run.start, periods=96, freq="15min")
    q = pd.DataFrame({"ts": ts, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0})
    got = window_inputs(q, sp, start=run.start, end=run.start + pd.Timedelta(days=1), bar_minutes=15)
    np.testing.assert_allclose(got["funding_rate"], sp.reindex(ts.floor("h")).fillna(0).to_numpy() / 4, atol=1e-18)
    # a missing bar's funding is not lost: the position is held across the gap, the next bar earns it
    gap = window_inputs(q.drop(index=[5, 6]), sp, start=run.start, end=run.start + pd.Timedelta(days=1), bar_minutes=15)
    assert gap["funding_rate"].sum() == pytest.approx(sp.reindex(ts.floor("h").unique()).fillna(0).sum(), rel=1e-12)
    assert gap["funding_rate"].iloc[5] == pytest.approx(3 * got["funding_rate"].iloc[7], rel=1e-12)


def test_no_look_ahead(tmp_path: Path, db: duckdb.DuckDBPyConnection, tables: dict[str, pd.DataFrame]) -> None:
    run = _run(leverage_safety(db, ks=(4.0,), assets=["SOL"]), "SOL", 4.0)
    cut = run.equity.index[360]
    # bars opening at or after `cut` (closes known after it) are scaled by 1.37 and 20 % of them dropped
    altered = alter_after(tables, cut.tz_localize("UTC"))
    changed = real_db(tmp_path, {**tables, "candles": altered["candles"]})
    (other,) = leverage_safety(changed, ks=(4.0,), assets=["SOL"], end=END)
    assert (other.short_venue, other.long_venue, other.start) == (run.short_venue, run.long_venue, run.start)
    before = run.equity.index < cut
    pd.testing.assert_series_equal(other.equity[other.equity.index < cut], run.equity[before])
    # L at a bar uses only closes before it: the first changed bar's target L is unchanged too (if it survived)
    kept = other.target_leverage.index[other.target_leverage.index <= cut]
    assert len(kept) >= 360
    pd.testing.assert_series_equal(other.target_leverage[kept], run.target_leverage[kept])
    pd.testing.assert_series_equal(other.leverage[other.leverage.index < cut], run.leverage[before])
    later = run.equity.index[run.equity.index > cut].intersection(other.equity.index)
    assert not np.allclose(other.equity[later], run.equity[later], rtol=1e-12, atol=0)  # the change did arrive

    # the same on the in-memory path: any change to bars from `cut` on leaves every earlier bar's equity alone
    inputs = _inputs(db, run)
    series = finest_series(db, "SOL", run.start)
    assert series is not None
    bars = load_bars(db, series, run.start - pd.Timedelta(hours=169), run.end)
    moved = bars.copy()
    after = moved["ts"] >= cut
    moved.loc[after, ["open", "high", "low", "close"]] *= np.linspace(0.8, 1.2, int(after.sum()))[:, None]
    args = {"k": 4.0, "short_venue": run.short_venue, "long_venue": run.long_venue}
    base = simulate_path(inputs, **args)
    new = simulate_path(_inputs(db, run, moved), **args)
    upto = base.index < cut
    pd.testing.assert_series_equal(new["equity"][upto], base["equity"][upto])
    upto_cut = base.index <= cut
    pd.testing.assert_series_equal(new["target_leverage"][upto_cut], base["target_leverage"][upto_cut])
    assert not np.allclose(new["equity"][~upto], base["equity"][~upto], rtol=1e-12, atol=0)


def test_band_zero_is_the_every_bar_rule(
    db: duckdb.DuckDBPyConnection, runs: list[SafetyRun], runs0: list[SafetyRun]
) -> None:
    """Band 0 reproduces the every-bar re-levering rule exactly, liquidations included."""
    cfg = KeeperConfig()
    cols = ["leverage", "liq_distance", "notional", "fees_usd", "funding_usd", "liquidated", "equity"]
    for asset in ASSETS:
        run = _run(runs0, asset, 3.0)
        inputs = _inputs(db, run)
        o = inputs["open"].to_numpy()
        shocked = inputs.copy()  # real bars pushed through both thresholds: liquidations and re-entries
        shocked.iloc[100, shocked.columns.get_loc("high")] = o[100] * 1.5
        shocked.iloc[300, shocked.columns.get_loc("low")] = o[300] * 0.5
        shocked.iloc[500, [shocked.columns.get_loc("high"), shocked.columns.get_loc("low")]] = [o[500] * 1.5, 0.0]
        for frame, ks in ((inputs, (1.0, *KS)), (shocked, (4.0,))):
            for k in ks:
                args = {"k": k, "short_venue": run.short_venue, "long_venue": run.long_venue, "config": cfg}
                got = simulate_path(frame, **args, capital=C0, rebalance_band=0.0)
                want = _every_bar_path(frame, **args)
                pd.testing.assert_frame_equal(got[cols], want[cols], check_exact=True)
                pd.testing.assert_series_equal(got["leverage"], got["target_leverage"], check_names=False)
                entries = np.concatenate([[True], got["liquidated"].to_numpy()[:-1]])
                np.testing.assert_array_equal(got["rebalanced"].to_numpy(), ~entries)  # every open bar trades
                if frame is shocked:
                    assert got["liquidated"].iloc[[100, 300, 500]].all()
        for k in KS:  # the sweep at band 0 is that path too, and every bar after the entry is a trade
            r0 = _run(runs0, asset, k)
            want = _every_bar_path(inputs, k=k, short_venue=run.short_venue, long_venue=run.long_venue, config=cfg)
            pd.testing.assert_series_equal(r0.equity, want["equity"], check_exact=True, check_names=False)
            assert r0.rebalances == r0.bars - 1 and r0.rebalance_band == 0.0
            assert _run(runs, asset, k).rebalance_band == DEFAULT_REBALANCE_BAND == 0.10
    with pytest.raises(ValueError, match="rebalance_band"):
        leverage_safety(db, ks=(4.0,), assets=["BTC"], rebalance_band=1.0)
    with pytest.raises(ValueError, match="rebalance_band"):
        simulate_path(inputs, k=4.0, short_venue=run.short_venue, long_venue=run.long_venue, rebalance_band=-0.1)


def test_rebalance_band(db: duckdb.DuckDBPyConnection, runs: list[SafetyRun], runs0: list[SafetyRun]) -> None:
    """Band 0.10: far fewer trades and fees; between trades the quantity is held and its leverage stays in band."""
    band, cfg = DEFAULT_REBALANCE_BAND, KeeperConfig()
    for asset in ASSETS:
        inputs = _inputs(db, _run(runs, asset, 3.0))
        for k in KS:
            run, run0 = _run(runs, asset, k), _run(runs0, asset, k)
            assert run.liquidations == 0 and run.rebalances < run0.rebalances / 10
            assert run.fees_usd < run0.fees_usd / 2
            assert run.avg_leverage == pytest.approx(run.leverage.mean(), rel=1e-12)  # the leverage held
            assert run.max_leverage == run.leverage.max() <= 10.0 / (1.0 - band)
            pd.testing.assert_series_equal(run.target_leverage, run0.target_leverage)  # same σ, same targets
            path = simulate_path(inputs, k=k, short_venue=run.short_venue, long_venue=run.long_venue, config=cfg)
            pd.testing.assert_series_equal(path["equity"], run.equity, check_names=False)
            assert int(path["rebalanced"].sum()) == run.rebalances
            lev, target = path["leverage"].to_numpy(), path["target_leverage"].to_numpy()
            traded = path["rebalanced"].to_numpy().copy()
            traded[0] = True  # the entry
            np.testing.assert_array_equal(lev[traded], target[traded])  # a trade goes to the target exactly
            held = ~traded
            assert held.mean() > 0.9
            assert (np.abs(target[held] - lev[held]) <= band * lev[held] * (1 + 1e-12)).all()
            # between trades the quantity is unchanged: held notional = previous quantity × this open, no fee
            qty = (path["notional"] / path["open"]).to_numpy()
            np.testing.assert_allclose(qty[1:][held[1:]], qty[:-1][held[1:]], rtol=1e-12)
            assert (path["fees_usd"].to_numpy()[held] == 0.0).all()
            prev_e = np.concatenate([[C0], path["equity"].to_numpy()[:-1]])
            np.testing.assert_allclose(lev, path["notional"].to_numpy() / (prev_e / 2.0), rtol=1e-12)
            # a trade happens exactly when the target left the band around the held notional
            marked = np.concatenate([[np.nan], qty[:-1]]) * path["open"].to_numpy()
            out = np.abs(path["target_notional"].to_numpy() - marked) > band * marked
            np.testing.assert_array_equal(out[1:], traded[1:])
    # on real bars the held leverage does drift above L_max = 10 between trades, but only within the band
    btc3 = _run(runs, "BTC", 3.0)
    assert 10.0 < btc3.max_leverage <= 10.0 / (1.0 - band)


def test_liquidation_uses_held_leverage(db: duckdb.DuckDBPyConnection, runs: list[SafetyRun]) -> None:
    """Real bars whose worst move lies between the target's and the held leverage's distances decide the rule."""
    cfg = KeeperConfig()
    mm = cfg.maintenance_margin
    run = _run(runs, "BTC", 4.0)
    inputs = _inputs(db, run)
    args = {"k": 4.0, "short_venue": run.short_venue, "long_venue": run.long_venue, "capital": C0, "config": cfg}
    base = simulate_path(inputs, **args)
    every = simulate_path(inputs, **args, rebalance_band=0.0)
    assert not base["liquidated"].any() and not every["liquidated"].any()
    fs, fl = cfg.fees(run.short_venue), cfg.fees(run.long_venue)
    ratio = (base["leverage"] / base["target_leverage"]).to_numpy()
    kept = ~base["rebalanced"].to_numpy()
    kept[0] = False
    o_col, lo_col, hi_col = (inputs.columns.get_loc(c) for c in ("open", "low", "high"))

    # held above target (d_held < d_target): a fall between them liquidates the held position's long leg
    j = int(np.argmax(np.where(kept, ratio, 0.0)))
    assert ratio[j] > 1.04
    lev_h, lev_t = base["leverage"].iloc[j], base["target_leverage"].iloc[j]
    d_h, d_t = float(liquidation_distance(lev_h, mm)), float(liquidation_distance(lev_t, mm))
    assert base["liq_distance"].iloc[j] == d_h < d_t
    o = inputs.iloc[j, o_col]
    hit = inputs.copy()
    hit.iloc[j, lo_col] = o * (1.0 - (d_h + d_t) / 2.0)
    path = simulate_path(hit, **args)
    assert path["liquidated"].sum() == 1 and bool(path["liquidated"].iloc[j])
    e_prev, n_h = base["equity"].iloc[j - 1], base["notional"].iloc[j]
    assert n_h == pytest.approx(e_prev / 2.0 * lev_h, rel=1e-12)
    assert path["equity"].iloc[j] == pytest.approx(e_prev / 2.0 + n_h * d_h - fs.taker * n_h * (1.0 - d_h), rel=1e-12)
    assert not simulate_path(hit, **args, rebalance_band=0.0)["liquidated"].any()  # at the target it survives
    # what remains is re-deployed at the next bar's target, at maker fees (an entry, not a rebalance)
    nxt = path.iloc[j + 1]
    assert nxt["leverage"] == nxt["target_leverage"] and not nxt["rebalanced"]
    assert nxt["target_notional"] == pytest.approx(path["equity"].iloc[j] / 2.0 * nxt["target_leverage"], rel=1e-12)
    assert nxt["fees_usd"] == pytest.approx((fs.maker + fl.maker) * nxt["notional"], rel=1e-12)

    # held below target (d_held > d_target): a rise between them leaves the held position alone
    j = int(np.argmin(np.where(kept, ratio, np.inf)))
    assert ratio[j] < 0.96
    lev_h, lev_t = base["leverage"].iloc[j], base["target_leverage"].iloc[j]
    d_h, d_t = float(liquidation_distance(lev_h, mm)), float(liquidation_distance(lev_t, mm))
    assert d_t < d_h
    o = inputs.iloc[j, o_col]
    miss = inputs.copy()
    miss.iloc[j, hi_col] = o * (1.0 + (d_h + d_t) / 2.0)
    path = simulate_path(miss, **args)
    assert not path["liquidated"].any()
    pd.testing.assert_frame_equal(path.drop(columns="high"), base.drop(columns="high"))
    levered = simulate_path(miss, **args, rebalance_band=0.0)  # at the target the short leg would have gone
    assert levered["liquidated"].sum() == 1 and bool(levered["liquidated"].iloc[j])
    n_t = every["notional"].iloc[j]
    e_open = every["equity"].iloc[j - 1] - every["fees_usd"].iloc[j]
    assert levered["equity"].iloc[j] == pytest.approx(e_open / 2.0 + n_t * d_t - fl.taker * n_t * (1.0 + d_t))
