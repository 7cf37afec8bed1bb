"""The strategy backtest: history replayed hour by hour through the keeper's own cycle.

Why :func:`~fundarb_core.execution.cycle.run_cycle` itself and not a vectorised re-implementation: a backtest that
re-codes the rules in a simpler form measures the simpler form.  Here every hour runs the real cycle —
reconcile, single legs, health (reduce < 1.5, close < 1.2), snapshot, discovery, filters, σ-distance leverage,
sizing, costs, basis checks, break-even-aware switching, risk limits, at most one action — against
:class:`~fundarb_core.simulation.paper_venue.PaperExchange`, whose fill (touch ± √-impact, maker in / taker out) and
funding (every settlement paid to the position held at its instant) rules are the paper keeper's.  The only hooks
are where the market view comes from (a private replica of the data) and, for the reference rules (naive 24 h,
patient), which plan is taken (:mod:`fundarb_core.backtest.policies`); the patient rule's trailing means enter
through the forecasts hook, computed on the replica.

Integrity, by construction:

* the replica holds only the raw rows known at or before ``end`` (and from ``start − warmup``), and every SQL
  model is rebuilt on them: nothing after the backtest's end exists for it, so changing that data cannot change
  a result (the test alters it and checks);
* inside the period the cycle at ``t`` reads the SQL models as of ``t`` (their causality is the leakage test's)
  and forecasts made at ``t`` by models fitted before ``t`` (:mod:`fundarb_core.backtest.forecasts`);
* the run is deterministic: position and order ids derive from (asset, pair, time), the paper exchange draws no
  faults, and the environment's kill switch is ignored (a live switch must not silently change history).

Choices: capital is ``capital_per_venue_usd`` on each venue traded (the keeper's accounts are per venue); fee
regimes are flat maker = taker overrides on every venue; the equity curve is the venues' equity (wallets plus
unrealised P&L at the paper marks) after each hourly cycle, and a last point at ``end`` after paying the
settlements of the final hour.  Open positions are marked to market at the end, not closed (the oracle is not
forced flat either).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

import duckdb
import pandas as pd

from fundarb_core.backtest.assumptions import assumption_values, count_assumptions
from fundarb_core.backtest.horizon_inputs import horizon_inputs, month_config
from fundarb_core.backtest.parameter_search import ParameterChoice, choices_frame
from fundarb_core.backtest.report import LedgerView
from fundarb_core.execution.cycle import Chooser, CycleContext, run_cycle
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.reconcile import reconcile
from fundarb_core.execution.risk import RiskConfig
from fundarb_core.forecast.registry import ForecastSettings
from fundarb_core.simulation.paper_venue import PaperVenue
from fundarb_core.sql_macros import install_macros
from fundarb_core.sql_models import build_all
from fundarb_core.storage.ledger_store import DuckDBLedgerStore
from fundarb_core.storage.market_queries import KEEPER_TABLES
from fundarb_core.storage.market_view import WarehouseMarketView
from fundarb_core.storage.paper_store import DuckDBPaperStore
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.expected_spread import PredictorParams
from fundarb_core.times import to_naive_utc
from fundarb_core.venues import VENUES, FeeSchedule

Strategy = Literal["keeper", "keeper_forecast", "naive", "patient", "keeper_spec"]
STRATEGIES: tuple[Strategy, ...] = ("keeper", "keeper_forecast", "naive", "patient", "keeper_spec")
STRATEGY_LABELS = {"keeper": "keeper", "keeper_forecast": "keeper + forecasts", "naive": "naive 24h",
                   "patient": "patient 336h", "keeper_spec": "keeper (spec rule)"}
HORIZON_STRATEGIES = frozenset({"keeper", "keeper_forecast"})
"""Strategies that decide with the horizon rule on the expected spread, with parameters chosen walk-forward."""

BAR_CLOSE_SQL = "ts + to_minutes(bar_minutes(timeframe))"
REPLICA_TABLES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "funding_rates": ("ts", "venue, venue_symbol"), "open_interest": ("ts", "venue, venue_symbol"),
    "orderbook_depth": ("ts", "venue, venue_symbol"), "candles": (BAR_CLOSE_SQL, "venue, venue_symbol, timeframe"),
})
"""The raw tables, each with the expression that says when a row was known (a bar at its close, as the
``stg_candles`` model says) and the rest of its key: rows are copied in that total order, so every run of the
same backtest inserts them identically."""



@dataclass(frozen=True)
class BacktestConfig:
    """One backtest: period ``[start, end)`` by whole hours, universe, capital, costs and strategy."""

    start: pd.Timestamp
    end: pd.Timestamp
    strategy: Strategy = "keeper"
    capital_per_venue_usd: float = 10_000.0
    venues: tuple[str, ...] | None = None
    assets: tuple[str, ...] | None = None
    fee_bps: float | None = None  # None = each venue's real schedule; else maker = taker = fee_bps on every venue
    keeper: KeeperConfig = field(default_factory=KeeperConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    forecast_model: str = "lightgbm"
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    warmup_hours: int = 24 * 40  # σ baseline (720 h of 168 h σ) and the 168 h pair statistics need ~5 weeks
    half_spread_bps: float = 1.0
    record_decisions: bool = False  # the per-candidate audit rows of every hour (slow; the report does not use them)
    walk_forward: bool = True  # horizon strategies: parameters chosen before each month (parameter_search)
    predictor: PredictorParams = field(default_factory=PredictorParams)  # without walk_forward

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_naive_utc(self.start).floor("h"))
        object.__setattr__(self, "end", to_naive_utc(self.end).floor("h"))
        if self.end <= self.start:
            raise ValueError(f"backtest end {self.end} must be after start {self.start}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")

    @property
    def hours(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, self.end, freq="h", inclusive="left")

    def keeper_config(self, venues: tuple[str, ...] = ()) -> KeeperConfig:
        """The keeper's config with the fee regime applied to every venue (registry and traded ones), and the
        strategy's decision rule (``keeper_spec``: the spec's; the others run the keeper's default)."""
        cfg = replace(self.keeper, decision_rule="spec") if self.strategy == "keeper_spec" else self.keeper
        if self.fee_bps is None:
            return cfg
        fee = FeeSchedule(maker=self.fee_bps * 1e-4, taker=self.fee_bps * 1e-4)
        return replace(cfg, fee_overrides=MappingProxyType({v: fee for v in sorted({*VENUES, *venues})}))

    def label(self) -> str:
        fees = "real fees" if self.fee_bps is None else f"{self.fee_bps:g} bp"
        return f"{STRATEGY_LABELS[self.strategy]}, {fees}"


@dataclass
class BacktestRun:
    """What one backtest did: the equity curve and the keeper's ledger, as frames, plus run facts."""

    config: BacktestConfig
    venues: tuple[str, ...]
    capital_usd: float
    equity: pd.Series  # venues' total equity (USD) after each cycle, and at ``end``
    positions: pd.DataFrame  # ledger_positions
    fills: pd.DataFrame  # ledger_fills joined with their order's side, limit price and purpose
    funding: pd.DataFrame  # ledger_funding
    final_marks: pd.DataFrame  # venue, asset, qty, mark at the end
    actions: pd.DataFrame  # hour, action, reason, position_id, closed_position_id
    seconds: float
    assets: tuple[str, ...] = ()
    phases: dict[str, float] = field(default_factory=dict)  # seconds: replica, market read, hourly loop
    parameters: pd.DataFrame = field(default_factory=pd.DataFrame)  # the walk-forward choice of each month
    assumptions: dict[str, int] = field(default_factory=dict)  # data fallbacks used (backtest.assumptions)

    def view(self) -> LedgerView:
        """The run as the report reads it."""
        return LedgerView(capital_usd=self.capital_usd, equity=self.equity, positions=self.positions,
                          fills=self.fills, funding=self.funding, final_marks=self.final_marks,
                          half_spread_bps=self.config.half_spread_bps, label=self.config.label(),
                          assumptions=self.assumptions,
                          assumption_values=assumption_values(self.config.keeper_config(self.venues)))


def market_replica(conn: duckdb.DuckDBPyConnection, start: pd.Timestamp, end: pd.Timestamp,
                   warmup_hours: int, models: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB with the raw rows known in ``[start − warmup, end]`` and the SQL models rebuilt
    on them (every model, or those ``models`` need).

    Private so the backtest's ledger and paper accounts never touch the user's database.  Rebuilt from raw rows
    known by ``end`` so the future does not exist for the simulation — not even as floating-point noise: a
    rolling window's summation order depends on the rows after it, and a forecaster fitted on features that
    differ in the last bit can differ in its splits.  Rows are inserted in time order so DuckDB's zone maps
    prune the keeper's as-of scans.  One DuckDB thread: a parallel aggregate adds its partial sums in whatever
    order the threads finish, and two runs on a busy machine differed by cents before this (7 % slower).
    """
    mem = duckdb.connect(":memory:", config={"threads": 1})
    src = conn.cursor()
    install_macros(src)
    lo = (start - pd.Timedelta(hours=warmup_hours)).to_pydatetime()
    hi = end.to_pydatetime()
    have = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    missing = [t for t in REPLICA_TABLES if t not in have]
    if missing:
        raise ValueError(f"the database lacks the raw tables {', '.join(missing)}: ingest the data first")
    for table, (known, key) in REPLICA_TABLES.items():
        arrow = src.sql(f"SELECT * FROM {table} WHERE {known} >= $lo AND {known} <= $hi ORDER BY {known}, {key}",
                        params={"lo": lo, "hi": hi}).to_arrow_table()
        mem.register("_src", arrow)
        mem.execute(f"CREATE TABLE {table} AS SELECT * FROM _src")
        mem.unregister("_src")
    build_all(mem, targets=models)
    return mem


def traded_venues(mem: duckdb.DuckDBPyConnection, start: pd.Timestamp, end: pd.Timestamp) -> tuple[str, ...]:
    """Venues with a funding settlement in the period, in registry order."""
    rows = mem.execute("SELECT DISTINCT venue FROM funding_rates WHERE ts >= ? AND ts <= ?",
                       [start.to_pydatetime(), end.to_pydatetime()]).fetchall()
    found = {r[0] for r in rows}
    return tuple([v for v in VENUES if v in found] + sorted(found - set(VENUES)))


def run_backtest(
    conn: duckdb.DuckDBPyConnection, config: BacktestConfig, forecasts: pd.DataFrame | None = None,
    progress: Callable[[pd.Timestamp, int, int], None] | None = None, persistent: bool = False,
) -> BacktestRun:
    """Replay ``config``'s period hour by hour through :func:`run_cycle` (module doc).

    ``forecasts`` (columns ``hour``, ``asset``, ``short_venue``, ``long_venue``, ``forecast_spread_per_hour``) are
    required for ``keeper_forecast`` and must be out-of-sample (:func:`~fundarb_core.backtest.forecasts.
    walk_forward_forecasts`); the cycle at ``t`` reads the rows with ``hour == t`` only.

    The default is the fast path: the market preloaded once as a tape, the ledger and the paper venue in memory.
    ``persistent=True`` runs the paper/live trading path instead — the market read from the replica at every
    cycle, the ledger and the paper accounts written to DuckDB at every change — with the same cycle, rules and
    results (the equivalence test checks it)."""
    t_start = time.perf_counter()
    if config.strategy == "keeper_forecast" and forecasts is None:
        raise ValueError("strategy keeper_forecast needs walk-forward forecasts (walk_forward_forecasts)")
    mem = market_replica(conn, config.start, config.end, config.warmup_hours, models=KEEPER_TABLES)
    phases = {"replica": time.perf_counter() - t_start}
    venues = config.venues or traded_venues(mem, config.start, config.end)
    kcfg = config.keeper_config(venues)
    if config.strategy == "patient":  # the patient rule plans on its own causal trailing means (policies module)
        from fundarb_core.backtest.policies import patient_config, trailing_mean_forecasts
        kcfg = patient_config(kcfg)
        forecasts = trailing_mean_forecasts(mem, config.start, config.end, assets=config.assets)
    risk = replace(config.risk, kill_switch_env="")  # module doc: the live kill switch does not rewrite history
    capital = {v: float(config.capital_per_venue_usd) for v in venues}
    market = WarehouseMarketView(mem, kcfg, read_ahead_hours=168 if persistent else 0)
    if not persistent:  # the replica never changes: read it once (the persistent path reads a week at a time)
        market.preload(config.start, config.end)
    phases["market_read"] = time.perf_counter() - t_start - phases["replica"]
    exchange = PaperVenue(market, kcfg, initial_balances=capital, now=config.start.to_pydatetime(),
                          half_spread_bps=config.half_spread_bps,
                          store=DuckDBPaperStore(mem) if persistent else None)
    ledger = Ledger(DuckDBLedgerStore(mem) if persistent else None)
    chooser: Chooser | None = None
    if config.strategy == "naive":
        from fundarb_core.backtest.policies import naive_trailing_choice
        chooser = naive_trailing_choice
    elif config.strategy == "patient":
        from fundarb_core.backtest.policies import patient_choice
        chooser = patient_choice
    ctx = CycleContext(market, exchange, ledger, kcfg, risk, venues=venues, assets=config.assets,
                       baseline_forecast="mean_24h" if config.strategy == "naive" else "none", chooser=chooser,
                       record_decisions=config.record_decisions, full_performance=False)
    by_hour: dict[pd.Timestamp, pd.DataFrame] = {}
    schedule: dict[pd.Timestamp, KeeperConfig] = {}
    choices: list[ParameterChoice] = []
    if config.strategy in HORIZON_STRATEGIES:
        t_params = time.perf_counter()
        choices, expected = horizon_inputs(conn, config, kcfg, forecasts)
        schedule = {c.month: month_config(kcfg, c, config.strategy) for c in choices}
        by_hour = {pd.Timestamp(h): g.drop(columns="hour") for h, g in expected.groupby("hour", sort=True)}
        phases["parameters"] = time.perf_counter() - t_params
    elif config.strategy == "patient" and forecasts is not None and len(forecasts):
        fc = forecasts.assign(hour=pd.to_datetime(forecasts["hour"]))
        by_hour = {pd.Timestamp(h): g.drop(columns="hour") for h, g in fc.groupby("hour", sort=True)}

    hours = config.hours
    t_loop = time.perf_counter()
    equity: list[float] = []
    actions: list[dict[str, object]] = []
    taken: list[object] = []  # the fallbacks label of every plan the cycle opened a position on
    for i, t in enumerate(hours):
        if t in schedule:
            ctx.config = schedule[t]
        rep = run_cycle(ctx, t.to_pydatetime(), forecasts=by_hour.get(t))
        equity.append(float(rep.metrics["equity_usd"]))
        for done in rep.taken:
            actions.append({"hour": t, "action": done["kind"], "reason": done["reason"],
                            "position_id": done["position_id"], "closed_position_id": done["closed_position_id"],
                            "events": ""})
            if done["position_id"]:
                taken.append(done.get("fallbacks", ""))
        if rep.events:
            actions.append({"hour": t, "action": "events", "reason": rep.reason, "position_id": None,
                            "closed_position_id": None, "events": "; ".join(rep.events)})
        if progress is not None:
            progress(t, i + 1, len(hours))
    phases["loop"] = time.perf_counter() - t_loop
    exchange.advance_to(config.end.to_pydatetime())  # the settlements of the last hour …
    reconcile(ledger, exchange, config.end.to_pydatetime())  # … recorded in the ledger like any other
    balances = exchange.balances()
    equity.append(float(sum(b.equity_usd for b in balances.values())))
    index = hours.append(pd.DatetimeIndex([config.end]))
    marks = pd.DataFrame([{"venue": p.venue, "asset": p.asset, "qty": p.qty, "mark": p.mark_price}
                          for v in sorted(balances) for p in exchange.positions(v)],
                         columns=["venue", "asset", "qty", "mark"])
    run = BacktestRun(
        config=config, venues=tuple(venues), capital_usd=float(sum(capital.values())),
        equity=pd.Series(equity, index=index, name="equity_usd"),
        positions=ledger.positions_frame(), fills=ledger.fills_frame(), funding=ledger.funding_frame(),
        final_marks=marks,
        actions=pd.DataFrame(actions, columns=["hour", "action", "reason", "position_id", "closed_position_id",
                                               "events"]),
        seconds=time.perf_counter() - t_start, phases=phases, parameters=choices_frame(choices),
        assumptions=count_assumptions(taken, exchange.fills, exchange.fallback_fills),
        assets=tuple(sorted(mem.execute("SELECT DISTINCT asset FROM stg_funding_hourly").df()["asset"].astype(str))),
    )
    mem.close()
    return run
