"""Fees and amounts. Pure: integers in smallest units in, integers out.

io.net's published fees (DESIGN.md, "Token economics"):

- a 0.25% reservation fee, charged to the buyer on what they pay and to the
  provider on what they are paid;
- a 2% facilitation fee on payments in USDC, on both sides;
- no facilitation fee on payments in IO.

Fees are rounded half up to the smallest unit, and a fee is never more than
the amount it is taken from.

An amount on the wire has one spelling: ASCII digits with at most one ``.``
between digits ("12", "12.5"; see ``DECIMAL_RE``). No sign, no whitespace, no
exponent, no ``_``, no other script's digits: ``Decimal`` and ``int`` accept
all of those, so "١٢" would be 12 and "1e999999" an overflow. It is parsed with
integer arithmetic only, so no spelling reaches a ``decimal`` context's limits.
"""

from __future__ import annotations

import re
from decimal import Decimal

from idlegrid.core.emission import IO_DECIMALS
from idlegrid.errors import InvalidAmount

RESERVATION_BPS = 25  # 0.25%, in basis points
USDC_FACILITATION_BPS = 200  # 2%
DECIMALS = {"IO": IO_DECIMALS, "USDC": 6}  # the one table of token decimals
MAX_UNITS = 2**63  # what the book's 64-bit columns (and SPL's u64) hold
DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")  # the one spelling, matched whole
MAX_AMOUNT_CHARS = 64  # longer is no amount the book can hold, whatever its zeros


def _bps(amount: int, bps: int) -> int:
    return min(amount, (amount * bps + 5_000) // 10_000)


def fee(amount: int, asset: str) -> int:
    """The fee one side pays on ``amount`` of ``asset``: reservation, plus
    facilitation when the asset is USDC."""
    if amount < 0:
        raise InvalidAmount("fees are taken from non-negative amounts", amount=amount)
    bps = RESERVATION_BPS + (USDC_FACILITATION_BPS if asset == "USDC" else 0)
    return _bps(amount, bps)


def canonical_decimal(text: str) -> tuple[str, str] | None:
    """The whole and fractional digits of a decimal in its one spelling
    (``DECIMAL_RE``), or None for any other text."""
    if len(text) > MAX_AMOUNT_CHARS or DECIMAL_RE.fullmatch(text) is None:
        return None
    whole, _, frac = text.partition(".")
    return whole, frac


def parse_amount(text: str, asset: str) -> int:
    """A decimal string in whole tokens ("12.5") to smallest units; refuses
    negative, zero, over-precise and malformed amounts and unknown assets."""
    if asset not in DECIMALS:
        raise InvalidAmount(f"unknown asset {asset!r}", allowed=", ".join(DECIMALS))
    parts = canonical_decimal(text)
    if parts is None:
        raise InvalidAmount(
            "an amount is ASCII digits with an optional fraction, e.g. 12.5",
            amount=text[:MAX_AMOUNT_CHARS],
        )
    whole, frac = parts
    places = DECIMALS[asset]
    frac = frac.rstrip("0")  # "1.50" is 1.5: exact, however many zeros follow
    if len(frac) > places:
        raise InvalidAmount(f"{asset} has {places} decimals", amount=text, decimals=places)
    units: int = int(whole) * 10**places + int(frac.ljust(places, "0") or "0")
    if units <= 0:
        raise InvalidAmount("amounts must be positive", amount=text)
    if units >= MAX_UNITS:
        raise InvalidAmount("amount too large", amount=text)
    return units


def format_amount(units: int, asset: str) -> str:
    """Smallest units to a plain decimal string of whole tokens ("12.50000000")."""
    places = DECIMALS[asset]
    return f"{Decimal(units).scaleb(-places):.{places}f}"


def units(text: str, asset: str) -> int:
    """An amount the server printed (``format_amount``), zero included, back to units."""
    return int(Decimal(text).scaleb(DECIMALS[asset]))
