"""The IO token's supply: the hourly emission schedule and the genesis allocation.

Pure and exact: every amount is a plain ``int`` in the token's smallest unit
(10⁻⁸ IO, ``IO_DECIMALS = 8``); ``Decimal`` appears only when showing IO.

Supply. 800,000,000 IO at most: 500,000,000 at genesis and 300,000,000 emitted
hourly over 175,319 hourly epochs (io.net's count, about 20 years).

Schedule. Hour ``h`` (0-based, ``0 <= h < EPOCHS``) would emit
``FIRST_HOUR × DECAY**h`` with ``FIRST_HOUR = 4,566.21 IO`` (8 % a year of 500M
over 8,760 hours, as io.net rounds it) and ``DECAY = 1 − 0.0013886952 %`` per
hour: 1.009 % less a month and 11.45 % less a year (io.net rounds these to
1.02 % and 12 %). Each hour is rounded to the nearest unit, half up. The
decayed value is carried as an integer with 40 extra decimal digits,
``x[h+1] = x[h] × (10¹² − 13,886,952) // 10¹²``; each step truncates less than
10⁻⁴⁰ unit and earlier errors shrink with the decay, so after 175,319 hours the
carried value is within 2 × 10⁻³⁵ unit of the exact rational. The exact values
never come closer than 1.6 × 10⁻⁶ unit to a rounding boundary
(``nearest_half_distance`` measures it), so every hour is the exactly rounded
value. The result is reproducible everywhere because only
integer arithmetic is used: no floats, no ``decimal`` context.

The cap, with the numbers these constants give:

- The unrounded geometric sum over all 175,319 hours is 300,000,003.5545 IO: it
  overshoots the 300M cap by 3.5545 IO.
- Over the first 175,318 hours it is 299,999,603.4246 IO (rounded hours:
  299,999,603.42457675), 396.5754 IO short of the cap.
- So the LAST epoch takes the remainder, 396.57542325 IO, instead of its decayed
  400.12990722 IO; it stays below the hour before it (400.13546389 IO) and the
  schedule sums to exactly 300,000,000 IO. Year one (hours 0–8,759) emits
  37,662,980.35067494 IO.

The general rule (``build_schedule``), which the constants above never reach
before the last epoch: an hour emits ``min(its decayed amount, what is left)``
and the last epoch emits what is left, so the cumulative total never exceeds
the cap; if the cap is reached early, the later epochs emit 0 and the non-zero
hours still strictly decrease (the capped hour is at most its decayed amount,
which is below the hour before: with these constants consecutive hours differ by
at least 555,667 units). Parameters that would leave the last epoch at
or above the hour before it (an undershoot: the remainder would have to
*grow*) are refused with ``ScheduleError`` rather than silently reshaped.

Genesis. ``GENESIS_ALLOCATION`` follows io.net's published split (seed 12.5 %,
series A 10.2 %, core contributors 11.3 %, R&D & ecosystem 16 %, community
50 %). Its base is unconfirmed; we read it as the full 800M, since io.net says
the community reaches about half only after all emissions. The community's 400M
then includes the 300M emission, so 100M of it exists at genesis and the five
categories sum to exactly 500M. Investor
tokens (seed, series A) unlock in 24 monthly tranches in months 13–36, core
contributors' in 36 tranches in months 13–48 (io.net's terms). The R&D &
ecosystem vesting (48 monthly tranches from month 1) and the community's
genesis part (unlocked at genesis) are our assumptions; io.net publishes no
terms for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import cache
from itertools import accumulate
from typing import Literal

IO_DECIMALS = 8
UNITS_PER_IO: int = 10**IO_DECIMALS

# Whole IO.
MAX_SUPPLY = 800_000_000
GENESIS_SUPPLY = 500_000_000
EMISSION_TOTAL = 300_000_000

MAX_SUPPLY_UNITS = MAX_SUPPLY * UNITS_PER_IO
GENESIS_SUPPLY_UNITS = GENESIS_SUPPLY * UNITS_PER_IO
EMISSION_TOTAL_UNITS = EMISSION_TOTAL * UNITS_PER_IO

EPOCHS = 175_319
"""Hourly epochs, io.net's count (about 20 years)."""
FIRST_HOUR = Decimal("4566.21")
FIRST_HOUR_UNITS = 456_621_000_000
DECAY = 1 - Fraction(13_886_952, 10**12)
"""Each hour's amount is the previous hour's × (1 − 0.0013886952 %)."""

HOURS_PER_MONTH = 730
HOURS_PER_YEAR = 8_760
Period = Literal["hour", "month", "year"]
PERIOD_HOURS: dict[Period, int] = {"hour": 1, "month": HOURS_PER_MONTH, "year": HOURS_PER_YEAR}

_GUARD = 10**40
"""Extra precision the decayed amount is carried with (see the module docstring)."""


class ScheduleError(ValueError):
    """Schedule parameters whose last epoch would not be below the hour before it."""

    def __init__(self, last: int, previous: int) -> None:
        self.last = last
        self.previous = previous
        super().__init__(
            f"the last epoch would emit {last} units, not below the hour before it ({previous})"
        )


def _decayed(first_units: int, decay: Fraction, epochs: int) -> Iterable[tuple[int, int]]:
    """(rounded amount, distance of the exact value from the nearest half, in 1/_GUARD)."""
    num, den = decay.numerator, decay.denominator
    x = first_units * _GUARD
    half = _GUARD // 2
    for _ in range(epochs):
        whole, frac = divmod(x, _GUARD)
        yield whole + (frac >= half), abs(frac - half)
        x = x * num // den


def build_schedule(first_units: int, decay: Fraction, epochs: int, total_units: int) -> list[int]:
    """The hourly amounts: decayed, rounded, capped at ``total_units``; the last is the rest."""
    if epochs < 1 or first_units <= 0 or total_units <= 0 or not 0 < decay < 1:
        raise ValueError("need epochs >= 1, positive amounts and 0 < decay < 1")
    amounts: list[int] = []
    left = total_units
    for amount, _ in _decayed(first_units, decay, epochs - 1):
        take = min(amount, left)
        amounts.append(take)
        left -= take
    amounts.append(left)
    if epochs > 1 and left > 0 and left >= amounts[-2]:
        raise ScheduleError(left, amounts[-2])
    return amounts


def nearest_half_distance() -> Fraction:
    """How close any hour's exact value comes to a rounding boundary, in units."""
    return Fraction(min(d for _, d in _decayed(FIRST_HOUR_UNITS, DECAY, EPOCHS)), _GUARD)


@cache
def schedule() -> tuple[int, ...]:
    """All 175,319 hourly amounts, in units; they sum to exactly 300,000,000 IO."""
    return tuple(build_schedule(FIRST_HOUR_UNITS, DECAY, EPOCHS, EMISSION_TOTAL_UNITS))


@cache
def _cumulative() -> tuple[int, ...]:
    return tuple(accumulate(schedule()))


def hour_amount(h: int) -> int:
    """Units emitted in hour ``h`` (0-based); 0 once the schedule has ended."""
    if h < 0:
        raise ValueError(f"hour {h} is before the first epoch")
    return schedule()[h] if h < EPOCHS else 0


def cumulative(h: int) -> int:
    """Units emitted through hour ``h`` inclusive (0 before hour 0, the total after)."""
    if h < 0:
        return 0
    return _cumulative()[min(h, EPOCHS - 1)]


def by_period(period: Period) -> list[tuple[int, int, int]]:
    """(period index from 0, units emitted in it, units emitted through its end).

    A month is 730 hours and a year 8,760; the last period may be partial
    (175,319 hours are 20 years and 119 hours).
    """
    size = PERIOD_HOURS[period]
    amounts = schedule()
    rows: list[tuple[int, int, int]] = []
    total = 0
    for index, start in enumerate(range(0, EPOCHS, size)):
        amount = sum(amounts[start : start + size])
        total += amount
        rows.append((index, amount, total))
    return rows


def to_io(units: int) -> Decimal:
    """Units as an exact IO amount with all 8 places (``Decimal('4566.21000000')``)."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS_PER_IO)
    return Decimal(f"{sign}{whole}.{frac:0{IO_DECIMALS}d}")


def format_io(units: int) -> str:
    """Units for people: ``4,566.21000000`` (thousands separators, all 8 places)."""
    return f"{to_io(units):,.{IO_DECIMALS}f}"


# Genesis allocation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allocation:
    """A genesis category and its vesting: nothing for ``cliff_months``, then
    ``linear_months`` equal monthly tranches (all at once when 0)."""

    name: str
    amount: int
    """Units."""
    cliff_months: int
    linear_months: int
    note: str = ""


GENESIS_ALLOCATION: tuple[Allocation, ...] = (
    Allocation("seed", 100_000_000 * UNITS_PER_IO, 12, 24, "12.5% of 800M"),
    Allocation("series A", 81_600_000 * UNITS_PER_IO, 12, 24, "10.2% of 800M"),
    Allocation("core contributors", 90_400_000 * UNITS_PER_IO, 12, 36, "11.3% of 800M"),
    Allocation("R&D & ecosystem", 128_000_000 * UNITS_PER_IO, 0, 48, "16% of 800M; vesting ours"),
    Allocation(
        "community", 100_000_000 * UNITS_PER_IO, 0, 0, "50% of 800M less emission; vesting ours"
    ),
)


class GenesisError(ValueError):
    """A genesis table that does not add up."""

    def __init__(self, message: str, *, total: int, expected: int) -> None:
        self.total = total
        self.expected = expected
        super().__init__(f"{message}: {total} units, expected {expected}")


def vested(category: Allocation, months_since_genesis: int) -> int:
    """Units of ``category`` unlocked after ``months_since_genesis`` whole months.

    Tranche ``k`` (1-based) unlocks at month ``cliff + k``; the last tranche
    takes what rounding left, so everything is vested at ``cliff + linear``.
    """
    elapsed = months_since_genesis - category.cliff_months
    if category.linear_months == 0:
        return category.amount if elapsed >= 0 else 0
    tranches = min(max(elapsed, 0), category.linear_months)
    return category.amount * tranches // category.linear_months


def validate_genesis(table: Sequence[Allocation]) -> None:
    """Refuse a table that does not sum to the genesis supply, or bad vesting terms."""
    names = [a.name for a in table]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate category names in {names}")
    for a in table:
        if a.amount <= 0 or a.cliff_months < 0 or a.linear_months < 0:
            raise ValueError(f"{a.name}: amount must be positive and months not negative")
    if GENESIS_SUPPLY_UNITS + EMISSION_TOTAL_UNITS != MAX_SUPPLY_UNITS:
        raise GenesisError(
            "genesis plus emission is not the max supply",
            total=GENESIS_SUPPLY_UNITS + EMISSION_TOTAL_UNITS,
            expected=MAX_SUPPLY_UNITS,
        )
    total = sum(a.amount for a in table)
    if total != GENESIS_SUPPLY_UNITS:
        raise GenesisError(
            "the genesis table does not sum to the genesis supply",
            total=total,
            expected=GENESIS_SUPPLY_UNITS,
        )
