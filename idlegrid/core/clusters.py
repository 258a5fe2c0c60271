"""Clusters: statuses, durations, list prices and the bill. Pure: plain values in and out.

A buyer prepays ``price × devices × hours`` plus the buyer's fee into the
cluster's escrow account. The bill then follows the time each device really
served, never the time it was booked:

- A device's *node* is paid from the moment its Ray node joined (``joined_ms``)
  until it left: the cluster ended, the device was released, or it died — a
  dead device is paid only up to its last heartbeat.
- ``gross(price, joined_ms, until_ms)`` is what a node has earned by
  ``until_ms``: ``price × served_ms // 3,600,000``. Settlement pays the
  difference since the last settlement, so hourly slices add up to exactly the
  whole (no rounding drift however often it settles).
- Each slice ``g`` pays the provider ``g − fee(g)`` and the fee revenue
  ``fee(g)`` (the provider's side of the fee rules in ``core/fees.py``).
- The buyer's fee is ``fee(C)`` on the total ``C`` actually charged, taken when
  the cluster closes; the rest of the escrow goes back to the buyer. A slot
  that dies with no replacement is refunded at once, pro-rata, price only (its
  fee is never charged, as ``C`` never includes it).

So the buyer pays ``C + fee(C)``, providers receive ``Σ (g − fee(g))`` and
the fee revenue receives ``Σ fee(g) + fee(C)``, each exact to the unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from idlegrid.core.fees import fee
from idlegrid.errors import InvalidRequest

MS_PER_HOUR = 3_600_000
MAX_HOURS = 24 * 7 * 52  # a year of weeks


class ClusterStatus(StrEnum):
    """io.net's cluster statuses (DESIGN.md, "Clusters")."""

    UNPAID = "unpaid"
    DEPLOYMENT_REQUESTED = "deployment_requested"
    DEPLOYING = "deploying"
    RUNNING = "running"
    TERMINATION_REQUESTED = "termination_requested"
    TERMINATED = "terminated"
    COMPLETED = "completed"
    FAILED = "failed"
    DESTROYED = "destroyed"


ACTIVE = frozenset(
    {ClusterStatus.DEPLOYMENT_REQUESTED, ClusterStatus.DEPLOYING, ClusterStatus.RUNNING}
)


class DurationUnit(StrEnum):
    HOURS = "hours"
    DAYS = "days"
    WEEKS = "weeks"


_HOURS_PER = {DurationUnit.HOURS: 1, DurationUnit.DAYS: 24, DurationUnit.WEEKS: 168}


def duration_hours(amount: int, unit: DurationUnit) -> int:
    """Whole hours; the minimum rental is one hour."""
    hours = amount * _HOURS_PER[unit]
    if hours < 1:
        raise InvalidRequest("the minimum rental is one hour", duration=amount, unit=unit.value)
    if hours > MAX_HOURS:
        raise InvalidRequest("rentals are at most a year", hours=hours, max_hours=MAX_HOURS)
    return hours


def list_price_usd(multiplier: float, processors: int, kind: str) -> Decimal:
    """The list price of one device-hour in USD, before any market adjustment.

    GPUs and Apple silicon: 0.20 USD per unit of hardware multiplier per
    processor, at least 0.10 (an H100 at multiplier 10 lists at 2.00 USD/h,
    near the market's rate). CPUs: 0.04 USD per device-hour. Dynamic pricing
    (supply, demand, urgency) adjusts this figure; it is the anchor.
    """
    if kind == "cpu":
        return Decimal("0.04")
    per = max(Decimal("0.10"), Decimal(str(multiplier)) * Decimal("0.20"))
    return per * max(1, processors)


@dataclass(frozen=True, slots=True)
class Prepayment:
    price: int  # per device-hour, smallest units
    devices: int
    hours: int
    subtotal: int  # price × devices × hours
    buyer_fee: int  # fee(subtotal)

    @property
    def total(self) -> int:
        return self.subtotal + self.buyer_fee


def prepayment(price: int, devices: int, hours: int, asset: str) -> Prepayment:
    subtotal = price * devices * hours
    return Prepayment(price, devices, hours, subtotal, fee(subtotal, asset))


def gross(price: int, joined_ms: int, until_ms: int) -> int:
    """What a node has earned between joining and ``until_ms`` (0 before it joined)."""
    return price * max(0, until_ms - joined_ms) // MS_PER_HOUR


@dataclass(frozen=True, slots=True)
class Slice:
    """One settlement of one node: ``gross`` moves out of escrow."""

    gross: int
    provider: int
    fee: int


def settle_slice(price: int, joined_ms: int, until_ms: int, paid_gross: int, asset: str) -> Slice:
    """What to pay a node now, given what it was paid before (``paid_gross``)."""
    g = gross(price, joined_ms, until_ms) - paid_gross
    if g <= 0:
        return Slice(0, 0, 0)
    f = fee(g, asset)
    return Slice(g, g - f, f)


@dataclass(frozen=True, slots=True)
class Closing:
    buyer_fee: int
    refund: int


def close(escrow_left: int, charged: int, asset: str) -> Closing:
    """At the end: the buyer's fee on what was charged, and the rest back.

    The fee is capped by what escrow holds: two prepayments' fees rounded
    separately can fall one unit short of the fee on their sum.
    """
    buyer_fee = min(fee(charged, asset), max(0, escrow_left))
    return Closing(buyer_fee, max(0, escrow_left - buyer_fee))


def slot_refund(price: int, from_ms: int, expires_ms: int) -> int:
    """The unused prepaid time of a slot that lost its device for good."""
    return gross(price, from_ms, expires_ms)


def join_overdue(
    cluster_ran: bool, node_up: bool, assigned_at: float | None, now: float, timeout_s: float
) -> bool:
    """Whether a node of a cluster that already ran (a replacement, or a survivor of a
    re-form) has been given up on: not up within ``timeout_s`` of its assignment. The
    first forming has the cluster's own deploy deadline instead."""
    return cluster_ran and not node_up and assigned_at is not None and now - assigned_at > timeout_s
