"""The policy comparison: every policy at every fee regime next to the oracle, total and per calendar month.

Why a module of its own: issue 11 judges the keeper by one table — naive 24 h, patient, keeper, keeper + forecasts
and the cost-aware oracle, at real fees and at 0, 1.44 and 4.5 bp — and the CLI, the JSON file and the README must
show the same figures, so the table is built here once (:func:`comparison`) and rendered as plain text here
(:func:`comparison_text`).

Definitions (the totals are :func:`~fundarb_core.backtest.report.summarise`'s; C = capital, the venues' starting
balances):

* net APR = net P&L / C × 8760 / hours; Sharpe and max drawdown from hourly equity (report module);
* turnover = traded notional (both legs, entries and exits) / C, **annualised** (× 8760 / hours) — per month too,
  so months of different lengths compare;
* capture = net P&L / the oracle's net over the same span; the denominator is the oracle's *slots* bound (as many
  dedicated positions as the keeper has slots, the keeper's size cap); the *all-assets* bound (every asset held
  at full size) is given beside it;
* months are calendar months (UTC) clipped to the period.  A month's P&L is the change of the equity curve across
  it: the curve's points are the equity after each hourly cycle, the month owns the points whose hour falls in it
  (the last month also the point at the end), and its P&L runs from the last point before it (C before the
  first cycle) to its own last point — so the months' P&L and traded notional add up to the totals exactly, and
  their hourly returns are the total's hourly returns split by month.  The oracle's month is the change of its
  cumulative curve over the same boundaries.  A month whose oracle P&L is not positive has no capture ratio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fundarb_core.backtest.engine import STRATEGY_LABELS, BacktestRun
from fundarb_core.funding import HOURS_PER_YEAR

if TYPE_CHECKING:
    from fundarb_core.backtest.suite import OracleResult, SuiteResult

TURNOVER_UNIT = "traded notional (both legs, entries and exits) / capital, annualised (x 8760 / hours)"
CAPTURE_UNIT = ("net P&L / the cost-aware oracle's net P&L (slots bound: the keeper's slots and size cap; "
                "'vs capacity': the bound at the keeper's collateral capacity, backtest.capacity)")
POLICY_ORDER = ("naive", "patient", "keeper", "keeper_forecast")
"""Reference rules first, then the keeper; the oracle closes each regime's table."""


def months(start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[str, pd.Timestamp, pd.Timestamp]]:
    """Calendar months (UTC) of ``[start, end)`` as ``(YYYY-MM, lo, hi)``, clipped to the period."""
    out = []
    lo = pd.Timestamp(start)
    while lo < end:
        hi = min(pd.Timestamp(end), (lo.to_period("M") + 1).to_timestamp())
        out.append((f"{lo:%Y-%m}", lo, hi))
        lo = hi
    return out


def _clean(v: Any) -> Any:
    """JSON-safe values: NaN/inf → None, numpy scalars → Python."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def _ratios(points: np.ndarray, capital: float) -> tuple[float, float]:
    """Sharpe (hourly returns on capital, × √8760) and max drawdown (fraction of the running peak) of a path."""
    r = np.diff(points) / capital
    sd = float(np.std(r, ddof=1)) if r.size > 1 else float("nan")
    sharpe = float(np.mean(r)) / sd * math.sqrt(HOURS_PER_YEAR) if sd and sd > 0 else float("nan")
    dd = float(np.max(1.0 - points / np.maximum.accumulate(points))) if points.size else 0.0
    return sharpe, dd


def _boundary_values(curve: pd.Series, start_value: float, bounds: Sequence[pd.Timestamp],
                     end: pd.Timestamp) -> np.ndarray:
    """The curve's value at each month boundary: its last point before the boundary (``start_value`` before the
    first), and its point at ``end`` for the last."""
    idx = curve.index
    out = []
    for b in bounds:
        if b >= end:
            out.append(float(curve.iloc[-1]))
            continue
        before = curve[idx < b]
        out.append(float(before.iloc[-1]) if len(before) else start_value)
    return np.asarray(out)


def monthly(run: BacktestRun, oracle_curve: pd.Series | None) -> list[dict[str, Any]]:
    """Per calendar month: net P&L and APR, Sharpe, max drawdown, turnover, the oracle's P&L and the capture."""
    cfg, eq, c = run.config, run.equity, run.capital_usd
    spans = months(cfg.start, cfg.end)
    bounds = [lo for _, lo, _ in spans] + [cfg.end]
    values = _boundary_values(eq, c, bounds, cfg.end)
    ovals = (_boundary_values(oracle_curve, 0.0, bounds, cfg.end) if oracle_curve is not None
             else np.full(len(bounds), np.nan))
    fills = run.fills
    ts = pd.to_datetime(fills["ts"]) if len(fills) else pd.Series(dtype="datetime64[ns]")
    notional = (fills["qty"].abs() * fills["price"]).to_numpy(dtype="float64") if len(fills) else np.array([])
    rows = []
    for k, (label, lo, hi) in enumerate(spans):
        last = k == len(spans) - 1
        mask = (eq.index >= lo) & ((eq.index <= hi) if last else (eq.index < hi))
        points = np.concatenate([[values[k]], eq[mask].to_numpy(dtype="float64")])
        hours = (hi - lo) / pd.Timedelta(hours=1)
        pnl = float(values[k + 1] - values[k])
        opnl = float(ovals[k + 1] - ovals[k])
        in_month = ((ts >= lo) & (ts < hi)).to_numpy() if len(fills) else np.array([], dtype=bool)
        traded = float(notional[in_month].sum()) if len(fills) else 0.0
        sharpe, dd = _ratios(points, c)
        rows.append({"month": label, "hours": hours, "net_pnl_usd": pnl,
                     "net_apr": pnl / c * HOURS_PER_YEAR / hours, "sharpe": sharpe, "max_drawdown": dd,
                     "traded_usd": traded, "turnover": traded / c * HOURS_PER_YEAR / hours,
                     "oracle_net_usd": opnl, "capture_ratio": pnl / opnl if opnl > 0 else None})
    return rows


def _oracle_row(o: OracleResult, capital: float, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, Any]:
    """The oracle as a row of the table: its slots-bound curve's figures, total and per month."""
    hours = (end - start) / pd.Timedelta(hours=1)
    points = capital + np.concatenate([[0.0], o.curve.to_numpy(dtype="float64")])
    sharpe, dd = _ratios(points, capital)
    spans = months(start, end)
    bounds = [lo for _, lo, _ in spans] + [end]
    vals = _boundary_values(o.curve, 0.0, bounds, end)
    per_month = []
    for k, (label, lo, hi) in enumerate(spans):
        last = k == len(spans) - 1
        mask = (o.curve.index >= lo) & ((o.curve.index <= hi) if last else (o.curve.index < hi))
        mp = capital + np.concatenate([[vals[k]], o.curve[mask].to_numpy(dtype="float64")])
        ms, mdd = _ratios(mp, capital)
        h = (hi - lo) / pd.Timedelta(hours=1)
        pnl = float(vals[k + 1] - vals[k])
        per_month.append({"month": label, "hours": h, "net_pnl_usd": pnl, "net_apr": pnl / capital * HOURS_PER_YEAR / h,
                          "sharpe": ms, "max_drawdown": mdd, "traded_usd": None, "turnover": None,
                          "oracle_net_usd": pnl, "capture_ratio": 1.0 if pnl > 0 else None})
    return {"policy": "oracle (slots)", "strategy": "oracle", "net_pnl_usd": o.slots_net_usd,
            "net_apr": o.slots_net_usd / capital * HOURS_PER_YEAR / hours, "sharpe": sharpe, "max_drawdown": dd,
            "turnover": None, "capture_ratio": 1.0 if o.slots_net_usd > 0 else None,
            "capture_all_assets": o.slots_net_usd / o.all_assets_net_usd if o.all_assets_net_usd > 0 else None,
            "capture_capacity": o.slots_net_usd / o.capacity_net_usd if o.capacity_net_usd > 0 else None,
            "positions_opened": None, "months": per_month, "parameters": [], "assumptions": {}}


def _parameters(run: BacktestRun) -> list[dict[str, Any]]:
    """The parameters a horizon run chose before each month (empty for the fixed rules)."""
    if run.parameters.empty:
        return []
    cols = ["month", "windows_h", "shrink_z", "horizon_h", "entry_margin", "score"]
    return [{k: r[k] for k in cols} for r in run.parameters.to_dict("records")]


def comparison(result: SuiteResult) -> dict[str, Any]:
    """The comparison document (module doc): per fee regime, every policy and the oracle, total and per month.

    Deterministic: built only from the runs' curves and ledgers and the oracles (no timings, paths or run ids),
    in a fixed order — the same backtest twice gives the same JSON (:func:`to_json`)."""
    from fundarb_core.backtest.suite import fee_label

    if not result.runs:
        raise ValueError("no backtest runs to compare")
    first = result.runs[0]
    start, end, capital = first.config.start, first.config.end, first.capital_usd
    regimes: dict[str, list[tuple[BacktestRun, dict[str, Any]]]] = {}
    for run, s in zip(result.runs, result.summaries, strict=True):
        regimes.setdefault(fee_label(run.config.fee_bps), []).append((run, s))
    rank = {k: i for i, k in enumerate(POLICY_ORDER)}
    order = sorted(regimes, key=lambda k: (k != "real fees", float(k.split()[0]) if k != "real fees" else 0.0))
    doc_regimes = []
    for key in order:
        o = result.oracles[key]
        rows = []
        for run, s in sorted(regimes[key], key=lambda rs: rank.get(rs[0].config.strategy, len(rank))):
            rows.append({
                "policy": STRATEGY_LABELS[run.config.strategy], "strategy": run.config.strategy,
                "net_pnl_usd": s["net_pnl"], "net_apr": s["net_apr"], "sharpe": s["sharpe"],
                "max_drawdown": s["max_drawdown"], "turnover": s["turnover"], "capture_ratio": s["capture_ratio"],
                "capture_all_assets": s["net_pnl"] / o.all_assets_net_usd if o.all_assets_net_usd > 0 else None,
                "capture_capacity": s["net_pnl"] / o.capacity_net_usd if o.capacity_net_usd > 0 else None,
                "positions_opened": s["positions_opened"], "months": monthly(run, o.curve),
                "parameters": _parameters(run), "assumptions": dict(s.get("assumptions", {}))})
        rows.append(_oracle_row(o, capital, start, end))
        doc_regimes.append({"fees": key, "oracle_slots_net_usd": o.slots_net_usd,
                            "oracle_all_assets_net_usd": o.all_assets_net_usd,
                            "oracle_capacity_net_usd": o.capacity_net_usd, "capacity_slots": o.capacity_slots,
                            "policies": rows})
    return _clean({
        "start": str(start), "end": str(end), "hours": (end - start) / pd.Timedelta(hours=1),
        "capital_usd": capital, "venues": list(first.venues), "assets": list(first.config.assets or []),
        "turnover_unit": TURNOVER_UNIT, "capture_unit": CAPTURE_UNIT, "regimes": doc_regimes})


def to_json(doc: dict[str, Any]) -> str:
    """The document as canonical JSON text (fixed key order, no NaN)."""
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def comparison_frame(doc: dict[str, Any]) -> pd.DataFrame:
    """The document as one flat table (a row per fee regime × policy × period, ``month`` = ``total`` or
    ``YYYY-MM``): what MLflow stores as CSV and a notebook filters."""
    keys = ("net_pnl_usd", "net_apr", "sharpe", "max_drawdown", "turnover", "capture_ratio")
    rows = []
    for reg in doc["regimes"]:
        for p in reg["policies"]:
            rows.append({"fees": reg["fees"], "policy": p["policy"], "month": "total", **{k: p[k] for k in keys},
                         "capture_all_assets": p["capture_all_assets"]})
            rows += [{"fees": reg["fees"], "policy": p["policy"], "month": m["month"], **{k: m[k] for k in keys},
                      "capture_all_assets": None} for m in p["months"]]
    return pd.DataFrame(rows)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def _align(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ", left: int = 1) -> list[str]:
    """Columns padded to their widest cell: the first ``left`` left-aligned (names), the rest right (figures)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [str(x).ljust(w) if i < left else str(x).rjust(w) for i, (x, w) in pairs]
        return (indent + "  ".join(cells)).rstrip()

    return [line(r) for r in [header, *rows]]


def comparison_text(doc: dict[str, Any]) -> str:
    """The document as plain aligned text: per fee regime the totals with the monthly capture ratios beside them,
    then every policy's months."""
    lines = [f"policies vs the cost-aware oracle, {doc['start']} → {doc['end']} ({doc['hours']:.0f} h), capital "
             f"{doc['capital_usd']:,.0f} USD",
             f"turnover: {doc['turnover_unit']}", f"capture: {doc['capture_unit']}; 'vs all': the all-assets bound"]
    for reg in doc["regimes"]:
        month_labels = [m["month"] for m in reg["policies"][0]["months"]]
        lines += ["", f"{reg['fees']}: oracle {reg['oracle_slots_net_usd']:,.2f} USD (slots), "
                      f"{reg['oracle_all_assets_net_usd']:,.2f} USD (all assets), "
                      f"{reg.get('oracle_capacity_net_usd', 0.0):,.2f} USD (capacity: "
                      f"{reg.get('capacity_slots', 0.0):.2f} full positions at L_min)"]
        header = ["policy", "net P&L", "net APR", "Sharpe", "max DD", "turnover", "capture", "vs capacity",
                  "vs all", *[f"cap {m}" for m in month_labels]]
        rows = [[p["policy"], _num(p["net_pnl_usd"], "{:,.2f}"), _pct(p["net_apr"]), _num(p["sharpe"]),
                 _pct(p["max_drawdown"]), _num(p["turnover"], "{:.1f}"), _pct(p["capture_ratio"]),
                 _pct(p.get("capture_capacity")), _pct(p["capture_all_assets"]),
                 *[_pct(m["capture_ratio"]) for m in p["months"]]]
                for p in reg["policies"]]
        lines += _align(header, rows)
        for p in reg["policies"]:
            if p.get("parameters"):
                lines.append(f"  {p['policy']}: parameters chosen walk-forward before each month — " + "; ".join(
                    f"{c['month']} windows {c['windows_h']} h, z {c['shrink_z']:g}, H {c['horizon_h']:g} h, "
                    f"margin {c['entry_margin']:g}" for c in p["parameters"]))
    lines += ["", "per month (net APR, Sharpe, max DD, turnover, capture):"]
    header = ["fees", "policy", "month", "net P&L", "net APR", "Sharpe", "max DD", "turnover", "oracle P&L", "capture"]
    rows = []
    for reg in doc["regimes"]:
        for p in reg["policies"]:
            for m in p["months"]:
                rows.append([reg["fees"], p["policy"], m["month"], _num(m["net_pnl_usd"], "{:,.2f}"),
                             _pct(m["net_apr"]), _num(m["sharpe"]), _pct(m["max_drawdown"]),
                             _num(m["turnover"], "{:.1f}"), _num(m["oracle_net_usd"], "{:,.2f}"),
                             _pct(m["capture_ratio"])])
    lines += _align(header, rows, left=3)
    return "\n".join(lines)
