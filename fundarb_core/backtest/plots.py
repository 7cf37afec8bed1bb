"""Backtest charts written straight to PNG files: equity, drawdown, spread heat map, positions, leverage sweep.

Why this shape:

* Only matplotlib's object API (:class:`~matplotlib.figure.Figure` on a
  :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`) is used, never ``pyplot``.  ``pyplot`` keeps a
  global registry of open figures and picks a GUI backend from the environment; a Dagster run executes
  assets in threads or subprocesses without a display, so global state would leak memory and race.
  A bare ``Figure`` is owned by the caller, rendered by Agg, and freed once it goes out of scope.
* Every function takes plain pandas inputs and a target path, writes exactly one PNG and returns the path,
  so an asset can attach the file to its metadata and a test can open it.  Parent folders are created.
* Empty inputs are not an error: a backtest over a quiet window legitimately has no positions or no
  spreads, and a report that silently lacks a chart is worse than one that says "no data".
* Output is deterministic: fixed size and DPI, and the PNG ``Software`` text chunk (which holds the
  matplotlib version) is dropped, so re-running a backtest on the same data gives identical bytes and
  artifact stores can de-duplicate them.
* Times are shown in UTC.  Tz-aware inputs are converted to UTC and made naive before plotting, because
  matplotlib's native date handling works on naive ``datetime64`` values and funding settles in UTC.

Nothing here imports dagster; the pipelines call these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = [
    "DPI",
    "HEATMAP_MAX_HOURS",
    "drawdown",
    "drawdown_pct",
    "equity_vs_oracle",
    "equity_vs_oracle_regimes",
    "heatmap_matrix",
    "leverage_sweep",
    "positions_over_time",
    "spread_heatmap",
]

DPI = 100
# Above this many hourly columns a heat map cell gets narrower than a pixel or two on a 12-inch figure,
# so the matrix is averaged to days instead.
HEATMAP_MAX_HOURS = 400
# A legend with more entries than this covers the chart; the rest are grouped as "other".
MAX_PAIR_LEGEND = 12

_WIDE = (11.0, 5.0)
_ORACLE_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.6}
_NAN_COLOUR = "0.85"  # light grey: "no observation", distinct from a zero spread (white in RdBu)
_OTHER_COLOUR = "0.6"


# --------------------------------------------------------------------------------------------- helpers
def _new_figure(size: tuple[float, float] = _WIDE) -> Figure:
    """A figure bound to the Agg canvas, so rendering never depends on the process's default backend."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG (parents created, no version metadata) and release its artists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        fig.clear()  # drop references to the data now rather than when the GC finds the figure
    return path


def _no_data(path: Path, title: str, message: str = "no data") -> Path:
    """A placeholder chart: the title and a short message, so reports keep their layout."""
    fig = _new_figure((8.0, 3.0))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="0.4", transform=ax.transAxes)
    ax.set_axis_off()
    return _save(fig, path)


def _utc_naive(values: Iterable[object] | pd.Index | pd.Series) -> pd.DatetimeIndex:
    """Timestamps as naive UTC; naive inputs are taken to be UTC already (the project's convention)."""
    idx = pd.DatetimeIndex(pd.to_datetime(pd.Index(values), utc=True))
    return idx.tz_localize(None)


def _utc_timestamp(ts: pd.Timestamp | str) -> pd.Timestamp:
    """One timestamp as naive UTC (see :func:`_utc_naive`)."""
    t = pd.Timestamp(ts)
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).tz_localize(None)


def _date_axis(ax: Axes) -> None:
    """Concise date ticks: a backtest spans hours to a year and the default formatter overlaps labels."""
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def _require(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Fail with the missing column names rather than a bare ``KeyError`` deep inside pandas."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; got {list(frame.columns)}")


def _non_empty(equity: Mapping[str, pd.Series]) -> dict[str, pd.Series]:
    """Strategies with at least one finite value, sorted by time, index as naive UTC."""
    out: dict[str, pd.Series] = {}
    for label, series in equity.items():
        s = pd.Series(series, dtype="float64").dropna()
        if s.empty:
            continue
        s.index = _utc_naive(s.index)
        out[label] = s.sort_index()
    return out


# ---------------------------------------------------------------------------------------------- equity
def equity_vs_oracle(
    equity: Mapping[str, pd.Series],
    oracle: pd.Series | None,
    path: Path,
    title: str = "Equity vs cost-aware oracle",
) -> Path:
    """Cumulative net P&L (USD) of each strategy against the cost-aware oracle's, on one axis.

    The oracle is the upper bound a strategy could have reached with perfect foresight after costs; the gap
    between a strategy line and the dashed grey oracle line is what forecasting could still win.
    """
    curves = _non_empty(equity)
    oracle_curve = _non_empty({"oracle": oracle}).get("oracle") if oracle is not None else None
    if not curves and oracle_curve is None:
        return _no_data(path, title)

    fig = _new_figure()
    ax = fig.add_subplot()
    for label, s in curves.items():
        ax.plot(s.index.to_numpy(), s.to_numpy(), linewidth=1.4, label=f"{label} ({s.iloc[-1]:,.0f} USD)")
    if oracle_curve is not None:
        ax.plot(
            oracle_curve.index.to_numpy(),
            oracle_curve.to_numpy(),
            label=f"cost-aware oracle ({oracle_curve.iloc[-1]:,.0f} USD)",
            **_ORACLE_STYLE,
        )
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("net P&L (USD)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    _date_axis(ax)
    return _save(fig, path)


def equity_vs_oracle_regimes(
    curves: Mapping[str, Mapping[str, pd.Series]],
    oracles: Mapping[str, pd.Series | None],
    path: Path,
    title: str = "Every policy vs the cost-aware oracle, by fee regime",
) -> Path:
    """One panel per fee regime (``curves[regime][policy]`` = cumulative net P&L, USD), every policy against that
    regime's oracle (dashed): the report's comparison at a glance.  Policies keep one colour across panels."""
    regimes = [r for r in curves if _non_empty(curves[r]) or oracles.get(r) is not None]
    if not regimes:
        return _no_data(path, title)
    cols = 2 if len(regimes) > 1 else 1
    rows = -(-len(regimes) // cols)
    fig = _new_figure((11.0, 3.6 * rows + 0.6))
    fig.suptitle(title)
    colours = colormaps["tab10"]
    policies = sorted({p for r in regimes for p in curves[r]})
    colour = {p: colours(i % colours.N) for i, p in enumerate(policies)}
    for k, regime in enumerate(regimes):
        ax = fig.add_subplot(rows, cols, k + 1)
        for label, s in _non_empty(curves[regime]).items():
            ax.plot(s.index.to_numpy(), s.to_numpy(), linewidth=1.2, color=colour[label],
                    label=f"{label} ({s.iloc[-1]:,.0f})")
        o = oracles.get(regime)
        oc = _non_empty({"oracle": o}).get("oracle") if o is not None else None
        if oc is not None:
            ax.plot(oc.index.to_numpy(), oc.to_numpy(), label=f"oracle ({oc.iloc[-1]:,.0f})", **_ORACLE_STYLE)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(regime)
        ax.set_ylabel("net P&L (USD)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize="x-small")
        _date_axis(ax)
    return _save(fig, path)


def drawdown_pct(cum_pnl: pd.Series, capital: float) -> pd.Series:
    """Drawdown of ``capital + cum_pnl`` from its running peak, in percent (0 at a peak, negative below).

    The starting capital counts as the first peak, so a loss in the very first hour already shows as a
    drawdown instead of becoming the reference level.
    """
    if not capital > 0:
        raise ValueError(f"capital must be positive, got {capital!r}")
    value = capital + pd.Series(cum_pnl, dtype="float64")
    peak = value.cummax().clip(lower=capital)
    return 100.0 * (value / peak - 1.0)


def drawdown(equity: Mapping[str, pd.Series], capital: float, path: Path, title: str = "Drawdown") -> Path:
    """Per-strategy drawdown (%) of capital plus cumulative net P&L, as filled areas with lines on top.

    Funding carry earns small amounts steadily and loses in bursts (basis blow-outs, forced exits); the
    P&L chart hides those bursts behind the trend, the drawdown chart shows their depth and duration.
    """
    if not capital > 0:
        raise ValueError(f"capital must be positive, got {capital!r}")
    curves = _non_empty(equity)
    if not curves:
        return _no_data(path, title)

    fig = _new_figure()
    ax = fig.add_subplot()
    colours = colormaps["tab10"]
    for i, (label, s) in enumerate(curves.items()):
        dd = drawdown_pct(s, capital)
        x = dd.index.to_numpy()
        colour = colours(i % colours.N)
        ax.fill_between(x, dd.to_numpy(), 0.0, color=colour, alpha=0.18, linewidth=0)
        ax.plot(x, dd.to_numpy(), color=colour, linewidth=1.2, label=f"{label} (max {dd.min():.3g} %)")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel(f"drawdown (% of peak, capital {capital:,.0f} USD)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    _date_axis(ax)
    return _save(fig, path)


# -------------------------------------------------------------------------------------------- heat map
def heatmap_matrix(spreads: pd.DataFrame, max_hours: int = HEATMAP_MAX_HOURS) -> pd.DataFrame:
    """The heat map's data: assets (rows) × time (columns) of ``spread_apr`` (fraction per year).

    Rows are duplicates-averaged per hour, then laid on a gap-free hourly grid (missing hours are NaN, so the
    time axis stays linear).  If that grid has more than ``max_hours`` columns it is averaged to UTC days
    (mean of the available hours; a day without any is NaN).  Rows are sorted by the asset's mean spread,
    highest first (ties by name), so the assets worth trading sit on top.  Columns are tz-aware UTC.
    """
    _require(spreads, ("hour", "asset", "spread_apr"), "spreads")
    frame = spreads.loc[:, ["hour", "asset", "spread_apr"]].copy()
    frame["spread_apr"] = pd.to_numeric(frame["spread_apr"], errors="coerce")
    frame = frame.dropna(subset=["hour", "asset"])
    if frame.empty:
        return pd.DataFrame(dtype="float64")
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True).dt.floor("h")
    frame["asset"] = frame["asset"].astype(str)

    wide = frame.pivot_table(index="hour", columns="asset", values="spread_apr", aggfunc="mean", dropna=False)
    grid = pd.date_range(frame["hour"].min(), frame["hour"].max(), freq="h")
    wide = wide.reindex(grid)
    if len(grid) > max_hours:
        wide = wide.resample("1D").mean()

    means = frame.groupby("asset")["spread_apr"].mean()
    order = sorted(means.index, key=lambda a: (-means[a] if pd.notna(means[a]) else np.inf, a))
    matrix = wide.T.reindex(order)
    matrix.index.name = "asset"
    matrix.columns.name = "hour" if len(grid) <= max_hours else "day"
    return matrix.astype("float64")


def _column_edges(columns: pd.Index) -> np.ndarray:
    """Cell edges on matplotlib's date axis: each column spans from its start to the next column's."""
    starts = _utc_naive(columns)
    step = starts[1] - starts[0] if len(starts) > 1 else pd.Timedelta(hours=1)
    return mdates.date2num(starts.append(pd.DatetimeIndex([starts[-1] + step])).to_pydatetime())


def spread_heatmap(spreads: pd.DataFrame, path: Path, title: str = "Best spread per asset (APR)") -> Path:
    """Best ordered-pair funding spread per asset over time, in % APR, on a diverging scale centred at 0.

    One glance shows which assets carry a persistent spread and when regimes switch; a diverging map keeps
    a positive and a negative spread of the same size equally visible.  The colour range is the 99th
    percentile of |spread| so one squeeze does not wash out the rest (the colorbar extends both ways).
    Missing cells are light grey.  See :func:`heatmap_matrix` for the layout and the daily averaging.
    """
    matrix = heatmap_matrix(spreads) * 100.0
    values = matrix.to_numpy(dtype="float64")
    if matrix.empty or not np.isfinite(values).any():
        return _no_data(path, title)

    halfrange = float(np.nanpercentile(np.abs(values), 99))
    if not halfrange > 0:
        halfrange = max(float(np.nanmax(np.abs(values))), 1e-6)
    cmap = colormaps["RdBu_r"].with_extremes(bad=_NAN_COLOUR)

    n_assets = matrix.shape[0]
    fig = _new_figure((12.0, max(3.0, 1.6 + 0.32 * n_assets)))
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(
        _column_edges(matrix.columns),
        np.arange(n_assets + 1),
        np.ma.masked_invalid(values),
        cmap=cmap,
        norm=CenteredNorm(vcenter=0.0, halfrange=halfrange),
        shading="flat",
    )
    ax.set_yticks(np.arange(n_assets) + 0.5, labels=list(matrix.index))
    ax.invert_yaxis()  # highest mean spread on top
    ax.xaxis_date()
    _date_axis(ax)
    resolution = "daily mean" if matrix.columns.name == "day" else "hourly"
    ax.set_title(f"{title} — {resolution}")
    cbar = fig.colorbar(mesh, ax=ax, extend="both", pad=0.01)
    cbar.set_label("spread (% APR)")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- positions
def _pair_label(short_venue: object, long_venue: object) -> str:
    return f"{short_venue}→{long_venue}"


def positions_over_time(
    positions: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    path: Path,
    title: str = "Positions",
) -> Path:
    """Gantt chart of the backtest's positions: one row per asset, one bar per position, coloured by pair.

    Shows at a glance how long positions are held, how often the keeper rotates venues, and where capital
    sat idle.  Bars are clipped to ``[start, end]``; a position still open (``closed_at`` NaT) runs to
    ``end``.  Bar height grows with ``size_usd`` (square root, so a small position stays visible).  Pairs
    (short venue → long venue) are ranked by total size; the top ones get a colour and a legend entry, the
    rest share a grey "other" entry so the legend stays at most :data:`MAX_PAIR_LEGEND` lines.
    """
    cols = ("asset", "short_venue", "long_venue", "opened_at", "closed_at", "size_usd")
    _require(positions, cols, "positions")
    t0, t1 = _utc_timestamp(start), _utc_timestamp(end)
    if not t1 > t0:
        raise ValueError(f"end ({end}) must be after start ({start})")

    frame = positions.loc[:, list(cols)].copy()
    frame = frame.dropna(subset=["asset", "opened_at"])
    if not frame.empty:
        frame["opened_at"] = _utc_naive(frame["opened_at"])
        frame["closed_at"] = _utc_naive(frame["closed_at"]).fillna(t1)
        frame["opened_at"] = frame["opened_at"].clip(lower=t0)
        frame["closed_at"] = frame["closed_at"].clip(upper=t1)
        frame = frame[frame["closed_at"] > frame["opened_at"]]
    if frame.empty:
        return _no_data(path, title, "no positions")

    frame["asset"] = frame["asset"].astype(str)
    frame["pair"] = [_pair_label(s, lv) for s, lv in zip(frame["short_venue"], frame["long_venue"], strict=True)]
    size = pd.to_numeric(frame["size_usd"], errors="coerce").abs().fillna(0.0)
    biggest = float(size.max())
    frame["height"] = 0.2 + 0.6 * np.sqrt(size / biggest) if biggest > 0 else 0.5

    ranked = frame.groupby("pair")["size_usd"].agg(lambda s: pd.to_numeric(s, errors="coerce").abs().sum())
    pairs = sorted(ranked.index, key=lambda p: (-ranked[p], p))
    has_other = len(pairs) > MAX_PAIR_LEGEND
    named = pairs[: MAX_PAIR_LEGEND - 1] if has_other else pairs
    palette = colormaps["tab20"] if len(named) > 10 else colormaps["tab10"]
    colour_of = {p: palette(i % palette.N) for i, p in enumerate(named)}

    assets = sorted(frame["asset"].unique())
    row_of = {a: i for i, a in enumerate(assets)}
    fig = _new_figure((12.0, max(3.0, 1.8 + 0.45 * len(assets))))
    ax = fig.add_subplot()
    left = mdates.date2num(pd.DatetimeIndex(frame["opened_at"]).to_pydatetime())
    right = mdates.date2num(pd.DatetimeIndex(frame["closed_at"]).to_pydatetime())
    ax.barh(
        [row_of[a] for a in frame["asset"]],
        right - left,
        left=left,
        height=frame["height"].to_numpy(),
        color=[colour_of.get(p, _OTHER_COLOUR) for p in frame["pair"]],
        edgecolor="black",
        linewidth=0.4,
        alpha=0.85,
    )
    ax.set_yticks(range(len(assets)), labels=assets)
    ax.set_ylim(len(assets) - 0.5, -0.5)
    ax.set_xlim(mdates.date2num(t0.to_pydatetime()), mdates.date2num(t1.to_pydatetime()))
    ax.xaxis_date()
    _date_axis(ax)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"{title} — {len(frame)} positions, height ∝ √size")
    handles = [Patch(facecolor=colour_of[p], edgecolor="black", linewidth=0.4, label=p) for p in named]
    if has_other:
        handles.append(
            Patch(facecolor=_OTHER_COLOUR, edgecolor="black", linewidth=0.4, label=f"other ({len(pairs) - len(named)})")
        )
    ax.legend(
        handles=handles,
        title="short → long",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        title_fontsize="small",
    )
    return _save(fig, path)


# --------------------------------------------------------------------------------------- leverage sweep
def leverage_sweep(table: pd.DataFrame, path: Path, title: str = "Leverage safety: K sweep") -> Path:
    """Final capital and max drawdown against the leverage safety factor K, one line per asset.

    The sweep answers "how much leverage is too much": final capital rises with leverage until a basis move
    liquidates a leg, so liquidated runs are marked with a large cross.  ``max_drawdown`` is read as a
    fraction of peak equity (0.25 = 25 %) and plotted as its magnitude in %, whatever its sign convention.
    The K axis turns logarithmic when the swept values span more than a factor 20.
    """
    cols = ("asset", "k", "avg_leverage", "max_drawdown", "final_capital", "liquidated")
    _require(table, cols, "leverage sweep table")
    frame = table.loc[:, list(cols)].copy()
    frame["k"] = pd.to_numeric(frame["k"], errors="coerce")
    frame = frame.dropna(subset=["asset", "k"])
    if frame.empty:
        return _no_data(path, title)
    frame["asset"] = frame["asset"].astype(str)
    frame["liquidated"] = frame["liquidated"].fillna(False).astype(bool)
    frame["final_capital"] = pd.to_numeric(frame["final_capital"], errors="coerce")
    frame["dd_pct"] = 100.0 * pd.to_numeric(frame["max_drawdown"], errors="coerce").abs()
    frame = frame.sort_values(["asset", "k"])

    fig = _new_figure((13.0, 5.0))
    ax_cap, ax_dd = fig.subplots(1, 2)
    colours = colormaps["tab10"] if frame["asset"].nunique() <= 10 else colormaps["tab20"]
    for i, (asset, rows) in enumerate(frame.groupby("asset", sort=True)):
        colour = colours(i % colours.N)
        liq = rows["liquidated"].to_numpy()
        for ax, column in ((ax_cap, "final_capital"), (ax_dd, "dd_pct")):
            ax.plot(rows["k"], rows[column], marker="o", markersize=4, color=colour, linewidth=1.2, label=asset)
            if liq.any():
                ax.scatter(rows["k"][liq], rows[column][liq], marker="x", s=90, linewidths=2.2, color=colour, zorder=3)
    k = frame["k"].to_numpy()
    log_k = bool((k > 0).all() and k.max() / k.min() > 20)
    for ax in (ax_cap, ax_dd):
        if log_k:
            ax.set_xscale("log")
        ax.set_xlabel("K (leverage safety factor)")
        ax.grid(True, alpha=0.3)
    ax_cap.set_ylabel("final capital (USD)")
    ax_cap.set_title("final capital (× = liquidated)")
    ax_dd.set_ylabel("max drawdown (% of peak)")
    ax_dd.set_title("max drawdown (× = liquidated)")
    ax_dd.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="asset")
    fig.suptitle(title)
    return _save(fig, path)
