"""Devices: registration, owner actions, queries, and the liveness flush."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idlegrid import faults
from idlegrid.catalog import Catalog
from idlegrid.core import connectivity, lifecycle, signing
from idlegrid.core.lifecycle import OwnerAction
from idlegrid.errors import BadSignature, DeviceTerminated, NotYourDevice, UnknownDevice
from idlegrid.protocol import (
    Classification,
    ConnectivityReport,
    DeviceDetail,
    DeviceEventView,
    DeviceKind,
    DeviceList,
    DeviceStatus,
    DeviceView,
    HardwareInfo,
    Readiness,
    RegisterRequest,
    SandboxInfo,
    UptimeHour,
)
from idlegrid.server.db.bulk import (
    add_uptime,
    chunks,
    fetch_rows,
    insert_rows,
    set_statuses,
    touch_devices,
)
from idlegrid.server.db.models import Device, DeviceEvent, DeviceUptime, Proof
from idlegrid.server.liveness import FlushBatch, LivenessTable, StatusChange
from idlegrid.server.services.match_index import mark_changed
from idlegrid.server.services.proofs import OPEN, misconduct
from idlegrid.server.settings import ServerSettings

RECENT_EVENTS = 50
RECENT_HOURS = 24 * 30


class DeviceService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        liveness: LivenessTable,
        catalog: Catalog,
        settings: ServerSettings,
        clock: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.liveness = liveness
        self.catalog = catalog
        self.settings = settings
        self.clock = clock

    # -- startup -----------------------------------------------------------------

    def load_liveness(self) -> int:
        """Fill the liveness table from the database (oldest heartbeat first): every
        device but the terminated and the inactive (``revive`` brings one back)."""
        gone = (DeviceStatus.TERMINATED.value, DeviceStatus.INACTIVE.value)
        with self.sessions() as db:
            rows = db.execute(
                select(Device.id, Device.status, Device.last_seen_at, Device.status_version)
                .where(Device.status.not_in(gone))
                .order_by(Device.last_seen_at.asc().nulls_first())
            )
            n = 0
            for device_id, status, last_seen, version in rows:
                self.liveness.load(device_id, DeviceStatus(status), last_seen, version)
                n += 1
        return n

    def revive(self, device_id: str) -> bool:
        """Put a device the liveness table let go of (inactive) back into it, as the
        database has it; False when there is no such device or it is terminated."""
        with self.sessions() as db:
            row = db.execute(
                select(Device.status, Device.last_seen_at, Device.status_version).where(
                    Device.id == device_id
                )
            ).one_or_none()
        if row is None or row[0] == DeviceStatus.TERMINATED.value:
            return False
        self.liveness.revive(device_id, DeviceStatus(row[0]), row[1], row[2])
        return True

    def count_inactive(self) -> int:
        """Inactive devices (the liveness table does not hold them)."""
        with self.sessions() as db:
            q = select(func.count()).where(Device.status == DeviceStatus.INACTIVE.value)
            return int(db.scalar(q) or 0)

    # -- registration ------------------------------------------------------------

    def register(
        self, device_id: str, req: RegisterRequest, network: str, attested: bool = False
    ) -> tuple[DeviceView, bool]:
        """Register a device (or refresh its hardware); True when it is new. An owner's
        attestation must name ``network``, this deployment (``attested``: the caller
        has verified it already)."""
        owner = req.owner or device_id
        if owner != device_id and not attested:
            self.check_attestation(device_id, req, network)
        now = self.clock()
        cls = self.catalog.classify(req.hardware)
        with self.sessions.begin() as db:
            dev = db.get(Device, device_id, with_for_update=True)
            created = dev is None
            if dev is None:
                row, event = self._new_row(device_id, req, cls, now)
                dev = Device(**row)
                db.add(dev)
                self._event(db, device_id, now, "registered", event)
            else:
                self._refresh(db, dev, owner, req, cls, now)
        # Only once committed does the hot path learn of the device.
        self.liveness.load(device_id, DeviceStatus(dev.status), now, dev.status_version)
        return self._device_view(dev), created

    def _refresh(
        self,
        db: Session,
        dev: Device,
        owner: str,
        req: RegisterRequest,
        cls: Classification,
        now: float,
    ) -> None:
        """A registered device registers again: its hardware, status and sandbox
        refreshed, and what was proven void if the hardware is another."""
        device_id = dev.id
        if dev.status == DeviceStatus.TERMINATED.value:
            raise DeviceTerminated(device_id=device_id)
        if dev.owner != owner:
            raise NotYourDevice("a registered device keeps its owner", owner=dev.owner)
        if dev.model != cls.model or dev.processors != cls.processors:
            # Another machine under the same id: what was proven is void.
            dev.proof_passed_at = None
            if dev.readiness == Readiness.CLUSTER_READY.value:
                dev.readiness = Readiness.PENDING.value
            self._event(
                db,
                device_id,
                now,
                "hardware_changed",
                {"from": dev.model, "to": cls.model, "processors": cls.processors},
            )
            if dev.model is not None:  # a swap under the same id: slashable
                evidence = f"{dev.model} ×{dev.processors} → {cls.model} ×{cls.processors}"
                misconduct(db, device_id, now, "hardware_swap", evidence)
        status = self._registration_status(dev, cls.model is not None)
        if status.value != dev.status:
            self._event(db, device_id, now, "status", {"from": dev.status, "to": status.value})
        # Newer than anything the liveness table may still have queued.
        live = self.liveness.get(device_id)
        dev.status_version = max(dev.status_version, live.version if live else 0) + 1
        if dev.sandbox_backend != req.sandbox.backend:
            change = {"from": dev.sandbox_backend, "to": req.sandbox.backend}
            self._event(db, device_id, now, "sandbox", change)
        for key, value in self._filled(req, cls, status, now).items():
            setattr(dev, key, value)
        if cls.model is not None and dev.proof_passed_at is None and not self._proof_open(db, dev):
            dev.next_proof_at = now  # prove it as soon as it can

    def register_many(
        self, items: Sequence[tuple[str, RegisterRequest, str]], attested: bool = False
    ) -> list[tuple[DeviceView, bool] | Exception]:
        """Register several devices (device id, request, network) in one transaction,
        each one's outcome or error in order (server/group_commit.py batches the
        requests that arrive together). New devices are inserted together; a device
        already registered, or named twice, is refreshed on its own afterwards
        (``register``), and so is every one of them if the shared transaction fails
        (another replica registered one of them first). ``attested``: the caller has
        verified every owner's attestation."""
        results: list[tuple[DeviceView, bool] | Exception | None] = [None] * len(items)
        now = self.clock()
        ready: list[int] = []
        for i, (device_id, req, network) in enumerate(items):
            try:
                if (req.owner or device_id) != device_id and not attested:
                    self.check_attestation(device_id, req, network)
            except Exception as exc:  # this one's error, not the batch's
                results[i] = exc
                continue
            ready.append(i)
        fresh: list[tuple[int, dict[str, Any]]] = []
        alone: list[int] = []
        try:
            with self.sessions.begin() as db:
                ids = {items[i][0] for i in ready}
                taken = set(db.scalars(select(Device.id).where(Device.id.in_(ids))))
                events: list[dict[str, Any]] = []
                for i in ready:
                    device_id, req, _ = items[i]
                    if device_id in taken:
                        alone.append(i)
                        continue
                    taken.add(device_id)
                    row, event = self._new_row(
                        device_id, req, self.catalog.classify(req.hardware), now
                    )
                    fresh.append((i, row))
                    events.append(
                        {"device_id": device_id, "at": now, "kind": "registered", "detail": event}
                    )
                # Plain multi-row inserts: the ORM's unit of work cost more than the rows.
                if fresh:
                    db.execute(insert(Device), [row for _, row in fresh])
                    db.execute(insert(DeviceEvent), events)
                    mark_changed(db, (row["id"] for _, row in fresh))
                    faults.point("registrations_before_commit")
        except IntegrityError:
            alone = sorted(alone + [i for i, _ in fresh])
            fresh = []
        for i, row in fresh:  # only once committed does the hot path learn of them
            self.liveness.load(row["id"], DeviceStatus(row["status"]), now, row["status_version"])
            results[i] = (self._device_view(row, made_of=items[i][1]), True)
        for i in alone:
            try:
                results[i] = self.register(*items[i], attested=attested)
            except Exception as exc:
                results[i] = exc
        return [r for r in results if r is not None]

    def _new_row(
        self, device_id: str, req: RegisterRequest, cls: Classification, now: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new device's row (every column it sets) and its ``registered`` event's
        detail. Proved as soon as it joins, when it is of a known model."""
        supported = cls.model is not None
        status = DeviceStatus.UP if supported else DeviceStatus.UNSUPPORTED
        live = self.liveness.get(device_id)  # newer than anything it may still have queued
        row = {
            "id": device_id,
            "owner": req.owner or device_id,
            "status_version": (live.version if live else 0) + 1,
            "readiness": Readiness.PENDING.value,
            "registered_at": now,
            "uptime_s": 0.0,
            "next_proof_at": now if supported else None,
            **self._filled(req, cls, status, now),
        }
        event = {"model": cls.model, "kind": cls.kind.value, "sandbox": req.sandbox.backend}
        return row, event

    @staticmethod
    def _filled(
        req: RegisterRequest, cls: Classification, status: DeviceStatus, now: float
    ) -> dict[str, Any]:
        """What a registration writes of the request, new device or refreshed."""
        return {
            "status": status.value,
            "name": req.name,
            "location": req.location,
            "kind": cls.kind.value,
            "model": cls.model,
            "processors": cls.processors,
            "unsupported_reason": cls.reason,
            "hardware": req.hardware.model_dump(mode="json"),
            "agent_version": req.agent_version,
            "sandbox_backend": req.sandbox.backend,
            "sandbox": req.sandbox.model_dump(mode="json"),
            "last_seen_at": now,
        }

    @staticmethod
    def check_attestation(device_id: str, req: RegisterRequest, network: str) -> None:
        """Refuse a registration under ``req.owner`` that the owner did not sign for."""
        message = signing.owner_attestation_message(network, device_id)
        if not req.owner_signature or not signing.verify_signature(
            str(req.owner), req.owner_signature, message
        ):
            raise BadSignature("owner_signature does not verify for this device", owner=req.owner)

    @staticmethod
    def _proof_open(db: Session, dev: Device) -> bool:
        """Whether a challenge to this device is in flight."""
        open_proofs = (
            select(func.count())
            .select_from(Proof)
            .where(Proof.device_id == dev.id, Proof.status.in_(OPEN))
        )
        return bool(db.scalar(open_proofs))

    def _registration_status(self, dev: Device, supported: bool) -> DeviceStatus:
        current = DeviceStatus(dev.status) if dev.status else None
        if not supported:
            return DeviceStatus.UNSUPPORTED
        if current in (DeviceStatus.PAUSED, DeviceStatus.BLOCKED):
            return current
        return DeviceStatus.UP

    # -- owner actions -----------------------------------------------------------

    def owner_action(self, signer: str, device_id: str, action: OwnerAction) -> DeviceView:
        now = self.clock()
        with self.sessions.begin() as db:
            dev = db.get(Device, device_id, with_for_update=True)
            if dev is None:
                raise UnknownDevice(device_id=device_id)
            if signer != dev.owner:
                raise NotYourDevice(device_id=device_id)
            live = self.liveness.get(device_id)
            previous = live.status if live is not None else DeviceStatus(dev.status)
            status = lifecycle.on_owner_action(
                previous, action, self.liveness.is_live(device_id, now)
            )
            dev.status = status.value
            dev.status_version = max(dev.status_version, live.version if live else 0) + 1
            self._event(
                db, device_id, now, action.value, {"from": previous.value, "to": status.value}
            )
        self.liveness.set_status(device_id, status, dev.status_version, dev.last_seen_at)
        return self._device_view(dev)

    def set_connectivity(self, device_id: str, report: ConnectivityReport) -> int:
        """Record a speed test; returns the device's connectivity tier."""
        number = connectivity.tier(report.download_mbps, report.upload_mbps)
        with self.sessions.begin() as db:
            dev = db.get(Device, device_id, with_for_update=True)
            if dev is None:
                raise UnknownDevice(device_id=device_id)
            dev.latency_ms = report.latency_ms
            dev.download_mbps = report.download_mbps
            dev.upload_mbps = report.upload_mbps
            if dev.tier != number:
                self._event(
                    db,
                    device_id,
                    self.clock(),
                    "connectivity",
                    {"tier": number, "name": connectivity.tier_name(number)},
                )
            dev.tier = number
        return number

    # -- queries -----------------------------------------------------------------

    def list(
        self,
        *,
        status: DeviceStatus | None = None,
        readiness: Readiness | None = None,
        owner: str | None = None,
        kind: str | None = None,
        model: str | None = None,
        location: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> DeviceList:
        filters = []
        for column, value in (
            (Device.status, status),
            (Device.readiness, readiness),
            (Device.owner, owner),
            (Device.kind, kind),
            (Device.model, model),
            (Device.location, location),
        ):
            if value is not None:
                filters.append(column == str(value))
        with self.sessions() as db:
            total = db.scalar(select(func.count()).select_from(Device).where(*filters)) or 0
            rows = db.scalars(
                select(Device)
                .where(*filters)
                .order_by(Device.registered_at, Device.id)
                .limit(limit)
                .offset(offset)
            )
            return DeviceList(items=[self._device_view(d) for d in rows], total=total)

    def get(self, device_id: str) -> DeviceDetail:
        with self.sessions() as db:
            dev = db.get(Device, device_id)
            if dev is None:
                raise UnknownDevice(device_id=device_id)
            since = int(self.clock() // 3600) * 3600 - RECENT_HOURS * 3600
            hours = db.scalars(
                select(DeviceUptime)
                .where(DeviceUptime.device_id == device_id, DeviceUptime.hour >= since)
                .order_by(DeviceUptime.hour)
            )
            events = db.scalars(
                select(DeviceEvent)
                .where(DeviceEvent.device_id == device_id)
                .order_by(DeviceEvent.at.desc(), DeviceEvent.id.desc())
                .limit(RECENT_EVENTS)
            )
            view = self._device_view(dev)
            return DeviceDetail(
                **view.model_dump(),
                uptime_hours=[UptimeHour(hour=h.hour, seconds=h.seconds) for h in hours],
                events=[DeviceEventView(at=e.at, kind=e.kind, detail=e.detail) for e in events],
            )

    # -- liveness flush ----------------------------------------------------------

    def flush(self, batch: FlushBatch) -> None:
        """Write a drained liveness batch in one transaction."""
        if not batch:
            return
        per_device: dict[str, float] = {}
        for (device_id, _hour), seconds in batch.uptime.items():
            per_device[device_id] = per_device.get(device_id, 0.0) + seconds
        with self.sessions.begin() as db:
            add_uptime(db, [(d, h, s) for (d, h), s in sorted(batch.uptime.items())])
            touch_devices(
                db,
                [(d, seen, per_device.get(d, 0.0)) for d, seen in sorted(batch.last_seen.items())],
            )
            mark_changed(db, (c.device_id for c in batch.changes))  # bulk: the index re-reads
            self._write_changes(db, batch.changes)

    @staticmethod
    def _write_changes(db: Session, changes: Sequence[StatusChange]) -> None:
        """Each device's newest status change, where the row holds an older version
        (one multi-row UPDATE: a partition that silences 100,000 devices at once is
        one statement per chunk, not 100,000), and an event for every change that
        was newer than the row."""
        if not changes:
            return
        newest: dict[str, StatusChange] = {}
        for c in changes:
            if c.device_id not in newest or c.version > newest[c.device_id].version:
                newest[c.device_id] = c
        ids = sorted(newest)  # device rows in id order, as every multi-device transaction
        stored: dict[str, int] = {}
        for chunk in chunks(ids):
            q = select(Device.id, Device.status_version).where(Device.id.in_(chunk))
            stored.update((str(i), int(v)) for i, v in fetch_rows(db, q))
        applied = set_statuses(db, [(d, newest[d].status.value, newest[d].version) for d in ids])
        events = [
            (
                c.device_id,
                c.at,
                "status",
                json.dumps({"from": c.previous.value, "to": c.status.value, "reason": c.reason}),
            )
            for c in sorted(changes, key=lambda c: (c.device_id, c.version))
            if c.device_id in applied and c.version > stored.get(c.device_id, 0)
        ]
        insert_rows(db, "device_events", ("device_id", "at", "kind", "detail"), events)

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _event(db: Session, device_id: str, at: float, kind: str, detail: dict[str, Any]) -> None:
        db.add(DeviceEvent(device_id=device_id, at=at, kind=kind, detail=detail))

    def _device_view(
        self, dev: Device | dict[str, Any], made_of: RegisterRequest | None = None
    ) -> DeviceView:
        """A device's view, of its row or of a new row's columns (those unset None).
        ``made_of``: the validated request a new row was made of, whose hardware and
        sandbox are taken as they are rather than validated again from the columns."""
        get: Callable[[str], Any] = dev.get if isinstance(dev, dict) else partial(getattr, dev)
        # The liveness table is ahead of the database by at most one flush.
        status, last_seen = DeviceStatus(get("status")), get("last_seen_at")
        live = self.liveness.get(get("id"))
        if live is not None:
            status, last_seen = live.status, live.last_seen
        fields = {
            "id": get("id"),
            "owner": get("owner"),
            "name": get("name"),
            "location": get("location"),
            "status": status,
            "readiness": Readiness(get("readiness")),
            "kind": DeviceKind(get("kind")),
            "model": get("model"),
            "processors": get("processors"),
            "registered_at": get("registered_at"),
            "last_seen_at": last_seen,
            "uptime_s": get("uptime_s"),
            "agent_version": get("agent_version"),
            "proof_passed_at": get("proof_passed_at"),
            "measured_tflops": get("measured_tflops"),
            "tier": get("tier"),
        }
        if made_of is not None:
            hardware, sandbox = made_of.hardware, made_of.sandbox
        else:
            hardware = HardwareInfo.model_validate(get("hardware"))
            sandbox = SandboxInfo.model_validate(get("sandbox") or {})
        return DeviceView(
            hardware=hardware,
            sandbox=sandbox,
            **fields,
        )
