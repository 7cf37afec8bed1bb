"""The project's one ccxt client: market data (:class:`~fundarb_core.sources.ccxt_source.CcxtSource`) and
trading (:class:`~fundarb_core.venues.ccxt_venue.CcxtExchange`) build their exchanges here, so both get the same
fee-off options, credentials only from the environment, logs scrubbed of keys and signatures, and one lock per
account.

Why one place: a venue connection is where keys, builder fees and rate limits live; two factories drift (the
keeper's adapter once redacted a header the market-data path still logged).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import ccxt

from fundarb_core.venues import get_venue

# Restrict load_markets() to the perpetual markets this project trades: fewer requests, and no
# private endpoints (Bybit's coin info) or option chains pulled in by default.
_MARKET_OPTIONS: dict[str, dict[str, Any]] = {
    "bybit": {"fetchMarkets": {"types": ["linear"]}},
    "hyperliquid": {"fetchMarkets": {"types": ["swap"]}},
    "hyperliquid-xyz": {"fetchMarkets": {"types": ["hip3"], "hip3": {"dexes": ["xyz"]}}},
    "okx": {"fetchMarkets": {"types": ["swap"]}},
}

# Environment variable suffix -> ccxt credential attribute.  Keys are read only from the
# environment (FUNDARB_<VENUE>_<SUFFIX>) and never logged or stored on the source.
_CREDENTIAL_ENV: dict[str, str] = {
    "API_KEY": "apiKey",
    "SECRET": "secret",
    "PASSWORD": "password",
    "UID": "uid",
    "WALLET_ADDRESS": "walletAddress",
    "PRIVATE_KEY": "privateKey",
}

# Header / query fields that carry a key or a signature, whatever their value (scrubbed from every log record).
_SECRET_FIELDS = re.compile(
    r"(?i)((?:X-MBX-APIKEY|X-BAPI-API-KEY|X-BAPI-SIGN|OK-ACCESS-KEY|OK-ACCESS-SIGN|OK-ACCESS-PASSPHRASE|"
    r"apiKey|api_key|signature|sign)['\"]?\s*[:=]\s*['\"]?)([^'\"&,}\s]+)")



class Redact(logging.Filter):
    """Scrubs credentials from every record of one exchange's logger.

    Why: ccxt logs each request at DEBUG with its headers (Binance's ``X-MBX-APIKEY``) and signed query strings,
    market-data calls included; turning DEBUG on must never write a key or a signature to a log.
    """

    def __init__(self, secrets: list[str] | Callable[[], list[str]]) -> None:
        super().__init__()
        self._secrets = secrets if callable(secrets) else [s for s in secrets if s]

    def secrets(self) -> list[str]:
        return self._secrets() if callable(self._secrets) else self._secrets

    def covers(self, secrets: list[str]) -> bool:
        return not callable(self._secrets) and set(secrets) <= set(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for secret in self.secrets():
            text = text.replace(secret, "***")
        record.msg, record.args = _SECRET_FIELDS.sub(r"\1***", text), None
        return True


def make_exchange(
    venue_id: str,
    api_key_env: bool = False,
    urls: Mapping[str, Any] | None = None,
    rate_limit_ms: int | None = None,
    timeout_ms: int | None = None,
) -> ccxt.Exchange:
    """Build the venue's ccxt exchange with fee-bearing defaults off.

    ``api_key_env`` reads credentials from ``FUNDARB_<VENUE>_API_KEY`` / ``_SECRET`` /
    ``_PASSWORD`` / ``_UID`` / ``_WALLET_ADDRESS`` / ``_PRIVATE_KEY`` (venue id upper-cased,
    ``-`` → ``_``) and from nowhere else; public data needs none.  ``urls`` replaces entries
    of ``exchange.urls['api']`` (tests: loopback servers).
    """
    venue = get_venue(venue_id)
    options: dict[str, Any] = dict(_MARKET_OPTIONS.get(venue_id, {}))
    options.update(dict(venue.ccxt_options))
    config: dict[str, Any] = {"enableRateLimit": True, "options": options}
    secrets: list[str] = []
    if api_key_env:
        prefix = "FUNDARB_" + venue_id.upper().replace("-", "_") + "_"
        for suffix, attr in _CREDENTIAL_ENV.items():
            value = os.environ.get(prefix + suffix)
            if value:
                config[attr] = value
                secrets.append(value)
    wire = logging.getLogger(f"{__name__}.wire.{venue_id}.{len(secrets)}{abs(hash(tuple(secrets))):x}")
    for logger in (wire, logging.getLogger("urllib3.connectionpool")):  # urllib3 logs signed URLs too
        if not any(isinstance(f, Redact) and f.covers(secrets) for f in logger.filters):
            logger.addFilter(Redact(secrets))
    exchange: ccxt.Exchange = getattr(ccxt, venue.ccxt_id)(config)
    exchange.logger = wire  # ccxt's DEBUG request/response log goes through the redacting logger
    exchange.verbose = False  # verbose prints requests, headers included, to stdout
    # ccxt deep-merges constructor options into its defaults, so an empty dict such as
    # Binance's ``broker={}`` would leave the default broker ids in place: assign directly.
    for key, value in venue.ccxt_options.items():
        exchange.options[key] = value
    if urls:
        api = exchange.urls.get("api")
        exchange.urls["api"] = {**api, **urls} if isinstance(api, dict) else dict(urls)
    if rate_limit_ms is not None:
        exchange.rateLimit = rate_limit_ms
    if timeout_ms is not None:
        exchange.timeout = timeout_ms
    return exchange


_ACCOUNT_LOCKS: dict[str, threading.RLock] = {}
_ACCOUNT_GUARD = threading.Lock()


def account_lock(exchange: ccxt.Exchange) -> threading.RLock:
    """One lock per account (ccxt id + a hash of the credential, never the credential itself), shared by every
    client of that account in the process: one request at a time per account."""
    ident = str(getattr(exchange, "walletAddress", "") or getattr(exchange, "apiKey", "") or "")
    key = exchange.id + ":" + hashlib.sha256(ident.encode()).hexdigest()[:12]
    with _ACCOUNT_GUARD:
        return _ACCOUNT_LOCKS.setdefault(key, threading.RLock())
