"""Hourly block rewards: who is nominated, each device's score, and an exact split. Pure.

One block an hour shares that hour's emission (``core.emission.hour_amount``)
among the nominated devices. Everything here is exact integer or ``Fraction``
arithmetic over plain values, so anyone holding a block's published inputs can
recompute it bit for bit (``verify_block``); ``docs/rewards.md`` states the
rules for people.

Nomination. A device is nominated only if all of these hold; otherwise it gets
0 and the block lists *every* rule it failed (``Reason``):

- status is not terminated, unsupported or blocked;
- multiplier > 0 and connectivity tier > 0;
- a reward wallet;
- effective stake ≥ its minimum stake (``core.staking``);
- a passed proof of compute;
- ≥ 5 h cumulative uptime (through the end of this hour);
- some uptime in this hour (a zero score could not share anything).

Score. ``multiplier × processors × (uptime_s / 3600) × (1 + tier / 20)``, kept
as an exact ``Fraction``; ``uptime_s`` is whole seconds in this hour (0–3600).

Pools. The GPU pool gets ``⌊emission × gpu_pool_bps / 10,000⌋`` (9,500 bps by
default), the CPU pool the rest. A pool with no nominated device passes its
share to the other pool; if neither has one, nothing is paid and the block says
so (``unpaid_units``).

Rounding. Within a pool, device ``i`` is owed ``pool × score_i / Σ score``
exactly; each gets the floor, and the units left over (fewer than the number of
devices) go one each to the largest fractional remainders, ties to the smaller
device id (the largest-remainder method). A device's reward is split the same
way between its owner (``10,000 − Σ co-staker bps``) and its co-stakers (their
``share_bps``), ties to the owner, then by staker id. So a block pays exactly
its emission, to the unit, whenever anyone is nominated, and more score never
earns less within a pool.

Publication. ``inputs_hash`` and ``outputs_hash`` are SHA-256 over a canonical
JSON encoding (sorted keys, no spaces, ASCII, devices by id, fractions as
``"p/q"`` text); the block carries its inputs' hash, so its outputs hash
commits to both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

from idlegrid.core.staking import BPS, parse_multiplier
from idlegrid.errors import InvalidAmount, InvalidRequest
from idlegrid.protocol import DeviceStatus

HOUR_S = 3600
NOMINATION_UPTIME_S = 5 * HOUR_S
DEFAULT_GPU_POOL_BPS = 9_500
TIER_WEIGHT = Fraction(1, 20)
"""Each connectivity tier adds 5 % to the score (tier 4 → × 1.2)."""
ENCODING_VERSION = 1

EXCLUDED_STATUSES = frozenset(
    {DeviceStatus.TERMINATED, DeviceStatus.UNSUPPORTED, DeviceStatus.BLOCKED}
)


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


@dataclass(frozen=True, slots=True)
class BlockInputs:
    """Everything a block is computed from; devices are kept sorted by id."""

    hour: int
    emission_units: int
    devices: tuple[DeviceInput, ...]
    gpu_pool_bps: int = DEFAULT_GPU_POOL_BPS

    def __post_init__(self) -> None:
        _int(self.hour, "hour")
        _int(self.emission_units, "emission_units")
        _int(self.gpu_pool_bps, "gpu_pool_bps", 0, BPS)
        devices = tuple(sorted(self.devices, key=lambda d: d.device_id))
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("a device is listed twice", hour=self.hour)
        object.__setattr__(self, "devices", devices)


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
    score: Fraction


@dataclass(frozen=True, slots=True)
class Block:
    hour: int
    inputs_hash: str
    emission_units: int
    pools: tuple[PoolTotal, ...]
    rewards: tuple[DeviceReward, ...]
    """Nominated devices, by id."""
    excluded: tuple[Excluded, ...]
    """Devices left out (reward 0), by id."""
    unpaid_units: int
    """The emission when no device at all was nominated; otherwise 0."""
    notes: tuple[str, ...] = field(default=())

    def reward_of(self, device_id: str) -> int:
        return next((r.units for r in self.rewards if r.device_id == device_id), 0)


# The rules ----------------------------------------------------------------------------------


def block_hour_seconds(seconds: float, block_length_s: int) -> int:
    """Uptime measured over a block of ``block_length_s`` as whole seconds of a
    block-hour (fast blocks are shorter than an hour; the rules read hours)."""
    return round(Fraction(seconds) * HOUR_S / block_length_s)


def exclusion_reasons(device: DeviceInput) -> tuple[Reason, ...]:
    """Every nomination rule the device fails; empty when it is nominated."""
    checks = (
        (Reason.STATUS, device.status in EXCLUDED_STATUSES),
        (Reason.NO_MULTIPLIER, device.multiplier <= 0),
        (Reason.NO_TIER, device.tier <= 0),
        (Reason.NO_WALLET, not device.has_wallet),
        (Reason.STAKE_BELOW_MINIMUM, device.stake_units < device.minimum_stake_units),
        (Reason.PROOF_NOT_PASSED, not device.proof_passed),
        (Reason.UPTIME_BELOW_5H, device.cumulative_uptime_s < NOMINATION_UPTIME_S),
        (Reason.NO_UPTIME_THIS_HOUR, device.uptime_s <= 0),
    )
    return tuple(reason for reason, failed in checks if failed)


def score(device: DeviceInput) -> Fraction:
    """multiplier × processors × (uptime_s / 3600) × (1 + tier / 20), exact."""
    m, tw = device.multiplier, TIER_WEIGHT
    # One Fraction built from integers (one gcd), not four multiplications.
    return Fraction(
        m.numerator
        * device.processors
        * device.uptime_s
        * (tw.denominator + tw.numerator * device.tier),
        m.denominator * HOUR_S * tw.denominator,
    )


def split_exact(total: int, weights: Sequence[Fraction | int]) -> list[int]:
    """Split ``total`` units by ``weights`` so the parts sum to exactly ``total``.

    Largest remainder: each part is ``⌊total × wᵢ / Σw⌋`` and the units left
    over go one each to the largest fractional remainders; equal remainders go
    to the earlier position (callers order positions by their tie-break).
    The weights are brought to integers over their common denominator first,
    so the whole split is integer arithmetic (a million devices in seconds).
    """
    fractions = [Fraction(w) for w in weights]
    scale = math.lcm(*{f.denominator for f in fractions}) if fractions else 1
    ints = [f.numerator * (scale // f.denominator) for f in fractions]
    weight_sum = sum(ints)
    if total < 0 or weight_sum <= 0 or any(w < 0 for w in ints):
        raise ValueError("need a non-negative total and non-negative weights with a positive sum")
    parts, remainders = [], []
    for w in ints:
        q, r = divmod(total * w, weight_sum)
        parts.append(q)
        remainders.append(r)
    left = total - sum(parts)
    order = sorted(range(len(ints)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        parts[i] += 1
    return parts


def _total(scores: Sequence[Fraction]) -> Fraction:
    """Σ scores over their common denominator: one Fraction, not one per addition."""
    if not scores:
        return Fraction(0)
    scale = math.lcm(*{f.denominator for f in scores})
    return Fraction(sum(f.numerator * (scale // f.denominator) for f in scores), scale)


def _device_reward(device: DeviceInput, device_score: Fraction, units: int) -> DeviceReward:
    owner_bps = BPS - sum(b for _, b in device.costakers)
    if not device.costakers:
        split = [units]
    else:
        split = split_exact(units, [owner_bps, *(b for _, b in device.costakers)])
    return DeviceReward(
        device_id=device.device_id,
        kind=device.kind,
        score=device_score,
        units=units,
        owner=device.owner,
        owner_units=split[0],
        costakers=tuple((s, u) for (s, _), u in zip(device.costakers, split[1:], strict=True)),
    )


def compute_block(inputs: BlockInputs, inputs_sha256: str | None = None) -> Block:
    """The block for ``inputs``: deterministic, exact, recomputable by anyone.
    ``inputs_sha256`` is ``inputs_hash(inputs)`` when the caller has it already
    (a publisher that built the inputs document once)."""
    nominated: dict[DeviceKind, list[DeviceInput]] = {k: [] for k in DeviceKind}
    excluded: list[Excluded] = []
    for device in inputs.devices:
        reasons = exclusion_reasons(device)
        if reasons:
            excluded.append(Excluded(device.device_id, reasons))
        else:
            nominated[device.kind].append(device)

    gpu_share = inputs.emission_units * inputs.gpu_pool_bps // BPS
    shares = {DeviceKind.GPU: gpu_share, DeviceKind.CPU: inputs.emission_units - gpu_share}
    paid = dict(shares)
    notes: list[str] = []
    unpaid = 0
    gpu_empty, cpu_empty = not nominated[DeviceKind.GPU], not nominated[DeviceKind.CPU]
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

    rewards: list[DeviceReward] = []
    pools: list[PoolTotal] = []
    for kind in DeviceKind:
        devices = nominated[kind]
        scores = [score(d) for d in devices]
        units = split_exact(paid[kind], scores) if devices else []
        rewards.extend(
            _device_reward(d, s, u) for d, s, u in zip(devices, scores, units, strict=True)
        )
        pools.append(PoolTotal(kind, shares[kind], paid[kind], len(devices), _total(scores)))

    return Block(
        hour=inputs.hour,
        inputs_hash=inputs_sha256 or inputs_hash(inputs),
        emission_units=inputs.emission_units,
        pools=tuple(pools),
        rewards=tuple(sorted(rewards, key=lambda r: r.device_id)),
        excluded=tuple(excluded),
        unpaid_units=unpaid,
        notes=tuple(notes),
    )


# Publication --------------------------------------------------------------------------------


def _frac(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def inputs_to_dict(inputs: BlockInputs) -> dict[str, Any]:
    """The canonical, JSON-ready form of a block's inputs (what is published)."""
    return {
        "v": ENCODING_VERSION,
        "hour": inputs.hour,
        "emission_units": inputs.emission_units,
        "gpu_pool_bps": inputs.gpu_pool_bps,
        "devices": [
            {
                "device_id": d.device_id,
                "owner": d.owner,
                "kind": d.kind.value,
                "multiplier": _frac(d.multiplier),
                "processors": d.processors,
                "uptime_s": d.uptime_s,
                "cumulative_uptime_s": d.cumulative_uptime_s,
                "proof_passed": d.proof_passed,
                "stake_units": d.stake_units,
                "minimum_stake_units": d.minimum_stake_units,
                "has_wallet": d.has_wallet,
                "tier": d.tier,
                "status": d.status.value,
                "costakers": [[s, b] for s, b in d.costakers],
            }
            for d in inputs.devices
        ],
    }


def inputs_from_dict(data: Mapping[str, Any]) -> BlockInputs:
    """Rebuild published inputs (the inverse of ``inputs_to_dict``)."""
    if data.get("v") != ENCODING_VERSION:
        raise InvalidRequest("unknown block encoding version", v=data.get("v"))
    try:
        devices = tuple(
            DeviceInput(
                device_id=d["device_id"],
                owner=d["owner"],
                kind=DeviceKind(d["kind"]),
                multiplier=Fraction(d["multiplier"]),
                processors=d["processors"],
                uptime_s=d["uptime_s"],
                cumulative_uptime_s=d["cumulative_uptime_s"],
                proof_passed=bool(d["proof_passed"]),
                stake_units=d["stake_units"],
                minimum_stake_units=d["minimum_stake_units"],
                has_wallet=bool(d["has_wallet"]),
                tier=d["tier"],
                status=DeviceStatus(d["status"]),
                costakers=tuple((s, b) for s, b in d["costakers"]),
            )
            for d in data["devices"]
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
    """The canonical, JSON-ready form of a block (what is published)."""
    return {
        "v": ENCODING_VERSION,
        "hour": block.hour,
        "inputs_hash": block.inputs_hash,
        "emission_units": block.emission_units,
        "unpaid_units": block.unpaid_units,
        "notes": list(block.notes),
        "pools": [
            {
                "kind": p.kind.value,
                "share_units": p.share_units,
                "paid_units": p.paid_units,
                "nominated": p.nominated,
                "score": _frac(p.score),
            }
            for p in block.pools
        ],
        "rewards": [
            {
                "device_id": r.device_id,
                "kind": r.kind.value,
                "score": _frac(r.score),
                "units": r.units,
                "owner": r.owner,
                "owner_units": r.owner_units,
                "costakers": [[s, u] for s, u in r.costakers],
            }
            for r in block.rewards
        ],
        "excluded": [
            {"device_id": e.device_id, "reasons": [r.value for r in e.reasons]}
            for e in block.excluded
        ],
    }


def canonical_json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def inputs_hash(inputs: BlockInputs) -> str:
    return hashlib.sha256(canonical_json(inputs_to_dict(inputs))).hexdigest()


def outputs_hash(block: Block) -> str:
    return hashlib.sha256(canonical_json(block_to_dict(block))).hexdigest()


def verify_block(
    inputs: BlockInputs | Mapping[str, Any], block: Block | Mapping[str, Any] | str
) -> bool:
    """Recompute the block from its published inputs and compare it with the
    published block (a ``Block``, its ``block_to_dict`` form, or its ``outputs_hash``)."""
    try:
        if not isinstance(inputs, BlockInputs):
            inputs = inputs_from_dict(inputs)
        recomputed = compute_block(inputs)
    except InvalidRequest:
        return False
    if isinstance(block, str):
        expected = block
    elif isinstance(block, Block):
        expected = outputs_hash(block)
    else:
        expected = hashlib.sha256(canonical_json(block)).hexdigest()
    return outputs_hash(recomputed) == expected
