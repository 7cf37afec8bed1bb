"""Funding-only data trades (issue 11 item 5): after 2026-03-07 the bundled data has funding but no candles, open
interest or book, so every plan there stands on the data fallbacks of ``fundarb_core.strategy.fallbacks``.

Everything here runs on real bundled funding rows only (a week of ``funding.parquet``; the other tables absent):
the plan a funding-only snapshot gives (sized, flat slippage, ``L_min``, the fallbacks named), the old rejection
with the fallbacks switched off, a backtest that opens positions and reports its assumptions, the paper fills at
the fallback price and slippage, and ``fundarb backtest --data DIR`` on such a directory.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.backtest.assumptions import assumptions_block
from fundarb_core.backtest.engine import BacktestConfig, BacktestRun, run_backtest
from fundarb_core.backtest.report import markdown, summarise
from fundarb_core.simulation.paper_venue import PaperVenue
from fundarb_core.sources.replay import BUNDLED_DATA_DIR
from fundarb_core.storage.market_view import WarehouseMarketView
from fundarb_core.strategy import KeeperConfig, Snapshot, plan_cycle
from fundarb_core.strategy.config import FALLBACKS
from fundarb_core.strategy.expected_spread import PredictorParams
from fundarb_pipelines.cli import main
from tests.conftest import real_db
from tests.keeper_support import snapshot_at

WINDOW = (pd.Timestamp("2026-03-01", tz="UTC"), pd.Timestamp("2026-03-20", tz="UTC"))
AS_OF = pd.Timestamp("2026-03-18 12:00")
CFG = KeeperConfig()
FLAT = CFG.fallback_slippage_bps * 1e-4


def _funding_window(lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    f = pd.read_parquet(BUNDLED_DATA_DIR / "market" / "funding.parquet")
    return f[(f.ts >= lo) & (f.ts < hi)].reset_index(drop=True)


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    """A warehouse built from a real week of funding rows alone (the other raw tables empty)."""
    c = real_db(tmp_path_factory.mktemp("funding_only"), {"funding_rates": _funding_window(*WINDOW)})
    yield c
    c.close()


@pytest.fixture(scope="module")
def snap(conn: duckdb.DuckDBPyConnection) -> Snapshot:
    return snapshot_at(conn, AS_OF, config=CFG)


@pytest.fixture(scope="module")
def run(conn: duckdb.DuckDBPyConnection) -> BacktestRun:
    """The default keeper's rule with a quick predictor (one of the search grid's) and a long horizon, so two
    days of funding-only data see entries."""
    return run_backtest(conn, BacktestConfig(start="2026-03-17", end="2026-03-19", strategy="keeper",
                                             walk_forward=False, predictor=PredictorParams((24, 168), 0.0),
                                             keeper=replace(CFG, holding_hours=720.0, entry_margin=0.0)))


def test_a_funding_only_snapshot_has_rates_and_funding_marks_only(snap: Snapshot) -> None:
    listed = ~np.isnan(snap.rate_per_hour)
    assert listed.sum() > 20
    for field in ("mark_price", "oi_usd", "depth_usd", "volume_usd_24h", "sigma_daily"):
        assert np.isnan(getattr(snap, field)).all(), field
    assert np.isnan(snap.basis_bp).all()
    marks = np.isfinite(snap.funding_mark_price)
    assert marks.any() and (marks <= listed).all()  # Binance's funding rows carry a mark price, the others none
    assert set(np.asarray(snap.venues)[marks.any(axis=0)]) == {"binance"}


def test_a_plan_on_funding_only_data_is_sized_costs_the_flat_slippage_and_uses_l_min(snap: Snapshot) -> None:
    res = plan_cycle(snap, (), CFG)
    plans = res.plans
    ok = plans[plans.valid]
    assert len(ok) >= 3 and res.action.kind == "enter"
    # size: the balance cap at L_min (min(balance) × 0.9 × 1), no OI / volume cap evaluated
    assert (ok.leverage == CFG.leverage_min).all()
    assert ok.size_usd.to_numpy() == pytest.approx(np.full(len(ok), 10_000.0 * 0.9 * CFG.leverage_min))
    assert (ok.binding_constraint.astype(str) == "balance").all()
    # slippage: the flat 5 bp per fill, four fills (both legs in and out)
    assert ok.expected_slippage.to_numpy() == pytest.approx(np.full(len(ok), FLAT))
    assert ok.slippage_usd.to_numpy() == pytest.approx(4 * FLAT * ok.size_usd.to_numpy())
    assert ok.total_costs_usd.to_numpy() == pytest.approx(
        (ok.entry_fees_usd + ok.exit_fees_usd + ok.slippage_usd).to_numpy())
    for label in ok.fallbacks.astype(str):
        used = set(label.split(","))
        assert {"slippage", "size_caps", "leverage", "basis"} <= used
        assert used & {"price_funding_mark", "price_other_venue"}  # no bar or book anywhere: a price fallback
    taken = res.action.plan
    assert taken is not None and taken.details["fallbacks"] == plans.loc[
        (plans.asset == taken.asset) & (plans.short_venue == taken.short_venue)
        & (plans.long_venue == taken.long_venue), "fallbacks"].astype(str).iloc[0]


def test_with_the_fallbacks_switched_off_the_same_snapshot_rejects_with_the_old_reasons(snap: Snapshot) -> None:
    base = plan_cycle(snap, (), CFG).plans
    strict = plan_cycle(snap, (), replace(CFG, fallbacks=frozenset())).plans
    assert len(strict) == len(base) and not strict.valid.any()
    assert set(strict.reason.astype(str)) == {"no_liquidity_data"}  # the reason before fallbacks existed
    assert (strict.fallbacks.astype(str) == "").all()
    # each switched off alone rejects with its own reason
    price = frozenset({"price_funding_mark", "price_other_venue"})
    for off, reason in ((frozenset({"size_caps"}), "no_size_caps"), (frozenset({"leverage"}), "no_sigma"),
                        (price, "no_price"), (frozenset({"basis"}), "basis_unknown")):
        plans = plan_cycle(snap, (), replace(CFG, fallbacks=frozenset(FALLBACKS) - off)).plans
        assert set(plans.loc[base.valid.to_numpy(), "reason"].astype(str)) == {reason}, off


def test_a_backtest_after_march_7_opens_positions_and_reports_its_assumptions(run: BacktestRun) -> None:
    assert len(run.positions) >= 1 and run.equity.iloc[-1] != run.capital_usd
    a = run.assumptions
    assert a["plans"] == len(run.positions) and a["fills"] == len(run.fills) > 0
    for name in ("slippage", "size_caps", "leverage", "basis"):  # every plan stood on these
        assert a[f"plans.{name}"] == a["plans"], name
    assert a["fills.slippage"] == a["fills"]
    assert a["fills.price_funding_mark"] == a["fills"]  # the only prices are Binance's funding marks
    assert 0 < a["fills.price_other_venue"] < a["fills"]  # … borrowed by the legs on other venues
    summary = summarise(run.view())
    assert summary["assumptions"] == a
    block = assumptions_block(summary)
    assert block[0] == f"assumptions — keeper, real fees: {a['plans']} plans taken, {a['fills']} fills"
    slip = next(line for line in block if line.startswith("  slippage:"))
    assert "5 bp per fill" in slip and f"{a['plans']} of {a['plans']} plans" in slip
    assert any(line.startswith("  leverage: L_min = 1") for line in block)
    md = markdown(summary)
    assert "Assumptions (data fallbacks)" in md and slip in md


def test_paper_fills_use_the_funding_mark_and_the_flat_slippage_the_plan_costs(
    run: BacktestRun, conn: duckdb.DuckDBPyConnection
) -> None:
    fills = run.fills[run.fills["purpose"] == "open"]
    assert len(fills) >= 2
    buy = fills["side"].astype(str).eq("buy").to_numpy()
    limit, price = fills["limit_price"].to_numpy(dtype="float64"), fills["price"].to_numpy(dtype="float64")
    # the limit sits at the touch; the fill moves by the flat slippage, as the plan's cost assumed
    assert price / limit == pytest.approx(np.where(buy, 1 + FLAT, 1 - FLAT), rel=1e-12)
    # and the touch is the half spread around the asset's latest Binance funding mark (≤ 24 h old)
    mid = np.where(buy, limit / (1 + 1e-4), limit / (1 - 1e-4))
    for (asset, ts), m in zip(fills[["asset", "ts"]].itertuples(index=False), mid, strict=True):
        mark = conn.execute("SELECT mark_price FROM funding_rates WHERE asset = ? AND mark_price IS NOT NULL AND "
                            "ts <= ? AND ts >= ? - INTERVAL 24 HOUR ORDER BY ts DESC, mark_price LIMIT 1",
                            [asset, ts, ts]).fetchall()
        assert mark and m == pytest.approx(mark[0][0], rel=1e-12), (asset, ts)


def test_the_paper_venues_price_fallbacks_switch_off_with_the_planners(conn: duckdb.DuckDBPyConnection) -> None:
    """One price rule for plan and fill: Binance is priced by its own funding mark, Bybit by Binance's; with a
    fallback off the venue has no price there (an order would be rejected ``no_price``), as the plan is."""
    def book(cfg: KeeperConfig, venue: str) -> object:
        pv = PaperVenue(WarehouseMarketView(conn, cfg), cfg, now=AS_OF.to_pydatetime())
        return pv.order_book_top(venue, "ARB")

    on_binance, on_bybit = book(CFG, "binance"), book(CFG, "bybit")
    assert on_binance is not None and on_binance.source == "funding_mark"
    assert on_bybit is not None and on_bybit.source == "cross_venue_funding_mark" and on_bybit.mid == on_binance.mid
    no_other = replace(CFG, fallbacks=frozenset(FALLBACKS) - {"price_other_venue"})
    assert book(no_other, "binance") is not None and book(no_other, "bybit") is None
    no_mark = replace(CFG, fallbacks=frozenset(FALLBACKS) - {"price_funding_mark"})
    assert book(no_mark, "binance") is None and book(no_mark, "bybit") is None


def test_cli_backtests_a_directory_holding_only_funding_parquet(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    flat = tmp_path / "funding_only"  # DIR/funding.parquet itself …
    flat.mkdir()
    rows = _funding_window(pd.Timestamp("2026-03-15", tz="UTC"), pd.Timestamp("2026-03-20", tz="UTC"))
    rows.to_parquet(flat / "funding.parquet", index=False)
    rc = main(["backtest", "--data", str(flat), "--start", "2026-03-18", "--end", "2026-03-19", "--strategy",
               "keeper_spec", "--no-mlflow"])  # the spec's eager rule trades on three days of history
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.splitlines()
    label = "assumptions — keeper (spec rule), real fees: "
    assert lines[0].split()[:3] == ["run", "net_apr", "net_pnl"] and lines[1].startswith("keeper (spec rule), real")
    head = next(i for i, line in enumerate(lines) if line.startswith(label))
    assert int(lines[head].split(": ")[1].split()[0]) >= 1  # plans taken
    assert any(line.startswith("  slippage: 5 bp per fill") for line in lines[head:])

    canonical = tmp_path / "canonical" / "market"  # … or DIR/market/funding.parquet (the canonical layout)
    canonical.mkdir(parents=True)
    rows.drop(columns=["interval_hours"]).to_parquet(canonical / "funding.parquet", index=False)
    rc = main(["backtest", "--data", str(canonical.parent), "--start", "2026-03-18", "--end", "2026-03-19",
               "--no-mlflow"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 3 and err[-1] == (f"fundarb backtest: {canonical / 'funding.parquet'}: missing columns "
                                   "['interval_hours']")
