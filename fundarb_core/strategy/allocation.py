"""The keeper's default chooser: exits, switches and a portfolio allocation of the free collateral, each cycle.

Why an allocation instead of the spec's five fixed slots and one action per cycle: capital sitting in a slot earns
nothing, and a slot filled by the first plausible pair blocks a better one for as long as the slot is held.  Each
cycle this chooser

1. decides every held position with the horizon rule (:mod:`fundarb_core.strategy.horizon_rule`): hold while its
   expected spread is positive, switch into the best other pair of the same asset or into a better pair of an
   unheld asset when the expected gain over the horizon pays the switch, else exit to flat;
2. allocates the remaining free collateral across the entries the rule allows (expected spread over the horizon
   pays the round trip with the margin), all at once, with a mixed-integer programme solved by HiGHS
   (:func:`scipy.optimize.milp`): maximise expected net income over the horizon, ``Σ (E_k × H − c_k) × x_k``,
   subject to each venue's free collateral (``Σ x_k / L_k`` over the legs on it ≤ ``balance_fraction`` × free),
   one pair per asset, the plan's size cap (which carries the per-asset concentration cap
   ``max_position_size_usd``, the OI / volume liquidity caps and the minimum size, via a binary per plan), gross
   exposure, each venue's net delta (``max_venue_net_delta_usd``; the portfolio's is zero by construction, a pair's
   legs being equal and opposite), the per-cycle action cap and the per-cycle entry notional
   (``max_cycle_entry_usd``: a bad snapshot can open only so much at once).  A solver rather than a greedy
   because the venue collateral constraints couple the plans: the best-scored pair can use the only venue that
   three slightly weaker pairs need.

Choices: ``E`` is the plan's ``expected_spread_per_hour`` (the predictor's value the cycle was given);
``c_k`` its round-trip costs per USD (fees and √-impact at the plan's size — the impact per USD only falls for a
smaller allocation, so the objective is conservative); a partial allocation scales the plan's fees linearly and its
impact with the 1.5 power of the size.  Held positions are kept at their size (no resizing: a resize pays fees
on both legs for a marginal change, and the rule's hysteresis is in whole-position terms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp

from fundarb_core.domain.plan import Plan
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.horizon_rule import DECISION_NAMES, EXIT, HOLD, SWITCH, HorizonParams, decide
from fundarb_core.strategy.planning import Action, Position
from fundarb_core.strategy.snapshot import Snapshot


def _fraction(num: np.ndarray, size: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(size > 0, num / size, np.nan)


def scaled_plan(plan: Plan, size_usd: float) -> Plan:
    """``plan`` at a smaller size: fees and income scale linearly, √-impact slippage with size^1.5."""
    r = size_usd / plan.size_usd if plan.size_usd > 0 else 0.0
    entry, exit_, slip = plan.entry_fees_usd * r, plan.exit_fees_usd * r, plan.slippage_usd * r ** 1.5
    hourly = plan.expected_hourly_return_usd * r
    total = entry + exit_ + slip
    return replace(plan, size_usd=size_usd, entry_fees_usd=entry, exit_fees_usd=exit_, slippage_usd=slip,
                   total_costs_usd=total, expected_hourly_return_usd=hourly,
                   break_even_hours=total / hourly if hourly > 0 else float("inf"))


def allocate(values: np.ndarray, sizes: np.ndarray, leverage: np.ndarray, asset: np.ndarray, short: np.ndarray,
             long_: np.ndarray, free_margin: np.ndarray, venue_delta: np.ndarray, delta_limit: float,
             gross_room: float, max_count: int, min_size: float, turnover_room: float = np.inf) -> np.ndarray:
    """The MILP of the module doc: USD size per candidate (0 = not taken).

    ``values`` are expected net income per USD over the horizon; ``asset`` / ``short`` / ``long_`` integer codes;
    ``free_margin`` and ``venue_delta`` (current net delta, USD) per venue code."""
    n = len(values)
    if n == 0 or max_count <= 0 or gross_room <= 0:
        return np.zeros(n)
    n_venues = len(free_margin)
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def add(row: np.ndarray, lower: float, upper: float) -> None:
        rows.append(row)
        lo.append(lower)
        hi.append(upper)

    eye = np.eye(n)
    for k in range(n):  # min_size × y_k ≤ x_k ≤ size_k × y_k
        add(np.concatenate([eye[k], -sizes[k] * eye[k]]), -np.inf, 0.0)
        add(np.concatenate([eye[k], -min_size * eye[k]]), 0.0, np.inf)
    for a in np.unique(asset):  # one pair per asset
        add(np.concatenate([np.zeros(n), (asset == a).astype(float)]), -np.inf, 1.0)
    inv_lev = 1.0 / np.maximum(leverage, 1e-9)
    for v in range(n_venues):
        on = (short == v) | (long_ == v)
        if on.any():  # collateral: each leg posts size / L on its venue
            add(np.concatenate([np.where(on, inv_lev, 0.0), np.zeros(n)]), -np.inf, max(free_margin[v], 0.0))
            signed = np.where(long_ == v, 1.0, 0.0) - np.where(short == v, 1.0, 0.0)
            d = venue_delta[v]  # net delta after the change within the limit, or at least no worse than now
            add(np.concatenate([signed, np.zeros(n)]), min(-delta_limit - d, 0.0), max(delta_limit - d, 0.0))
    add(np.concatenate([2.0 * np.ones(n), np.zeros(n)]), -np.inf, gross_room)
    add(np.concatenate([np.ones(n), np.zeros(n)]), -np.inf, turnover_room)
    add(np.concatenate([np.zeros(n), np.ones(n)]), -np.inf, float(max_count))
    res = milp(c=np.concatenate([-values, np.zeros(n)]),
               constraints=LinearConstraint(np.vstack(rows), np.array(lo), np.array(hi)),
               integrality=np.concatenate([np.zeros(n), np.ones(n)]),
               bounds=Bounds(np.zeros(2 * n), np.concatenate([sizes, np.ones(n)])),
               options={"presolve": True, "mip_rel_gap": 1e-6})
    if res.x is None:
        return np.zeros(n)
    x = np.where(res.x[n:] > 0.5, res.x[:n], 0.0)
    return np.where(x >= min_size, np.round(x, 2), 0.0)


def horizon_choice(plans: pd.DataFrame, positions: Sequence[Position], snapshot: Snapshot, config: KeeperConfig,
                   max_venue_net_delta_usd: float = float("inf")) -> list[Action]:
    """Exits, switches and allocated entries for this cycle (module doc); a
    :data:`~fundarb_core.execution.cycle.Chooser`."""
    params = HorizonParams(config.holding_hours, config.entry_margin)
    h, margin = params.horizon_hours, 1.0 + params.entry_margin
    detail = {"predictor": config.predictor, "horizon_hours": h, "entry_margin": params.entry_margin}
    ok = plans["valid"].to_numpy(dtype=bool, copy=True) if len(plans) else np.zeros(0, dtype=bool)
    if "blocked" in plans and len(plans):
        ok &= plans["blocked"].to_numpy() == ""
    if "has_forecast" in plans and len(plans):  # never on the instantaneous spread alone
        ok &= plans["has_forecast"].to_numpy(dtype=bool)
    p = plans[ok].reset_index(drop=True)
    size = p["size_usd"].to_numpy(dtype="float64")
    e = p["expected_spread_per_hour"].to_numpy(dtype="float64")
    slip = p["slippage_usd"].to_numpy(dtype="float64")
    entry_c = _fraction(p["entry_fees_usd"].to_numpy(dtype="float64") + slip / 2, size)
    exit_c = _fraction(p["exit_fees_usd"].to_numpy(dtype="float64") + slip / 2, size)
    assets = p["asset"].astype(str).to_numpy()
    keys = list(zip(assets, p["short_venue"].astype(str), p["long_venue"].astype(str), strict=True))
    actions: list[Action] = []
    taken_assets: set[str] = set()

    def plan_at(j: int) -> Plan:
        return Plan.from_row(p.iloc[j].to_dict())

    # 1. every held position: hold, switch (same asset or an unheld one) or exit
    held_assets = {q.asset for q in positions}
    a_idx = {str(a): i for i, a in enumerate(snapshot.assets)}
    v_idx = {v: i for i, v in enumerate(snapshot.venues)}
    for pos in sorted(positions, key=lambda q: (q.asset, q.short_venue, q.long_venue)):
        cell = (a_idx.get(pos.asset), v_idx.get(pos.short_venue), v_idx.get(pos.long_venue))
        # the held pair's expected spread from the predictor only: NaN (no estimate, e.g. a leg stopped
        # reporting) is no reason to keep it
        e_held = float(snapshot.forecast_spread_per_hour[cell]) if None not in cell else np.nan
        exit_held = pos.exit_fees_usd / pos.size_usd if pos.size_usd > 0 else 0.0
        own = (pos.asset, pos.short_venue, pos.long_venue)
        cand = np.array([k != own and (a == pos.asset or (a not in held_assets and a not in taken_assets))
                         for k, a in zip(keys, assets, strict=True)], dtype=bool)
        j = int(np.argmax(np.where(cand, e, -np.inf))) if cand.any() else -1
        best = j >= 0 and np.isfinite(e[j])
        code = int(decide(np.array([True]), np.array([e_held]), np.array([exit_held]),
                          np.array([e[j] if best else np.nan]), np.array([entry_c[j] if best else 0.0]),
                          np.array([exit_c[j] if best else 0.0]), params)[0])
        if code == SWITCH and best:
            actions.append(Action("switch", f"expected gain over {h:g} h pays the switch", plan=plan_at(j), close=pos,
                                  details={**detail, "expected_spread_per_hour": float(e[j]),
                                           "held_expected_spread_per_hour": float(e_held)}))
            taken_assets.add(assets[j])
        elif code == EXIT:
            actions.append(Action("exit", "expected spread over the horizon no longer positive", close=pos,
                                  details={**detail, "expected_spread_per_hour": float(e_held)}))
        elif code != HOLD:
            raise AssertionError(f"held position decided {DECISION_NAMES[code]}")

    # 2. entries on unheld assets, allocated together
    leaving = {a.close.asset for a in actions if a.close is not None and a.kind == "exit"}
    staying = [q for q in positions if q.asset not in leaving]
    switched = {a.close.asset: a for a in actions if a.kind == "switch" and a.close is not None}
    blocked_assets = {q.asset for q in positions} | taken_assets
    with np.errstate(invalid="ignore"):
        eligible = (~np.isin(assets, list(blocked_assets)) & np.isfinite(e) & (size > 0)
                    & (e * h > (entry_c + exit_c) * margin))
    idx = np.flatnonzero(eligible)
    room = config.max_actions_per_cycle - len(actions)
    if len(idx) and room > 0:
        venues = list(snapshot.venues)
        vcode = {v: i for i, v in enumerate(venues)}
        free = np.asarray(snapshot.balances_usd, dtype="float64") * config.balance_fraction
        delta = np.zeros(len(venues))
        gross = 0.0
        for q in staying:
            live = switched[q.asset].plan if q.asset in switched else q
            if live is None:
                continue
            s_v, l_v = vcode.get(live.short_venue), vcode.get(live.long_venue)
            if s_v is not None:
                delta[s_v] -= live.size_usd
            if l_v is not None:
                delta[l_v] += live.size_usd
            gross += 2.0 * live.size_usd
        value = e[idx] * h - (entry_c[idx] + exit_c[idx])
        x = allocate(value, size[idx], p["leverage"].to_numpy(dtype="float64")[idx],
                     pd.factorize(assets[idx])[0],
                     np.array([vcode[s] for s in p["short_venue"].astype(str).to_numpy()[idx]]),
                     np.array([vcode[v] for v in p["long_venue"].astype(str).to_numpy()[idx]]),
                     free, delta, max_venue_net_delta_usd, config.max_gross_exposure_usd - gross, room,
                     config.min_position_usd, config.max_cycle_entry_usd)
        for k in np.argsort(-np.where(x > 0, value, -np.inf), kind="stable"):
            if x[k] <= 0:
                break
            j = int(idx[k])
            plan = plan_at(j)
            if x[k] < plan.size_usd - 0.01:
                plan = scaled_plan(plan, float(x[k]))
            actions.append(Action("enter", f"allocated: expected spread over {h:g} h pays the round trip",
                                  plan=plan, details={**detail, "expected_spread_per_hour": float(e[j]),
                                                      "allocated_usd": float(x[k])}))
    if not actions:
        return [Action("none", "hold: no exit, switch or entry pays its costs", details=detail)]
    return actions
