"""Data fallbacks: what a plan — and the paper venue that fills it — assumes where a leg lacks a market measure.

Why: funding rates are the one series every venue publishes and every public history keeps; prices, open
interest, volume, book depth and σ are often missing (the bundled data has funding but no candles or open
interest after 2026-03-07; a venue's feed can stop).  Without fallbacks the keeper can neither size nor cost a
plan there and never trades.  Each fallback is a stated assumption, written here once, switchable in
:attr:`~fundarb_core.strategy.config.KeeperConfig.fallbacks` and counted: every plan names the fallbacks it used
(its ``fallbacks`` column), the paper venue counts the fills that used one, and a backtest run reports both
(:mod:`fundarb_core.backtest.assumptions`).

The fallbacks (config name — when — what is assumed — what happens when it is switched off):

* ``slippage`` — a leg has no liquidity measure (book depth, open interest, 24 h volume): each fill on that leg
  costs ``fallback_slippage_bps`` instead of the √-impact (:func:`fundarb_core.strategy.costs.fill_impact`, the
  planner's cost and the paper venue's fill alike).  Off: the plan is rejected, ``no_liquidity_data`` (and a
  paper fill there keeps no impact, the rule before fallbacks existed).
* ``size_caps`` — neither leg has open interest nor 24 h volume: the 5 % OI and 5 % volume caps cannot be
  evaluated and are skipped, so the size is the balance × 0.9 × L, ``max_position_size_usd`` (and the TWAP size
  where one exists) cap.  Off: ``no_size_caps``.
* ``leverage`` — no σ for the asset on any venue: L = ``L_min``.  Off: ``no_sigma``.
* ``price_funding_mark`` — a leg has no fresh book mid or bar close (2 h): its funding rows' mark price, the
  latest at or before the instant and at most ``fallback_price_max_age_hours`` old.  Off: not used.
* ``price_other_venue`` — a leg has neither: the same asset's price on another venue (the legs are one
  underlying; the best source — book, bar, funding mark — then the newest).  Off: not used.
  A leg left without any price is rejected, ``no_price``: the paper venue could not fill it.
* ``basis`` — the basis is unknown (no bar or book price on a leg): the basis checks (z-score, payback, 150 bp)
  are skipped.  Off (or ``require_basis``): ``basis_unknown``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd

from fundarb_core.strategy.config import FALLBACKS, KeeperConfig
from fundarb_core.strategy.snapshot import Snapshot

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
PriceEntry = tuple[float, int, datetime]

BIT = {name: 1 << i for i, name in enumerate(FALLBACKS)}
"""Each fallback's bit in a plan's fallback mask."""

PRICE_SOURCES = {1: "book", 2: "candle", 3: "funding_mark"}
"""Where a paper price came from (the ``prio`` of :func:`fundarb_core.storage.market_queries.market_frames`)."""
_FUNDING_MARK = 3

REJECTIONS: tuple[str, ...] = ("no_liquidity_data", "no_size_caps", "no_sigma", "no_price")
"""The rejection reasons of switched-off fallbacks (and of a leg with no price at all), in priority order."""


def on(config: KeeperConfig, name: str) -> bool:
    """Whether fallback ``name`` is in use."""
    return name in config.fallbacks


def slippage_fallback_frac(config: KeeperConfig) -> float:
    """The flat slippage per fill as a fraction of notional; NaN when the ``slippage`` fallback is off."""
    return config.fallback_slippage_bps * 1e-4 if on(config, "slippage") else float("nan")


def funding_mark_age_hours(config: KeeperConfig, default_hours: float) -> float:
    """How old a funding row's mark may be to price a market: the fallback's age while it is on, else the age of
    every other price (``default_hours``), the rule before fallbacks existed."""
    return max(config.fallback_price_max_age_hours, default_hours) if on(config, "price_funding_mark") \
        else default_hours


@functools.lru_cache(maxsize=1)
def mask_labels() -> tuple[str, ...]:
    """The label of every mask value: the names of its set bits joined by ``,`` ("" for none)."""
    return tuple(",".join(n for n in FALLBACKS if m & BIT[n]) for m in range(1 << len(FALLBACKS)))


def names(label: object) -> list[str]:
    """The fallbacks a plan's ``fallbacks`` label names (empty for none or a missing label)."""
    return [n for n in str(label).split(",") if n in BIT] if isinstance(label, str) else []


def plan_fallbacks(
    snapshot: Snapshot, asset_idx: IntArray, av_short: IntArray, av_long: IntArray,
    liquidity_short: FloatArray, liquidity_long: FloatArray, oi_short: FloatArray, oi_long: FloatArray,
    volume_short: FloatArray, volume_long: FloatArray, sigma: FloatArray, basis_bp: FloatArray,
    config: KeeperConfig,
) -> tuple[IntArray, dict[str, BoolArray]]:
    """Per plan, the mask of the fallbacks it uses (:data:`BIT`) and the conditions of :data:`REJECTIONS` plus
    ``basis_unknown`` (module doc).  ``av_*`` index the flattened ``(asset, venue)`` grid; the other arrays are
    the planner's per-plan figures (σ after its same-asset fill)."""
    c = config
    n = len(asset_idx)
    mask = np.zeros(n, dtype="int64")

    def use(name: str, where: BoolArray) -> BoolArray:
        """Mark ``where`` as using ``name`` when it is on; return the rows it leaves unresolved (to reject)."""
        nonlocal mask
        if on(c, name):
            mask = mask | np.where(where, BIT[name], 0)
            return np.zeros(n, dtype=bool)
        return where

    rejects: dict[str, BoolArray] = {}
    no_liq = np.isnan(liquidity_short) | np.isnan(liquidity_long)
    rejects["no_liquidity_data"] = use("slippage", no_liq)
    no_caps = (np.isnan(oi_short) & np.isnan(oi_long)) & (np.isnan(volume_short) & np.isnan(volume_long))
    rejects["no_size_caps"] = use("size_caps", no_caps)
    rejects["no_sigma"] = use("leverage", np.isnan(sigma))

    own = np.isfinite(snapshot.mark_price)
    mark = np.isfinite(snapshot.funding_mark_price) & on(c, "price_funding_mark")
    priced = own | mark  # (asset, venue)
    other = priced.any(axis=1)[asset_idx] & on(c, "price_other_venue")
    own_f, mark_f, priced_f = own.ravel(), mark.ravel(), priced.ravel()
    by_mark = (~own_f[av_short] & mark_f[av_short]) | (~own_f[av_long] & mark_f[av_long])
    by_other = ~priced_f[av_short] | ~priced_f[av_long]
    mask = mask | np.where(by_mark, BIT["price_funding_mark"], 0) | np.where(by_other & other,
                                                                            BIT["price_other_venue"], 0)
    rejects["no_price"] = by_other & ~other

    unknown_basis = np.isnan(basis_bp)
    rejects["basis_unknown"] = use("basis", unknown_basis) | (unknown_basis & c.require_basis)
    if c.require_basis:
        mask = mask & ~np.where(unknown_basis, BIT["basis"], 0)
    return mask, rejects


def mask_column(mask: IntArray) -> pd.Categorical:
    """Masks as the plans' ``fallbacks`` column: a categorical of :func:`mask_labels`."""
    labels = mask_labels()
    return pd.Categorical.from_codes(mask, dtype=_labels_dtype(labels))


@functools.lru_cache(maxsize=2)
def _labels_dtype(labels: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(pd.Index(list(labels), dtype=object))


# ---------------------------------------------------------------------------------------------- paper venue


def resolve_price(table: Mapping[tuple[str, str], PriceEntry], venue: str, asset: str,
                  config: KeeperConfig) -> tuple[float, str] | None:
    """The paper price of ``(venue, asset)`` and its source label (module doc): the market's own book mid or bar
    close, else its funding mark (``price_funding_mark``), else the same asset's best-source, newest price on
    another venue (``price_other_venue``, labelled ``cross_venue_<source>``); None when none is allowed."""
    marks = on(config, "price_funding_mark")
    got = table.get((venue, asset))
    if got is not None and (got[1] != _FUNDING_MARK or marks):
        return got[0], PRICE_SOURCES[got[1]]
    if not on(config, "price_other_venue"):
        return None
    others = sorted((prio, -pd.Timestamp(ts).value, px) for (v, a), (px, prio, ts) in table.items()
                    if a == asset and v != venue and (prio != _FUNDING_MARK or marks))
    if not others:
        return None
    return others[0][2], f"cross_venue_{PRICE_SOURCES[others[0][0]]}"


def fill_fallbacks(price_source: str, liquidity_known: bool, config: KeeperConfig) -> tuple[str, ...]:
    """The fallbacks one paper fill used: its price's source and, without a liquidity measure, the flat slippage
    (only while that fallback is on — off, the fill has no impact and assumes nothing)."""
    used = []
    if not liquidity_known and on(config, "slippage"):
        used.append("slippage")
    if price_source.endswith("funding_mark"):
        used.append("price_funding_mark")
    if price_source.startswith("cross_venue"):
        used.append("price_other_venue")
    return tuple(used)
