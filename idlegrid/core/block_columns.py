"""What an hourly reward block is made of: its inputs and its results, as columns. Pure.

A block holds up to millions of devices, so its inputs are columns (``Devices``:
entry ``i`` of every column is the ``i``-th device by id, with ``BlockInputs`` the
hour, emission and pool split around them) and so are its results (``BlockResult``:
each device's weight, units and reasons, aligned with the inputs' devices).
``DeviceInput``, ``DeviceReward`` and ``Excluded`` are one device's row, for people,
tests and small callers.

Every value is checked on construction, so what is computed from these and what is
published of them can trust them. Neither happens here: this module says what a block
holds; ``core/rewards.py`` has the rules that compute a result from inputs and
``core/block_publication.py`` the canonical JSON and hashes of both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import overload

from idlegrid.core.staking import BPS, parse_multiplier
from idlegrid.errors import InvalidAmount, InvalidRequest
from idlegrid.protocol import DeviceStatus

HOUR_S = 3600
DEFAULT_GPU_POOL_BPS = 9_500

_STATUSES = frozenset(s.value for s in DeviceStatus)


class RewardPool(StrEnum):
    """Which of a block's two pools a device shares, by its hardware: GPUs and Apple
    silicon (``protocol.DeviceKind`` gpu and apple) the GPU pool, CPUs the CPU pool.
    Published as the inputs' ``kind`` column and each pool's ``kind``."""

    GPU = "gpu"
    CPU = "cpu"


class Reason(StrEnum):
    """Why a device was not nominated, in the order the block lists them."""

    STATUS = "status"
    NO_MULTIPLIER = "multiplier_zero"
    NO_TIER = "tier_zero"
    NO_WALLET = "no_wallet"
    STAKE_BELOW_MINIMUM = "stake_below_minimum"
    PROOF_NOT_PASSED = "proof_not_passed"
    UPTIME_BELOW_5H = "cumulative_uptime_below_5h"
    NO_UPTIME_THIS_HOUR = "no_uptime_this_hour"


def _int(value: object, name: str, low: int = 0, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
        raise InvalidAmount(f"{name} must be an integer in [{low}, {high}]", **{name: value})
    return value  # type: ignore[return-value]


def multiplier_text(value: Fraction) -> str:
    """A multiplier as published: exact ``"p/q"`` text."""
    return f"{value.numerator}/{value.denominator}"


@dataclass(frozen=True, slots=True)
class DeviceInput:
    """One device's facts for one hour, as the server recorded them."""

    device_id: str
    owner: str
    kind: RewardPool
    multiplier: Fraction
    processors: int
    uptime_s: int
    """Whole seconds of uptime in this hour (0–3600)."""
    cumulative_uptime_s: int
    """Whole seconds of uptime over the device's life, through the end of this hour."""
    proof_passed: bool
    stake_units: int
    """Effective stake (``staking.effective_stake``) at the block's hour."""
    minimum_stake_units: int
    has_wallet: bool
    tier: int
    status: DeviceStatus
    costakers: tuple[tuple[str, int], ...] = ()
    """(staker, share_bps) of the co-stakers who earn (``staking.reward_shares``)."""

    def __post_init__(self) -> None:
        # Tolerate text for the enums and the multiplier ("1.25"), store them exact.
        set_ = object.__setattr__
        set_(self, "multiplier", parse_multiplier(self.multiplier))
        try:
            set_(self, "kind", RewardPool(self.kind))
            set_(self, "status", DeviceStatus(self.status))
        except ValueError as exc:
            raise InvalidRequest(str(exc), device_id=self.device_id) from None
        _int(self.processors, "processors", 1)
        _int(self.uptime_s, "uptime_s", 0, HOUR_S)
        _int(self.cumulative_uptime_s, "cumulative_uptime_s", self.uptime_s)
        _int(self.stake_units, "stake_units")
        _int(self.minimum_stake_units, "minimum_stake_units")
        _int(self.tier, "tier")
        shares = tuple(sorted((str(s), _int(b, "share_bps", 0, BPS)) for s, b in self.costakers))
        stakers = [s for s, _ in shares]
        if len(set(stakers)) != len(stakers) or self.owner in stakers:
            raise InvalidRequest("a co-staker is listed twice", device_id=self.device_id)
        _int(sum(b for _, b in shares), "total_share_bps", 0, BPS)
        set_(self, "costakers", shares)


_INT_COLUMNS = (
    ("processors", 1),
    ("uptime_s", 0),
    ("cumulative_uptime_s", 0),
    ("stake_units", 0),
    ("minimum_stake_units", 0),
    ("tier", 0),
)
_BOOL_COLUMNS = ("proof_passed", "has_wallet")
COLUMNS = (
    "device_id", "owner", "kind", "multiplier", "processors", "uptime_s",
    "cumulative_uptime_s", "proof_passed", "stake_units", "minimum_stake_units",
    "has_wallet", "tier", "status",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Devices:
    """A block's devices as columns: entry ``i`` of each is the ``i``-th device by id.

    Validated on construction (the same rules as ``DeviceInput``, column-wise):
    ids strictly increasing, kinds and statuses known, multipliers exact ``"p/q"``
    text ≥ 0, integers in range, ``cumulative_uptime_s ≥ uptime_s``; co-stakers
    as ``(device index, staker, share_bps)`` sorted by index then staker, never the
    owner, at most 10,000 bps per device.
    """

    device_id: Sequence[str]
    owner: Sequence[str]
    kind: Sequence[str]
    multiplier: Sequence[str]
    processors: Sequence[int]
    uptime_s: Sequence[int]
    cumulative_uptime_s: Sequence[int]
    proof_passed: Sequence[bool]
    stake_units: Sequence[int]
    minimum_stake_units: Sequence[int]
    has_wallet: Sequence[bool]
    tier: Sequence[int]
    status: Sequence[str]
    costakers: Sequence[tuple[int, str, int]] = ()

    def __post_init__(self) -> None:
        n = len(self.device_id)
        for name in COLUMNS:
            if len(getattr(self, name)) != n:
                raise InvalidRequest("the device columns differ in length", column=name)
        ids = self.device_id
        if not all(isinstance(i, str) for i in ids) or not all(map(str.__lt__, ids, ids[1:])):
            raise InvalidRequest("device ids must be unique text, in increasing order")
        if not set(map(type, self.owner)) <= {str}:
            raise InvalidRequest("owners must be text")
        if not set(self.kind) <= {k.value for k in RewardPool}:
            raise InvalidRequest("unknown device kind", kinds=sorted(map(str, set(self.kind))))
        if not set(self.status) <= _STATUSES:
            raise InvalidRequest("unknown device status")
        for text in set(self.multiplier):
            if not isinstance(text, str) or multiplier_text(parse_multiplier(text)) != text:
                raise InvalidAmount("a multiplier must be exact 'p/q' text", multiplier=text)
        for name, low in _INT_COLUMNS:
            column = getattr(self, name)
            if n and (not set(map(type, column)) <= {int} or min(column) < low):
                raise InvalidAmount(f"{name} must hold integers ≥ {low}", column=name)
        if n and max(self.uptime_s) > HOUR_S:
            raise InvalidAmount(f"uptime_s must be at most {HOUR_S}", column="uptime_s")
        if any(map(int.__lt__, self.cumulative_uptime_s, self.uptime_s)):
            raise InvalidAmount("cumulative_uptime_s is below uptime_s", column="uptime_s")
        for name in _BOOL_COLUMNS:
            if not set(map(type, getattr(self, name))) <= {bool}:
                raise InvalidRequest(f"{name} must hold true or false", column=name)
        self._check_costakers(n)

    def _check_costakers(self, n: int) -> None:
        total: dict[int, int] = {}
        last: tuple[int, str] = (-1, "")
        for entry in self.costakers:
            try:
                index, staker, bps = entry
            except (TypeError, ValueError):
                raise InvalidRequest("a co-stake is (device index, staker, bps)") from None
            _int(index, "device_index", 0, n - 1)
            _int(bps, "share_bps", 0, BPS)
            if not isinstance(staker, str) or (index, staker) <= last:
                raise InvalidRequest("co-stakes must be sorted by device, then staker, once each")
            if staker == self.owner[index]:
                raise InvalidRequest("an owner cannot co-stake", device_id=self.device_id[index])
            last = (index, staker)
            total[index] = total.get(index, 0) + bps
            _int(total[index], "total_share_bps", 0, BPS)

    def __len__(self) -> int:
        return len(self.device_id)

    @overload
    def __getitem__(self, i: int) -> DeviceInput: ...
    @overload
    def __getitem__(self, i: slice) -> list[DeviceInput]: ...
    def __getitem__(self, i: int | slice) -> DeviceInput | list[DeviceInput]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        i = range(len(self))[i]
        return self._row(i, tuple((s, b) for j, s, b in self.costakers if j == i))

    def __iter__(self) -> Iterator[DeviceInput]:
        by_index: dict[int, list[tuple[str, int]]] = {}
        for j, s, b in self.costakers:
            by_index.setdefault(j, []).append((s, b))
        for i in range(len(self)):
            yield self._row(i, tuple(by_index.get(i, ())))

    def _row(self, i: int, costakers: tuple[tuple[str, int], ...]) -> DeviceInput:
        return DeviceInput(
            self.device_id[i], self.owner[i], RewardPool(self.kind[i]),
            Fraction(self.multiplier[i]), self.processors[i], self.uptime_s[i],
            self.cumulative_uptime_s[i], self.proof_passed[i], self.stake_units[i],
            self.minimum_stake_units[i], self.has_wallet[i], self.tier[i],
            DeviceStatus(self.status[i]), costakers,
        )  # fmt: skip

    @classmethod
    def from_rows(cls, rows: Iterable[DeviceInput]) -> Devices:
        """Columns from device rows, in any order (they are sorted by id)."""
        ordered = sorted(rows, key=lambda d: d.device_id)
        return cls(
            device_id=[d.device_id for d in ordered],
            owner=[d.owner for d in ordered],
            kind=[d.kind.value for d in ordered],
            multiplier=[multiplier_text(d.multiplier) for d in ordered],
            processors=[d.processors for d in ordered],
            uptime_s=[d.uptime_s for d in ordered],
            cumulative_uptime_s=[d.cumulative_uptime_s for d in ordered],
            proof_passed=[d.proof_passed for d in ordered],
            stake_units=[d.stake_units for d in ordered],
            minimum_stake_units=[d.minimum_stake_units for d in ordered],
            has_wallet=[d.has_wallet for d in ordered],
            tier=[d.tier for d in ordered],
            status=[d.status.value for d in ordered],
            costakers=[(i, s, b) for i, d in enumerate(ordered) for s, b in d.costakers],
        )


@dataclass(frozen=True, slots=True)
class BlockInputs:
    """Everything a block is computed from. ``devices`` may be given as rows
    (``DeviceInput``s, any order); it is kept as ``Devices`` columns."""

    hour: int
    emission_units: int
    devices: Devices
    gpu_pool_bps: int = DEFAULT_GPU_POOL_BPS

    def __post_init__(self) -> None:
        _int(self.hour, "hour")
        _int(self.emission_units, "emission_units")
        _int(self.gpu_pool_bps, "gpu_pool_bps", 0, BPS)
        if not isinstance(self.devices, Devices):
            rows = list(self.devices)
            if len({d.device_id for d in rows}) != len(rows):
                raise InvalidRequest("a device is listed twice", hour=self.hour)
            object.__setattr__(self, "devices", Devices.from_rows(rows))

    def __eq__(self, other: object) -> bool:
        """Equal when they hold the same values, whatever sequences hold the columns:
        when they publish the same document."""
        if not isinstance(other, BlockInputs):
            return NotImplemented
        a, b = self.devices, other.devices
        return (
            (self.hour, self.emission_units, self.gpu_pool_bps)
            == (other.hour, other.emission_units, other.gpu_pool_bps)
            and all(list(getattr(a, name)) == list(getattr(b, name)) for name in COLUMNS)
            and list(map(tuple, a.costakers)) == list(map(tuple, b.costakers))
        )


@dataclass(frozen=True, slots=True)
class DeviceReward:
    device_id: str
    kind: RewardPool
    score: Fraction
    units: int
    owner: str
    owner_units: int
    costakers: tuple[tuple[str, int], ...] = ()
    """(staker, units), by staker id."""


@dataclass(frozen=True, slots=True)
class Excluded:
    device_id: str
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class PoolTotal:
    kind: RewardPool
    share_units: int
    """The pool's configured share of the emission."""
    paid_units: int
    """What its devices were paid: its share, plus the other pool's if that had no one."""
    nominated: int
    weight: int
    """Σ weight of its nominated devices (score × the block's ``score_denominator``)."""


@dataclass(frozen=True, slots=True)
class BlockResult:
    """A computed block (the server's row for a block is ``server.db.models.Block``).
    Per-device results are columns aligned with the inputs' devices (``devices``);
    ``rewards`` and ``excluded`` give them as rows."""

    hour: int
    inputs_hash: str
    emission_units: int
    score_denominator: int
    pools: tuple[PoolTotal, ...]
    devices: Devices
    weights: Sequence[int]
    """Per device; 0 when excluded."""
    units: Sequence[int]
    owner_units: Sequence[int]
    reasons: Sequence[str]
    """Per device: "" when nominated, else the failed rules' values joined by commas."""
    costaker_units: tuple[tuple[int, str, int], ...]
    """(device index, staker, units) for every co-stake of a nominated device."""
    unpaid_units: int
    """The emission when no device at all was nominated; otherwise 0."""
    notes: tuple[str, ...] = field(default=())

    @property
    def rewards(self) -> tuple[DeviceReward, ...]:
        """The nominated devices, by id."""
        d, co = self.devices, self._costakers_by_index()
        return tuple(
            DeviceReward(
                device_id=d.device_id[i],
                kind=RewardPool(d.kind[i]),
                score=Fraction(self.weights[i], self.score_denominator),
                units=self.units[i],
                owner=d.owner[i],
                owner_units=self.owner_units[i],
                costakers=tuple(co.get(i, ())),
            )
            for i, why in enumerate(self.reasons)
            if not why
        )

    @property
    def excluded(self) -> tuple[Excluded, ...]:
        """The devices left out (reward 0), by id, with every rule each failed."""
        return tuple(
            Excluded(self.devices.device_id[i], tuple(Reason(r) for r in why.split(",")))
            for i, why in enumerate(self.reasons)
            if why
        )

    @property
    def nominated(self) -> int:
        return sum(p.nominated for p in self.pools)

    def reward_of(self, device_id: str) -> int:
        ids = self.devices.device_id
        i = _index(ids, device_id)
        return self.units[i] if i is not None else 0

    def credits(self) -> dict[str, int]:
        """Units owed to each recipient (owners and co-stakers), those owed nothing left out."""
        owed: defaultdict[str, int] = defaultdict(int)
        for owner, units in zip(self.devices.owner, self.owner_units, strict=True):
            owed[owner] += units
        for _, staker, units in self.costaker_units:
            owed[staker] += units
        return {wallet: units for wallet, units in owed.items() if units}

    def _costakers_by_index(self) -> dict[int, list[tuple[str, int]]]:
        by_index: dict[int, list[tuple[str, int]]] = {}
        for i, staker, units in self.costaker_units:
            by_index.setdefault(i, []).append((staker, units))
        return by_index


def _index(ids: Sequence[str], device_id: str) -> int | None:
    lo, hi = 0, len(ids)
    while lo < hi:  # ids are sorted: bisect without copying a million of them
        mid = (lo + hi) // 2
        if ids[mid] < device_id:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < len(ids) and ids[lo] == device_id else None
