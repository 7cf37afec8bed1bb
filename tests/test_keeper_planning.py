"""The planner on real data: discovery, rejection reasons, per-hour comparison, one action per cycle, and the
vectorised planner against the per-pair reference loop.

The DuckDB is built in a temp dir from two and a half weeks of the bundled real rows (ingest + every SQL model,
about a second), as tests/test_leakage.py does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.schema import LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_core.strategy import (
    REASONS,
    KeeperConfig,
    Position,
    Snapshot,
    build_plans,
    choose_action,
    discover,
    mark_positions,
    plan_cycle,
    snapshot_from_frames,
)
from fundarb_core.strategy.planning import PLAN_COLUMNS
from tests.conftest import alter_after, real_db, window_tables
from tests.keeper_support import snapshot_at
from tests.oracles.reference_planner import reference_cycle

AS_OF = pd.Timestamp("2026-03-05 12:00")
ALL = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
NOW = datetime(2026, 5, 1, tzinfo=UTC)
CFG = KeeperConfig(decision_rule="spec")  # the spec's planner and one-action rule (§4–§6)
NO_FALLBACKS = KeeperConfig(fallbacks=frozenset(), decision_rule="spec")


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    return window_tables(bundled, "2026-02-18", "2026-03-08")


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory, tables: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    c = real_db(tmp_path_factory.mktemp("keeper_db"), tables)
    yield c
    c.close()


@pytest.fixture(scope="module")
def snap(conn: duckdb.DuckDBPyConnection) -> Snapshot:
    return snapshot_at(conn, AS_OF)


def _labels(col: pd.Series) -> np.ndarray:
    return col.astype(object).where(col.notna(), "").astype(str).to_numpy()


def assert_same_plans(vec: pd.DataFrame, ref: pd.DataFrame) -> None:
    """The vectorised plans equal the reference loop's, row for row."""
    assert len(vec) == len(ref)
    labels = ("asset", "short_venue", "long_venue", "reason", "binding_constraint", "fallbacks")
    for k in labels:
        np.testing.assert_array_equal(_labels(vec[k]), _labels(ref[k]), err_msg=k)
    np.testing.assert_array_equal(vec["valid"].to_numpy(), ref["valid"].to_numpy())
    nums = [c for c in ref.columns if c not in (*labels, "valid")]
    for k in nums:
        np.testing.assert_allclose(vec[k].to_numpy(dtype="float64"), ref[k].to_numpy(dtype="float64"), rtol=1e-9,
                                   atol=1e-12, err_msg=k)


# ------------------------------------------------------------------------------------------ loader


def test_loader_reads_the_market_as_of_the_hour(snap: Snapshot) -> None:
    assert snap.as_of == AS_OF
    assert {"binance", "hyperliquid", "bybit", "okx", "dydx"} <= set(snap.venues)
    listed = ~np.isnan(snap.rate_per_hour)
    assert listed.sum() > 50 and (listed.sum(axis=1) >= 2).sum() > 20
    btc, v = list(snap.assets).index("BTC"), {x: i for i, x in enumerate(snap.venues)}
    assert snap.interval_hours[btc, v["hyperliquid"]] == 1.0 and snap.interval_hours[btc, v["binance"]] in (4.0, 8.0)
    assert snap.sigma_daily[btc, v["binance"]] > 0 and snap.volume_usd_24h[btc, v["binance"]] > 1e6
    assert snap.oi_usd[btc, v["hyperliquid"]] > 1e6
    assert np.isfinite(snap.consistency[btc]).sum() >= 10


def test_loader_uses_nothing_after_as_of(tmp_path: Path, tables: dict[str, pd.DataFrame], snap: Snapshot) -> None:
    # settlements are on the hour and their stamps carry collection jitter (12:00:00.005 is the 12:00 settlement,
    # stg_funding_hourly rounds it so), so "after as_of" means stamped later than as_of plus that jitter
    cut = pd.Timestamp(AS_OF, tz="UTC") + pd.Timedelta(minutes=1)
    # no deletions: the comparison below is exact, and deleting rows reorders DuckDB's float sums
    altered = alter_after(tables, cut, drop_share=0.0)
    with real_db(tmp_path, altered) as other:
        again = snapshot_at(other, AS_OF)
    np.testing.assert_array_equal(again.assets, snap.assets)
    for f in ("rate_per_hour", "interval_hours", "sigma_daily", "oi_usd", "volume_usd_24h", "mark_price",
              "consistency", "mean_spread_per_hour", "basis_bp", "basis_std_bp"):
        np.testing.assert_array_equal(getattr(again, f), getattr(snap, f), err_msg=f)


# ------------------------------------------------------------------------------------------ discovery


def test_discovery_finds_every_positive_pair(conn: duckdb.DuckDBPyConnection, snap: Snapshot) -> None:
    cands = discover(snap, CFG)
    panel = conn.execute(
        "SELECT asset, short_venue, long_venue, observed_spread_per_hour FROM spread_panel "
        "WHERE hour = $h AND observed_spread_per_hour > 0", {"h": AS_OF.to_pydatetime()}).df()
    got = cands.assign(asset=cands.asset.astype(str), short_venue=cands.short_venue.astype(str),
                       long_venue=cands.long_venue.astype(str))
    merged = panel.merge(got, on=["asset", "short_venue", "long_venue"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    np.testing.assert_allclose(merged["spread_per_hour"], merged["observed_spread_per_hour"], rtol=1e-12)
    assert len(cands) > 50 and (cands.spread_per_hour > 0).all()
    # one orientation per unordered pair, and only assets on ≥ 2 venues
    n_listed = (~np.isnan(snap.rate_per_hour)).sum(axis=1)
    assert set(cands.asset_idx) <= set(np.flatnonzero(n_listed >= 2))
    assert len(cands) <= int(sum(k * (k - 1) // 2 for k in n_listed))


def test_1h_and_8h_venues_are_compared_per_hour(conn: duckdb.DuckDBPyConnection, snap: Snapshot) -> None:
    cands = discover(snap, CFG)
    mixed = cands[(cands.short_interval_hours != cands.long_interval_hours)
                  & ((cands.short_interval_hours == 1.0) | (cands.long_interval_hours == 1.0))]
    assert len(mixed) > 5
    row = mixed.iloc[0]
    raw = conn.execute(
        "SELECT venue, arg_max(rate, ts) AS rate, arg_max(interval_hours, ts) AS interval_hours FROM funding_rates "
        "WHERE asset = $a AND venue IN ($s, $l) AND ts <= $h AND quote = 'USDT' OR (asset = $a AND venue IN ($s, $l) "
        "AND ts <= $h AND venue IN ('hyperliquid', 'lighter', 'dydx', 'hyperliquid-xyz')) GROUP BY venue",
        {"a": str(row.asset), "s": str(row.short_venue), "l": str(row.long_venue),
         "h": AS_OF.to_pydatetime()}).df().set_index("venue")
    short, long_ = raw.loc[str(row.short_venue)], raw.loc[str(row.long_venue)]
    per_hour = short.rate / short.interval_hours - long_.rate / long_.interval_hours
    assert row.spread_per_hour == pytest.approx(per_hour, rel=1e-9)
    assert row.spread_per_hour != pytest.approx(short.rate - long_.rate, rel=1e-3)  # not per interval


def test_synthetic_1h_vs_8h_plan_by_hand() -> None:
    """Hyperliquid 0.01 % per 1 h vs Binance 0.01 % per 8 h: per hour 1e-4 vs 1.25e-5, short Hyperliquid."""
    venue_rows = pd.DataFrame({
        "venue": ["hyperliquid", "binance"], "asset": ["X", "X"], "rate": [0.0001, 0.0001],
        "interval_hours": [1.0, 8.0], "sigma_daily": [0.02, 0.02], "sigma_baseline": [0.02, 0.02],
        "depth_usd": [1e6, 1e6], "mark_price": [1.0, 1.0],  # every measure known: no data fallback
    })
    snap = snapshot_from_frames(venue_rows)
    res = plan_cycle(snap, (), CFG)
    assert len(res.candidates) == 1
    c = res.candidates.iloc[0]
    assert (c.short_venue, c.long_venue) == ("hyperliquid", "binance")
    assert c.spread_per_hour == pytest.approx(0.0001 - 0.0001 / 8)  # 8.75e-5 per hour, not 0
    p = res.plans.iloc[0]
    k = 5 * np.sqrt(168 / 24)  # 13.2288
    assert p.leverage == pytest.approx(1 / (k * 0.02))  # 3.7796
    assert p.size_usd == pytest.approx(10_000.0)  # 10,000 × 0.9 × 3.78 = 34,016 > max position 10,000
    assert p.entry_fees_usd == pytest.approx(10_000 * (0.00015 + 0.0002))  # 3.5
    assert p.exit_fees_usd == pytest.approx(10_000 * (0.00045 + 0.0005))  # 9.5
    assert p.slippage_usd == pytest.approx(2 * 10_000 * 2 * 0.01 * np.sqrt(10_000 / 1e6))  # 40
    assert p.total_costs_usd == pytest.approx(53.0)
    assert p.expected_hourly_return_usd == pytest.approx(0.875)
    assert p.break_even_hours == pytest.approx(53.0 / 0.875)  # 60.57 h
    assert p.expected_apy == pytest.approx(8.75e-5 * 8760 * p.leverage - 53.0 * p.leverage / 10_000 * 365 / 7)
    assert p.liquidation_distance == pytest.approx(1 / p.leverage - 0.005)
    assert bool(p.valid) and res.action.kind == "enter"
    assert p.fallbacks == "size_caps,basis"  # no OI or volume, no basis


# ------------------------------------------------------------------------------------------ reasons


def test_rejected_candidates_and_plans_carry_reasons(snap: Snapshot) -> None:
    res = plan_cycle(snap, (), CFG)
    for frame in (res.candidates, res.plans):
        assert (frame.reason.isna() == frame.valid).all()
        assert set(frame.reason.dropna().astype(str)) <= set(REASONS)
    assert (~res.candidates.valid).sum() > 0 and (~res.plans.valid).sum() > 0 and res.plans.valid.sum() > 0
    assert set(res.candidates.reason.dropna().astype(str)) == {"below_min_spread"}
    assert "break_even" in set(res.plans.reason.dropna().astype(str))
    # without the data fallbacks, a leg without a liquidity measure cannot be costed
    strict = plan_cycle(snap, (), NO_FALLBACKS).plans
    assert {"no_liquidity_data", "break_even"} <= set(strict.reason.dropna().astype(str))
    assert list(res.plans.columns[:3]) == ["asset", "short_venue", "long_venue"]
    assert set(PLAN_COLUMNS) <= set(res.plans.columns)
    # plans are built exactly for the candidates that pass discovery
    assert len(res.plans) == res.candidates.valid.sum()
    pd.testing.assert_frame_equal(build_plans(res.candidates, snap, CFG), res.plans)


def test_blacklist_and_cooldown(snap: Snapshot) -> None:
    res = plan_cycle(snap, (), KeeperConfig(blacklist=frozenset({"BTC"}), decision_rule="spec"))
    btc = res.candidates[res.candidates.asset == "BTC"]
    assert len(btc) > 0 and (btc.reason == "blacklisted").all()
    i = list(snap.assets).index("ETH")
    failed, minutes = snap.failed_attempts.copy(), snap.minutes_since_failure.copy()
    failed[i], minutes[i] = 5, 10.0
    eth = discover(snap.replace(failed_attempts=failed, minutes_since_failure=minutes), CFG)
    eth = eth[eth.asset == "ETH"]
    assert len(eth) > 0 and (eth.reason == "cooldown").all()
    minutes[i] = 31.0  # the cooldown is over after 30 minutes
    eth = discover(snap.replace(failed_attempts=failed, minutes_since_failure=minutes), CFG)
    assert not (eth[eth.asset == "ETH"].reason == "cooldown").any()


# ------------------------------------------------------------------------------------------ one action per cycle


def _key(p: Position) -> tuple[str, str, str]:
    return p.asset, p.short_venue, p.long_venue


def _apply(positions: list[Position], action: object) -> list[Position]:
    if action.kind == "enter":  # type: ignore[attr-defined]
        return [*positions, Position.from_plan(action.plan)]  # type: ignore[attr-defined]
    if action.kind == "switch":  # type: ignore[attr-defined]
        gone = _key(action.close)  # type: ignore[attr-defined]
        return [p for p in positions if _key(p) != gone] + [Position.from_plan(action.plan)]  # type: ignore
    return positions


def test_at_most_one_entry_or_switch_per_cycle(conn: duckdb.DuckDBPyConnection) -> None:
    cfg = KeeperConfig(max_positions=3, decision_rule="spec")
    positions: list[Position] = []
    kinds = []
    for h in range(24, -1, -1):
        snap = snapshot_at(conn, AS_OF - pd.Timedelta(hours=h), config=cfg)
        res = plan_cycle(snap, positions, cfg)
        before = {(p.asset, p.short_venue, p.long_venue) for p in positions}
        positions = _apply(positions, res.action)
        after = {(p.asset, p.short_venue, p.long_venue) for p in positions}
        assert len(after - before) <= 1 and len(before - after) <= 1  # one entry, or one switch (out + in)
        assert len(positions) <= cfg.max_positions
        assert len({p.asset for p in positions}) == len(positions)  # never two positions on one asset
        kinds.append(res.action.kind)
        positions = [Position(**{**p.__dict__, "hours_held": p.hours_held + 1.0}) for p in positions]
    assert kinds.count("enter") == cfg.max_positions  # fills its slots one cycle at a time
    assert set(kinds) <= {"enter", "switch", "none"}


def test_switch_does_not_oscillate(snap: Snapshot) -> None:
    cfg = KeeperConfig(max_positions=1, decision_rule="spec")
    plans = plan_cycle(snap, (), cfg).plans
    valid = plans[plans.valid].sort_values("score")
    worst = Position.from_plan(valid.iloc[0], hours_held=12.0)  # the lowest-scored valid plan, 12 h old
    first = choose_action(plans, [worst], cfg)
    assert first.kind == "switch" and first.close is not None and _key(first.close) == _key(worst)
    assert first.compared_hours < first.threshold_hours
    # the position it switched into does not switch back to the old pair on the same data
    new = Position.from_plan(first.plan, hours_held=12.0)  # type: ignore[arg-type]
    second = choose_action(plans, [new], cfg)
    if second.kind == "switch":
        assert (second.plan.asset, second.plan.short_venue, second.plan.long_venue) != (  # type: ignore
            worst.asset, worst.short_venue, worst.long_venue)
    # and a position younger than the minimum hold (8 h) is never switched
    assert choose_action(plans, [Position.from_plan(valid.iloc[0], hours_held=7.5)], cfg).kind == "none"


# ------------------------------------------------------------------------------------------ vectorised = loop


@pytest.mark.parametrize("rule", ["spec", "horizon"])
def test_vectorised_planner_equals_reference_loop_on_real_snapshot(snap: Snapshot, rule: str) -> None:
    """Both decision rules' discovery (the horizon rule has no fixed minimum spread) against the plain loop."""
    cfg = KeeperConfig(decision_rule=rule)
    res = plan_cycle(snap, (), cfg)
    cands, plans = reference_cycle(snap, cfg)
    assert len(cands) == len(res.candidates)
    np.testing.assert_array_equal(_labels(res.candidates.reason), _labels(cands.reason))
    np.testing.assert_allclose(res.candidates.spread_per_hour, cands.spread_per_hour, rtol=0)
    assert_same_plans(res.plans, plans)


def _stressed(snap: Snapshot, seed: int = 3) -> Snapshot:
    """The real snapshot with every optional input and every rejection path exercised."""
    rng = np.random.default_rng(seed)
    a, v = snap.n_assets, snap.n_venues
    cube = (a, v, v)
    listed = ~np.isnan(snap.rate_per_hour)

    def some(shape: tuple[int, ...], p: float) -> np.ndarray:
        return rng.random(shape) < p

    rate = snap.rate_per_hour.copy()
    rate[some((a, v), 0.02) & listed] = 0.01  # absurd
    fc = np.where(some(cube, 0.3), rng.normal(2e-5, 3e-5, cube), np.nan)
    twap = np.where(some(cube, 0.2), rng.uniform(3.0, 20_000.0, cube), np.nan)
    basis = np.where(some(cube, 0.5), rng.normal(0.0, 150.0, cube), snap.basis_bp)
    std = np.where(some(cube, 0.5), rng.uniform(1.0, 30.0, cube), np.nan)
    n = np.where(some(cube, 0.7), 168.0, 3.0)
    depth = np.where(some((a, v), 0.6), rng.uniform(2e2, 1e7, (a, v)), snap.depth_usd)
    volume = np.where(some((a, v), 0.3), rng.uniform(5e4, 1e6, (a, v)), snap.volume_usd_24h)
    oi = np.where(some((a, v), 0.3), 10 ** rng.uniform(4.0, 8.0, (a, v)), snap.oi_usd)
    attempts = np.where(some((a, v), 0.1), 6.0, 0.0)
    failures = np.where(attempts > 0, rng.integers(0, 7, (a, v)).astype(float), 0.0)
    sigma = np.where(some((a, v), 0.2), rng.uniform(0.01, 0.2, (a, v)), snap.sigma_daily)
    balances = snap.balances_usd.copy()
    balances[-1] = 4.0  # one venue nearly empty: below the minimum position
    # data fallbacks: prices, funding marks and σ missing or present at random
    mark = np.where(some((a, v), 0.4), np.nan, snap.mark_price)
    funding_mark = np.where(some((a, v), 0.3), rng.uniform(1.0, 100.0, (a, v)), snap.funding_mark_price)
    sigma = np.where(some((a, v), 0.3), np.nan, sigma)
    return snap.replace(
        mark_price=mark, funding_mark_price=funding_mark,
        rate_per_hour=rate, forecast_spread_per_hour=fc, twap_size_usd=twap, basis_bp=basis, basis_std_bp=std,
        basis_mean_bp=np.zeros(cube), basis_n=n, depth_usd=depth, volume_usd_24h=volume, oi_usd=oi,
        exec_attempts=attempts, exec_failures=failures, sigma_daily=sigma,
        win_rate=np.where(some(cube, 0.5), rng.uniform(0.0, 1.0, cube), snap.win_rate),
        failed_attempts=np.where(some((a,), 0.1), 5.0, 0.0), minutes_since_failure=rng.uniform(0, 60, a),
        anomaly=some((a,), 0.05), liquidity_stress=some((a,), 0.05), balances_usd=balances, drawdown=0.05,
    )


def test_vectorised_planner_equals_reference_loop_on_every_path(snap: Snapshot) -> None:
    seen: set[str] = set()
    some_fallbacks = frozenset({"slippage", "price_funding_mark", "basis"})
    for seed in range(6):
        stressed = _stressed(snap, seed)
        cfg = KeeperConfig(require_basis=seed == 3, fallbacks={4: frozenset(), 5: some_fallbacks}.get(
            seed, KeeperConfig().fallbacks), decision_rule="spec")
        res = plan_cycle(stressed, (), cfg)
        cands, plans = reference_cycle(stressed, cfg)
        np.testing.assert_array_equal(_labels(res.candidates.reason), _labels(cands.reason))
        np.testing.assert_allclose(res.candidates.expected_spread_per_hour, cands.expected_spread_per_hour, rtol=0)
        assert_same_plans(res.plans, plans)
        seen |= set(res.candidates.reason.dropna().astype(str)) | set(res.plans.reason.dropna().astype(str))
        seen |= {str(x) for x in res.plans.binding_constraint.unique()}
    missing = (set(REASONS) | {"balance", "max_position", "open_interest", "twap", "volume"}) - seen - {"blacklisted"}
    assert not missing, missing


def test_forecasts_replace_the_observed_spread(conn: duckdb.DuckDBPyConnection, snap: Snapshot) -> None:
    fc = snapshot_at(conn, AS_OF, baseline_forecast="mean_24h")
    assert np.isfinite(fc.forecast_spread_per_hour).sum() > 50
    cands = discover(fc, CFG)
    f = fc.forecast_spread_per_hour[cands.asset_idx, cands.short_idx, cands.long_idx]
    has = np.isfinite(f)
    assert has.sum() > 20 and (cands.has_forecast.to_numpy() == has).all()
    np.testing.assert_array_equal(cands.expected_spread_per_hour.to_numpy()[has], f[has])
    np.testing.assert_array_equal(cands.expected_spread_per_hour.to_numpy()[~has], cands.spread_per_hour[~has])
    # a position is marked on the same expected spread as the plans
    plans = plan_cycle(fc, (), CFG).plans
    p = plans.iloc[0]
    marked = mark_positions([Position.from_plan(p)], fc)[0]
    assert marked.hourly_return_usd == pytest.approx(p.expected_spread_per_hour * p.size_usd)
    _, ref = reference_cycle(fc, CFG)
    assert_same_plans(plans, ref)
