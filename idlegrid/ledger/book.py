"""The double-entry book over the database (rules in ``core/ledger.py``).

``Book`` methods take a session and never commit: the caller's service owns
the transaction, so a posting and whatever it pays for land together or not
at all. Within it, every posting locks the chain head row first, then its
accounts: postings are serialised (as in TigerBeetle), the hash chain has no
forks, and two racing withdrawals of one balance cannot both pass the
overdraft check — on PostgreSQL the second waits on the row lock and then sees
the first one's debit. ``post_batch`` amortises the head lock over many
transfers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from idlegrid.core import ledger as core
from idlegrid.core.ledger import AccountState, Transfer, TransferKind
from idlegrid.errors import TransferExists, UnknownAccount
from idlegrid.server.db.models import LedgerAccount, LedgerHead, LedgerTransfer


@dataclass(frozen=True, slots=True)
class Posted:
    """A recorded transfer; ``replayed`` when the id had been recorded before."""

    transfer: Transfer
    seq: int
    hash: str
    replayed: bool


class Book:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    # -- accounts ----------------------------------------------------------------------

    def open_account(
        self, db: Session, account_id: str, asset: str, no_overdraft: bool = True
    ) -> None:
        """Create the account if it does not exist (idempotent)."""
        if db.get(LedgerAccount, account_id) is None:
            db.add(
                LedgerAccount(
                    id=account_id,
                    asset=asset,
                    no_overdraft=no_overdraft,
                    debits_pending=0,
                    debits_posted=0,
                    credits_pending=0,
                    credits_posted=0,
                    created_at=self.clock(),
                )
            )
            db.flush()

    def account(self, db: Session, account_id: str) -> AccountState:
        row = db.get(LedgerAccount, account_id)
        if row is None:
            raise UnknownAccount(account=account_id)
        return _state(row)

    def accounts(self, db: Session) -> list[AccountState]:
        return [_state(r) for r in db.scalars(select(LedgerAccount).order_by(LedgerAccount.id))]

    # -- postings ----------------------------------------------------------------------

    def post(self, db: Session, transfer: Transfer) -> Posted:
        return self.post_batch(db, [transfer])[0]

    def post_batch(self, db: Session, transfers: Sequence[Transfer]) -> list[Posted]:
        """Record transfers in order; a retried id is returned, not recorded again.
        The first failure raises, and the caller's transaction rolls back all."""
        head = db.get(LedgerHead, 1, with_for_update=True)
        if head is None:
            head = LedgerHead(id=1, seq=0, hash=core.GENESIS_HASH)
            db.add(head)
        ids = sorted({a for t in transfers for a in (t.debit, t.credit)})
        rows = {
            r.id: r
            for r in db.scalars(
                select(LedgerAccount)
                .where(LedgerAccount.id.in_(ids))
                .order_by(LedgerAccount.id)
                .with_for_update()
            )
        }
        out = []
        now = self.clock()
        for t in transfers:
            existing = db.scalar(select(LedgerTransfer).where(LedgerTransfer.id == t.id))
            if existing is not None:
                if _transfer(existing).canonical() != t.canonical():
                    raise TransferExists(transfer=t.id)
                out.append(Posted(t, existing.seq, existing.hash, replayed=True))
                continue
            for account_id in (t.debit, t.credit):
                if account_id not in rows:
                    raise UnknownAccount(account=account_id)
            pending, pending_row = None, None
            if t.kind in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING):
                pending_row = db.scalar(
                    select(LedgerTransfer)
                    .where(LedgerTransfer.id == t.pending_id)
                    .with_for_update()
                )
                pending = _transfer(pending_row) if pending_row is not None else None
            debit, credit = core.apply(
                t,
                _state(rows[t.debit]),
                _state(rows[t.credit]),
                pending,
                pending_open=pending_row is not None and pending_row.closed_by is None,
            )
            _store(rows[t.debit], debit)
            _store(rows[t.credit], credit)
            if pending_row is not None:
                pending_row.closed_by = t.id
            head.seq += 1
            head.hash = core.chain_hash(head.hash, t, head.seq)
            db.add(
                LedgerTransfer(
                    seq=head.seq,
                    id=t.id,
                    debit=t.debit,
                    credit=t.credit,
                    asset=t.asset,
                    amount=t.amount,
                    kind=t.kind.value,
                    pending_id=t.pending_id,
                    code=t.code,
                    memo=t.memo,
                    at=now,
                    hash=head.hash,
                )
            )
            out.append(Posted(t, head.seq, head.hash, replayed=False))
        db.flush()
        return out

    # -- reading -----------------------------------------------------------------------

    def history(
        self, db: Session, account_id: str, limit: int = 100
    ) -> list[tuple[Transfer, float, int]]:
        """An account's transfers, newest first: (transfer, time, seq)."""
        rows = db.scalars(
            select(LedgerTransfer)
            .where((LedgerTransfer.debit == account_id) | (LedgerTransfer.credit == account_id))
            .order_by(LedgerTransfer.seq.desc())
            .limit(limit)
        )
        return [(_transfer(r), r.at, r.seq) for r in rows]

    def verify_chain(self, db: Session) -> str | None:
        """None when every transfer's hash follows from the one before; else where not."""
        previous, seq = core.GENESIS_HASH, 0
        for row in db.scalars(select(LedgerTransfer).order_by(LedgerTransfer.seq)).yield_per(5000):
            seq += 1
            if row.seq != seq:
                return f"transfer {row.id}: sequence {row.seq} where {seq} was expected"
            expected = core.chain_hash(previous, _transfer(row), seq)
            if row.hash != expected:
                return f"transfer {row.id} (seq {seq}): hash does not follow from its fields"
            previous = row.hash
        head = db.get(LedgerHead, 1)
        if head is not None and (head.seq, head.hash) != (seq, previous):
            return f"the chain head ({head.seq}) does not match the last transfer ({seq})"
        return None

    def totals(self, db: Session) -> dict[str, tuple[int, int, int, int]]:
        """Per asset: (Σ debits pending, Σ credits pending, Σ debits posted, Σ credits posted)."""
        out: dict[str, tuple[int, int, int, int]] = {}
        for a in self.accounts(db):
            dp, cp, dd, cd = out.get(a.asset, (0, 0, 0, 0))
            out[a.asset] = (
                dp + a.debits_pending,
                cp + a.credits_pending,
                dd + a.debits_posted,
                cd + a.credits_posted,
            )
        return out


def _state(row: LedgerAccount) -> AccountState:
    return AccountState(
        id=row.id,
        asset=row.asset,
        no_overdraft=row.no_overdraft,
        debits_pending=int(row.debits_pending),
        debits_posted=int(row.debits_posted),
        credits_pending=int(row.credits_pending),
        credits_posted=int(row.credits_posted),
    )


def _store(row: LedgerAccount, state: AccountState) -> None:
    row.debits_pending = state.debits_pending
    row.debits_posted = state.debits_posted
    row.credits_pending = state.credits_pending
    row.credits_posted = state.credits_posted


def _transfer(row: LedgerTransfer) -> Transfer:
    return Transfer(
        id=row.id,
        debit=row.debit,
        credit=row.credit,
        asset=row.asset,
        amount=int(row.amount),
        kind=TransferKind(row.kind),
        pending_id=row.pending_id,
        code=row.code,
        memo=row.memo,
    )


def balanced(totals: Iterable[tuple[int, int, int, int]]) -> bool:
    return all(dp == cp and dd == cd for dp, cp, dd, cd in totals)
