"""Staking rules: the minimum stake, owner stakes, co-stakes and their cooldowns. Pure.

Plain values in, plain values out; ``now`` is passed in (seconds since the
epoch, like ``core.lifecycle``). Amounts are ``int`` in the token's smallest
unit (10⁻⁸ IO). The DB, the ledger transfers that lock and release the IO, and
the clock belong to a service.

Minimum stake per device: ``200 IO × max(1, multiplier) × processors``
(8×H100 at multiplier 10 → 16,000 IO). The multiplier is exact (a ``Fraction``
parsed from its decimal text), so 1.25 or 2.75 give an exact number of units;
were a multiplier to have more than 8 decimal places the result would be
rounded *up* to the next unit, since a minimum must never be under-collateralised.

A device's stake::

    owner  active ──unstake──▶ cooling (14 days) ──▶ withdrawable
    co-stake earning ──exit──▶ notice (7 days, still earning) ──▶ cooling (14 days) ──▶ withdrawable

- Only the owner's active stake and the co-stakes not yet past their notice
  *count*; cooling stake counts for nothing (``effective_stake``).
- A hired device cannot unstake (its owner's stake backs the running job).
- Co-stakes cover at most 50 % of the device's stake: counting co-stakes may
  not exceed the owner's active stake. Should the owner later unstake below
  them, ``effective_stake`` credits co-stakes only up to the owner's active
  stake, so the 50 % rule holds for what counts.
- The owner offers ``share_bps`` of the device's block reward for co-stakes
  as large as its own active stake (the most co-stakes may cover); each
  co-stake keeps the offer it joined at. A co-staker earns its offer in
  proportion to what it staked: ``share_bps × amount / max(owner's active
  stake, all earning co-stakes)``, rounded down, the rest to the owner
  (``reward_shares``). So the shares sum to at most the largest offer, a dust
  co-stake earns dust, and none can lock out a real one. A co-stake is at least
  ``MIN_COSTAKE_UNITS`` (10 IO), and a device takes at most ``MAX_COSTAKERS``
  (16). A co-staker earns through its notice period and stops once it cools down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction

from idlegrid.core.emission import UNITS_PER_IO
from idlegrid.errors import (
    CoStakeExists,
    CoStakeLimit,
    InsufficientFunds,
    InvalidAmount,
    InvalidTransition,
)

BASE_STAKE_UNITS: int = 200 * UNITS_PER_IO
"""200 IO per processor at multiplier ≤ 1."""
DAY_S = 24 * 3600
UNSTAKE_COOLDOWN_S = 14 * DAY_S
COSTAKE_NOTICE_S = 7 * DAY_S
COSTAKE_COOLDOWN_S = 14 * DAY_S
BPS = 10_000
MAX_COSTAKE_BPS = 5_000
"""Co-stakes may cover at most half of a device's stake."""
MIN_COSTAKE_UNITS = 10 * UNITS_PER_IO
MAX_COSTAKERS = 16

Multiplier = Fraction | Decimal | str | int


def parse_multiplier(value: Multiplier | float) -> Fraction:
    """An exact multiplier. Text and ``Decimal`` are exact; a ``float`` is read by
    its shortest decimal text (``2.75`` → 11/4), as the catalog writes them."""
    if isinstance(value, Fraction):
        m = value
    elif isinstance(value, float):
        m = Fraction(repr(value))
    else:
        try:
            m = Fraction(value)
        except (ValueError, TypeError, ZeroDivisionError, OverflowError):
            raise InvalidAmount("not a number", multiplier=str(value)) from None
    if m < 0:
        raise InvalidAmount("a hardware multiplier cannot be negative", multiplier=str(m))
    return m


def minimum_stake(multiplier: Multiplier | float, processors: int) -> int:
    """Units a device must stake: 200 IO × max(1, multiplier) × processors, rounded up."""
    if isinstance(processors, bool) or not isinstance(processors, int) or processors < 1:
        raise InvalidAmount("a device has at least one processor", processors=processors)
    exact = BASE_STAKE_UNITS * max(Fraction(1), parse_multiplier(multiplier)) * processors
    return -((-exact.numerator) // exact.denominator)


@dataclass(frozen=True, slots=True)
class Cooldown:
    """Owner stake on its way out: it counts for nothing and unlocks at ``unlocks_at``."""

    amount: int
    unlocks_at: float


@dataclass(frozen=True, slots=True)
class CoStake:
    """A co-staker's IO behind a device, for ``share_bps`` of its rewards."""

    staker: str
    amount: int
    share_bps: int
    exit_requested_at: float | None = None

    def counts(self, now: float) -> bool:
        """Earning and backing the device: no exit asked, or still in its notice."""
        return self.exit_requested_at is None or now < self.exit_requested_at + COSTAKE_NOTICE_S

    def unlocks_at(self) -> float | None:
        if self.exit_requested_at is None:
            return None
        return self.exit_requested_at + COSTAKE_NOTICE_S + COSTAKE_COOLDOWN_S


@dataclass(frozen=True, slots=True)
class Stake:
    """Everything staked on one device."""

    device_id: str
    owner: str
    active: int = 0
    cooling: tuple[Cooldown, ...] = ()
    costakes: tuple[CoStake, ...] = ()


def _positive(amount: int, what: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidAmount(f"the {what} must be a positive number of units", amount=amount)


def counting_costake(stake: Stake, now: float) -> int:
    """Units of co-stake that count now (before the 50 % cap)."""
    return sum(c.amount for c in stake.costakes if c.counts(now))


def effective_stake(stake: Stake, now: float) -> int:
    """What backs the device now: the owner's active stake plus the counting
    co-stakes, the latter credited up to the owner's active stake (the 50 % rule)."""
    return stake.active + min(counting_costake(stake, now), stake.active)


def reward_shares(stake: Stake, now: float) -> tuple[tuple[str, int], ...]:
    """(staker, share_bps) of the co-stakers who earn now, by staker id: each its
    offer scaled by what it backs, ``amount / max(owner's active, earning co-stakes)``,
    rounded down (the remainder is the owner's)."""
    earning = [c for c in stake.costakes if c.counts(now)]
    base = max(stake.active, sum(c.amount for c in earning))
    if base <= 0:
        return ()
    return tuple(sorted((c.staker, c.share_bps * c.amount // base) for c in earning))


# Owner stake -------------------------------------------------------------------------------


def check_stake(stake: Stake, amount: int) -> None:
    _positive(amount, "stake")


def add_stake(stake: Stake, amount: int) -> Stake:
    check_stake(stake, amount)
    return replace(stake, active=stake.active + amount)


def check_unstake(stake: Stake, amount: int, *, hired: bool) -> None:
    """Refuse an unstake that is not positive, over the active stake, or on a hired device."""
    _positive(amount, "unstake")
    if hired:
        raise InvalidTransition(
            "a hired device cannot unstake", device_id=stake.device_id, reason="hired"
        )
    if amount > stake.active:
        raise InsufficientFunds(
            "the unstake exceeds the active stake",
            account=stake.device_id,
            needed=amount,
            available=stake.active,
        )


def unstake(stake: Stake, amount: int, *, hired: bool, now: float) -> Stake:
    """Move ``amount`` from active to cooling; it unlocks after 14 days."""
    check_unstake(stake, amount, hired=hired)
    cooldown = Cooldown(amount, now + UNSTAKE_COOLDOWN_S)
    return replace(stake, active=stake.active - amount, cooling=(*stake.cooling, cooldown))


def withdraw_unlocked(stake: Stake, now: float) -> tuple[Stake, int]:
    """Release every cooldown that has run out: (the stake left, units to return)."""
    done = [c for c in stake.cooling if c.unlocks_at <= now]
    left = tuple(c for c in stake.cooling if c.unlocks_at > now)
    return replace(stake, cooling=left), sum(c.amount for c in done)


# Co-stakes ---------------------------------------------------------------------------------


def check_costake(stake: Stake, staker: str, amount: int, share_bps: int, now: float) -> None:
    """Refuse a co-stake under the minimum, over the 50 % cap or the number of
    co-stakers, with an offer out of bounds, or a duplicate."""
    _positive(amount, "co-stake")
    if amount < MIN_COSTAKE_UNITS:
        raise InvalidAmount(
            "a co-stake is at least 10 IO", amount=amount, minimum=MIN_COSTAKE_UNITS
        )
    if staker == stake.owner or any(c.staker == staker for c in stake.costakes):
        raise CoStakeExists(device_id=stake.device_id, staker=staker)
    if isinstance(share_bps, bool) or not isinstance(share_bps, int) or not 0 <= share_bps <= BPS:
        raise InvalidAmount("share_bps is 0-10,000", share_bps=share_bps)
    if len(stake.costakes) >= MAX_COSTAKERS:
        raise CoStakeLimit(
            "the device has as many co-stakers as it may",
            device_id=stake.device_id,
            costakers=len(stake.costakes),
            max_costakers=MAX_COSTAKERS,
        )
    covered = counting_costake(stake, now) + amount
    allowed = stake.active  # co ≤ owner ⇔ co ≤ 50 % of owner + co
    if covered > allowed:
        raise CoStakeLimit(
            device_id=stake.device_id,
            costake=covered,
            allowed=allowed,
            max_bps=MAX_COSTAKE_BPS,
        )


def add_costake(stake: Stake, staker: str, amount: int, share_bps: int, now: float) -> Stake:
    check_costake(stake, staker, amount, share_bps, now)
    return replace(stake, costakes=(*stake.costakes, CoStake(staker, amount, share_bps)))


def _find(stake: Stake, staker: str) -> CoStake:
    for c in stake.costakes:
        if c.staker == staker:
            return c
    raise InvalidTransition("no such co-stake", device_id=stake.device_id, staker=staker)


def request_costake_exit(stake: Stake, staker: str, now: float) -> Stake:
    """Start the 7-day notice; the stake then cools down 14 days before it unlocks."""
    current = _find(stake, staker)
    if current.exit_requested_at is not None:
        raise InvalidTransition(
            "exit already requested",
            device_id=stake.device_id,
            staker=staker,
            unlocks_at=current.unlocks_at(),
        )
    costakes = tuple(
        replace(c, exit_requested_at=now) if c.staker == staker else c for c in stake.costakes
    )
    return replace(stake, costakes=costakes)


def withdraw_costake(stake: Stake, staker: str, now: float) -> tuple[Stake, int]:
    """Remove a co-stake whose notice and cooldown have passed: (the stake left, units)."""
    current = _find(stake, staker)
    unlocks_at = current.unlocks_at()
    if unlocks_at is None or now < unlocks_at:
        raise InvalidTransition(
            "the co-stake is still locked",
            device_id=stake.device_id,
            staker=staker,
            unlocks_at=unlocks_at,
        )
    left = tuple(c for c in stake.costakes if c.staker != staker)
    return replace(stake, costakes=left), current.amount


# Slashing ----------------------------------------------------------------------------------


def slash(stake: Stake, bps: int) -> tuple[Stake, tuple[tuple[str, int], ...]]:
    """Take ``bps`` of everything staked on the device, owner and co-stakers alike
    (active, cooling and co-stakes each lose the same share, rounded down): the
    stake left and (staker, units taken), the owner first as ``stake.owner``."""
    if isinstance(bps, bool) or not isinstance(bps, int) or not 0 < bps <= BPS:
        raise InvalidAmount("a slash takes 1-10,000 bps", bps=bps)

    def cut(units: int) -> int:
        return units * bps // BPS

    active_cut = cut(stake.active)
    cooling = tuple(replace(c, amount=c.amount - cut(c.amount)) for c in stake.cooling)
    owner_cut = active_cut + sum(cut(c.amount) for c in stake.cooling)
    costakes = tuple(replace(c, amount=c.amount - cut(c.amount)) for c in stake.costakes)
    shares = ((stake.owner, owner_cut), *((c.staker, cut(c.amount)) for c in stake.costakes))
    left = replace(stake, active=stake.active - active_cut, cooling=cooling, costakes=costakes)
    return left, tuple((s, u) for s, u in shares if u > 0)


def restore(
    stake: Stake, shares: tuple[tuple[str, int], ...]
) -> tuple[Stake, tuple[tuple[str, int], ...]]:
    """Give a slash back after an accepted appeal: to the owner's active stake and
    to each co-staker still on the device. Returns the stake and (staker, units) to
    pay out to co-stakers who have left the device since (their part is theirs)."""
    owner_units = sum(u for s, u in shares if s == stake.owner)
    back = dict(shares)
    present = {c.staker for c in stake.costakes}
    costakes = tuple(replace(c, amount=c.amount + back.get(c.staker, 0)) for c in stake.costakes)
    gone = tuple((s, u) for s, u in shares if s != stake.owner and s not in present and u > 0)
    return replace(stake, active=stake.active + owner_units, costakes=costakes), gone


# Reading a stake -----------------------------------------------------------------------------


def locked(stake: Stake) -> int:
    """Every unit held on the device: active, cooling and co-staked."""
    return (
        stake.active + sum(c.amount for c in stake.cooling) + sum(c.amount for c in stake.costakes)
    )


def meets_minimum(stake: Stake, minimum: int, now: float) -> bool:
    """Fully staked: the effective stake reaches a (positive) minimum."""
    return effective_stake(stake, now) >= minimum > 0
