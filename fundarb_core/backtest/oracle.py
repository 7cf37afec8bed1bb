"""The cost-aware perfect-foresight oracle: the upper bound every backtest is reported against (spec §8).

Per asset the oracle knows every future funding settlement and picks, at each whole hour, the state that
maximises funding earned minus trading costs over the whole period.  States are ``flat`` (state 0) and every
ordered venue pair ``(short venue, long venue)`` of the venues that list the asset (state ``k + 1`` =
``pairs[k]``).  A backtest's net funding divided by this bound is its capture ratio.

Conventions — each chosen to match the strategy backtest (a keeper cycle at every whole hour over the paper
exchange, :class:`fundarb_core.simulation.paper_venue.PaperExchange`), so that the bound is comparable:

* **Timing.**  At decision hour ``h`` the oracle chooses the state held over ``(h, h + 1]``.  The paper exchange
  pays a settlement to the position held at the settlement instant and a position opened at a settlement instant
  does not receive it, so a state chosen at ``h`` earns exactly the settlements stamped in ``(h, h + 1]``.
  Decision hours are ``start, start + 1 h, …, end − 1 h`` (naive UTC; ``start`` and ``end`` must be whole hours).
* **Reward** of pair ``(s, l)`` with unit notional over ``(h, h + 1]`` is ``R_s(h) − R_l(h)``, ``R_v(h)`` the sum
  of venue ``v``'s per-interval ``funding_rates.rate`` (what is paid; a short receives ``+rate × notional``)
  over settlements whose stamp rounded to the minute (``date_trunc('minute', ts + 30 s)``: stamps carry
  collection jitter, e.g. ``00:00:00.063``) lies in ``(h, h + 1]``.  Funding intervals differ per venue (1 h, 4 h,
  8 h); summing the per-interval rate at settlement needs no conversion.  Only settlements with rounded stamp in
  ``(start, end]`` are read, so nothing after ``end`` is used (a row stamped a few ms after ``end`` *is* the
  settlement at ``end``).  Notional is held constant (the paper position's base quantity is fixed, so its
  notional drifts with the price; the oracle ignores that second-order effect).
* **One symbol per (venue, asset)**, as the paper exchange: USDT-quoted first, then USDC, then anything else
  (``sql_macros.quote_rank``); among symbols of the same quote rank the one with most settlements in the period
  (then the name, for determinism).  An asset has a pair ``(s, l)`` when both venues have at least one settlement
  in the period; assets with fewer than two such venues, and the config's blacklist (the keeper never trades them),
  are left out.
* **Listing.**  A pair may only be held over ``(h, h + 1]`` while both venues are listed then: a venue counts as
  listed when one of its settlements lies within ``config.max_rate_age_intervals`` of its funding intervals
  (2 × 1 h, 2 × 8 h, …) of the holding hour — the keeper's own staleness rule (``sql_macros.rate_is_fresh`` with
  ``MAX_RATE_AGE_INTERVALS``), beyond which it has no rate to plan on.  Without this, a venue whose data starts
  or ends inside the period would be a free "leg" paying nothing, and the oracle would collect the other venue's
  raw funding unhedged: on 2025-04 → 2026-04 that was a third of the bound.  Short collection gaps (a missed
  hourly row) stay within the grace and change nothing.
* **Costs** per unit notional, the paper exchange's: entering ``(s, l)`` at ``h`` costs ``maker_s + maker_l +
  2 × half_spread + impact_s(h) + impact_l(h)``, exiting ``taker_s + taker_l + 2 × half_spread + impact_s(h) +
  impact_l(h)`` (both legs fill at the touch, mid ∓ half spread, moved by the square-root impact), switching
  ``i → j`` = exit(i) + entry(j), staying and flat → flat cost nothing.  Impact is
  :func:`~fundarb_core.strategy.costs.sqrt_impact` of the oracle's leg size against the liquidity as of ``h``
  (the latest positive value at or before ``h`` and at most 24 h old, as the paper exchange): the thinner side of
  ``orderbook_depth`` (``least(bid, ask)``; the paper exchange uses the side the order hits, so where depth is
  known the oracle's impact can be a touch higher than the fill's — book depth is rarely in the data), else
  ``open_interest.oi_usd``, else ``volatility.volume_usd_24h``; when none is known, the keeper's flat fallback
  slippage (:func:`~fundarb_core.strategy.costs.fill_impact`, as the paper exchange; no impact when that fallback
  is off).
* **Start flat, end not forced flat.**  The path starts flat before ``start``; the state held at ``end`` is not
  closed, because the strategy backtest marks its open positions to market at the end without paying exits too.
  (A backtest that does liquidate at the end only pays more, so the bound stays a bound.)
* **What it bounds.**  Funding net of trading costs.  Basis (price) PnL between the legs, partial or resting
  fills and leverage are outside it: the oracle assumes every order fills at once at the touch plus impact.

The dynamic programme over ``V_h(j)`` (best value with state ``j`` held over ``(h, h + 1]``) is
``V_h(j) = reward_h(j) + max(V_{h−1}(j), max_{i ≠ j} (V_{h−1}(i) − exit_h(i)) − entry_h(j))`` (exit/entry of flat
= 0).  Because the switching cost is separable (exit of the old state + entry of the new one), the inner max is
one max over ``i`` shared by every ``j`` — the best and second-best of ``V − exit`` give ``max_{i ≠ j}`` for all
``j`` at once — so :func:`solve` is ``O(H × P)`` instead of the ``O(H × P²)`` of :func:`solve_dense`, which uses an
explicit transition-cost matrix and serves as the independent check (with :func:`brute_force` on small cases).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from fundarb_core.sql_macros import install_macros
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.costs import fill_impact
from fundarb_core.strategy.fallbacks import slippage_fallback_frac
from fundarb_core.times import to_naive_utc

HOUR_US = 3_600_000_000
"""One hour in microseconds (the resolution of the decision-hour grid)."""

BRUTE_FORCE_MAX_PATHS = 2_000_000
"""Largest number of state paths :func:`brute_force` will enumerate."""

LIQUIDITY_MAX_AGE_HOURS = 24
"""A liquidity figure older than this is unknown (the paper exchange's ``max_liquidity_age_hours``)."""

TimeLike = datetime | pd.Timestamp | np.datetime64 | str


@dataclass(frozen=True)
class OracleInputs:
    """One asset's decision problem: per-hour reward and costs of every pair, per unit notional.

    State 0 is flat (reward and costs 0); state ``k + 1`` is ``pairs[k]`` = ``(short venue, long venue)``.
    Row ``h`` of every array belongs to decision hour ``hours[h]`` and the holding period ``(h, h + 1]``.
    ``available`` (bool, ``None`` = everywhere) says where a pair may be held: both venues listed at that hour
    (module doc); the solvers treat an unavailable pair as a state that cannot be held.
    """

    asset: str
    hours: np.ndarray
    pairs: tuple[tuple[str, str], ...]
    reward: np.ndarray
    entry_cost: np.ndarray
    exit_cost: np.ndarray
    available: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = (len(self.hours), len(self.pairs))
        for name in ("reward", "entry_cost", "exit_cost", "available"):
            got = getattr(self, name)
            if got is not None and np.shape(got) != shape:
                raise ValueError(f"{name} has shape {np.shape(got)}, expected {shape}")

    def usable_reward(self) -> np.ndarray:
        """``reward`` with −inf where the pair is not available (a state the solvers can never hold): ``(H, P)``."""
        rew = np.asarray(self.reward, dtype="float64")
        return rew if self.available is None else np.where(self.available, rew, -np.inf)

    def extended(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(usable reward, entry, exit) with flat prepended as column 0 (all zeros): shape ``(H, P + 1)``."""
        pad = np.zeros((len(self.hours), 1))
        return tuple(np.hstack([pad, np.asarray(a, dtype="float64")])  # type: ignore[return-value]
                     for a in (self.usable_reward(), self.entry_cost, self.exit_cost))


@dataclass(frozen=True)
class OraclePath:
    """The optimal path of one asset (per unit notional): ``value = gross − costs``."""

    asset: str
    value: float
    gross: float
    costs: float
    trades: int
    states: np.ndarray

    def frame(self, inputs: OracleInputs) -> pd.DataFrame:
        """The path hour by hour: hour, state, short_venue, long_venue (None when flat), reward, cost, cum_value.

        ``cost`` is the transition cost paid at that hour (exit of the previous state + entry of the new one).
        """
        rew, cost = path_terms(inputs, self.states)
        legs: list[tuple[str | None, str | None]] = [(None, None), *inputs.pairs]
        return pd.DataFrame({
            "hour": inputs.hours,
            "state": self.states,
            "short_venue": [legs[s][0] for s in self.states],
            "long_venue": [legs[s][1] for s in self.states],
            "reward": rew,
            "cost": cost,
            "cum_value": np.cumsum(rew - cost),
        })


def path_terms(inputs: OracleInputs, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-hour reward earned and transition cost paid along ``states`` (the path starts flat before hour 0)."""
    rew, ent, ext = inputs.extended()
    s = np.asarray(states, dtype=np.int64)
    rows = np.arange(len(s))
    prev = np.concatenate([[0], s[:-1]])
    cost = np.where(s != prev, ext[rows, prev] + ent[rows, s], 0.0)
    return rew[rows, s], cost


# ---------------------------------------------------------------------------------------------- solvers


def solve(inputs: OracleInputs) -> OraclePath:
    """The ``O(H × P)`` dynamic programme (module docstring), with backtracking of the optimal states.

    Ties prefer staying over switching, and at the end the lowest state (flat first): fewer trades for the same
    value.  ``max_{i ≠ j}`` (not ``max_i``) keeps "exit and re-enter the same pair" out even if a venue had a
    negative (rebate) round-trip cost, so the answer equals :func:`solve_dense`'s zero-diagonal matrix exactly.
    """
    return solve_many([inputs])[0]


def solve_many(inputs: Sequence[OracleInputs]) -> list[OraclePath]:
    """:func:`solve` for many assets at once (same order as ``inputs``).

    Why: the recursion is sequential in time, so with a few dozen states per asset the Python step, not the
    arithmetic, is the cost.  Assets with the same ``(H, P)`` are stacked and stepped together (one loop over
    hours per shape, ``(assets × states)`` arrays per step) — no padding, so each asset's answer is exactly its
    own :func:`solve`.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, inp in enumerate(inputs):
        groups.setdefault((len(inp.hours), len(inp.pairs)), []).append(i)
    out: list[OraclePath | None] = [None] * len(inputs)
    for members in groups.values():
        for i, path in zip(members, _solve_stack([inputs[i] for i in members]), strict=True):
            out[i] = path
    return out  # type: ignore[return-value]


def _solve_stack(group: list[OracleInputs]) -> list[OraclePath]:
    """The recursion for assets of one ``(H, P)`` shape, stacked on axis 1: arrays ``(H, A, P + 1)``."""
    ext_all = [inp.extended() for inp in group]
    rew, ent, ext = (np.stack([e[k] for e in ext_all], axis=1) for k in range(3))
    h_count, n_assets, n = rew.shape
    rows = np.arange(n_assets)
    idx = np.arange(n)[None, :]
    v = np.full((n_assets, n), -np.inf)
    v[:, 0] = 0.0
    prev = np.zeros((h_count, n_assets, n), dtype=np.int16 if n < 2**15 else np.int32)
    for h in range(h_count):
        cand = v - ext[h]  # value of leaving each state now
        i1 = cand.argmax(axis=1)
        b1 = cand[rows, i1]
        cand[rows, i1] = -np.inf
        i2 = cand.argmax(axis=1)  # second best: the best *other* state for j = i1
        b2 = cand[rows, i2]
        is1 = idx == i1[:, None]
        switch = np.where(is1, b2[:, None], b1[:, None]) - ent[h]
        stay = v >= switch
        prev[h] = np.where(stay, idx, np.where(is1, i2[:, None], i1[:, None]))
        v = np.where(stay, v, switch) + rew[h]
    states = np.zeros((h_count, n_assets), dtype=np.int64)
    if h_count:
        s = v.argmax(axis=1)
        for h in range(h_count - 1, -1, -1):
            states[h] = s
            s = prev[h, rows, s].astype(np.int64)
    paths = []
    for a, inp in enumerate(group):
        st = states[:, a].copy()
        r, c = path_terms(inp, st)
        trades = int(np.count_nonzero(st != np.concatenate([[0], st[:-1]])))
        value = float(v[a].max()) if h_count else 0.0
        paths.append(OraclePath(asset=inp.asset, value=value, gross=float(r.sum()), costs=float(c.sum()),
                                trades=trades, states=st))
    return paths


def _transition_matrix(entry_h: np.ndarray, exit_h: np.ndarray) -> np.ndarray:
    """The explicit ``(P + 1) × (P + 1)`` matrix ``C[i, j]`` of moving from state ``i`` to ``j`` at one hour."""
    c = exit_h[:, None] + entry_h[None, :]
    np.fill_diagonal(c, 0.0)
    return c


def solve_dense(inputs: OracleInputs) -> float:
    """Value of the ``O(H × P²)`` dynamic programme ``V_h(j) = reward_h(j) + max_i (V_{h−1}(i) − C_h[i, j])``.

    Written independently of :func:`solve` (explicit matrix, no separability trick) to check it.
    """
    rew, ent, ext = inputs.extended()
    v = np.full(rew.shape[1], -np.inf)
    v[0] = 0.0
    for h in range(rew.shape[0]):
        v = (v[:, None] - _transition_matrix(ent[h], ext[h])).max(axis=0) + rew[h]
    return float(v.max()) if rew.shape[0] else 0.0


def brute_force(inputs: OracleInputs) -> float:
    """Value of the best of all ``(P + 1)^H`` state paths, each path's value computed in full.

    Paths are built hour by hour as a flat array (path index = base-``(P + 1)`` digits, the last state the least
    significant), so every path's value exists explicitly before the final max — no pruning.  Raises
    ``ValueError`` beyond :data:`BRUTE_FORCE_MAX_PATHS` paths.
    """
    rew, ent, ext = inputs.extended()
    h_count, n = rew.shape
    if float(n) ** h_count > BRUTE_FORCE_MAX_PATHS:
        raise ValueError(f"{n}^{h_count} paths is over the brute-force limit of {BRUTE_FORCE_MAX_PATHS}")
    values = np.zeros(1)
    last = np.zeros(1, dtype=np.int64)  # every path starts flat
    for h in range(h_count):
        c = _transition_matrix(ent[h], ext[h])
        values = (values[:, None] - c[last] + rew[h][None, :]).ravel()
        last = np.tile(np.arange(n), len(last))
    return float(values.max())


# ---------------------------------------------------------------------------------------------- inputs



def _hour_grid(start: TimeLike, end: TimeLike) -> tuple[pd.Timestamp, pd.Timestamp, np.ndarray]:
    a, b = to_naive_utc(start), to_naive_utc(end)
    if a != a.floor("h") or b != b.floor("h"):
        raise ValueError(f"start and end must be whole hours (the keeper's cycles), got {a} and {b}")
    if b <= a:
        raise ValueError(f"end ({b}) must be after start ({a})")
    hours = np.arange(np.datetime64(a.to_datetime64(), "us"), np.datetime64(b.to_datetime64(), "us"),
                      np.timedelta64(1, "h")).astype("datetime64[us]")
    return a, b, hours


def _in_clause(column: str, values: Sequence[str] | None, name: str, params: dict[str, object]) -> str:
    if values is None:
        return ""
    params[name] = list(values)
    return f" AND list_contains(${name}, {column})"


_SETTLEMENTS_SQL = """
WITH f AS (
    SELECT venue, asset, venue_symbol, quote, date_trunc('minute', ts + INTERVAL 30 SECOND) AS ts_r, rate,
           interval_hours
    FROM funding_rates
    WHERE ts >= $start AND ts < $end + INTERVAL 30 SECOND{filters}  -- exactly the rows rounding into (start, end]
), p AS (
    SELECT * FROM f WHERE ts_r > $start AND ts_r <= $end
), sym AS (
    SELECT venue, asset, venue_symbol FROM p
    GROUP BY venue, asset, venue_symbol
    QUALIFY row_number() OVER (
        PARTITION BY venue, asset
        ORDER BY min(quote_rank(quote)), count(*) DESC, venue_symbol
    ) = 1
)
SELECT p.asset, p.venue, p.ts_r, p.rate, max(p.interval_hours) OVER (PARTITION BY p.venue, p.asset) AS iv
FROM p JOIN sym USING (venue, asset, venue_symbol)
ORDER BY p.asset, p.venue, p.ts_r
"""

_LIQUIDITY_SQL = """
WITH va AS (
    SELECT unnest($venues) AS venue, unnest($assets) AS asset, unnest(range(len($venues))) AS k
), g AS (
    SELECT k, venue, asset, h FROM va, range($start, $end, INTERVAL 1 HOUR) t(h)
), d AS (
    SELECT venue, asset, ts, max(least(bid_depth_usd, ask_depth_usd)) AS liq FROM orderbook_depth
    WHERE ts <= $last AND ts >= $start - INTERVAL {age} HOUR AND least(bid_depth_usd, ask_depth_usd) > 0
    GROUP BY ALL
), o AS (
    SELECT venue, asset, ts, max(oi_usd) AS liq FROM open_interest
    WHERE ts <= $last AND ts >= $start - INTERVAL {age} HOUR AND oi_usd > 0
    GROUP BY ALL
), v AS (
    SELECT venue, asset, hour AS ts, max(volume_usd_24h) AS liq FROM volatility
    WHERE hour <= $last AND hour >= $start - INTERVAL {age} HOUR AND volume_usd_24h > 0
    GROUP BY ALL
)
SELECT g.k, g.h, coalesce(
    CASE WHEN d.ts >= g.h - INTERVAL {age} HOUR THEN d.liq END,
    CASE WHEN o.ts >= g.h - INTERVAL {age} HOUR THEN o.liq END,
    CASE WHEN v.ts >= g.h - INTERVAL {age} HOUR THEN v.liq END) AS liq
FROM g
ASOF LEFT JOIN d ON g.venue = d.venue AND g.asset = d.asset AND g.h >= d.ts
ASOF LEFT JOIN o ON g.venue = o.venue AND g.asset = o.asset AND g.h >= o.ts
ASOF LEFT JOIN v ON g.venue = v.venue AND g.asset = v.asset AND g.h >= v.ts
ORDER BY g.k, g.h
"""


def _liquidity(conn: duckdb.DuckDBPyConnection, keys: list[tuple[str, str]], a: pd.Timestamp, b: pd.Timestamp,
               h_count: int) -> np.ndarray:
    """Liquidity (USD, NaN when unknown) of every ``(venue, asset)`` in ``keys`` at every decision hour: ``(K, H)``.

    One query: a ``(key × hour)`` grid ASOF-joined to each source (depth, OI, volume), so the cost is one pass
    over each table, not a query per hour.  Same-stamp duplicates (several symbols) take the largest figure.
    """
    if not keys:
        return np.zeros((0, h_count))
    sql = _LIQUIDITY_SQL.format(age=LIQUIDITY_MAX_AGE_HOURS)
    params = {"venues": [k[0] for k in keys], "assets": [k[1] for k in keys], "start": a.to_pydatetime(),
              "end": b.to_pydatetime(), "last": (b - pd.Timedelta(hours=1)).to_pydatetime()}
    liq = conn.cursor().execute(sql, params).df()["liq"].to_numpy(dtype="float64", na_value=np.nan)
    if liq.size != len(keys) * h_count:
        raise RuntimeError(f"liquidity grid has {liq.size} cells, expected {len(keys)} × {h_count}")
    return liq.reshape(len(keys), h_count)


def _listed(kidx: np.ndarray, offset_us: np.ndarray, grace_us: np.ndarray, h_count: int) -> np.ndarray:
    """``(K, H)`` bool: key ``k`` has a settlement within ``grace_us[k]`` of the holding hour ``(h, h + 1]``.

    Vectorised with one sorted array of ``key × span + offset`` and two ``searchsorted`` calls over the grid.
    """
    n_keys = len(grace_us)
    pad = int(grace_us.max(initial=0)) + HOUR_US
    span = h_count * HOUR_US + 2 * pad
    x = np.sort(kidx * span + offset_us + pad)
    base = (np.arange(n_keys, dtype=np.int64) * span + pad)[:, None] + np.arange(h_count, dtype=np.int64) * HOUR_US
    lo, hi = base - grace_us[:, None], base + HOUR_US + grace_us[:, None]  # window (h − g, h + 1 + g]
    return np.searchsorted(x, hi, side="right") - np.searchsorted(x, lo, side="right") > 0


def oracle_inputs(
    conn: duckdb.DuckDBPyConnection,
    start: TimeLike,
    end: TimeLike,
    config: KeeperConfig | None = None,
    *,
    size_usd: float | None = None,
    half_spread_bps: float = 1.0,
    assets: Sequence[str] | None = None,
    venues: Sequence[str] | None = None,
) -> dict[str, OracleInputs]:
    """Every asset's :class:`OracleInputs` over decision hours ``start … end − 1 h`` (conventions: module doc).

    ``size_usd`` (default ``config.max_position_size_usd``) is the notional per leg that sets the impact;
    ``half_spread_bps`` the paper exchange's; ``assets`` / ``venues`` restrict the universe.  Two queries in all:
    the settlements in ``(start, end]`` and the liquidity grid.
    """
    cfg = config or KeeperConfig()
    size = cfg.max_position_size_usd if size_usd is None else float(size_usd)
    a, b, hours = _hour_grid(start, end)
    h_count = len(hours)
    params: dict[str, object] = {"start": a.to_pydatetime(), "end": b.to_pydatetime()}
    filters = _in_clause("asset", assets, "assets", params) + _in_clause("venue", venues, "venues", params)
    cur = conn.cursor()
    install_macros(cur)  # quote_rank: a cursor is a new connection, without the caller's temp macros
    rows = cur.execute(_SETTLEMENTS_SQL.format(filters=filters), params).df()
    rows = rows[~rows["asset"].isin(cfg.blacklist)]

    per_asset: dict[str, list[str]] = {}
    for asset, venue in rows[["asset", "venue"]].drop_duplicates().itertuples(index=False):
        per_asset.setdefault(asset, []).append(venue)
    per_asset = {k: sorted(v) for k, v in sorted(per_asset.items()) if len(v) >= 2}
    keys = [(v, k) for k, vs in per_asset.items() for v in vs]
    key_index = {key: i for i, key in enumerate(keys)}

    # R_v(h) for every key at once: settlement in (start + k h, start + (k + 1) h] → bin k
    rows = rows[rows["asset"].isin(per_asset.keys())]
    ts_us = rows["ts_r"].to_numpy().astype("datetime64[us]").astype(np.int64)
    start_us = np.datetime64(a.to_datetime64(), "us").astype(np.int64)
    bins = (ts_us - start_us - 1) // HOUR_US
    kidx = pd.MultiIndex.from_tuples(keys, names=["venue", "asset"]).get_indexer(
        pd.MultiIndex.from_frame(rows[["venue", "asset"]])).astype(np.int64)
    funding = np.bincount(kidx * h_count + bins, weights=rows["rate"].to_numpy(dtype="float64"),
                          minlength=len(keys) * h_count).reshape(len(keys), h_count)
    interval = np.zeros(len(keys))
    np.maximum.at(interval, kidx, rows["iv"].to_numpy(dtype="float64"))
    grace_us = np.round(cfg.max_rate_age_intervals * interval * HOUR_US).astype(np.int64)
    listed = _listed(kidx, ts_us - start_us, grace_us, h_count)

    impact = np.nan_to_num(fill_impact(size, _liquidity(conn, keys, a, b, h_count), cfg.base_impact,
                                       slippage_fallback_frac(cfg)), nan=0.0)
    spread2 = 2.0 * half_spread_bps * 1e-4

    out: dict[str, OracleInputs] = {}
    for asset, vs in per_asset.items():
        pairs = tuple(itertools.permutations(vs, 2))
        s_idx = np.array([key_index[(s, asset)] for s, _ in pairs])
        l_idx = np.array([key_index[(lv, asset)] for _, lv in pairs])
        maker = np.array([cfg.fees(s).maker + cfg.fees(lv).maker for s, lv in pairs])
        taker = np.array([cfg.fees(s).taker + cfg.fees(lv).taker for s, lv in pairs])
        imp = (impact[s_idx] + impact[l_idx]).T  # (H, P)
        out[asset] = OracleInputs(
            asset=asset,
            hours=hours,
            pairs=pairs,
            reward=(funding[s_idx] - funding[l_idx]).T.copy(),
            entry_cost=maker[None, :] + spread2 + imp,
            exit_cost=taker[None, :] + spread2 + imp,
            available=(listed[s_idx] & listed[l_idx]).T.copy(),
        )
    return out


# ---------------------------------------------------------------------------------------------- the bound


BOUND_COLUMNS = ("asset", "pairs", "value_per_unit", "gross_per_unit", "costs_per_unit", "trades", "net_usd",
                 "gross_usd", "costs_usd", "hours", "held_hours", "in_slots")


def oracle_bound(
    conn: duckdb.DuckDBPyConnection,
    start: TimeLike,
    end: TimeLike,
    config: KeeperConfig | None = None,
    *,
    size_usd: float | None = None,
    half_spread_bps: float = 1.0,
    assets: Sequence[str] | None = None,
    venues: Sequence[str] | None = None,
    slots: int | None = None,
) -> pd.DataFrame:
    """The oracle per asset, sorted by ``net_usd`` descending (columns :data:`BOUND_COLUMNS`).

    USD figures are per-unit values × ``size_usd`` (one position of at most ``size_usd`` per leg, the keeper's
    cap).  ``in_slots`` marks the ``slots`` assets (default ``config.max_positions``) with the highest
    ``net_usd``: the keeper holds at most that many positions, so Σ ``net_usd`` over those rows bounds a rule
    that **dedicates** each slot to one asset for the period; a rule **rotating** slots between assets is
    bounded only by the all-assets Σ ``net_usd`` (each asset's share of any rotating schedule is one feasible
    path of that asset).  Both sums are in ``attrs`` (``bound_dedicated_usd``, ``bound_all_assets_usd``).
    """
    cfg = config or KeeperConfig()
    size = cfg.max_position_size_usd if size_usd is None else float(size_usd)
    n_slots = cfg.max_positions if slots is None else int(slots)
    inputs = oracle_inputs(conn, start, end, cfg, size_usd=size, half_spread_bps=half_spread_bps, assets=assets,
                           venues=venues)
    records = []
    for (asset, inp), p in zip(inputs.items(), solve_many(list(inputs.values())), strict=True):
        records.append({
            "asset": asset, "pairs": len(inp.pairs), "value_per_unit": p.value, "gross_per_unit": p.gross,
            "costs_per_unit": p.costs, "trades": p.trades, "net_usd": p.value * size, "gross_usd": p.gross * size,
            "costs_usd": p.costs * size, "hours": len(inp.hours), "held_hours": int(np.count_nonzero(p.states)),
        })
    df = pd.DataFrame.from_records(records, columns=list(BOUND_COLUMNS[:-1]))
    df = df.sort_values(["net_usd", "asset"], ascending=[False, True], kind="stable").reset_index(drop=True)
    df["in_slots"] = np.arange(len(df)) < n_slots
    df.attrs["size_usd"] = size
    df.attrs["slots"] = n_slots
    df.attrs["bound_dedicated_usd"] = float(df.loc[df["in_slots"], "net_usd"].sum())
    df.attrs["bound_all_assets_usd"] = float(df["net_usd"].sum())
    return df
