"""Hourly block rewards, the rules: who is nominated, scores, pools, an exact split. Pure.

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

Three modules, the arrows one way: ``core/block_columns.py`` says what a block holds
(its inputs and its result, as validated columns), ``core/block_publication.py`` how
they are published (canonical JSON and SHA-256), and this module, which imports both,
how a result is computed from inputs (stamped with the inputs' hash) and how a
published block is checked by computing it again. The rules run over whole columns
with numpy (``Columns``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from idlegrid.core.block_columns import (
    HOUR_S,
    BlockInputs,
    BlockResult,
    DeviceInput,
    Devices,
    PoolTotal,
    Reason,
    RewardPool,
)
from idlegrid.core.block_publication import (
    canonical_json,
    inputs_from_dict,
    inputs_hash,
    outputs_hash,
)
from idlegrid.core.staking import BPS
from idlegrid.errors import InvalidAmount, InvalidRequest
from idlegrid.protocol import DeviceStatus

NOMINATION_UPTIME_S = 5 * HOUR_S
TIER_WEIGHT = Fraction(1, 20)
"""Each connectivity tier adds 5 % to the score (tier 4 → × 1.2)."""

EXCLUDED_STATUSES = frozenset(
    {DeviceStatus.TERMINATED, DeviceStatus.UNSUPPORTED, DeviceStatus.BLOCKED}
)
_INT64_SAFE = 2**62
_SMALL_SPLIT = 64


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


def compute_block(inputs: BlockInputs, inputs_sha256: str | None = None) -> BlockResult:
    """The block for ``inputs``: deterministic, exact, recomputable by anyone.
    ``inputs_sha256`` is ``inputs_hash(inputs)`` when the caller has it already
    (a publisher that built the inputs document once)."""
    d = inputs.devices
    c = Columns(d)
    masks = _failure_masks(c)
    nominated = masks == 0
    weights = np.where(nominated, c.weights(), 0)
    members = {
        RewardPool.GPU: np.flatnonzero(nominated & c.gpu),
        RewardPool.CPU: np.flatnonzero(nominated & ~c.gpu),
    }

    gpu_share = inputs.emission_units * inputs.gpu_pool_bps // BPS
    shares = {RewardPool.GPU: gpu_share, RewardPool.CPU: inputs.emission_units - gpu_share}
    paid = dict(shares)
    notes: list[str] = []
    unpaid = 0
    gpu_empty, cpu_empty = not members[RewardPool.GPU].size, not members[RewardPool.CPU].size
    if gpu_empty and cpu_empty:
        paid = {k: 0 for k in RewardPool}
        unpaid = inputs.emission_units
        notes.append("no device was nominated: nothing was paid")
    elif gpu_empty or cpu_empty:
        empty, other = (
            (RewardPool.GPU, RewardPool.CPU) if gpu_empty else (RewardPool.CPU, RewardPool.GPU)
        )
        paid = {empty: 0, other: inputs.emission_units}
        notes.append(f"no {empty} device was nominated: its share went to the {other} pool")

    units = [0] * c.n
    pools: list[PoolTotal] = []
    for kind in RewardPool:
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

    return BlockResult(
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
    inputs: BlockInputs | Mapping[str, Any], block: BlockResult | Mapping[str, Any] | str
) -> bool:
    """Recompute the block from its published inputs and compare it with the
    published block (a ``BlockResult``, its ``block_to_dict`` form, or its ``outputs_hash``)."""
    try:
        if not isinstance(inputs, BlockInputs):
            inputs = inputs_from_dict(inputs)
        recomputed = compute_block(inputs)
    except (InvalidRequest, InvalidAmount):
        return False
    if isinstance(block, str):
        expected = block
    elif isinstance(block, BlockResult):
        expected = outputs_hash(block)
    else:
        expected = hashlib.sha256(canonical_json(block)).hexdigest()
    return outputs_hash(recomputed) == expected
