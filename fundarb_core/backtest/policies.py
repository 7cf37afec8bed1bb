"""Decision rules a backtest can run instead of the keeper's own choice, through the same execution path.

The strategy backtest compares the keeper against rules a trader would write in an afternoon (the naive 24 h rule,
the patient rule of issue 11), so all must pay the same fees, slippage and risk limits: each rule is a
:data:`~fundarb_core.execution.cycle.Chooser`, i.e. it only replaces *which* plan is taken in
:func:`~fundarb_core.execution.cycle.run_cycle`; sizing, leverage, execution, funding and the ledger stay the keeper's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd

from fundarb_core.domain.plan import Plan
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.planning import Action, Position
from fundarb_core.strategy.snapshot import Snapshot

UNSIZED_REASONS = frozenset({"no_liquidity_data", "low_volume", "below_min_size"})
"""Plans the naive rule may not take: without a liquidity measure or volume the keeper cannot size or cost a
trade, so both rules trade the same universe."""


def _trailing(plans: pd.DataFrame) -> np.ndarray:
    """Each plan's trailing 24 h mean spread per hour (the snapshot's ``mean_24h`` baseline forecast)."""
    return plans["expected_spread_per_hour"].to_numpy(dtype="float64", na_value=np.nan)


def naive_trailing_choice(plans: pd.DataFrame, positions: Sequence[Position], snapshot: Snapshot,
                          config: KeeperConfig, factor: float = 2.0) -> Action:
    """"Hold the best trailing-24 h pair, switch when twice as good".

    Choices: the rule ranks pairs by the trailing 24 h mean spread (the snapshot must be built with
    ``baseline_forecast="mean_24h"``, so ``expected_spread_per_hour`` is that mean and held positions are re-marked
    at it); it ignores the keeper's score, break-even and basis checks but not sizing or the risk limits (plans
    rejected for ``UNSIZED_REASONS`` or blocked by exposure limits are skipped).  With a free slot it enters the
    best pair on an unheld asset; with every slot used it switches the weakest position into the best pair on an
    unheld asset (or a better pair of the same asset) when that pair's trailing spread is at least ``factor`` ×
    the weakest's and positive.  One action per cycle, like the keeper.
    """
    if plans.empty:
        return Action("none", "no plan")
    reason = plans["reason"].astype(object).where(plans["reason"].notna(), "")
    blocked = plans["blocked"] if "blocked" in plans else pd.Series("", index=plans.index)
    trailing = _trailing(plans)
    size = plans["size_usd"].to_numpy(dtype="float64", na_value=np.nan)
    ok = (~reason.isin(UNSIZED_REASONS)).to_numpy() & (blocked.to_numpy() == "") & np.isfinite(trailing) \
        & (trailing > 0) & np.isfinite(size) & (size >= config.min_position_usd)
    if not ok.any():
        return Action("none", "no sized pair with a positive trailing spread")
    held = {p.asset for p in positions}
    gross = sum(2.0 * p.size_usd for p in positions)
    assets = plans["asset"].astype(str).to_numpy()
    order = np.argsort(-np.where(ok, trailing, -np.inf), kind="stable")
    order = order[ok[order]]

    def row(j: int) -> Plan:
        return Plan.from_row(plans.iloc[int(j)].to_dict())

    if len(positions) < config.max_positions:
        for j in order:
            if assets[j] not in held and gross + 2.0 * size[j] <= config.max_gross_exposure_usd:
                return Action("enter", "best trailing-24h pair on an unheld asset", plan=row(j))
    if not positions:
        return Action("none", "no pair fits the exposure limits")
    weakest = min(positions, key=lambda p: p.hourly_return_usd / p.size_usd if p.size_usd else 0.0)
    old = weakest.hourly_return_usd / weakest.size_usd if weakest.size_usd else 0.0
    for j in order:
        same = assets[j] == weakest.asset
        own = same and (plans["short_venue"].iat[j], plans["long_venue"].iat[j]) == (weakest.short_venue,
                                                                                      weakest.long_venue)
        if own or (assets[j] in held and not same):
            continue
        if gross - 2.0 * weakest.size_usd + 2.0 * size[j] > config.max_gross_exposure_usd:
            continue
        if trailing[j] >= factor * old:
            return Action("switch", f"trailing-24h spread {trailing[j]:.3g}/h >= {factor:g} x {old:.3g}/h",
                          plan=row(j), close=weakest)
        break  # pairs are in trailing order: no later one is twice as good either
    return Action("none", f"no pair {factor:g}x better than the weakest position")


# ------------------------------------------------------------------------------------------- patient rule

PATIENT_MEAN_HOURS = 336
"""The patient rule's trailing window for entries and switches (issue 11: 336 h)."""
PATIENT_HORIZON_HOURS = 720
"""The horizon its expected gain is counted over (720 h)."""
PATIENT_EXIT_MEAN_HOURS = 336
"""The trailing window whose mean turning negative sends a position to flat (336 h)."""
PATIENT_MIN_OBSERVED_SHARE = 0.5
"""A pair needs an observed spread in at least this share of the window's hours to have a trailing mean: a pair
listed (or fresh) for a few hours has no 14-day mean to be patient about."""
PATIENT_PREDICTOR = f"trailing_mean_{PATIENT_MEAN_HOURS}h"


def trailing_mean_forecasts(conn: duckdb.DuckDBPyConnection, start: pd.Timestamp, end: pd.Timestamp,
                            window_hours: int = PATIENT_MEAN_HOURS, assets: Sequence[str] | None = None,
                            min_share: float = PATIENT_MIN_OBSERVED_SHARE) -> pd.DataFrame:
    """Each ordered pair's trailing ``window_hours`` mean of ``observed_spread_per_hour`` at every hour of
    ``[start, end)``, in the keeper's forecast format (``hour, asset, short_venue, long_venue,
    forecast_spread_per_hour``).

    Causal by construction: the observed spread is what a trader saw at the instant ``hour`` (never
    ``spread_per_hour``, known only at settlement), and the window is ``(hour − window, hour]``.  Both orders of
    a pair are rows of ``spread_panel``, so a held position is re-marked at its own orientation's mean.
    """
    params: dict[str, object] = {"lo": (pd.Timestamp(start) - pd.Timedelta(hours=window_hours - 1)).to_pydatetime(),
                                 "a": pd.Timestamp(start).to_pydatetime(), "b": pd.Timestamp(end).to_pydatetime(),
                                 "n": max(1, math.ceil(min_share * window_hours))}
    where = ""
    if assets:
        where, params["assets"] = " AND asset IN (SELECT unnest($assets))", list(assets)
    frame = conn.execute(f"""
        WITH s AS (
            SELECT asset, short_venue, long_venue, hour, observed_spread_per_hour AS x FROM spread_panel
            WHERE observed_spread_per_hour IS NOT NULL AND hour >= $lo AND hour < $b{where}),
        m AS (
            SELECT hour, asset, short_venue, long_venue, avg(x) OVER w AS mean, count(x) OVER w AS n FROM s
            WINDOW w AS (PARTITION BY asset, short_venue, long_venue ORDER BY hour
                         RANGE BETWEEN INTERVAL {int(window_hours) - 1} HOURS PRECEDING AND CURRENT ROW))
        SELECT hour, asset, short_venue, long_venue, mean AS forecast_spread_per_hour FROM m
        WHERE hour >= $a AND n >= $n ORDER BY hour, asset, short_venue, long_venue""", params).df()
    return frame.astype({"asset": str, "short_venue": str, "long_venue": str})


def patient_config(config: KeeperConfig) -> KeeperConfig:
    """The keeper's config as the patient rule trades it: no minimum-spread filter (its own entry test — the mean
    over 720 h beats the round trip — is the threshold; the keeper's 0.01 %/8 h floor would silently add
    another); sizing, costs, risk limits and slots are the keeper's."""
    return replace(config, min_spread=0.0)


def _cube(snapshot: Snapshot, asset: str, short: str, long: str) -> float:
    """The snapshot's forecast (the trailing mean fed as the forecast) for one ordered pair; NaN when unknown."""
    try:
        i = int(np.flatnonzero(snapshot.assets.astype(str) == asset)[0])
        s, lv = snapshot.venues.index(short), snapshot.venues.index(long)
    except (IndexError, ValueError):
        return float("nan")
    return float(snapshot.forecast_spread_per_hour[i, s, lv])


def patient_choice(plans: pd.DataFrame, positions: Sequence[Position], snapshot: Snapshot,
                   config: KeeperConfig, horizon_hours: float = PATIENT_HORIZON_HOURS) -> list[Action]:
    """The patient rule of issue 11, windows fixed (336 h / 720 h / 336 h).

    The snapshot's forecast cube must hold each pair's trailing 336 h mean observed spread
    (:func:`trailing_mean_forecasts`, fed by the backtest as forecasts), so plans are costed at it and held
    positions re-marked at it.  With ``m`` that mean and ``rt`` a plan's round-trip cost per unit notional
    (``total_costs_usd / size_usd``: maker in, taker out, slippage both ways):

    * **exit** to flat every position whose own pair's mean is negative (all in one cycle: exits free collateral);
    * **switch** a held position to another pair of the same asset, or — with every slot used — the weakest
      position to the best pair of an unheld asset, when ``(m_new − m_old) × 720 > rt_new + rt_old`` (the gain
      over 720 h pays two round trips: the old one's exit and re-entry, the new one's);
    * **enter** the best pair (highest ``m``) of an unheld asset when ``m × 720 > rt``, best assets first.

    Choices: a position whose pair has no mean now (stale leg) is held — no information is no signal; entries and
    switches are one per cycle (each plan was sized on the free collateral before any other trade this cycle, so
    two could claim the same margin), exits are not limited; plans rejected for ``UNSIZED_REASONS`` or blocked by
    risk limits are skipped (as for the naive rule); an asset exited this cycle is not re-entered in it.  The
    candidate's orientation is still the keeper's (the pair with the positive observed spread now): a pair
    whose observed spread points the other way this hour waits for the next.
    """
    actions: list[Action] = []
    kept: list[tuple[Position, float]] = []
    for p in positions:
        m = _cube(snapshot, p.asset, p.short_venue, p.long_venue)
        if np.isfinite(m) and m < 0:
            actions.append(Action("exit", f"trailing {PATIENT_EXIT_MEAN_HOURS}h mean {m:.3g}/h < 0", close=p,
                                  details={"predictor": f"trailing_mean_{PATIENT_EXIT_MEAN_HOURS}h", "value": m}))
        else:
            kept.append((p, m))
    exiting = {a.close.asset for a in actions if a.close is not None}
    if plans.empty:
        return actions or [Action("none", "no plan")]
    reason = plans["reason"].astype(object).where(plans["reason"].notna(), "")
    blocked = plans["blocked"] if "blocked" in plans else pd.Series("", index=plans.index)
    assets = plans["asset"].astype(str).to_numpy()
    shorts, longs = plans["short_venue"].astype(str).to_numpy(), plans["long_venue"].astype(str).to_numpy()
    mean = np.array([_cube(snapshot, a, s, lv) for a, s, lv in zip(assets, shorts, longs, strict=True)])
    size = plans["size_usd"].to_numpy(dtype="float64", na_value=np.nan)
    costs = plans["total_costs_usd"].to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        rt = costs / size
    ok = (~reason.isin(UNSIZED_REASONS)).to_numpy() & (blocked.to_numpy() == "") & np.isfinite(mean) \
        & np.isfinite(size) & (size >= config.min_position_usd) & np.isfinite(rt)
    order = np.argsort(-np.where(ok, mean, -np.inf), kind="stable")
    order = order[ok[order]]
    best: dict[str, int] = {}
    for j in order:  # the best pair of each asset (highest trailing mean)
        best.setdefault(str(assets[j]), int(j))
    held = {p.asset for p, _ in kept}
    gross = sum(2.0 * p.size_usd for p, _ in kept)

    def row(j: int) -> Plan:
        return Plan.from_row(plans.iloc[j].to_dict())

    def detail(j: int) -> dict[str, object]:
        return {"predictor": PATIENT_PREDICTOR, "value": float(mean[j]), "round_trip": float(rt[j])}

    def pays(j: int, p: Position, m_old: float) -> bool:
        rt_old = p.total_costs_usd / p.size_usd if p.size_usd else float("inf")
        return (mean[j] - m_old) * horizon_hours > rt[j] + rt_old

    # switches inside a held asset: its best pair is another one and the gain pays two round trips
    for p, m_old in kept:
        j = best.get(p.asset)
        if j is None or not np.isfinite(m_old) or (shorts[j], longs[j]) == (p.short_venue, p.long_venue):
            continue
        if pays(j, p, m_old) and gross - 2.0 * p.size_usd + 2.0 * size[j] <= config.max_gross_exposure_usd:
            return [*actions, Action("switch", f"{PATIENT_PREDICTOR} {mean[j]:.3g}/h vs {m_old:.3g}/h pays two "
                                     "round trips over 720h", plan=row(j), close=p, details=detail(j))]
    # entries: the best pair of an unheld asset whose mean over 720 h beats its round trip, best first
    entries = [j for a, j in best.items() if a not in held and a not in exiting and mean[j] * horizon_hours > rt[j]]
    entries.sort(key=lambda j: (-mean[j], assets[j]))
    if len(kept) < config.max_positions:
        for j in entries:
            if gross + 2.0 * size[j] <= config.max_gross_exposure_usd:
                return [*actions, Action("enter", f"{PATIENT_PREDICTOR} {mean[j]:.3g}/h x 720h > round trip "
                                         f"{rt[j]:.3g}", plan=row(j), details=detail(j))]
        return actions or [Action("none", "no unheld asset's trailing mean pays its round trip")]
    # every slot used: the weakest position into the best entry when the gain pays two round trips
    marked = [(p, m) for p, m in kept if np.isfinite(m)]
    if entries and marked:
        p, m_old = min(marked, key=lambda pm: (pm[1], pm[0].asset))
        j = entries[0]
        if pays(j, p, m_old) and gross - 2.0 * p.size_usd + 2.0 * size[j] <= config.max_gross_exposure_usd:
            return [*actions, Action("switch", f"{PATIENT_PREDICTOR} {mean[j]:.3g}/h vs weakest {m_old:.3g}/h pays "
                                     "two round trips over 720h", plan=row(j), close=p, details=detail(j))]
    return actions or [Action("none", "hold: no exit, entry or switch pays")]
