"""Every formula of the keeper spec (§2–§6) against numbers computed by hand in the test."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fundarb_core.sql_macros import sigma_daily as sigma_from_bars
from fundarb_core.strategy.basis import basis_checks, basis_payback_hours, basis_risk_bp, basis_z
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.costs import (
    break_even_hours,
    break_even_reject,
    entry_fees_usd,
    exit_fees_usd,
    gross_yield,
    hourly_funding_return,
    net_yield,
    plan_net_apy,
    round_trip_slippage_usd,
    sqrt_impact,
)
from fundarb_core.strategy.health import below_target, health_actions, health_factor, reduce_size
from fundarb_core.strategy.leverage import adjusted_k, liquidation_distance, sigma_distance_leverage
from fundarb_core.strategy.scoring import composite_score
from fundarb_core.strategy.sizing import SIZE_CONSTRAINTS, below_min_size, drawdown_scale, low_volume, position_size
from fundarb_core.strategy.switching import should_switch, switch_break_even
from fundarb_core.venues import FeeSchedule

CFG = KeeperConfig()
DAY = replace(CFG, holding_hours=24.0)  # duration factor sqrt(24/24) = 1: K adjustments one at a time
NAN = float("nan")


# ------------------------------------------------------------------------------------------ config / units


def test_min_spread_is_converted_once_from_8h_to_per_hour() -> None:
    assert CFG.min_spread == 0.0001
    assert CFG.min_spread_per_hour == pytest.approx(0.0001 / 8)  # 1.25e-5 per hour = 10.95 % APR


def test_spec_defaults() -> None:
    assert CFG.blacklist == frozenset({"NVDA"})
    assert (CFG.cooldown_failures, CFG.cooldown_minutes) == (5, 30.0)
    assert (CFG.leverage_min, CFG.leverage_max, CFG.k_base) == (1.0, 10.0, 5.0)
    assert (CFG.max_position_size_usd, CFG.oi_fraction, CFG.volume_fraction) == (10_000.0, 0.05, 0.05)
    assert (CFG.min_volume_usd, CFG.min_position_usd) == (100_000.0, 5.0)
    assert (CFG.basis_z_reject, CFG.basis_payback_max_hours, CFG.max_basis_risk_bps) == (-2.0, 48.0, 150.0)
    assert (CFG.switch_factor_profitable, CFG.switch_factor_unprofitable) == (0.5, 0.8)
    assert (CFG.health_reduce, CFG.health_close, CFG.health_target) == (1.5, 1.2, 2.0)
    assert CFG.score_weights == (0.3, 0.3, 0.2, 0.2)


def test_fees_come_from_the_registry_and_can_be_overridden() -> None:
    assert CFG.fees("hyperliquid") == FeeSchedule(maker=0.00015, taker=0.00045)
    assert CFG.fees("binance") == FeeSchedule(maker=0.0002, taker=0.0005)
    assert CFG.fees("some-new-dex") == FeeSchedule(maker=0.0002, taker=0.0005)  # spec default
    from types import MappingProxyType

    cfg = replace(CFG, fee_overrides=MappingProxyType({"binance": FeeSchedule(0.0, 0.0001)}))
    assert cfg.fees("binance") == FeeSchedule(0.0, 0.0001)


# ------------------------------------------------------------------------------------------ §2 economics


def test_gross_and_net_yield() -> None:
    # F_high 20 % APR, F_low 5 % APR, L = 3 → gross 45 %
    assert gross_yield(0.20, 0.05, 3.0) == pytest.approx(0.45)
    # round-trip costs 0.3 % of the base, held 7 days → 0.003 × 365 / 7 = 15.642857 % a year
    assert net_yield(0.45, 0.003, 7.0) == pytest.approx(0.45 - 0.15642857142857142)
    # vectorised over candidates
    np.testing.assert_allclose(gross_yield(np.array([0.2, 0.1]), np.array([0.05, 0.1]), np.array([3.0, 5.0])),
                               [0.45, 0.0])


def test_plan_net_apy_puts_costs_on_the_margin_base() -> None:
    # spread 1e-5 / h = 8.76 % APR, L = 2 → gross 17.52 %; costs 20 USD on 10,000 notional = 5,000 margin
    # → 0.4 % of margin, × 365 / 7 = 20.857143 % → net −3.337143 %
    assert plan_net_apy(1e-5, 2.0, 20.0, 10_000.0, 168.0) == pytest.approx(0.1752 - 0.004 * 365 / 7)


def test_hourly_return_and_break_even() -> None:
    # spread 8.76 % APR on 10,000 USD → 0.1 USD per hour
    assert hourly_funding_return(0.0876, 10_000.0) == pytest.approx(0.1)
    # 20 USD of costs / 0.1 USD per hour = 200 h
    assert break_even_hours(20.0, 0.1) == pytest.approx(200.0)
    np.testing.assert_array_equal(break_even_hours(np.array([20.0, 20.0]), np.array([0.0, -0.1])), [np.inf, np.inf])


def test_break_even_rejection_needs_both_conditions() -> None:
    # 200 h > 168 h and net over 168 h = 0.1 × 168 − 20 = −3.2 ≤ 0 → reject
    assert break_even_reject(200.0, 0.1 * 168 - 20.0)
    assert not break_even_reject(150.0, 0.1 * 168 - 15.0)  # break-even under a week
    assert not break_even_reject(200.0, 5.0)  # over a week but a positive expected net (longer horizon)


def test_fees_entry_maker_exit_taker() -> None:
    hl, bn = CFG.fees("hyperliquid"), CFG.fees("binance")
    # entry: 10,000 × (0.015 % + 0.02 %) = 3.5; exit: 10,000 × (0.045 % + 0.05 %) = 9.5
    assert entry_fees_usd(10_000.0, hl.maker, bn.maker) == pytest.approx(3.5)
    assert exit_fees_usd(10_000.0, hl.taker, bn.taker) == pytest.approx(9.5)


def test_square_root_slippage() -> None:
    # 1 % × sqrt(10,000 / 1,000,000) = 0.1 %
    assert sqrt_impact(10_000.0, 1_000_000.0, 0.01) == pytest.approx(0.001)
    # 4 × the liquidity → half the impact
    assert sqrt_impact(10_000.0, 4_000_000.0, 0.01) == pytest.approx(0.0005)
    # round trip, both legs: 2 × 10,000 × (0.1 % + 0.05 %) = 30 USD
    assert round_trip_slippage_usd(10_000.0, 1e6, 4e6, 0.01) == pytest.approx(30.0)
    assert math.isnan(float(sqrt_impact(10_000.0, NAN, 0.01)))


# ------------------------------------------------------------------------------------------ §3 leverage


def _lev(sigma: float, baseline: float = 0.04, slip: float = NAN, win: float = NAN, cfg: KeeperConfig = DAY,
         duration: float | None = None) -> float:
    k = adjusted_k(sigma, baseline, slip, win, cfg.holding_hours if duration is None else duration, cfg)
    return float(sigma_distance_leverage(k, sigma, cfg))


def test_leverage_base_k() -> None:
    # L = 1 / (5 × 0.04) = 5
    assert _lev(0.04) == pytest.approx(5.0)


def test_leverage_high_volatility_adds_one() -> None:
    # σ 0.04 > 1.5 × baseline 0.02 → K = 6 → L = 1 / 0.24 = 4.1667
    assert float(adjusted_k(0.04, 0.02, NAN, NAN, 24.0, DAY)) == pytest.approx(6.0)
    assert _lev(0.04, baseline=0.02) == pytest.approx(1 / 0.24)
    assert _lev(0.04, baseline=0.03) == pytest.approx(5.0)  # 0.04 < 1.5 × 0.03 = 0.045: no adjustment


def test_leverage_long_holding_scales_k() -> None:
    # 96 h holding → × sqrt(96 / 24) = 2 → K = 10 → L = 1 / (10 × 0.04) = 2.5
    assert float(adjusted_k(0.04, 0.04, NAN, NAN, 96.0, DAY)) == pytest.approx(10.0)
    assert _lev(0.04, duration=96.0) == pytest.approx(2.5)
    assert _lev(0.04, duration=6.0) == pytest.approx(5.0)  # a short holding never lowers K
    assert CFG.duration_scale == pytest.approx(math.sqrt(7.0))  # default horizon 168 h


def test_leverage_slippage_adds_half() -> None:
    # expected slippage 0.6 % > 0.5 % → K = 5.5 → L = 1 / 0.22 = 4.5455
    assert _lev(0.04, slip=0.006) == pytest.approx(1 / 0.22)
    assert _lev(0.04, slip=0.004) == pytest.approx(5.0)


def test_leverage_low_win_rate_adds_one() -> None:
    # win rate 40 % < 50 % → K = 6 → L = 4.1667
    assert _lev(0.04, win=0.4) == pytest.approx(1 / 0.24)
    assert _lev(0.04, win=0.6) == pytest.approx(5.0)


def test_leverage_adjustments_sum_then_scale() -> None:
    # (5 + 1 + 0.5 + 1) × sqrt(96/24) = 15
    assert float(adjusted_k(0.04, 0.02, 0.006, 0.4, 96.0, DAY)) == pytest.approx(15.0)


def test_leverage_is_clipped_and_unknown_sigma_gets_l_min() -> None:
    assert _lev(0.01) == pytest.approx(10.0)  # 1 / 0.05 = 20 → L_max
    assert _lev(0.5) == pytest.approx(1.0)  # 1 / 2.5 = 0.4 → L_min
    assert float(sigma_distance_leverage(5.0, NAN, DAY)) == 1.0
    assert float(sigma_distance_leverage(5.0, 0.0, DAY)) == 10.0


def test_liquidation_distance_and_sigma_from_bars() -> None:
    assert liquidation_distance(4.0, 0.005) == pytest.approx(0.245)  # 1/4 − 0.5 %
    # 15-minute σ 0.5 % → σ_daily = 0.005 × sqrt(96) = 4.899 %
    assert sigma_from_bars(0.005, 15.0) == pytest.approx(0.005 * math.sqrt(96))


# ------------------------------------------------------------------------------------------ §3 sizing


def _size(**kw: float) -> tuple[float, str]:
    args = {"balance_short": 1e9, "balance_long": 1e9, "leverage": 2.0, "oi_short": NAN, "oi_long": NAN,
            "volume_short": NAN, "volume_long": NAN, "twap_size": NAN}
    args.update(kw)
    size, binding = position_size(**args, config=CFG)  # type: ignore[arg-type]
    return float(size), SIZE_CONSTRAINTS[int(binding)]


def test_sizing_balance_binds() -> None:
    # min(1,000, 2,000) × 0.9 × L 2 = 1,800
    assert _size(balance_short=1_000.0, balance_long=2_000.0) == (pytest.approx(1_800.0), "balance")


def test_sizing_max_position_binds() -> None:
    assert _size() == (pytest.approx(10_000.0), "max_position")


def test_sizing_open_interest_binds() -> None:
    # 5 % × min(100,000, 150,000) = 5,000
    assert _size(oi_short=100_000.0, oi_long=150_000.0) == (pytest.approx(5_000.0), "open_interest")
    # one leg's OI unknown: the known leg still bounds it (5 % × 150,000 = 7,500)
    assert _size(oi_long=150_000.0) == (pytest.approx(7_500.0), "open_interest")


def test_sizing_twap_binds() -> None:
    assert _size(twap_size=3_000.0) == (pytest.approx(3_000.0), "twap")


def test_sizing_volume_binds() -> None:
    # 5 % × min(120,000, 900,000) = 6,000
    assert _size(volume_short=120_000.0, volume_long=900_000.0) == (pytest.approx(6_000.0), "volume")


def test_sizing_volume_minimum_min_size_and_drawdown() -> None:
    assert low_volume(80_000.0, 900_000.0, CFG)  # smaller venue under 100,000 USD
    assert not low_volume(120_000.0, NAN, CFG)
    assert not low_volume(NAN, NAN, CFG)  # unknown volume is not evidence of a small market
    assert below_min_size(4.99, CFG) and not below_min_size(5.0, CFG) and below_min_size(NAN, CFG)
    assert drawdown_scale(0.125, 0.25) == pytest.approx(0.5)
    size, _ = position_size(1e9, 1e9, 2.0, NAN, NAN, NAN, NAN, NAN, CFG, drawdown=0.125)
    assert float(size) == pytest.approx(5_000.0)


def test_sizing_is_vectorised() -> None:
    size, binding = position_size(np.array([1_000.0, 1e9]), np.array([2_000.0, 1e9]), np.array([2.0, 2.0]),
                                  np.array([NAN, 100_000.0]), np.array([NAN, 150_000.0]), NAN, NAN, NAN, CFG)
    np.testing.assert_allclose(size, [1_800.0, 5_000.0])
    assert [SIZE_CONSTRAINTS[b] for b in binding] == ["balance", "open_interest"]


# ------------------------------------------------------------------------------------------ §5 basis


def test_basis_zscore_rejects_at_minus_two() -> None:
    # (−30 − (−5)) / 10 = −2.5 ≤ −2 → reject; payback: 30 bp × 10,000 = 30 USD / 1 USD/h = 30 h ≤ 48 → fine
    assert float(basis_z(-30.0, -5.0, 10.0, 168, CFG)) == pytest.approx(-2.5)
    z, pay, fb = basis_checks(-30.0, -5.0, 10.0, 168, 10_000.0, 1.0, CFG)
    assert (bool(z), bool(pay), bool(fb)) == (True, False, False)
    z, _, _ = basis_checks(-25.0, -5.0, 10.0, 168, 10_000.0, 1.0, CFG)  # exactly −2 → reject
    assert bool(z)
    z, _, _ = basis_checks(-20.0, -5.0, 10.0, 168, 10_000.0, 1.0, CFG)  # −1.5 → keep
    assert not bool(z)


def test_basis_payback_rejects_over_48h() -> None:
    # basis −20 bp (against) on 10,000 → 20 USD; at 0.3 USD/h → 66.7 h > 48 → reject; at 0.5 → 40 h
    assert basis_payback_hours(-20.0, 10_000.0, 0.3) == pytest.approx(20.0 / 0.3)
    z, pay, fb = basis_checks(-20.0, -20.0, 10.0, 168, 10_000.0, 0.3, CFG)  # z = 0
    assert (bool(z), bool(pay), bool(fb)) == (False, True, False)
    _, pay, _ = basis_checks(-20.0, -20.0, 10.0, 168, 10_000.0, 0.5, CFG)
    assert not bool(pay)
    # a basis in favour never needs paying back
    assert basis_payback_hours(20.0, 10_000.0, 0.01) == 0.0


def test_basis_fallback_without_history_rejects_over_150bp() -> None:
    z, pay, fb = basis_checks(160.0, NAN, NAN, 0, 10_000.0, 1.0, CFG)
    assert (bool(z), bool(pay), bool(fb)) == (False, False, True)
    _, _, fb = basis_checks(140.0, NAN, NAN, 0, 10_000.0, 1.0, CFG)
    assert not bool(fb)
    # too little history (5 < 24 observations) counts as none
    assert math.isnan(float(basis_z(160.0, 0.0, 10.0, 5, CFG)))
    assert float(basis_risk_bp(-12.0)) == 12.0 and float(basis_risk_bp(12.0)) == 0.0


# ------------------------------------------------------------------------------------------ §6.2 health


def test_health_thresholds() -> None:
    assert list(health_actions(np.array([1.6, 1.4, 1.1]), CFG)) == ["hold", "reduce_50", "close"]
    np.testing.assert_allclose(reduce_size(np.array([1_000.0, 1_000.0, 1_000.0]), np.array([1.6, 1.4, 1.1]), CFG),
                               [1_000.0, 500.0, 0.0])
    assert list(health_actions(np.array([1.5, 1.2, NAN]), CFG)) == ["hold", "reduce_50", "close"]
    assert list(below_target(np.array([1.6, 2.5]), CFG)) == [True, False]
    assert health_factor(300.0, 200.0) == pytest.approx(1.5)


# ------------------------------------------------------------------------------------------ §6.4 switching


def test_switch_when_current_not_yet_profitable() -> None:
    # remaining = 100 − 20 = 80 h → threshold 0.8 × 80 = 64 h
    # new_be = 40 + (10 exit + 5 entry) / 1.0 = 55 h < 64 → switch
    assert switch_break_even(40.0, 1.0, 10.0, 5.0) == pytest.approx(55.0)
    ok, compared, thr = should_switch(100.0, 20.0, 0.2, 10.0, 40.0, 1.0, 5.0, CFG)
    assert bool(ok) and float(compared) == pytest.approx(55.0) and float(thr) == pytest.approx(64.0)
    # new_be = 50 + 15 = 65 h ≥ 64 → stay
    ok, _, _ = should_switch(100.0, 20.0, 0.2, 10.0, 50.0, 1.0, 5.0, CFG)
    assert not bool(ok)


def test_switch_when_current_already_profitable() -> None:
    # remaining = 50 − 60 = −10 ≤ 0 → profitable branch; new_be = 20 + 15 / 1.0 = 35 h;
    # extra earnings 1.0 − 0.5 = 0.5 USD/h → 35 × 1.0 / 0.5 = 70 h < 0.5 × 168 = 84 h → switch
    ok, compared, thr = should_switch(50.0, 60.0, 0.5, 10.0, 20.0, 1.0, 5.0, CFG)
    assert bool(ok) and float(compared) == pytest.approx(70.0) and float(thr) == pytest.approx(84.0)
    # current earns 0.8: gain 0.2 → 175 h > 84 → stay
    ok, compared, _ = should_switch(50.0, 60.0, 0.8, 10.0, 20.0, 1.0, 5.0, CFG)
    assert not bool(ok) and float(compared) == pytest.approx(175.0)
    # a plan earning less than the profitable position never replaces it
    ok, compared, _ = should_switch(50.0, 60.0, 1.5, 10.0, 1.0, 1.0, 0.0, CFG)
    assert not bool(ok) and math.isinf(float(compared))


def test_switch_hysteresis_and_losing_current() -> None:
    # a position held 0.5 h (< the 8 h minimum hold) is never switched, however good the alternative
    ok, _, _ = should_switch(100.0, 0.5, 0.2, 10.0, 1.0, 10.0, 1.0, CFG)
    assert not bool(ok)
    # a current position whose spread has turned negative has an infinite break-even: a plan that breaks even
    # within 168 h wins (new_be = 50 + 15 / 1.0 = 65 h) …
    ok, _, _ = should_switch(math.inf, 10.0, -0.1, 10.0, 50.0, 1.0, 5.0, CFG)
    assert bool(ok)
    # … but not one that would not be entered on its own (new_be = 150 + 15 / 0.1 = 300 h > 168 h)
    ok, _, _ = should_switch(math.inf, 10.0, -0.1, 10.0, 150.0, 0.1, 5.0, CFG)
    assert not bool(ok)
    # vectorised over positions × plans
    ok, _, _ = should_switch(np.array([[100.0], [50.0]]), np.array([[20.0], [60.0]]), np.array([[0.2], [0.5]]),
                             10.0, np.array([[20.0, 50.0]]), 1.0, 5.0, CFG)
    # new_be 35 / 65 h: vs 64 h (unprofitable) → [yes, no]; vs 84 h on 35 / 0.5 = 70, 65 / 0.5 = 130 → [yes, no]
    assert ok.tolist() == [[True, False], [True, False]]


# ------------------------------------------------------------------------------------------ §4 score


def test_score_terms_are_normalised() -> None:
    # consistency 0.8; 10 % APR → 0.5; min OI 1e7 → (7 − 5) / 4 = 0.5; break-even 24 h → 0.5
    s = composite_score(0.8, 0.10 / 8760, 1e7, 24.0, CFG)
    assert float(s) == pytest.approx(0.3 * 0.8 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5)
    # the extremes: everything perfect → 1 is approached, nothing known → 0
    assert float(composite_score(NAN, NAN, NAN, math.inf, CFG)) == 0.0
    assert float(composite_score(1.0, 1e6, 1e12, 0.0, CFG)) == pytest.approx(1.0, abs=1e-6)
