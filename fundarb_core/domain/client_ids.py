"""Deterministic client order ids (spec §6: "every order carries a deterministic client order id derived from
(position, leg, attempt) so a retry never opens twice").

Why deterministic: after a crash, a timeout or a lost ledger write the keeper re-derives the id of the order it
meant to send and asks the venue for it (or sends it again, and the venue refuses the duplicate), so an order is
never opened twice.  A retry of a *failed* leg uses a new ``attempt`` number and therefore a new id: the old one
is known to have failed, the new one is still deterministic.

The id is ``sha256("fundarb|{position_id}|{leg}|{attempt}")`` rendered in each venue's accepted format:

* Hyperliquid (``cloid``): a 128-bit hex string, ``0x`` + 32 lower-case hex characters (first 16 bytes);
* Lighter (``client_order_index``): a non-negative integer of 48 bits (Lighter caps the index at 2**48 − 1; it
  fits int64 with room to spare); collisions need ~2**24 orders per account before they become likely;
* dYdX v4 (``clientId``): an unsigned 32-bit integer (the protocol's field width);
* Binance / Bybit / OKX / Aster and any other venue: ``"fa"`` + 30 hex characters (32 characters).  Hex is a
  subset of ``[A-Za-z0-9_-]`` and also of OKX's stricter alphanumeric-only ``clOrdId`` (≤ 32), so one format
  passes all three venues' rules.

The venue is not part of the hash (the leg already names the side and hence the venue of a position), so a
position's id for a leg is the same whichever format renders it; ids are compared as strings everywhere in the
keeper (:func:`client_id_str`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

HEX_VENUES = frozenset({"hyperliquid", "hyperliquid-xyz"})
INT48_VENUES = frozenset({"lighter"})
UINT32_VENUES = frozenset({"dydx"})
STRING_PREFIX = "fa"
MAX_STRING_LEN = 32
LIGHTER_MAX = 2**48 - 1
_STRING_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_HEX_RE = re.compile(r"^0x[0-9a-f]{32}$")


def _digest(position_id: str, leg: str, attempt: int) -> bytes:
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if "|" in position_id or "|" in leg:
        raise ValueError("position_id and leg must not contain '|' (the hash's field separator)")
    return hashlib.sha256(f"fundarb|{position_id}|{leg}|{int(attempt)}".encode()).digest()


def client_order_id(venue: str, position_id: str, leg: str, attempt: int = 0) -> str | int:
    """The client order id of ``(position_id, leg, attempt)`` in ``venue``'s format (see the module doc)."""
    d = _digest(position_id, leg, attempt)
    if venue in HEX_VENUES:
        return "0x" + d[:16].hex()
    if venue in INT48_VENUES:
        return int.from_bytes(d[:6], "big")  # 48 bits
    if venue in UINT32_VENUES:
        return int.from_bytes(d[:4], "big")  # 32 bits
    return STRING_PREFIX + d.hex()[: MAX_STRING_LEN - len(STRING_PREFIX)]


def client_id_str(venue: str, position_id: str, leg: str, attempt: int = 0) -> str:
    """:func:`client_order_id` as a string: the form the ledger and the paper venue store."""
    return str(client_order_id(venue, position_id, leg, attempt))


def is_valid_client_id(venue: str, client_id: str | int) -> bool:
    """Whether ``client_id`` is in ``venue``'s accepted format (used by tests and by the paper venue)."""
    if venue in HEX_VENUES:
        return isinstance(client_id, str) and bool(_HEX_RE.match(client_id))
    if venue in INT48_VENUES or venue in UINT32_VENUES:
        top = LIGHTER_MAX if venue in INT48_VENUES else 2**32 - 1
        try:
            value = int(client_id)
        except (TypeError, ValueError):
            return False
        return 0 <= value <= top and str(value) == str(client_id)
    return isinstance(client_id, str) and bool(_STRING_RE.match(client_id))


@dataclass(frozen=True)
class ClientOrderId:
    """The deterministic id of one order: (position, leg, attempt), rendered in ``venue``'s format."""

    venue: str
    position_id: str
    leg: str
    attempt: int = 0

    @property
    def value(self) -> str:
        return client_id_str(self.venue, self.position_id, self.leg, self.attempt)

    def __str__(self) -> str:
        return self.value
