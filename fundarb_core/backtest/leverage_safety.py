"""Leverage-safety backtest (spec ``keeper.md`` §8 (1), leverage rule §3).

Question answered: how often does the σ-distance leverage ``L = clip(1 / (K σ_daily), L_min, L_max)`` get a
funding-arbitrage position liquidated, and what does it cost, for K = 3, 4, 5, 6?  For every asset one hedged
position (short one venue, long another, equal notional) is run over the last ``days`` days of bars; at every bar
the target leverage is re-computed from the trailing 7-day σ, the position is re-levered to it when the held
leverage has drifted materially from it, and the capital path earns the pair's funding spread.

Inputs and the choices the spec leaves open:

* **Bars** — per asset the finest series in ``candles``, chosen from what is known when the window opens (the
  choice must not depend on the window's bars): among series with a bar closing in the 7 days before the window
  start (live then), the smallest bar length (``sql_macros.bar_minutes``: ``15m``, ``1h``, ``4h`` …; an unknown
  timeframe is an error, as in the models), ties broken by most bars closing by the start, then Binance first (the
  deepest perp market, whose prints liquidation engines track most closely), then quote rank
  (``sql_macros.quote_rank``: USDT, USDC, other), then venue/symbol name for determinism.  One price series stands
  for *both* legs: the basis between the two venues is ignored, so the legs' price PnL cancels exactly; only the
  intra-bar worst move matters, for liquidation.  The bundled data has 1 h bars only, so the backtest runs on 1 h
  bars (the spec's 15 m when a source provides them).
* **Window** — ``end`` defaults to the close of the asset's last bar at its finest bar length (any venue); the
  window holds the chosen series' bars with ``end − days ≤ open`` and ``close ≤ end``.  Timestamps are naive UTC
  (as in DuckDB); a tz-aware ``end`` is converted.  An asset whose series does not reach back ``days`` + 7 days
  (the warm-up of σ) is skipped and the reason logged, as is one without a usable venue pair.
* **σ** — for the bar opening at ``t``: sample σ (ddof = 1) of the log returns ``ln(close_j / close_{j−1})`` of
  consecutive bars whose close falls in ``(t − 168 h, t]`` — strictly before the bar, the same window as the
  ``volatility`` model's at ``hour = t``.  A return across a missing bar is dropped, never spread.  Fewer than half
  the window's returns → σ unknown → ``L_min`` (the leverage module's rule: no estimate, no leverage).
  One definition: the return, the window, σ and its daily scaling are the DuckDB macros of
  :mod:`fundarb_core.sql_macros` (``consecutive_log_return``, ``trailing_sigma_bar``, ``trailing_return_count``,
  ``sigma_daily``) that the ``volatility`` model is built from; :func:`trailing_sigma_daily` runs them on the
  chosen series (on the bundled data the two agree to the last bits; the tests check it).  Why not read the
  ``volatility`` table itself: it holds one series per venue chosen by ``stg_candles`` over *all* its bars, while
  the backtest must take σ from the series it prices, chosen as of the window start; it has a row only at a bar's
  close, while a 15 m (or gapped) series needs σ as of every bar's *open*, also the open after a missing bar; and
  the no-look-ahead test recomputes σ on altered bars in memory.  ``L_t = sigma_distance_leverage(K, σ_daily,
  config)`` — the keeper's own function, with a fixed K (the sweep variable; the keeper's K adjustments are not
  applied).
* **Pair** — the ordered (short, long) pair with the highest mean ``spread_per_hour`` in ``spread_panel`` over
  the 30 days before the window starts, using only rows already known then (``known_at ≤ start``; an 8 h venue's
  accrual is only known at its settlement) and only pairs observed in at least half those hours (a pair seen for
  a few hours has a mean that means nothing).  The pair is held for the whole window: the backtest measures
  leverage safety, not pair selection.
* **Funding** — the bar earns the pair's accrued ``spread_per_hour × notional`` for the time it covers, each hour
  weighted by its overlap (a 15 m bar gets a quarter of its hour).  A bar's span runs from the previous bar's close
  to its own close, so funding keeps accruing across a missing bar.  An hour without a spread row earns nothing.
  Accrued funding counts as equity at once (venues credit it at settlement, at most 8 h later).
* **Capital and re-levering** — capital ``C0`` is split equally as margin on the two venues, and re-split at every
  bar open (an idealised free, instant transfer: the spec's rule is a *per-bar* test, "liquidation when the worst
  intra-bar move exceeds the margin", so losses do not pile up on one venue across bars).  At bar ``t`` the
  *target* notional per leg is ``T_t = E_{t−1} / 2 × L_t``; the *held* notional is the held quantity marked at
  this bar's open, ``H_t = q_{t−1} × open_t``.  A careful desk does not chase every wiggle of σ and price (hourly
  re-levering to the exact target cost 100–250 USD a month per asset on the bundled data, more than the funding
  earned, so the sweep measured the re-levering rule rather than leverage safety): the position is re-levered only
  when it has drifted materially — ``|T_t − H_t| > rebalance_band × H_t`` (default 0.10) trades to ``N_t = T_t``
  paying the *taker* fee of each venue on ``|T_t − H_t|``; otherwise the quantity is kept, ``N_t = H_t``, at no
  cost.  ``rebalance_band = 0`` re-levers at every bar (the strict rule: keeping the leverage constant as the
  price drifts costs fees too).  Entering (the first bar, and the bar after a liquidation) pays the *maker* fee of
  each venue on ``T_t`` (spec §2: entry at maker).  ``rebalance_costs=False`` makes re-levering free (entries and
  liquidation exits still pay).  Funding is earned on ``N_t`` (the held notional at the bar's open).  The open
  position at the window's end is marked to market, no exit fee: ``final_capital`` is the equity, not a round
  trip.
* **Held leverage** — ``ℓ_t = N_t / (E_{t−1} / 2)``: equal to ``L_t`` on a bar that trades (or enters), otherwise
  within the band of it, ``ℓ_t ∈ [L_t / (1 + band), L_t / (1 − band)]``.  So between re-levering trades the held
  leverage may sit above ``L_max`` = 10 (up to ``10 / 0.9 ≈ 11.1`` at the default band) or below ``L_min`` — only
  within the band; the clip of spec §3 applies to the target.  The band is a per-bar test against the current
  target, so a σ jump that moves the target by more than the band is followed at once.
* **Liquidation** — within bar ``t`` the short leg's worst move is ``high / open − 1``, the long leg's
  ``1 − low / open``; a leg is liquidated when its worst move ``≥ d_t = liquidation_distance(ℓ_t, mm)``
  (``1 / ℓ − mm``, mm = ``config.maintenance_margin``) — the distance of the leverage actually *held* at the bar,
  not of the target.  Rule: the leg is closed at the liquidation price and its venue's equity (``E_open / 2``,
  ``E_open`` = equity after this bar's trading fees) is lost — the move took ``N d``, the liquidation engine the
  rest (≈ ``mm × N``); the hedge leg gained ``N d`` and is closed at the same price paying its venue's taker fee on
  ``N (1 ± d)``.  So ``E_t = E_open / 2 + N_t d_t − exit fee``: the capital loses ≈ ``mm × N_t`` plus fees.  The
  liquidated bar earns no funding (the liquidation time inside the bar is unknown).  If both legs' thresholds are
  crossed in one bar (the order of high and low is unknown) the worse outcome is booked, once: after the first
  liquidation the position is flat.  What remains is re-deployed at the next bar (maker entry fees).
  ``liquidated`` is true when any liquidation happened.  The move across a missing bar (previous close → this
  open) is not tested: it is unobserved (the chosen Binance series has no gaps in the bundled data).  A path whose
  equity reached 0 holds nothing and is not tested (unreachable in practice: a liquidation costs ≈ ``mm × N``).
* **Report** — ``avg_leverage`` / ``max_leverage`` of the leverage actually *held* (``ℓ_t``, see above) over the
  window's bars; ``max_drawdown`` as a positive fraction of the running peak of the equity path (C0 included as
  the first peak), equity marked at each bar's close incl. funding and fees; ``equity`` is indexed by bar open
  ``ts``, value at that bar's close.  Beyond the spec'd fields, :class:`SafetyRun` carries the per-bar held
  ``leverage`` and ``notional``, the σ-distance ``target_leverage`` ``L_t``, the number of ``rebalances``
  (re-levering trades on an open position; entries are not counted) and the ``rebalance_band`` used (all
  defaulted, so positional construction with the spec'd fields still works); the table adds ``rebalances``.

The compounding recursion runs as a plain loop over bars (each bar's notional depends on the previous equity, on
the quantity held and on whether the previous bar was liquidated); σ, the target leverage, funding and worst moves
are vectorised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd

from fundarb_core.sql_macros import SIGMA_WINDOW_HOURS, bar_minutes, install_macros, quote_rank
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.leverage import liquidation_distance, sigma_distance_leverage
from fundarb_core.times import to_naive_utc

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

SIGMA_WINDOW = pd.Timedelta(hours=SIGMA_WINDOW_HOURS)
"""σ look-back (spec §3: 168 h), the ``trailing_sigma_bar`` macro's."""
PAIR_SELECTION_DAYS = 30.0
"""Look-back before the window over which the venue pair is chosen."""
MIN_SIGMA_COVERAGE = 0.5
"""Share of the σ window's returns needed for a σ estimate (else σ unknown → ``L_min``)."""
MIN_PAIR_COVERAGE = 0.5
"""Share of the selection window's hours a pair must be observed in to be chosen."""
DEFAULT_REBALANCE_BAND = 0.10
"""Re-lever only when the target notional is more than this fraction of the held notional away from it."""
PREFERRED_VENUE = "binance"
_HOUR_NS = 3_600_000_000_000
_MINUTE_NS = 60_000_000_000


def _empty_series() -> pd.Series:
    return pd.Series(dtype="float64")


@dataclass(frozen=True)
class SafetyRun:
    """One (asset, K) run of the leverage-safety backtest (see the module docstring for every definition)."""

    asset: str
    k: float
    venue: str
    timeframe: str
    short_venue: str
    long_venue: str
    start: pd.Timestamp
    end: pd.Timestamp
    bars: int
    avg_leverage: float
    max_leverage: float
    max_drawdown: float
    liquidations: int
    liquidated: bool
    final_capital: float
    funding_usd: float
    fees_usd: float
    equity: pd.Series  # index = bar ts (open), value at the bar's close
    leverage: pd.Series = field(default_factory=_empty_series)  # leverage held per bar (notional / (E_{t−1} / 2))
    notional: pd.Series = field(default_factory=_empty_series)  # notional held per leg per bar (USD)
    target_leverage: pd.Series = field(default_factory=_empty_series)  # L_t, the σ-distance target per bar
    rebalances: int = 0  # re-levering trades on an open position (entries not counted)
    rebalance_band: float = DEFAULT_REBALANCE_BAND


@dataclass(frozen=True)
class BarSeries:
    """The bar series chosen for an asset (prices of both legs)."""

    asset: str
    venue: str
    venue_symbol: str
    timeframe: str
    bar_minutes: float
    first_ts: pd.Timestamp
    last_ts: pd.Timestamp



def _ns(values: pd.Series | pd.DatetimeIndex | Sequence[pd.Timestamp]) -> npt.NDArray[np.int64]:
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def _bar_rows(conn: duckdb.DuckDBPyConnection, asset: str) -> pd.DataFrame:
    """Every candle key of ``asset`` with its bar length and close time; an unknown timeframe is a ``ValueError``
    naming the series (``sql_macros.bar_minutes``: the models fail on it too)."""
    rows = conn.execute("SELECT venue, venue_symbol, timeframe, quote, ts FROM candles WHERE asset = ?", [asset]).df()
    rows["ts"] = pd.to_datetime(rows["ts"]).astype("datetime64[ns]")
    minutes: dict[str, float] = {}
    for venue, symbol, tf in rows[["venue", "venue_symbol", "timeframe"]].drop_duplicates().itertuples(index=False):
        try:
            minutes[tf] = float(bar_minutes(tf))
        except ValueError as err:
            raise ValueError(f"leverage_safety: candles {venue} {symbol}: timeframe: {err}") from None
    rows["bar_minutes"] = rows["timeframe"].map(minutes).astype("float64")
    rows["close_ts"] = rows["ts"] + pd.to_timedelta(rows["bar_minutes"], unit="min")
    return rows


def default_end(conn: duckdb.DuckDBPyConnection, asset: str) -> pd.Timestamp | None:
    """The close of the asset's last bar at its finest bar length (any venue): the default window end."""
    rows = _bar_rows(conn, asset)
    if rows.empty:
        return None
    finest = rows[rows["bar_minutes"] == rows["bar_minutes"].min()]
    return pd.Timestamp(finest["close_ts"].max())


def finest_series(
    conn: duckdb.DuckDBPyConnection, asset: str, start: datetime | str | pd.Timestamp
) -> BarSeries | None:
    """The price series for a window opening at ``start``, chosen from bars known by then (no look-ahead).

    Eligible: series with a bar closing in ``(start − 168 h, start]`` (live when the window opens).  Ranked by
    smallest bar, then most bars closing by ``start``, then Binance, quote rank, venue and symbol name.
    """
    t0 = to_naive_utc(start)
    rows = _bar_rows(conn, asset)
    rows = rows[rows["close_ts"] <= t0]
    if rows.empty:
        return None
    g = rows.groupby(["venue", "venue_symbol", "timeframe", "quote", "bar_minutes"], as_index=False).agg(
        n=("ts", "size"), first_ts=("ts", "min"), last_ts=("ts", "max"), last_close=("close_ts", "max")
    )
    g = g[g["last_close"] > t0 - SIGMA_WINDOW]
    if g.empty:
        return None
    g["preferred"] = (g["venue"] != PREFERRED_VENUE).astype(int)
    g["quote_rank"] = g["quote"].map(quote_rank)
    g = g.sort_values(
        ["bar_minutes", "n", "preferred", "quote_rank", "venue", "venue_symbol"],
        ascending=[True, False, True, True, True, True],
    )
    best = g.iloc[0]
    return BarSeries(
        asset=asset,
        venue=str(best["venue"]),
        venue_symbol=str(best["venue_symbol"]),
        timeframe=str(best["timeframe"]),
        bar_minutes=float(best["bar_minutes"]),
        first_ts=pd.Timestamp(best["first_ts"]),
        last_ts=pd.Timestamp(best["last_ts"]),
    )


def load_bars(conn: duckdb.DuckDBPyConnection, series: BarSeries, lo: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Bars of ``series`` with ``open ≥ lo`` and ``close ≤ end``: columns ts, open, high, low, close (sorted)."""
    bar = pd.Timedelta(minutes=series.bar_minutes)
    frame = conn.execute(
        "SELECT ts, open, high, low, close FROM candles "
        "WHERE asset = ? AND venue = ? AND venue_symbol = ? AND timeframe = ? AND ts >= ? AND ts <= ? ORDER BY ts",
        [series.asset, series.venue, series.venue_symbol, series.timeframe, lo, end - bar],
    ).df()
    frame["ts"] = pd.to_datetime(frame["ts"]).astype("datetime64[ns]")
    return frame.reset_index(drop=True)


_SIGMA_SQL = """
WITH r AS (
    SELECT i, ts + to_microseconds($bar_us) AS close_ts,
           consecutive_log_return(close, lag(close) OVER w, epoch(ts - lag(ts) OVER w) / 60, $bar_minutes)
             AS log_return
    FROM (SELECT i, ts::TIMESTAMP AS ts, close FROM _bars)
    WINDOW w AS (ORDER BY ts)
)
SELECT sigma_daily(trailing_sigma_bar(log_return, 0, close_ts, to_microseconds($bar_us)), $bar_minutes) AS sigma,
       trailing_return_count(log_return, 0, close_ts, to_microseconds($bar_us)) AS n
FROM r ORDER BY i
"""


def trailing_sigma_daily(
    ts: pd.Series | pd.DatetimeIndex,
    close: npt.ArrayLike,
    bar_minutes: float,
    min_coverage: float = MIN_SIGMA_COVERAGE,
) -> FloatArray:
    """σ_daily known at each bar's open: returns of consecutive bars closing in ``(open − 168 h, open]``.

    The ``volatility`` model's own macros (:mod:`fundarb_core.sql_macros`), run on a private in-memory DuckDB
    (one thread: a deterministic summation order), as of each bar's open (``as_of_before`` = the bar length).
    NaN where fewer than ``max(2, min_coverage × window / bar)`` returns are in the window.
    """
    t = _ns(ts)
    if len(t) == 0:
        return np.zeros(0)
    bars = pd.DataFrame({"i": np.arange(len(t)), "ts": pd.DatetimeIndex(t), "close": np.asarray(close, "float64")})
    bar_us = round(bar_minutes * 60_000_000)
    with duckdb.connect(":memory:", config={"threads": 1}) as mem:
        install_macros(mem)
        mem.register("_bars", bars)
        out = mem.execute(_SIGMA_SQL, {"bar_us": bar_us, "bar_minutes": float(bar_minutes)}).df()
    need = max(2.0, min_coverage * SIGMA_WINDOW / pd.Timedelta(microseconds=bar_us))
    sigma = out["sigma"].to_numpy(dtype="float64", na_value=np.nan)
    return np.where(out["n"].to_numpy(dtype="float64") >= need, sigma, np.nan)


def select_pair(
    conn: duckdb.DuckDBPyConnection,
    asset: str,
    start: pd.Timestamp,
    days: float = PAIR_SELECTION_DAYS,
    min_coverage: float = MIN_PAIR_COVERAGE,
) -> tuple[str, str, float, int] | None:
    """(short, long, mean spread per hour, hours) of the best pair over ``[start − days, start)``, known by start."""
    lo = start - pd.Timedelta(days=days)
    row = conn.execute(
        """
        SELECT short_venue, long_venue, avg(spread_per_hour) AS mean_spread, count(*) AS hours
        FROM spread_panel
        WHERE asset = ? AND hour >= ? AND hour < ? AND spread_per_hour IS NOT NULL AND known_at <= ?
        GROUP BY 1, 2
        HAVING count(*) >= ?
        ORDER BY mean_spread DESC, hours DESC, short_venue, long_venue
        LIMIT 1
        """,
        [asset, lo, start, start, min_coverage * days * 24.0],
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), str(row[1]), float(row[2]), int(row[3])


def hourly_spread(
    conn: duckdb.DuckDBPyConnection, asset: str, short_venue: str, long_venue: str, lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.Series:
    """The pair's accrued ``spread_per_hour`` for hours in ``[lo, hi)``, indexed by hour."""
    frame = conn.execute(
        "SELECT hour, spread_per_hour FROM spread_panel WHERE asset = ? AND short_venue = ? AND long_venue = ? "
        "AND hour >= ? AND hour < ? AND spread_per_hour IS NOT NULL ORDER BY hour",
        [asset, short_venue, long_venue, lo, hi],
    ).df()
    return pd.Series(
        frame["spread_per_hour"].to_numpy(dtype="float64"),
        index=pd.DatetimeIndex(pd.to_datetime(frame["hour"])).as_unit("ns"),
        name="spread_per_hour",
    )


def bar_funding(ts: pd.Series | pd.DatetimeIndex, bar_minutes: float, spread: pd.Series) -> FloatArray:
    """Funding per unit notional of each bar: ∫ spread over ``[previous close, close)``, hours weighted by overlap.

    The hourly spread is a step function; its running integral ``F`` is evaluated at each span's ends.
    """
    t = _ns(ts)
    if len(t) == 0:
        return np.zeros(0)
    bar_ns = round(bar_minutes * _MINUTE_NS)
    close_t = t + bar_ns
    span_lo = np.concatenate([t[:1], close_t[:-1]])
    h0 = (span_lo[0] // _HOUR_NS) * _HOUR_NS
    n_hours = int(-(-(close_t[-1] - h0) // _HOUR_NS))
    grid = h0 + _HOUR_NS * np.arange(n_hours, dtype="int64")
    s = np.zeros(n_hours + 1)
    if len(spread):
        idx = pd.DatetimeIndex(spread.index).as_unit("ns").asi8
        pos = (idx - h0) // _HOUR_NS
        keep = (pos >= 0) & (pos < n_hours) & (idx == grid[np.clip(pos, 0, n_hours - 1)])
        s[pos[keep]] = spread.to_numpy(dtype="float64")[keep]
    cum = np.concatenate([[0.0], np.cumsum(s[:-1])])

    def integral(x: npt.NDArray[np.int64]) -> FloatArray:
        i = (x - h0) // _HOUR_NS
        frac = ((x - h0) - i * _HOUR_NS) / _HOUR_NS
        return cum[i] + s[i] * frac

    return integral(close_t) - integral(span_lo)


def window_inputs(
    bars: pd.DataFrame, spread: pd.Series, *, start: pd.Timestamp, end: pd.Timestamp, bar_minutes: float
) -> pd.DataFrame:
    """The window's bars with σ_daily (from all of ``bars``, warm-up included) and funding per unit notional.

    Index = bar open ``ts`` for bars with ``start ≤ open`` and ``close ≤ end``; columns open, high, low, close,
    sigma_daily, funding_rate.
    """
    bars = bars.sort_values("ts").reset_index(drop=True)
    sigma = trailing_sigma_daily(bars["ts"], bars["close"], bar_minutes)
    bar = pd.Timedelta(minutes=bar_minutes)
    inside = ((bars["ts"] >= start) & (bars["ts"] + bar <= end)).to_numpy()
    out = bars.loc[inside, ["ts", "open", "high", "low", "close"]].copy()
    out["sigma_daily"] = sigma[inside]
    out["funding_rate"] = bar_funding(out["ts"], bar_minutes, spread)
    return out.set_index("ts")


def _check_band(rebalance_band: float) -> None:
    if not (np.isfinite(rebalance_band) and 0.0 <= rebalance_band < 1.0):
        raise ValueError(f"rebalance_band must be in [0, 1), got {rebalance_band!r}")


def simulate_path(
    inputs: pd.DataFrame,
    *,
    k: float,
    short_venue: str,
    long_venue: str,
    capital: float = 10_000.0,
    config: KeeperConfig | None = None,
    rebalance_costs: bool = True,
    rebalance_band: float = DEFAULT_REBALANCE_BAND,
) -> pd.DataFrame:
    """The capital path of one K over :func:`window_inputs` (rules in the module docstring).

    Returns the inputs plus target_leverage (``L_t``), target_notional (``E_{t−1} / 2 × L_t``), leverage (held:
    ``notional / (E_{t−1} / 2)``), notional (held, per leg), liq_distance (of the held leverage), rebalanced (a
    re-levering trade on an open position this bar), fees_usd, funding_usd, liquidated, equity (at each bar's
    close).  ``rebalance_band = 0`` trades to the target at every bar.
    """
    _check_band(rebalance_band)
    cfg = config or KeeperConfig()
    mm = cfg.maintenance_margin
    fs, fl = cfg.fees(short_venue), cfg.fees(long_venue)
    entry_rate = fs.maker + fl.maker
    rebalance_rate = (fs.taker + fl.taker) if rebalance_costs else 0.0
    o = inputs["open"].to_numpy(dtype="float64")
    up = inputs["high"].to_numpy(dtype="float64") / o - 1.0
    down = 1.0 - inputs["low"].to_numpy(dtype="float64") / o
    target_lev = np.asarray(
        sigma_distance_leverage(k, inputs["sigma_daily"].to_numpy(dtype="float64"), cfg), dtype="float64"
    )
    target_dist = np.asarray(liquidation_distance(target_lev, mm), dtype="float64")
    rate = inputs["funding_rate"].to_numpy(dtype="float64")

    n = len(o)
    equity, fees, funding = np.zeros(n), np.zeros(n), np.zeros(n)
    notional, target_notional, held_lev, dist = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    liquidated, rebalanced = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    e, q = float(capital), 0.0  # equity before the bar; quantity held per leg (0 = flat)
    for i in range(n):
        target = e / 2.0 * target_lev[i]
        if q == 0.0:  # flat: enter at the target, maker fees
            held, lev_i, d, fee = target, target_lev[i], target_dist[i], entry_rate * target
        else:
            marked = q * o[i]  # the held quantity at this bar's open
            if abs(target - marked) > rebalance_band * marked:  # drifted out of the band: trade to the target
                held, lev_i, d = target, target_lev[i], target_dist[i]
                fee = rebalance_rate * abs(target - marked)
                rebalanced[i] = True
            else:  # inside the band: keep the quantity, its leverage drifts
                held, fee = marked, 0.0
                lev_i = target_lev[i] if marked == target else marked / (e / 2.0)
                d = float(liquidation_distance(lev_i, mm))
        e_open = e - fee
        if held > 0.0 and (up[i] >= d or down[i] >= d):
            exits = []
            if up[i] >= d:  # short leg liquidated, price rose to open × (1 + d): the long leg closes there
                exits.append(fl.taker * held * (1.0 + d))
            if down[i] >= d:  # long leg liquidated, price fell to open × (1 − d): the short leg closes there
                exits.append(fs.taker * held * (1.0 - d))
            exit_fee = max(exits)
            e_close = e_open / 2.0 + held * d - exit_fee
            fee += exit_fee
            liquidated[i] = True
            q = 0.0
        else:
            funding[i] = rate[i] * held
            e_close = e_open + funding[i]
            q = held / o[i]
        e = max(e_close, 0.0)
        if e == 0.0:
            q = 0.0
        equity[i], fees[i], notional[i], target_notional[i] = e, fee, held, target
        held_lev[i], dist[i] = lev_i, d

    out = inputs.copy()
    out["target_leverage"] = target_lev
    out["target_notional"] = target_notional
    out["leverage"] = held_lev
    out["notional"] = notional
    out["liq_distance"] = dist
    out["rebalanced"] = rebalanced
    out["fees_usd"] = fees
    out["funding_usd"] = funding
    out["liquidated"] = liquidated
    out["equity"] = equity
    return out


def max_drawdown(equity: npt.ArrayLike, initial: float) -> float:
    """Largest fall from a running peak, as a positive fraction of that peak (``initial`` is the first peak)."""
    e = np.concatenate([[initial], np.asarray(equity, dtype="float64")])
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - e / peak, 0.0)
    return float(dd.max())


def leverage_safety(
    conn: duckdb.DuckDBPyConnection,
    *,
    end: datetime | str | pd.Timestamp | None = None,
    days: int = 30,
    ks: Iterable[float] = (3.0, 4.0, 5.0, 6.0),
    assets: Iterable[str] | None = None,
    capital: float = 10_000.0,
    config: KeeperConfig | None = None,
    rebalance_costs: bool = True,
    rebalance_band: float = DEFAULT_REBALANCE_BAND,
) -> list[SafetyRun]:
    """Sweep K over every asset (default: every asset in ``candles``); one :class:`SafetyRun` per (asset, K).

    ``rebalance_band``: re-lever only when the target notional leaves ``held × (1 ± band)`` (0: every bar).
    """
    _check_band(rebalance_band)
    cfg = config or KeeperConfig()
    ks = tuple(float(k) for k in ks)
    if assets is None:
        assets = [r[0] for r in conn.execute("SELECT DISTINCT asset FROM candles ORDER BY 1").fetchall()]
    window = pd.Timedelta(days=days)
    runs: list[SafetyRun] = []
    for asset in assets:
        stop = to_naive_utc(end) if end is not None else default_end(conn, asset)
        if stop is None:
            log.warning("leverage_safety: %s skipped: no bars", asset)
            continue
        start = stop - window
        series = finest_series(conn, asset, start)
        if series is None:
            log.warning("leverage_safety: %s skipped: no bar series live in the 7 days before %s", asset, start)
            continue
        bar = pd.Timedelta(minutes=series.bar_minutes)
        warm = start - SIGMA_WINDOW - bar
        if series.first_ts > warm:
            log.warning(
                "leverage_safety: %s skipped: %s %s bars start %s, need %s (%d days + 7 days of warm-up)",
                asset, series.venue, series.timeframe, series.first_ts, warm, days,
            )  # fmt: skip
            continue
        pair = select_pair(conn, asset, start)
        if pair is None:
            log.warning("leverage_safety: %s skipped: no venue pair observed in the 30 days before %s", asset, start)
            continue
        short_venue, long_venue, _, _ = pair
        bars = load_bars(conn, series, warm, stop)
        spread = hourly_spread(conn, asset, short_venue, long_venue, start.floor("h") - pd.Timedelta(hours=1), stop)
        inputs = window_inputs(bars, spread, start=start, end=stop, bar_minutes=series.bar_minutes)
        if inputs.empty:
            log.warning("leverage_safety: %s skipped: no bars in [%s, %s)", asset, start, stop)
            continue
        covered = int(((spread.index >= start) & (spread.index < stop)).sum())
        if covered < days * 24:
            log.info(
                "leverage_safety: %s %s/%s spread known in %d of %d window hours (the rest earn nothing)",
                asset, short_venue, long_venue, covered, days * 24,
            )  # fmt: skip
        for k in ks:
            path = simulate_path(
                inputs,
                k=k,
                short_venue=short_venue,
                long_venue=long_venue,
                capital=capital,
                config=cfg,
                rebalance_costs=rebalance_costs,
                rebalance_band=rebalance_band,
            )
            n_liq = int(path["liquidated"].sum())
            runs.append(
                SafetyRun(
                    asset=asset,
                    k=k,
                    venue=series.venue,
                    timeframe=series.timeframe,
                    short_venue=short_venue,
                    long_venue=long_venue,
                    start=start,
                    end=stop,
                    bars=len(path),
                    avg_leverage=float(path["leverage"].mean()),
                    max_leverage=float(path["leverage"].max()),
                    max_drawdown=max_drawdown(path["equity"], capital),
                    liquidations=n_liq,
                    liquidated=n_liq > 0,
                    final_capital=float(path["equity"].iloc[-1]),
                    funding_usd=float(path["funding_usd"].sum()),
                    fees_usd=float(path["fees_usd"].sum()),
                    equity=path["equity"].rename("equity"),
                    leverage=path["leverage"].rename("leverage"),
                    notional=path["notional"].rename("notional"),
                    target_leverage=path["target_leverage"].rename("target_leverage"),
                    rebalances=int(path["rebalanced"].sum()),
                    rebalance_band=float(rebalance_band),
                )
            )
    return runs


TABLE_COLUMNS = (
    "asset", "k", "venue", "timeframe", "pair", "bars", "avg_leverage", "max_leverage", "max_drawdown",
    "liquidations", "liquidated", "final_capital", "funding_usd", "fees_usd", "rebalances",
)  # fmt: skip


def safety_table(runs: list[SafetyRun]) -> pd.DataFrame:
    """One row per (asset, K); ``pair`` is ``short/long``."""
    rows = [
        {
            "asset": r.asset,
            "k": r.k,
            "venue": r.venue,
            "timeframe": r.timeframe,
            "pair": f"{r.short_venue}/{r.long_venue}",
            "bars": r.bars,
            "avg_leverage": r.avg_leverage,
            "max_leverage": r.max_leverage,
            "max_drawdown": r.max_drawdown,
            "liquidations": r.liquidations,
            "liquidated": r.liquidated,
            "final_capital": r.final_capital,
            "funding_usd": r.funding_usd,
            "fees_usd": r.fees_usd,
            "rebalances": r.rebalances,
        }
        for r in runs
    ]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).sort_values(["asset", "k"]).reset_index(drop=True)
