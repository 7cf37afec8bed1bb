"""The backtest report (and the same report for the paper/live keeper's realised ledger).

Why one report for both: a figure the backtest promises and the ledger later realises must be computed the same way
to be compared, so :func:`summarise` reads a :class:`LedgerView` — an equity curve and the keeper's ledger tables —
whether they come from a backtest's private replica or from the keeper's own database (:func:`ledger_view`).

Definitions (capital C = the venues' starting balances, ``hours`` = length of the period):

* ``net_pnl`` = final equity − C (equity = wallets + unrealised P&L at the paper marks); ``net_apr`` =
  net_pnl / C × 8760 / hours;
* ``gross_funding`` = Σ funding paid to the keeper's legs; ``fees`` = Σ fill fees; ``slippage`` = Σ over fills of
  |fill − mid| × qty (the half spread crossed plus the √-impact; mid = the limit price less the paper book's half
  spread, the keeper's limits sit at the touch); ``price_pnl`` = net − funding + fees (slippage and basis moves);
* ``sharpe`` / ``sortino`` = mean hourly return on C over its σ / downside deviation, × √8760;
  ``max_drawdown`` = the largest fall of equity from its running peak, as a fraction of the peak;
* ``turnover`` = traded notional (both legs) / C, annualised; ``funding_win_rate`` = share of position-hours
  whose net funding (both legs) was positive;
* per position, contribution = funding + price P&L (fill cash flows plus the open quantity at the final mark) −
  fees; per asset and per pair the sum over positions (their total is ``net_pnl``);
* ``oracle_apr`` and ``capture_ratio`` = net_pnl / the cost-aware oracle's net (dedicated-slots bound, see
  :mod:`fundarb_core.backtest.oracle`) when an oracle figure is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from fundarb_core.backtest.assumptions import assumptions_block
from fundarb_core.execution.performance import payment_metrics
from fundarb_core.funding import HOURS_PER_YEAR


@dataclass
class LedgerView:
    """What the report reads: equity curve (index = time, USD) and the keeper's ledger frames."""

    capital_usd: float
    equity: pd.Series
    positions: pd.DataFrame  # ledger_positions
    fills: pd.DataFrame  # ledger_fills + side, limit_price
    funding: pd.DataFrame  # ledger_funding
    final_marks: pd.DataFrame  # venue, asset, qty, mark
    half_spread_bps: float = 1.0
    label: str = ""
    assumptions: dict[str, int] = field(default_factory=dict)  # data fallbacks used (backtest.assumptions)
    assumption_values: dict[str, str] = field(default_factory=dict)  # … and what each assumes


def _hours(equity: pd.Series) -> float:
    if len(equity) < 2:
        return 0.0
    return float((equity.index[-1] - equity.index[0]) / pd.Timedelta(hours=1))


def _slippage(fills: pd.DataFrame, half_spread_bps: float) -> pd.Series:
    if fills.empty:
        return pd.Series(dtype="float64")
    h = half_spread_bps * 1e-4
    buy = fills["side"].astype(str).eq("buy").to_numpy()
    limit = fills["limit_price"].to_numpy(dtype="float64")
    mid = np.where(buy, limit / (1 + h), limit / (1 - h))
    px = fills["price"].to_numpy(dtype="float64")
    qty = np.abs(fills["qty"].to_numpy(dtype="float64"))
    return pd.Series(np.where(buy, px - mid, mid - px) * qty, index=fills.index)


def contributions(view: LedgerView) -> pd.DataFrame:
    """Per position: funding, fees, slippage, price P&L and net (module doc), with asset and pair."""
    cols = ["position_id", "asset", "short_venue", "long_venue", "opened_at", "closed_at", "size_usd",
            "funding_usd", "fees_usd", "slippage_usd", "price_pnl_usd", "net_usd"]
    if view.positions.empty:
        return pd.DataFrame(columns=cols)
    pos = view.positions.set_index("position_id")
    fund = view.funding.groupby("position_id")["amount_usd"].sum() if len(view.funding) else pd.Series(dtype=float)
    f = view.fills.assign(slip=_slippage(view.fills, view.half_spread_bps),
                          cash=-view.fills["qty"] * view.fills["price"]) if len(view.fills) else None
    out = pd.DataFrame(index=pos.index)
    out["funding_usd"] = fund.reindex(pos.index).fillna(0.0)
    if f is not None:
        g = f.groupby("position_id")
        out["fees_usd"] = g["fee_usd"].sum().reindex(pos.index).fillna(0.0)
        out["slippage_usd"] = g["slip"].sum().reindex(pos.index).fillna(0.0)
        cash = g["cash"].sum().reindex(pos.index).fillna(0.0)
        open_qty = f.groupby(["position_id", "venue", "asset"])["qty"].sum().reset_index()
        marks = view.final_marks.drop(columns=["qty"], errors="ignore")
        open_qty = open_qty.merge(marks, on=["venue", "asset"], how="left")
        open_qty["value"] = open_qty["qty"] * open_qty["mark"].fillna(0.0)
        value = open_qty.groupby("position_id")["value"].sum().reindex(pos.index).fillna(0.0)
        out["price_pnl_usd"] = cash + value
    else:
        out["fees_usd"] = out["slippage_usd"] = out["price_pnl_usd"] = 0.0
    out["net_usd"] = out["funding_usd"] + out["price_pnl_usd"] - out["fees_usd"]
    for c in ("asset", "short_venue", "long_venue", "opened_at", "closed_at", "size_usd"):
        out[c] = pos[c]
    return out.reset_index()[cols]


def _group(contrib: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    if contrib.empty:
        return []
    g = contrib.groupby(keys, sort=False).agg(
        positions=("position_id", "count"), funding_usd=("funding_usd", "sum"), fees_usd=("fees_usd", "sum"),
        slippage_usd=("slippage_usd", "sum"), price_pnl_usd=("price_pnl_usd", "sum"), net_usd=("net_usd", "sum"))
    g = g.sort_values("net_usd", ascending=False).reset_index()
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else (int(v) if isinstance(v, (int, np.integer))
                                                                        else v)) for k, v in r.items()}
            for r in g.to_dict("records")]


def risk_ratios(equity: pd.Series, capital: float) -> dict[str, float]:
    """Sharpe, Sortino (annualised from hourly returns on capital) and max drawdown of an equity curve."""
    e = np.concatenate([[capital], equity.to_numpy(dtype="float64")])
    r = np.diff(e) / capital
    ann = math.sqrt(HOURS_PER_YEAR)
    sd = float(np.std(r, ddof=1)) if r.size > 1 else float("nan")
    down = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))) if r.size else float("nan")
    mean = float(np.mean(r)) if r.size else float("nan")
    peak = np.maximum.accumulate(e)
    return {
        "sharpe": mean / sd * ann if sd and sd > 0 else float("nan"),
        "sortino": mean / down * ann if down and down > 0 else float("nan"),
        "max_drawdown": float(np.max(1.0 - e / peak)) if e.size else 0.0,
    }


def summarise(view: LedgerView, oracle_net_usd: float | None = None,
              oracle_all_assets_usd: float | None = None) -> dict[str, Any]:
    """The report's figures (module doc) as one flat dict plus ``per_asset`` / ``per_pair`` rows."""
    c = view.capital_usd
    hours = _hours(view.equity)
    years = hours / HOURS_PER_YEAR if hours > 0 else float("nan")
    final = float(view.equity.iloc[-1]) if len(view.equity) else c
    net = final - c
    contrib = contributions(view)
    fees = float(view.fills["fee_usd"].sum()) if len(view.fills) else 0.0
    funding = float(view.funding["amount_usd"].sum()) if len(view.funding) else 0.0
    traded = float((view.fills["qty"].abs() * view.fills["price"]).sum()) if len(view.fills) else 0.0
    pay = (view.funding.assign(h=pd.to_datetime(view.funding["ts"]).dt.floor("h"))
           .groupby(["position_id", "h"])["amount_usd"].sum().to_numpy() if len(view.funding) else np.array([]))
    pm = payment_metrics(pay)
    out: dict[str, Any] = {
        "label": view.label, "start": str(view.equity.index[0]) if len(view.equity) else None,
        "end": str(view.equity.index[-1]) if len(view.equity) else None, "hours": hours, "capital": c,
        "final_equity": final, "net_pnl": net, "net_apr": net / c / years if years == years and c else float("nan"),
        "gross_funding": funding, "fees": fees, "slippage": float(_slippage(view.fills, view.half_spread_bps).sum()),
        "price_pnl": net - funding + fees, **risk_ratios(view.equity, c),
        "turnover": traded / c / years if years == years and c else float("nan"), "traded_usd": traded,
        "funding_win_rate": pm["win_rate"], "profit_factor": pm["profit_factor"],
        "positions_opened": len(view.positions),
        "oracle_net": oracle_net_usd, "oracle_apr": (oracle_net_usd / c / years if oracle_net_usd is not None
                                                     and years == years else None),
        "oracle_all_assets_net": oracle_all_assets_usd,
        "capture_ratio": (net / oracle_net_usd if oracle_net_usd else None),
        "per_asset": _group(contrib, ["asset"]),
        "per_pair": _group(contrib, ["asset", "short_venue", "long_venue"]),
        "assumptions": dict(view.assumptions), "assumption_values": dict(view.assumption_values),
    }
    return out


HEADLINE = ("net_apr", "net_pnl", "gross_funding", "fees", "slippage", "sharpe", "sortino", "max_drawdown",
            "turnover", "funding_win_rate", "oracle_apr", "capture_ratio", "positions_opened")


def _fmt(key: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if key in ("net_apr", "max_drawdown", "funding_win_rate", "oracle_apr", "capture_ratio"):
        return f"{100 * v:.2f} %"
    if key in ("sharpe", "sortino", "turnover", "profit_factor"):
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


def comparison_table(summaries: list[dict[str, Any]], keys: tuple[str, ...] = HEADLINE) -> pd.DataFrame:
    """One row per summary (its ``label``), the headline figures formatted for markdown."""
    return pd.DataFrame([{"run": s["label"], **{k: _fmt(k, s.get(k)) for k in keys}} for s in summaries])


def markdown(summary: dict[str, Any], top: int = 10) -> str:
    """A summary as markdown: headline table, then the top per-asset and per-pair contributions."""
    lines = [f"**{summary['label']}** — {summary['start']} → {summary['end']} ({summary['hours']:.0f} h), "
             f"capital {summary['capital']:,.0f} USD", "",
             comparison_table([summary]).drop(columns="run").T.rename(columns={0: "value"}).to_markdown(), ""]
    for key, title in (("per_asset", "Per asset"), ("per_pair", "Per pair")):
        rows = pd.DataFrame(summary[key][:top])
        if len(rows):
            lines += [f"{title} (USD)", "", rows.to_markdown(index=False, floatfmt=",.2f"), ""]
    block = assumptions_block(summary)
    if block:
        lines += ["Assumptions (data fallbacks)", "", "```", *block, "```", ""]
    return "\n".join(lines)


def estimated_vs_realised(view: LedgerView) -> pd.DataFrame:
    """Per position: funding the plan expected over the hours held vs funding received, planned vs paid costs."""
    contrib = contributions(view)
    if contrib.empty:
        return pd.DataFrame()
    pos = view.positions.set_index("position_id")
    end = view.equity.index[-1] if len(view.equity) else pd.Timestamp.now()
    closed = pd.to_datetime(pos["closed_at"]).fillna(end)
    held = (closed - pd.to_datetime(pos["opened_at"])) / pd.Timedelta(hours=1)
    c = contrib.set_index("position_id")
    out = pd.DataFrame({
        "asset": pos["asset"], "pair": pos["short_venue"] + "→" + pos["long_venue"], "hours_held": held,
        "expected_funding_usd": pos["expected_hourly_usd"].fillna(0.0) * held, "realised_funding_usd": c["funding_usd"],
        "planned_costs_usd": pos["total_costs_usd"], "paid_costs_usd": c["fees_usd"] + c["slippage_usd"],
        "net_usd": c["net_usd"]})
    return out.reset_index()


def ledger_view(ledger_conn: duckdb.DuckDBPyConnection, market_conn: duckdb.DuckDBPyConnection,
                half_spread_bps: float = 1.0, label: str = "keeper ledger") -> LedgerView | None:
    """The keeper's realised record in its trading file (paper or live), or None when the keeper never ran there.

    Equity = the per-cycle ``performance_snapshots``; final marks = the marks the paper venue's positions carry at
    its last clock, priced from the warehouse on ``market_conn``."""
    from fundarb_core.execution.ledger import Ledger
    from fundarb_core.storage.ledger_store import DuckDBLedgerStore
    from fundarb_core.storage.paper_store import DuckDBPaperStore, paper_venue_on

    have = {r[0] for r in ledger_conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if "performance_snapshots" not in have or "ledger_accounts" not in have:
        return None
    store = DuckDBLedgerStore(ledger_conn, create=False)
    perf = store.query("SELECT ts, equity_usd FROM performance_snapshots WHERE equity_usd IS NOT NULL ORDER BY ts")
    if perf.empty:
        return None
    ledger = Ledger(store)
    marks = pd.DataFrame(columns=["venue", "asset", "qty", "mark"])
    if "paper_positions" in have and "paper_state" in have:  # the paper venue's own price rule for the marks
        ex = paper_venue_on(market_conn, store=DuckDBPaperStore(ledger_conn, create=False),
                            half_spread_bps=half_spread_bps)
        if ex.now is not None:
            marks = pd.DataFrame([{"venue": p.venue, "asset": p.asset, "qty": p.qty, "mark": p.mark_price}
                                  for v in ex.venues() for p in ex.positions(v)],
                                 columns=["venue", "asset", "qty", "mark"])
    equity = pd.Series(perf["equity_usd"].to_numpy(), index=pd.DatetimeIndex(perf["ts"]), name="equity_usd")
    equity = equity[~equity.index.duplicated(keep="last")]
    return LedgerView(capital_usd=float(sum(ledger.accounts().values())), equity=equity,
                      positions=ledger.positions_frame(), fills=ledger.fills_frame(),
                      funding=ledger.funding_frame(), final_marks=marks, half_spread_bps=half_spread_bps,
                      label=label)
