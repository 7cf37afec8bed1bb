"""Every number of the keeper specification (``shared/specs/keeper.md`` §1–§7), in one frozen object.

Units, stated once:

* funding rates and spreads are **fractions of notional per hour** inside the keeper (converted from each
  venue's own interval with :func:`fundarb_core.funding.per_hour`); APR = per hour × 8760;
* the spec's ``min_spread`` (0.0001) is a rate **per 8-hour unit** (0.01 % per 8 h, the classic CEX funding
  interval) and is converted once, by :attr:`KeeperConfig.min_spread_per_hour`, to 1.25e-5 per hour
  (≈ 10.95 % APR);
* money is USD, sizes are the notional of **one leg** (the two legs carry equal notional), costs are USD or
  fractions of that notional, basis is in bp of price, times are hours unless a name says otherwise.

Choices the spec leaves open (each repeated where it is used):

* ``holding_hours`` = 168 h.  The expected holding horizon sets the net yield's ``holding_days`` (7) and the
  σ-distance horizon adjustment of K (× sqrt(168 / 24)).  With it the break-even rule "reject when
  break-even > 168 h and expected net ≤ 0" is self-consistent (net over the horizon ≤ 0 ⇔ break-even ≥ 168 h).
* ``base_impact`` = 0.01: the square-root impact law ``base_impact × sqrt(size / liquidity)`` then costs 1 %
  to trade the whole liquidity measure, 10 bp for 1 % of it, 1 bp for 0.01 %.  This is the Almgren/Torre
  coefficient Y·σ_daily (Y ≈ 0.3–0.5, σ_daily ≈ 2–5 %) against open interest or top-of-book depth, which are
  both smaller than daily volume, rounded to a conservative figure.
* ``maintenance_margin`` = 0.5 % for the liquidation distance ``1 / L − mm`` (a price move against one leg,
  as a fraction of price): the lowest tier of the supported venues.
* Data fallbacks (``fallbacks``, :mod:`fundarb_core.strategy.fallbacks`): what a plan assumes where a leg has no
  liquidity measure, no σ, no price or no basis (funding-only histories).  All are on by default, because most
  public history is funding-only and a keeper that cannot trade on it cannot be tested on it; each one can be
  switched off, and the plan is then rejected with the reason named there.
* ``fallback_slippage_bps`` = 5 bp per fill (one side of one leg, so 20 bp of notional for a round trip of both
  legs), chosen from the √-impact law itself, not from any backtest: it is ``base_impact × sqrt(size /
  liquidity)`` for an order of 0.25 % of the liquidity measure (a 10,000 USD order against 4 M USD of open
  interest), the size of the smaller markets listed on two venues; majors cost less, the thinnest markets
  the caps allow (5 % of OI) up to 22 bp.  The paper venue's 1 bp half spread is charged on top, as everywhere.
* ``fallback_price_max_age_hours`` = 24 h: the funding rows' mark is the latest at or before the instant while it
  is at most three 8 h settlements old (a missed settlement must not blank the price; older, the feed stopped).
* Score normalisation scales (``score_*``) are fixed, not cross-sectional, so a score means the same thing in
  every cycle (the switching rule compares plans across cycles) and each plan's score depends on that plan
  only (so the vectorised planner and the per-pair reference agree exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType

from fundarb_core.sql_macros import MAX_RATE_AGE_INTERVALS
from fundarb_core.venues import VENUES, FeeSchedule

MIN_SPREAD_UNIT_HOURS = 8.0

FALLBACKS: tuple[str, ...] = (
    "slippage", "size_caps", "leverage", "price_funding_mark", "price_other_venue", "basis",
)
"""The data fallbacks a plan or a fill may use (:mod:`fundarb_core.strategy.fallbacks` says what each assumes)."""
"""The time unit of :attr:`KeeperConfig.min_spread` (spec §4: "interval-normalised 8h unit")."""


def _no_overrides() -> MappingProxyType[str, FeeSchedule]:
    return MappingProxyType({})


SPEC_DEFAULT_FEES = FeeSchedule(maker=0.0002, taker=0.0005)
"""The spec's default per venue (maker 0.02 %, taker 0.05 %: Hyperliquid, Lighter) for venues the registry lacks."""


@dataclass(frozen=True)
class KeeperConfig:
    """The keeper's parameters; every default is the spec's number or a documented choice."""

    # §4 discovery and filters
    min_spread: float = 0.0001  # per 8 h (MIN_SPREAD_UNIT_HOURS); use min_spread_per_hour
    blacklist: frozenset[str] = frozenset({"NVDA"})
    cooldown_failures: int = 5  # failed attempts that trigger the cooldown
    cooldown_minutes: float = 30.0
    min_market_quality: float = 0.5  # success share of recent executions on a market (1 when none)
    auto_blacklist_failures: int = 3  # … and auto-blacklist only with at least this many failures
    max_abs_rate_per_hour: float = 0.005  # an absurd rate (regime_labels' anomaly threshold): halt
    halt_on_anomaly: bool = True  # §7 automatic pause on anomalies (regime_labels.anomaly)
    halt_on_liquidity_stress: bool = True  # §7 regime = stress halts entries

    # §2 economics
    holding_hours: float = 168.0
    base_impact: float = 0.01
    default_fees: FeeSchedule = SPEC_DEFAULT_FEES
    fee_overrides: MappingProxyType[str, FeeSchedule] = field(default_factory=_no_overrides)
    max_break_even_hours: float = 168.0

    # §3 leverage
    leverage_min: float = 1.0
    leverage_max: float = 10.0
    k_base: float = 5.0
    high_vol_ratio: float = 1.5  # σ > 1.5 × baseline …
    k_high_vol_add: float = 1.0  # … adds 1.0 to K
    k_duration_reference_hours: float = 24.0  # K × sqrt(holding_hours / 24) when holding is longer
    slippage_k_threshold: float = 0.005  # expected slippage > 0.5 % …
    k_slippage_add: float = 0.5  # … adds 0.5
    low_win_rate: float = 0.5  # win rate < 50 % …
    k_low_win_rate_add: float = 1.0  # … adds 1.0
    maintenance_margin: float = 0.005

    # §3 sizing
    balance_fraction: float = 0.9
    max_position_size_usd: float = 10_000.0
    oi_fraction: float = 0.05
    volume_fraction: float = 0.05
    min_volume_usd: float = 100_000.0
    min_position_usd: float = 5.0
    default_balance_usd: float = 10_000.0  # per venue, when the caller gives no balances
    max_drawdown: float = 0.25  # §7 drawdown scaling: size × max(0, 1 − drawdown / max_drawdown)

    # §5 basis
    basis_z_reject: float = -2.0
    basis_payback_max_hours: float = 48.0
    max_basis_risk_bps: float = 150.0
    basis_min_history: int = 24  # hours of basis history below which the fallback rule applies
    require_basis: bool = False  # reject plans whose basis is unknown (no price on a leg)

    # §6 health and switching
    health_reduce: float = 1.5
    health_close: float = 1.2
    health_target: float = 2.0
    health_reduce_fraction: float = 0.5
    switch_factor_profitable: float = 0.5
    switch_factor_unprofitable: float = 0.8
    # hysteresis: never switch a position younger than one 8 h interval (an 8 h venue pays only at settlement, so
    # leaving earlier forfeits the accrual; on the bundled data 1 h let the rule chase hourly moves)
    min_hold_hours_before_switch: float = 8.0

    # the decision rule (fundarb_core.strategy.horizon_rule / allocation): "horizon" decides entries, holds, exits
    # and switches on the expected spread over ``holding_hours`` and allocates the free collateral each cycle (the
    # default: the spec's rule loses money on the bundled data in every fee regime); "spec" is §6.3–§6.4 as
    # written (best score into five slots, break-even-aware switching, one action per cycle)
    decision_rule: str = "horizon"
    entry_margin: float = 0.5  # enter when E × H > round trip × (1 + margin): room for the predictor's error
    predictor: str = "trailing_blend"  # what the cycle's expected spreads come from (recorded with decisions)

    # §7 portfolio
    max_positions: int = 5
    max_gross_exposure_usd: float = 100_000.0  # both legs of every position
    # a cycle executes at most this many exits / switches / entries: an allocation may rebalance several
    # positions at once, while a bad snapshot can still do only bounded harm (the spec's rule chooses one)
    max_actions_per_cycle: int = 6
    max_cycle_entry_usd: float = 30_000.0  # notional (one leg) the allocation may open in one cycle

    # §4 score
    score_weights: tuple[float, float, float, float] = (0.3, 0.3, 0.2, 0.2)
    score_rate_ref_apr: float = 0.10  # rate term = apr / (apr + 10 %): 0.5 at 10 % APR
    score_liquidity_lo_usd: float = 1e5  # liquidity term = log10(min OI) mapped from [1e5, 1e9] to [0, 1]
    score_liquidity_hi_usd: float = 1e9
    score_break_even_ref_hours: float = 24.0  # break-even term = 24 / (24 + BE): 0.5 at one day

    # freshness of the market reads (fundarb_core.storage.market_queries)
    max_rate_age_intervals: float = MAX_RATE_AGE_INTERVALS  # the staleness rule of spread_panel (sql_macros)
    max_market_age_hours: float = 2.0  # OI, depth, volume, basis, pair stats
    max_sigma_age_hours: float = 48.0  # a 168 h σ moves slowly; a two-day-old estimate is still usable
    sigma_baseline_hours: float = 720.0  # σ baseline = median σ_daily over the trailing 30 days

    # data fallbacks (fundarb_core.strategy.fallbacks): where a leg lacks a measure, assume instead of rejecting
    fallbacks: frozenset[str] = frozenset(FALLBACKS)  # those in use; one left out rejects (or, for prices, fails)
    fallback_slippage_bps: float = 5.0  # per fill, where a leg has no liquidity measure (module doc)
    fallback_price_max_age_hours: float = 24.0  # the funding rows' mark as a price, at most this old

    def __post_init__(self) -> None:
        unknown = sorted(set(self.fallbacks) - set(FALLBACKS))
        if unknown:
            raise ValueError(f"KeeperConfig.fallbacks: unknown fallback(s) {', '.join(unknown)}; expected a subset "
                             f"of {', '.join(FALLBACKS)}")

    @property
    def min_spread_per_hour(self) -> float:
        """``min_spread`` converted once from its 8-hour unit to per hour (0.0001 / 8 = 1.25e-5)."""
        return self.min_spread / MIN_SPREAD_UNIT_HOURS

    @property
    def duration_scale(self) -> float:
        """K's horizon factor sqrt(holding / 24 h), never below 1 (a short holding does not lower K)."""
        return max(1.0, math.sqrt(self.holding_hours / self.k_duration_reference_hours))

    def fees(self, venue: str) -> FeeSchedule:
        """A venue's fee schedule: the caller's override, else the registry's, else the spec default."""
        if venue in self.fee_overrides:
            return self.fee_overrides[venue]
        if venue in VENUES:
            return VENUES[venue].fees
        return self.default_fees
