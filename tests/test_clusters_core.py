"""The pure rules of IO Cloud's bill (core/clusters.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idlegrid.core import clusters, pricing
from idlegrid.core.clusters import DurationUnit
from idlegrid.core.fees import fee
from idlegrid.errors import InvalidRequest

HOUR_MS = clusters.MS_PER_HOUR


def test_durations_in_hours_with_a_one_hour_minimum() -> None:
    assert clusters.duration_hours(3, DurationUnit.HOURS) == 3
    assert clusters.duration_hours(2, DurationUnit.DAYS) == 48
    assert clusters.duration_hours(1, DurationUnit.WEEKS) == 168
    with pytest.raises(InvalidRequest):
        clusters.duration_hours(0, DurationUnit.HOURS)
    with pytest.raises(InvalidRequest):
        clusters.duration_hours(60, DurationUnit.WEEKS)


def test_list_prices_follow_the_multiplier_and_convert_at_the_oracle_rate() -> None:
    assert clusters.list_price_usd(10.0, 1, "gpu") == Decimal("2.00")  # one H100
    assert clusters.list_price_usd(10.0, 8, "gpu") == Decimal("16.00")
    assert clusters.list_price_usd(0.0, 1, "gpu") == Decimal("0.10")  # the floor
    assert clusters.list_price_usd(30.0, 1, "cpu") == Decimal("0.04")
    assert pricing.to_units(Decimal("2.00"), "USDC", Decimal("1.5")) == 2_000_000
    assert pricing.to_units(Decimal("3.00"), "IO", Decimal("1.5")) == 2 * 10**8


def test_prepayment_adds_the_buyer_fee() -> None:
    p = clusters.prepayment(1_000_000, 2, 3, "USDC")
    assert p.subtotal == 6_000_000
    assert p.buyer_fee == fee(6_000_000, "USDC") == 135_000  # 2.25%
    assert p.total == 6_135_000


@given(
    price=st.integers(1, 10**12),
    joined=st.integers(0, 10**9),
    cuts=st.lists(st.integers(0, 30 * HOUR_MS), min_size=1, max_size=20),
    asset=st.sampled_from(["IO", "USDC"]),
)
def test_settling_in_any_slices_pays_exactly_the_whole(
    price: int, joined: int, cuts: list[int], asset: str
) -> None:
    """However often settlement runs, the slices add up to the gross of the whole
    time, and each slice splits exactly into provider share and fee."""
    paid = 0
    for until in sorted(joined + c for c in cuts):
        s = clusters.settle_slice(price, joined, until, paid, asset)
        assert s.gross >= 0 and s.provider + s.fee == s.gross
        assert s.fee == fee(s.gross, asset)
        paid += s.gross
    assert paid == clusters.gross(price, joined, joined + max(cuts))


@given(
    price=st.integers(1, 10**10),
    devices=st.integers(1, 16),
    hours=st.integers(1, 200),
    served=st.lists(st.integers(0, 100), min_size=1, max_size=16),
    asset=st.sampled_from(["IO", "USDC"]),
)
def test_the_escrow_covers_the_charge_and_the_fee_and_the_rest_is_refunded(
    price: int, devices: int, hours: int, served: list[int], asset: str
) -> None:
    """Devices serve at most the hours paid for; the escrow always covers what is
    charged plus the buyer's fee on it, and refund + fee + charge = prepayment."""
    pay = clusters.prepayment(price, devices, hours, asset)
    charged = sum(
        clusters.gross(price, 0, hours * HOUR_MS * pct // 100) for pct in served[:devices]
    )
    assert charged <= pay.subtotal
    closing = clusters.close(pay.total - charged, charged, asset)
    assert closing.buyer_fee == fee(charged, asset)
    assert charged + closing.buyer_fee + closing.refund == pay.total


def test_close_caps_the_fee_at_what_escrow_holds() -> None:
    assert clusters.close(3, 1_000, "IO") == clusters.Closing(buyer_fee=3, refund=0)
    assert clusters.close(0, 0, "IO") == clusters.Closing(0, 0)


def test_a_slot_refund_is_the_unused_time_at_the_price() -> None:
    assert clusters.slot_refund(3_600, 0, HOUR_MS // 2) == 1_800
    assert clusters.slot_refund(3_600, HOUR_MS, HOUR_MS // 2) == 0


def test_join_overdue_only_after_the_cluster_ran_and_the_timeout() -> None:
    assert not clusters.join_overdue(False, False, 0.0, 1_000.0, 180)  # first forming: deadline
    assert not clusters.join_overdue(True, True, 0.0, 1_000.0, 180)  # up
    assert not clusters.join_overdue(True, False, None, 1_000.0, 180)  # no assignment time
    assert not clusters.join_overdue(True, False, 900.0, 1_080.0, 180)  # exactly at the limit
    assert clusters.join_overdue(True, False, 900.0, 1_080.5, 180)
