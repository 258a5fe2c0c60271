"""The server's match index: the hireable devices kept in memory, so a quote, a deploy or
a replacement reads what it admits instead of every device in the database.

``Marketplace.candidates`` is the reference: a scan of the database for every device
that is up, ``cluster_ready``, in no cluster and of a known model, kept when it is live
(``LivenessTable``), rentable by the renter (sandboxed, or the renter's own) and under
the price cap. ``MarketIndex`` holds the same devices in a ``core`` ``MatchIndex`` and
answers as the scan would:

- What the database decides (status, readiness, cluster, model, sandbox, floor, proofs)
  is loaded at start and re-read for the devices a committed transaction touched.
  ``watch`` hooks the services' session factories: every ``Device`` or ``Proof`` row a
  transaction writes through the ORM, and every id a bulk ``UPDATE`` names through
  ``mark_changed``, is marked after the commit and re-read before the next match.
- What changes with time alone is not filed: liveness is checked at query time
  (devices silent past their TTL are hidden, ``MatchIndex.match(req, hidden)``), and
  so are a renter's own unsandboxed devices and floors above a cap. A device's
  reputation (uptime over age, proofs) is as of its last read; ``reload`` re-reads
  every device (the ``match index`` loop, ``match_index_reload_s``).

It is an optimisation the database still arbitrates: ``Marketplace.reserve`` takes a
device by a conditional ``UPDATE … WHERE cluster_id IS NULL``, so a stale entry can at
worst be offered and then refused, and the deploy matches again without it.
"""

from __future__ import annotations

import threading
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core import matching
from idlegrid.core.match_index import MatchIndex
from idlegrid.protocol import DeviceStatus, ProofStatus, Readiness
from idlegrid.server.db.bulk import chunks
from idlegrid.server.db.models import Device, Proof
from idlegrid.server.liveness import LivenessTable

CHANGED = "idlegrid.changed_devices"  # Session.info key: device ids written so far


def mark_changed(db: Session, device_ids: Iterable[str]) -> None:
    """Tell the index (after the commit) that these devices' rows changed: for bulk
    ``UPDATE`` statements, which the ORM does not track."""
    db.info.setdefault(CHANGED, set()).update(device_ids)


def hireable_rows(db: Session, ids: list[str] | None = None) -> list[Any]:
    """The rows of devices the database lets be hired (up, ready, in no cluster, of a
    known model), all of them or those of ``ids``; liveness, sandbox and floor are the
    caller's to apply."""
    q = select(
        Device.id,
        Device.kind,
        Device.model,
        Device.location,
        Device.tier,
        Device.owner,
        Device.processors,
        Device.uptime_s,
        Device.registered_at,
        Device.floor_micro_usd,
        Device.sandbox_backend,
    ).where(
        Device.status == DeviceStatus.UP.value,
        Device.readiness == Readiness.CLUSTER_READY.value,
        Device.cluster_id.is_(None),
        Device.model.is_not(None),
    )
    if ids is None:
        return list(db.execute(q).all())
    out: list[Any] = []
    for chunk in chunks(ids, 5_000):
        out += db.execute(q.where(Device.id.in_(chunk))).all()
    return out


def proof_history(db: Session, device_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(proofs passed, proofs failed) per device."""
    out: dict[str, tuple[int, int]] = {}
    for chunk in chunks(device_ids, 5_000):
        rows = db.execute(
            select(Proof.device_id, Proof.status, func.count())
            .where(
                Proof.device_id.in_(chunk),
                Proof.status.in_([ProofStatus.VERIFIED.value, ProofStatus.FAILED.value]),
            )
            .group_by(Proof.device_id, Proof.status)
        ).all()
        for device_id, status, n in rows:
            passed, failed = out.get(device_id, (0, 0))
            if status == ProofStatus.VERIFIED.value:
                passed += int(n)
            else:
                failed += int(n)
            out[device_id] = (passed, failed)
    return out


def candidate(row: Any, history: dict[str, tuple[int, int]], now: float) -> matching.Candidate:
    """A hireable row as matching sees it, its reputation as of ``now``."""
    passed, failed = history.get(row.id, (0, 0))
    uptime = min(1.0, row.uptime_s / max(1.0, now - row.registered_at))
    return matching.Candidate(
        device_id=row.id,
        kind=row.kind,
        model=row.model or "",
        location=row.location,
        tier=row.tier or 0,
        supplier=row.owner,
        processors=row.processors,
        reputation=matching.device_reputation(uptime, passed, failed),
    )


class _Entries:
    """The devices and what is checked at query time: floors, unsandboxed owners."""

    def __init__(self) -> None:
        self.index = MatchIndex()
        self.floors: dict[str, int] = {}
        self.floored: list[tuple[int, str]] = []  # (floor, id) for floors above 0, sorted
        self.unsandboxed: dict[str, str] = {}  # id → owner

    def put(self, c: matching.Candidate, floor: int, sandboxed: bool) -> None:
        self.drop(c.device_id)
        self.index.add(c)
        self.floors[c.device_id] = floor
        if floor > 0:
            insort(self.floored, (floor, c.device_id))
        if not sandboxed:
            self.unsandboxed[c.device_id] = c.supplier

    def drop(self, device_id: str) -> None:
        floor = self.floors.pop(device_id, None)
        if floor is None:
            return
        self.index.remove(device_id)
        if floor > 0:
            self.floored.remove((floor, device_id))
        self.unsandboxed.pop(device_id, None)


class MarketIndex:
    """The hireable devices, kept current as the module docstring says. Thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        liveness: LivenessTable,
        clock: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.liveness = liveness
        self.clock = clock
        self._lock = threading.Lock()  # the entries, parked
        self._entries = _Entries()
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._reloading: set[str] | None = None  # ids synced while a reload reads
        # Devices found silent at a match though the liveness table's queue of up
        # devices does not show them (reaped, the change not yet written): re-checked
        # at every match, and let go once the database says they are down.
        self._parked: set[str] = set()

    # -- keeping current ----------------------------------------------------------------

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Mark the devices each committed transaction of ``sessions`` wrote."""
        event.listen(sessions, "after_flush", _collect)
        event.listen(sessions, "after_commit", self._ended)
        # A rolled back transaction changed nothing, but a match inside it may have
        # re-read its own writes: the devices are read again either way.
        event.listen(sessions, "after_rollback", self._ended)

    def _ended(self, db: Session) -> None:
        ids = db.info.pop(CHANGED, None)
        if ids:
            self.changed(ids)

    def changed(self, device_ids: Iterable[str]) -> None:
        """Re-read these devices before the next match."""
        with self._dirty_lock:
            self._dirty.update(device_ids)

    def reload(self) -> int:
        """Re-read every hireable device (at start, then on an interval): reputations
        drift with time, and a writer this process did not see is caught here."""
        with self._dirty_lock:
            self._dirty.clear()  # what was marked is committed: this read sees it
        with self._lock:
            self._reloading = set()
        try:
            now = self.clock()
            with self.sessions() as db:
                rows = hireable_rows(db)
                history = proof_history(db, [r.id for r in rows])
            entries = _Entries()
            entries.index = MatchIndex(candidate(r, history, now) for r in rows)
            for r in rows:
                entries.floors[r.id] = r.floor_micro_usd
                if r.floor_micro_usd > 0:
                    entries.floored.append((r.floor_micro_usd, r.id))
                if r.sandbox_backend == "none":
                    entries.unsandboxed[r.id] = r.owner
            entries.floored.sort()
        finally:
            with self._lock:
                synced, self._reloading = self._reloading or set(), None
        with self._lock:
            self._entries = entries
            self._parked.clear()
        self.changed(synced)  # read again: the reload's read may predate them
        return len(rows)

    def _sync(self, db: Session) -> None:
        """Re-read the devices marked since the last match (call holding the lock), in
        the caller's session: a deploy matches inside its write transaction, and on
        SQLite a second connection could wait for ever on a pool the waiting deploys
        hold."""
        with self._dirty_lock:
            ids, self._dirty = self._dirty, set()
        if not ids:
            return
        if self._reloading is not None:
            self._reloading |= ids
        now = self.clock()
        rows = hireable_rows(db, sorted(ids))
        history = proof_history(db, [r.id for r in rows])
        found = {r.id: r for r in rows}
        for device_id in ids:
            row = found.get(device_id)
            if row is None:
                self._entries.drop(device_id)
                self._parked.discard(device_id)
            else:
                c = candidate(row, history, now)
                self._entries.put(c, row.floor_micro_usd, row.sandbox_backend != "none")

    # -- reading ------------------------------------------------------------------------

    def _hidden(self, renter: str | None, cap_micro_usd: int | None, now: float) -> set[str]:
        e = self._entries
        hidden = set(self.liveness.lapsed(now))
        for device_id in list(self._parked):
            if self.liveness.is_live(device_id, now):
                self._parked.discard(device_id)
            else:
                hidden.add(device_id)
        if cap_micro_usd is not None:
            over = bisect_right(e.floored, (cap_micro_usd, "\U0010ffff"))
            hidden.update(device_id for _, device_id in e.floored[over:])
        hidden.update(d for d, owner in e.unsandboxed.items() if owner != renter)
        return hidden

    def match(
        self,
        db: Session,
        reqs: matching.Requirements,
        renter: str | None = None,
        cap_micro_usd: int | None = None,
    ) -> matching.Match:
        """What ``matching.match(Marketplace.candidates(db, cap, renter), reqs)`` returns."""
        with self._lock:
            self._sync(db)
            now = self.clock()
            hidden = self._hidden(renter, cap_micro_usd, now)
            while True:
                found = self._entries.index.match(reqs, hidden)
                silent = {
                    c.device_id
                    for c in found.devices
                    if not self.liveness.is_live(c.device_id, now)
                }
                if not silent:
                    return found
                self._parked |= silent
                hidden |= silent

    def candidates(
        self, db: Session, renter: str | None = None, cap_micro_usd: int | None = None
    ) -> tuple[list[matching.Candidate], dict[str, int]]:
        """What ``Marketplace.candidates`` returns, read from memory (every device:
        for the auction, which weighs every eligible ask, and the price list)."""
        with self._lock:
            self._sync(db)
            now = self.clock()
            hidden = self._hidden(renter, cap_micro_usd, now)
            floors = self._entries.floors
            out = [
                c
                for c in self._entries.index
                if c.device_id not in hidden and self.liveness.is_live(c.device_id, now)
            ]
            return out, {c.device_id: floors[c.device_id] for c in out}


def _collect(db: Session, _context: object) -> None:
    ids: set[str] = db.info.setdefault(CHANGED, set())
    for obj in (*db.new, *db.dirty, *db.deleted):
        if isinstance(obj, Device):
            ids.add(obj.id)
        elif isinstance(obj, Proof):
            ids.add(obj.device_id)
