"""The keeper's execution half on real bundled data: client ids, the paper venue (idempotency, fills at the book
with the registry's fees, funding from real settlements), the ledger and its reconciliation.

The DuckDB is in memory, built from the bundled rows of a few assets (ingest + every SQL model, a few seconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fundarb_core.domain.client_ids import client_id_str, client_order_id, is_valid_client_id
from fundarb_core.execution.ledger import Ledger
from fundarb_core.execution.performance import payment_metrics
from fundarb_core.execution.reconcile import reconcile
from fundarb_core.execution.venue import ExchangeAdapter
from fundarb_core.ingest import ingest_table
from fundarb_core.schema import LAYOUT_FILES, RAW_TABLES
from fundarb_core.simulation.paper_venue import PaperVenue
from fundarb_core.sources.replay import BUNDLED_DATA_DIR, ReplaySource
from fundarb_core.strategy.config import KeeperConfig
from fundarb_core.strategy.costs import sqrt_impact
from fundarb_core.venues import VENUES
from fundarb_pipelines.sql_models import build_all
from tests.conftest import window_tables, write_layout
from tests.keeper_support import cycle, duck_ledger, paper_venue

ASSETS = ("BTC", "ETH", "SOL")
VENUE_IDS = ("hyperliquid", "lighter", "binance", "bybit", "okx", "dydx")
T0 = pd.Timestamp("2026-01-10 00:00")
CFG = KeeperConfig(decision_rule="spec")  # the execution mechanics under the spec's one-action rule
_ALL = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def build_db(root: Path, lo: str = "2025-12-20", hi: str = "2026-03-06",
             assets: tuple[str, ...] = ASSETS) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the bundled real rows of ``assets`` in [lo, hi) and every SQL model."""
    bundled = {t: pd.read_parquet(BUNDLED_DATA_DIR / "market" / f"{f}.parquet") for t, f in LAYOUT_FILES.items()}
    source = ReplaySource(write_layout(root, window_tables(bundled, lo, hi)))
    conn = duckdb.connect(":memory:")
    for t in RAW_TABLES:
        ingest_table(conn, source, t, *_ALL, now=datetime(2026, 5, 1, tzinfo=UTC))
        conn.execute(f"DELETE FROM {t} WHERE asset NOT IN (SELECT unnest($a))", {"a": list(assets)})
    build_all(conn)
    return conn


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    conn = build_db(tmp_path_factory.mktemp("keeper_exec"))
    yield conn
    conn.close()


@pytest.fixture
def conn(market: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A fresh copy of the market (each test gets empty paper/ledger tables)."""
    c = duckdb.connect(":memory:")
    for (name,) in market.execute("SELECT table_name FROM duckdb_tables() WHERE NOT starts_with(table_name, "
                                  "'paper_') AND NOT starts_with(table_name, 'ledger_')").fetchall():
        frame = market.execute(f"SELECT * FROM {name}").df()
        c.register("_f", frame)
        c.execute(f"CREATE TABLE {name} AS SELECT * FROM _f")
        c.unregister("_f")
    yield c
    c.close()


def paper(conn: duckdb.DuckDBPyConnection, now: pd.Timestamp = T0, **kw: object) -> PaperVenue:
    return paper_venue(conn, CFG, initial_balances={v: 10_000.0 for v in VENUE_IDS}, now=now.to_pydatetime(),
                         **kw)  # type: ignore[arg-type]


def assert_ledger_balances(ledger: Ledger, exchange: PaperVenue) -> None:
    """The ledger's per-venue wallets (initial + realised − fees + funding from its own records) = the venue's."""
    mine, theirs = ledger.wallets(), {v: b.wallet_usd for v, b in exchange.balances().items()}
    for v in set(mine) | set(theirs):
        assert mine.get(v, 10_000.0) == pytest.approx(theirs.get(v, 10_000.0), rel=0, abs=1e-6), v


# ------------------------------------------------------------------------------------------ client ids


def test_client_ids_have_each_venues_format_and_are_deterministic() -> None:
    hl = client_order_id("hyperliquid", "BTC.hyperliquid.binance.20260110T000000", "short", 0)
    assert isinstance(hl, str) and re.fullmatch(r"0x[0-9a-f]{32}", hl)
    lt = client_order_id("lighter", "BTC.hyperliquid.lighter.20260110T000000", "long", 3)
    assert isinstance(lt, int) and 0 <= lt < 2**48 < 2**63
    dy = client_order_id("dydx", "p", "long", 0)
    assert isinstance(dy, int) and 0 <= dy < 2**32
    for v in ("binance", "bybit", "okx", "aster"):
        s = client_order_id(v, "BTC.bybit.okx.20260110T000000", "long", 4)
        assert isinstance(s, str) and len(s) <= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", s)
        assert re.fullmatch(r"[A-Za-z0-9]+", s)  # OKX's clOrdId is alphanumeric only
    for v in (*VENUES, "unknown-venue"):
        ids = {client_id_str(v, "pos", leg, a) for leg in ("short", "long") for a in range(6)}
        assert len(ids) == 12  # a new attempt or leg is a new id
        assert all(is_valid_client_id(v, i if v not in ("lighter", "dydx") else int(i)) for i in ids)
        assert client_id_str(v, "pos", "short", 2) == client_id_str(v, "pos", "short", 2)  # deterministic
    assert not is_valid_client_id("hyperliquid", "fa" + "0" * 30) and not is_valid_client_id("okx", "0x" + "a" * 40)
    with pytest.raises(ValueError):
        client_order_id("okx", "a|b", "short", 0)


# ------------------------------------------------------------------------------------------ paper venue


def test_same_client_id_opens_once(conn: duckdb.DuckDBPyConnection) -> None:
    ex = paper(conn)
    cid = client_id_str("hyperliquid", "p1", "short", 0)
    top = ex.order_book_top("hyperliquid", "BTC")
    assert top is not None
    first = ex.place_limit_order("hyperliquid", "BTC", "sell", 1_000.0, top.bid, cid)
    again = ex.place_limit_order("hyperliquid", "BTC", "sell", 1_000.0, top.bid, cid)
    assert first == again and first.status == "filled"
    (pos,) = ex.positions("hyperliquid")
    assert pos.qty == pytest.approx(-first.filled_qty)
    assert conn.execute("SELECT count(*) FROM paper_orders").fetchall()[0][0] == 1
    # a restarted process sees the same venue state and is still idempotent
    ex2 = paper_venue(conn, CFG)
    assert ex2.now == ex.now and ex2.fetch_order_by_client_id("hyperliquid", cid) == first
    ex2.place_limit_order("hyperliquid", "BTC", "sell", 1_000.0, top.bid, cid)
    assert ex2.positions("hyperliquid")[0].qty == pytest.approx(pos.qty)


def _liquidity(conn: duckdb.DuckDBPyConnection, venue: str, asset: str, at: pd.Timestamp) -> float:
    """Independent look-up of the √-impact liquidity (no book depth in this window: open interest, else 24 h
    volume)."""
    t = at.to_pydatetime()
    return float(conn.execute(
        "SELECT coalesce((SELECT arg_max(oi_usd, ts) FROM open_interest WHERE venue = $v AND asset = $a AND "
        "ts <= $t AND ts >= $t - INTERVAL 24 HOUR), (SELECT arg_max(volume_usd_24h, hour) FROM volatility "
        "WHERE venue = $v AND asset = $a AND hour <= $t AND hour >= $t - INTERVAL 24 HOUR AND volume_usd_24h > 0))",
        {"v": venue, "a": asset, "t": t}).fetchall()[0][0])


def test_paper_entry_fills_both_legs_at_the_book_with_registry_fees(conn: duckdb.DuckDBPyConnection) -> None:
    ex, ledger = paper(conn), duck_ledger(conn)
    report = cycle(conn, ex, CFG, T0, ledger=ledger, venues=VENUE_IDS)
    assert report.action == "enter" and report.position_id is not None
    pos = ledger.position(report.position_id)
    assert pos is not None and pos.status == "open"
    orders = ledger.store.query("SELECT * FROM ledger_orders WHERE position_id = ? ORDER BY leg DESC",
                          [report.position_id])
    assert list(orders["leg"]) == ["short", "long"] and (orders["status"] == "filled").all()
    for o in orders.itertuples():
        top = ex.order_book_top(o.venue, pos.asset)
        assert top is not None
        touch = top.bid if o.side == "sell" else top.ask
        assert o.price == pytest.approx(touch)  # sell at the bid, buy at the ask
        imp = float(sqrt_impact(o.filled_qty * touch, _liquidity(conn, o.venue, pos.asset, T0), CFG.base_impact))
        assert o.avg_price == pytest.approx(touch * (1 - imp) if o.side == "sell" else touch * (1 + imp), rel=1e-12)
        assert o.fee_usd == pytest.approx(o.filled_qty * o.avg_price * VENUES[o.venue].fees.maker, rel=1e-12)
        assert o.filled_qty * touch == pytest.approx(pos.size_usd, rel=1e-9)
    fills = ledger.store.query("SELECT * FROM ledger_fills WHERE position_id = ?", [report.position_id])
    assert len(fills) == 2 and fills["fee_usd"].sum() == pytest.approx(orders["fee_usd"].sum())
    decisions = ledger.store.query("SELECT * FROM cycle_decisions")
    assert decisions["taken"].sum() == 1 and (decisions["reason"] != "").all()
    assert_ledger_balances(ledger, ex)
    # exits pay the taker fee
    short = orders.iloc[0]
    top = ex.order_book_top(short.venue, pos.asset)
    assert top is not None
    out = ex.place_limit_order(short.venue, pos.asset, "buy", 1e9, top.ask, "fa" + "1" * 30, reduce_only=True)
    assert out.filled_qty == pytest.approx(short.filled_qty)  # capped at the position
    assert out.fee_usd == pytest.approx(out.filled_qty * out.avg_price * VENUES[short.venue].fees.taker)


def test_funding_accrues_from_real_settlements_with_the_right_sign(conn: duckdb.DuckDBPyConnection) -> None:
    ex = paper(conn)
    for venue, side in (("hyperliquid", "sell"), ("binance", "buy")):
        top = ex.order_book_top(venue, "BTC")
        assert top is not None
        ex.place_limit_order(venue, "BTC", side, 5_000.0, top.bid if side == "sell" else top.ask,
                             client_id_str(venue, "f", side, 0))
    qty = {p.venue: p.qty for v in ("hyperliquid", "binance") for p in ex.positions(v)}
    t1 = T0 + pd.Timedelta(hours=24)
    ex.advance_to(t1)
    pays = pd.DataFrame([p.__dict__ for p in ex.funding_payments()])
    rates = conn.execute(
        "SELECT * FROM (SELECT venue, date_trunc('minute', ts + INTERVAL 30 SECOND) AS ts, rate FROM funding_rates "
        "WHERE asset = 'BTC' AND ((venue = 'hyperliquid') OR (venue = 'binance' AND quote = 'USDT'))) "
        "WHERE ts > ? AND ts <= ?", [T0.to_pydatetime(), t1.to_pydatetime()]).df()
    for venue, n_expected in (("hyperliquid", 24), ("binance", 3)):
        mine = pays[pays.venue == venue].sort_values("ts")
        theirs = rates[rates.venue == venue].sort_values("ts")
        assert len(mine) == len(theirs) and len(mine) in (n_expected, n_expected - 1, n_expected + 1)
        np.testing.assert_allclose(mine.rate.to_numpy(), theirs.rate.to_numpy(), rtol=0)
        np.testing.assert_allclose(mine.amount_usd, -qty[venue] * mine.price * mine.rate, rtol=1e-12)
    short, long_ = pays[pays.venue == "hyperliquid"], pays[pays.venue == "binance"]
    # a short receives positive funding, a long pays it
    assert ((short.amount_usd > 0) == (short.rate > 0)).all() and ((long_.amount_usd < 0) == (long_.rate > 0)).all()
    assert (short.rate != 0).any() and (long_.rate != 0).any()
    wallet = ex.balances()["hyperliquid"].wallet_usd
    fee = conn.execute("SELECT fee_usd FROM paper_orders WHERE venue = 'hyperliquid'").fetchall()[0][0]
    assert wallet == pytest.approx(10_000.0 - fee + short.amount_usd.sum(), abs=1e-9)
    ex.advance_to(t1)  # no double accrual at the same clock
    assert len(ex.funding_payments()) == len(pays)


# ------------------------------------------------------------------------------------------ ledger


def test_reconcile_repairs_a_lost_ledger_write(conn: duckdb.DuckDBPyConnection) -> None:
    ex, ledger = paper(conn), duck_ledger(conn)
    ledger.ensure_accounts({v: 10_000.0 for v in VENUE_IDS})
    t = T0.to_pydatetime()
    ledger.add_position("BTC.hyperliquid.binance.x", {"asset": "BTC", "short_venue": "hyperliquid",
                                                      "long_venue": "binance", "size_usd": 2_000.0}, t)
    # 1. the intent was written, the order went out and filled, the result write was lost (crash)
    cid = client_id_str("hyperliquid", "BTC.hyperliquid.binance.x", "short", 0)
    top = ex.order_book_top("hyperliquid", "BTC")
    assert top is not None
    ledger.record_intent("hyperliquid", cid, "BTC.hyperliquid.binance.x", "BTC", "short", "open", 0, "sell",
                         2_000.0, top.bid, False, t)
    venue_order = ex.place_limit_order("hyperliquid", "BTC", "sell", 2_000.0, top.bid, cid)
    # 2. an intent whose order never reached the venue
    lost = client_id_str("binance", "BTC.hyperliquid.binance.x", "long", 0)
    ledger.record_intent("binance", lost, "BTC.hyperliquid.binance.x", "BTC", "long", "open", 0, "buy",
                         2_000.0, 1.0, False, t)
    # 3. an order the ledger never heard of (the intent write was lost too)
    top_b = ex.order_book_top("binance", "ETH")
    assert top_b is not None
    ex.place_limit_order("binance", "ETH", "buy", 500.0, top_b.ask, "fa" + "2" * 30)
    assert ledger.venue_qty() == {}
    rep = reconcile(ledger, ex, t)
    assert rep.fills_recorded == 1 and rep.not_received == 1 and rep.orphans_imported == 1 and not rep.mismatches
    assert ledger.order("hyperliquid", cid).status == "filled"  # type: ignore[index]
    assert ledger.order("binance", lost).status == "not_received"  # type: ignore[index]
    assert ledger.venue_qty()[("hyperliquid", "BTC")] == pytest.approx(-venue_order.filled_qty)
    assert ledger.position("orphan:binance:ETH").status == "orphan"  # type: ignore[union-attr]
    assert_ledger_balances(ledger, ex)
    # reconcile is idempotent, and the next cycle repairs the single leg / closes the orphan
    assert reconcile(ledger, ex, t).fills_recorded == 0
    cycle(conn, ex, CFG, T0 + pd.Timedelta(hours=1), ledger=ledger, venues=VENUE_IDS)
    assert ledger.position("orphan:binance:ETH").status == "closed"  # type: ignore[union-attr]
    assert ledger.position("BTC.hyperliquid.binance.x").status == "open"  # type: ignore[union-attr]
    assert_ledger_balances(ledger, ex)


def test_ledger_balances_equal_fills_fees_and_funding(conn: duckdb.DuckDBPyConnection) -> None:
    ex, ledger = paper(conn), duck_ledger(conn)
    for h in range(0, 72, 3):
        cycle(conn, ex, KeeperConfig(max_positions=2, decision_rule="spec"), T0 + pd.Timedelta(hours=h), ledger=ledger,
                  venues=VENUE_IDS)
    fills = ledger.store.query("SELECT count(*) AS n, sum(fee_usd) AS fees FROM ledger_fills")
    funding = ledger.store.query("SELECT count(*) AS n, sum(amount_usd) AS total FROM ledger_funding")
    assert fills.n[0] >= 4 and funding.n[0] > 20
    assert_ledger_balances(ledger, ex)
    # the venue's wallet is the sum of its pieces: initial + realised − fees + funding
    paid = ex.funding_payments()
    assert funding.total[0] == pytest.approx(sum(p.amount_usd for p in paid), abs=1e-9)
    perf = ledger.store.query("SELECT * FROM performance_snapshots ORDER BY ts")
    assert len(perf) == 24 and perf.active_positions.iloc[-1] >= 1 and perf.margin_deployed_usd.iloc[-1] > 0
    m = payment_metrics(np.array([2.0, -1.0, 3.0, -1.0]))
    assert m["win_rate"] == 0.5 and m["profit_factor"] == 2.5 and m["expectancy"] == 0.75
    assert m["avg_win"] == 2.5 and m["avg_loss"] == -1.0


def test_dry_run_records_decisions_without_orders(conn: duckdb.DuckDBPyConnection) -> None:
    ex, ledger = paper(conn), duck_ledger(conn)
    rep = cycle(conn, ex, CFG, T0, ledger=ledger, venues=VENUE_IDS, dry_run=True)
    assert rep.decisions > 0 and rep.action == "enter" and rep.position_id is None
    assert ledger.store.query("SELECT count(*) AS n FROM ledger_orders").n[0] == 0
    assert ex.all_orders() == []


def test_kill_switch_flattens(conn: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    ex, ledger = paper(conn), duck_ledger(conn)
    cycle(conn, ex, CFG, T0, ledger=ledger, venues=VENUE_IDS)
    assert ledger.positions(("open",))
    monkeypatch.setenv("FUNDARB_KILL_SWITCH", "1")
    rep = cycle(conn, ex, CFG, T0 + pd.Timedelta(hours=1), ledger=ledger, venues=VENUE_IDS)
    assert "kill_switch" in rep.paused and rep.action == "none"
    assert not ledger.positions() and all(not ex.positions(v) for v in VENUE_IDS)
    assert_ledger_balances(ledger, ex)


def test_health_actions_reduce_then_close(conn: duckdb.DuckDBPyConnection) -> None:
    ex, ledger = paper(conn), duck_ledger(conn)
    ex_small = ex
    cycle(conn, ex_small, CFG, T0, ledger=ledger, venues=VENUE_IDS)
    (pos,) = ledger.positions(("open",))
    bal = ex.balances()[pos.short_venue]
    qty = -ledger.leg_qty(pos.position_id)[pos.short_venue]
    mark = ex.mark_price(pos.short_venue, pos.asset)
    assert mark is not None

    def shock_to(hf: float) -> None:  # the short leg's price rises until the venue's health is ``hf``
        # equity = wallet + qty × (avg − p) ;  maintenance = qty × p × mm  →  solve equity = hf × maintenance
        avg = ex.positions(pos.short_venue)[0].avg_price
        q = abs(ex.positions(pos.short_venue)[0].qty)
        p = (bal.wallet_usd + q * avg) / (q + hf * q * CFG.maintenance_margin)
        ex.price_overrides[(pos.short_venue, pos.asset)] = p

    assert qty > 0
    shock_to(1.4)
    assert ex.balances()[pos.short_venue].health_factor == pytest.approx(1.4)
    cycle(conn, ex, CFG, T0 + pd.Timedelta(hours=1), ledger=ledger, venues=VENUE_IDS, plan=False)
    after = ledger.position(pos.position_id)
    assert after is not None and after.status == "open"
    assert -ledger.leg_qty(pos.position_id)[pos.short_venue] == pytest.approx(qty * 0.5, rel=1e-9)
    shock_to(1.1)
    cycle(conn, ex, CFG, T0 + pd.Timedelta(hours=2), ledger=ledger, venues=VENUE_IDS, plan=False)
    assert ledger.position(pos.position_id).status == "closed"  # type: ignore[union-attr]
    assert_ledger_balances(ledger, ex)


def test_adapter_protocol_is_met() -> None:
    assert issubclass(PaperVenue, ExchangeAdapter)
