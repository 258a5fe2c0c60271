"""Read-only figures the explorer shows that no single API call returns: the
fleet by model and country, hired compute hours, rewards paid, stake totals and
the public cluster list.

Each figure is computed from the same tables, services and core rules the API
reads, so a test (or a reader) can rebuild it from the API: a readiness count
here is ``GET /v1/devices?readiness=…`` with the same filters, a device's stake
is ``GET /v1/devices/{id}/stake``, rewards paid is the sum of ``paid`` over
``GET /v1/blocks``. Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select

from idlegrid.core import staking
from idlegrid.protocol import ClusterView, DeviceKind, DeviceStatus, Readiness
from idlegrid.server.db.models import Block, ClusterNode, Device, StakeRow
from idlegrid.server.services.staking import to_core
from idlegrid.server.state import AppState

SHOWN = (Readiness.CLUSTER_READY.value, Readiness.HIRED.value)
PUBLIC_CLUSTERS = 100
DAY_S = 86_400


def kind_class(kind: str) -> str:
    """GPU or CPU: Apple silicon rents out its GPU."""
    return "CPU" if kind == DeviceKind.CPU.value else "GPU"


@dataclass
class Tally:
    """Devices (and their processors) that are cluster-ready or hired."""

    ready: int = 0
    hired: int = 0
    ready_processors: int = 0
    hired_processors: int = 0

    def add(self, readiness: str, devices: int, processors: int) -> None:
        if readiness == Readiness.HIRED.value:
            self.hired += devices
            self.hired_processors += processors
        else:
            self.ready += devices
            self.ready_processors += processors


@dataclass
class Fleet:
    by_class: dict[str, Tally] = field(default_factory=dict)
    by_model: dict[tuple[str, str], Tally] = field(default_factory=dict)
    """(GPU/CPU, model key) → tally."""
    by_country: dict[str, Tally] = field(default_factory=dict)


def fleet(state: AppState) -> Fleet:
    """Cluster-ready and hired devices, by GPU/CPU, by model and by country."""
    out = Fleet(by_class={"GPU": Tally(), "CPU": Tally()})
    by_model: dict[tuple[str, str], Tally] = defaultdict(Tally)
    by_country: dict[str, Tally] = defaultdict(Tally)
    with state.devices.sessions() as db:
        rows = db.execute(
            select(
                Device.kind,
                Device.model,
                Device.location,
                Device.readiness,
                func.count(),
                func.coalesce(func.sum(Device.processors), 0),
            )
            .where(Device.readiness.in_(SHOWN))
            .group_by(Device.kind, Device.model, Device.location, Device.readiness)
        ).all()
    for kind, model, location, readiness, devices, processors in rows:
        cls = kind_class(kind)
        out.by_class[cls].add(readiness, devices, int(processors))
        by_model[(cls, model or "unsupported")].add(readiness, devices, int(processors))
        by_country[location or "??"].add(readiness, devices, int(processors))
    out.by_model = dict(sorted(by_model.items()))
    out.by_country = dict(sorted(by_country.items()))
    return out


@dataclass(frozen=True)
class Country:
    code: str
    devices: int
    up: int
    gpus: int
    cpus: int


def countries(state: AppState) -> list[Country]:
    """Every registered device by country (``??`` where none was given), most first."""
    with state.devices.sessions() as db:
        rows = db.execute(
            select(Device.location, Device.kind, Device.status, func.count()).group_by(
                Device.location, Device.kind, Device.status
            )
        ).all()
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for location, kind, status, n in rows:
        entry = acc[location or "??"]
        entry[0] += n
        entry[1] += n if status == DeviceStatus.UP.value else 0
        entry[2 if kind_class(kind) == "GPU" else 3] += n
    out = [Country(code, *values) for code, values in acc.items()]
    return sorted(out, key=lambda c: (-c.devices, c.code))


@dataclass(frozen=True)
class Totals:
    devices: int
    uptime_s: float
    """Accounted uptime of every device, the sum of ``uptime_s`` in the device list."""
    hired_s: float
    """Device-seconds served to clusters (node joined → left, or now)."""
    rewards_paid: int
    """IO units paid by reward blocks, the sum of ``paid`` over the blocks."""


def totals(state: AppState) -> Totals:
    now_ms = int(state.clock() * 1000)
    with state.devices.sessions() as db:
        devices, uptime = db.execute(
            select(func.count(), func.coalesce(func.sum(Device.uptime_s), 0.0))
        ).one()
        end = func.coalesce(ClusterNode.left_ms, now_ms)
        hired_ms = db.scalar(
            select(func.coalesce(func.sum(end - ClusterNode.joined_ms), 0)).where(
                ClusterNode.joined_ms.is_not(None)
            )
        )
        paid = db.scalar(select(func.coalesce(func.sum(Block.paid), 0)))
    return Totals(int(devices), float(uptime), int(hired_ms or 0) / 1000, int(paid or 0))


@dataclass(frozen=True)
class StakeLine:
    device_id: str
    owner: str
    model: str | None
    minimum: int
    effective: int
    locked: int
    """Everything held on the device: active, cooling and co-staked."""
    meets_minimum: bool


def stakes(state: AppState) -> list[StakeLine]:
    """Every device with IO staked on it, as ``GET /v1/devices/{id}/stake`` sees it."""
    now = state.clock()
    out: list[StakeLine] = []
    with state.staking.sessions() as db:
        rows = db.execute(select(StakeRow, Device).join(Device, Device.id == StakeRow.device_id))
        for row, dev in rows:
            stake = to_core(row)
            locked = staking.locked(stake)
            if not locked:
                continue
            minimum = state.staking.minimum(dev)
            out.append(
                StakeLine(
                    device_id=dev.id,
                    owner=row.owner,
                    model=dev.model,
                    minimum=minimum,
                    effective=staking.effective_stake(stake, now),
                    locked=locked,
                    meets_minimum=staking.meets_minimum(stake, minimum, now),
                )
            )
    return sorted(out, key=lambda s: (-s.effective, s.device_id))


def public_clusters(state: AppState, limit: int = PUBLIC_CLUSTERS) -> list[ClusterView]:
    """The newest clusters as the API draws them, without their secrets (the
    page itself decides who sees the Ray addresses)."""
    return state.clusters.list_public(limit)


def daily_uptime(state: AppState, hours: list[tuple[float, float]], days: int = 30) -> list[float]:
    """Seconds up on each of the last ``days`` UTC days, oldest first, from the
    device's (bucket start, seconds) rows."""
    today = int(state.clock() // DAY_S)
    out = [0.0] * days
    for start, seconds in hours:
        index = int(start // DAY_S) - today + days - 1
        if 0 <= index < days:
            out[index] += seconds
    return out
