"""The perfect-foresight oracle (:mod:`fundarb_core.backtest.oracle`) on real rows.

One small real database (2026-01-20 → 2026-02-08: hyperliquid, lighter, binance, bybit, dydx and okx all
settle then) is built once for the module; the oracle runs over 2026-01-21 → 2026-02-04 (336 decision hours).
Every check compares against something computed another way: the dense and brute-force programmes, the raw
``funding_rates`` rows by hand, the frictionless closed form, and a database whose rows after the cut differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.oracle import (
    OracleInputs,
    brute_force,
    oracle_bound,
    oracle_inputs,
    solve,
    solve_dense,
    solve_many,
)
from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.venues import FeeSchedule
from tests.conftest import alter_after, real_db, window_tables

START, END, LATER = "2026-01-21", "2026-02-04", "2026-02-06"
VENUES = ("binance", "bybit", "dydx", "hyperliquid", "hyperliquid-xyz", "lighter", "okx")


def _tables() -> dict[str, pd.DataFrame]:
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    return window_tables(bundled, "2026-01-20", "2026-02-08")


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    c = real_db(tmp_path_factory.mktemp("oracle_db"), _tables())
    yield c
    c.close()


@pytest.fixture(scope="module")
def inputs(conn: duckdb.DuckDBPyConnection) -> dict[str, OracleInputs]:
    return oracle_inputs(conn, START, END)


@pytest.fixture(scope="module")
def cheap(conn: duckdb.DuckDBPyConnection) -> dict[str, OracleInputs]:
    """Impact-only costs (zero fees and spread): short windows then trade often."""
    cfg = KeeperConfig(fee_overrides=MappingProxyType(dict.fromkeys(VENUES, FeeSchedule(0.0, 0.0))))
    return oracle_inputs(conn, START, END, cfg, half_spread_bps=0.0)


def _path_value(inp: OracleInputs, states: np.ndarray) -> float:
    """Σ reward of the held states − Σ transition costs, walked hour by hour (the path starts flat)."""
    total, prev = 0.0, 0
    for h, s in enumerate(states):
        if s != prev:
            total -= (inp.exit_cost[h, prev - 1] if prev else 0.0) + (inp.entry_cost[h, s - 1] if s else 0.0)
        if s:
            assert inp.available is None or inp.available[h, s - 1], "the path holds an unlisted pair"
            total += inp.reward[h, s - 1]
        prev = int(s)
    return total


def _window(inp: OracleInputs, lo: int, hi: int, cols: list[int]) -> OracleInputs:
    """``inp`` cut to hours ``[lo, hi)`` and pairs ``cols`` (a real sub-problem)."""
    return dataclasses.replace(
        inp, hours=inp.hours[lo:hi], pairs=tuple(inp.pairs[c] for c in cols),
        reward=inp.reward[lo:hi][:, cols], entry_cost=inp.entry_cost[lo:hi][:, cols],
        exit_cost=inp.exit_cost[lo:hi][:, cols],
        available=None if inp.available is None else inp.available[lo:hi][:, cols])


def _zero_cost_config() -> KeeperConfig:
    return KeeperConfig(fee_overrides=MappingProxyType(dict.fromkeys(VENUES, FeeSchedule(0.0, 0.0))), base_impact=0.0,
                        fallback_slippage_bps=0.0)  # no slippage, measured or assumed


# ---------------------------------------------------------------------------------------------- solvers


def test_solve_matches_dense_and_its_own_path(inputs: dict[str, OracleInputs]) -> None:
    """O(H·P) == O(H·P²) on every real asset; the backtracked path is worth exactly the reported value."""
    assert len(inputs) >= 15 and {"BTC", "ETH", "SOL", "HYPE", "DOGE"} <= set(inputs)
    assert len(inputs["BTC"].pairs) == 30  # six venues list BTC in the window: 6 × 5 ordered pairs
    assert all(len(inp.hours) == 336 for inp in inputs.values())
    multi = 0
    stacked = solve_many(list(inputs.values()))  # assets of equal shape stepped together: the same answers
    for (asset, inp), q in zip(inputs.items(), stacked, strict=True):
        p = solve(inp)
        assert q.asset == asset and q.value == p.value and np.array_equal(q.states, p.states)
        assert p.value == pytest.approx(solve_dense(inp), abs=1e-12), asset
        assert p.value >= 0.0  # staying flat is always feasible
        assert _path_value(inp, p.states) == pytest.approx(p.value, abs=1e-12), asset
        assert p.gross - p.costs == pytest.approx(p.value, abs=1e-12)
        assert p.trades == int(np.count_nonzero(np.diff(np.concatenate([[0], p.states]))))
        f = p.frame(inp)
        assert list(f.columns) == ["hour", "state", "short_venue", "long_venue", "reward", "cost", "cum_value"]
        assert f["cum_value"].iloc[-1] == pytest.approx(p.value, abs=1e-12)
        assert f.loc[f.state == 0, "short_venue"].isna().all()
        held = f[f.state > 0]
        assert (held.short_venue != held.long_venue).all()
        multi += p.trades > 1
    assert multi >= 1  # some asset switches or re-enters: the backtracking is exercised beyond one entry


def test_solve_matches_brute_force_on_short_real_windows(inputs: dict[str, OracleInputs],
                                                         cheap: dict[str, OracleInputs]) -> None:
    """Every (P + 1)^H path enumerated, on windows of 9–10 real hours with 2–4 states, at two cost levels."""
    traded = flat = 0
    rng = np.random.default_rng(3)
    for source in (inputs, cheap):
        for asset in ("BTC", "SOL", "HYPE", "DOGE", "ETH", "INJ", "APT", "TRX"):
            inp = source[asset]
            for lo in range(0, 330 - 10, 37):
                n_pairs = int(rng.integers(1, 4))
                hours = {1: 10, 2: 10, 3: 9}[n_pairs]
                # the most rewarding pairs over the window (so trades happen) plus random ones
                best = np.argsort(-np.abs(inp.reward[lo:lo + hours]).sum(axis=0))
                cols = sorted({int(best[0]), *(int(c) for c in rng.choice(len(inp.pairs), n_pairs - 1,
                                                                          replace=False))})
                w = _window(inp, lo, lo + hours, cols)
                p = solve(w)
                assert p.value == pytest.approx(brute_force(w), abs=1e-12), (asset, lo, cols)
                assert _path_value(w, p.states) == pytest.approx(p.value, abs=1e-12)
                traded += p.trades > 0
                flat += p.trades == 0
    assert traded >= 5 and flat >= 5, (traded, flat)
    with pytest.raises(ValueError, match="brute-force limit"):
        brute_force(_window(inputs["BTC"], 0, 24, [0, 1, 2]))


# ---------------------------------------------------------------------------------------------- inputs


def _round_minute(ts: pd.Series) -> pd.Series:
    return (ts + pd.Timedelta(seconds=30)).dt.floor("min")


def test_reward_by_hand_from_raw_settlements(conn: duckdb.DuckDBPyConnection,
                                             inputs: dict[str, OracleInputs]) -> None:
    """BTC, binance (8 h, USDT symbol chosen over USDC) against hyperliquid (1 h, stamps with ms jitter)."""
    raw = conn.execute("SELECT venue, venue_symbol, ts, rate FROM funding_rates WHERE asset = 'BTC' "
                       "AND venue IN ('binance', 'hyperliquid') AND ts BETWEEN '2026-01-25' AND '2026-01-25 09:00'"
                       ).df()
    raw["ts_r"] = _round_minute(raw["ts"])
    inp = inputs["BTC"]
    k_bh = inp.pairs.index(("binance", "hyperliquid"))
    k_hb = inp.pairs.index(("hyperliquid", "binance"))

    def settled(venue: str, symbol: str, h: pd.Timestamp) -> float:
        rows = raw[(raw.venue == venue) & (raw.venue_symbol == symbol) & (raw.ts_r > h)
                   & (raw.ts_r <= h + pd.Timedelta(hours=1))]
        return float(rows.rate.sum())

    h7 = pd.Timestamp("2026-01-25 07:00")  # holds (07:00, 08:00]: binance's 08:00 settlement and hyperliquid's
    i7 = int(np.flatnonzero(inp.hours == np.datetime64(h7))[0])
    usdt, usdc = settled("binance", "BTCUSDT", h7), settled("binance", "BTCUSDC", h7)
    hl = settled("hyperliquid", "BTC", h7)
    assert usdt != 0.0 and hl != 0.0 and usdt != usdc  # the symbol choice matters here
    assert (raw[(raw.venue == "hyperliquid") & (raw.ts_r == h7 + pd.Timedelta(hours=1))].ts
            > h7 + pd.Timedelta(hours=1)).all()  # the stamp is after 08:00: only the rounding puts it at 08:00
    assert inp.reward[i7, k_bh] == pytest.approx(usdt - hl, abs=1e-15)
    assert inp.reward[i7, k_hb] == pytest.approx(hl - usdt, abs=1e-15)

    h2 = pd.Timestamp("2026-01-25 02:00")  # (02:00, 03:00]: hyperliquid only
    i2 = int(np.flatnonzero(inp.hours == np.datetime64(h2))[0])
    hl2 = settled("hyperliquid", "BTC", h2)
    assert hl2 != 0.0 and settled("binance", "BTCUSDT", h2) == 0.0
    assert inp.reward[i2, k_hb] == pytest.approx(hl2, abs=1e-15)


def test_one_symbol_per_venue_usdt_first_then_most_rows(conn: duckdb.DuckDBPyConnection,
                                                        inputs: dict[str, OracleInputs]) -> None:
    """Extra binance BTC symbols on a copy of the real rows: a USD-quoted one (more rows) and a USDT one with
    fewer rows are ignored; a USDT one with more rows than BTCUSDT takes over."""
    mem = duckdb.connect()
    for t in ("funding_rates", "open_interest", "orderbook_depth", "volatility"):
        mem.register("src", conn.execute(f"SELECT * FROM {t}").df())
        mem.execute(f"CREATE TABLE {t} AS SELECT * FROM src")
        mem.unregister("src")
    src = "FROM funding_rates WHERE venue = 'binance' AND venue_symbol = 'BTCUSDT'"
    mem.execute(f"INSERT INTO funding_rates SELECT * REPLACE ('BTC_FEW' AS venue_symbol, 5 * rate AS rate) {src} "
                "AND hour(ts) <> 8")
    for shift in (0, 4):  # every BTCUSDT settlement and one 4 h later: more rows than BTCUSDT
        mem.execute(f"INSERT INTO funding_rates SELECT * REPLACE ('BTC_USD' AS venue_symbol, 'USD' AS quote, "
                    f"ts + INTERVAL {shift} HOUR AS ts, 7 * rate AS rate) {src}")
    k = inputs["BTC"].pairs.index(("binance", "hyperliquid"))
    np.testing.assert_array_equal(oracle_inputs(mem, START, END, assets=["BTC"])["BTC"].reward, inputs["BTC"].reward)
    for shift in (0, 4):
        mem.execute(f"INSERT INTO funding_rates SELECT * REPLACE ('BTC_MANY' AS venue_symbol, ts + INTERVAL {shift} "
                    f"HOUR AS ts, CASE WHEN {shift} = 0 THEN 5 * rate ELSE 0 END AS rate) {src}")
    got = oracle_inputs(mem, START, END, assets=["BTC"])["BTC"]
    raw = mem.execute(f"SELECT ts, rate {src}").df()
    hour = np.ceil((_round_minute(raw.ts) - pd.Timestamp(START)) / pd.Timedelta(hours=1)).astype(int) - 1
    keep = (hour >= 0) & (hour < len(got.hours))
    binance = np.bincount(hour[keep], weights=raw.rate[keep], minlength=len(got.hours))  # BTCUSDT's R(h)
    assert np.count_nonzero(binance) > 30
    np.testing.assert_allclose(got.reward[:, k] - inputs["BTC"].reward[:, k], 4 * binance, atol=1e-15)
    mem.close()


def test_costs_by_hand_from_liquidity_and_fees(conn: duckdb.DuckDBPyConnection,
                                               inputs: dict[str, OracleInputs]) -> None:
    """Entry/exit of one pair at one hour: fees + 2 half spreads + √-impact on OI (hyperliquid) and volume."""
    cfg = KeeperConfig()
    inp = inputs["BTC"]
    h = pd.Timestamp("2026-01-25 03:00")
    i = int(np.flatnonzero(inp.hours == np.datetime64(h))[0])
    oi = conn.execute("SELECT oi_usd FROM open_interest WHERE venue = 'hyperliquid' AND asset = 'BTC' AND ts <= ? "
                      "ORDER BY ts DESC LIMIT 1", [h]).fetchone()[0]
    vol = conn.execute("SELECT volume_usd_24h FROM volatility WHERE venue = 'binance' AND asset = 'BTC' "
                       "AND hour <= ? ORDER BY hour DESC LIMIT 1", [h]).fetchone()[0]
    imp = cfg.base_impact * (math.sqrt(1e4 / oi) + math.sqrt(1e4 / vol))
    hl, bn = cfg.fees("hyperliquid"), cfg.fees("binance")
    k = inp.pairs.index(("hyperliquid", "binance"))
    assert inp.entry_cost[i, k] == pytest.approx(hl.maker + bn.maker + 2e-4 + imp, rel=1e-12)
    assert inp.exit_cost[i, k] == pytest.approx(hl.taker + bn.taker + 2e-4 + imp, rel=1e-12)
    # the mirrored pair trades the same two legs
    k2 = inp.pairs.index(("binance", "hyperliquid"))
    assert inp.entry_cost[i, k2] == pytest.approx(inp.entry_cost[i, k], rel=1e-12)


def test_pairs_are_held_only_while_both_venues_are_listed(inputs: dict[str, OracleInputs]) -> None:
    """dydx settles BTC from 2026-01-24 17:00 on: its pairs open 2 intervals (2 h) before, never earlier."""
    inp = inputs["BTC"]
    k = inp.pairs.index(("hyperliquid", "dydx"))
    open_ = inp.hours[inp.available[:, k]]
    assert open_.min() == np.datetime64("2026-01-24T14:00")
    assert inp.available[inp.hours >= np.datetime64("2026-01-24T14:00"), k].all()
    assert inp.available[:, inp.pairs.index(("hyperliquid", "binance"))].all()
    # with listing ignored the same data gives at least as much (the mask only removes states)
    free = dataclasses.replace(inp, available=None)
    assert solve(free).value >= solve(inp).value - 1e-15


# ---------------------------------------------------------------------------------------------- costs


def test_costs_are_monotone_and_zero_cost_is_the_frictionless_bound(conn: duckdb.DuckDBPyConnection,
                                                                     inputs: dict[str, OracleInputs]) -> None:
    free = oracle_inputs(conn, START, END, _zero_cost_config(), half_spread_bps=0.0)
    dear_cfg = KeeperConfig(fee_overrides=MappingProxyType(dict.fromkeys(VENUES, FeeSchedule(4.5e-4, 4.5e-4))))
    dear = oracle_inputs(conn, START, END, dear_cfg)
    assert free.keys() == inputs.keys() == dear.keys()
    strictly = 0
    for asset, inp in inputs.items():
        v_free, v_base, v_dear = solve(free[asset]).value, solve(inp).value, solve(dear[asset]).value
        assert v_free >= v_base - 1e-15 and v_base >= v_dear - 1e-15, asset
        strictly += v_free > v_base > v_dear
        best = np.where(free[asset].available, free[asset].reward, -np.inf).max(axis=1)
        assert v_free == pytest.approx(float(np.maximum(best, 0.0).sum()), abs=1e-12), asset
        assert np.array_equal(free[asset].reward, inp.reward)  # costs never touch the reward
        # the fee regime enters the costs one for one (same impact, same spread)
        d = dear[asset].entry_cost - inp.entry_cost
        makers = np.array([KeeperConfig().fees(s).maker + KeeperConfig().fees(lv).maker for s, lv in inp.pairs])
        np.testing.assert_allclose(d, np.broadcast_to(9e-4 - makers, d.shape), atol=1e-15)
    assert strictly >= 5


# ---------------------------------------------------------------------------------------------- the bound


def test_oracle_bound_frame(conn: duckdb.DuckDBPyConnection, inputs: dict[str, OracleInputs]) -> None:
    b = oracle_bound(conn, START, END, size_usd=5_000.0, slots=3)
    assert list(b.columns) == ["asset", "pairs", "value_per_unit", "gross_per_unit", "costs_per_unit", "trades",
                               "net_usd", "gross_usd", "costs_usd", "hours", "held_hours", "in_slots"]
    assert set(b.asset) == set(inputs)
    assert b.net_usd.is_monotonic_decreasing
    assert b.in_slots.tolist() == [True] * 3 + [False] * (len(b) - 3)
    np.testing.assert_allclose(b.net_usd, b.value_per_unit * 5_000.0, rtol=1e-12)
    np.testing.assert_allclose(b.gross_usd - b.costs_usd, b.net_usd, rtol=1e-9, atol=1e-9)
    assert b.attrs["bound_dedicated_usd"] == pytest.approx(b.net_usd.head(3).sum())
    assert b.attrs["bound_all_assets_usd"] == pytest.approx(b.net_usd.sum())
    assert (b.hours == 336).all() and (b.held_hours <= b.hours).all()
    # a larger position pays more impact per unit notional, so its per-unit value cannot be higher
    big = oracle_bound(conn, START, END, size_usd=1e6).set_index("asset")
    small = b.set_index("asset")
    assert (big.value_per_unit <= small.value_per_unit.reindex(big.index) + 1e-15).all()
    assert (big.value_per_unit < small.value_per_unit.reindex(big.index) - 1e-6).any()
    with pytest.raises(ValueError, match="whole hours"):
        oracle_inputs(conn, "2026-01-21 00:30", END)


def test_nothing_after_end_is_read(conn: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """Rows whose settlement is after ``end`` (and candles / OI known after it) altered or dropped: same bound."""
    cut = pd.Timestamp(END, tz="UTC") + pd.Timedelta(seconds=30)  # a stamp up to 30 s late is the settlement at END
    other = real_db(tmp_path, alter_after(_tables(), cut))
    try:
        pd.testing.assert_frame_equal(oracle_bound(conn, START, END), oracle_bound(other, START, END))
        # the alteration is real: over a longer period the bounds differ
        longer_a, longer_b = oracle_bound(conn, START, LATER), oracle_bound(other, START, LATER)
        assert not np.allclose(longer_a.set_index("asset").value_per_unit,
                               longer_b.set_index("asset").value_per_unit.reindex(longer_a.asset))
    finally:
        other.close()
