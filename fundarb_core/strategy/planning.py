"""Discovery, filtering, planning and the choice of one action per cycle (spec §4–§6.4), all vectorised.

``discover`` turns a :class:`~fundarb_core.strategy.snapshot.Snapshot` into every candidate — each canonical
asset listed on ≥ 2 venues × each ordered venue pair whose per-hour spread is positive — with the first
discovery filter it fails; ``build_plans`` sizes, costs and checks the candidates that pass; ``choose_action``
picks at most one entry or switch.  All of it is numpy over the ``(asset, short, long)`` cube: no Python loop
per pair (the per-pair loop of :mod:`tests.oracles.reference_planner` computes the same plans and is the
test oracle).

Choices the spec leaves open (the formula modules document theirs):

* Orientation: for a pair (i, j) the candidate is the ordered pair with the positive *expected* spread (the
  forecast or predictor of the spread over the holding horizon, where the cycle was given one), else the positive
  *observed* spread (short the venue with the higher per-hour rate); a zero spread yields no candidate.  Both legs
  must have a rate now.
* Expected spread: that forecast, where present, replaces the observed spread in the economics (hourly return,
  break-even, APY), the minimum-spread filter and the score.
* Minimum spread: the spec's ``min_spread`` filters candidates under ``decision_rule="spec"``; the horizon rule
  needs only a positive expected spread here, because its entry condition (the expected spread over the horizon
  pays the round trip) is the economic threshold and a fixed minimum would reject income that pays its costs.
* Missing volatility: a leg without σ takes the largest σ of the same asset on another venue (the same
  underlying); the pair's σ and baseline are the larger of its legs'; with no σ at all the plan gets ``L_min``.
* Slippage in K: "expected slippage" is the one-way impact on the thinner leg at the size the un-adjusted K
  gives; when it exceeds 0.5 %, K gets +0.5 and the plan is re-sized once (a higher K only lowers L, size and
  slippage, so one pass is conservative and the fixed point is not needed).
* Liquidity for slippage: book depth where known, else open interest, else 24 h volume; a leg with no measure
  costs the flat fallback slippage, and a plan that lacks a measure, σ, a price or a basis uses the data
  fallbacks of :mod:`~fundarb_core.strategy.fallbacks` (named in its ``fallbacks`` column) or, with one
  switched off, is rejected for it (``no_liquidity_data``, ``no_size_caps``, ``no_sigma``, ``no_price``,
  ``basis_unknown``).
* A candidate carries the first reason it fails, in the order of :data:`REASONS`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from fundarb_core.domain.plan import Plan
from fundarb_core.domain.positions import PairPosition
from fundarb_core.funding import HOURS_PER_YEAR
from fundarb_core.strategy.basis import basis_checks, basis_risk_bp, basis_z
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.costs import (
    break_even_hours,
    break_even_reject,
    entry_fees_usd,
    exit_fees_usd,
    fill_impact,
    hourly_funding_return,
    plan_net_apy,
    round_trip_slippage_usd,
)
from fundarb_core.strategy.fallbacks import mask_column, plan_fallbacks, slippage_fallback_frac
from fundarb_core.strategy.leverage import adjusted_k, liquidation_distance, sigma_distance_leverage
from fundarb_core.strategy.scoring import composite_score
from fundarb_core.strategy.sizing import SIZE_CONSTRAINTS, below_min_size, low_volume, position_size
from fundarb_core.strategy.snapshot import Snapshot
from fundarb_core.strategy.switching import should_switch

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REASONS: tuple[str, ...] = (
    # discovery filters (candidates)
    "blacklisted", "cooldown", "regime_halt", "absurd_rate", "market_quality", "below_min_spread",
    # planning checks (plans)
    "no_liquidity_data", "no_size_caps", "no_sigma", "no_price",  # missing data (fallbacks.py)
    "low_volume", "below_min_size", "break_even", "basis_zscore", "basis_payback",
    "basis_fallback", "basis_unknown",
)
"""Rejection reasons in priority order; a candidate or plan carries the first one it fails."""
_CODE = {r: i + 1 for i, r in enumerate(REASONS)}  # 0 = accepted


def _first_reason(conditions: Sequence[tuple[str, npt.NDArray[np.bool_]]], n: int) -> IntArray:
    """Code of the first true condition per element (0 when none), conditions in priority order."""
    code = np.zeros(n, dtype="int64")
    for name, cond in reversed(conditions):
        code = np.where(cond, _CODE[name], code)
    return code


@functools.lru_cache(maxsize=256)
def _dtype(values: tuple[str, ...]) -> pd.CategoricalDtype:
    """One categorical dtype per label set (validating categories costs more than building the column)."""
    return pd.CategoricalDtype(pd.Index(list(values), dtype=object))


def _reason_column(codes: IntArray) -> pd.Categorical:
    """Reason codes as a categorical of names, missing (NaN) for accepted rows."""
    return pd.Categorical.from_codes(codes - 1, dtype=_dtype(REASONS))


def _names(values: Sequence[str], idx: IntArray) -> pd.Categorical:
    return pd.Categorical.from_codes(idx, dtype=_dtype(tuple(values)))


def _fee_arrays(venues: Sequence[str], config: KeeperConfig) -> tuple[FloatArray, FloatArray]:
    fees = [config.fees(v) for v in venues]
    return np.array([f.maker for f in fees]), np.array([f.taker for f in fees])


def _fill_by_asset(grid: FloatArray) -> FloatArray:
    """NaN cells of an (asset, venue) grid take the asset's largest known value on another venue."""
    asset_max = np.fmax.reduce(grid, axis=1)
    return np.where(np.isnan(grid), asset_max[:, None], grid)


def leg_liquidity(snapshot: Snapshot) -> FloatArray:
    """Liquidity per (asset, venue) for the √-impact: depth, else open interest, else 24 h volume (> 0)."""
    s = snapshot
    return np.where(s.depth_usd > 0, s.depth_usd,
                    np.where(s.oi_usd > 0, s.oi_usd, np.where(s.volume_usd_24h > 0, s.volume_usd_24h, np.nan)))


def market_quality(snapshot: Snapshot) -> FloatArray:
    """Share of recent executions on each market that succeeded (1 with no executions)."""
    att, fail = snapshot.exec_attempts, snapshot.exec_failures
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(att > 0, 1.0 - fail / att, 1.0)


# ---------------------------------------------------------------------------------------------- discovery


def _discover_arrays(snapshot: Snapshot, config: KeeperConfig) -> dict[str, np.ndarray]:
    s, c = snapshot, config
    v = s.n_venues
    r = s.rate_per_hour
    listed = ~np.isnan(r)
    multi = listed.sum(axis=1) >= 2
    spread_cube = r[:, :, None] - r[:, None, :]
    fc_cube = s.forecast_spread_per_hour
    with np.errstate(invalid="ignore"):  # oriented by the expected spread where one is given
        mask = np.where(np.isnan(fc_cube), spread_cube > 0, fc_cube > 0) & ~np.isnan(spread_cube) \
            & multi[:, None, None] & ~np.eye(v, dtype=bool)[None, :, :]
    a, sv, lv = np.nonzero(mask)
    flat = (a * v + sv) * v + lv
    av_s, av_l = a * v + sv, a * v + lv
    r_flat, iv_flat = r.ravel(), s.interval_hours.ravel()
    spread = spread_cube.ravel()[flat]
    forecast = s.forecast_spread_per_hour.ravel()[flat]
    has_forecast = ~np.isnan(forecast)
    expected = np.where(has_forecast, forecast, spread)
    r_s, r_l = r_flat[av_s], r_flat[av_l]

    blacklisted = np.isin(s.assets.astype(str), np.array(sorted(c.blacklist), dtype=str))
    cooldown = (s.failed_attempts >= c.cooldown_failures) & (s.minutes_since_failure < c.cooldown_minutes)
    halt = (s.anomaly & c.halt_on_anomaly) | (s.liquidity_stress & c.halt_on_liquidity_stress)
    bad_market = ((market_quality(s) < c.min_market_quality) & (s.exec_failures >= c.auto_blacklist_failures)).ravel()
    n = len(a)
    code = _first_reason([
        ("blacklisted", blacklisted[a]),
        ("cooldown", cooldown[a]),
        ("regime_halt", halt[a]),
        ("absurd_rate", (np.abs(r_s) > c.max_abs_rate_per_hour) | (np.abs(r_l) > c.max_abs_rate_per_hour)),
        ("market_quality", bad_market[av_s] | bad_market[av_l]),
        ("below_min_spread", ~(expected >= (c.min_spread_per_hour if c.decision_rule == "spec" else 0.0))
         | (expected <= 0)),
    ], n)
    return {
        "asset_idx": a, "short_idx": sv, "long_idx": lv,
        "short_rate_per_hour": r_s, "long_rate_per_hour": r_l,
        "short_interval_hours": iv_flat[av_s], "long_interval_hours": iv_flat[av_l],
        "spread_per_hour": spread, "spread_apr": spread * HOURS_PER_YEAR,
        "expected_spread_per_hour": expected, "has_forecast": has_forecast,
        "reason_code": code,
    }


def _frame(snapshot: Snapshot, arrays: dict[str, np.ndarray], first: Sequence[str]) -> pd.DataFrame:
    cols: dict[str, Any] = {
        "asset": _names(list(snapshot.assets), arrays["asset_idx"]),
        "short_venue": _names(snapshot.venues, arrays["short_idx"]),
        "long_venue": _names(snapshot.venues, arrays["long_idx"]),
    }
    for k in first:
        cols[k] = arrays[k]
    code = arrays["reason_code"]
    cols["valid"] = code == 0
    cols["reason"] = _reason_column(code)
    for k, val in arrays.items():
        if k not in cols and k != "reason_code":
            cols[k] = val
    return pd.DataFrame(cols, copy=False)


def discover(snapshot: Snapshot, config: KeeperConfig | None = None) -> pd.DataFrame:
    """Every candidate (asset on ≥ 2 venues × ordered venue pair with a positive per-hour spread).

    Columns: ``asset``, ``short_venue``, ``long_venue``, ``valid`` (passed every filter), ``reason`` (the first
    filter failed, NaN when valid), the legs' per-hour rates and intervals, ``spread_per_hour`` (observed,
    per hour: a 1h and an 8h venue compare on the same unit), ``spread_apr``, ``expected_spread_per_hour``
    (the forecast where present), ``has_forecast`` and the grid indices ``asset_idx``, ``short_idx``,
    ``long_idx``.  Rows are in (asset, short venue, long venue) grid order.
    """
    cfg = config or KeeperConfig()
    return _frame(snapshot, _discover_arrays(snapshot, cfg), ["spread_per_hour"])


# ---------------------------------------------------------------------------------------------- planning

PLAN_COLUMNS: tuple[str, ...] = (
    "size_usd", "leverage", "entry_fees_usd", "exit_fees_usd", "slippage_usd", "total_costs_usd",
    "expected_hourly_return_usd", "break_even_hours", "expected_apy", "basis_risk_bp", "liquidation_distance",
    "score",
)
"""The §5 plan fields (after asset / short / long / valid / reason), in frame order."""


def _plan_arrays(snapshot: Snapshot, cand: dict[str, np.ndarray], config: KeeperConfig) -> dict[str, np.ndarray]:
    s, c = snapshot, config
    v = s.n_venues
    a, sv, lv = cand["asset_idx"], cand["short_idx"], cand["long_idx"]
    flat = (a * v + sv) * v + lv
    av_s, av_l = a * v + sv, a * v + lv
    expected = cand["expected_spread_per_hour"]
    n = len(a)

    sig = _fill_by_asset(s.sigma_daily).ravel()
    base = _fill_by_asset(s.sigma_baseline).ravel()
    sigma = np.fmax(sig[av_s], sig[av_l])
    baseline = np.fmax(base[av_s], base[av_l])
    liq = leg_liquidity(s).ravel()
    liq_s, liq_l = liq[av_s], liq[av_l]
    thin = np.minimum(liq_s, liq_l)  # NaN when either leg is unknown
    oi, vol = s.oi_usd.ravel(), s.volume_usd_24h.ravel()
    oi_s, oi_l, vol_s, vol_l = oi[av_s], oi[av_l], vol[av_s], vol[av_l]
    twap = s.twap_size_usd.ravel()[flat]
    win = s.win_rate.ravel()[flat]
    bal_s, bal_l = s.balances_usd[sv], s.balances_usd[lv]

    def sized(k: FloatArray) -> tuple[FloatArray, FloatArray, IntArray]:
        lev = sigma_distance_leverage(k, sigma, c)
        size, binding = position_size(bal_s, bal_l, lev, oi_s, oi_l, vol_s, vol_l, twap, c, s.drawdown)
        return lev, size, binding

    no_slip = np.full(n, np.nan)
    slip_flat = slippage_fallback_frac(c)

    def thin_impact(size: FloatArray) -> FloatArray:  # the thinner leg's; NaN when a leg has none (fallback off)
        return np.maximum(fill_impact(size, liq_s, c.base_impact, slip_flat),
                          fill_impact(size, liq_l, c.base_impact, slip_flat))

    k0 = adjusted_k(sigma, baseline, no_slip, win, c.holding_hours, c)
    _, size0, _ = sized(k0)
    k = adjusted_k(sigma, baseline, thin_impact(size0), win, c.holding_hours, c)
    lev, size, binding = sized(k)
    slip_frac = thin_impact(size)

    maker, taker = _fee_arrays(s.venues, c)
    entry = entry_fees_usd(size, maker[sv], maker[lv])
    exit_ = exit_fees_usd(size, taker[sv], taker[lv])
    slip_usd = round_trip_slippage_usd(size, liq_s, liq_l, c.base_impact, slip_flat)
    total = entry + exit_ + slip_usd
    hourly = hourly_funding_return(expected * HOURS_PER_YEAR, size)
    be = break_even_hours(total, hourly)
    net_usd = hourly * c.holding_hours - total
    apy = plan_net_apy(expected, lev, total, size, c.holding_hours)

    b = s.basis_bp.ravel()[flat]
    b_mean, b_std, b_n = s.basis_mean_bp.ravel()[flat], s.basis_std_bp.ravel()[flat], s.basis_n.ravel()[flat]
    z_rej, pay_rej, fb_rej = basis_checks(b, b_mean, b_std, b_n, size, hourly, c)
    fallback_mask, missing = plan_fallbacks(s, a, av_s, av_l, liq_s, liq_l, oi_s, oi_l, vol_s, vol_l, sigma, b, c)

    consistency = s.consistency.ravel()[flat]
    mean_spread = s.mean_spread_per_hour.ravel()[flat]
    rate_for_score = np.where(cand["has_forecast"], expected, np.where(np.isnan(mean_spread), expected, mean_spread))
    oi_min = np.minimum(oi_s, oi_l)
    score = composite_score(consistency, rate_for_score, np.where(np.isnan(oi_min), thin, oi_min), be, c)

    code = _first_reason([
        ("no_liquidity_data", missing["no_liquidity_data"]),
        ("no_size_caps", missing["no_size_caps"]),
        ("no_sigma", missing["no_sigma"]),
        ("no_price", missing["no_price"]),
        ("low_volume", low_volume(vol_s, vol_l, c)),
        ("below_min_size", below_min_size(size, c)),
        ("break_even", break_even_reject(be, net_usd, c.max_break_even_hours)),
        ("basis_zscore", z_rej),
        ("basis_payback", pay_rej),
        ("basis_fallback", fb_rej),
        ("basis_unknown", missing["basis_unknown"]),
    ], n)
    return {
        "asset_idx": a, "short_idx": sv, "long_idx": lv,
        "size_usd": size, "leverage": lev, "entry_fees_usd": entry, "exit_fees_usd": exit_,
        "slippage_usd": slip_usd, "total_costs_usd": total, "expected_hourly_return_usd": hourly,
        "break_even_hours": be, "expected_apy": apy, "basis_risk_bp": basis_risk_bp(b),
        "liquidation_distance": liquidation_distance(lev, c.maintenance_margin), "score": score,
        "spread_per_hour": cand["spread_per_hour"], "expected_spread_per_hour": expected,
        "has_forecast": cand["has_forecast"], "short_interval_hours": cand["short_interval_hours"],
        "long_interval_hours": cand["long_interval_hours"],
        "k": k, "sigma_daily": sigma, "expected_slippage": slip_frac,
        "binding_constraint": binding, "expected_net_usd": net_usd,
        "gross_apy": expected * HOURS_PER_YEAR * lev, "basis_bp": b, "basis_z": basis_z(b, b_mean, b_std, b_n, c),
        "fallbacks": fallback_mask,
        "reason_code": code,
    }


def _plans_frame(snapshot: Snapshot, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    arrays = dict(arrays)
    arrays["binding_constraint"] = pd.Categorical.from_codes(arrays["binding_constraint"],
                                                             dtype=_dtype(tuple(SIZE_CONSTRAINTS)))
    arrays["fallbacks"] = mask_column(arrays["fallbacks"])
    return _frame(snapshot, arrays, PLAN_COLUMNS)


def _select(cand: dict[str, np.ndarray], keep: npt.NDArray[np.bool_]) -> dict[str, np.ndarray]:
    return {k: val[keep] for k, val in cand.items()}


def build_plans(candidates: pd.DataFrame, snapshot: Snapshot, config: KeeperConfig | None = None) -> pd.DataFrame:
    """Execution plans (spec §5) for the candidates that passed discovery, valid or with a rejection reason.

    Columns: ``asset``, ``short_venue``, ``long_venue``, then :data:`PLAN_COLUMNS` (``size_usd``,
    ``leverage``, ``entry_fees_usd``, ``exit_fees_usd``, ``slippage_usd``, ``total_costs_usd``,
    ``expected_hourly_return_usd``, ``break_even_hours``, ``expected_apy`` (net, on one leg's margin),
    ``basis_risk_bp``, ``liquidation_distance``, ``score``), ``valid`` and ``reason``, and the working
    figures (``k``, ``sigma_daily``, ``expected_slippage``, ``binding_constraint``, ``expected_net_usd``,
    ``gross_apy``, ``basis_bp``, ``basis_z``, spreads and intervals, grid indices) and ``fallbacks`` (the data
    fallbacks the plan uses, comma-separated; :mod:`~fundarb_core.strategy.fallbacks`).  Rows keep grid order.

    The score is computed here, not at discovery, because its break-even term needs the plan's costs.
    """
    cfg = config or KeeperConfig()
    ok = candidates["valid"].to_numpy(dtype=bool)
    cols = ("asset_idx", "short_idx", "long_idx", "spread_per_hour", "expected_spread_per_hour", "has_forecast",
            "short_interval_hours", "long_interval_hours")
    cand = {k: candidates[k].to_numpy()[ok] for k in cols}
    return _plans_frame(snapshot, _plan_arrays(snapshot, cand, cfg))


# ---------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Position:
    """An open (two-legged) position as the switching rule sees it.

    ``total_costs_usd`` are the round-trip costs of the position as planned at entry (entry and exit fees,
    slippage) and ``hourly_return_usd`` the funding it earns per hour at the current rates (see
    :func:`mark_positions`); its break-even is their ratio.
    """

    asset: str
    short_venue: str
    long_venue: str
    size_usd: float
    total_costs_usd: float
    exit_fees_usd: float
    hourly_return_usd: float
    hours_held: float = 0.0

    @property
    def break_even_hours(self) -> float:
        return float(break_even_hours(self.total_costs_usd, self.hourly_return_usd))

    @classmethod
    def from_plan(cls, plan: Plan | pd.Series | dict[str, Any], hours_held: float = 0.0) -> Position:
        """The position a plan opens."""
        p = plan if isinstance(plan, Plan) else Plan.from_row(dict(plan))
        return cls(asset=p.asset, short_venue=p.short_venue, long_venue=p.long_venue, size_usd=p.size_usd,
                   total_costs_usd=p.total_costs_usd, exit_fees_usd=p.exit_fees_usd,
                   hourly_return_usd=p.expected_hourly_return_usd, hours_held=hours_held)

    @classmethod
    def from_pair(cls, p: PairPosition, now: datetime) -> Position:
        """The switching rule's view of a held pair position at ``now`` (the one conversion)."""
        return cls(asset=p.asset, short_venue=p.short_venue, long_venue=p.long_venue, size_usd=p.size_usd,
                   total_costs_usd=p.total_costs_usd or 0.0, exit_fees_usd=p.exit_fees_usd or 0.0,
                   hourly_return_usd=p.expected_hourly_usd or 0.0,
                   hours_held=(pd.Timestamp(now) - pd.Timestamp(p.opened_at)).total_seconds() / 3600.0)


def mark_positions(positions: Sequence[Position], snapshot: Snapshot) -> list[Position]:
    """Positions with ``hourly_return_usd`` re-marked at the snapshot's expected spread (kept where unlisted).

    The expected spread is the one plans use: the pair's forecast where present, else the observed per-hour
    spread, so the switching rule compares the current position and the new plans on the same footing.
    """
    a_idx = {str(x): i for i, x in enumerate(snapshot.assets)}
    v_idx = {x: i for i, x in enumerate(snapshot.venues)}
    out = []
    for p in positions:  # a handful of positions: no need to vectorise
        i, si, li = a_idx.get(p.asset), v_idx.get(p.short_venue), v_idx.get(p.long_venue)
        if i is None or si is None or li is None:
            out.append(p)
            continue
        spread = snapshot.forecast_spread_per_hour[i, si, li]
        if np.isnan(spread):
            spread = snapshot.rate_per_hour[i, si] - snapshot.rate_per_hour[i, li]
        out.append(p if np.isnan(spread) else replace(p, hourly_return_usd=float(spread * p.size_usd)))
    return out


ActionKind = Literal["enter", "switch", "exit", "none"]


@dataclass(frozen=True)
class Action:
    """What the cycle does: ``enter`` a plan, ``switch`` a position (``close``) into a plan, ``exit`` a position
    to flat (``close``, no plan), or ``none``.

    ``compared_hours`` / ``threshold_hours`` are the switching rule's figures for a switch; ``details`` holds what
    the deciding rule wants recorded (e.g. the predictor and its value).
    """

    kind: ActionKind
    reason: str
    plan: Plan | None = None
    close: Position | None = None
    compared_hours: float = float("nan")
    threshold_hours: float = float("nan")
    details: dict[str, Any] = field(default_factory=dict)


def choose_action(
    plans: pd.DataFrame, positions: Sequence[Position] = (), config: KeeperConfig | None = None
) -> Action:
    """At most one entry or switch per cycle (spec §6.3), break-even aware switching (§6.4).

    Order: with a free position slot (fewer than ``max_positions``), enter the best-scored valid plan on an
    asset not already held that keeps gross exposure (2 × size per position) within its limit.  Otherwise
    (or when no plan can be entered) consider switching each position into each valid plan on the same asset
    or an unheld one, excluding the position's own pair; among the switches the rule allows, take the
    best-scored plan, and for it the position the rule favours most (lowest compared / threshold).  A new
    entry is preferred to a switch because it adds income without paying an exit.
    """
    cfg = config or KeeperConfig()
    valid = plans["valid"].to_numpy(dtype=bool)
    if not valid.any():
        return Action("none", "no valid plan")
    idx = np.flatnonzero(valid)
    score = plans["score"].to_numpy()[idx]
    be = plans["break_even_hours"].to_numpy()[idx]
    order = idx[np.lexsort((be, -score))]  # best score first, then shortest break-even
    # compare labels through their categorical codes: no string arrays per plan
    asset_cat = pd.Categorical(plans["asset"])
    venue_cats = [pd.Categorical(plans[k]) for k in ("short_venue", "long_venue")]
    assets = asset_cat.codes[order].astype("int64")
    size = plans["size_usd"].to_numpy()[order]
    asset_codes = {c: i for i, c in enumerate(asset_cat.categories)}
    held = np.array([asset_codes[p.asset] for p in positions if p.asset in asset_codes], dtype="int64")
    gross = float(sum(2.0 * p.size_usd for p in positions))

    def row(j: int) -> Plan:
        return Plan.from_row(plans.iloc[int(order[j])].to_dict())

    if len(positions) < cfg.max_positions:
        can_enter = ~np.isin(assets, held) & (gross + 2.0 * size <= cfg.max_gross_exposure_usd)
        if can_enter.any():
            j = int(np.argmax(can_enter))
            return Action("enter", "best valid plan on an unheld asset", plan=row(j))
    if not positions:
        return Action("none", "no plan fits the exposure limits")

    short = venue_cats[0].codes[order].astype("int64")
    long_ = venue_cats[1].codes[order].astype("int64")
    new_be = plans["break_even_hours"].to_numpy()[order]
    new_hourly = plans["expected_hourly_return_usd"].to_numpy()[order]
    new_entry = plans["entry_fees_usd"].to_numpy()[order]

    lookups = [{c: i for i, c in enumerate(cat.categories)} for cat in (asset_cat, *venue_cats)]
    p_asset = np.array([lookups[0].get(p.asset, -1) for p in positions])[:, None]
    p_short = np.array([lookups[1].get(p.short_venue, -1) for p in positions])[:, None]
    p_long = np.array([lookups[2].get(p.long_venue, -1) for p in positions])[:, None]
    p_size = np.array([p.size_usd for p in positions])[:, None]
    same_asset = (assets[None, :] == p_asset) & (p_asset >= 0)
    other_held = np.isin(assets, held)[None, :] & ~same_asset
    own_pair = same_asset & (short[None, :] == p_short) & (long_[None, :] == p_long)
    allowed = ~other_held & ~own_pair
    allowed &= gross - 2.0 * p_size + 2.0 * size[None, :] <= cfg.max_gross_exposure_usd
    ok, compared, threshold = should_switch(
        np.array([p.break_even_hours for p in positions])[:, None],
        np.array([p.hours_held for p in positions])[:, None],
        np.array([p.hourly_return_usd for p in positions])[:, None],
        np.array([p.exit_fees_usd for p in positions])[:, None],
        new_be[None, :], new_hourly[None, :], new_entry[None, :], cfg,
    )
    ok &= allowed
    if not ok.any():
        return Action("none", "no plan passes the switching rule")
    j = int(np.argmax(ok.any(axis=0)))  # plans are in score order
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ok[:, j], compared[:, j] / np.abs(threshold[:, j]), np.inf)
    i = int(np.argmin(ratio))
    return Action("switch", "break-even-aware switch", plan=row(j), close=positions[i],
                  compared_hours=float(compared[i, j]), threshold_hours=float(threshold[i, j]),
                  details={"remaining_hours": positions[i].break_even_hours - positions[i].hours_held})


# ---------------------------------------------------------------------------------------------- cycle


class CycleResult:
    """One planning cycle's output: the plans, the action, and every candidate (built on first access — the
    simulator never reads them)."""

    def __init__(self, snapshot: Snapshot, candidate_arrays: dict[str, np.ndarray], plans: pd.DataFrame,
                 action: Action) -> None:
        self._snapshot, self._arrays = snapshot, candidate_arrays
        self._candidates: pd.DataFrame | None = None
        self.plans, self.action = plans, action

    @property
    def candidates(self) -> pd.DataFrame:
        if self._candidates is None:
            self._candidates = _frame(self._snapshot, self._arrays, ["spread_per_hour"])
        return self._candidates

    def with_action(self, action: Action) -> CycleResult:
        out = CycleResult(self._snapshot, self._arrays, self.plans, action)
        out._candidates = self._candidates
        return out


def plan_cycle(
    snapshot: Snapshot, positions: Sequence[Position] = (), config: KeeperConfig | None = None
) -> CycleResult:
    """Discover, filter, plan and choose (§6.3), re-marking the positions at the snapshot's rates first."""
    cfg = config or KeeperConfig()
    cand = _discover_arrays(snapshot, cfg)
    plans = _plans_frame(snapshot, _plan_arrays(snapshot, _select(cand, cand["reason_code"] == 0), cfg))
    action = choose_action(plans, mark_positions(positions, snapshot), cfg)
    return CycleResult(snapshot, cand, plans, action)
