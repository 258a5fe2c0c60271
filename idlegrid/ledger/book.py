"""The double-entry book over the database (rules in ``core/ledger.py``).

``Book`` methods take a session and never commit: the caller's service owns
the transaction, so a posting and whatever it pays for land together or not
at all. Within it, every posting locks the chain head row first, then its
accounts: postings are serialised (as in TigerBeetle), the hash chain has no
forks, and two racing withdrawals of one balance cannot both pass the
overdraft check — on PostgreSQL the second waits on the row lock and then sees
the first one's debit. ``post_batch`` records a whole batch with a constant
number of statements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from idlegrid.core.ledger import (
    GENESIS_HASH,
    AccountState,
    Transfer,
    TransferKind,
    apply,
    chain_hash,
)
from idlegrid.errors import TransferExists, UnknownAccount
from idlegrid.ledger.tables import LedgerAccount, LedgerHead, LedgerTransfer
from idlegrid.orm import chunks

SETTLING = (TransferKind.POST_PENDING, TransferKind.VOID_PENDING)
SUMS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
_ACCOUNTS = cast(Table, LedgerAccount.__table__)
_TRANSFERS = cast(Table, LedgerTransfer.__table__)
_UPDATE_SUMS = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("key"))
    .values({name: bindparam(name) for name in SUMS})
)
_UPDATE_CLOSED = (
    update(_TRANSFERS)
    .where(_TRANSFERS.c.id == bindparam("key"))
    .values(closed_by=bindparam("closed"))
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified prefix of the hash chain: transfers ``1..seq``, the last with ``hash``."""

    seq: int
    hash: str


GENESIS = Checkpoint(0, GENESIS_HASH)


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
        """Create the account if it does not exist (idempotent, and safe when two
        transactions open the same account at once: ``INSERT … ON CONFLICT DO
        NOTHING``, where the second waits for the first and then does nothing)."""
        if db.get(LedgerAccount, account_id) is not None:
            return
        dialect = db.get_bind().dialect.name
        insert_into = postgresql.insert if dialect == "postgresql" else sqlite.insert
        db.execute(
            insert_into(_ACCOUNTS)
            .values(
                id=account_id,
                asset=asset,
                no_overdraft=no_overdraft,
                debits_pending=0,
                debits_posted=0,
                credits_pending=0,
                credits_posted=0,
                created_at=self.clock(),
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )

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
        The first failure raises, and the caller's transaction rolls back all.

        Set-based: the head and the accounts are locked FOR UPDATE, the batch's ids
        (replays) and the transfers it settles are read in one SELECT each, the
        rules run on plain values, and the writes come last (one multi-row INSERT,
        one UPDATE of the changed accounts' sums, one of settled ``closed_by``):
        a constant number of statements per batch, not five per transfer."""
        head = db.get(LedgerHead, 1, with_for_update=True)
        if head is None:
            head = LedgerHead(id=1, seq=0, hash=GENESIS_HASH)
            db.add(head)
        account_ids = sorted({a for t in transfers for a in (t.debit, t.credit)})
        rows: dict[str, LedgerAccount] = {}
        for chunk in chunks(account_ids):
            query = (
                select(LedgerAccount)
                .where(LedgerAccount.id.in_(chunk))
                .order_by(LedgerAccount.id)
                .with_for_update()
            )
            rows.update((r.id, r) for r in db.scalars(query))
        before = {key: _state(row) for key, row in rows.items()}
        states = dict(before)
        # id -> (transfer, seq, hash) of every transfer recorded, before or in this batch
        recorded: dict[str, tuple[Transfer, int, str]] = {}
        for chunk in chunks(sorted({t.id for t in transfers})):
            for r in db.scalars(select(LedgerTransfer).where(LedgerTransfer.id.in_(chunk))):
                recorded[r.id] = (_transfer(r), r.seq, r.hash)
        settled_ids = sorted(
            {t.pending_id for t in transfers if t.kind in SETTLING and t.pending_id}
        )
        pending_rows: dict[str, LedgerTransfer] = {}
        for chunk in chunks(settled_ids):
            locked = (
                select(LedgerTransfer)
                .where(LedgerTransfer.id.in_(chunk))
                .order_by(LedgerTransfer.id)
                .with_for_update()
            )
            pending_rows.update((r.id, r) for r in db.scalars(locked))
        # id -> (transfer, still open) of what a POST_PENDING or VOID_PENDING may name
        pendings = {k: (_transfer(r), r.closed_by is None) for k, r in pending_rows.items()}
        closed: dict[str, str] = {}
        new_rows: dict[str, dict[str, Any]] = {}
        out = []
        now = self.clock()
        seq, chain = head.seq, head.hash
        for t in transfers:
            prior = recorded.get(t.id)
            if prior is not None:
                if prior[0].canonical() != t.canonical():
                    raise TransferExists(transfer=t.id)
                out.append(Posted(t, prior[1], prior[2], replayed=True))
                continue
            for account_id in (t.debit, t.credit):
                if account_id not in states:
                    raise UnknownAccount(account=account_id)
            pending, is_open = None, False
            if t.kind in SETTLING and t.pending_id is not None:
                pending, is_open = pendings.get(t.pending_id, (None, False))
            debit, credit = apply(
                t, states[t.debit], states[t.credit], pending, pending_open=is_open
            )
            states[t.debit], states[t.credit] = debit, credit
            if pending is not None and t.pending_id is not None:
                pendings[t.pending_id] = (pending, False)
                closed[t.pending_id] = t.id
            if t.kind is TransferKind.PENDING:
                pendings[t.id] = (t, True)
            seq += 1
            chain = chain_hash(chain, t, seq)
            new_rows[t.id] = {
                "seq": seq,
                "id": t.id,
                "debit": t.debit,
                "credit": t.credit,
                "asset": t.asset,
                "amount": t.amount,
                "kind": t.kind.value,
                "pending_id": t.pending_id,
                "closed_by": None,
                "code": t.code,
                "memo": t.memo,
                "at": now,
                "hash": chain,
            }
            recorded[t.id] = (t, seq, chain)
            out.append(Posted(t, seq, chain, replayed=False))
        if new_rows:
            for pending_id, by in closed.items():
                if pending_id in new_rows:  # opened and settled in this batch
                    new_rows[pending_id]["closed_by"] = by
            conn = db.connection()
            for rows_chunk in chunks(list(new_rows.values())):
                conn.execute(insert(_TRANSFERS), rows_chunk)
            changed = [key for key in account_ids if states[key] != before[key]]
            if changed:
                conn.execute(
                    _UPDATE_SUMS,
                    [{"key": k, **{s: getattr(states[k], s) for s in SUMS}} for k in changed],
                )
            old_closed = [(k, by) for k, by in closed.items() if k in pending_rows]
            if old_closed:
                conn.execute(_UPDATE_CLOSED, [{"key": k, "closed": by} for k, by in old_closed])
            for key in changed:
                for name in SUMS:
                    set_committed_value(rows[key], name, getattr(states[key], name))
            for key, by in old_closed:
                set_committed_value(pending_rows[key], "closed_by", by)
            head.seq, head.hash = seq, chain
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
        return self.verify_chain_from(db, GENESIS)[0]

    def verify_chain_from(self, db: Session, since: Checkpoint) -> tuple[str | None, Checkpoint]:
        """Check the chain from a prefix verified before: the transfer at ``since.seq``
        must still carry ``since.hash`` (a rewrite of the prefix that recomputed every
        hash after it shows there), and each later one must follow from the one before,
        up to the head. Returns (the problem or None, the checkpoint reached).

        The head is read first and the walk stops at it: a posting committed during
        the walk adds transfers past the head read, which the next check takes."""
        head = db.get(LedgerHead, 1)
        end = Checkpoint(head.seq, head.hash) if head is not None else GENESIS
        if end.seq < since.seq:
            return f"the chain head ({end.seq}) is behind a verified transfer ({since.seq})", since
        previous, seq = since.hash, since.seq
        if since.seq:
            stored = db.scalar(select(LedgerTransfer.hash).where(LedgerTransfer.seq == since.seq))
            if stored != since.hash:
                return f"transfer {since.seq} changed after it was verified", since
        rows = select(LedgerTransfer).where(
            LedgerTransfer.seq > since.seq, LedgerTransfer.seq <= end.seq
        )
        for row in db.scalars(rows.order_by(LedgerTransfer.seq)).yield_per(5000):
            seq += 1
            if row.seq != seq:
                return f"transfer {row.id}: sequence {row.seq} where {seq} was expected", since
            expected = chain_hash(previous, _transfer(row), seq)
            if row.hash != expected:
                return f"transfer {row.id} (seq {seq}): hash does not follow from its fields", since
            previous = row.hash
        if (end.seq, end.hash) != (seq, previous):
            return f"the chain head ({end.seq}) does not match the last transfer ({seq})", since
        return None, end

    def totals(self, db: Session) -> dict[str, tuple[int, int, int, int]]:
        """Per asset: (Σ debits pending, Σ credits pending, Σ debits posted, Σ credits posted),
        summed by the database (a million accounts are not loaded to add them up)."""
        a = LedgerAccount
        query = select(
            a.asset,
            func.sum(a.debits_pending),
            func.sum(a.credits_pending),
            func.sum(a.debits_posted),
            func.sum(a.credits_posted),
        ).group_by(a.asset)
        return {
            asset: (int(dp or 0), int(cp or 0), int(dd or 0), int(cd or 0))
            for asset, dp, cp, dd, cd in db.execute(query)
        }


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
