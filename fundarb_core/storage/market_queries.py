"""Every query the keeper runs on the warehouse, for any list of instants at once.

Why one query for many instants: the live keeper asks for one instant, a backtest for ten thousand; if both run
the same SQL, the simulator sees exactly what the keeper would have seen, by construction rather than by test.
Each source row is valid from its stamp until the next row of its series or until it is too old, whichever
comes first; an instant takes the row valid at it (``ts <= as_of < next_ts`` and ``as_of <= ts + max age``).
That is "the latest row at or before the instant, if fresh enough" — the rule of every as-of read here — as one
range join instead of one scan per instant.

Rules (choices; the keeper's config holds the numbers):

* **rate** — ``stg_funding_hourly``'s observed rate (the last settlement at or before the hour), from the latest
  hour at or before the instant within ``rate_window`` hours, kept only while its settlement is at most
  ``max_rate_age_intervals`` of its own intervals old (the staleness rule of ``spread_panel``);
* **σ_daily** — the latest ``volatility`` row with a σ, up to ``max_sigma_age_hours`` old; its 24 h volume only
  when that row is under ``max_market_age_hours`` old; **σ baseline** — the median σ_daily over the
  ``sigma_baseline_hours`` ending at that row (while the row is younger than that window);
* **open interest**, **book depth** (the thinner side), **mark** (the last bar close, else the book mid) —
  up to ``max_market_age_hours`` old; one open-interest row per stamp, USDT-quoted first;
* **pair** statistics (``pair_features``, ``basis``) and **regime** labels — up to ``max_market_age_hours`` old;
* **funding mark** — the funding rows' latest mark price, up to ``funding_mark_hours`` old (the price fallback of
  :mod:`fundarb_core.strategy.fallbacks`: ``fallback_price_max_age_hours`` while it is on);
* **paper price** — book mid, else bar close (each up to ``max_price_age_hours`` old), else the funding mark
  (two rows at one stamp: the lower price); **paper liquidity** per side — book depth
  of that side, else open interest, else 24 h volume, up to ``max_liquidity_age_hours`` old.

:data:`KEEPER_TABLES` lists every table read here: the keeper's Dagster asset declares exactly these as parents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from fundarb_core.sql_macros import install_macros
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.fallbacks import funding_mark_age_hours

KEEPER_TABLES: tuple[str, ...] = (
    "funding_rates", "open_interest", "orderbook_depth", "stg_funding_hourly", "stg_candles", "volatility",
    "pair_features", "basis", "regime_labels", "spread_panel",
)
"""Every warehouse table the keeper reads (snapshot, paper prices, liquidity, settlements, data age)."""

MAX_FUNDING_INTERVAL_HOURS = 8.0


@dataclass(frozen=True)
class MarketAges:
    """The freshness limits (hours) of every as-of read."""

    rate_age_intervals: float = 2.0
    rate_window_hours: int = 16
    market_hours: float = 2.0
    sigma_hours: float = 48.0
    sigma_baseline_hours: int = 720
    price_hours: float = 2.0
    liquidity_hours: float = 24.0
    funding_mark_hours: float = 2.0

    @classmethod
    def from_config(cls, config: KeeperConfig, price_hours: float = 2.0, liquidity_hours: float = 24.0) -> MarketAges:
        return cls(rate_age_intervals=config.max_rate_age_intervals,
                   rate_window_hours=math.ceil(config.max_rate_age_intervals * MAX_FUNDING_INTERVAL_HOURS),
                   market_hours=config.max_market_age_hours, sigma_hours=config.max_sigma_age_hours,
                   sigma_baseline_hours=int(config.sigma_baseline_hours), price_hours=float(math.ceil(price_hours)),
                   liquidity_hours=float(math.ceil(liquidity_hours)),
                   funding_mark_hours=float(math.ceil(funding_mark_age_hours(config, price_hours))))

    @property
    def lookback_hours(self) -> float:
        """How far before the first instant any read reaches."""
        return max(self.rate_window_hours, self.sigma_hours + self.sigma_baseline_hours, self.market_hours,
                   self.price_hours, self.liquidity_hours, self.funding_mark_hours) + 1.0


def _since(back_hours: float) -> str:
    """The earliest stamp a read reaching ``back_hours`` before the first instant needs."""
    return f"$first - to_microseconds({round((back_hours + 1.0) * 3_600_000_000)})"


def _src(src: str, key: str, ts: str, cols: str, where: str = "TRUE", dedupe: str | None = None,
         back: float = 24.0) -> str:
    """Rows of ``src`` stamped from ``back`` hours before the first instant to the last one; ``dedupe`` orders
    rows sharing a stamp (the first is kept)."""
    keep = f"QUALIFY row_number() OVER (PARTITION BY {key}, {ts} ORDER BY {dedupe}) = 1" if dedupe else ""
    return (f"(SELECT {key}, {ts} AS ts, {cols} FROM {src} WHERE {where} AND {ts} >= {_since(back)} "
            f"AND {ts} <= $hi {keep})")


def _fresh(alias: str, age_hours: float, at: str = "k.as_of") -> str:
    """The as-of row ``alias`` (latest at or before the instant) is at most ``age_hours`` old."""
    return f"{alias}.ts >= {at} - to_microseconds({round(age_hours * 3_600_000_000)})"


def _asof(alias: str, key: str) -> str:
    """``ASOF LEFT JOIN`` condition: same series, latest stamp at or before the instant."""
    eq = " AND ".join(f"{alias}.{c.strip()} = k.{c.strip()}" for c in key.split(","))
    return f"{eq} AND {alias}.ts <= k.as_of"


_GRID = "(SELECT DISTINCT unnest($instants::TIMESTAMP[]) AS as_of)"


def _keys(series_sql: str) -> str:
    """Every instant × every series of ``series_sql``."""
    return f"(SELECT g.as_of, s.* FROM {_GRID} g CROSS JOIN ({series_sql}) s)"


def _venue_sql(a: MarketAges) -> str:
    key = "venue, asset"
    rates = _src("stg_funding_hourly", key, "hour",
                 "observed_rate_per_hour AS rate_per_hour, observed_interval_hours AS interval_hours, "
                 "observed_settled_at AS settled_at, venue_symbol", "observed_rate_per_hour IS NOT NULL",
                 back=a.rate_window_hours)
    m = a.market_hours
    vol_back = a.sigma_hours + a.sigma_baseline_hours
    vol = _src("(SELECT *, median(sigma_daily) OVER (PARTITION BY venue, asset ORDER BY hour RANGE BETWEEN "
               f"INTERVAL {a.sigma_baseline_hours - 1} HOURS PRECEDING AND CURRENT ROW) AS sigma_baseline "
               f"FROM volatility WHERE hour >= {_since(vol_back)} AND hour <= $hi)", key, "hour",
               "sigma_daily, volume_usd_24h, sigma_baseline", "sigma_daily IS NOT NULL", back=a.sigma_hours)
    px = _src("stg_candles", key, "hour", "close AS mark_price", back=m)
    oi = _src("open_interest", key, "ts", "oi_usd",
              dedupe="quote_rank(quote), oi_usd", back=m)
    depth = _src("orderbook_depth", key, "ts",
                 "mid_price, CASE WHEN bid_depth_usd IS NULL THEN ask_depth_usd WHEN ask_depth_usd IS NULL "
                 "THEN bid_depth_usd ELSE least(bid_depth_usd, ask_depth_usd) END AS depth_usd",
                 dedupe="mid_price, bid_depth_usd, ask_depth_usd", back=m)
    fm = _src("funding_rates", key, "ts", "mark_price", "mark_price IS NOT NULL", dedupe="mark_price",
              back=a.funding_mark_hours)
    return f"""
WITH r AS {rates}, k AS {_keys(f"SELECT DISTINCT {key} FROM r")}
SELECT k.as_of, k.venue, k.asset, r.venue_symbol, r.rate_per_hour, r.interval_hours,
       coalesce(CASE WHEN {_fresh("px", m)} THEN px.mark_price END,
                CASE WHEN {_fresh("d", m)} THEN d.mid_price END) AS mark_price,
       CASE WHEN {_fresh("oi", m)} THEN oi.oi_usd END AS oi_usd,
       CASE WHEN {_fresh("d", m)} THEN d.depth_usd END AS depth_usd,
       CASE WHEN {_fresh("v", a.sigma_hours)} AND {_fresh("v", m)} THEN v.volume_usd_24h END AS volume_usd_24h,
       CASE WHEN {_fresh("v", a.sigma_hours)} THEN v.sigma_daily END AS sigma_daily,
       CASE WHEN {_fresh("v", a.sigma_baseline_hours)} THEN v.sigma_baseline END AS sigma_baseline,
       CASE WHEN {_fresh("fm", a.funding_mark_hours)} THEN fm.mark_price END AS funding_mark_price
FROM k
ASOF JOIN r ON {_asof("r", key)}
ASOF LEFT JOIN {vol} v ON {_asof("v", key)}
ASOF LEFT JOIN {px} px ON {_asof("px", key)}
ASOF LEFT JOIN {oi} oi ON {_asof("oi", key)}
ASOF LEFT JOIN {depth} d ON {_asof("d", key)}
ASOF LEFT JOIN {fm} fm ON {_asof("fm", key)}
WHERE {_fresh("r", a.rate_window_hours)}
  AND rate_is_fresh(epoch(k.as_of - r.settled_at) / 3600, r.interval_hours, {a.rate_age_intervals})
ORDER BY k.as_of, k.asset, k.venue
"""


def _pair_sql(a: MarketAges) -> str:
    key = "asset, short_venue, long_venue"
    m = a.market_hours
    pf = _src("pair_features", key, "hour", "consistency_168h AS consistency, spread_mean_168h AS "
              "mean_spread_per_hour, spread_mean_24h AS mean_spread_24h", back=m)
    b = _src("basis", key, "hour", "basis_bp, basis_mean_168h AS basis_mean_bp, basis_std_168h AS basis_std_bp, "
             "basis_n_168h AS basis_n", back=m)
    series = f"SELECT {key} FROM pf UNION SELECT {key} FROM b"
    return f"""
WITH pf AS {pf}, b AS {b}, k AS {_keys(series)},
j AS (
    SELECT k.as_of, k.asset, k.short_venue, k.long_venue,
           {_fresh("pf", m)} AS pf_ok, {_fresh("b", m)} AS b_ok,
           pf.consistency, pf.mean_spread_per_hour, pf.mean_spread_24h,
           b.basis_bp, b.basis_mean_bp, b.basis_std_bp, b.basis_n
    FROM k
    ASOF LEFT JOIN pf ON {_asof("pf", key)}
    ASOF LEFT JOIN b ON {_asof("b", key)}
)
SELECT as_of, asset, short_venue, long_venue,
       CASE WHEN pf_ok THEN consistency END AS consistency,
       CASE WHEN pf_ok THEN mean_spread_per_hour END AS mean_spread_per_hour,
       CASE WHEN pf_ok THEN mean_spread_24h END AS mean_spread_24h,
       CASE WHEN pf_ok THEN consistency END AS win_rate,
       CASE WHEN b_ok THEN basis_bp END AS basis_bp, CASE WHEN b_ok THEN basis_mean_bp END AS basis_mean_bp,
       CASE WHEN b_ok THEN basis_std_bp END AS basis_std_bp, CASE WHEN b_ok THEN basis_n END AS basis_n
FROM j WHERE pf_ok OR b_ok
ORDER BY as_of, asset, short_venue, long_venue
"""


def _asset_sql(a: MarketAges) -> str:
    lab = _src("regime_labels", "asset", "hour", "anomaly, liquidity_stress", back=a.market_hours)
    return f"""
WITH l AS {lab}, k AS {_keys("SELECT DISTINCT asset FROM l")}
SELECT k.as_of, k.asset, l.anomaly, l.liquidity_stress
FROM k ASOF JOIN l ON {_asof("l", "asset")}
WHERE {_fresh("l", a.market_hours)}
ORDER BY k.as_of, k.asset
"""


def _price_sql(a: MarketAges) -> str:
    """Price (and where it came from) and both sides' liquidity per instant × market."""
    key = "venue, asset"
    h, q, f = a.price_hours, a.liquidity_hours, a.funding_mark_hours
    book = _src("orderbook_depth", key, "ts", "mid_price AS px", "mid_price IS NOT NULL", dedupe="mid_price", back=h)
    bar = _src("stg_candles", key, "hour", "close AS px", back=h)
    mark = _src("funding_rates", key, "ts", "mark_price AS px", "mark_price IS NOT NULL", dedupe="mark_price",
                back=f)
    buy = _src("orderbook_depth", key, "ts", "coalesce(ask_depth_usd, bid_depth_usd) AS liq",
               "coalesce(ask_depth_usd, bid_depth_usd) > 0", dedupe="coalesce(ask_depth_usd, bid_depth_usd)",
               back=q)
    sell = _src("orderbook_depth", key, "ts", "coalesce(bid_depth_usd, ask_depth_usd) AS liq",
                "coalesce(bid_depth_usd, ask_depth_usd) > 0", dedupe="coalesce(bid_depth_usd, ask_depth_usd)",
                back=q)
    oi = _src("open_interest", key, "ts", "oi_usd AS liq", "oi_usd > 0",
              dedupe="quote_rank(quote), oi_usd", back=q)
    vol = _src("volatility", key, "hour", "volume_usd_24h AS liq", "volume_usd_24h > 0", back=q)
    names = ("b1", "b2", "b3", "lb", "ls", "lo", "lv")
    series = " UNION ".join(f"SELECT venue, asset FROM {n}" for n in names)
    return f"""
WITH b1 AS {book}, b2 AS {bar}, b3 AS {mark}, lb AS {buy}, ls AS {sell}, lo AS {oi}, lv AS {vol},
k AS {_keys(series)},
j AS (
    SELECT k.as_of, k.venue, k.asset,
           CASE WHEN {_fresh("b1", h)} THEN b1.px END AS px1, b1.ts AS ts1,
           CASE WHEN {_fresh("b2", h)} THEN b2.px END AS px2, b2.ts AS ts2,
           CASE WHEN {_fresh("b3", f)} THEN b3.px END AS px3, b3.ts AS ts3,
           coalesce(CASE WHEN {_fresh("lb", q)} THEN lb.liq END, CASE WHEN {_fresh("lo", q)} THEN lo.liq END,
                    CASE WHEN {_fresh("lv", q)} THEN lv.liq END) AS liq_buy,
           coalesce(CASE WHEN {_fresh("ls", q)} THEN ls.liq END, CASE WHEN {_fresh("lo", q)} THEN lo.liq END,
                    CASE WHEN {_fresh("lv", q)} THEN lv.liq END) AS liq_sell
    FROM k
    ASOF LEFT JOIN b1 ON {_asof("b1", key)}
    ASOF LEFT JOIN b2 ON {_asof("b2", key)}
    ASOF LEFT JOIN b3 ON {_asof("b3", key)}
    ASOF LEFT JOIN lb ON {_asof("lb", key)}
    ASOF LEFT JOIN ls ON {_asof("ls", key)}
    ASOF LEFT JOIN lo ON {_asof("lo", key)}
    ASOF LEFT JOIN lv ON {_asof("lv", key)}
)
SELECT as_of, venue, asset, coalesce(px1, px2, px3) AS px,
       CASE WHEN px1 IS NOT NULL THEN 1 WHEN px2 IS NOT NULL THEN 2 WHEN px3 IS NOT NULL THEN 3 END AS prio,
       CASE WHEN px1 IS NOT NULL THEN ts1 WHEN px2 IS NOT NULL THEN ts2 ELSE ts3 END AS ts,
       liq_buy, liq_sell
FROM j WHERE coalesce(px1, px2, px3) IS NOT NULL OR liq_buy IS NOT NULL OR liq_sell IS NOT NULL
ORDER BY as_of, venue, asset
"""


SETTLEMENT_COLUMNS = ("venue", "asset", "venue_symbol", "ts", "rate", "mark_price")
_SETTLE_SQL = """
SELECT venue, asset, venue_symbol, ts_r AS ts, rate, mark_price FROM (
    SELECT venue, asset, venue_symbol, date_trunc('minute', ts + INTERVAL 30 SECOND) AS ts_r, rate, mark_price
    FROM funding_rates WHERE ts > $lo - INTERVAL 1 MINUTE AND ts <= $hi + INTERVAL 1 MINUTE
) WHERE ts_r > $lo AND ts_r <= $hi
ORDER BY ts_r, venue, asset, venue_symbol
"""
"""Funding settlements with their stamp rounded to the minute (stamps carry collection jitter)."""

_SYMBOL_SQL = """
SELECT venue_symbol FROM funding_rates WHERE venue = $v AND asset = $a AND ts <= $t AND ts >= $t - INTERVAL 7 DAY
GROUP BY venue_symbol, quote
ORDER BY quote_rank(quote), max(ts) DESC, venue_symbol LIMIT 1
"""


@dataclass(frozen=True)
class MarketFrames:
    """What :func:`market_frames` read for a list of instants: long frames keyed by ``as_of``."""

    instants: tuple[datetime, ...]
    venue_rows: pd.DataFrame
    pair_rows: pd.DataFrame
    asset_rows: pd.DataFrame
    price_rows: pd.DataFrame  # price, prio, ts, liq_buy, liq_sell per (as_of, venue, asset)


def market_frames(conn: duckdb.DuckDBPyConnection, instants: Sequence[datetime], ages: MarketAges) -> MarketFrames:
    """Every as-of read of the module doc at every instant (naive UTC), in five queries."""
    ts = sorted({pd.Timestamp(t).to_pydatetime() for t in instants})
    if not ts:
        raise ValueError("market_frames needs at least one instant")
    params = {"instants": ts, "first": ts[0], "hi": ts[-1]}
    cur = conn.cursor()
    # DuckDB plans an ASOF join on a small estimated left side as a nested loop: 60× slower here
    cur.execute("SET asof_loop_join_threshold = 0")
    install_macros(cur)

    def run(sql: str) -> pd.DataFrame:
        return cur.execute(sql, params).df()

    return MarketFrames(tuple(ts), run(_venue_sql(ages)), run(_pair_sql(ages)), run(_asset_sql(ages)),
                        run(_price_sql(ages)))


def settlements(conn: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> pd.DataFrame:
    """Settlements stamped in ``(lo, hi]`` (columns :data:`SETTLEMENT_COLUMNS`), in time order."""
    return conn.cursor().execute(_SETTLE_SQL, {"lo": lo, "hi": hi}).df()


def funding_symbol(conn: duckdb.DuckDBPyConnection, venue: str, asset: str, t: datetime) -> str | None:
    """The symbol whose settlements a position on ``(venue, asset)`` opened at ``t`` receives, when the keeper
    saw no fresh rate there (the market tape's symbol otherwise)."""
    cur = conn.cursor()
    install_macros(cur)
    rows = cur.execute(_SYMBOL_SQL, {"v": venue, "a": asset, "t": t}).fetchall()
    return rows[0][0] if rows else None


def settlement_stamps(conn: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> pd.Series:
    """Every raw funding stamp in ``[lo, hi]`` (for the data-age rule), sorted."""
    return conn.cursor().execute("SELECT ts FROM funding_rates WHERE ts >= $lo AND ts <= $hi ORDER BY ts",
                                 {"lo": lo, "hi": hi}).df()["ts"]


def newest_settlement(conn: duckdb.DuckDBPyConnection, t: datetime) -> datetime | None:
    """The newest funding stamp at or before ``t`` (None when there is none)."""
    return conn.cursor().execute("SELECT max(ts) FROM funding_rates WHERE ts <= ?", [t]).fetchall()[0][0]


SPREAD_HISTORY_COLUMNS = ("hour", "asset", "short_venue", "long_venue", "observed_spread_per_hour", "spread_per_hour")


def spread_history(conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pd.DataFrame:
    """``spread_panel`` rows of ``[start, end)`` (each unordered pair once, ``short_venue < long_venue``): the
    observed spreads the expected-spread predictor reads and the accrued spreads the research simulator earns."""
    cols = ", ".join(SPREAD_HISTORY_COLUMNS)
    return conn.execute(f"SELECT {cols} FROM spread_panel WHERE hour >= $a AND hour < $b "
                        "AND short_venue < long_venue ORDER BY hour, asset, short_venue, long_venue",
                        {"a": start, "b": end}).df()
