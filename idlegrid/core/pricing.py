"""Prices: what a device-hour costs, and why. Pure: plain values in and out.

A quote starts from the hardware's list price (``core.clusters.list_price_usd``)
and adjusts it, each adjustment an item of an itemised breakdown:

- **supply and demand**: the utilisation ``u`` of that model in the requested
  region now (hired ÷ (hired + idle ready devices)). Below 60 % it discounts,
  linearly to −20 % at an idle market, to draw demand; from 85 % it surges,
  linearly to +100 % at a full one, to ration what is left; in between the
  list price holds. Surging only near capacity keeps buyers from being priced
  away while devices sit idle. (The request's own size is priced as
  complexity, not counted as demand: a large order in a small idle pool is
  not a scarce market.) Less supply or more demand never lowers the price.
- **urgency**: starting now costs +5 %; a flexible start (the buyer will wait
  for the next cheaper moment) costs nothing extra.
- **complexity**: +1 % per device beyond the first (at most +20 %): big
  clusters need co-located, well-connected devices; +5 % per connectivity tier
  required above Low; +5 % for a location constraint; +10 % for a secure
  (dedicated, attested) cluster.
- **duration**: −5 % from a day, −10 % from a week, −15 % from 30 days.
  A longer rental never raises the hourly rate.

Every item is a whole number of the currency's smallest units per device-hour
(the USD figure converted at the oracle's rate when the currency is IO), so the
items sum exactly to the price per device-hour, and the order's total is that
price × devices × hours: a breakdown always sums to its total.

Providers may set a floor per device: a device is never matched below it.
``auction_clear`` serves the auction mode: the buyer names a maximum, the
eligible devices' asks are taken lowest first, and every device is paid the
highest accepted ask (one price per cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from idlegrid.core.fees import DECIMALS, canonical_decimal
from idlegrid.errors import InvalidRequest

SURGE_MAX = Decimal("1.00")  # +100 % at full utilisation
SURGE_FROM = Decimal("0.85")
DISCOUNT_MAX = Decimal("0.20")  # −20 % at an idle market
DISCOUNT_BELOW = Decimal("0.60")
URGENT = Decimal("0.05")
PER_EXTRA_DEVICE = Decimal("0.01")
SIZE_CAP = Decimal("0.20")
PER_TIER = Decimal("0.05")
LOCATION = Decimal("0.05")
SECURE = Decimal("0.10")
DURATION_STEPS = ((720, Decimal("-0.15")), (168, Decimal("-0.10")), (24, Decimal("-0.05")))


class Urgency(StrEnum):
    NOW = "now"
    FLEXIBLE = "flexible"


@dataclass(frozen=True, slots=True)
class Market:
    """One model in one region, now."""

    idle: int  # ready devices no one has hired
    hired: int

    def utilisation(self) -> Decimal:
        """The hired share of the devices that could serve (1 when there are none)."""
        total = self.hired + self.idle
        return Decimal(self.hired) / Decimal(total) if total else Decimal(1)


@dataclass(frozen=True, slots=True)
class PriceRequest:
    base_usd: Decimal  # list price of one device-hour
    devices: int
    hours: int
    market: Market
    urgency: Urgency = Urgency.NOW
    min_tier: int = 0
    location_constrained: bool = False
    secure: bool = False


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    units: int  # per device-hour, in the currency's smallest units (negative: a discount)
    detail: str


@dataclass(frozen=True, slots=True)
class Breakdown:
    currency: str
    items: tuple[Item, ...]
    devices: int
    hours: int

    @property
    def per_device_hour(self) -> int:
        return sum(i.units for i in self.items)

    @property
    def total(self) -> int:
        return self.per_device_hour * self.devices * self.hours

    def item_totals(self) -> list[tuple[str, int]]:
        """Each item over the whole order; they sum to ``total``."""
        return [(i.name, i.units * self.devices * self.hours) for i in self.items]


def supply_demand(u: Decimal) -> Decimal:
    """The supply-and-demand adjustment at utilisation ``u`` (a fraction of the base)."""
    u = min(Decimal(1), max(Decimal(0), u))
    if u >= SURGE_FROM:
        return SURGE_MAX * (u - SURGE_FROM) / (1 - SURGE_FROM)
    if u < DISCOUNT_BELOW:
        return -DISCOUNT_MAX * (DISCOUNT_BELOW - u) / DISCOUNT_BELOW
    return Decimal(0)


def duration_discount(hours: int) -> Decimal:
    return next((d for h, d in DURATION_STEPS if hours >= h), Decimal(0))


def adjustments(req: PriceRequest) -> list[tuple[str, Decimal, str]]:
    """(name, fraction of the base, why) for every adjustment, in order."""
    if req.devices < 1 or req.hours < 1:
        raise InvalidRequest("a quote needs at least one device for one hour")
    u = req.market.utilisation()
    size = min(SIZE_CAP, PER_EXTRA_DEVICE * (req.devices - 1))
    tiers = max(0, req.min_tier - 1)
    return [
        ("supply_demand", supply_demand(u), f"utilisation {u:.0%}"),
        ("urgency", URGENT if req.urgency is Urgency.NOW else Decimal(0), req.urgency.value),
        ("cluster_size", size, f"{req.devices} devices"),
        ("connectivity", PER_TIER * tiers, f"tier {req.min_tier} or better"),
        ("location", LOCATION if req.location_constrained else Decimal(0), "constrained"),
        ("security", SECURE if req.secure else Decimal(0), "dedicated" if req.secure else "-"),
        ("duration", duration_discount(req.hours), f"{req.hours} h"),
    ]


def to_units(usd: Decimal, currency: str, io_usd: Decimal) -> int:
    """USD in ``currency``'s smallest units (IO at the oracle's rate), half up."""
    value = usd if currency == "USDC" else usd / io_usd
    scaled = value * (Decimal(10) ** DECIMALS[currency])
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def price(
    req: PriceRequest, currency: str, io_usd: Decimal, floor_usd: Decimal = Decimal(0)
) -> Breakdown:
    """The itemised price of a device-hour; never below ``floor_usd`` (the highest
    floor among the devices the order will take) nor below one unit."""
    base = to_units(req.base_usd, currency, io_usd)
    items = [Item("base", base, f"list price {req.base_usd} USD")]
    for name, fraction, why in adjustments(req):
        units = to_units(req.base_usd * fraction, currency, io_usd)
        if units:
            items.append(Item(name, units, why))
    subtotal = sum(i.units for i in items)
    floor = max(1, to_units(floor_usd, currency, io_usd))
    if subtotal < floor:
        items.append(Item("provider_floor", floor - subtotal, f"floor {floor_usd} USD"))
    return Breakdown(currency, tuple(items), req.devices, req.hours)


@dataclass(frozen=True, slots=True)
class Ask:
    device_id: str
    usd: Decimal  # the least the provider accepts per device-hour


def auction_clear(
    asks: Sequence[Ask], devices: int, max_usd: Decimal
) -> tuple[list[Ask], Decimal] | None:
    """Take the lowest asks at or under ``max_usd`` (ties by device id); everyone is
    paid the highest accepted ask. None when too few asks fit under the maximum."""
    eligible = sorted((a for a in asks if a.usd <= max_usd), key=lambda a: (a.usd, a.device_id))
    if len(eligible) < devices:
        return None
    taken = eligible[:devices]
    return taken, taken[-1].usd


def parse_usd(text: str, field: str, low: Decimal, high: Decimal = Decimal(10_000)) -> Decimal:
    """A USD amount per device-hour from its text, refused outside [low, high]. Its
    spelling is an amount's (``fees.DECIMAL_RE``): "2.5", never " 2.5", "+2.5" or "25e-1"."""
    if canonical_decimal(text) is None:
        raise InvalidRequest(f"{field} is a decimal number of USD, e.g. 2.5", **{field: text[:64]})
    usd = Decimal(text)
    if not low <= usd <= high:
        raise InvalidRequest(f"{field} is {low}-{high} USD per device-hour", **{field: text})
    return usd
