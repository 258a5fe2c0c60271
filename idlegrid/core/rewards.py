"""Hourly block rewards: who is nominated, each device's score, and an exact split. Pure.

One block an hour shares that hour's emission (``core.emission.hour_amount``)
among the nominated devices. Everything here is exact integer arithmetic over
plain values, so anyone holding a block's published inputs can recompute it
bit for bit (``verify_block``); ``docs/rewards.md`` states the rules for people.

Nomination. A device is nominated only if all of these hold; otherwise it gets
0 and the block lists *every* rule it failed (``Reason``):

- status is not terminated, unsupported or blocked;
- multiplier > 0 and connectivity tier > 0;
- a reward wallet;
- effective stake ≥ its minimum stake (``core.staking``);
- a passed proof of compute;
- ≥ 5 h cumulative uptime (through the end of this hour);
- some uptime in this hour (a zero score could not share anything).

Score. ``multiplier × processors × (uptime_s / 3600) × (1 + tier / 20)``. In a
block every score is an integer *weight* over one common denominator:
``weight = m × processors × uptime_s × (20 + tier)`` where ``m`` is the
multiplier over the lowest common denominator ``L`` of the block's multipliers,
and ``score = weight / (L × 3600 × 20)`` (the block's ``score_denominator``).

Pools. The GPU pool gets ``⌊emission × gpu_pool_bps / 10,000⌋`` (9,500 bps by
default), the CPU pool the rest. A pool with no nominated device passes its
share to the other pool; if neither has one, nothing is paid and the block says
so (``unpaid_units``).

Rounding. Within a pool, device ``i`` is owed ``pool × weight_i / Σ weight``
exactly; each gets the floor, and the units left over (fewer than the number of
devices) go one each to the largest fractional remainders, ties to the smaller
device id (the largest-remainder method). A device's reward is split the same
way between its owner (``10,000 − Σ co-staker bps``) and its co-stakers (their
``share_bps``), ties to the owner, then by staker id. So a block pays exactly
its emission, to the unit, whenever anyone is nominated, and more score never
earns less within a pool.

Columns. A block holds up to millions of devices, so its inputs are columns
(``Devices``: entry ``i`` of every column is the ``i``-th device by id) and the
rules run over whole columns with numpy; ``DeviceInput`` is one device's row,
for people, tests and small callers.

Publication. ``inputs_hash`` and ``outputs_hash`` are SHA-256 over a canonical
JSON encoding (sorted keys, no spaces, ASCII): the inputs as columns, the
outputs as columns aligned with them (``docs/rewards.md`` has the layout). The
block carries its inputs' hash, so its outputs hash commits to both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import orjson

from idlegrid.core.staking import BPS, parse_multiplier
from idlegrid.errors import InvalidAmount, InvalidRequest
from idlegrid.protocol import DeviceStatus

HOUR_S = 3600
NOMINATION_UPTIME_S = 5 * HOUR_S
DEFAULT_GPU_POOL_BPS = 9_500
TIER_WEIGHT = Fraction(1, 20)
"""Each connectivity tier adds 5 % to the score (tier 4 → × 1.2)."""
ENCODING_VERSION = 2

EXCLUDED_STATUSES = frozenset(
    {DeviceStatus.TERMINATED, DeviceStatus.UNSUPPORTED, DeviceStatus.BLOCKED}
)
_STATUSES = frozenset(s.value for s in DeviceStatus)
_INT64_SAFE = 2**62
_SMALL_SPLIT = 64


class DeviceKind(StrEnum):
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
    kind: DeviceKind
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
            set_(self, "kind", DeviceKind(self.kind))
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
        if not set(self.kind) <= {k.value for k in DeviceKind}:
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
            self.device_id[i], self.owner[i], DeviceKind(self.kind[i]),
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
        if not isinstance(other, BlockInputs):
            return NotImplemented
        return canonical_json(inputs_to_dict(self)) == canonical_json(inputs_to_dict(other))


@dataclass(frozen=True, slots=True)
class DeviceReward:
    device_id: str
    kind: DeviceKind
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
    kind: DeviceKind
    share_units: int
    """The pool's configured share of the emission."""
    paid_units: int
    """What its devices were paid: its share, plus the other pool's if that had no one."""
    nominated: int
    weight: int
    """Σ weight of its nominated devices (score × the block's ``score_denominator``)."""


@dataclass(frozen=True, slots=True)
class Block:
    """A computed block. Per-device results are columns aligned with the inputs'
    devices (``devices``); ``rewards`` and ``excluded`` give them as rows."""

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
                kind=DeviceKind(d.kind[i]),
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


# The rules ----------------------------------------------------------------------------------


def block_hour_seconds(seconds: float, block_length_s: int) -> int:
    """Uptime measured over a block of ``block_length_s`` as whole seconds of a
    block-hour (fast blocks are shorter than an hour; the rules read hours). Exact:
    halves round to even."""
    if block_length_s == HOUR_S:
        return round(seconds)  # the same as through Fraction, a million times faster
    return round(Fraction(seconds) * HOUR_S / block_length_s)


def score(device: DeviceInput) -> Fraction:
    """multiplier × processors × (uptime_s / 3600) × (1 + tier / 20), exact."""
    return (
        device.multiplier
        * device.processors
        * Fraction(device.uptime_s, HOUR_S)
        * (1 + TIER_WEIGHT * device.tier)
    )


def exclusion_reasons(device: DeviceInput) -> tuple[Reason, ...]:
    """Every nomination rule the device fails; empty when it is nominated."""
    columns = Columns(Devices.from_rows([device]))
    (mask,) = _failure_masks(columns).tolist()
    return _REASONS_OF[mask]


_REASON_BITS = tuple(Reason)
_REASONS_OF = {
    mask: tuple(r for bit, r in enumerate(_REASON_BITS) if mask >> bit & 1)
    for mask in range(1 << len(_REASON_BITS))
}
_REASON_TEXT = {mask: ",".join(reasons) for mask, reasons in _REASONS_OF.items()}


class Columns:
    """A block's device columns as numpy arrays, for rules over whole columns (here
    and in ``core/seasons.py``): the multipliers as exact integers ``m`` over their
    common denominator ``lcd``; object arrays (Python integers) where int64 is too small."""

    def __init__(self, d: Devices) -> None:
        n = len(d)
        self.n = n
        values = {text: Fraction(text) for text in set(d.multiplier)}
        self.lcd = math.lcm(*(f.denominator for f in values.values())) if values else 1
        numerators = {t: f.numerator * (self.lcd // f.denominator) for t, f in values.items()}
        big = max(numerators.values(), default=0) >= _INT64_SAFE
        self.m = np.fromiter(
            (numerators[t] for t in d.multiplier), dtype=object if big else np.int64, count=n
        )

        def ints(name: str) -> npt.NDArray[Any]:
            column = getattr(d, name)
            big = n and max(column) >= _INT64_SAFE
            return np.array(column, dtype=object if big else np.int64)

        self.processors, self.uptime, self.cumulative = (
            ints("processors"), ints("uptime_s"), ints("cumulative_uptime_s")
        )  # fmt: skip
        self.stake, self.minimum, self.tier = (
            ints("stake_units"), ints("minimum_stake_units"), ints("tier")
        )  # fmt: skip
        self.proof = np.array(d.proof_passed, dtype=bool)
        self.wallet = np.array(d.has_wallet, dtype=bool)
        excluded = {s.value for s in EXCLUDED_STATUSES}
        self.bad_status = np.fromiter((s in excluded for s in d.status), dtype=bool, count=n)
        self.gpu = np.fromiter((k == "gpu" for k in d.kind), dtype=bool, count=n)

    def weights(self) -> npt.NDArray[Any]:
        """m × processors × uptime_s × (20 + tier), exact."""
        return exact_product((self.m, self.processors, self.uptime, 20 + self.tier))


def exact_product(parts: tuple[npt.NDArray[Any], ...]) -> npt.NDArray[Any]:
    """The element-wise product of non-negative integer columns: int64 when even the
    largest product, summed over every row, cannot overflow; else Python integers."""
    n = len(parts[0])
    bound = math.prod(int(p.max()) for p in parts) * n if n else 0
    if bound >= _INT64_SAFE or any(p.dtype == object for p in parts):
        parts = tuple(p.astype(object) for p in parts)
    out: npt.NDArray[Any] = math.prod(parts[1:], start=parts[0])
    return out


def _failure_masks(c: Columns) -> npt.NDArray[np.int64]:
    """Per device, bit ``k`` set when it fails the ``k``-th rule of ``Reason``."""
    failed = {
        Reason.STATUS: c.bad_status,
        Reason.NO_MULTIPLIER: c.m <= 0,
        Reason.NO_TIER: c.tier <= 0,
        Reason.NO_WALLET: ~c.wallet,
        Reason.STAKE_BELOW_MINIMUM: c.stake < c.minimum,
        Reason.PROOF_NOT_PASSED: ~c.proof,
        Reason.UPTIME_BELOW_5H: c.cumulative < NOMINATION_UPTIME_S,
        Reason.NO_UPTIME_THIS_HOUR: c.uptime <= 0,
    }
    mask = np.zeros(c.n, dtype=np.int64)
    for bit, reason in enumerate(_REASON_BITS):
        mask |= np.asarray(failed[reason], dtype=np.int64) << bit
    return mask


def split_exact(total: int, weights: Sequence[Fraction | int]) -> list[int]:
    """Split ``total`` units by ``weights`` so the parts sum to exactly ``total``.

    Largest remainder: each part is ``⌊total × wᵢ / Σw⌋`` and the units left
    over go one each to the largest fractional remainders; equal remainders go
    to the earlier position (callers order positions by their tie-break).
    """
    if all(type(w) is int for w in weights):
        return _split(total, weights)  # type: ignore[arg-type]
    fractions = [Fraction(w) for w in weights]
    scale = math.lcm(*{f.denominator for f in fractions}) if fractions else 1
    return _split(total, [f.numerator * (scale // f.denominator) for f in fractions])


def _split(total: int, weights: Sequence[int]) -> list[int]:
    """``split_exact`` over integer weights (a million in well under a second)."""
    weight_sum = sum(weights)
    if total < 0 or weight_sum <= 0 or min(weights) < 0:
        raise ValueError("need a non-negative total and non-negative weights with a positive sum")
    parts: list[int] = []
    remainders: list[int] = []
    add_part, add_remainder = parts.append, remainders.append
    for w in weights:
        q, r = divmod(total * w, weight_sum)
        add_part(q)
        add_remainder(r)
    left = total - sum(parts)
    if left and len(parts) <= _SMALL_SPLIT:  # a co-stake split: numpy would cost more
        for i in sorted(range(len(parts)), key=lambda i: (-remainders[i], i))[:left]:
            parts[i] += 1
    elif left:
        big = weight_sum >= _INT64_SAFE
        order = np.argsort(-np.array(remainders, dtype=object if big else np.int64), kind="stable")
        for i in order[:left].tolist():
            parts[i] += 1
    return parts


def compute_block(inputs: BlockInputs, inputs_sha256: str | None = None) -> Block:
    """The block for ``inputs``: deterministic, exact, recomputable by anyone.
    ``inputs_sha256`` is ``inputs_hash(inputs)`` when the caller has it already
    (a publisher that built the inputs document once)."""
    d = inputs.devices
    c = Columns(d)
    masks = _failure_masks(c)
    nominated = masks == 0
    weights = np.where(nominated, c.weights(), 0)
    members = {
        DeviceKind.GPU: np.flatnonzero(nominated & c.gpu),
        DeviceKind.CPU: np.flatnonzero(nominated & ~c.gpu),
    }

    gpu_share = inputs.emission_units * inputs.gpu_pool_bps // BPS
    shares = {DeviceKind.GPU: gpu_share, DeviceKind.CPU: inputs.emission_units - gpu_share}
    paid = dict(shares)
    notes: list[str] = []
    unpaid = 0
    gpu_empty, cpu_empty = not members[DeviceKind.GPU].size, not members[DeviceKind.CPU].size
    if gpu_empty and cpu_empty:
        paid = {k: 0 for k in DeviceKind}
        unpaid = inputs.emission_units
        notes.append("no device was nominated: nothing was paid")
    elif gpu_empty or cpu_empty:
        empty, other = (
            (DeviceKind.GPU, DeviceKind.CPU) if gpu_empty else (DeviceKind.CPU, DeviceKind.GPU)
        )
        paid = {empty: 0, other: inputs.emission_units}
        notes.append(f"no {empty} device was nominated: its share went to the {other} pool")

    units = [0] * c.n
    pools: list[PoolTotal] = []
    for kind in DeviceKind:
        index = members[kind]
        pool_weights = weights[index].tolist()
        if pool_weights:
            for i, u in zip(index.tolist(), _split(paid[kind], pool_weights), strict=True):
                units[i] = u
        pools.append(PoolTotal(kind, shares[kind], paid[kind], len(index), sum(pool_weights)))

    failed = masks.tolist()
    owner_units = list(units)
    costaker_units: list[tuple[int, str, int]] = []
    for i, stakes in _grouped(d.costakers):
        if failed[i]:
            continue  # an excluded device earns nothing to share
        owner_bps = BPS - sum(b for _, b in stakes)
        split = _split(units[i], [owner_bps, *(b for _, b in stakes)]) if units[i] else None
        owner_units[i] = split[0] if split else 0
        costaker_units += [(i, s, split[k + 1] if split else 0) for k, (s, _) in enumerate(stakes)]

    return Block(
        hour=inputs.hour,
        inputs_hash=inputs_sha256 or inputs_hash(inputs),
        emission_units=inputs.emission_units,
        score_denominator=c.lcd * HOUR_S * TIER_WEIGHT.denominator,
        pools=tuple(pools),
        devices=d,
        weights=weights.tolist(),
        units=units,
        owner_units=owner_units,
        reasons=[_REASON_TEXT[m] for m in failed],
        costaker_units=tuple(costaker_units),
        unpaid_units=unpaid,
        notes=tuple(notes),
    )


def _grouped(
    costakers: Sequence[tuple[int, str, int]],
) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """Co-stakes (sorted by device index) grouped per device: (index, [(staker, bps)])."""
    current, stakes = -1, list[tuple[str, int]]()
    for i, staker, bps in costakers:
        if i != current and stakes:
            yield current, stakes
            stakes = []
        current = i
        stakes.append((staker, bps))
    if stakes:
        yield current, stakes


# Publication --------------------------------------------------------------------------------


def inputs_to_dict(inputs: BlockInputs) -> dict[str, Any]:
    """The canonical, JSON-ready form of a block's inputs (what is published)."""
    d = inputs.devices
    return {
        "v": ENCODING_VERSION,
        "hour": inputs.hour,
        "emission_units": inputs.emission_units,
        "gpu_pool_bps": inputs.gpu_pool_bps,
        "devices": {name: getattr(d, name) for name in COLUMNS},
        "costakers": d.costakers,
    }


def inputs_from_dict(data: Mapping[str, Any]) -> BlockInputs:
    """Rebuild published inputs (the inverse of ``inputs_to_dict``)."""
    if data.get("v") != ENCODING_VERSION:
        raise InvalidRequest("unknown block encoding version", v=data.get("v"))
    try:
        columns = data["devices"]
        devices = Devices(
            **{name: columns[name] for name in COLUMNS},
            costakers=[tuple(entry) for entry in data["costakers"]],
        )
        return BlockInputs(
            hour=data["hour"],
            emission_units=data["emission_units"],
            devices=devices,
            gpu_pool_bps=data["gpu_pool_bps"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest("malformed block inputs", error=str(exc)) from None


def block_to_dict(block: Block) -> dict[str, Any]:
    """The canonical, JSON-ready form of a block (what is published); its per-device
    columns are aligned with the inputs' devices."""
    return {
        "v": ENCODING_VERSION,
        "hour": block.hour,
        "inputs_hash": block.inputs_hash,
        "emission_units": block.emission_units,
        "unpaid_units": block.unpaid_units,
        "notes": list(block.notes),
        "score_denominator": block.score_denominator,
        "pools": [
            {
                "kind": p.kind.value,
                "share_units": p.share_units,
                "paid_units": p.paid_units,
                "nominated": p.nominated,
                "weight": p.weight,
            }
            for p in block.pools
        ],
        "devices": {
            "weight": block.weights,
            "units": block.units,
            "owner_units": block.owner_units,
            "reasons": block.reasons,
        },
        "costakers": block.costaker_units,
    }


def published_rows(
    inputs: Mapping[str, Any], outputs: Mapping[str, Any], limit: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A published block as rows for people: (nominated devices, excluded devices), by
    id, at most ``limit`` of each. Nominated: device_id, owner, kind, score ("p/q"),
    units, owner_units and costakers ([staker, units]); excluded: device_id, reasons."""
    d, out = inputs["devices"], outputs["devices"]
    denominator = outputs["score_denominator"]
    costakers: dict[int, list[list[Any]]] = {}
    for i, staker, units in outputs["costakers"]:
        costakers.setdefault(i, []).append([staker, units])
    paid: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for i, why in enumerate(out["reasons"]):
        if limit is not None and len(paid) >= limit and len(excluded) >= limit:
            break
        if why:
            if limit is None or len(excluded) < limit:
                excluded.append({"device_id": d["device_id"][i], "reasons": why.split(",")})
        elif limit is None or len(paid) < limit:
            paid.append(
                {
                    "device_id": d["device_id"][i],
                    "owner": d["owner"][i],
                    "kind": d["kind"][i],
                    "score": multiplier_text(Fraction(out["weight"][i], denominator)),
                    "units": out["units"][i],
                    "owner_units": out["owner_units"][i],
                    "costakers": costakers.get(i, []),
                }
            )
    return paid, excluded


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """``json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``,
    as bytes: what is hashed and published. orjson writes the same bytes three times
    as fast for what blocks hold (integers within 64 bits, ASCII text); anything else
    takes the standard library's path, so the bytes never depend on the encoder."""
    try:
        out = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        out = b""  # an integer beyond 64 bits
    if out and out.isascii():
        return out
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def inputs_hash(inputs: BlockInputs) -> str:
    return hashlib.sha256(canonical_json(inputs_to_dict(inputs))).hexdigest()


def outputs_hash(block: Block) -> str:
    return hashlib.sha256(canonical_json(block_to_dict(block))).hexdigest()


def verify_published(
    inputs: bytes, outputs: bytes, inputs_copy: Mapping[str, Any] | None = None
) -> bool:
    """Check a block as published, from the exact bytes served: the outputs name the
    inputs' SHA-256, and the block recomputed from the inputs (or from ``inputs_copy``,
    a copy someone holds) hashes to the outputs' SHA-256."""
    named = json.loads(outputs).get("inputs_hash")
    if named != hashlib.sha256(inputs).hexdigest():
        return False
    data = inputs_copy if inputs_copy is not None else json.loads(inputs)
    return verify_block(data, hashlib.sha256(outputs).hexdigest())


def verify_block(
    inputs: BlockInputs | Mapping[str, Any], block: Block | Mapping[str, Any] | str
) -> bool:
    """Recompute the block from its published inputs and compare it with the
    published block (a ``Block``, its ``block_to_dict`` form, or its ``outputs_hash``)."""
    try:
        if not isinstance(inputs, BlockInputs):
            inputs = inputs_from_dict(inputs)
        recomputed = compute_block(inputs)
    except (InvalidRequest, InvalidAmount):
        return False
    if isinstance(block, str):
        expected = block
    elif isinstance(block, Block):
        expected = outputs_hash(block)
    else:
        expected = hashlib.sha256(canonical_json(block)).hexdigest()
    return outputs_hash(recomputed) == expected
