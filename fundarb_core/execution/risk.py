"""Spec §6.1, §6.2 and §7 at execution time: single legs, health actions, delta and exposure limits, drawdown,
kill switch and automatic pauses.

Choices (the spec leaves them open):

* A position is **hedged** when its legs' USD exposures (|qty| × mark) differ by at most
  ``max(min_position_usd, hedge_tolerance × size)`` (2 %); otherwise it is single-legged and the *missing*
  notional is re-sent on the thinner leg.  One retry per call, with attempt numbers 1…5 (deterministic ids);
  the cycle calls :func:`repair_single_legs` at its start and right after an entry, so a naked leg lives at most
  ``max_leg_attempts`` cycle ends, and is closed (both legs, reduce-only) at the next one, with the asset on a
  30-minute cooldown.  A leg with an order whose status is unknown is not retried (that order may have filled):
  reconcile settles it first.
* **Health** is the venue's cross-margin health (equity / maintenance) and a position's health its weaker leg's
  venue; < 1.5 reduces both legs by 50 %, < 1.2 closes (:mod:`fundarb_core.strategy.health`).
* **Delta**: a leg's delta is qty × mark (USD).  Limits: portfolio |net delta| ≤ ``max_portfolio_net_delta_usd``
  counted over hedged positions (a naked leg under repair is bounded by the retry budget instead), and per venue
  ≤ ``max_venue_net_delta_usd``, checked before an entry (a plan that would breach is rejected with
  ``venue_delta_limit``); gross exposure (both legs) ≤ ``KeeperConfig.max_gross_exposure_usd``.
* **Drawdown** = 1 − equity / peak equity (performance snapshots); the planner's sizing scales with it.
* **Kill switch** (``RiskConfig.kill_switch`` or ``FUNDARB_KILL_SWITCH=1``): no entries; with
  ``flatten_on_kill`` every position is closed and open orders cancelled.
* **Pause**: entries stop when the newest funding settlement is older than ``max_data_age_hours``; per asset,
  the planner's ``regime_halt`` filter blocks entries under ``liquidity_stress`` / ``anomaly``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from fundarb_core.domain.orders import Side
from fundarb_core.domain.positions import PairPosition, PositionStatus
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.market_view import MarketView
from fundarb_core.execution.orders import order_price, send_order
from fundarb_core.execution.venue import ExchangeAdapter
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.health import CLOSE, REDUCE, health_action_codes


@dataclass(frozen=True)
class RiskConfig:
    """Execution-time risk parameters (defaults documented in the module doc)."""

    kill_switch: bool = False
    kill_switch_env: str = "FUNDARB_KILL_SWITCH"
    flatten_on_kill: bool = True
    max_leg_attempts: int = 5
    hedge_tolerance: float = 0.02
    max_portfolio_net_delta_usd: float = 1_000.0
    max_venue_net_delta_usd: float = 25_000.0
    max_data_age_hours: float = 9.0  # the longest funding interval (8 h) plus an hour of slack
    close_size_margin: float = 1.05  # a close order asks for 5 % more than the leg; reduce-only caps it


def kill_switch_active(risk: RiskConfig) -> bool:
    """The config flag or ``FUNDARB_KILL_SWITCH=1`` (read every cycle, so it can be flipped live)."""
    return risk.kill_switch or os.environ.get(risk.kill_switch_env, "").strip() in ("1", "true", "TRUE", "yes")


def data_age_hours(market: MarketView, now: datetime) -> float:
    """Hours since the newest funding settlement at or before ``now`` (inf when none)."""
    r = market.newest_settlement(now)
    return float("inf") if r is None else (pd.Timestamp(now) - pd.Timestamp(r)).total_seconds() / 3600.0


def drawdown(equity: float, peak: float | None) -> float:
    """1 − equity / peak (0 with no history or at a new peak)."""
    if peak is None or peak <= 0 or not np.isfinite(equity):
        return 0.0
    return float(max(0.0, 1.0 - equity / peak))


# ---------------------------------------------------------------------------------------------- exposures


def leg_exposure(ledger: Ledger, exchange: ExchangeAdapter, p: PairPosition) -> dict[str, float]:
    """Signed USD exposure of each leg of a position (ledger quantity × the venue's mark).

    A venue without a price (its feed stopped) is valued at the other leg's mark — the same underlying — else
    at the leg's last fill price: a quantity the venue still holds is never exposure 0, or a position whose
    prices vanished would read as flat, be marked failed and forgotten while both legs stay open."""
    qty = ledger.leg_qty(p.position_id)
    venues = sorted({p.short_venue, p.long_venue})
    marks = {v: exchange.mark_price(v, p.asset) for v in venues}
    known = [m for m in marks.values() if m is not None]
    out = {}
    for v in venues:
        q = qty.get(v, 0.0)
        mark = marks[v] if marks[v] is not None else (known[0] if known else None)
        if mark is None and q != 0:
            mark = ledger.last_fill_price(p.position_id, v)
        out[v] = q * (mark if mark is not None else 0.0)
    return out


def is_hedged(p: PairPosition, exposure: dict[str, float], config: KeeperConfig, risk: RiskConfig) -> bool:
    short, long_ = -exposure.get(p.short_venue, 0.0), exposure.get(p.long_venue, 0.0)
    tol = max(config.min_position_usd, risk.hedge_tolerance * p.size_usd)
    return abs(short - long_) <= tol


def is_flat(p: PairPosition, exposure: dict[str, float], config: KeeperConfig) -> bool:
    return all(abs(x) < config.min_position_usd * 1e-3 for x in exposure.values())


@dataclass(frozen=True)
class Deltas:
    """Net delta (USD) per venue and for the portfolio, over hedged positions and over everything."""

    venue: dict[str, float]
    portfolio_hedged: float
    portfolio_all: float
    gross: float


def net_deltas(ledger: Ledger, exchange: ExchangeAdapter, config: KeeperConfig, risk: RiskConfig) -> Deltas:
    venue: dict[str, float] = {}
    hedged_total = all_total = gross = 0.0
    for p in ledger.positions():
        exp = leg_exposure(ledger, exchange, p)
        for v, x in exp.items():
            venue[v] = venue.get(v, 0.0) + x
            gross += abs(x)
        s = sum(exp.values())
        all_total += s
        if is_hedged(p, exp, config, risk):
            hedged_total += s
    return Deltas(venue, hedged_total, all_total, gross)


def _per_venue(venues: pd.Series, values: dict[str, float]) -> np.ndarray:
    """``values`` looked up per row of a categorical venue column (once per category, not per row)."""
    cat = venues.astype("category").cat
    table = np.array([values.get(str(v), 0.0) for v in cat.categories] + [0.0])
    return table[np.where(cat.codes.to_numpy() < 0, len(cat.categories), cat.codes.to_numpy())]


def entry_limits(plans: pd.DataFrame, deltas: Deltas, config: KeeperConfig, risk: RiskConfig) -> pd.Series:
    """Per plan, the risk reason that forbids entering it now ('' when allowed)."""
    if plans.empty:
        return pd.Series([], dtype=object)
    size = plans["size_usd"].to_numpy(dtype="float64")
    vs = _per_venue(plans["short_venue"], deltas.venue) - size
    vl = _per_venue(plans["long_venue"], deltas.venue) + size
    out = np.where(deltas.gross + 2 * size > config.max_gross_exposure_usd, "gross_exposure_limit",
                   np.where((np.abs(vs) > risk.max_venue_net_delta_usd) | (np.abs(vl) > risk.max_venue_net_delta_usd),
                            "venue_delta_limit", ""))
    return pd.Series(out, index=plans.index, dtype=object)


# ---------------------------------------------------------------------------------------------- actions


def close_position(ledger: Ledger, exchange: ExchangeAdapter, p: PairPosition, now: datetime,
                   config: KeeperConfig, risk: RiskConfig, reason: str, fraction: float = 1.0) -> bool:
    """Close (or reduce by ``fraction``) every non-flat leg with reduce-only orders; True when flat after.

    Each call uses a new operation number in the leg name, so a re-close after a partial has a new id.
    """
    op = p.close_ops + 1
    closing = {"status": PositionStatus.CLOSING} if fraction >= 1.0 else {}
    ledger.update_position(p.position_id, close_ops=op, **closing)
    qty = ledger.leg_qty(p.position_id)
    kind = "close" if fraction >= 1.0 else "reduce"
    for v in sorted({p.short_venue, p.long_venue}):
        q = qty.get(v, 0.0)
        if q == 0:
            continue
        side: Side = "buy" if q < 0 else "sell"
        px = order_price(exchange, v, p.asset, side) or 0.0  # the venue sizes USD at the order's price
        size = abs(q) * px * (risk.close_size_margin if fraction >= 1.0 else fraction)
        if size <= 0:
            continue
        send_order(ledger, exchange, position_id=p.position_id, venue=v, asset=p.asset,
                   side=side, size_usd=size, leg=f"{v}-{kind}{op}", purpose=kind,
                   attempt=0, now=now, reduce_only=True)
    after = leg_exposure(ledger, exchange, p)
    flat = is_flat(p, after, config) and not any(abs(x) > 0 for x in ledger.leg_qty(p.position_id).values())
    if fraction >= 1.0:
        ledger.update_position(p.position_id, status=PositionStatus.CLOSED if flat else PositionStatus.CLOSING,
                               closed_at=now if flat else None, reason=reason)
    else:
        ledger.update_position(p.position_id, size_usd=p.size_usd * (1.0 - fraction), reason=reason)
    ledger.event(now, kind, p.position_id, None, reason=reason, flat=flat)
    return flat


def classify(ledger: Ledger, exchange: ExchangeAdapter, p: PairPosition, now: datetime, config: KeeperConfig,
             risk: RiskConfig) -> PositionStatus:
    """Set and return the status of an opening / open / single-legged position from its fills."""
    if p.status in (PositionStatus.CLOSING, PositionStatus.CLOSED, PositionStatus.FAILED,
                    PositionStatus.ORPHAN):
        return p.status
    exp = leg_exposure(ledger, exchange, p)
    if is_flat(p, exp, config):
        if ledger.has_unresolved(p.position_id):
            return p.status
        ledger.update_position(p.position_id, status=PositionStatus.FAILED, closed_at=now, reason="no leg filled")
        return PositionStatus.FAILED
    if is_hedged(p, exp, config, risk):
        if p.status != PositionStatus.OPEN or p.naked_since is not None:
            ledger.update_position(p.position_id, status=PositionStatus.OPEN, naked_since=None)
        return PositionStatus.OPEN
    if p.naked_since is None:
        ledger.update_position(p.position_id, status=PositionStatus.SINGLE_LEG, naked_since=now)
    elif p.status != PositionStatus.SINGLE_LEG:
        ledger.update_position(p.position_id, status=PositionStatus.SINGLE_LEG)
    return PositionStatus.SINGLE_LEG


def repair_single_legs(ledger: Ledger, exchange: ExchangeAdapter, now: datetime, config: KeeperConfig,
                       risk: RiskConfig) -> list[str]:
    """Spec §6.1: one retry of the missing leg per single-legged position (attempts 1…5), then close + cooldown.

    Also finishes closes left incomplete (``closing``) and closes imported orphans.  Returns event strings.
    """
    events = []
    for p in ledger.positions():
        if p.status in (PositionStatus.CLOSING, PositionStatus.ORPHAN):
            if close_position(ledger, exchange, p, now, config, risk, reason=p.reason or p.status):
                events.append(f"closed {p.position_id}")
            continue
        status = classify(ledger, exchange, p, now, config, risk)
        if status != PositionStatus.SINGLE_LEG:
            continue
        p = ledger.position(p.position_id)  # type: ignore[assignment]
        if ledger.has_unresolved(p.position_id):
            events.append(f"waiting on unknown order {p.position_id}")
            continue
        exp = leg_exposure(ledger, exchange, p)
        short_usd, long_usd = -exp.get(p.short_venue, 0.0), exp.get(p.long_venue, 0.0)
        if p.retry_attempts >= risk.max_leg_attempts:
            close_position(ledger, exchange, p, now, config, risk, reason="single_leg_retries_exhausted")
            ledger.set_cooldown(p.asset, now, config.cooldown_minutes, risk.max_leg_attempts)
            events.append(f"gave up {p.position_id}")
            continue
        attempt = p.retry_attempts + 1
        if short_usd > long_usd:
            venue, side, leg, missing = p.long_venue, "buy", "long", short_usd - long_usd
        else:
            venue, side, leg, missing = p.short_venue, "sell", "short", long_usd - short_usd
        ledger.update_position(p.position_id, retry_attempts=attempt)
        sent = send_order(ledger, exchange, position_id=p.position_id, venue=venue, asset=p.asset,
                          side=side, size_usd=missing, leg=leg, purpose="retry", attempt=attempt, now=now)
        ledger.event(now, "leg_retry", p.position_id, venue, attempt=attempt, status=sent.status)
        classify(ledger, exchange, ledger.position(p.position_id), now, config, risk)  # type: ignore[arg-type]
        events.append(f"retry {attempt} {p.position_id}: {sent.status}")
    return events


def end_of_cycle_naked(ledger: Ledger, exchange: ExchangeAdapter, now: datetime, config: KeeperConfig,
                       risk: RiskConfig) -> None:
    """Count, per live position, the cycle ends it spends single-legged (the faults test bounds this)."""
    for p in ledger.positions((PositionStatus.OPENING, PositionStatus.OPEN, PositionStatus.SINGLE_LEG)):
        status = classify(ledger, exchange, p, now, config, risk)
        if status == PositionStatus.SINGLE_LEG:
            ledger.update_position(p.position_id, naked_cycles=p.naked_cycles + 1)


def health_actions(ledger: Ledger, exchange: ExchangeAdapter, now: datetime, config: KeeperConfig,
                   risk: RiskConfig) -> list[str]:
    """Spec §6.2 on every open position: reduce 50 % below 1.5, close below 1.2 (venue cross-margin health)."""
    bal = exchange.balances()
    events = []
    for p in ledger.positions((PositionStatus.OPEN,)):
        hf = min(bal[v].health_factor if v in bal else np.inf for v in (p.short_venue, p.long_venue))
        code = int(health_action_codes(np.array([hf]), config)[0])
        if code == CLOSE:
            close_position(ledger, exchange, p, now, config, risk, reason=f"health {hf:.3f} < {config.health_close}")
            events.append(f"health close {p.position_id}")
        elif code == REDUCE:
            close_position(ledger, exchange, p, now, config, risk, reason=f"health {hf:.3f} < {config.health_reduce}",
                           fraction=config.health_reduce_fraction)
            events.append(f"health reduce {p.position_id}")
    return events


def kill(ledger: Ledger, exchange: ExchangeAdapter, now: datetime, config: KeeperConfig,
         risk: RiskConfig) -> list[str]:
    """Kill switch: cancel the keeper's open orders and (``flatten_on_kill``) close every position."""
    events = []
    for o in ledger.open_orders():
        exchange.cancel_order(o.venue, o.client_id)
    if risk.flatten_on_kill:
        for p in ledger.positions():
            close_position(ledger, exchange, p, now, config, risk, reason="kill_switch")
            events.append(f"kill close {p.position_id}")
    return events
