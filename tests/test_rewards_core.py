"""Pure-core tests: the minimum stake, staking rules and the hourly reward block."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlegrid.core import rewards, staking
from idlegrid.core.block_columns import BlockInputs, DeviceInput, Devices, Reason, RewardPool
from idlegrid.core.block_publication import (
    block_to_dict,
    canonical_json,
    inputs_from_dict,
    inputs_hash,
    inputs_to_dict,
    outputs_hash,
)
from idlegrid.core.staking import UNITS_PER_IO as U
from idlegrid.errors import InsufficientFunds, InvalidAmount, InvalidRequest, InvalidTransition
from idlegrid.protocol import DeviceStatus

DAY = 24 * 3600
NOW = 1_700_000_000.0

# Minimum stake -------------------------------------------------------------------------------


def test_minimum_stake_examples() -> None:
    assert staking.minimum_stake(10, 8) == 16_000 * U  # 8×H100
    assert staking.minimum_stake("1", 1) == 200 * U  # a CPU
    assert staking.minimum_stake("0.75", 1) == 200 * U  # below 1 counts as 1
    assert staking.minimum_stake(0, 4) == 800 * U  # unsupported: still the floor
    assert staking.minimum_stake("1.25", 1) == 250 * U
    assert staking.minimum_stake(Fraction(11, 4), 3) == 1_650 * U
    assert staking.minimum_stake(2.75, 1) == 550 * U  # a catalog float, read by its text
    assert staking.minimum_stake("1.0000000000001", 1) == 200 * U + 1  # rounded up, never down


@pytest.mark.parametrize(("multiplier", "processors"), [("-1", 1), ("x", 1), ("1", 0), (1, True)])
def test_minimum_stake_refuses_nonsense(multiplier: str | int, processors: int) -> None:
    with pytest.raises(InvalidAmount):
        staking.minimum_stake(multiplier, processors)


# Staking rules -------------------------------------------------------------------------------


def _stake(active: int = 1_000 * U) -> staking.Stake:
    return staking.Stake("dev-1", "alice", active=active)


def test_unstake_cools_down_14_days_and_does_not_count() -> None:
    stake = staking.unstake(_stake(), 400 * U, hired=False, now=NOW)
    assert stake.active == 600 * U
    assert staking.effective_stake(stake, NOW) == 600 * U
    assert stake.cooling == (staking.Cooldown(400 * U, NOW + 14 * DAY),)
    assert staking.withdraw_unlocked(stake, NOW + 14 * DAY - 1) == (stake, 0)
    left, released = staking.withdraw_unlocked(stake, NOW + 14 * DAY)
    assert released == 400 * U and left.cooling == ()


def test_hired_device_cannot_unstake() -> None:
    with pytest.raises(InvalidTransition) as err:
        staking.unstake(_stake(), 1, hired=True, now=NOW)
    assert err.value.details["reason"] == "hired"


def test_unstake_more_than_active_or_nonpositive_raises() -> None:
    with pytest.raises(InsufficientFunds) as err:
        staking.check_unstake(_stake(10), 11, hired=False)
    assert err.value.details == {"account": "dev-1", "needed": 11, "available": 10}
    for bad in (0, -1):
        with pytest.raises(InvalidAmount):
            staking.check_unstake(_stake(), bad, hired=False)
        with pytest.raises(InvalidAmount):
            staking.check_stake(_stake(), bad)


def test_costakes_cover_at_most_half() -> None:
    stake = staking.add_costake(_stake(1_000 * U), "bob", 600 * U, 1_000, NOW)
    stake = staking.add_costake(stake, "carol", 400 * U, 500, NOW)  # exactly half of 2,000
    assert staking.effective_stake(stake, NOW) == 2_000 * U
    with pytest.raises(staking.CoStakeLimit) as err:
        staking.add_costake(stake, "dave", 10 * U, 0, NOW)
    assert err.value.details["allowed"] == 1_000 * U and err.value.code == "costake_limit"
    with pytest.raises(staking.CoStakeExists):
        staking.add_costake(_stake(), "alice", 10 * U, 0, NOW)
    with pytest.raises(staking.CoStakeExists):
        staking.add_costake(stake, "bob", 10 * U, 0, NOW)


def test_a_costakers_share_follows_what_it_staked() -> None:
    owner = _stake(16_000 * U)  # 8×H100; the owner offers 20 % for a full co-stake
    dusty = owner
    with pytest.raises(InvalidAmount) as dust:  # 10⁻⁸ IO buys nothing
        staking.add_costake(owner, "dust", 1, 2_000, NOW)
    assert dust.value.details["minimum"] == staking.MIN_COSTAKE_UNITS
    for i in range(5):  # five minimal co-stakes
        dusty = staking.add_costake(dusty, f"d{i}", staking.MIN_COSTAKE_UNITS, 2_000, NOW)
    assert all(bps == 1 for _, bps in staking.reward_shares(dusty, NOW))  # 10/16,000 of 20 %
    real = staking.add_costake(dusty, "real", 8_000 * U, 2_000, NOW)  # not locked out
    shares = dict(staking.reward_shares(real, NOW))
    assert shares["real"] == 1_000  # half the most co-stakes may cover: half the offer
    assert sum(shares.values()) <= 2_000
    full = staking.add_costake(owner, "full", 16_000 * U, 2_000, NOW)
    assert staking.reward_shares(full, NOW) == (("full", 2_000),)


def test_a_device_takes_a_bounded_number_of_costakers() -> None:
    stake = _stake(1_000_000 * U)
    for i in range(staking.MAX_COSTAKERS):
        stake = staking.add_costake(stake, f"s{i:02}", 10 * U, 100, NOW)
    with pytest.raises(staking.CoStakeLimit) as err:
        staking.add_costake(stake, "one-more", 10 * U, 100, NOW)
    assert err.value.details["max_costakers"] == staking.MAX_COSTAKERS
    with pytest.raises(InvalidAmount):
        staking.add_costake(_stake(), "bob", 10 * U, 10_001, NOW)


def test_an_accepted_appeal_pays_a_departed_costaker_its_part() -> None:
    stake = staking.add_costake(_stake(1_000 * U), "bob", 500 * U, 0, NOW)
    slashed, shares = staking.slash(stake, 1_000)
    assert dict(shares) == {"alice": 100 * U, "bob": 50 * U}
    slashed = staking.request_costake_exit(slashed, "bob", NOW)
    gone, units = staking.withdraw_costake(slashed, "bob", NOW + 21 * DAY)
    assert units == 450 * U
    restored, paid_out = staking.restore(gone, shares)
    assert restored.active == 1_000 * U and paid_out == (("bob", 50 * U),)
    kept, nobody = staking.restore(slashed, shares)  # still there: back on the device
    assert kept.costakes[0].amount == 500 * U and nobody == ()


def test_owner_unstaking_below_costakes_caps_their_credit() -> None:
    stake = staking.add_costake(_stake(1_000 * U), "bob", 1_000 * U, 0, NOW)
    stake = staking.unstake(stake, 600 * U, hired=False, now=NOW)
    assert staking.effective_stake(stake, NOW) == 800 * U  # 400 owner + 400 of bob's 1,000


def test_costaker_exit_is_7_days_notice_then_14_days_cooldown() -> None:
    stake = staking.add_costake(_stake(1_000 * U), "bob", 1_000 * U, 2_000, NOW)
    stake = staking.request_costake_exit(stake, "bob", NOW)
    with pytest.raises(InvalidTransition):
        staking.request_costake_exit(stake, "bob", NOW + 1)
    # Notice: still counts and earns.
    assert staking.effective_stake(stake, NOW + 7 * DAY - 1) == 2_000 * U
    assert staking.reward_shares(stake, NOW + 7 * DAY - 1) == (("bob", 2_000),)
    # Cooldown: counts for nothing, earns nothing, still locked.
    assert staking.effective_stake(stake, NOW + 7 * DAY) == 1_000 * U
    assert staking.reward_shares(stake, NOW + 7 * DAY) == ()
    with pytest.raises(InvalidTransition):
        staking.withdraw_costake(stake, "bob", NOW + 21 * DAY - 1)
    left, units = staking.withdraw_costake(stake, "bob", NOW + 21 * DAY)
    assert units == 1_000 * U and left.costakes == ()
    with pytest.raises(InvalidTransition):
        staking.withdraw_costake(_stake(), "nobody", NOW)


# Blocks ---------------------------------------------------------------------------------------


def _device(device_id: str = "d1", **changes: object) -> DeviceInput:
    base = DeviceInput(
        device_id=device_id,
        owner=f"owner-{device_id}",
        kind=RewardPool.GPU,
        multiplier=Fraction(10),
        processors=8,
        uptime_s=3600,
        cumulative_uptime_s=10 * 3600,
        proof_passed=True,
        stake_units=16_000 * U,
        minimum_stake_units=16_000 * U,
        has_wallet=True,
        tier=2,
        status=DeviceStatus.UP,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


EMISSION = 456_621_000_000


def test_score_formula() -> None:
    d = _device(multiplier=Fraction(5, 4), processors=2, uptime_s=1800, tier=4)
    assert (
        rewards.score(d) == Fraction(5, 4) * 2 * Fraction(1, 2) * Fraction(6, 5) == Fraction(3, 2)
    )


def test_a_single_gpu_takes_the_whole_emission_when_no_cpu_is_nominated() -> None:
    block = rewards.compute_block(BlockInputs(7, EMISSION, (_device(),)))
    assert block.reward_of("d1") == EMISSION
    gpu, cpu = block.pools
    assert (gpu.share_units, gpu.paid_units) == (EMISSION * 95 // 100, EMISSION)
    assert (cpu.share_units, cpu.paid_units, cpu.nominated) == (EMISSION * 5 // 100, 0, 0)
    assert block.notes == ("no cpu device was nominated: its share went to the gpu pool",)


def test_pools_split_95_5_and_nothing_is_paid_without_nominees() -> None:
    cpu = _device("c1", kind=RewardPool.CPU, multiplier=Fraction(1), processors=16)
    block = rewards.compute_block(BlockInputs(0, 1_001, (_device(), cpu)))
    assert (block.reward_of("d1"), block.reward_of("c1")) == (950, 51)
    empty = rewards.compute_block(BlockInputs(0, 1_001, (_device(proof_passed=False),)))
    assert empty.rewards == () and empty.unpaid_units == 1_001
    assert empty.notes == ("no device was nominated: nothing was paid",)


def test_exclusions_list_every_failed_rule() -> None:
    bad = _device(
        "bad",
        status=DeviceStatus.BLOCKED,
        multiplier=Fraction(0),
        tier=0,
        has_wallet=False,
        stake_units=1,
        proof_passed=False,
        uptime_s=0,
        cumulative_uptime_s=5 * 3600 - 1,
    )
    block = rewards.compute_block(BlockInputs(0, 100, (bad, _device())))
    (excluded,) = block.excluded
    assert excluded.device_id == "bad" and excluded.reasons == tuple(Reason)
    assert block.reward_of("bad") == 0
    for status in (DeviceStatus.TERMINATED, DeviceStatus.UNSUPPORTED):
        assert rewards.exclusion_reasons(_device(status=status)) == (Reason.STATUS,)
    assert rewards.exclusion_reasons(_device(status=DeviceStatus.PAUSED)) == ()
    assert rewards.exclusion_reasons(_device(cumulative_uptime_s=5 * 3600)) == ()


def test_ties_go_to_the_smaller_device_id() -> None:
    devices = tuple(_device(i) for i in ("c", "a", "b"))
    block = rewards.compute_block(BlockInputs(0, 100, devices, gpu_pool_bps=10_000))
    assert [(r.device_id, r.units) for r in block.rewards] == [("a", 34), ("b", 33), ("c", 33)]


def test_costaker_split_is_exact_with_ties_to_the_owner() -> None:
    # Owed: owner 1.5, y 0.75, z 0.75 → floors 1, 0, 0; the two left go to y and z.
    d = _device(costakers=(("z", 2_500), ("y", 2_500)))
    (r,) = rewards.compute_block(BlockInputs(0, 3, (d,))).rewards
    assert (r.units, r.owner_units, r.costakers) == (3, 1, (("y", 1), ("z", 1)))
    # Owed: owner 1, y 0.5, z 0.5 → the one left goes to y (the smaller id).
    (r,) = rewards.compute_block(BlockInputs(0, 2, (d,))).rewards
    assert (r.owner_units, r.costakers) == (1, (("y", 1), ("z", 0)))
    # Owed: owner 0.5, y 0.5 → the owner wins the tie.
    d = _device(costakers=(("y", 5_000),))
    (r,) = rewards.compute_block(BlockInputs(0, 1, (d,))).rewards
    assert (r.owner_units, r.costakers) == (1, (("y", 0),))


def test_inputs_are_validated() -> None:
    with pytest.raises(InvalidAmount):
        _device(uptime_s=3601)
    with pytest.raises(InvalidAmount):
        _device(costakers=(("a", 6_000), ("b", 5_000)))
    with pytest.raises(InvalidAmount):
        _device(multiplier=Fraction(-1))
    with pytest.raises(InvalidAmount):
        BlockInputs(0, 1, (), gpu_pool_bps=10_001)
    with pytest.raises(InvalidRequest):
        BlockInputs(0, 1, (_device(), _device()))


# Properties -----------------------------------------------------------------------------------

_multipliers = st.sampled_from(["0", "0.75", "1", "1.25", "1.5", "2.75", "10", "30"])


@st.composite
def _devices(draw: st.DrawFn, device_id: str) -> DeviceInput:
    n_co = draw(st.integers(0, 3))
    bps = draw(st.lists(st.integers(0, 3_333), min_size=n_co, max_size=n_co))
    uptime = draw(st.integers(0, 3600))
    device = DeviceInput(
        device_id=device_id,
        owner=f"o-{device_id}",
        kind=draw(st.sampled_from(RewardPool)),
        multiplier=staking.parse_multiplier(draw(_multipliers)),
        processors=draw(st.integers(1, 8)),
        uptime_s=uptime,
        cumulative_uptime_s=uptime + draw(st.sampled_from([0, 4 * 3600, 5 * 3600, 10**6])),
        proof_passed=draw(st.booleans()),
        stake_units=draw(st.sampled_from([0, 200 * U, 16_000 * U])),
        minimum_stake_units=200 * U,
        has_wallet=draw(st.booleans()),
        tier=draw(st.integers(0, 4)),
        status=draw(st.sampled_from(DeviceStatus)),
        costakers=tuple((f"s{i}", b) for i, b in enumerate(bps)),
    )
    if draw(st.booleans()):  # about half pass every rule, so most blocks pay someone
        device = replace(
            device,
            multiplier=max(device.multiplier, Fraction(3, 4)),
            cumulative_uptime_s=uptime + 5 * 3600,
            proof_passed=True,
            stake_units=200 * U,
            has_wallet=True,
            tier=max(device.tier, 1),
            status=DeviceStatus.UP,
        )
    return device


@st.composite
def _inputs(draw: st.DrawFn) -> BlockInputs:
    n = draw(st.integers(0, 12))
    devices = tuple(draw(_devices(f"dev-{i:02d}")) for i in range(n))
    return BlockInputs(
        hour=draw(st.integers(0, 175_318)),
        emission_units=draw(st.integers(0, 10**12)),
        devices=devices,
        gpu_pool_bps=draw(st.sampled_from([9_500, 0, 10_000, 5_000, 1])),
    )


@settings(max_examples=300, deadline=None)
@given(_inputs())
def test_block_pays_exactly_its_emission(inputs: BlockInputs) -> None:
    block = rewards.compute_block(inputs)
    paid = sum(r.units for r in block.rewards)
    assert paid + block.unpaid_units == inputs.emission_units
    assert block.unpaid_units == (0 if block.rewards else inputs.emission_units)
    assert sum(p.paid_units for p in block.pools) == paid
    assert sum(p.share_units for p in block.pools) == inputs.emission_units
    ids = {d.device_id for d in inputs.devices}
    assert {r.device_id for r in block.rewards} | {e.device_id for e in block.excluded} == ids
    for r in block.rewards:
        assert r.units >= 0 and r.owner_units >= 0
        assert all(u >= 0 for _, u in r.costakers)
        assert r.owner_units + sum(u for _, u in r.costakers) == r.units
    for e in block.excluded:
        assert e.reasons and block.reward_of(e.device_id) == 0
    # The column-wise rules agree with the one-device statements of them.
    by_id = {d.device_id: d for d in inputs.devices}
    for r in block.rewards:
        assert r.score == rewards.score(by_id[r.device_id])
        assert rewards.exclusion_reasons(by_id[r.device_id]) == ()
    for e in block.excluded:
        assert rewards.exclusion_reasons(by_id[e.device_id]) == e.reasons
    assert sum(block.credits().values()) == paid


@settings(max_examples=200, deadline=None)
@given(_inputs())
def test_more_score_never_earns_less_within_a_pool(inputs: BlockInputs) -> None:
    block = rewards.compute_block(inputs)
    for kind in RewardPool:
        pool = [r for r in block.rewards if r.kind == kind]
        for a in pool:
            for b in pool:
                if a.score > b.score:
                    assert a.units >= b.units
                if a.score == b.score:
                    assert abs(a.units - b.units) <= 1


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**15), st.lists(st.integers(0, 10**6), min_size=1, max_size=20))
def test_split_exact_sums_and_is_within_one_unit_of_the_exact_share(
    total: int, weights: list[int]
) -> None:
    if sum(weights) == 0:
        with pytest.raises(ValueError):
            rewards.split_exact(total, weights)
        return
    parts = rewards.split_exact(total, weights)
    assert sum(parts) == total
    for part, w in zip(parts, weights, strict=True):
        assert abs(part - Fraction(total * w, sum(weights))) < 1


@settings(max_examples=100, deadline=None)
@given(_inputs(), st.data())
def test_verify_block_passes_and_catches_any_altered_input(
    inputs: BlockInputs, data: st.DataObject
) -> None:
    block = rewards.compute_block(inputs)
    assert rewards.verify_block(inputs, block)
    assert rewards.verify_block(inputs, outputs_hash(block))
    # Through the published JSON, as a third party would.
    published_in = json.loads(canonical_json(inputs_to_dict(inputs)))
    published_out = json.loads(canonical_json(block_to_dict(block)))
    assert inputs_from_dict(published_in) == inputs
    assert rewards.verify_block(published_in, published_out)
    # Any change to the inputs changes the inputs hash, which the block carries.
    assert not rewards.verify_block(
        replace(inputs, emission_units=inputs.emission_units + 1), block
    )
    if inputs.devices:
        i = data.draw(st.integers(0, len(inputs.devices) - 1))
        d = inputs.devices[i]
        uptime = d.uptime_s + 1 if d.uptime_s < 3600 else d.uptime_s - 1
        devices = list(inputs.devices)
        devices[i] = replace(d, uptime_s=uptime, cumulative_uptime_s=d.cumulative_uptime_s + 1)
        assert not rewards.verify_block(replace(inputs, devices=tuple(devices)), block)


def test_verify_block_rejects_a_tampered_reward() -> None:
    inputs = BlockInputs(3, EMISSION, (_device("a"), _device("b", uptime_s=1234)))
    block = rewards.compute_block(inputs)
    assert rewards.verify_block(inputs, block)
    a, b = block.units
    forged = replace(block, units=[a + 1, b - 1], owner_units=[a + 1, b - 1])
    assert sum(forged.units) == EMISSION and not rewards.verify_block(inputs, forged)
    assert not rewards.verify_block({"v": 99}, block)
    # Device order does not matter: inputs are kept sorted by id.
    assert inputs_hash(replace(inputs, devices=inputs.devices[::-1])) == block.inputs_hash


def _columns(**changes: object) -> Devices:
    two = Devices.from_rows([_device("a"), _device("b", costakers=(("s", 100),))])
    return replace(two, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"device_id": ["b", "a"]},  # not sorted
        {"device_id": ["a", "a"]},  # twice
        {"owner": ["x"]},  # columns of different lengths
        {"kind": ["gpu", "tpu"]},
        {"status": ["up", "melted"]},
        {"multiplier": ["10/1", "1.25"]},  # not exact p/q text
        {"multiplier": ["10/1", "-1/1"]},
        {"processors": [8, 0]},
        {"uptime_s": [3600, 3601]},
        {"uptime_s": [3600, 1.5]},
        {"cumulative_uptime_s": [36_000, 10]},  # below this hour's uptime
        {"proof_passed": [True, 1]},
        {"stake_units": [1, -1]},
        {"costakers": [(1, "owner-b", 100)]},  # the owner
        {"costakers": [(2, "s", 100)]},  # no such device
        {"costakers": [(1, "t", 100), (1, "s", 100)]},  # not sorted
        {"costakers": [(1, "s", 6_000), (1, "t", 5_000)]},  # over 100 %
    ],
)
def test_device_columns_are_validated(changes: dict[str, object]) -> None:
    with pytest.raises((InvalidRequest, InvalidAmount)):
        _columns(**changes)


def test_columns_and_rows_agree() -> None:
    devices = _columns()
    assert [d.device_id for d in devices] == ["a", "b"]
    assert devices[1] == _device("b", costakers=(("s", 100),)) and devices[-1] == devices[1]
    assert Devices.from_rows(list(devices)) == devices


def test_fast_block_uptime_reads_as_block_hours() -> None:
    assert rewards.block_hour_seconds(3600.0, 3600) == 3600
    assert rewards.block_hour_seconds(5.0, 10) == 1800  # half a 10 s block: half an hour
    assert rewards.block_hour_seconds(10.0, 10) == 3600
    assert rewards.block_hour_seconds(0.0, 60) == 0


def test_weights_beyond_64_bits_stay_exact() -> None:
    """A multiplier large enough that the weights overflow int64: Python integers take
    over, and the block still pays exactly, in proportion."""
    huge = Fraction(10**15, 7)
    devices = (
        _device("a", multiplier=huge, processors=8),
        _device("b", multiplier=huge, processors=3, uptime_s=1800),
        _device("c", multiplier=Fraction(1, 3)),
    )
    block = rewards.compute_block(BlockInputs(0, EMISSION, devices, gpu_pool_bps=10_000))
    assert sum(block.units) == EMISSION
    by_id = {d.device_id: d for d in devices}
    for r in block.rewards:
        assert r.score == rewards.score(by_id[r.device_id])
    a, b, c = block.units
    assert a > b > c and abs(a / b - Fraction(8, 3) * 2) < Fraction(1, 10**6)
    assert rewards.verify_block(BlockInputs(0, EMISSION, devices, gpu_pool_bps=10_000), block)


def test_verify_published_checks_the_bytes_and_the_recomputation() -> None:
    inputs = BlockInputs(2, EMISSION, (_device("a"), _device("b", uptime_s=900)))
    block = rewards.compute_block(inputs)
    in_bytes = canonical_json(inputs_to_dict(inputs))
    out_bytes = canonical_json(block_to_dict(block))
    assert rewards.verify_published(in_bytes, out_bytes)
    # Other inputs than the ones the outputs name, even if equivalent JSON.
    assert not rewards.verify_published(in_bytes + b" ", out_bytes)
    # A copy of the inputs with one fact changed does not recompute to the outputs.
    copy = json.loads(in_bytes)
    copy["devices"]["uptime_s"][1] += 1
    assert not rewards.verify_published(in_bytes, out_bytes, copy)
    assert rewards.verify_published(in_bytes, out_bytes, json.loads(in_bytes))


# Published bytes -------------------------------------------------------------------------------


def test_published_hashes_are_pinned() -> None:
    """Anyone recomputing a block compares SHA-256s of its canonical JSON, so these bytes
    must never change by accident: a refactoring that moves a key, a space or a rounding
    breaks every published block's verification. A deliberate change is a new encoding
    version (``ENCODING_VERSION``) and new hashes here."""
    devices = (
        _device("a"),
        _device("b", uptime_s=1234, tier=4, costakers=(("s1", 2_500), ("s2", 1_000))),
        _device(
            "c",
            kind=RewardPool.CPU,
            multiplier=Fraction(5, 4),
            processors=1,
            stake_units=250 * U,
            minimum_stake_units=250 * U,
        ),
        _device(
            "d",
            kind=RewardPool.CPU,
            multiplier=Fraction(1),
            processors=1,
            uptime_s=1799,
            tier=1,
            stake_units=200 * U,
            minimum_stake_units=200 * U,
        ),
        _device("e", proof_passed=False, status=DeviceStatus.BLOCKED, tier=0),
        _device("f", multiplier=Fraction(11, 4), processors=3, cumulative_uptime_s=3600),
    )
    inputs = BlockInputs(17, EMISSION + 1, devices)
    block = rewards.compute_block(inputs)
    assert inputs_hash(inputs) == (
        "9aa457f017ae51183087139e58b68c8a6f03a8330248a14c6cef3d2859186abe"
    )
    assert outputs_hash(block) == (
        "9ce6d9c0d4c06461a5fb112842f9b95b963ded2c8c824ca23c26757d3032c423"
    )
    # Weights beyond 64 bits: the standard library's encoder writes these bytes.
    huge = Fraction(10**15, 7)
    big = BlockInputs(
        0,
        EMISSION,
        (
            _device("a", multiplier=huge),
            _device("b", multiplier=huge, processors=3, uptime_s=1800),
            _device("c", multiplier=Fraction(1, 3)),
        ),
        gpu_pool_bps=10_000,
    )
    assert inputs_hash(big) == ("ce952c9bc857e685d2a4e8d5efa99b484e5e61fea5c35886745409050c9e4083")
    assert outputs_hash(rewards.compute_block(big)) == (
        "cc617a4c5b43076656fa34e3c9e040a0af3814f26f755069bf82c221182751ae"
    )
