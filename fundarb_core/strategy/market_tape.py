"""The market as the keeper saw it at a list of instants, held as arrays: snapshots, paper prices and liquidity.

Why a tape: the warehouse answers "what was known at t" for many instants in one query
(:func:`fundarb_core.storage.market_queries.market_frames`); the tape keeps those rows sorted by instant and
encoded as integer codes and float columns, so a snapshot at one instant is a slice and a scatter into the
:class:`~fundarb_core.strategy.snapshot.Snapshot` grid — microseconds, no SQL, no joins.  The live keeper builds a
one-instant tape per cycle and the simulator one tape for the whole period: both go through the same
:meth:`MarketTape.snapshot`, so the simulator's keeper sees what the live keeper would have seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd

from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.snapshot import ASSET_FIELDS, PAIR_FIELDS, VENUE_FIELDS, Snapshot, default_venue_order

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
PriceEntry = tuple[float, int, datetime]
"""A paper price: value, source priority (1 book, 2 bar close, 3 funding mark) and the stamp it came from."""

_PAIR_LOAD = (*PAIR_FIELDS, "mean_spread_24h")


@dataclass(frozen=True)
class _Block:
    """Rows of one frame sorted by instant: ``start[i]:start[i + 1]`` are instant ``i``'s rows."""

    start: IntArray
    codes: dict[str, IntArray]
    values: dict[str, FloatArray]

    def rows(self, i: int) -> slice:
        return slice(int(self.start[i]), int(self.start[i + 1]))


def _encode(frame: pd.DataFrame, instants: pd.DatetimeIndex, labels: dict[str, list[str]],
            value_cols: Sequence[str]) -> _Block:
    at = pd.to_datetime(frame["as_of"]).to_numpy(dtype="datetime64[us]") if len(frame) else np.array(
        [], dtype="datetime64[us]")
    pos = np.searchsorted(instants.to_numpy(dtype="datetime64[us]"), at)
    start = np.searchsorted(pos, np.arange(len(instants) + 1)).astype("int64")
    codes = {c: pd.Categorical(frame[c].astype(str), categories=cats).codes.astype("int64")
             for c, cats in labels.items()}
    values = {}
    for c in value_cols:
        col = frame[c] if c in frame else pd.Series(np.nan, index=frame.index)
        values[c] = pd.to_numeric(col.astype("float64") if col.dtype == bool else col,
                                  errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return _Block(start, codes, values)


class MarketTape:
    """Market rows at a list of instants (module doc); build with :meth:`from_frames`."""

    def __init__(self, instants: Sequence[datetime], venue_rows: pd.DataFrame, pair_rows: pd.DataFrame,
                 asset_rows: pd.DataFrame, price_rows: pd.DataFrame) -> None:
        self.instants = pd.DatetimeIndex(sorted(pd.Timestamp(t) for t in instants))
        self._index = {t.to_pydatetime(): i for i, t in enumerate(self.instants)}
        assets = sorted({*venue_rows["asset"].astype(str), *pair_rows["asset"].astype(str),
                         *asset_rows["asset"].astype(str), *price_rows["asset"].astype(str)})
        venues = sorted({*venue_rows["venue"].astype(str), *pair_rows["short_venue"].astype(str),
                         *pair_rows["long_venue"].astype(str), *price_rows["venue"].astype(str)})
        self.assets, self.venues = assets, venues
        self._assets_arr = np.asarray(assets, dtype=object)
        av = {"asset": assets, "venue": venues}
        self._venue = _encode(venue_rows, self.instants, av, [f for f in VENUE_FIELDS if f in venue_rows])
        self._venue_fields = tuple(self._venue.values)
        self._symbols = (venue_rows["venue_symbol"].astype(str).to_numpy() if "venue_symbol" in venue_rows
                         else np.full(len(venue_rows), None, dtype=object))
        self._symbol_cache: dict[int, dict[tuple[str, str], str]] = {}
        self._pair = _encode(pair_rows, self.instants, {"asset": assets, "short_venue": venues, "long_venue": venues},
                             [f for f in _PAIR_LOAD if f in pair_rows])
        self._asset = _encode(asset_rows, self.instants, {"asset": assets},
                              [f for f in ASSET_FIELDS if f in asset_rows])
        self._price = _encode(price_rows, self.instants, av, ["px", "prio", "liq_buy", "liq_sell"])
        ts = price_rows["ts"] if "ts" in price_rows else pd.Series(pd.NaT, index=price_rows.index)
        self._price_ts = pd.to_datetime(ts).dt.to_pydatetime() if len(price_rows) else np.array([], dtype=object)
        self._price_cache: dict[int, dict[tuple[str, str], PriceEntry]] = {}

    @classmethod
    def from_frames(cls, frames: object) -> MarketTape:
        """From :class:`~fundarb_core.storage.market_queries.MarketFrames` (any object with its fields)."""
        return cls(frames.instants, frames.venue_rows, frames.pair_rows,  # type: ignore[attr-defined]
                   frames.asset_rows, frames.price_rows)  # type: ignore[attr-defined]

    def index(self, t: datetime | pd.Timestamp) -> int:
        """The position of instant ``t`` (KeyError naming it when the tape does not hold it)."""
        key = pd.Timestamp(t).to_pydatetime()
        if key not in self._index:
            raise KeyError(f"the market tape holds no instant {key} ({len(self.instants)} instants from "
                           f"{self.instants[0] if len(self.instants) else '-'})")
        return self._index[key]

    def __contains__(self, t: object) -> bool:
        return pd.Timestamp(t).to_pydatetime() in self._index  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------ snapshot

    def snapshot(self, t: datetime | pd.Timestamp, balances_usd: Mapping[str, float] | None = None,
                 config: KeeperConfig | None = None, venues: Sequence[str] | None = None,
                 baseline_forecast: str = "none") -> Snapshot:
        """The keeper's snapshot at ``t``: the assets with a rate then (sorted), ``venues`` (default: registry
        order of the venues with a rate), every field of the rows valid at ``t``; with ``baseline_forecast``
        ``"mean_24h"`` the pair's trailing 24 h mean spread fills the forecast (the no-model baseline)."""
        i = self.index(t)
        vb, pb, ab = self._venue.rows(i), self._pair.rows(i), self._asset.rows(i)
        a_codes = self._venue.codes["asset"][vb]
        v_codes = self._venue.codes["venue"][vb]
        present = np.unique(a_codes)
        venue_order = (tuple(venues) if venues is not None
                       else default_venue_order([self.venues[c] for c in np.unique(v_codes)]))
        snap = Snapshot.empty(self._assets_arr[present].tolist(), venue_order, balances_usd, config,
                              as_of=pd.Timestamp(t))
        a_map = np.full(len(self.assets), -1, dtype="int64")
        a_map[present] = np.arange(len(present))
        v_map = np.full(len(self.venues), -1, dtype="int64")
        for j, name in enumerate(venue_order):
            if name in self._venue_pos:
                v_map[self._venue_pos[name]] = j
        ai, vi = a_map[a_codes], v_map[v_codes]
        ok = (ai >= 0) & (vi >= 0)
        for f in self._venue_fields:
            getattr(snap, f)[ai[ok], vi[ok]] = self._venue.values[f][vb][ok]
        pa = a_map[self._pair.codes["asset"][pb]]
        ps, pl = v_map[self._pair.codes["short_venue"][pb]], v_map[self._pair.codes["long_venue"][pb]]
        ok = (pa >= 0) & (ps >= 0) & (pl >= 0)
        for f in PAIR_FIELDS:
            src = "mean_spread_24h" if (f == "forecast_spread_per_hour" and baseline_forecast == "mean_24h") else f
            if src in self._pair.values:
                getattr(snap, f)[pa[ok], ps[ok], pl[ok]] = self._pair.values[src][pb][ok]
        aa = a_map[self._asset.codes["asset"][ab]]
        ok = aa >= 0
        for f, target in (("anomaly", snap.anomaly), ("liquidity_stress", snap.liquidity_stress)):
            if f in self._asset.values:
                vals = self._asset.values[f][ab][ok]
                target[aa[ok]] = np.nan_to_num(vals, nan=0.0) != 0
        return snap

    @property
    def _venue_pos(self) -> dict[str, int]:
        if not hasattr(self, "_venue_pos_cache"):
            self._venue_pos_cache = {v: j for j, v in enumerate(self.venues)}
        return self._venue_pos_cache

    # ------------------------------------------------------------------------------------------ paper venue

    def prices(self, t: datetime | pd.Timestamp) -> dict[tuple[str, str], PriceEntry]:
        """Every market's paper price at ``t`` (module doc of the queries for the rule)."""
        i = self.index(t)
        got = self._price_cache.get(i)
        if got is None:
            b = self._price.rows(i)
            px, prio = self._price.values["px"][b], self._price.values["prio"][b]
            vs, as_ = self._price.codes["venue"][b], self._price.codes["asset"][b]
            ts = self._price_ts[b]
            got = {(self.venues[v], self.assets[a]): (float(p), int(q), s)
                   for v, a, p, q, s in zip(vs, as_, px, prio, ts, strict=True) if not np.isnan(p)}
            if len(self._price_cache) > 64:
                self._price_cache.clear()
            self._price_cache[i] = got
        return got

    def liquidity(self, venue: str, asset: str, t: datetime | pd.Timestamp, buy: bool) -> float:
        """Liquidity for the √-impact of a buy (ask side) or a sell (bid side) on ``(venue, asset)`` at ``t``."""
        i = self.index(t)
        b = self._price.rows(i)
        if venue not in self._venue_pos or asset not in self._asset_pos:
            return float("nan")
        hit = np.flatnonzero((self._price.codes["venue"][b] == self._venue_pos[venue])
                             & (self._price.codes["asset"][b] == self._asset_pos[asset]))
        if not len(hit):
            return float("nan")
        return float(self._price.values["liq_buy" if buy else "liq_sell"][b][hit[0]])

    def funding_symbol(self, venue: str, asset: str, t: datetime | pd.Timestamp) -> str | None:
        """The symbol of the rate the keeper saw for ``(venue, asset)`` at ``t`` (None when it saw none): a
        position is funded on the series it was planned on."""
        i = self.index(t)
        got = self._symbol_cache.get(i)
        if got is None:
            b = self._venue.rows(i)
            got = {(self.venues[v], self.assets[a]): s for v, a, s in zip(
                self._venue.codes["venue"][b], self._venue.codes["asset"][b], self._symbols[b], strict=True)}
            if len(self._symbol_cache) > 64:
                self._symbol_cache.clear()
            self._symbol_cache[i] = got
        return got.get((venue, asset))

    @property
    def _asset_pos(self) -> dict[str, int]:
        if not hasattr(self, "_asset_pos_cache"):
            self._asset_pos_cache = {a: j for j, a in enumerate(self.assets)}
        return self._asset_pos_cache
