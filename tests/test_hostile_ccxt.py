"""``CcxtSource`` at the edges, against the loopback Binance server speaking the real wire format with the bundled
real rows: an empty page in the middle of an oldest-first history, ``Retry-After`` on a 429, a rate that is not a
number, a window that starts before the venue's history, and DEBUG logging with API keys in the environment."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import ccxt
import duckdb
import pytest

from fundarb_core.ingest import ingest_table
from fundarb_core.sources.ccxt_source import CcxtSource
from tests.test_ccxt_source import END, FUNDING_PATH, START, Sleeps, bundled
from tests.wire.servers import BinanceUsdmServer, Reply, loopback_urls


class AbcBinance(BinanceUsdmServer):
    """Binance whose first funding row of every page carries ``"fundingRate": "abc"``."""

    def funding_rate(self, params: dict[str, str]) -> Reply:
        reply = super().funding_rate(params)
        rows: list[dict[str, Any]] = json.loads(reply.body)
        if rows:
            rows[0]["fundingRate"] = "abc"
        return self.ok(rows)


@pytest.fixture(scope="module")
def binance() -> Iterator[BinanceUsdmServer]:
    with AbcBinance() as server:
        yield server


def source(server: BinanceUsdmServer, page_limit: int = 10, api_key_env: bool = False) -> tuple[CcxtSource, Sleeps]:
    exchange = CcxtSource.make_exchange("binance", api_key_env=api_key_env, urls=loopback_urls("binanceusdm",
                                        server.url), rate_limit_ms=1, timeout_ms=5000)
    sleeps = Sleeps()
    return CcxtSource({"binance": ["ETHUSDT"]}, {"binance": exchange}, page_limit=page_limit, backoff_s=0.01,
                      sleep=sleeps), sleeps


def test_empty_page_mid_history_does_not_end_pagination(binance: BinanceUsdmServer) -> None:
    binance.reset()
    binance.inject("empty", FUNDING_PATH["binance"], times=1, skip=1)  # page 2 comes back empty once
    src, _ = source(binance)
    got = src.fetch("funding_rates", START, END)
    want = bundled("funding", "binance", symbol="ETHUSDT")
    assert binance.count(FUNDING_PATH["binance"]) > 2
    assert got["ts"].tolist() == want["ts"].tolist() and len(want) == 42  # every row, not the first page only
    assert src.short_histories == []


def test_window_before_the_history_is_reported_as_short(binance: BinanceUsdmServer) -> None:
    binance.reset()
    src, _ = source(binance, page_limit=1000)
    early = datetime(2024, 12, 1, tzinfo=UTC)
    got = src.fetch("funding_rates", early, END)
    assert len(got) and got["ts"].min() > early
    (line,) = src.short_histories
    assert line.startswith("binance ETHUSDT funding_rates: history starts 2025-") and "window from 2024-12-01" in line


def test_retry_after_is_respected(binance: BinanceUsdmServer) -> None:
    binance.reset()
    binance.inject("429-retry-after", FUNDING_PATH["binance"], times=1, skip=1)
    src, sleeps = source(binance)
    got = src.fetch("funding_rates", START, END)
    assert sleeps == [3.0]  # the venue asked for 3 s; the backoff alone would have waited 0.01 s
    assert len(got) == 42


def test_a_rate_that_is_not_a_number_is_rejected_with_the_value_as_it_came(
    binance: BinanceUsdmServer, tmp_path: Any
) -> None:
    binance.reset()
    src, _ = source(binance, page_limit=1000)
    with duckdb.connect(str(tmp_path / "abc.duckdb")) as conn:
        report = ingest_table(conn, src, "funding_rates", START, END, now=datetime(2026, 5, 1, tzinfo=UTC))
        rows = conn.execute("SELECT field, value, reason FROM rejected_rows").fetchall()
    assert report.rows_in == 42 and report.rejected == 1 and report.rows_written == 41
    assert rows == [("rate", '"abc"', "not a finite number")]


def test_debug_logging_never_prints_a_key(binance: BinanceUsdmServer, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    binance.reset()
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", "k3yAAAAbbbbCCCCdddd")
    monkeypatch.setenv("FUNDARB_BINANCE_SECRET", "s3cretEEEEffffGGGG")
    src, _ = source(binance, api_key_env=True)
    exchange = src.exchange("binance")
    exchange.options["fetchCurrencies"] = False  # the loopback server has no wallet endpoint
    with caplog.at_level(logging.DEBUG):
        src.fetch("funding_rates", START, END)
        with pytest.raises(ccxt.BaseError):  # the loopback server has no account endpoints: only the log matters
            exchange.fapiPrivateGetBalance()  # a signed call: key header and signature in the request log
    wire = [r.getMessage() for r in caplog.records if ".wire." in r.name]
    assert any("Request" in m for m in wire) and any("X-MBX-APIKEY" in m for m in wire)
    assert "k3yAAAAbbbbCCCCdddd" not in caplog.text and "s3cretEEEEffffGGGG" not in caplog.text
    assert "signature=***" in caplog.text and not re.search(r"signature=[0-9a-f]{16}", caplog.text)
