"""The "assumptions" of a backtest: which data fallbacks its plans and fills used, how often, with what values.

Why a block in every report: on funding-only data (most public history, the bundled data after 2026-03-07) the
keeper trades on assumed slippage, leverage and prices (:mod:`fundarb_core.strategy.fallbacks`); a figure
earned on assumptions must say so next to it, or it reads as measured.  Counts are per run: ``plans`` = the
plans taken (positions the cycle opened), ``fills`` = the paper venue's fills; ``plans.<name>`` /
``fills.<name>`` how many of them used fallback ``<name>`` (a plan names its fallbacks in its ``fallbacks``
column; a fill uses a price or slippage fallback).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fundarb_core.strategy.config import FALLBACKS, KeeperConfig
from fundarb_core.strategy.fallbacks import names

FILL_FALLBACKS = ("slippage", "price_funding_mark", "price_other_venue")
"""The fallbacks a fill can use (the others are decisions of the plan only)."""


def count_assumptions(plans_taken: Iterable[object], fills: int, fill_fallbacks: Mapping[str, int]) -> dict[str, int]:
    """Counts (module doc) from the ``fallbacks`` labels of the plans taken and the paper venue's fill counters."""
    labels = [names(label) for label in plans_taken]
    out = {"plans": len(labels), "fills": int(fills)}
    for name in FALLBACKS:
        out[f"plans.{name}"] = sum(name in used for used in labels)
        if name in FILL_FALLBACKS:
            out[f"fills.{name}"] = int(fill_fallbacks.get(name, 0))
    return out


def assumption_values(config: KeeperConfig) -> dict[str, str]:
    """What each fallback assumes, with its value, in words ("off" when switched off)."""
    c = config
    words = {
        "slippage": f"{c.fallback_slippage_bps:g} bp per fill where a leg has no liquidity measure",
        "size_caps": (f"OI/volume size caps skipped where neither leg has OI or volume (size = balance × "
                      f"{c.balance_fraction:g} × L, at most {c.max_position_size_usd:,.0f} USD)"),
        "leverage": f"L_min = {c.leverage_min:g} where σ is unknown",
        "price_funding_mark": (f"the funding rows' mark price (at most {c.fallback_price_max_age_hours:g} h old) "
                               "where a leg has no book or bar price"),
        "price_other_venue": "the same asset's price on another venue where a leg has no price of its own",
        "basis": "basis checks skipped where the basis is unknown",
    }
    return {n: (w if n in c.fallbacks else "off") for n, w in words.items()}


def assumptions_block(summary: Mapping[str, Any]) -> list[str]:
    """A few plain lines: the run, then each fallback used (its assumption, how many plans and fills), then those
    switched off; empty when the summary carries no counts (a ledger report)."""
    counts: Mapping[str, int] = summary.get("assumptions") or {}
    values: Mapping[str, str] = summary.get("assumption_values") or {}
    if not counts:
        return []
    plans, fills = counts.get("plans", 0), counts.get("fills", 0)
    lines = [f"assumptions — {summary.get('label', '')}: {plans} plans taken, {fills} fills"]
    for name in FALLBACKS:
        n_plans, n_fills = counts.get(f"plans.{name}", 0), counts.get(f"fills.{name}", 0)
        if not (n_plans or n_fills):
            continue
        where = f"{n_plans} of {plans} plans"
        if name in FILL_FALLBACKS:
            where += f", {n_fills} of {fills} fills"
        lines.append(f"  {name}: {values.get(name, '')} — {where}")
    if len(lines) == 1:
        lines.append("  no data fallback used: every plan and fill had its measures")
    off = [n for n in FALLBACKS if values.get(n) == "off"]
    if off:
        lines.append(f"  switched off (plans lacking them rejected): {', '.join(off)}")
    return lines


def assumptions_markdown(summaries: Iterable[Mapping[str, Any]]) -> str:
    """Every run's :func:`assumptions_block` as one fenced markdown block ("" when none carries counts)."""
    lines = [line for s in summaries for line in assumptions_block(s)]
    return "```\n" + "\n".join(lines) + "\n```" if lines else ""
