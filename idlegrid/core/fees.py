"""Fees and amounts. Pure: integers in smallest units in, integers out.

io.net's published fees (DESIGN.md, "Token economics"):

- a 0.25% reservation fee, charged to the buyer on what they pay and to the
  provider on what they are paid;
- a 2% facilitation fee on payments in USDC, on both sides;
- no facilitation fee on payments in IO.

Fees are rounded half up to the smallest unit, and a fee is never more than
the amount it is taken from.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from idlegrid.core.emission import IO_DECIMALS
from idlegrid.errors import InvalidAmount

RESERVATION_BPS = 25  # 0.25%, in basis points
USDC_FACILITATION_BPS = 200  # 2%
DECIMALS = {"IO": IO_DECIMALS, "USDC": 6}  # the one table of token decimals
MAX_UNITS = 2**63  # what the book's 64-bit columns (and SPL's u64) hold


def _bps(amount: int, bps: int) -> int:
    return min(amount, (amount * bps + 5_000) // 10_000)


def fee(amount: int, asset: str) -> int:
    """The fee one side pays on ``amount`` of ``asset``: reservation, plus
    facilitation when the asset is USDC."""
    if amount < 0:
        raise InvalidAmount("fees are taken from non-negative amounts", amount=amount)
    bps = RESERVATION_BPS + (USDC_FACILITATION_BPS if asset == "USDC" else 0)
    return _bps(amount, bps)


def parse_amount(text: str, asset: str) -> int:
    """A decimal string in whole tokens ("12.5") to smallest units; refuses
    negative, zero, over-precise and malformed amounts and unknown assets."""
    if asset not in DECIMALS:
        raise InvalidAmount(f"unknown asset {asset!r}", allowed=", ".join(DECIMALS))
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise InvalidAmount("not a decimal number", amount=text) from None
    if not value.is_finite() or value <= 0:
        raise InvalidAmount("amounts must be positive", amount=text)
    units = value.scaleb(DECIMALS[asset])
    if units >= MAX_UNITS:
        raise InvalidAmount("amount too large", amount=text)
    if units != units.to_integral_value():
        raise InvalidAmount(
            f"{asset} has {DECIMALS[asset]} decimals", amount=text, decimals=DECIMALS[asset]
        )
    return int(units)


def format_amount(units: int, asset: str) -> str:
    """Smallest units to a plain decimal string of whole tokens ("12.50000000")."""
    places = DECIMALS[asset]
    return f"{Decimal(units).scaleb(-places):.{places}f}"


def units(text: str, asset: str) -> int:
    """An amount the server printed (``format_amount``), zero included, back to units."""
    return int(Decimal(text).scaleb(DECIMALS[asset]))
