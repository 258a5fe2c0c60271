"""In-memory liveness: the heartbeat hot path, kept off the relational database.

A heartbeat touches only this table: an O(1) dictionary update and an
``OrderedDict.move_to_end``. Devices stay ordered by last heartbeat, so the
reaper finds every silent device by walking from the oldest end and stopping at
the first one still alive: its cost follows the number of devices that went
silent, not the number of devices.

What must survive a crash (uptime per hour, last-seen times, status changes) is
queued here and written by ``drain()`` → the flusher in one transaction per
interval, coalesced: one row per device per hour however many heartbeats came.
A crash loses at most one flush interval of uptime, never a registration or an
owner's action (those are written synchronously by the services).

Every status change bumps the device's ``version``; the flusher writes a status
only over an older version, so a late flush never undoes a newer change.

A device silent long enough to be ``inactive`` (five days by default) leaves the
table once that change is committed (``forget_inactive``), and is not loaded at
start: registration is free, so devices that register and never come back must
not hold memory for ever. One that does come back is loaded again from the
database by its next heartbeat (``revive``, ``DeviceService.revive``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from idlegrid.core import lifecycle
from idlegrid.core.lifecycle import Timing
from idlegrid.errors import UnknownDevice
from idlegrid.protocol import DeviceStatus


@dataclass(slots=True)
class LiveDevice:
    status: DeviceStatus
    last_seen: float | None
    version: int


@dataclass(slots=True)
class StatusChange:
    device_id: str
    status: DeviceStatus
    previous: DeviceStatus
    version: int
    at: float
    reason: str


@dataclass(slots=True)
class FlushBatch:
    last_seen: dict[str, float] = field(default_factory=dict)
    uptime: dict[tuple[str, int], float] = field(default_factory=dict)
    changes: list[StatusChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.last_seen or self.uptime or self.changes)


class LivenessTable:
    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self._lock = threading.Lock()
        self._devices: dict[str, LiveDevice] = {}
        # Devices whose liveness can still lapse, oldest heartbeat first: up ones
        # may go down, down ones inactive. Heartbeats only move a device to the
        # newest end, so each queue stays sorted by last heartbeat.
        self._up: OrderedDict[str, None] = OrderedDict()
        self._down: OrderedDict[str, None] = OrderedDict()
        self._pending = FlushBatch()

    def __len__(self) -> int:
        return len(self._devices)

    def load(
        self, device_id: str, status: DeviceStatus, last_seen: float | None, version: int
    ) -> None:
        """Add or replace a device as the database knows it (load in last-seen order)."""
        with self._lock:
            self._devices[device_id] = LiveDevice(status, last_seen, version)
            self._track(device_id)

    def revive(
        self, device_id: str, status: DeviceStatus, last_seen: float | None, version: int
    ) -> None:
        """``load`` a device the table had let go of, unless it is back already."""
        with self._lock:
            if device_id not in self._devices:
                self._devices[device_id] = LiveDevice(status, last_seen, version)
                self._track(device_id)

    def forget_inactive(self, committed: list[StatusChange]) -> int:
        """Let go of the devices whose change to inactive is committed, unless something
        changed them since (a heartbeat, an owner): the database holds all they are."""
        forgotten = 0
        with self._lock:
            for change in committed:
                if change.status is not DeviceStatus.INACTIVE:
                    continue
                dev = self._devices.get(change.device_id)
                unchanged = dev is not None and dev.version == change.version
                if unchanged and dev is not None and dev.status is change.status:
                    del self._devices[change.device_id]
                    self._up.pop(change.device_id, None)
                    self._down.pop(change.device_id, None)
                    forgotten += 1
        return forgotten

    def get(self, device_id: str) -> LiveDevice | None:
        return self._devices.get(device_id)

    def heartbeat(self, device_id: str, now: float) -> DeviceStatus:
        """Record a heartbeat; returns the device's status after it."""
        with self._lock:
            dev = self._devices.get(device_id)
            if dev is None:
                raise UnknownDevice(device_id=device_id)
            new_status = lifecycle.on_heartbeat(dev.status)
            for hour, seconds in lifecycle.accrue_uptime(
                dev.last_seen, now, self.timing.ttl_s, self.timing.bucket_s
            ):
                key = (device_id, hour)
                self._pending.uptime[key] = self._pending.uptime.get(key, 0.0) + seconds
            dev.last_seen = now
            self._pending.last_seen[device_id] = now
            if new_status is not dev.status:
                self._change(device_id, dev, new_status, now, "heartbeat")
            self._track(device_id)
            return new_status

    def set_status(
        self, device_id: str, status: DeviceStatus, version: int, last_seen: float | None
    ) -> None:
        """Apply a change a service has already committed at ``version``."""
        with self._lock:
            dev = self._devices.get(device_id)
            if dev is None:
                dev = self._devices[device_id] = LiveDevice(status, last_seen, version)
            dev.status = status
            dev.version = max(dev.version, version)
            self._track(device_id)

    def is_live(self, device_id: str, now: float) -> bool:
        dev = self._devices.get(device_id)
        return dev is not None and lifecycle.is_live(dev.last_seen, now, self.timing)

    def lapsed(self, now: float) -> list[str]:
        """Up devices silent past the TTL that the reaper has not marked down yet."""
        out: list[str] = []
        with self._lock:
            for device_id in self._up:
                if lifecycle.is_live(self._devices[device_id].last_seen, now, self.timing):
                    break  # every later entry was heard from later still
                out.append(device_id)
        return out

    def reap(self, now: float) -> list[StatusChange]:
        """Mark silent devices down (past the TTL) and down ones inactive (past inactive_after)."""
        changes: list[StatusChange] = []
        with self._lock:
            while self._up:
                device_id = next(iter(self._up))
                dev = self._devices[device_id]
                if dev.last_seen is not None and now - dev.last_seen <= self.timing.ttl_s:
                    break  # every later entry was heard from later still
                changes.append(self._change(device_id, dev, DeviceStatus.DOWN, now, "silent"))
                self._track(device_id)
            while self._down:
                device_id = next(iter(self._down))
                dev = self._devices[device_id]
                new_status = lifecycle.on_silence(dev.status, dev.last_seen, now, self.timing)
                if new_status is dev.status:
                    break
                changes.append(self._change(device_id, dev, new_status, now, "silent"))
                self._track(device_id)
        return changes

    def drain(self) -> FlushBatch:
        """Hand over everything queued since the last drain."""
        with self._lock:
            batch, self._pending = self._pending, FlushBatch()
        return batch

    def requeue(self, batch: FlushBatch) -> None:
        """Put back a batch whose write failed, merging it with newer work."""
        with self._lock:
            merged = self._pending
            for device_id, seen in batch.last_seen.items():
                merged.last_seen[device_id] = max(seen, merged.last_seen.get(device_id, seen))
            for key, seconds in batch.uptime.items():
                merged.uptime[key] = merged.uptime.get(key, 0.0) + seconds
            merged.changes[:0] = batch.changes

    def counts(self) -> dict[DeviceStatus, int]:
        out: dict[DeviceStatus, int] = {}
        for dev in list(self._devices.values()):
            out[dev.status] = out.get(dev.status, 0) + 1
        return out

    def _change(
        self, device_id: str, dev: LiveDevice, status: DeviceStatus, now: float, reason: str
    ) -> StatusChange:
        dev.version += 1
        change = StatusChange(device_id, status, dev.status, dev.version, now, reason)
        dev.status = status
        self._pending.changes.append(change)
        return change

    def _track(self, device_id: str) -> None:
        """Keep the device in the queue its status can lapse from, newest at the end."""
        dev = self._devices[device_id]
        self._up.pop(device_id, None)
        self._down.pop(device_id, None)
        if dev.status is DeviceStatus.UP:
            self._up[device_id] = None
        elif dev.status is DeviceStatus.DOWN:
            self._down[device_id] = None
