"""The straightforward per-pair planner: the spec's pseudo-code as a Python loop, scalar ``math`` only.

This is the oracle the vectorised :mod:`fundarb_core.strategy.planning` is tested against (same candidates,
same plans, same reasons) and the baseline the benchmark compares it with.  It deliberately shares no
formula code with the vectorised path — only the configuration, the snapshot and the reason names — so an
indexing or broadcasting mistake there cannot be reproduced here.  It applies the same documented choices
(see the planning module's docstring).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.planning import PLAN_COLUMNS, REASONS
from fundarb_core.strategy.sizing import SIZE_CONSTRAINTS
from fundarb_core.strategy.snapshot import Snapshot

HOURS_PER_YEAR = 8760.0


def _known(x: float) -> bool:
    return not math.isnan(x)


def _fmax(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def _nanmin(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return min(a, b)


def _leg_sigma(grid: np.ndarray, i: int, j: int) -> float:
    x = float(grid[i, j])
    if _known(x):
        return x
    known = [float(y) for y in grid[i] if _known(float(y))]
    return max(known) if known else math.nan


def _liquidity(s: Snapshot, i: int, j: int) -> float:
    for x in (float(s.depth_usd[i, j]), float(s.oi_usd[i, j]), float(s.volume_usd_24h[i, j])):
        if x > 0:
            return x
    return math.nan


def _k(sigma: float, baseline: float, slippage: float, win: float, c: KeeperConfig) -> float:
    k = c.k_base
    if sigma > c.high_vol_ratio * baseline:
        k += c.k_high_vol_add
    if slippage > c.slippage_k_threshold:
        k += c.k_slippage_add
    if win < c.low_win_rate:
        k += c.k_low_win_rate_add
    return k * max(1.0, math.sqrt(c.holding_hours / c.k_duration_reference_hours))


def _leverage(k: float, sigma: float, c: KeeperConfig) -> float:
    if math.isnan(sigma):
        return c.leverage_min
    raw = math.inf if k * sigma == 0 else 1.0 / (k * sigma)
    return min(max(raw, c.leverage_min), c.leverage_max)


def _size(s: Snapshot, si: int, li: int, lev: float, oi_s: float, oi_l: float, vol_s: float, vol_l: float,
          twap: float, c: KeeperConfig) -> tuple[float, int]:
    caps = [
        min(float(s.balances_usd[si]), float(s.balances_usd[li])) * c.balance_fraction * lev,
        c.max_position_size_usd,
        c.oi_fraction * _nanmin(oi_s, oi_l),
        twap,
        c.volume_fraction * _nanmin(vol_s, vol_l),
    ]
    caps = [math.inf if math.isnan(x) else x for x in caps]
    best = min(range(len(caps)), key=lambda n: (caps[n], n))
    scale = min(max(1.0 - s.drawdown / c.max_drawdown, 0.0), 1.0)
    return caps[best] * scale, best


def _impact(size: float, liquidity: float, c: KeeperConfig) -> float:
    if math.isnan(liquidity):  # the flat fallback slippage per fill, or unknown when it is off
        return c.fallback_slippage_bps / 1e4 if "slippage" in c.fallbacks else math.nan
    return c.base_impact * math.sqrt(size / liquidity) if liquidity > 0 else math.inf


def _thin_impact(size: float, liq_s: float, liq_l: float, c: KeeperConfig) -> float:
    a, b = _impact(size, liq_s, c), _impact(size, liq_l, c)
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _priced(s: Snapshot, i: int, j: int, c: KeeperConfig) -> tuple[bool, bool]:
    """(own book/bar price, funding-mark price allowed) of one market."""
    own = _known(float(s.mark_price[i, j]))
    mark = _known(float(s.funding_mark_price[i, j])) and "price_funding_mark" in c.fallbacks
    return own, mark


def _fallbacks(s: Snapshot, c: KeeperConfig, i: int, legs: tuple[int, int], liq: tuple[float, float],
               oi_vol: tuple[float, ...], sigma: float, basis: float) -> tuple[list[str], dict[str, bool]]:
    """(fallbacks used, missing-data rejections) of one plan, by the rules of strategy/fallbacks.py."""
    missing = {
        "no_liquidity_data": any(math.isnan(x) for x in liq),
        "no_size_caps": all(math.isnan(x) for x in oi_vol),
        "no_sigma": math.isnan(sigma),
        "basis_unknown": math.isnan(basis),
    }
    switch = {"no_liquidity_data": "slippage", "no_size_caps": "size_caps", "no_sigma": "leverage",
              "basis_unknown": "basis"}
    used = [switch[r] for r in missing if missing[r] and switch[r] in c.fallbacks]
    rejected = {r: missing[r] and switch[r] not in c.fallbacks for r in missing}
    if c.require_basis and missing["basis_unknown"]:
        rejected["basis_unknown"] = True
        used = [u for u in used if u != "basis"]
    any_price = any(any(_priced(s, i, j, c)) for j in range(s.n_venues))
    other_ok = any_price and "price_other_venue" in c.fallbacks
    by_mark = by_other = no_price = False
    for j in legs:
        own, mark = _priced(s, i, j, c)
        if own:
            continue
        if mark:
            by_mark = True
        elif other_ok:
            by_other = True
        else:
            no_price = True
    used += ["price_funding_mark"] * by_mark + ["price_other_venue"] * by_other
    rejected["no_price"] = no_price
    order = ("slippage", "size_caps", "leverage", "price_funding_mark", "price_other_venue", "basis")
    return sorted(used, key=order.index), rejected


def _score(consistency: float, rate: float, liquidity: float, be: float, c: KeeperConfig) -> float:
    cons = min(max(consistency, 0.0), 1.0) if _known(consistency) else 0.0
    apr = max(rate * HOURS_PER_YEAR, 0.0) if _known(rate) else 0.0
    rate_t = apr / (apr + c.score_rate_ref_apr)
    if _known(liquidity) and liquidity > 0:
        lo, hi = math.log10(c.score_liquidity_lo_usd), math.log10(c.score_liquidity_hi_usd)
        liq_t = min(max((math.log10(liquidity) - lo) / (hi - lo), 0.0), 1.0)
    else:
        liq_t = 0.0
    ref = c.score_break_even_ref_hours
    be_t = 0.0 if math.isnan(be) or math.isinf(be) else ref / (ref + max(be, 0.0))
    w = c.score_weights
    return w[0] * cons + w[1] * rate_t + w[2] * liq_t + w[3] * be_t


def reference_cycle(snapshot: Snapshot, config: KeeperConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidates, plans) by a plain loop over every asset and ordered venue pair."""
    c = config or KeeperConfig()
    s = snapshot
    cands: list[dict[str, Any]] = []
    plans: list[dict[str, Any]] = []
    min_spread_h = c.min_spread / 8.0
    for i, asset in enumerate(s.assets):
        listed = [j for j in range(s.n_venues) if _known(float(s.rate_per_hour[i, j]))]
        if len(listed) < 2:
            continue
        for si in range(s.n_venues):
            for li in range(s.n_venues):
                if si == li or si not in listed or li not in listed:
                    continue
                r_s, r_l = float(s.rate_per_hour[i, si]), float(s.rate_per_hour[i, li])
                spread = r_s - r_l  # both per hour: 1h and 8h venues compare on the same unit
                forecast = float(s.forecast_spread_per_hour[i, si, li])
                expected = forecast if _known(forecast) else spread
                if not expected > 0:
                    continue  # oriented by the expected spread: the other orientation is the opportunity

                reason = None
                quality_bad = False
                for j in (si, li):
                    att, fail = float(s.exec_attempts[i, j]), float(s.exec_failures[i, j])
                    q = 1.0 - fail / att if att > 0 else 1.0
                    quality_bad |= q < c.min_market_quality and fail >= c.auto_blacklist_failures
                if str(asset) in c.blacklist:
                    reason = "blacklisted"
                elif s.failed_attempts[i] >= c.cooldown_failures and s.minutes_since_failure[i] < c.cooldown_minutes:
                    reason = "cooldown"
                elif (s.anomaly[i] and c.halt_on_anomaly) or (s.liquidity_stress[i] and c.halt_on_liquidity_stress):
                    reason = "regime_halt"
                elif abs(r_s) > c.max_abs_rate_per_hour or abs(r_l) > c.max_abs_rate_per_hour:
                    reason = "absurd_rate"
                elif quality_bad:
                    reason = "market_quality"
                elif not expected >= (min_spread_h if c.decision_rule == "spec" else 0.0):
                    reason = "below_min_spread"
                cands.append({
                    "asset": str(asset), "short_venue": s.venues[si], "long_venue": s.venues[li],
                    "spread_per_hour": spread, "valid": reason is None, "reason": reason,
                    "expected_spread_per_hour": expected,
                })
                if reason is None:
                    plans.append(_plan(s, c, i, si, li, spread, expected, _known(forecast)))
    cand_df = pd.DataFrame(cands, columns=["asset", "short_venue", "long_venue", "spread_per_hour", "valid", "reason",
                                           "expected_spread_per_hour"])
    plan_cols = ["asset", "short_venue", "long_venue", *PLAN_COLUMNS, "valid", "reason", "k", "sigma_daily",
                 "expected_slippage", "binding_constraint", "expected_net_usd", "basis_z", "fallbacks"]
    return cand_df, pd.DataFrame(plans, columns=plan_cols)


def _plan(s: Snapshot, c: KeeperConfig, i: int, si: int, li: int, spread: float, expected: float,
          has_forecast: bool) -> dict[str, Any]:
    sigma = _fmax(_leg_sigma(s.sigma_daily, i, si), _leg_sigma(s.sigma_daily, i, li))
    baseline = _fmax(_leg_sigma(s.sigma_baseline, i, si), _leg_sigma(s.sigma_baseline, i, li))
    liq_s, liq_l = _liquidity(s, i, si), _liquidity(s, i, li)
    thin = min(liq_s, liq_l) if _known(liq_s) and _known(liq_l) else math.nan
    oi_s, oi_l = float(s.oi_usd[i, si]), float(s.oi_usd[i, li])
    vol_s, vol_l = float(s.volume_usd_24h[i, si]), float(s.volume_usd_24h[i, li])
    twap = float(s.twap_size_usd[i, si, li])
    win = float(s.win_rate[i, si, li])

    # leverage and size: K without the slippage term, then once more with it
    k = _k(sigma, baseline, math.nan, win, c)
    size0, _ = _size(s, si, li, _leverage(k, sigma, c), oi_s, oi_l, vol_s, vol_l, twap, c)
    k = _k(sigma, baseline, _thin_impact(size0, liq_s, liq_l, c), win, c)
    lev = _leverage(k, sigma, c)
    size, binding = _size(s, si, li, lev, oi_s, oi_l, vol_s, vol_l, twap, c)

    fs, fl = c.fees(s.venues[si]), c.fees(s.venues[li])
    entry = size * (fs.maker + fl.maker)
    exit_ = size * (fs.taker + fl.taker)
    slip = 2.0 * size * (_impact(size, liq_s, c) + _impact(size, liq_l, c))
    total = entry + exit_ + slip
    hourly = expected * HOURS_PER_YEAR * size / HOURS_PER_YEAR
    be = math.inf if hourly <= 0 else total / hourly  # break-even; +inf when the spread does not pay
    if math.isnan(hourly) or math.isnan(total):
        be = math.nan
    net = hourly * c.holding_hours - total
    apy = expected * HOURS_PER_YEAR * lev - (total * lev / size) * 365.0 / (c.holding_hours / 24.0) \
        if size > 0 else math.nan

    b = float(s.basis_bp[i, si, li])
    b_mean, b_std, b_n = (float(s.basis_mean_bp[i, si, li]), float(s.basis_std_bp[i, si, li]),
                          float(s.basis_n[i, si, li]))
    z = (b - b_mean) / b_std if b_std > 0 and b_n >= c.basis_min_history else math.nan
    if b < 0:
        payback = abs(b) / 1e4 * size / hourly if hourly > 0 else math.inf
    else:
        payback = 0.0 if _known(b) else math.nan

    used, missing = _fallbacks(s, c, i, (si, li), (liq_s, liq_l), (oi_s, oi_l, vol_s, vol_l), sigma, b)
    reason = None
    if missing["no_liquidity_data"]:
        reason = "no_liquidity_data"
    elif missing["no_size_caps"]:
        reason = "no_size_caps"
    elif missing["no_sigma"]:
        reason = "no_sigma"
    elif missing["no_price"]:
        reason = "no_price"
    elif _nanmin(vol_s, vol_l) < c.min_volume_usd:
        reason = "low_volume"
    elif not size >= c.min_position_usd:
        reason = "below_min_size"
    elif be > c.max_break_even_hours and net <= 0:
        reason = "break_even"
    elif z <= c.basis_z_reject:
        reason = "basis_zscore"
    elif payback > c.basis_payback_max_hours:
        reason = "basis_payback"
    elif math.isnan(z) and abs(b) > c.max_basis_risk_bps:
        reason = "basis_fallback"
    elif missing["basis_unknown"]:
        reason = "basis_unknown"
    assert reason is None or reason in REASONS

    mean_spread = float(s.mean_spread_per_hour[i, si, li])
    rate = expected if has_forecast or math.isnan(mean_spread) else mean_spread
    oi_min = min(oi_s, oi_l) if _known(oi_s) and _known(oi_l) else math.nan
    score = _score(float(s.consistency[i, si, li]), rate, oi_min if _known(oi_min) else thin, be, c)
    return {
        "asset": str(s.assets[i]), "short_venue": s.venues[si], "long_venue": s.venues[li],
        "size_usd": size, "leverage": lev, "entry_fees_usd": entry, "exit_fees_usd": exit_,
        "slippage_usd": slip, "total_costs_usd": total, "expected_hourly_return_usd": hourly,
        "break_even_hours": be, "expected_apy": apy, "basis_risk_bp": max(-b, 0.0) if _known(b) else math.nan,
        "liquidation_distance": max(1.0 / lev - c.maintenance_margin, 0.0), "score": score,
        "valid": reason is None, "reason": reason, "k": k, "sigma_daily": sigma,
        "expected_slippage": _thin_impact(size, liq_s, liq_l, c), "binding_constraint": SIZE_CONSTRAINTS[binding],
        "expected_net_usd": net, "basis_z": z, "fallbacks": ",".join(used),
    }
