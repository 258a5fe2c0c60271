"""Proofs of compute, the server's side: schedule, fetch, commit, reveal, expire.

Each public method is one transaction. The protocol and its maths are in
``core/proof.py``; what an outcome means for a device is ``core/proof_policy.py``.
The clock starts when the device first fetches its challenge (the seed is
secret until then), so time measured on the server is compute plus one round
trip, never the time a challenge waited for pickup.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.catalog import Catalog
from idlegrid.core import lifecycle
from idlegrid.core.proof import (
    Challenge,
    Opening,
    deadline_s,
    memory_answer,
    memory_block,
    memory_blocks,
    plan,
    select_checks,
)
from idlegrid.core.proof_policy import FailReason, ProofRules, Standing, after_result, judge
from idlegrid.errors import ChallengeClosed, NotYourDevice, UnknownChallenge, UnknownDevice
from idlegrid.protocol import (
    ChallengeSpec,
    Classification,
    CommitRequest,
    CommitResponse,
    DeviceKind,
    DeviceStatus,
    MemoryProbe,
    ProofList,
    ProofStatus,
    ProofView,
    Readiness,
    RevealRequest,
)
from idlegrid.server.db.models import Device, DeviceEvent, Proof
from idlegrid.server.group_verify import GroupVerifier
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.mailbox import Mailbox
from idlegrid.server.settings import ServerSettings

log = logging.getLogger("idlegrid.server.proofs")


def misconduct(db: Session, device_id: str, at: float, reason: str, evidence: str) -> None:
    """Record a slashable event; the staking loop slashes each one once."""
    detail = {"reason": reason, "evidence": evidence[:256]}
    db.add(DeviceEvent(device_id=device_id, at=at, kind="misconduct", detail=detail))


OPEN = (ProofStatus.ISSUED.value, ProofStatus.FETCHED.value, ProofStatus.COMMITTED.value)
SCHEDULE_BATCH = 1000
HISTORY = 100


def rules_from(settings: ServerSettings) -> ProofRules:
    return ProofRules(
        target_s=settings.proof_target_s,
        min_efficiency=settings.proof_min_efficiency,
        gpu_min_efficiency=settings.proof_gpu_min_efficiency,
        allowance_s=settings.proof_allowance_s,
    )


class ProofService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        liveness: LivenessTable,
        mailbox: Mailbox,
        catalog: Catalog,
        settings: ServerSettings,
        clock: Callable[[], float],
    ) -> None:
        self.verifier = GroupVerifier()
        self.sessions = sessions
        self.liveness = liveness
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self.rules = rules_from(settings)
        self.mailbox = mailbox  # each device's open challenge, for its heartbeat replies

    def load_pending(self) -> None:
        with self.sessions() as db:
            rows = db.execute(
                select(Proof.device_id, Proof.id).where(
                    Proof.status.in_([ProofStatus.ISSUED.value, ProofStatus.FETCHED.value])
                )
            )
            self.mailbox.load_challenges({device_id: proof_id for device_id, proof_id in rows})

    # -- scheduling ------------------------------------------------------------------

    def schedule(self) -> int:
        """Issue challenges to idle, supported devices whose proof is due: one read, one
        multi-row insert and one update per batch (a flood of new devices makes
        thousands due a second; rows made one by one by the ORM cost more than the SQL)."""
        now = self.clock()
        with self.sessions.begin() as db:
            due = db.execute(
                select(Device.id, Device.kind, Device.model, Device.processors, Device.hardware)
                .where(
                    Device.next_proof_at <= now,
                    Device.status == DeviceStatus.UP.value,
                    Device.readiness != Readiness.HIRED.value,  # never disturb a hire
                    Device.model.is_not(None),
                )
                .order_by(Device.next_proof_at)
                .limit(SCHEDULE_BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            if not due:
                return 0
            proofs = [
                self._new_proof(r.id, r.kind, r.model, r.processors, r.hardware, now) for r in due
            ]
            db.execute(insert(Proof), proofs)
            # Nothing the match index reads changes here (proof history counts outcomes).
            db.execute(
                update(Device)
                .where(Device.id.in_([row.id for row in due]))
                .values(next_proof_at=None)
                .execution_options(synchronize_session=False)
            )
        # Once committed: a device told of its challenge can fetch it.
        for proof in proofs:
            self.mailbox.set_challenge(proof["device_id"], proof["id"])
        return len(proofs)

    def _new_proof(
        self,
        device_id: str,
        kind: str,
        model: str,
        processors: int,
        hardware: dict[str, Any],
        now: float,
    ) -> dict[str, Any]:
        """A new challenge's row, for a Core insert."""
        cls = Classification(kind=DeviceKind(kind), model=model, processors=processors)
        # The stored hardware was validated when it registered: read, not validated again.
        cores = hardware.get("cpu_physical_cores") or hardware["cpu_cores"]
        claimed = self.catalog.fp32_tflops_of(cls, cores)
        seed = secrets.token_bytes(32)
        challenge = plan(seed, kind, claimed, self.settings.proof_target_s, n=self.settings.proof_n)
        memory_mb = 0
        if kind == DeviceKind.GPU.value:
            vram_gb = self.catalog.get(model).vram_gb
            memory_mb = int(vram_gb * 1024 * self.settings.proof_memory_fraction)
        return {
            "id": secrets.token_hex(16),
            "device_id": device_id,
            "status": ProofStatus.ISSUED.value,
            "seed": seed.hex(),
            "n": challenge.n,
            "rounds": challenge.rounds,
            "checks_k": self.settings.proof_checks,
            "work_flop": challenge.work_flop,
            "claimed_tflops": claimed,
            "deadline_s": deadline_s(
                challenge, claimed, self.rules.efficiency_floor(kind), self.rules.allowance_s
            ),
            "memory_mb": memory_mb,
            "created_at": now,
        }

    # -- the device's steps ------------------------------------------------------------

    def fetch(self, signer: str, device_id: str, proof_id: str) -> ChallengeSpec:
        now = self.clock()
        with self.sessions.begin() as db:
            proof = self._devices_own_challenge(db, signer, device_id, proof_id)
            if proof.status == ProofStatus.ISSUED.value:
                proof.status = ProofStatus.FETCHED.value
                proof.fetched_at = now
                self.mailbox.set_challenge(device_id, None)
            elif proof.status != ProofStatus.FETCHED.value:
                raise ChallengeClosed(status=proof.status)
            return ChallengeSpec(
                id=proof.id,
                seed=proof.seed,
                n=proof.n,
                rounds=proof.rounds,
                deadline_s=proof.deadline_s,
                memory_mb=proof.memory_mb,
            )

    def commit(
        self, signer: str, device_id: str, proof_id: str, req: CommitRequest
    ) -> CommitResponse | ProofView:
        """The checks to open, or the failed proof when the commitment is too late."""
        now = self.clock()
        with self.sessions.begin() as db:
            proof = self._devices_own_challenge(db, signer, device_id, proof_id)
            if proof.status != ProofStatus.FETCHED.value:
                raise ChallengeClosed(status=proof.status)
            assert proof.fetched_at is not None
            proof.prover = req.prover
            proof.elapsed_reported_s = req.elapsed_s
            if now - proof.fetched_at > proof.deadline_s:
                return self._finish(db, proof, FailReason.TIMEOUT, None, "late commitment", now)
            # Throughput is the primary claim: judge it before the memory.
            slow, measured = judge(
                now - proof.fetched_at,
                proof.deadline_s,
                proof.work_flop,
                proof.claimed_tflops,
                self.rules,
                _kind(db, proof),
            )
            if slow is not None:
                detail = f"{measured:.3f} TFLOPS measured, {proof.claimed_tflops:.3f} claimed"
                return self._finish(db, proof, slow, measured, detail, now)
            if req.memory == "out_of_memory":
                return self._finish(
                    db,
                    proof,
                    FailReason.OUT_OF_MEMORY,
                    None,
                    f"could not hold {proof.memory_mb} MiB",
                    now,
                )
            challenge = Challenge(bytes.fromhex(proof.seed), proof.n, proof.rounds)
            checks = select_checks(challenge, secrets.token_bytes(32), proof.checks_k)
            blocks = memory_blocks(proof.memory_mb)
            probes = (
                [
                    MemoryProbe(index=secrets.randbelow(blocks), nonce=secrets.token_hex(16))
                    for _ in range(self.settings.proof_memory_probes)
                ]
                if proof.memory_mb
                else []
            )
            proof.status = ProofStatus.COMMITTED.value
            proof.committed_at = now
            proof.root = req.root
            proof.checks = [list(c) for c in checks]
            proof.memory_probes = [p.model_dump() for p in probes]
            return CommitResponse(checks=checks, memory_probes=probes)

    def reveal(self, signer: str, device_id: str, proof_id: str, req: RevealRequest) -> ProofView:
        # Verification (milliseconds of arithmetic) runs between two short
        # transactions, not inside one that holds the proof's row lock.
        with self.sessions() as db:
            proof = self._devices_own_challenge(db, signer, device_id, proof_id)
            if proof.status != ProofStatus.COMMITTED.value:
                raise ChallengeClosed(status=proof.status)
            problem = self._check_openings(proof, req)
        now = self.clock()
        with self.sessions.begin() as db:
            proof = self._devices_own_challenge(db, signer, device_id, proof_id)
            if proof.status != ProofStatus.COMMITTED.value:  # a racing reveal won
                raise ChallengeClosed(status=proof.status)
            assert proof.committed_at is not None and proof.fetched_at is not None
            if now - proof.committed_at > self.rules.reveal_s:
                return self._finish(db, proof, FailReason.TIMEOUT, None, "late reveal", now)
            if problem is not None:
                return self._finish(db, proof, FailReason.WRONG_ANSWER, None, problem, now)
            elapsed = proof.committed_at - proof.fetched_at
            reason, measured = judge(
                elapsed,
                proof.deadline_s,
                proof.work_flop,
                proof.claimed_tflops,
                self.rules,
                _kind(db, proof),
            )
            detail = f"{measured:.3f} TFLOPS measured, {proof.claimed_tflops:.3f} claimed"
            return self._finish(db, proof, reason, measured, detail, now)

    def _check_openings(self, proof: Proof, req: RevealRequest) -> str | None:
        challenge = Challenge(bytes.fromhex(proof.seed), proof.n, proof.rounds)
        try:
            openings = [
                Opening(o.round, o.row, tuple(o.leaf), tuple(bytes.fromhex(h) for h in o.path))
                for o in req.openings
            ]
        except ValueError:
            return "a Merkle path is not hex"
        checks = [(int(r), int(i)) for r, i in proof.checks or []]
        problem = self.verifier.verify(
            (challenge, bytes.fromhex(proof.root or ""), checks, openings)
        )
        if problem is not None:
            return problem
        probes = proof.memory_probes or []
        if len(req.memory_answers) != len(probes):
            return f"expected {len(probes)} memory answers, got {len(req.memory_answers)}"
        seed = bytes.fromhex(proof.seed)
        for probe, answer in zip(probes, req.memory_answers, strict=True):
            block = memory_block(seed, int(probe["index"])).tobytes()
            if answer != memory_answer(block, bytes.fromhex(probe["nonce"])):
                return f"memory probe of block {probe['index']} answered wrongly"
        return None

    # -- outcomes --------------------------------------------------------------------------

    def _finish(
        self,
        db: Session,
        proof: Proof,
        reason: FailReason | None,
        measured: float | None,
        detail: str,
        now: float,
    ) -> ProofView:
        proof.status = (ProofStatus.VERIFIED if reason is None else ProofStatus.FAILED).value
        proof.reason = reason.value if reason else None
        proof.detail = detail[:256]
        proof.measured_tflops = measured
        proof.finished_at = now
        self.mailbox.set_challenge(proof.device_id, None)
        dev = db.get(Device, proof.device_id, with_for_update=True)
        assert dev is not None
        outcome = after_result(
            Standing(dev.proof_failures, dev.spoof_strikes),
            reason,
            measured,
            proof.claimed_tflops,
            self.rules,
        )
        dev.proof_failures = outcome.standing.failures
        dev.spoof_strikes = outcome.standing.strikes
        if measured is not None:
            dev.measured_tflops = measured
        event: dict[str, Any] = {"proof": proof.id, "result": proof.status, "reason": proof.reason}
        if reason is None:
            dev.proof_passed_at = now
            dev.next_proof_at = now + self.settings.proof_interval_s
            if outcome.restore and dev.readiness == Readiness.NOT_REWARD_READY.value:
                dev.readiness = Readiness.PENDING.value
            self._refresh(dev)
        else:
            # A busy honest machine fails now and then: a fresh challenge soon, then
            # less and less often while it keeps failing.
            failures = outcome.standing.failures
            wait = self.settings.proof_retry_s * 2 ** min(failures - 1, 30)
            dev.next_proof_at = now + min(wait, self.settings.proof_retry_max_s)
            if dev.proof_passed_at is None and failures >= self.settings.proof_give_up_after:
                # Never proven, and failing every time: a device that is not what it
                # claims (or not there) stops costing the network challenges. It is
                # challenged again when its agent registers it anew.
                dev.next_proof_at = None
            event["failures_in_a_row"] = failures
            event["retry_at"] = dev.next_proof_at
            if outcome.demote and dev.readiness != Readiness.HIRED.value:
                dev.readiness = Readiness.NOT_REWARD_READY.value
            if outcome.demote and dev.proof_passed_at is not None:
                # It proved this hardware before and now keeps failing: slashable.
                misconduct(db, dev.id, now, "failed_proof", f"proof {proof.id}: {proof.reason}")
        db.add(DeviceEvent(device_id=dev.id, at=now, kind="proof", detail=event))
        if outcome.block and dev.status != DeviceStatus.BLOCKED.value:
            self._block(db, dev, now, proof)
            misconduct(db, dev.id, now, "spoofing", f"proof {proof.id}: {proof.detail}")
        log.info("proof %s of %s: %s %s", proof.id, dev.id, proof.status, proof.reason or "")
        return view(proof)

    def _block(self, db: Session, dev: Device, now: float, proof: Proof) -> None:
        live = self.liveness.get(dev.id)
        previous = dev.status
        dev.status = DeviceStatus.BLOCKED.value
        dev.status_version = max(dev.status_version, live.version if live else 0) + 1
        dev.readiness = Readiness.PENDING.value
        dev.next_proof_at = None
        db.add(
            DeviceEvent(
                device_id=dev.id,
                at=now,
                kind="status",
                detail={
                    "from": previous,
                    "to": dev.status,
                    "reason": "spoofing",
                    "proof": proof.id,
                },
            )
        )
        db.flush()
        # The hot path learns of it now; the row is written with this transaction.
        self.liveness.set_status(dev.id, DeviceStatus.BLOCKED, dev.status_version, dev.last_seen_at)

    def _refresh(self, dev: Device) -> None:
        dev.readiness = lifecycle.readiness(
            DeviceStatus(dev.status),
            Readiness(dev.readiness),
            dev.uptime_s,
            self.settings.min_uptime_s,
            dev.proof_passed_at is not None,
        ).value

    def refresh_readiness(self) -> int:
        """Promote proven devices whose uptime has reached the minimum since."""
        with self.sessions.begin() as db:
            devices = db.scalars(
                select(Device).where(
                    Device.readiness == Readiness.PENDING.value,
                    Device.proof_passed_at.is_not(None),
                    Device.uptime_s >= self.settings.min_uptime_s,
                )
            )
            changed = 0
            for dev in devices:
                before = dev.readiness
                self._refresh(dev)
                changed += dev.readiness != before
            return changed

    def expire(self) -> int:
        """Fail challenges that were not fetched, committed or revealed in time."""
        now = self.clock()
        # The late ones, found by the database (``_lateness`` in SQL): reading every
        # open proof each tick cost the proof loop most of a core while a flood of
        # fresh devices each had a challenge waiting.
        pickup_s, reveal_s = self.settings.proof_pickup_s, self.rules.reveal_s
        overdue = or_(
            and_(Proof.status == ProofStatus.ISSUED.value, Proof.created_at < now - pickup_s),
            and_(
                Proof.status == ProofStatus.FETCHED.value,
                Proof.fetched_at.is_not(None),
                Proof.fetched_at + Proof.deadline_s < now,
            ),
            and_(
                Proof.status == ProofStatus.COMMITTED.value,
                Proof.committed_at.is_not(None),
                Proof.committed_at < now - reveal_s,
            ),
        )
        with self.sessions() as db:
            late = list(db.scalars(select(Proof.id).where(overdue)))
        expired = 0
        for proof_id in late:
            # One transaction per proof: it holds one device row and never waits for
            # a second while holding it, so it cannot deadlock with the liveness flush
            # (which locks many devices) — docs/architecture.md, "Lock order".
            with self.sessions.begin() as db:
                proof = db.get(Proof, proof_id, with_for_update=True, populate_existing=True)
                if proof is None or proof.status not in OPEN:
                    continue  # finished meanwhile
                why = _lateness(proof, now, self.settings.proof_pickup_s, self.rules.reveal_s)
                if why is not None:
                    self._finish(db, proof, FailReason.TIMEOUT, None, why, now)
                    expired += 1
        return expired

    def tick(self) -> None:
        """One pass of the proof loop."""
        self.expire()
        self.schedule()
        self.refresh_readiness()

    # -- queries ---------------------------------------------------------------------------

    def history(self, device_id: str) -> ProofList:
        with self.sessions() as db:
            if db.get(Device, device_id) is None:
                raise UnknownDevice(device_id=device_id)
            proofs = db.scalars(
                select(Proof)
                .where(Proof.device_id == device_id)
                .order_by(Proof.created_at.desc())
                .limit(HISTORY)
            )
            return ProofList(items=[view(p) for p in proofs])

    @staticmethod
    def _devices_own_challenge(db: Session, signer: str, device_id: str, proof_id: str) -> Proof:
        if signer != device_id:
            raise NotYourDevice("a device answers only its own challenges", device_id=device_id)
        proof = db.get(Proof, proof_id, with_for_update=True)
        if proof is None or proof.device_id != device_id:
            raise UnknownChallenge(challenge=proof_id)
        return proof


def _kind(db: Session, proof: Proof) -> str:
    """The proved device's kind, which sets its efficiency floor."""
    dev = db.get(Device, proof.device_id)
    assert dev is not None  # proofs are deleted with their device
    return dev.kind


def _lateness(proof: Proof, now: float, pickup_s: float, reveal_s: float) -> str | None:
    if proof.status == ProofStatus.ISSUED.value and now - proof.created_at > pickup_s:
        return "not fetched in time"
    if (
        proof.status == ProofStatus.FETCHED.value
        and proof.fetched_at is not None
        and now - proof.fetched_at > proof.deadline_s
    ):
        return "no commitment before the deadline"
    if (
        proof.status == ProofStatus.COMMITTED.value
        and proof.committed_at is not None
        and now - proof.committed_at > reveal_s
    ):
        return "no reveal in time"
    return None


def view(p: Proof) -> ProofView:
    return ProofView(
        id=p.id,
        device_id=p.device_id,
        status=ProofStatus(p.status),
        reason=p.reason,
        detail=p.detail,
        n=p.n,
        rounds=p.rounds,
        checks=p.checks_k,
        work_flop=p.work_flop,
        claimed_tflops=p.claimed_tflops,
        measured_tflops=p.measured_tflops,
        deadline_s=p.deadline_s,
        memory_mb=p.memory_mb,
        prover=p.prover,
        created_at=p.created_at,
        fetched_at=p.fetched_at,
        committed_at=p.committed_at,
        finished_at=p.finished_at,
    )
