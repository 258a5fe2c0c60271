"""The chain outbox: every token movement is recorded before it is sent, and sent once.

A money path that moves tokens on chain (a withdrawal, a deposit sweep, a claim,
a stake, an emission mint, a burn) does not call the chain inside its database
transaction. It posts to the book and ``record``s a ``ChainOp`` in the same
transaction, so the two commit together or not at all. After the commit the
outbox finishes the operation::

    pending ──prepare──▶ signed transaction stored ──submit──▶ landed ok ──▶ done
       ▲                        │                               │
       │                 expired, not landed             landed failed
       └────────── sign again ◀─┘                 (retry; after MAX_ATTEMPTS:
                                                    failed, its undo posted)

The rule that makes a retry safe: a new transaction is signed only when the
stored one has not landed and can no longer land (its blockhash expired). The
stored one may be sent any number of times: the chain runs one signature once.
So a crash at any point — before the commit (nothing happened), after it
(``drain`` at start-up sends it), after the signature is stored (the same bytes
are sent again), after the chain ran it (``landed`` says so and it is finished)
— leaves the book and the chain agreeing once the outbox drains, and never
pays twice. ``idlegrid/faults.py`` names those points; the fault tests kill
the process at each of them on every path.

``drain`` runs after every commit that recorded an operation (a session
event), at start-up and in a loop, oldest first, one at a time per process
(several processes are safe too: the row is locked while a transaction is
signed for it). Until it drains, the audit counts an unfinished operation as
in flight rather than as a discrepancy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from solders.keypair import Keypair
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid import faults
from idlegrid.core.ledger import Transfer
from idlegrid.errors import TransferExists
from idlegrid.ledger.book import Book
from idlegrid.ledger.chain import (
    Asset,
    BlockhashExpired,
    Chain,
    ChainError,
    ChainOp,
    Landed,
    Prepared,
)
from idlegrid.ledger.tables import ChainOperation

log = logging.getLogger("idlegrid.ledger.outbox")

MAX_ATTEMPTS: Final = 5
"""Transactions that landed and failed before an operation is given up (and undone)."""
_RECORDED: Final = (
    "idlegrid.outbox.recorded"  # session.info key: operations this transaction recorded
)


@dataclass(frozen=True, slots=True)
class OpStatus:
    id: str
    status: str  # pending | done | failed
    signature: str | None
    error: str | None


class Outbox:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        chain: Chain,
        book: Book,
        payer: Keypair,
        signer: Callable[[str], Keypair],
        clock: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.chain = chain
        self.book = book
        self.payer = payer
        self.signer = signer
        self.clock = clock
        self._lock = threading.Lock()

    # -- inside a money path's transaction ---------------------------------------------

    def record(
        self,
        db: Session,
        op_id: str,
        op: ChainOp,
        signer: str = "authority",
        undo: Sequence[Transfer] = (),
    ) -> None:
        """Record ``op`` under ``op_id`` in the caller's transaction (idempotent: the
        same id with the same operation is a no-op; with another, ``TransferExists``)."""
        existing = db.scalar(select(ChainOperation).where(ChainOperation.id == op_id))
        if existing is not None:
            if _op(existing) != _with_memo(op, op_id) or existing.signer != signer:
                raise TransferExists(transfer=op_id)
            return
        db.add(
            ChainOperation(
                id=op_id,
                kind=op.kind,
                asset=op.asset.value,
                amount=op.amount,
                source=op.source,
                dest=op.dest,
                dest_owner=op.dest_owner,
                signer=signer,
                status="pending",
                attempts=0,
                undo=[_transfer_json(t) for t in undo] or None,
                created_at=self.clock(),
            )
        )
        if _RECORDED not in db.info:
            # Whichever factory made this session: its commit fires the fault points
            # and the drain.
            event.listen(db, "before_commit", self._before_commit)
            event.listen(db, "after_commit", self._after_commit)
            event.listen(db, "after_soft_rollback", self._after_rollback)
        db.info.setdefault(_RECORDED, []).append(op_id)

    def _before_commit(self, db: Session) -> None:
        if db.info.get(_RECORDED):
            faults.point("before_commit")

    def _after_commit(self, db: Session) -> None:
        if db.info.get(_RECORDED):
            db.info[_RECORDED] = []
            faults.point("after_commit")
            try:
                self.drain()
            except Exception:  # the loop finishes it; the caller's commit stands
                log.exception("chain outbox: draining after a commit failed")

    def _after_rollback(self, db: Session, previous: object) -> None:
        if db.info.get(_RECORDED):
            db.info[_RECORDED] = []

    # -- finishing ----------------------------------------------------------------------

    def drain(self, limit: int = 1000) -> int:
        """Finish unfinished operations, oldest first; returns how many finished.
        Stops early when the chain cannot be reached (the next pass goes on)."""
        with self._lock:
            with self.sessions() as db:
                ids = list(
                    db.scalars(
                        select(ChainOperation.id)
                        .where(ChainOperation.status == "pending")
                        .order_by(ChainOperation.seq)
                        .limit(limit)
                    )
                )
            finished = 0
            for op_id in ids:
                try:
                    finished += self._finish(op_id)
                except ChainError as e:
                    log.warning("chain outbox: %s waits: %s", op_id, e)
                    self._note(op_id, str(e))
                    if not isinstance(e, BlockhashExpired):
                        break
            return finished

    def status(self, op_id: str) -> OpStatus | None:
        with self.sessions() as db:
            row = db.scalar(select(ChainOperation).where(ChainOperation.id == op_id))
            if row is None:
                return None
            return OpStatus(row.id, row.status, row.signature, row.error)

    def _finish(self, op_id: str) -> bool:
        """One step towards done for one operation: True once it is done or failed."""
        with self.sessions.begin() as db:
            row = _locked(db, op_id)
            if row is None or row.status != "pending":
                return True
            prepared = _prepared(row)
            if prepared is not None:
                # Expiry first, then landing: a transaction that lands in between is seen.
                gone = self.chain.expired(prepared)
                landed = self.chain.landed(prepared.signature)
                if landed is not None:
                    return self._settle(db, row, landed)
                if gone:
                    prepared = None  # it never landed and never can: sign a new one
            if prepared is None:
                signer = self.signer(row.signer)
                instructions = self.chain.instructions(_op(row), signer.pubkey())
                prepared = self.chain.prepare(instructions, self.payer, signer)
                row.signature, row.tx, row.valid_until = (
                    prepared.signature,
                    prepared.tx,
                    prepared.valid_until,
                )
                row.attempts += 1
        faults.point("before_chain")
        landed = self.chain.submit(prepared)
        faults.point("after_chain")
        with self.sessions.begin() as db:
            row = _locked(db, op_id)
            if row is None or row.status != "pending" or row.signature != prepared.signature:
                return True  # another process finished it
            return self._settle(db, row, landed)

    def _settle(self, db: Session, row: ChainOperation, landed: Landed) -> bool:
        if landed.ok:
            row.status, row.finished_at, row.error = "done", self.clock(), None
            return True
        # It ran and failed (final: that signature never runs again). Try a new one a
        # few times (an earlier operation it depends on may land first), then give up.
        row.error = (landed.error or "failed")[:512]
        row.signature, row.tx, row.valid_until = None, None, None
        if row.attempts < MAX_ATTEMPTS:
            log.warning("chain outbox: %s failed on chain (%s); retrying", row.id, row.error)
            return False
        row.status, row.finished_at = "failed", self.clock()
        undo = [_transfer_from_json(t) for t in row.undo or []]
        if undo:
            self.book.post_batch(db, undo)
        log.error(
            "chain outbox: %s failed for good after %d attempts: %s%s",
            row.id,
            row.attempts,
            row.error,
            "; its book postings were undone" if undo else "; the audit will name it",
        )
        return True

    def _note(self, op_id: str, error: str) -> None:
        with self.sessions.begin() as db:
            row = _locked(db, op_id)
            if row is not None and row.status == "pending":
                row.error = error[:512]

    # -- the audit's view ---------------------------------------------------------------

    def in_flight(self, db: Session) -> list[ChainOp]:
        """Unfinished operations whose transaction has not landed: the chain does not
        show them yet."""
        out = []
        for row in db.scalars(
            select(ChainOperation)
            .where(ChainOperation.status == "pending")
            .order_by(ChainOperation.seq)
        ):
            landed = self.chain.landed(row.signature) if row.signature else None
            if landed is None or not landed.ok:
                out.append(_op(row))
        return out

    def failed(self, db: Session) -> list[tuple[str, str]]:
        rows = db.execute(
            select(ChainOperation.id, ChainOperation.error).where(ChainOperation.status == "failed")
        )
        return [(r.id, r.error or "") for r in rows]

    def counts(self, db: Session) -> dict[str, int]:
        rows = db.execute(
            select(ChainOperation.status, func.count()).group_by(ChainOperation.status)
        )
        return {str(s): int(n) for s, n in rows}


def _locked(db: Session, op_id: str) -> ChainOperation | None:
    return db.scalar(select(ChainOperation).where(ChainOperation.id == op_id).with_for_update())


def _with_memo(op: ChainOp, op_id: str) -> ChainOp:
    return ChainOp(op.kind, op.asset, op.amount, op.source, op.dest, op.dest_owner, memo=op_id)


def _op(row: ChainOperation) -> ChainOp:
    return ChainOp(
        row.kind,  # type: ignore[arg-type]
        Asset(row.asset),
        int(row.amount),
        source=row.source,
        dest=row.dest,
        dest_owner=row.dest_owner,
        memo=row.id,
    )


def _prepared(row: ChainOperation) -> Prepared | None:
    if row.signature is None or row.tx is None or row.valid_until is None:
        return None
    return Prepared(row.signature, bytes(row.tx), int(row.valid_until))


def _transfer_json(t: Transfer) -> dict[str, Any]:
    return {
        "id": t.id,
        "debit": t.debit,
        "credit": t.credit,
        "asset": t.asset,
        "amount": t.amount,
        "code": t.code,
        "memo": t.memo,
    }


def _transfer_from_json(raw: dict[str, Any]) -> Transfer:
    return Transfer(
        raw["id"],
        raw["debit"],
        raw["credit"],
        raw["asset"],
        int(raw["amount"]),
        code=raw["code"],
        memo=raw["memo"],
    )
