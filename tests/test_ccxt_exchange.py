"""``CcxtExchange`` with the real ccxt classes against loopback servers speaking the venues' private REST formats.

Why loopback and not mocks: the risks live in ccxt's own request building (which parameter carries the client
id, which endpoint ``fetch_positions`` calls in this ccxt version) and in parsing the venues' payloads; only a
real HTTP peer checks those.  The keys are marker strings set through the environment; the Hyperliquid key is
a fixed throwaway 32-byte value (the server does not verify signatures).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest

from fundarb_core.domain.client_ids import client_id_str, is_valid_client_id
from fundarb_core.execution.venue import ExchangeAdapter, ExchangeError
from fundarb_core.venues.ccxt_venue import CcxtExchange
from tests.wire.servers import loopback_urls
from tests.wire.trading import BinanceTradingServer, HyperliquidTradingServer

API_KEY = "APIKEY-MARKER-7f3a9c"
SECRET = "SECRET-MARKER-b41e2d"
HL_KEY = "0x" + "4c" * 32  # throwaway test key, never a real one
HL_WALLET = "0x" + "ab" * 20
MARKERS = (API_KEY, SECRET, HL_KEY, HL_KEY[2:])
VENUES = ("binance", "hyperliquid")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    b, h = BinanceTradingServer().start(), HyperliquidTradingServer().start()
    yield {"binance": b, "hyperliquid": h}
    b.stop()
    h.stop()


@pytest.fixture
def ex(servers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> CcxtExchange:
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("FUNDARB_BINANCE_SECRET", SECRET)
    monkeypatch.setenv("FUNDARB_HYPERLIQUID_WALLET_ADDRESS", HL_WALLET)
    monkeypatch.setenv("FUNDARB_HYPERLIQUID_PRIVATE_KEY", HL_KEY)
    for s in servers.values():
        s.reset()
    urls = {"binance": loopback_urls("binanceusdm", servers["binance"].url),
            "hyperliquid": loopback_urls("hyperliquid", servers["hyperliquid"].url)}
    return CcxtExchange(VENUES, urls=urls, assets=["BTC", "ETH"], rate_limit_ms=1, timeout_ms=5000)


def _order_posts(server: Any, venue: str) -> list[Any]:
    if venue == "binance":
        return [r for r in server.requests if r.method == "POST" and r.path == "/fapi/v1/order"]
    return [r for r in server.requests if r.route == "/exchange:order"]


def _sent_client_id(record: Any, venue: str) -> str:
    """The client id as it went over the wire, in the venue's own field."""
    if venue == "binance":
        return parse_qs(record.body)["newClientOrderId"][0]
    return str(record.body["action"]["orders"][0]["c"])


def test_protocol_and_symbols(ex: CcxtExchange) -> None:
    assert isinstance(ex, ExchangeAdapter)
    assert ex.symbol("binance", "BTC") == "BTC/USDT:USDT"
    assert ex.symbol("hyperliquid", "BTC") == "BTC/USDC:USDC"
    with pytest.raises(ExchangeError, match=r"binance NOPE: load_markets failed"):
        ex.symbol("binance", "NOPE")


@pytest.mark.parametrize("venue", VENUES)
def test_place_lookup_idempotent_cancel(ex: CcxtExchange, servers: dict[str, Any], venue: str) -> None:
    server = servers[venue]
    server.state.orders.clear()
    book = ex.order_book_top(venue, "BTC")
    assert book is not None and 0 < book.bid < book.ask
    mark = ex.mark_price(venue, "BTC")
    assert mark is not None and mark > 0
    cid = client_id_str(venue, f"pos-{venue}-1", "long")
    assert is_valid_client_id(venue, cid)
    price = book.bid * 0.98  # a buy far below the ask rests
    order = ex.place_limit_order(venue, "BTC", "buy", 500.0, price, cid)
    assert (order.status, order.client_id, order.asset, order.side) == ("open", cid, "BTC", "buy")
    assert 500.0 * 0.8 < order.size_usd <= 500.0  # quantity truncated to the lot step (Binance 0.001 BTC)

    got = ex.fetch_order_by_client_id(venue, cid)
    assert got is not None and got.client_id == cid and got.status == "open"

    again = ex.place_limit_order(venue, "BTC", "buy", 500.0, price, cid)  # a retry with the same id
    assert again.client_id == cid and again.status == "open"
    assert len(server.state.orders) == 1
    posts = _order_posts(server, venue)
    assert len(posts) == 1
    assert _sent_client_id(posts[0], venue) == cid  # venue field: newClientOrderId / cloid

    opens = ex.open_orders(venue)
    assert [o.client_id for o in opens] == [cid]

    cancelled = ex.cancel_order(venue, cid)
    assert cancelled is not None and cancelled.status == "canceled"
    assert ex.open_orders(venue) == []
    # a retry after the cancel still does not open a second order
    assert ex.place_limit_order(venue, "BTC", "buy", 500.0, price, cid).status == "canceled"
    assert len(_order_posts(server, venue)) == 1 and len(server.state.orders) == 1
    # unknown ids: None, not an error
    unknown = client_id_str(venue, "never-sent", "long")
    assert ex.fetch_order_by_client_id(venue, unknown) is None
    assert ex.cancel_order(venue, unknown) is None


@pytest.mark.parametrize("venue", VENUES)
def test_crossing_order_fills_positions_balances_leverage(ex: CcxtExchange, servers: dict[str, Any],
                                                           venue: str) -> None:
    server = servers[venue]
    server.state.orders.clear()
    server.state.positions.clear()
    book = ex.order_book_top(venue, "ETH")
    assert book is not None
    ex.set_leverage(venue, "ETH", 3)
    assert 3 in server.state.leverage.values()
    cid = client_id_str(venue, f"pos-{venue}-2", "short")
    order = ex.place_limit_order(venue, "ETH", "sell", 1000.0, book.bid, cid)  # sell at the bid: crosses
    assert order.status == "filled" and order.filled_qty > 0
    assert order.avg_price == pytest.approx(book.bid, rel=1e-4)

    (pos,) = ex.positions(venue)
    assert pos.asset == "ETH" and pos.qty == pytest.approx(-order.filled_qty)
    assert pos.avg_price == pytest.approx(book.bid, rel=1e-4) and pos.mark_price > 0

    bal = ex.balances()[venue]
    assert bal.venue == venue and bal.wallet_usd == pytest.approx(10_000.0)
    assert bal.equity_usd == pytest.approx(bal.wallet_usd + pos.unrealised_pnl_usd, abs=1e-6)
    assert bal.maintenance_usd > 0 and math.isfinite(bal.health_factor) and bal.health_factor > 1
    assert bal.margin_used_usd == pytest.approx(pos.notional_usd / 3, rel=1e-3)


def test_lost_reply_is_resolved_by_client_id(ex: CcxtExchange, servers: dict[str, Any]) -> None:
    """The venue took the order but the reply was lost: the adapter finds it by client id, sends nothing more."""
    server = servers["binance"]
    server.state.orders.clear()
    server.lose_replies = 1
    book = ex.order_book_top("binance", "BTC")
    assert book is not None
    cid = client_id_str("binance", "pos-lost", "long")
    order = ex.place_limit_order("binance", "BTC", "buy", 500.0, book.bid * 0.98, cid)
    assert order.client_id == cid and order.status == "open"
    assert len(_order_posts(server, "binance")) == 1 and len(server.state.orders) == 1


def test_no_builder_approval_or_referrer_on_hyperliquid(ex: CcxtExchange, servers: dict[str, Any]) -> None:
    server = servers["hyperliquid"]
    book = ex.order_book_top("hyperliquid", "BTC")
    assert book is not None
    ex.place_limit_order("hyperliquid", "BTC", "buy", 200.0, book.bid * 0.97,
                         client_id_str("hyperliquid", "pos-builder", "long"))
    routes = {r.route for r in server.requests if r.path == "/exchange"}
    assert routes == {"/exchange:order"}
    assert all("builder" not in r.body["action"] for r in _order_posts(server, "hyperliquid"))


def test_secrets_never_leak(ex: CcxtExchange, servers: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    book = ex.order_book_top("binance", "BTC")
    assert book is not None
    ex.place_limit_order("binance", "BTC", "buy", 100.0, book.bid * 0.9, client_id_str("binance", "p-s", "long"))
    ex.balances()
    texts = [repr(ex), str(ex)]
    servers["binance"].inject("error", "/fapi/v1/order", times=5)
    with pytest.raises(ExchangeError) as err:
        ex.place_limit_order("binance", "BTC", "buy", 100.0, book.bid * 0.9, client_id_str("binance", "p-e", "long"))
    assert "binance BTC" in str(err.value)
    texts.append(str(err.value))
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        for marker in MARKERS:
            assert marker not in text
    # the key did reach the venue, in the header Binance expects: the exchange really used it
    assert ex.exchange("binance").apiKey == API_KEY


def test_concurrent_retries_send_one_order(ex: CcxtExchange, servers: dict[str, Any]) -> None:
    """Threads retrying the same client id at once: the account lock serialises them, one order exists."""
    server = servers["hyperliquid"]
    server.state.orders.clear()
    book = ex.order_book_top("hyperliquid", "BTC")
    assert book is not None
    cid = client_id_str("hyperliquid", "pos-race", "long")
    results: list[str] = []

    def go() -> None:
        results.append(ex.place_limit_order("hyperliquid", "BTC", "buy", 300.0, book.bid * 0.97, cid).client_id)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [cid] * 6
    assert len(_order_posts(server, "hyperliquid")) == 1 and len(server.state.orders) == 1


def test_funding_payments_parse(ex: CcxtExchange, servers: dict[str, Any]) -> None:
    t0 = servers["binance"].clock_ms - 3_600_000
    servers["binance"].state.funding[:] = [
        {"symbol": "ETHUSDT", "incomeType": "FUNDING_FEE", "income": "0.125", "asset": "USDT", "time": t0,
         "info": "", "tranId": 9001, "tradeId": ""}]
    servers["hyperliquid"].state.funding[:] = [
        {"time": t0, "hash": "0x" + "0" * 64, "delta": {"type": "funding", "coin": "ETH", "usdc": "-0.5",
                                                        "szi": "-0.5", "fundingRate": "0.0000125"}}]
    pays = ex.funding_payments()
    by_venue = {p.venue: p for p in pays}
    assert set(by_venue) == {"binance", "hyperliquid"}
    assert by_venue["binance"].asset == "ETH" and by_venue["binance"].amount_usd == pytest.approx(0.125)
    hl = by_venue["hyperliquid"]
    assert (hl.asset, hl.amount_usd, hl.qty, hl.rate) == ("ETH", pytest.approx(-0.5), -0.5, pytest.approx(1.25e-5))
    later = datetime.fromtimestamp(t0 / 1000 + 1, UTC).replace(tzinfo=None)
    assert ex.funding_payments(since=later) == []
