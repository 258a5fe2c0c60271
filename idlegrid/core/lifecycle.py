"""The device state machine and uptime accounting. Pure: ``now`` is passed in.

Status has two layers. Liveness (``up``/``down``/``inactive``) follows the
heartbeats; the administrative states (``paused``, ``blocked``,
``unsupported``, ``terminated``) are set by owners, proofs or the catalog and
are not undone by a heartbeat::

             heartbeat                     silent > ttl             silent > inactive_after
    (new) ───────────▶ up ◀───────────▶ down ──────────────────────▶ inactive
                        │  heartbeat       ▲                              │
                        │                  └────────── heartbeat ─────────┘ (→ up)
          pause (owner) ▼
                      paused ── resume ──▶ up / down (by liveness)
    any but terminated ── terminate ──▶ terminated (final: heartbeats are refused)

Uptime is accrued between two consecutive heartbeats that are at most ``ttl``
apart, split at hour boundaries, whatever the administrative state: it records
that the machine was alive, and reward rules decide what counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from idlegrid.errors import DeviceTerminated, InvalidTransition
from idlegrid.protocol import DeviceStatus, Readiness

HOUR_S = 3600

LIVE_STATES = frozenset({DeviceStatus.UP, DeviceStatus.DOWN, DeviceStatus.INACTIVE})
STICKY_STATES = frozenset({DeviceStatus.PAUSED, DeviceStatus.BLOCKED, DeviceStatus.UNSUPPORTED})


class OwnerAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class Timing:
    """How liveness is judged."""

    ttl_s: float
    inactive_after_s: float = 5 * 24 * HOUR_S
    bucket_s: int = HOUR_S
    """Uptime is accounted per bucket: an hour, or a block's length with fast blocks."""


def split_by_hour(start: float, end: float, bucket_s: int = HOUR_S) -> list[tuple[int, float]]:
    """Split the interval [start, end) into (bucket_start, seconds) buckets."""
    if end <= start:
        return []
    out: list[tuple[int, float]] = []
    t = start
    while t < end:
        hour = int(t // bucket_s) * bucket_s
        stop = min(end, hour + bucket_s)
        out.append((hour, stop - t))
        t = stop
    return out


def accrue_uptime(
    prev_seen: float | None, now: float, ttl_s: float, bucket_s: int = HOUR_S
) -> list[tuple[int, float]]:
    """Uptime earned by a heartbeat at ``now`` after one at ``prev_seen``.

    A gap longer than the TTL means the device was down in between: nothing is
    accrued for it, and the new heartbeat starts a fresh stretch.
    """
    if prev_seen is None or now - prev_seen > ttl_s:
        return []
    return split_by_hour(prev_seen, now, bucket_s)


def on_heartbeat(status: DeviceStatus) -> DeviceStatus:
    """The status after a heartbeat is accepted."""
    if status is DeviceStatus.TERMINATED:
        raise DeviceTerminated()
    if status in STICKY_STATES:
        return status
    return DeviceStatus.UP


def on_silence(
    status: DeviceStatus, last_seen: float | None, now: float, timing: Timing
) -> DeviceStatus:
    """The status of a device that has not been heard from since ``last_seen``."""
    if status not in LIVE_STATES or last_seen is None:
        return status
    silent = now - last_seen
    if silent > timing.inactive_after_s:
        return DeviceStatus.INACTIVE
    if silent > timing.ttl_s and status is DeviceStatus.UP:
        return DeviceStatus.DOWN
    return status


def is_live(last_seen: float | None, now: float, timing: Timing) -> bool:
    return last_seen is not None and now - last_seen <= timing.ttl_s


def on_owner_action(status: DeviceStatus, action: OwnerAction, live: bool) -> DeviceStatus:
    """The status after an owner's action, or InvalidTransition."""
    if status is DeviceStatus.TERMINATED:
        raise DeviceTerminated()
    if action is OwnerAction.TERMINATE:
        return DeviceStatus.TERMINATED
    if action is OwnerAction.PAUSE:
        if status in (DeviceStatus.BLOCKED, DeviceStatus.UNSUPPORTED):
            raise InvalidTransition(status=status.value, action=action.value)
        return DeviceStatus.PAUSED
    # resume
    if status is not DeviceStatus.PAUSED:
        raise InvalidTransition(status=status.value, action=action.value)
    return DeviceStatus.UP if live else DeviceStatus.DOWN


def readiness(
    status: DeviceStatus,
    current: Readiness,
    uptime_s: float,
    min_uptime_s: float,
    proof_passed: bool,
) -> Readiness:
    """A device's readiness for hire.

    Hired and not-reward-ready are set by clusters and proofs and kept here.
    A device becomes cluster ready once it has passed a proof of compute and
    accrued the minimum uptime. Readiness does not follow liveness (matching
    also asks for ``up``), but a blocked, unsupported or terminated device is
    never ready.
    """
    if status in (DeviceStatus.BLOCKED, DeviceStatus.UNSUPPORTED, DeviceStatus.TERMINATED):
        return Readiness.PENDING
    if current in (Readiness.HIRED, Readiness.NOT_REWARD_READY):
        return current
    if proof_passed and uptime_s >= min_uptime_s:
        return Readiness.CLUSTER_READY
    return Readiness.PENDING
