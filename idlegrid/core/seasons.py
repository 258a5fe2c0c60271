"""Reward seasons: incentive programmes that hand out points per block-hour. Pure.

A season (like io.net's testnet seasons) runs over whole block-hours
``[starts_hour, ends_hour)`` (block numbers, ``BlockInputs.hour``) and has a
GPU point pool and a CPU point pool, whole points to hand out over the season.
At its end the points convert to IO at the season's ratio (``points_per_io``
points : 1 IO). ``docs/rewards.md`` ("Seasons") states the rules for people.

Unit. Everything below the season's pools is counted in *milli-points*
(thousandths of a point, ``MILLI``), so a pool spread over many hours and
devices keeps three more digits before rounding. The pools themselves are
announced in whole points.

Hourly pools. A pool of ``P`` points over ``H`` hours is ``P × 1000``
milli-points split evenly by the largest-remainder method: every hour gets
``⌊P × 1000 / H⌋`` and the first ``P × 1000 mod H`` hours one more
(``hourly_points``, ``hour_pool``).

Earning. In each block-hour a kind's hourly pool is split among the devices
of that kind that *qualify* — a passed proof of compute, a status other than
terminated, unsupported or blocked, and a positive weight — by their weight
``uptime_s × multiplier × processors``, exactly (``rewards.split_exact``:
floors, then the left-over milli-points to the largest remainders, ties to the
smaller device id). Every other device earns 0. If no device of a kind
qualifies in an hour, that hour's share of the kind's pool is not awarded; it
does not pass to the other kind or to later hours.

Conversion. A device's points go to its owner (as listed in the last hour of
the season that lists the device); each owner gets
``⌊millipoints × 10⁸ / (1000 × points_per_io)⌋`` units of 10⁻⁸ IO, summed over
the owner's devices *before* rounding down, so an owner loses less than one
unit in total (``convert``).

Publication. ``results_to_dict`` is a canonical JSON form (sorted keys, no
spaces, ASCII, every list in id order) that carries the season, its rules
hash and the inputs hash of every block-hour; ``results_hash`` is its SHA-256.
``verify_season`` recomputes the results from the published block inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from idlegrid.core import block_publication, rewards
from idlegrid.core.block_columns import HOUR_S, BlockInputs, DeviceInput, RewardPool
from idlegrid.core.emission import UNITS_PER_IO
from idlegrid.core.rewards import EXCLUDED_STATUSES
from idlegrid.errors import InvalidAmount, InvalidRequest

MILLI = 1_000
"""Milli-points per point: hourly pools, device points and conversion count in these."""
ENCODING_VERSION = 1


def _int(value: object, name: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidAmount(f"{name} must be an integer ≥ {low}", **{name: value})
    return value


@dataclass(frozen=True, slots=True)
class Season:
    """A season's published rules. Pools are whole points; hours are block numbers."""

    id: str
    name: str
    starts_hour: int
    """First block of the season."""
    ends_hour: int
    """First block after the season: the season covers ``[starts_hour, ends_hour)``."""
    gpu_points: int
    cpu_points: int
    points_per_io: int
    """Points that convert to 1 IO at the season's end (e.g. 90 or 100)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidRequest("a season needs a non-empty id", id=self.id)
        if not isinstance(self.name, str):
            raise InvalidRequest("a season's name must be text", id=self.id)
        _int(self.starts_hour, "starts_hour")
        _int(self.ends_hour, "ends_hour", self.starts_hour + 1)
        _int(self.gpu_points, "gpu_points")
        _int(self.cpu_points, "cpu_points")
        _int(self.points_per_io, "points_per_io", 1)

    @property
    def hours(self) -> int:
        return self.ends_hour - self.starts_hour

    def covers(self, hour: int) -> bool:
        return self.starts_hour <= hour < self.ends_hour

    def pool_points(self, kind: RewardPool | str) -> int:
        """The kind's pool over the whole season, in whole points."""
        return self.gpu_points if RewardPool(kind) is RewardPool.GPU else self.cpu_points


def block_number_at(at_s: int, genesis_at_s: int, block_length_s: int = HOUR_S) -> int:
    """The block that starts at Unix second ``at_s``, block 0 starting at ``genesis_at_s``.

    Seasons are announced in Unix seconds and run over whole block-hours, so a
    time that is not a block boundary is refused.
    """
    _int(block_length_s, "block_length_s", 1)
    number, off = divmod(_int(at_s, "at_s") - _int(genesis_at_s, "genesis_at_s"), block_length_s)
    if off or number < 0:
        raise InvalidRequest("a season must start and end on a block boundary", at_s=at_s)
    return number


# The rules ----------------------------------------------------------------------------------


def hourly_points(season: Season, kind: RewardPool | str) -> list[int]:
    """The kind's pool in milli-points for each hour of the season, summing exactly to
    ``pool × 1000``: ``⌊pool × 1000 / H⌋`` each, one more for the first ``pool × 1000 mod H``."""
    return [hour_pool(season, kind, h) for h in range(season.starts_hour, season.ends_hour)]


def hour_pool(season: Season, kind: RewardPool | str, hour: int) -> int:
    """The kind's milli-points for block ``hour`` (one entry of ``hourly_points``)."""
    if not season.covers(hour):
        raise InvalidRequest("the hour is outside the season", season=season.id, hour=hour)
    base, extra = divmod(season.pool_points(kind) * MILLI, season.hours)
    return base + (1 if hour - season.starts_hour < extra else 0)


def weight(device: DeviceInput) -> Fraction:
    """``uptime_s × multiplier × processors``, exact."""
    return device.multiplier * device.uptime_s * device.processors


def qualifies(device: DeviceInput) -> bool:
    """A passed proof, a status that is not excluded, and some weight this hour."""
    return (
        device.proof_passed
        and device.status not in EXCLUDED_STATUSES
        and device.multiplier > 0
        and device.uptime_s > 0
    )


def season_hour(season: Season, inputs: BlockInputs) -> dict[str, int]:
    """Milli-points each device earned in block ``inputs.hour``: every device of the
    block is listed, 0 for those that do not qualify. Column-wise (a block holds up to
    millions of devices): the same rules as ``qualifies`` and ``weight``, with the
    weights as integers over the block's common multiplier denominator."""
    d = inputs.devices
    c = rewards.Columns(d)
    qualifying = c.proof & ~c.bad_status & (c.m > 0) & (c.uptime > 0)  # ``qualifies``
    weights = rewards.exact_product((c.m, c.processors, c.uptime))  # ``weight`` × lcd
    points = [0] * len(d)
    for kind, of_kind in ((RewardPool.GPU, c.gpu), (RewardPool.CPU, ~c.gpu)):
        index = np.flatnonzero(qualifying & of_kind)
        if index.size:
            # Devices are sorted by id, so the split's ties go to the smaller id.
            parts = rewards.split_exact(
                hour_pool(season, kind, inputs.hour), weights[index].tolist()
            )
            for i, p in zip(index.tolist(), parts, strict=True):
                points[i] = p
    return dict(zip(d.device_id, points, strict=True))


def convert(season: Season, points: Mapping[str, int], owners: Mapping[str, str]) -> dict[str, int]:
    """Owner → IO units (10⁻⁸ IO) for device → milli-points, at ``season.points_per_io``.

    Each owner's milli-points are summed over its devices, then converted and
    rounded down once: ``⌊Σ millipoints × 10⁸ / (1000 × points_per_io)⌋``.
    Owners whose devices earned nothing are left out.
    """
    per_owner: dict[str, int] = {}
    for device_id, mp in points.items():
        _int(mp, "millipoints")
        if mp == 0:
            continue
        if device_id not in owners:
            raise InvalidRequest("a device with points has no owner", device_id=device_id)
        owner = owners[device_id]
        per_owner[owner] = per_owner.get(owner, 0) + mp
    scale = MILLI * season.points_per_io
    return {o: per_owner[o] * UNITS_PER_IO // scale for o in sorted(per_owner)}


# A whole season -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HourTotal:
    hour: int
    inputs_hash: str
    """``block_publication.inputs_hash`` of the block-hour's published inputs."""
    gpu_pool: int
    gpu_awarded: int
    """The GPU pool when any GPU qualified, else 0 (the same for CPU)."""
    cpu_pool: int
    cpu_awarded: int


@dataclass(frozen=True, slots=True)
class SeasonResults:
    season: Season
    hours: tuple[HourTotal, ...]
    """Every hour of the season, in order."""
    points: tuple[tuple[str, str, int], ...]
    """(device_id, owner, milli-points) of every device that earned any, by device id."""
    io_units: tuple[tuple[str, int, int], ...]
    """(owner, milli-points, IO units) of every owner that earned any, by owner."""

    def device_points(self) -> dict[str, int]:
        return {d: mp for d, _, mp in self.points}

    def owner_units(self) -> dict[str, int]:
        return {o: u for o, _, u in self.io_units}


def _as_inputs(inputs: BlockInputs | Mapping[str, Any]) -> BlockInputs:
    return inputs if isinstance(inputs, BlockInputs) else block_publication.inputs_from_dict(inputs)


def compute_season(
    season: Season, per_hour_inputs: Iterable[BlockInputs | Mapping[str, Any]]
) -> SeasonResults:
    """The season's results from the published inputs of every one of its block-hours
    (``BlockInputs`` or their ``inputs_to_dict`` form, in any order)."""
    by_hour: dict[int, BlockInputs] = {}
    for item in per_hour_inputs:
        inputs = _as_inputs(item)
        if not season.covers(inputs.hour):
            raise InvalidRequest("the hour is outside the season", hour=inputs.hour)
        if inputs.hour in by_hour:
            raise InvalidRequest("a block-hour is listed twice", hour=inputs.hour)
        by_hour[inputs.hour] = inputs
    missing = season.hours - len(by_hour)
    if missing:
        raise InvalidRequest("the season's results need every block-hour", missing=missing)

    totals: dict[str, int] = {}
    owners: dict[str, str] = {}
    hours: list[HourTotal] = []
    for hour in range(season.starts_hour, season.ends_hour):
        inputs = by_hour[hour]
        earned = season_hour(season, inputs)
        awarded = {k: 0 for k in RewardPool}
        for d in inputs.devices:
            owners[d.device_id] = d.owner  # the last hour that lists the device wins
            awarded[d.kind] += earned[d.device_id]
            totals[d.device_id] = totals.get(d.device_id, 0) + earned[d.device_id]
        hours.append(
            HourTotal(
                hour=hour,
                inputs_hash=block_publication.inputs_hash(inputs),
                gpu_pool=hour_pool(season, RewardPool.GPU, hour),
                gpu_awarded=awarded[RewardPool.GPU],
                cpu_pool=hour_pool(season, RewardPool.CPU, hour),
                cpu_awarded=awarded[RewardPool.CPU],
            )
        )
    earners = {device_id: mp for device_id, mp in totals.items() if mp}
    units = convert(season, earners, owners)
    owner_mp: dict[str, int] = {}
    for device_id, mp in earners.items():
        owner_mp[owners[device_id]] = owner_mp.get(owners[device_id], 0) + mp
    return SeasonResults(
        season=season,
        hours=tuple(hours),
        points=tuple((i, owners[i], earners[i]) for i in sorted(earners)),
        io_units=tuple((o, owner_mp[o], units[o]) for o in sorted(units)),
    )


# Publication --------------------------------------------------------------------------------


def season_to_dict(season: Season) -> dict[str, Any]:
    """The canonical, JSON-ready form of a season's rules (what is announced)."""
    return {
        "v": ENCODING_VERSION,
        "id": season.id,
        "name": season.name,
        "starts_hour": season.starts_hour,
        "ends_hour": season.ends_hour,
        "gpu_points": season.gpu_points,
        "cpu_points": season.cpu_points,
        "points_per_io": season.points_per_io,
        "millipoints_per_point": MILLI,
    }


def season_from_dict(data: Mapping[str, Any]) -> Season:
    if data.get("v") != ENCODING_VERSION or data.get("millipoints_per_point") != MILLI:
        raise InvalidRequest("unknown season encoding version", v=data.get("v"))
    try:
        return Season(
            id=data["id"],
            name=data["name"],
            starts_hour=data["starts_hour"],
            ends_hour=data["ends_hour"],
            gpu_points=data["gpu_points"],
            cpu_points=data["cpu_points"],
            points_per_io=data["points_per_io"],
        )
    except (KeyError, TypeError) as exc:
        raise InvalidRequest("malformed season", error=str(exc)) from None


def season_hash(season: Season) -> str:
    return hashlib.sha256(block_publication.canonical_json(season_to_dict(season))).hexdigest()


def results_to_dict(results: SeasonResults) -> dict[str, Any]:
    """The canonical, JSON-ready form of a season's results (what is published)."""
    hours = results.hours
    return {
        "v": ENCODING_VERSION,
        "season": season_to_dict(results.season),
        "season_hash": season_hash(results.season),
        "hours": [
            {
                "hour": h.hour,
                "inputs_hash": h.inputs_hash,
                "gpu_pool_millipoints": h.gpu_pool,
                "gpu_awarded_millipoints": h.gpu_awarded,
                "cpu_pool_millipoints": h.cpu_pool,
                "cpu_awarded_millipoints": h.cpu_awarded,
            }
            for h in hours
        ],
        "devices": [{"device_id": d, "owner": o, "millipoints": mp} for d, o, mp in results.points],
        "owners": [{"owner": o, "millipoints": mp, "io_units": u} for o, mp, u in results.io_units],
        "totals": {
            "gpu_awarded_millipoints": sum(h.gpu_awarded for h in hours),
            "cpu_awarded_millipoints": sum(h.cpu_awarded for h in hours),
            "io_units": sum(u for _, _, u in results.io_units),
        },
    }


def results_hash(results: SeasonResults) -> str:
    return hashlib.sha256(block_publication.canonical_json(results_to_dict(results))).hexdigest()


def verify_season(
    season: Season,
    per_hour_inputs: Iterable[BlockInputs | Mapping[str, Any]],
    published: SeasonResults | Mapping[str, Any] | str,
) -> bool:
    """Recompute the season from its block-hours' published inputs and compare it with
    the published results (``SeasonResults``, their ``results_to_dict`` form, or their hash)."""
    try:
        recomputed = compute_season(season, per_hour_inputs)
    except InvalidRequest:
        return False
    if isinstance(published, str):
        expected = published
    elif isinstance(published, SeasonResults):
        expected = results_hash(published)
    else:
        expected = hashlib.sha256(block_publication.canonical_json(published)).hexdigest()
    return results_hash(recomputed) == expected
