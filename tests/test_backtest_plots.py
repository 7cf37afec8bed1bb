"""Backtest charts on inputs derived from the bundled real funding data.

Every chart is checked as a real PNG (signature, decodable, the pixel size its figure size implies), on
empty inputs, and for deterministic bytes; the heat map's data matrix is checked against daily means
computed by hand from the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from fundarb_core.backtest import plots
from fundarb_core.funding import HOURS_PER_YEAR
from fundarb_core.ingest import prepare
from fundarb_core.schema import FUNDING, LAYOUT_FILES
from fundarb_core.sources.replay import BUNDLED_DATA_DIR

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ASSETS = ("BTC", "ETH", "SOL", "DOGE", "HYPE")
START = pd.Timestamp("2026-03-01", tz="UTC")
END = pd.Timestamp("2026-03-25", tz="UTC")  # 24 days = 576 hours > HEATMAP_MAX_HOURS
NOTIONAL = 10_000.0
CAPITAL = 10_000.0
HOURLY_COST = 0.05  # USD per hour of carry, so equity also goes down and drawdowns are not all zero


def _shape(path: Path) -> tuple[int, int]:
    """(height, width) in pixels, after checking the file is a decodable PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 0 and image.shape[1] > 0
    return image.shape[0], image.shape[1]


def _px(width_in: float, height_in: float) -> tuple[int, int]:
    return round(height_in * plots.DPI), round(width_in * plots.DPI)


NO_DATA_PX = _px(8.0, 3.0)


# ------------------------------------------------------------------------------------ real-data inputs
@pytest.fixture(scope="module")
def venue_hours() -> pd.DataFrame:
    """The per-hour funding rate in force for each (hour, asset, venue), from the bundled settlements.

    Settlements are averaged per hour, then each one is spread over the ``interval_hours`` hours it accrued
    over (the project's convention: a rate settled at ``ts`` accrues over the interval *before* ``ts``), so
    an 8h venue and a 1h venue can be compared in every hour.
    """
    raw = pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{LAYOUT_FILES['funding_rates']}.parquet")
    raw = raw[(raw.ts >= START) & (raw.ts < END)]
    rows = prepare(FUNDING, raw).accepted  # resolves intervals, adds asset and rate_per_hour
    rows = rows[rows.asset.isin(ASSETS)].assign(hour=lambda f: f.ts.dt.ceil("h"))
    grid = pd.date_range(START, END, freq="h", inclusive="left")
    frames = []
    for (asset, venue), g in rows.groupby(["asset", "venue"]):
        hourly = g.groupby("hour")["rate_per_hour"].mean().reindex(grid)
        interval = int(g["interval_hours"].median())
        in_force = hourly.bfill(limit=interval - 1) if interval > 1 else hourly
        frames.append(in_force.dropna().rename_axis("hour").reset_index().assign(asset=asset, venue=venue))
    return pd.concat(frames, ignore_index=True)[["hour", "asset", "venue", "rate_per_hour"]]


@pytest.fixture(scope="module")
def spreads(venue_hours: pd.DataFrame) -> pd.DataFrame:
    """Best ordered-pair spread per asset and hour (short the max-rate venue, long the min), as APR."""
    g = venue_hours.groupby(["hour", "asset"])["rate_per_hour"]
    best = venue_hours.loc[g.idxmax(), ["hour", "asset", "venue", "rate_per_hour"]].reset_index(drop=True)
    worst = venue_hours.loc[g.idxmin(), ["venue", "rate_per_hour"]].reset_index(drop=True)
    out = pd.DataFrame(
        {
            "hour": best["hour"],
            "asset": best["asset"],
            "short_venue": best["venue"],
            "long_venue": worst["venue"],
            "spread_apr": (best["rate_per_hour"] - worst["rate_per_hour"]) * HOURS_PER_YEAR,
            "n_venues": g.size().to_numpy(),
        }
    )
    out = out[out.n_venues >= 2].drop(columns="n_venues").reset_index(drop=True)
    assert out.hour.nunique() > plots.HEATMAP_MAX_HOURS and set(out.asset) == set(ASSETS)
    return out


@pytest.fixture(scope="module")
def equity(spreads: pd.DataFrame) -> dict[str, pd.Series]:
    """Cumulative net P&L of carrying NOTIONAL on one asset's best spread, minus a flat hourly cost."""
    wide = spreads.pivot(index="hour", columns="asset", values="spread_apr").fillna(0.0)
    hourly = wide * NOTIONAL / HOURS_PER_YEAR - HOURLY_COST
    return {
        "BTC carry": hourly["BTC"].cumsum(),
        "ETH carry": hourly["ETH"].cumsum(),
        "best asset each hour": hourly.max(axis=1).cumsum(),
    }


@pytest.fixture(scope="module")
def oracle(spreads: pd.DataFrame) -> pd.Series:
    """Perfect foresight on the same menu: the best asset each hour, only when it beats the cost."""
    wide = spreads.pivot(index="hour", columns="asset", values="spread_apr").fillna(0.0)
    hourly = (wide * NOTIONAL / HOURS_PER_YEAR - HOURLY_COST).max(axis=1).clip(lower=0.0)
    return hourly.cumsum()


@pytest.fixture(scope="module")
def positions(spreads: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive hours where an asset's best spread beats 10 % APR with the same venue pair."""
    hot = spreads[spreads.spread_apr > 0.10].sort_values(["asset", "hour"]).reset_index(drop=True)
    pair = hot.short_venue + "→" + hot.long_venue
    new_run = (
        (hot.asset != hot.asset.shift())
        | (pair != pair.shift())
        | (hot.hour - hot.hour.shift() != pd.Timedelta(hours=1))
    )
    runs = hot.groupby(new_run.cumsum()).agg(
        asset=("asset", "first"),
        short_venue=("short_venue", "first"),
        long_venue=("long_venue", "first"),
        opened_at=("hour", "first"),
        closed_at=("hour", "last"),
        size_usd=("spread_apr", lambda s: float(NOTIONAL * s.mean())),
    )
    runs["closed_at"] = runs["closed_at"] + pd.Timedelta(hours=1)
    still_open = runs["closed_at"] >= END  # the run reaching the window's end is still open
    runs["closed_at"] = runs["closed_at"].where(~still_open, pd.NaT)
    assert len(runs) > 5
    return runs.reset_index(drop=True)


@pytest.fixture(scope="module")
def sweep(venue_hours: pd.DataFrame, spreads: pd.DataFrame) -> pd.DataFrame:
    """A K sweep from real rates: leverage 10/K on the carry, liquidated if the spread P&L ever loses 1/lev."""
    wide = spreads.pivot(index="hour", columns="asset", values="spread_apr").fillna(0.0)
    rows = []
    for asset in ("BTC", "ETH", "SOL"):
        carry = wide[asset] * CAPITAL / HOURS_PER_YEAR - 4 * HOURLY_COST
        for k in (0.5, 1.0, 2.0, 4.0, 8.0):
            lev = 10.0 / k
            cum = (carry * lev).cumsum()
            dd = plots.drawdown_pct(cum, CAPITAL)
            liquidated = bool(dd.min() <= -100.0 / lev)
            rows.append(
                {
                    "asset": asset,
                    "k": k,
                    "avg_leverage": lev,
                    "max_drawdown": float(dd.min()) / 100.0,
                    "final_capital": 0.0 if liquidated else CAPITAL + float(cum.iloc[-1]),
                    "liquidated": liquidated,
                }
            )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- heat map
def test_heatmap_matrix_resamples_to_daily_means(spreads: pd.DataFrame) -> None:
    m = plots.heatmap_matrix(spreads)
    days = pd.date_range(START, END - pd.Timedelta(days=1), freq="D")
    assert m.shape == (len(ASSETS), len(days))
    assert list(m.columns) == list(days) and m.columns.name == "day"
    # rows sorted by each asset's mean spread, highest first
    means = spreads.groupby("asset").spread_apr.mean().sort_values(ascending=False)
    assert list(m.index) == list(means.index)
    # one cell by hand: ETH on 2026-03-10 is the mean of that day's hourly spreads
    day = pd.Timestamp("2026-03-10", tz="UTC")
    rows = spreads[(spreads.asset == "ETH") & (spreads.hour >= day) & (spreads.hour < day + pd.Timedelta(days=1))]
    assert len(rows) > 12
    assert m.loc["ETH", day] == pytest.approx(rows.spread_apr.mean(), rel=1e-12)
    # HYPE is listed on few venues: days without any pair of quotes stay NaN, not zero
    hype_days = spreads[spreads.asset == "HYPE"].hour.dt.floor("D").unique()
    assert m.loc["HYPE"].notna().sum() == len(hype_days) < len(days)


def test_heatmap_matrix_keeps_hours_on_a_gap_free_grid(spreads: pd.DataFrame) -> None:
    first_week = spreads[spreads.hour < START + pd.Timedelta(days=7)]
    m = plots.heatmap_matrix(first_week)
    span = int((first_week.hour.max() - first_week.hour.min()) / pd.Timedelta(hours=1)) + 1
    assert m.shape == (first_week.asset.nunique(), span) and m.columns.name == "hour"
    assert (m.columns[1:] - m.columns[:-1] == pd.Timedelta(hours=1)).all()
    btc = first_week[first_week.asset == "BTC"].set_index("hour").spread_apr
    np.testing.assert_allclose(m.loc["BTC", btc.index].to_numpy(), btc.to_numpy())
    assert m.loc["BTC"].notna().sum() == len(btc)  # hours without a spread are NaN (grey), not invented


def test_spread_heatmap_writes_png(spreads: pd.DataFrame, tmp_path: Path) -> None:
    out = plots.spread_heatmap(spreads, tmp_path / "deep" / "er" / "heat.png")
    assert out == tmp_path / "deep" / "er" / "heat.png"
    assert _shape(out) == _px(12.0, max(3.0, 1.6 + 0.32 * len(ASSETS)))


# --------------------------------------------------------------------------------------- equity & risk
def test_equity_vs_oracle_writes_png_and_is_deterministic(
    equity: dict[str, pd.Series], oracle: pd.Series, tmp_path: Path
) -> None:
    a = plots.equity_vs_oracle(equity, oracle, tmp_path / "a" / "equity.png")
    b = plots.equity_vs_oracle(equity, oracle, tmp_path / "b" / "equity.png")
    assert _shape(a) == _px(11.0, 5.0)
    assert a.read_bytes() == b.read_bytes()  # no version/time metadata: re-runs give identical files
    assert b"matplotlib" not in a.read_bytes()


def test_equity_naive_index_is_read_as_utc(equity: dict[str, pd.Series], tmp_path: Path) -> None:
    naive = {k: v.set_axis(v.index.tz_localize(None)) for k, v in equity.items()}
    berlin = {k: v.set_axis(v.index.tz_convert("Europe/Berlin")) for k, v in equity.items()}
    files = [plots.equity_vs_oracle(e, None, tmp_path / f"{i}.png") for i, e in enumerate((equity, naive, berlin))]
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()


def test_drawdown_pct_from_real_equity(equity: dict[str, pd.Series]) -> None:
    cum = equity["BTC carry"]
    dd = plots.drawdown_pct(cum, CAPITAL)
    value = CAPITAL + cum
    peak = np.maximum(value.cummax(), CAPITAL)
    np.testing.assert_allclose(dd.to_numpy(), 100.0 * (value / peak - 1.0).to_numpy())
    assert (dd <= 0).all() and (dd < 0).any()
    assert (dd[value >= value.cummax()] == 0).all()
    # a loss in the first hour is already a drawdown against the starting capital
    assert plots.drawdown_pct(pd.Series([-100.0, -50.0, 30.0]), 1_000.0).tolist() == pytest.approx([-10.0, -5.0, 0.0])
    with pytest.raises(ValueError, match="capital"):
        plots.drawdown_pct(cum, 0.0)


def test_drawdown_writes_png(equity: dict[str, pd.Series], tmp_path: Path) -> None:
    assert _shape(plots.drawdown(equity, CAPITAL, tmp_path / "dd.png")) == _px(11.0, 5.0)
    with pytest.raises(ValueError, match="capital"):
        plots.drawdown(equity, -1.0, tmp_path / "bad.png")


# ------------------------------------------------------------------------------------------- positions
def test_positions_over_time_writes_png(positions: pd.DataFrame, tmp_path: Path) -> None:
    assert positions.closed_at.isna().any() or positions.closed_at.max() <= END
    out = plots.positions_over_time(positions, START, END, tmp_path / "pos.png")
    n_assets = positions.asset.nunique()
    assert _shape(out) == _px(12.0, max(3.0, 1.8 + 0.45 * n_assets))


def test_positions_legend_cap_and_window_clipping(positions: pd.DataFrame, tmp_path: Path) -> None:
    many = positions.assign(short_venue=[f"v{i}" for i in range(len(positions))])  # one pair per position
    assert many.short_venue.nunique() > plots.MAX_PAIR_LEGEND
    assert _shape(plots.positions_over_time(many, START, END, tmp_path / "many.png"))[0] > 0
    # a window the positions never touch has nothing to draw
    later = (END + pd.Timedelta(days=30), END + pd.Timedelta(days=40))
    closed = positions.dropna(subset=["closed_at"])
    assert _shape(plots.positions_over_time(closed, *later, tmp_path / "none.png")) == NO_DATA_PX
    with pytest.raises(ValueError, match="after start"):
        plots.positions_over_time(positions, END, START, tmp_path / "bad.png")


# ------------------------------------------------------------------------------------------ K sweep
def test_leverage_sweep_writes_png(sweep: pd.DataFrame, tmp_path: Path) -> None:
    assert sweep.liquidated.any() and not sweep.liquidated.all()  # both markers are exercised
    assert _shape(plots.leverage_sweep(sweep, tmp_path / "sweep.png")) == _px(13.0, 5.0)
    with pytest.raises(ValueError, match="missing columns"):
        plots.leverage_sweep(sweep.drop(columns="liquidated"), tmp_path / "bad.png")


# ------------------------------------------------------------------------------------------- empty input
def test_empty_inputs_write_no_data_figures(
    spreads: pd.DataFrame, positions: pd.DataFrame, sweep: pd.DataFrame, tmp_path: Path
) -> None:
    empty_series = pd.Series([], dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))
    outputs = [
        plots.equity_vs_oracle({}, None, tmp_path / "e1" / "equity.png"),
        plots.equity_vs_oracle({"keeper": empty_series}, empty_series, tmp_path / "e2.png"),
        plots.drawdown({}, CAPITAL, tmp_path / "dd.png"),
        plots.spread_heatmap(spreads.iloc[:0], tmp_path / "heat.png"),
        plots.spread_heatmap(spreads.assign(spread_apr=np.nan), tmp_path / "heat_nan.png"),
        plots.positions_over_time(positions.iloc[:0], START, END, tmp_path / "pos.png"),
        plots.leverage_sweep(sweep.iloc[:0], tmp_path / "sweep.png"),
    ]
    for out in outputs:
        assert _shape(out) == NO_DATA_PX, out
    assert plots.heatmap_matrix(spreads.iloc[:0]).empty


def test_charts_render_identically_from_threads(
    equity: dict[str, pd.Series], oracle: pd.Series, spreads: pd.DataFrame, tmp_path: Path
) -> None:
    """Dagster may run assets in threads: no pyplot state is shared, so concurrent renders do not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    def render(i: int) -> bytes:
        if i % 2:
            return plots.spread_heatmap(spreads, tmp_path / f"t{i}.png").read_bytes()
        return plots.equity_vs_oracle(equity, oracle, tmp_path / f"t{i}.png").read_bytes()

    serial = [render(0), render(1)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(render, range(2, 8)))
    assert all(b == serial[i % 2] for i, b in enumerate(threaded))
