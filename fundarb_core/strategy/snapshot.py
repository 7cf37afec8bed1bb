"""The keeper's view of the market at one instant, as dense arrays.

Why dense arrays: discovery, filtering and planning are then broadcasts over an ``(asset, venue)`` grid and an
``(asset, short venue, long venue)`` cube, with no per-pair Python and no joins in the hot path; 1,000 assets
× 8 venues is a 64,000-cell cube per pair field, well under a megabyte each.

Schema (``A`` assets, ``V`` venues; NaN = unknown):

* per (asset, venue) ``(A, V)``: ``rate_per_hour`` (NaN = not listed or stale), ``interval_hours``,
  ``mark_price``, ``oi_usd``, ``depth_usd``, ``volume_usd_24h``, ``sigma_daily``, ``sigma_baseline``,
  ``exec_attempts`` / ``exec_failures`` (recent executions on the market, for the market-quality filter),
  ``funding_mark_price`` (the funding rows' latest mark: the price fallback of
  :mod:`~fundarb_core.strategy.fallbacks`; ``mark_price`` is the bar close or book mid);
* per ordered pair ``(A, V, V)`` indexed ``[asset, short venue, long venue]``: ``consistency`` (share of the
  last 168 h with a positive spread), ``mean_spread_per_hour`` (trailing 168 h), ``win_rate``, ``basis_bp``,
  ``basis_mean_bp``, ``basis_std_bp``, ``basis_n``, ``twap_size_usd`` (the TWAP optimiser's size, NaN where none)
  and ``forecast_spread_per_hour`` (expected spread over the holding horizon, NaN where no forecast);
* per asset ``(A,)``: ``failed_attempts`` and ``minutes_since_failure`` (cooldown), ``anomaly`` and
  ``liquidity_stress`` (regime halts);
* per venue ``(V,)``: ``balances_usd`` (free collateral);
* scalars: ``drawdown`` (portfolio drawdown as a fraction, for §7 size scaling) and ``as_of``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from fundarb_core.funding import per_hour
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.venues import VENUES

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

VENUE_FIELDS: tuple[str, ...] = (
    "rate_per_hour", "interval_hours", "mark_price", "oi_usd", "depth_usd", "volume_usd_24h", "sigma_daily",
    "sigma_baseline", "exec_attempts", "exec_failures", "funding_mark_price",
)
PAIR_FIELDS: tuple[str, ...] = (
    "consistency", "mean_spread_per_hour", "win_rate", "basis_bp", "basis_mean_bp", "basis_std_bp", "basis_n",
    "twap_size_usd", "forecast_spread_per_hour",
)
ASSET_FIELDS: tuple[str, ...] = ("failed_attempts", "minutes_since_failure", "anomaly", "liquidity_stress")
_ZERO_DEFAULT = frozenset({"exec_attempts", "exec_failures", "failed_attempts"})


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Market state at ``as_of`` (see the module docstring for the schema)."""

    assets: npt.NDArray[np.object_]
    venues: tuple[str, ...]
    rate_per_hour: FloatArray
    interval_hours: FloatArray
    mark_price: FloatArray
    oi_usd: FloatArray
    depth_usd: FloatArray
    volume_usd_24h: FloatArray
    sigma_daily: FloatArray
    sigma_baseline: FloatArray
    exec_attempts: FloatArray
    exec_failures: FloatArray
    funding_mark_price: FloatArray
    consistency: FloatArray
    mean_spread_per_hour: FloatArray
    win_rate: FloatArray
    basis_bp: FloatArray
    basis_mean_bp: FloatArray
    basis_std_bp: FloatArray
    basis_n: FloatArray
    twap_size_usd: FloatArray
    forecast_spread_per_hour: FloatArray
    failed_attempts: FloatArray
    minutes_since_failure: FloatArray
    anomaly: BoolArray
    liquidity_stress: BoolArray
    balances_usd: FloatArray
    drawdown: float = 0.0
    as_of: pd.Timestamp | None = None

    @property
    def n_assets(self) -> int:
        return len(self.assets)

    @property
    def n_venues(self) -> int:
        return len(self.venues)

    @classmethod
    def empty(
        cls, assets: Sequence[str], venues: Sequence[str], balances_usd: Mapping[str, float] | None = None,
        config: KeeperConfig | None = None, as_of: pd.Timestamp | None = None,
    ) -> Snapshot:
        """A snapshot with every number unknown (counts 0, flags False) and balances from ``balances_usd``."""
        cfg = config or KeeperConfig()
        a, v = len(assets), len(venues)
        arrays: dict[str, np.ndarray] = {}
        for f in VENUE_FIELDS:
            arrays[f] = np.full((a, v), 0.0 if f in _ZERO_DEFAULT else np.nan)
        for f in PAIR_FIELDS:
            arrays[f] = np.full((a, v, v), np.nan)
        arrays["failed_attempts"] = np.zeros(a)
        arrays["minutes_since_failure"] = np.full(a, np.inf)
        arrays["anomaly"] = np.zeros(a, dtype=bool)
        arrays["liquidity_stress"] = np.zeros(a, dtype=bool)
        bal = balances_usd or {}
        arrays["balances_usd"] = np.array([float(bal.get(x, cfg.default_balance_usd)) for x in venues])
        return cls(assets=np.asarray(list(assets), dtype=object), venues=tuple(venues), as_of=as_of,
                   **arrays)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Snapshot:
        """A copy with some fields replaced (arrays are not copied)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def default_venue_order(venues: Sequence[str]) -> tuple[str, ...]:
    """Registry order first (stable across snapshots), unknown venues after, alphabetically."""
    known = [v for v in VENUES if v in set(venues)]
    return tuple(known + sorted(set(venues) - set(known)))


def snapshot_from_frames(
    venue_rows: pd.DataFrame,
    pair_rows: pd.DataFrame | None = None,
    asset_rows: pd.DataFrame | None = None,
    balances_usd: Mapping[str, float] | None = None,
    config: KeeperConfig | None = None,
    venues: Sequence[str] | None = None,
    as_of: pd.Timestamp | None = None,
    drawdown: float = 0.0,
) -> Snapshot:
    """Build a :class:`Snapshot` from long frames.

    ``venue_rows`` has ``venue``, ``asset`` and either ``rate_per_hour`` or ``rate`` (per its interval) with
    ``interval_hours`` — a per-interval rate is converted with :func:`fundarb_core.funding.per_hour`, the one
    conversion of the project — plus any of :data:`VENUE_FIELDS`.  ``pair_rows`` has ``asset``,
    ``short_venue``, ``long_venue`` and any of :data:`PAIR_FIELDS`; ``asset_rows`` has ``asset`` and any of
    :data:`ASSET_FIELDS`.  Assets are every asset of ``venue_rows``, sorted.
    """
    vr = venue_rows.copy()
    if "rate_per_hour" not in vr and "rate" in vr:
        vr["rate_per_hour"] = per_hour(vr["rate"].to_numpy(dtype="float64"), vr["interval_hours"].to_numpy(
            dtype="float64"))
    assets = sorted(vr["asset"].astype(str).unique())
    venue_order = tuple(venues) if venues is not None else default_venue_order(vr["venue"].astype(str).unique())
    snap = Snapshot.empty(assets, venue_order, balances_usd, config, as_of)
    a_idx = {a: i for i, a in enumerate(assets)}
    v_idx = {v: i for i, v in enumerate(venue_order)}

    vr = vr[vr["venue"].isin(v_idx)]
    ai = vr["asset"].map(a_idx).to_numpy(dtype="int64")
    vi = vr["venue"].map(v_idx).to_numpy(dtype="int64")
    for f in VENUE_FIELDS:
        if f in vr:
            getattr(snap, f)[ai, vi] = pd.to_numeric(vr[f], errors="coerce").to_numpy(dtype="float64",
                                                                                       na_value=np.nan)
    if pair_rows is not None and len(pair_rows):
        pr = pair_rows[pair_rows["asset"].isin(a_idx) & pair_rows["short_venue"].isin(v_idx)
                       & pair_rows["long_venue"].isin(v_idx)]
        pa = pr["asset"].map(a_idx).to_numpy(dtype="int64")
        ps = pr["short_venue"].map(v_idx).to_numpy(dtype="int64")
        pl = pr["long_venue"].map(v_idx).to_numpy(dtype="int64")
        for f in PAIR_FIELDS:
            if f in pr:
                getattr(snap, f)[pa, ps, pl] = pd.to_numeric(pr[f], errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan)
    if asset_rows is not None and len(asset_rows):
        ar = asset_rows[asset_rows["asset"].isin(a_idx)]
        aa = ar["asset"].map(a_idx).to_numpy(dtype="int64")
        for f in ASSET_FIELDS:
            if f in ar:
                target = getattr(snap, f)
                if target.dtype == bool:
                    target[aa] = ar[f].fillna(False).to_numpy(dtype=bool)
                else:
                    target[aa] = pd.to_numeric(ar[f], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return snap.replace(drawdown=float(drawdown))
