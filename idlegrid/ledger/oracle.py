"""The IO/USD price: one small contract, and the fixed value the embedded mode uses.

A production oracle (a Pyth or Switchboard feed read over RPC, or a DEX TWAP)
implements the same method; none is built yet.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from idlegrid.core.fees import DECIMALS


class PriceOracle(Protocol):
    def io_usd(self) -> Decimal:
        """US dollars per IO, now."""
        ...


class FixedOracle:
    def __init__(self, io_usd: Decimal) -> None:
        if io_usd <= 0:
            raise ValueError("a price must be positive")
        self._price = io_usd

    def io_usd(self) -> Decimal:
        return self._price


def usdc_to_io_units(usdc_units: int, io_usd: Decimal) -> int:
    """How many IO units ``usdc_units`` buy (USDC has 6 decimals, IO 8), rounded down."""
    shift = DECIMALS["IO"] - DECIMALS["USDC"]
    return int(Decimal(usdc_units).scaleb(shift) / io_usd)
