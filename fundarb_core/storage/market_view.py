"""The warehouse as a :class:`~fundarb_core.execution.market_view.MarketView`: per instant for the live keeper,
preloaded for a whole period for the simulator — the same queries either way.

Why one class for both: :meth:`WarehouseMarketView.preload` runs :func:`~.market_queries.market_frames` once for
every hour of a period (and every settlement stamp in it, where the paper venue prices funding) and keeps the
result as a :class:`~fundarb_core.strategy.market_tape.MarketTape`; an instant outside the preloaded tape is
read on demand with the same queries.  A one-instant read and a year-long read return the same rows for that
instant (every source row the rules can pick lies inside both reads' ranges), so the simulator's keeper and the
live keeper see the same market.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from fundarb_core.execution.market_view import Settlement
from fundarb_core.storage import market_queries as q
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.market_tape import MarketTape, PriceEntry
from fundarb_core.strategy.snapshot import Snapshot
from fundarb_core.times import to_naive_dt


def _settlement_list(frame: pd.DataFrame) -> list[Settlement]:
    ts = pd.to_datetime(frame["ts"]).dt.to_pydatetime()
    mark = pd.to_numeric(frame["mark_price"]).to_numpy(dtype="float64", na_value=np.nan)
    return [Settlement(str(v), str(a), str(s), t, float(r), float(m)) for v, a, s, t, r, m in zip(
        frame["venue"], frame["asset"], frame["venue_symbol"], ts, frame["rate"], mark, strict=True)]


class WarehouseMarketView:
    """Market reads on a DuckDB connection holding the raw tables and the SQL models (module doc)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, config: KeeperConfig | None = None,
                 max_price_age_hours: float = 2.0, max_liquidity_age_hours: float = 24.0,
                 read_ahead_hours: int = 0) -> None:
        """``read_ahead_hours`` > 0 reads that many hours after an instant not yet read, in one query — only for
        data that no longer changes (replays, tests): a live warehouse gains rows for those hours later."""
        self.conn = conn
        self.read_ahead_hours = read_ahead_hours
        self.ages = q.MarketAges.from_config(config or KeeperConfig(), max_price_age_hours, max_liquidity_age_hours)
        self._tape: MarketTape | None = None
        self._recent: OrderedDict[datetime, MarketTape] = OrderedDict()
        self._settle: list[Settlement] | None = None
        self._settle_ts: np.ndarray | None = None
        self._range: tuple[datetime, datetime] | None = None
        self._stamps: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------ preload

    def preload(self, start: datetime | pd.Timestamp, end: datetime | pd.Timestamp,
                first: datetime | None = None) -> WarehouseMarketView:
        """Read every hour of ``[start, end]`` (and ``first``), every settlement stamp in ``(start − 1 h, end]``
        and the raw funding stamps of the week before ``start`` onwards, once (the simulator's path)."""
        a, b = to_naive_dt(start), to_naive_dt(end)
        lo = a - pd.Timedelta(hours=1)
        settle = q.settlements(self.conn, lo, b)
        hours = pd.date_range(pd.Timestamp(a).ceil("h"), b, freq="h").to_pydatetime().tolist()
        extra = [first] if first is not None else [a]
        instants = sorted({*extra, *hours, *pd.to_datetime(settle["ts"]).dt.to_pydatetime().tolist()})
        self._tape = MarketTape.from_frames(q.market_frames(self.conn, instants, self.ages))
        self._settle = _settlement_list(settle)
        self._settle_ts = pd.to_datetime(settle["ts"]).to_numpy(dtype="datetime64[us]")
        self._range = (lo, b)
        stamp_lo = a - pd.Timedelta(days=7)
        self._stamps = pd.to_datetime(q.settlement_stamps(self.conn, stamp_lo, b)).to_numpy(dtype="datetime64[us]")
        self._stamp_range = (stamp_lo, b)
        return self

    def detach(self) -> WarehouseMarketView:
        """Forget the connection: from now on only what was preloaded can be read (a keeper that releases the
        warehouse before it trades); a read outside it raises instead of silently reopening the file."""
        self.conn = None  # type: ignore[assignment]
        return self

    def _sql(self) -> duckdb.DuckDBPyConnection:
        if self.conn is None:
            raise RuntimeError("the market view is detached from the warehouse: preload every instant it needs")
        return self.conn

    def _tape_at(self, t: datetime) -> MarketTape:
        if self._tape is not None and t in self._tape:
            return self._tape
        if self.read_ahead_hours > 0:
            self.preload(t, pd.Timestamp(t).floor("h") + pd.Timedelta(hours=self.read_ahead_hours), first=t)
            return self._tape  # type: ignore[return-value]
        got = self._recent.get(t)
        if got is None:
            got = MarketTape.from_frames(q.market_frames(self._sql(), [t], self.ages))
            self._recent[t] = got
            if len(self._recent) > 8:
                self._recent.popitem(last=False)
        return got

    # ------------------------------------------------------------------------------------------ MarketView

    def snapshot(self, t: datetime, balances_usd: Mapping[str, float] | None = None,
                 config: KeeperConfig | None = None, venues: Sequence[str] | None = None,
                 baseline_forecast: str = "none") -> Snapshot:
        ts = to_naive_dt(t)
        return self._tape_at(ts).snapshot(ts, balances_usd, config, venues, baseline_forecast)

    def prices(self, t: datetime) -> Mapping[tuple[str, str], PriceEntry]:
        ts = to_naive_dt(t)
        return self._tape_at(ts).prices(ts)

    def liquidity(self, venue: str, asset: str, t: datetime, buy: bool) -> float:
        ts = to_naive_dt(t)
        return self._tape_at(ts).liquidity(venue, asset, ts, buy)

    def settlements(self, lo: datetime, hi: datetime) -> Sequence[Settlement]:
        a, b = to_naive_dt(lo), to_naive_dt(hi)
        if self._settle is not None and self._range is not None and self._range[0] <= a and b <= self._range[1]:
            ts = self._settle_ts
            i, j = np.searchsorted(ts, np.datetime64(a, "us"), "right"), np.searchsorted(ts, np.datetime64(b, "us"),
                                                                                        "right")
            return self._settle[i:j]
        return _settlement_list(q.settlements(self._sql(), a, b))

    def funding_symbol(self, venue: str, asset: str, t: datetime) -> str | None:
        """The symbol of the rate the keeper planned on (the tape), else the warehouse's rule
        (:func:`~.market_queries.funding_symbol`) for a market without a fresh rate."""
        ts = to_naive_dt(t)
        got = self._tape_at(ts).funding_symbol(venue, asset, ts)
        if got is None and self.conn is not None:
            got = q.funding_symbol(self.conn, venue, asset, ts)
        return got

    def newest_settlement(self, t: datetime) -> datetime | None:
        ts = to_naive_dt(t)
        if self._stamps is not None and self._stamp_range[0] <= ts <= self._stamp_range[1]:
            k = int(np.searchsorted(self._stamps, np.datetime64(ts, "us"), "right"))
            if k > 0:
                return pd.Timestamp(self._stamps[k - 1]).to_pydatetime()
        return q.newest_settlement(self._sql(), ts)
