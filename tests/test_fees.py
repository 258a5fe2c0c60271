"""Fees and amounts to the smallest unit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idlegrid.core.fees import fee, format_amount, parse_amount
from idlegrid.errors import InvalidAmount
from idlegrid.ledger.oracle import FixedOracle, usdc_to_io_units


def test_published_rates() -> None:
    assert fee(1_000_000, "IO") == 2_500  # 0.25%
    assert fee(1_000_000, "USDC") == 22_500  # 0.25% + 2%
    assert fee(199, "IO") == 0 and fee(200, "IO") == 1  # half up: 0.4975 → 0, 0.5 → 1


@given(st.integers(0, 10**17), st.sampled_from(["IO", "USDC"]))
def test_fees_never_exceed_the_amount_and_grow_with_it(amount: int, asset: str) -> None:
    f = fee(amount, asset)
    assert 0 <= f <= amount
    assert fee(amount + 1, asset) >= f


@given(st.integers(1, 10**17))
def test_amounts_round_trip_exactly(units: int) -> None:
    assert parse_amount(format_amount(units, "IO"), "IO") == units


def test_amounts_print_plainly() -> None:
    assert format_amount(0, "IO") == "0.00000000"
    assert format_amount(5 * 10**16, "IO") == "500000000.00000000"
    assert format_amount(1, "USDC") == "0.000001"


@pytest.mark.parametrize("text", ["0", "-1", "0.000000001", "1e999", "x", "NaN", "inf", ""])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text, "IO")
    with pytest.raises(InvalidAmount):
        parse_amount("1", "DOGE")


def test_oracle_conversion_rounds_down() -> None:
    assert usdc_to_io_units(3_000_000, FixedOracle(Decimal("1.5")).io_usd()) == 2 * 10**8
    assert usdc_to_io_units(1, Decimal("3")) == 33
    with pytest.raises(ValueError):
        FixedOracle(Decimal(0))
