"""Pure-core tests: reward seasons (hourly point pools, earning, conversion, publication)."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlegrid.core import rewards, seasons
from idlegrid.core.block_columns import BlockInputs, DeviceInput, RewardPool
from idlegrid.core.block_publication import canonical_json, inputs_hash, inputs_to_dict
from idlegrid.core.emission import UNITS_PER_IO as U
from idlegrid.core.seasons import MILLI, Season
from idlegrid.errors import InvalidAmount, InvalidRequest
from idlegrid.protocol import DeviceStatus

GPU, CPU = RewardPool.GPU, RewardPool.CPU


def _device(
    device_id: str,
    owner: str = "alice",
    kind: RewardPool = GPU,
    multiplier: str | Fraction = "1",
    processors: int = 1,
    uptime_s: int = 3600,
    proof_passed: bool = True,
    status: DeviceStatus = DeviceStatus.UP,
) -> DeviceInput:
    # Stake, wallet, tier and cumulative uptime matter for blocks, not for seasons.
    return DeviceInput(
        device_id=device_id,
        owner=owner,
        kind=kind,
        multiplier=Fraction(multiplier),
        processors=processors,
        uptime_s=uptime_s,
        cumulative_uptime_s=uptime_s,
        proof_passed=proof_passed,
        stake_units=0,
        minimum_stake_units=0,
        has_wallet=True,
        tier=1,
        status=status,
    )


def _block(hour: int, *devices: DeviceInput) -> BlockInputs:
    return BlockInputs(hour=hour, emission_units=1_000 * U, devices=devices)


# The worked example (docs/rewards.md, "Seasons") ---------------------------------------------

SEASON = Season("s1", "Season 1", 10, 13, gpu_points=10, cpu_points=1, points_per_io=90)
HOURS = (
    _block(
        10,
        _device("g1", "alice", multiplier="2"),  # weight 7,200
        _device("g2", "bob", multiplier="1.5", processors=2, uptime_s=1800),  # 5,400
        _device("g3", "carol", proof_passed=False),  # no proof yet: 0
        _device("c1", "carol", kind=CPU),  # 3,600
    ),
    _block(
        11,
        _device("g1", "alice", multiplier="2"),  # 7,200
        _device("g2", "bob", multiplier="1.5", processors=2, status=DeviceStatus.BLOCKED),
        _device("g3", "carol", uptime_s=1200),  # 1,200
        _device("c1", "carol", kind=CPU, uptime_s=0),  # no CPU earns: its share is not awarded
    ),
    _block(12, _device("g1", "alice", multiplier="2", proof_passed=False)),  # nobody earns
)


def test_worked_example() -> None:
    assert seasons.hourly_points(SEASON, GPU) == [3_334, 3_333, 3_333]  # 10,000 milli-points / 3
    assert seasons.hourly_points(SEASON, "cpu") == [334, 333, 333]
    # Hour 10, GPU: 3,334 split 7,200 : 5,400 = 4 : 3 → 1,905 1/7 and 1,428 6/7; the unit
    # left over goes to the larger remainder (g2).
    assert seasons.season_hour(SEASON, HOURS[0]) == {"c1": 334, "g1": 1_905, "g2": 1_429, "g3": 0}
    # Hour 11, GPU: 3,333 split 7,200 : 1,200 = 6 : 1 → 2,856 6/7 and 476 1/7.
    assert seasons.season_hour(SEASON, HOURS[1]) == {"c1": 0, "g1": 2_857, "g2": 0, "g3": 476}
    assert seasons.season_hour(SEASON, HOURS[2]) == {"g1": 0}

    results = seasons.compute_season(SEASON, reversed(HOURS))  # any order
    assert results.device_points() == {"c1": 334, "g1": 4_762, "g2": 1_429, "g3": 476}
    # 90 points per IO: units = ⌊millipoints × 10⁸ / 90,000⌋ = ⌊millipoints × 10,000 / 9⌋.
    # Carol's 476 + 334 = 810 convert together to exactly 0.009 IO; one at a time they
    # would lose a unit (528,888 + 371,111).
    assert results.owner_units() == {"alice": 5_291_111, "bob": 1_587_777, "carol": 900_000}
    data = seasons.results_to_dict(results)
    assert data["totals"] == {
        "gpu_awarded_millipoints": 3_334 + 3_333,
        "cpu_awarded_millipoints": 334,
        "io_units": 5_291_111 + 1_587_777 + 900_000,
    }
    assert [h["inputs_hash"] for h in data["hours"]] == [inputs_hash(b) for b in HOURS]
    assert data["season_hash"] == seasons.season_hash(SEASON)


def test_verify_from_published_json() -> None:
    results = seasons.compute_season(SEASON, HOURS)
    published = json.loads(json.dumps(seasons.results_to_dict(results)))
    inputs = [json.loads(json.dumps(inputs_to_dict(b))) for b in HOURS]
    season = seasons.season_from_dict(published["season"])
    assert season == SEASON
    assert seasons.verify_season(season, inputs, published)
    assert seasons.verify_season(SEASON, HOURS, results)
    assert seasons.verify_season(SEASON, HOURS, seasons.results_hash(results))
    assert not seasons.verify_season(SEASON, HOURS[:2], results)  # an hour missing
    assert not seasons.verify_season(SEASON, [*HOURS, HOURS[0]], results)  # an hour twice
    assert not seasons.verify_season(SEASON, [*HOURS, _block(13)], results)  # outside
    c1 = _device("c1", "carol", kind=CPU, uptime_s=3599)  # one second less
    later = replace(HOURS[0], devices=(c1, *HOURS[0].devices[1:]))
    assert not seasons.verify_season(SEASON, [later, *HOURS[1:]], results)


# Season rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"starts_hour": -1},
        {"ends_hour": 10},
        {"gpu_points": -1},
        {"cpu_points": 1.5},
        {"points_per_io": 0},
        {"points_per_io": True},
        {"id": ""},
    ],
)
def test_season_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        replace(SEASON, **bad)  # type: ignore[arg-type]


def test_block_number_at() -> None:
    genesis = 1_798_675_200
    assert seasons.block_number_at(genesis, genesis) == 0
    assert seasons.block_number_at(genesis + 30 * 24 * 3600, genesis) == 720
    assert seasons.block_number_at(genesis + 600, genesis, block_length_s=60) == 10
    for bad in (genesis + 1, genesis - 3600):
        with pytest.raises(InvalidRequest):
            seasons.block_number_at(bad, genesis)


def test_hour_outside_the_season_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        seasons.season_hour(SEASON, _block(13, _device("g1")))
    with pytest.raises(InvalidRequest):
        seasons.hour_pool(SEASON, GPU, 9)


@settings(max_examples=200, deadline=None)
@given(
    points=st.integers(0, 10**12),
    start=st.integers(0, 10**6),
    hours=st.integers(1, 3_000),
)
def test_hourly_pools_sum_exactly_and_are_even(points: int, start: int, hours: int) -> None:
    season = Season("s", "", start, start + hours, points, 0, 100)
    pools = seasons.hourly_points(season, GPU)
    assert len(pools) == hours and sum(pools) == points * MILLI
    assert max(pools) - min(pools) <= 1 and pools == sorted(pools, reverse=True)
    assert pools == rewards.split_exact(points * MILLI, [1] * hours)  # the largest-remainder split
    assert seasons.hourly_points(season, CPU) == [0] * hours


# Earning within an hour ----------------------------------------------------------------------

devices_st = st.lists(
    st.builds(
        _device,
        device_id=st.sampled_from([f"d{i}" for i in range(12)]),
        owner=st.sampled_from(["alice", "bob", "carol"]),
        kind=st.sampled_from(list(RewardPool)),
        multiplier=st.sampled_from(["0", "0.75", "1", "1.25", "2.5", "10"]),
        processors=st.integers(1, 8),
        uptime_s=st.integers(0, 3600),
        proof_passed=st.booleans(),
        status=st.sampled_from(list(DeviceStatus)),
    ),
    max_size=10,
    unique_by=lambda d: d.device_id,
)


@settings(max_examples=300, deadline=None)
@given(devices=devices_st, gpu=st.integers(0, 10**9), cpu=st.integers(0, 10**9))
def test_an_hour_hands_out_its_pool_exactly(devices: list[DeviceInput], gpu: int, cpu: int) -> None:
    season = Season("s", "", 5, 29, gpu, cpu, 90)
    inputs = _block(7, *devices)
    earned = seasons.season_hour(season, inputs)
    assert set(earned) == {d.device_id for d in devices}
    for d in devices:
        if not d.proof_passed or d.status in rewards.EXCLUDED_STATUSES or seasons.weight(d) == 0:
            assert earned[d.device_id] == 0
        assert earned[d.device_id] >= 0
    for kind in RewardPool:
        mine = [d for d in devices if d.kind is kind]
        total = sum(earned[d.device_id] for d in mine)
        anyone = any(seasons.qualifies(d) for d in mine)
        assert total == (seasons.hour_pool(season, kind, 7) if anyone else 0)
        # More uptime × multiplier × processors never earns fewer points within an hour.
        paid = sorted(
            (seasons.weight(d), earned[d.device_id]) for d in mine if seasons.qualifies(d)
        )
        assert [p for _, p in paid] == sorted(p for _, p in paid)


@settings(max_examples=300, deadline=None)
@given(devices=devices_st, gpu=st.integers(0, 10**9), cpu=st.integers(0, 10**9))
def test_the_column_rules_are_the_one_device_rules(
    devices: list[DeviceInput], gpu: int, cpu: int
) -> None:
    """season_hour works on columns; the split it makes is the one ``qualifies`` and
    ``weight`` (exact Fractions, device by device) define."""
    season = Season("s", "", 5, 29, gpu, cpu, 90)
    inputs = _block(7, *devices)
    expected = {d.device_id: 0 for d in inputs.devices}
    for kind in RewardPool:
        mine = [d for d in inputs.devices if d.kind is kind and seasons.qualifies(d)]
        if mine:
            parts = rewards.split_exact(
                seasons.hour_pool(season, kind, 7), [seasons.weight(d) for d in mine]
            )
            expected.update((d.device_id, p) for d, p in zip(mine, parts, strict=True))
    assert seasons.season_hour(season, inputs) == expected


@settings(max_examples=200, deadline=None)
@given(devices=devices_st, data=st.data())
def test_more_weight_never_earns_less(devices: list[DeviceInput], data: st.DataObject) -> None:
    """Raising one qualifying device's uptime never lowers its own points."""
    season = Season("s", "", 0, 1, 1_000, 1_000, 90)
    qualified = [i for i, d in enumerate(devices) if seasons.qualifies(d)]
    if not qualified:
        return
    i = data.draw(st.sampled_from(qualified))
    more = data.draw(st.integers(devices[i].uptime_s, 3600))
    raised = [
        *devices[:i],
        replace(devices[i], uptime_s=more, cumulative_uptime_s=more),
        *devices[i + 1 :],
    ]
    before = seasons.season_hour(season, _block(0, *devices))
    after = seasons.season_hour(season, _block(0, *raised))
    assert after[devices[i].device_id] >= before[devices[i].device_id]


# Conversion ----------------------------------------------------------------------------------

points_st = st.dictionaries(
    st.sampled_from([f"d{i}" for i in range(8)]), st.integers(0, 10**15), max_size=8
)
owners_map = {f"d{i}": ["alice", "bob", "carol"][i % 3] for i in range(8)}


@settings(max_examples=300, deadline=None)
@given(points=points_st, ratio=st.integers(1, 1_000))
def test_conversion_is_exact(points: dict[str, int], ratio: int) -> None:
    season = replace(SEASON, points_per_io=ratio)
    units = seasons.convert(season, points, owners_map)
    for owner, got in units.items():
        mp = sum(p for d, p in points.items() if owners_map[d] == owner)
        assert mp > 0
        # got IO units ≤ mp / (1000 × ratio) IO < got + 1 unit, in integers:
        assert got * MILLI * ratio <= mp * U < (got + 1) * MILLI * ratio
    assert set(units) == {owners_map[d] for d, p in points.items() if p}
    assert sum(units.values()) <= sum(points.values()) * U // (MILLI * ratio)


@settings(max_examples=300, deadline=None)
@given(points=points_st, device=st.sampled_from(sorted(owners_map)), more=st.integers(0, 10**9))
def test_conversion_is_monotone(points: dict[str, int], device: str, more: int) -> None:
    before = seasons.convert(SEASON, points, owners_map)
    after = seasons.convert(SEASON, {**points, device: points.get(device, 0) + more}, owners_map)
    for owner, got in after.items():
        if owner == owners_map[device]:
            assert got >= before.get(owner, 0)
        else:
            assert got == before.get(owner, 0)


def test_conversion_examples_and_refusals() -> None:
    assert seasons.convert(replace(SEASON, points_per_io=100), {"a": 100 * MILLI}, {"a": "x"}) == {
        "x": U
    }
    assert seasons.convert(SEASON, {"a": 90 * MILLI, "b": 0}, {"a": "x"}) == {"x": U}  # b: no owner
    assert seasons.convert(SEASON, {"a": 1}, {"a": "x"}) == {"x": 1_111}  # 1/90,000 IO
    with pytest.raises(InvalidRequest):
        seasons.convert(SEASON, {"a": 5}, {})
    with pytest.raises(InvalidAmount):
        seasons.convert(SEASON, {"a": -1}, {"a": "x"})


# Publication ---------------------------------------------------------------------------------


def _mutations() -> list[tuple[str, Season, tuple[BlockInputs, ...]]]:
    def swap(hour: int, index: int, **changes: object) -> tuple[BlockInputs, ...]:
        block = HOURS[hour]
        devices = list(block.devices)
        devices[index] = replace(devices[index], **changes)  # type: ignore[arg-type]
        return (*HOURS[:hour], replace(block, devices=tuple(devices)), *HOURS[hour + 1 :])

    # HOURS[0].devices is sorted: c1, g1, g2, g3.
    return [
        ("id", replace(SEASON, id="s2"), HOURS),
        ("name", replace(SEASON, name="Season one"), HOURS),
        ("gpu_points", replace(SEASON, gpu_points=11), HOURS),
        ("cpu_points", replace(SEASON, cpu_points=2), HOURS),
        ("points_per_io", replace(SEASON, points_per_io=100), HOURS),
        ("uptime", SEASON, swap(0, 1, uptime_s=3599, cumulative_uptime_s=3599)),
        ("proof", SEASON, swap(0, 3, proof_passed=True)),
        ("multiplier", SEASON, swap(1, 1, multiplier=Fraction(21, 10))),
        ("owner", SEASON, swap(0, 2, owner="dave")),
        # Not a season rule, but part of the published block inputs the results commit to.
        ("stake", SEASON, swap(2, 0, stake_units=1)),
        ("emission", SEASON, (*HOURS[:2], replace(HOURS[2], emission_units=1))),
    ]


@pytest.mark.parametrize(("what", "season", "hours"), _mutations(), ids=lambda v: str(v)[:12])
def test_results_hash_changes_with_any_input(
    what: str, season: Season, hours: tuple[BlockInputs, ...]
) -> None:
    published = seasons.results_hash(seasons.compute_season(SEASON, HOURS))
    assert seasons.results_hash(seasons.compute_season(season, hours)) != published
    assert not seasons.verify_season(season, hours, published)
    assert seasons.verify_season(season, hours, seasons.compute_season(season, hours))


def test_results_are_canonical() -> None:
    a = seasons.results_to_dict(seasons.compute_season(SEASON, HOURS))
    b = seasons.results_to_dict(seasons.compute_season(SEASON, list(reversed(HOURS))))
    assert canonical_json(a) == canonical_json(b)
    assert [d["device_id"] for d in a["devices"]] == ["c1", "g1", "g2", "g3"]
    assert [o["owner"] for o in a["owners"]] == ["alice", "bob", "carol"]
    with pytest.raises(InvalidRequest):
        seasons.season_from_dict({**seasons.season_to_dict(SEASON), "v": 2})
    with pytest.raises(InvalidRequest):
        seasons.season_from_dict({**seasons.season_to_dict(SEASON), "id": None})
