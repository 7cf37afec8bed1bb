"""One keeper cycle (spec §6) in paper mode: reconcile → single legs → health → snapshot → plan → at most one
entry or switch → performance.

Why this order: reconcile first so every later step sees the venues' truth (a fill the previous process never
recorded is still exposure); single legs and health before planning because they are risk reductions that must
happen whatever the market offers; one action per cycle so a bad snapshot can do at most one trade of harm.

Choices: the position id is ``{asset}.{short}.{long}.{now:%Y%m%dT%H%M%S}`` — deterministic, so a cycle re-run
at the same ``now`` after a crash derives the same client ids and cannot open twice; the short leg is sent first
(the sell at the bid), then the long leg; a switch enters the new plan only when the old position closed flat;
``dry_run`` plans and records every decision but sends nothing.  Forecasts, when given, are a frame with
``asset``, ``short_venue``, ``long_venue``, ``forecast_spread_per_hour``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from fundarb_core.domain.plan import Plan
from fundarb_core.domain.positions import PositionStatus
from fundarb_core.execution.crashpoints import crashpoint
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.market_view import MarketView
from fundarb_core.execution.orders import send_order
from fundarb_core.execution.performance import performance
from fundarb_core.execution.reconcile import ReconcileReport, reconcile
from fundarb_core.execution.risk import (
    RiskConfig,
    close_position,
    data_age_hours,
    drawdown,
    end_of_cycle_naked,
    entry_limits,
    health_actions,
    kill,
    kill_switch_active,
    net_deltas,
    repair_single_legs,
)
from fundarb_core.execution.venue import ExchangeAdapter
from fundarb_core.strategy.allocation import horizon_choice
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.planning import Action, Position, choose_action, mark_positions, plan_cycle
from fundarb_core.strategy.snapshot import Snapshot
from fundarb_core.times import to_naive_dt

Chooser = Callable[[pd.DataFrame, list[Position], Snapshot, KeeperConfig], Action | Sequence[Action]]
"""Picks the cycle's actions from the plans (risk limits applied) and the held positions, re-marked at the
snapshot: one action (the spec's rule, :func:`~fundarb_core.strategy.planning.choose_action`) or several (an
allocation: exits, switches and entries, executed in that order up to ``KeeperConfig.max_actions_per_cycle``).  A
backtest passes the reference rules (naive 24 h, patient) the same way, so every rule runs through exactly the
same execution and risk path."""


def as_actions(chosen: Action | Sequence[Action], cap: int) -> list[Action]:
    """The chooser's answer as at most ``cap`` actions, exits first, then switches, then entries (exits free the
    collateral the entries were allocated; a bad snapshot can still do only ``cap`` trades of harm)."""
    acts = [chosen] if isinstance(chosen, Action) else list(chosen)
    rank = {"exit": 0, "switch": 1, "enter": 2}
    return sorted((a for a in acts if a.kind in rank), key=lambda a: rank[a.kind])[:max(cap, 0)]


@dataclass
class CycleContext:
    """Everything a cycle works with: where the market comes from, the venues, the ledger, the rules.

    ``venues`` / ``assets`` restrict the market considered; ``baseline_forecast="mean_24h"`` plans on the pairs'
    trailing 24 h mean spread where no forecast is given (the no-model baseline); ``chooser`` replaces which
    action is taken (the backtest's reference rules); ``record_decisions=False`` skips the per-candidate audit
    rows (``cycle_decisions``), which nothing in the cycle reads back; ``full_performance=False`` logs the
    account figures only (:func:`~fundarb_core.execution.performance.performance`)."""

    market: MarketView
    exchange: ExchangeAdapter
    ledger: Ledger
    config: KeeperConfig = field(default_factory=KeeperConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    venues: Sequence[str] | None = None
    assets: Sequence[str] | None = None
    baseline_forecast: str = "none"
    chooser: Chooser | None = None
    record_decisions: bool = True
    full_performance: bool = True


@dataclass
class CycleReport:
    """What one cycle saw and did."""

    now: datetime
    action: str = "none"
    reason: str = ""
    position_id: str | None = None
    closed_position_id: str | None = None
    orders: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    decisions: int = 0
    reconcile: ReconcileReport | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    taken: list[dict[str, Any]] = field(default_factory=list)  # every action executed: kind, reason, ids



def _restrict(snap: Snapshot, assets: Sequence[str] | None) -> Snapshot:
    if assets is None:
        return snap
    keep = np.isin(snap.assets.astype(str), np.asarray(list(assets), dtype=str))
    rate = snap.rate_per_hour.copy()
    rate[~keep] = np.nan
    return snap.replace(rate_per_hour=rate)


def _enrich(snap: Snapshot, ledger: Ledger, now: datetime, config: KeeperConfig, dd: float,
            forecasts: pd.DataFrame | None) -> Snapshot:
    """Cooldowns, market quality (24 h of the keeper's orders), drawdown and forecasts into the snapshot."""
    a_idx = {str(a): i for i, a in enumerate(snap.assets)}
    v_idx = {v: i for i, v in enumerate(snap.venues)}
    failed, minutes = snap.failed_attempts.copy(), snap.minutes_since_failure.copy()
    for asset, (failed_at, n) in ledger.cooldowns(now).items():
        if asset in a_idx:
            failed[a_idx[asset]] = max(n, config.cooldown_failures)
            minutes[a_idx[asset]] = (pd.Timestamp(now) - pd.Timestamp(failed_at)).total_seconds() / 60.0
    att, fail = snap.exec_attempts.copy(), snap.exec_failures.copy()
    for (asset, venue), (n, f) in ledger.execution_quality(now - pd.Timedelta(hours=24)).items():
        if asset in a_idx and venue in v_idx:
            att[a_idx[asset], v_idx[venue]], fail[a_idx[asset], v_idx[venue]] = n, f
    fc = snap.forecast_spread_per_hour
    if forecasts is not None and len(forecasts):
        fc = fc.copy()
        i = pd.Index(list(a_idx)).get_indexer(forecasts["asset"].astype(str))
        sv = pd.Index(list(v_idx)).get_indexer(forecasts["short_venue"].astype(str))
        lv = pd.Index(list(v_idx)).get_indexer(forecasts["long_venue"].astype(str))
        ok = (i >= 0) & (sv >= 0) & (lv >= 0)
        fc[i[ok], sv[ok], lv[ok]] = forecasts["forecast_spread_per_hour"].to_numpy(dtype="float64")[ok]
    return snap.replace(failed_attempts=failed, minutes_since_failure=minutes, exec_attempts=att,
                        exec_failures=fail, drawdown=dd, forecast_spread_per_hour=fc)


def _decision_frame(now: datetime, res: Any, taken: set[tuple[str, str, str]], blocked: pd.Series,
                    action_reason: str) -> pd.DataFrame:
    """Every candidate that failed discovery and every plan, with why it was taken or rejected."""
    cand = res.candidates[~res.candidates["valid"]]
    plans = res.plans
    frames = []
    if len(cand):
        frames.append(pd.DataFrame({
            "stage": "discovery", "asset": cand["asset"].astype(str), "short_venue": cand["short_venue"].astype(str),
            "long_venue": cand["long_venue"].astype(str), "valid": False, "taken": False,
            "reason": cand["reason"].astype(str), "score": np.nan, "size_usd": np.nan, "break_even_hours": np.nan,
            "expected_apy": np.nan}))
    if len(plans):
        key = plans["asset"].astype(str) + "|" + plans["short_venue"].astype(str) + "|" + plans[
            "long_venue"].astype(str)
        is_taken = key.isin({"|".join(k) for k in taken})
        reason = plans["reason"].astype(object).where(plans["reason"].notna(), "")
        reason = reason.where(reason != "", blocked.reindex(plans.index).fillna(""))
        reason = reason.where(reason != "", "not chosen: " + action_reason)
        reason = reason.where(~is_taken, "taken")
        frames.append(pd.DataFrame({
            "stage": "plan", "asset": plans["asset"].astype(str), "short_venue": plans["short_venue"].astype(str),
            "long_venue": plans["long_venue"].astype(str), "valid": plans["valid"].astype(bool),
            "taken": is_taken.to_numpy(), "reason": reason.astype(str), "score": plans["score"],
            "size_usd": plans["size_usd"], "break_even_hours": plans["break_even_hours"],
            "expected_apy": plans["expected_apy"]}))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "cycle_ts", now)
    out.insert(1, "seq", np.arange(len(out), dtype="int64"))
    out["details"] = None
    return out


def open_plan(ledger: Ledger, exchange: ExchangeAdapter, plan: Plan, now: datetime) -> tuple[str, list[str]]:
    """Enter a plan: position row, leverage, short leg (sell at bid) then long leg (buy at ask)."""
    pid = f"{plan.asset}.{plan.short_venue}.{plan.long_venue}.{pd.Timestamp(now):%Y%m%dT%H%M%S}"
    ledger.add_position(pid, plan, now)
    if (known := ledger.position(pid)) is not None and known.status == PositionStatus.FAILED:  # a re-run: revive
        ledger.update_position(pid, status=PositionStatus.OPENING, closed_at=None, reason=None)
    orders = []
    for venue, side, leg in ((plan.short_venue, "sell", "short"), (plan.long_venue, "buy", "long")):
        exchange.set_leverage(venue, plan.asset, plan.leverage)
        sent = send_order(ledger, exchange, position_id=pid, venue=venue, asset=plan.asset, side=side,  # type: ignore
                          size_usd=plan.size_usd, leg=leg, purpose="open", attempt=0, now=now)
        orders.append(sent.client_id)
        if leg == "short":
            crashpoint("between_legs")
    return pid, orders


def run_cycle(ctx: CycleContext, now: datetime | pd.Timestamp | str | None = None,
              forecasts: pd.DataFrame | None = None, *, dry_run: bool = False, plan: bool = True) -> CycleReport:
    """One cycle at ``now`` (module doc).  ``plan=False`` runs only the risk half (reconcile, single legs,
    health, performance) — a keeper woken by a fill or a settlement rather than by its 5-minute timer;
    ``dry_run`` plans and records every decision but sends nothing."""
    cfg, rk, led, exchange = ctx.config, ctx.risk, ctx.ledger, ctx.exchange
    t = to_naive_dt(now if now is not None else pd.Timestamp.now(tz="UTC"))
    advance = getattr(exchange, "advance_to", None)
    if callable(advance):  # a simulated venue follows the cycle's clock
        advance(t)
    report = CycleReport(now=t)
    bal = exchange.balances()
    led.ensure_accounts({v: b.initial_usd for v, b in bal.items()})

    # 1. reconcile, before anything else
    report.reconcile = reconcile(led, exchange, t)
    crashpoint("after_reconcile")

    # 2. kill switch
    if kill_switch_active(rk):
        report.paused.append("kill_switch")
        if not dry_run:
            report.events += kill(led, exchange, t, cfg, rk)
        report.action, report.reason = "none", "kill_switch"
        return _finish(ctx, t, report, dry_run)

    if not dry_run:
        # 3. single legs (and unfinished closes, orphans); 4. health
        report.events += repair_single_legs(led, exchange, t, cfg, rk)
        crashpoint("after_single_legs")
        report.events += health_actions(led, exchange, t, cfg, rk)
        crashpoint("after_health")

    if not plan:
        report.reason = "risk-only cycle"
        return _finish(ctx, t, report, dry_run)

    # 5. snapshot as of now, with the keeper's own state
    bal = exchange.balances()
    free = {v: max(0.0, b.equity_usd - b.margin_used_usd) for v, b in bal.items()}
    equity = float(sum(b.equity_usd for b in bal.values()))
    dd = drawdown(equity, led.peak_equity())
    snap = ctx.market.snapshot(t, balances_usd=free, config=cfg, venues=ctx.venues,
                               baseline_forecast=ctx.baseline_forecast)
    snap = _enrich(_restrict(snap, ctx.assets), led, t, cfg, dd, forecasts)

    # 6. plan
    held = [Position.from_pair(p, t) for p in led.positions((PositionStatus.OPEN,))]
    busy = {p.asset for p in led.positions() if p.status != PositionStatus.OPEN}  # legs under repair/closing
    res = plan_cycle(snap, held, cfg)
    deltas = net_deltas(led, exchange, cfg, rk)
    blocked = entry_limits(res.plans, deltas, cfg, rk)
    chosen: Action | Sequence[Action] = res.action
    chooser = ctx.chooser
    if chooser is None and cfg.decision_rule == "horizon":
        chooser = functools.partial(horizon_choice, max_venue_net_delta_usd=rk.max_venue_net_delta_usd)
    if len(res.plans) or chooser is not None:
        busy_mask = res.plans["asset"].isin(busy) if len(res.plans) else pd.Series(dtype=bool)
        blocked = blocked.where(~busy_mask | (blocked != ""), "asset_busy")
        stop = (blocked != "").to_numpy() & res.plans["valid"].to_numpy(dtype=bool)
        if stop.any() or chooser is not None:
            plans = res.plans.copy()
            plans.loc[stop, "valid"] = False
            if chooser is not None:
                plans["blocked"] = blocked.reindex(plans.index).fillna("").to_numpy()
            marked = mark_positions(held, snap)
            chosen = chooser(plans, marked, snap, cfg) if chooser is not None else choose_action(plans, marked, cfg)
    actions = as_actions(chosen, cfg.max_actions_per_cycle)
    res = res.with_action(actions[0] if actions else (chosen if isinstance(chosen, Action) else Action("none", "")))
    crashpoint("after_plan")

    age = data_age_hours(ctx.market, t)
    if age > rk.max_data_age_hours:
        report.paused.append(f"stale_data ({age:.1f} h)")
    if not np.isfinite(snap.rate_per_hour).any():
        report.paused.append("no_rates")
    if report.paused:
        actions = []
    first = actions[0] if actions else res.action
    taken = {a.plan.pair for a in actions if a.plan is not None}
    report.action = first.kind if actions else "none"
    report.reason = first.reason if not report.paused else "paused: " + ", ".join(report.paused)
    report.plan = first.plan if actions else None
    if ctx.record_decisions:
        decisions = _decision_frame(t, res, taken, blocked, report.reason)
        why = {"|".join(a.plan.pair): json.dumps({"action": a.kind, **a.details}, default=str)
               for a in actions if a.plan is not None and a.details}
        if why and len(decisions):
            key = decisions["asset"] + "|" + decisions["short_venue"] + "|" + decisions["long_venue"]
            decisions["details"] = key.map(why).where(decisions["taken"] & (decisions["stage"] == "plan"),
                                                      decisions["details"])
        extra = pd.DataFrame([{"cycle_ts": t, "seq": len(decisions) + i, "stage": f"{a.kind}_close",
                               "asset": a.close.asset, "short_venue": a.close.short_venue,
                               "long_venue": a.close.long_venue, "valid": True, "taken": True,
                               "reason": a.reason, "details": json.dumps(
                                   {"compared_hours": a.compared_hours, "threshold_hours": a.threshold_hours,
                                    **a.details}, default=str)}
                              for i, a in enumerate(x for x in actions if x.close is not None)])
        if len(extra):
            decisions = pd.concat([decisions, extra], ignore_index=True) if len(decisions) else extra
        led.record_decisions(decisions)
        report.decisions = len(decisions)
    else:
        report.decisions = len(res.plans)
    crashpoint("after_decisions")

    # 7. the chosen exits, switches and entries (at most max_actions_per_cycle)
    if not dry_run:
        for a in actions:
            report.taken.append(_execute(ctx, a, t, report))
    return _finish(ctx, t, report, dry_run)


def _execute(ctx: CycleContext, action: Action, t: datetime, report: CycleReport) -> dict[str, Any]:
    """One action through the venues: close the position it names (exit, switch), then open its plan (enter, or
    a switch whose old position closed flat)."""
    led, exchange, cfg, rk = ctx.ledger, ctx.exchange, ctx.config, ctx.risk
    done: dict[str, Any] = {"kind": action.kind, "reason": action.reason, "position_id": None,
                            "closed_position_id": None}
    if action.close is not None and action.kind in ("switch", "exit"):
        close = action.close
        old = [p for p in led.positions((PositionStatus.OPEN,))
               if (p.asset, p.short_venue, p.long_venue) == (close.asset, close.short_venue, close.long_venue)]
        flat = all(close_position(led, exchange, p, t, cfg, rk, reason=action.kind) for p in old)
        done["closed_position_id"] = old[0].position_id if old else None
        report.closed_position_id = report.closed_position_id or done["closed_position_id"]
        if not flat:
            report.events.append(f"{action.kind}: {close.asset} not flat" + (", entry skipped"
                                                                               if action.plan is not None else ""))
            return done
    if action.plan is not None and action.kind in ("switch", "enter"):
        pid, orders = open_plan(led, exchange, action.plan, t)
        done["position_id"] = pid
        done["fallbacks"] = action.plan.details.get("fallbacks", "")  # the data fallbacks the plan stands on
        report.position_id = report.position_id or pid
        report.orders += orders
        report.events += repair_single_legs(led, exchange, t, cfg, rk)
    return done


def _finish(ctx: CycleContext, t: datetime, report: CycleReport, dry_run: bool) -> CycleReport:
    if not dry_run:
        end_of_cycle_naked(ctx.ledger, ctx.exchange, t, ctx.config, ctx.risk)
    crashpoint("before_performance")
    report.metrics = performance(ctx.ledger, ctx.exchange, t, full=ctx.full_performance)
    ctx.ledger.write_performance(t, report.metrics)
    return report
