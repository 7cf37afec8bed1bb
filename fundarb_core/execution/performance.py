"""Spec §8 performance log, computed from the ledger (what was actually paid) and the venues' accounts.

Definitions (choices where the spec names a metric only):

* **payment** = the net funding of one position in one settlement hour (its legs' payments summed), because a
  hedged position's win or loss is the spread it earned, not one leg's side of it;
* ``estimated_apy`` = Σ expected hourly return of the open positions × 8760 / margin deployed;
* ``realised_apy_7d`` = funding received over the last 7 days / margin deployed × 365 / 7 (NaN with no margin);
* ``break_even_progress`` = mean over open positions of funding received / planned round-trip costs (1 = paid
  back);
* ``margin_deployed_usd`` = Σ over legs |qty| × mark / leverage (the venues' ``margin_used``);
* ``min_health_factor`` = the lowest venue health among venues carrying a position (inf when none);
* ``funding_win_rate`` (7 days) and, over all payments: ``total_payments``, ``win_rate``, ``profit_factor``
  (Σ wins / |Σ losses|, inf without losses), ``avg_win``, ``avg_loss``, ``expectancy`` (mean payment =
  win rate × avg win + (1 − win rate) × avg loss) and ``realised_apy`` (all funding / margin deployed over the
  hours since the first payment, annualised).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from fundarb_core.domain.positions import PositionStatus
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.venue import ExchangeAdapter
from fundarb_core.funding import HOURS_PER_YEAR


def payment_metrics(amounts: np.ndarray) -> dict[str, float]:
    """Win rate, profit factor, average win / loss, expectancy and total of a series of payments (USD)."""
    a = np.asarray(amounts, dtype="float64")
    a = a[np.isfinite(a)]
    if a.size == 0:
        nan = float("nan")
        return {"total_payments": 0.0, "total_funding_usd": 0.0, "win_rate": nan, "profit_factor": nan,
                "avg_win": nan, "avg_loss": nan, "expectancy": nan}
    wins, losses = a[a > 0], a[a < 0]
    loss_sum = float(-losses.sum())
    return {
        "total_payments": float(a.size),
        "total_funding_usd": float(a.sum()),
        "win_rate": float(wins.size / a.size),
        "profit_factor": float(wins.sum() / loss_sum) if loss_sum > 0 else math.inf,
        "avg_win": float(wins.mean()) if wins.size else 0.0,
        "avg_loss": float(losses.mean()) if losses.size else 0.0,
        "expectancy": float(a.mean()),
    }


def _payments(ledger: Ledger) -> pd.DataFrame:
    """Net funding per (position, settlement hour): one payment each (module doc), in hour order."""
    recs = ledger.funding()
    if not recs:
        return pd.DataFrame(columns=["position_id", "h", "amount", "ts"])
    df = pd.DataFrame({"position_id": [r.position_id for r in recs], "ts": [r.payment.ts for r in recs],
                       "amount": [r.payment.amount_usd for r in recs]})
    df["h"] = pd.to_datetime(df["ts"]).dt.floor("h")
    g = df.groupby(["position_id", "h"], dropna=False, sort=False).agg(amount=("amount", "sum"), ts=("ts", "min"))
    return g.reset_index().sort_values("h", kind="stable").reset_index(drop=True)


def performance(ledger: Ledger, exchange: ExchangeAdapter, now: datetime, full: bool = True) -> dict[str, Any]:
    """The §8 metrics at ``now`` (module doc).  ``full=False`` gives the account figures only (equity, margin,
    health, positions): the simulator's per-cycle log, whose payment statistics its report computes once from
    the whole ledger instead of every hour."""
    t = pd.Timestamp(now)
    bal = exchange.balances()
    live = ledger.positions((PositionStatus.OPEN, PositionStatus.SINGLE_LEG, PositionStatus.OPENING,
                             PositionStatus.CLOSING))
    margin = float(sum(b.margin_used_usd for b in bal.values()))
    equity = float(sum(b.equity_usd for b in bal.values()))
    carrying = {v for p in live for v in (p.short_venue, p.long_venue)}
    min_hf = min((bal[v].health_factor for v in carrying if v in bal), default=math.inf)
    active = float(sum(p.status == PositionStatus.OPEN for p in live))
    if not full:
        return {"equity_usd": equity, "margin_deployed_usd": margin, "min_health_factor": min_hf,
                "active_positions": active}
    hourly = float(sum(p.expected_hourly_usd or 0.0 for p in live if p.status == PositionStatus.OPEN))
    fund = _payments(ledger)
    recent = fund[fund["h"] > t - pd.Timedelta(days=7)] if len(fund) else fund
    m = payment_metrics(fund["amount"].to_numpy() if len(fund) else np.array([]))
    m7 = payment_metrics(recent["amount"].to_numpy() if len(recent) else np.array([]))
    by_pos = fund.groupby("position_id")["amount"].sum() if len(fund) else pd.Series(dtype="float64")
    progress = [float(by_pos.get(p.position_id, 0.0)) / p.total_costs_usd for p in live
                if p.status == PositionStatus.OPEN and p.total_costs_usd]
    hours = ((t - pd.Timestamp(fund["ts"].min())).total_seconds() / 3600.0) if len(fund) else 0.0
    out: dict[str, Any] = {
        "equity_usd": equity,
        "estimated_apy": hourly * HOURS_PER_YEAR / margin if margin > 0 else float("nan"),
        "realised_apy_7d": m7["total_funding_usd"] / margin * 365.0 / 7.0 if margin > 0 else float("nan"),
        "break_even_progress": float(np.mean(progress)) if progress else float("nan"),
        "active_positions": active,
        "margin_deployed_usd": margin,
        "min_health_factor": min_hf,
        "funding_win_rate": m7["win_rate"],
        "realised_apy": (m["total_funding_usd"] / margin * HOURS_PER_YEAR / hours
                         if margin > 0 and hours > 0 else float("nan")),
    }
    out.update(m)
    return out
