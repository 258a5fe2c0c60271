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

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
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
    chain_hash_of,
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
        The first failure raises, and leaves the caller's transaction as it was
        (which then rolls back all, or goes on without the batch).

        Set-based: the head and the accounts are locked FOR UPDATE, the batch's ids
        (replays) and the transfers it settles are read in one SELECT each, the rules
        run on plain values (``_Batch``), and the writes come last: the new transfers,
        one UPDATE of the changed accounts' sums, one of the settled ``closed_by``. A
        constant number of statements per batch, not five per transfer. On PostgreSQL
        the new transfers go in by COPY, streamed as the rules pass them, so the server
        stores one part of the batch while the rules run on the next, and the three reads
        go at once, the transfers' canonical forms (which the hashes and the replays
        need) being worked out while the server reads (``_PostgresRows``)."""
        head = db.get(LedgerHead, 1, with_for_update=True)  # flushes the session first
        if head is None:
            head = LedgerHead(id=1, seq=0, hash=GENESIS_HASH)
            db.add(head)
        store = _PostgresRows(db) if _dialect(db) == "postgresql" else _Rows(db)
        canonicals: list[str | None] = []
        accounts, recorded, pendings = store.read(
            {a for t in transfers for a in (t.debit, t.credit)},
            {t.id for t in transfers},
            {t.pending_id for t in transfers if t.kind in SETTLING and t.pending_id},
            meanwhile=lambda: canonicals.extend(map(_canonical, transfers)),
        )
        batch = _Batch(accounts, recorded, pendings, head.seq, head.hash, self.clock())
        store.insert_transfers(batch.rows(transfers, canonicals))
        out: list[Posted] = []
        if batch.seq != head.seq:
            changed, closed = batch.changed, list(batch.closed.items())
            store.update(changed, closed, meanwhile=lambda: out.extend(batch.posted()))
            _refresh_loaded(db, changed, closed)
            head.seq, head.hash = batch.seq, batch.chain
        else:
            out = batch.posted()
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


class _Batch:
    """One batch through the rules (``core.ledger.apply``) and the hash chain, on plain
    values: the locked accounts' rows, the transfers recorded before (for replays)
    and the pending transfers the batch may settle, as ``Book.post_batch`` read them.
    ``rows`` yields each new transfer's row as it passes; once it is done, ``posted``
    says what the batch posted, ``seq``/``chain`` are the new head, ``changed`` the
    accounts whose sums changed (in id order), ``closed`` the pending transfers
    settled (id -> the transfer that settled it).

    An account's state is made from its row when a transfer first names it, and
    ``changed`` is worked out at the end of ``rows``: on PostgreSQL both happen while
    the server is still storing the COPY, not before it or after."""

    def __init__(
        self,
        accounts: Mapping[str, Sequence[Any]],
        recorded: dict[str, tuple[Transfer, int, str]],
        pendings: dict[str, tuple[Transfer, bool]],
        seq: int,
        chain: str,
        now: float,
    ) -> None:
        self.locked = accounts  # id -> its row, in _ACCOUNT_FIELDS order
        self.states: dict[str, AccountState] = {}  # of the accounts named so far
        # id -> (transfer, seq, hash) of every transfer recorded, before or in this batch
        self.recorded = recorded
        # id -> (transfer, still open) of what a POST_PENDING or VOID_PENDING may name
        self.pendings = pendings
        self.seq, self.chain, self.now = seq, chain, now
        self.closed: dict[str, str] = {}
        self.out: list[tuple[Transfer, int, str, bool]] = []  # Posted's fields
        self.changed: list[AccountState] = []

    def rows(
        self, transfers: Iterable[Transfer], canonicals: Iterable[str | None]
    ) -> Iterator[tuple[Any, ...]]:
        """Each new transfer's row, in ``_COLUMNS`` order (``closed_by`` None: the
        ``closed`` map sets it after); the first transfer that fails raises.
        ``canonicals``: each transfer's ``canonical()``, or None to work it out here."""
        states, locked, recorded, pendings = self.states, self.locked, self.recorded, self.pendings
        closed, out, now = self.closed, self.out, self.now
        seq, chain = self.seq, self.chain
        for t, canonical in zip(transfers, canonicals, strict=True):
            tid = t.id
            prior = recorded.get(tid)
            if prior is not None:
                if prior[0].canonical() != (canonical or t.canonical()):
                    raise TransferExists(transfer=tid)
                out.append((t, prior[1], prior[2], True))
                continue
            debit, credit = states.get(t.debit), states.get(t.credit)
            if debit is None:
                if (row := locked.get(t.debit)) is None:
                    raise UnknownAccount(account=t.debit)
                debit = AccountState(*row)
            if credit is None:
                if (row := locked.get(t.credit)) is None:
                    raise UnknownAccount(account=t.credit)
                credit = AccountState(*row)
            kind, pending_id = t.kind, t.pending_id
            pending, is_open = None, False
            if kind in SETTLING and pending_id is not None:
                pending, is_open = pendings.get(pending_id, (None, False))
            states[t.debit], states[t.credit] = apply(
                t, debit, credit, pending, pending_open=is_open
            )
            if pending is not None and pending_id is not None:
                pendings[pending_id] = (pending, False)
                closed[pending_id] = tid
            if kind is TransferKind.PENDING:
                pendings[tid] = (t, True)
            seq += 1
            chain = chain_hash_of(chain, seq, canonical or t.canonical())
            recorded[tid] = (t, seq, chain)
            out.append((t, seq, chain, False))
            yield (
                seq,
                tid,
                t.debit,
                t.credit,
                t.asset,
                t.amount,
                kind.value,
                pending_id,
                None,
                t.code,
                t.memo,
                now,
                chain,
            )
        self.seq, self.chain = seq, chain
        for key in sorted(states):
            s = states[key]
            if (s.debits_pending, s.debits_posted, s.credits_pending, s.credits_posted) != tuple(
                locked[key][3:]
            ):
                self.changed.append(s)

    def posted(self) -> list[Posted]:
        """What each transfer of the batch came to, in order (once ``rows`` is done)."""
        return [Posted(t, seq, chain, replayed) for t, seq, chain, replayed in self.out]


_COLUMNS = (
    "seq",
    "id",
    "debit",
    "credit",
    "asset",
    "amount",
    "kind",
    "pending_id",
    "closed_by",
    "code",
    "memo",
    "at",
    "hash",
)
_TRANSFER_FIELDS = (
    "id",
    "debit",
    "credit",
    "asset",
    "amount",
    "kind",
    "pending_id",
    "code",
    "memo",
)
_ACCOUNT_FIELDS = ("id", "asset", "no_overdraft", *SUMS)  # AccountState's order


def _canonical(t: Transfer) -> str | None:
    """``t.canonical()``, or None where it raises: ``apply`` then names what is wrong
    with the transfer (an amount that is no int, say) before the hash is wanted."""
    try:
        return t.canonical()
    except (TypeError, ValueError):
        return None


def _dialect(db: Session) -> str:
    return db.get_bind().dialect.name


def _transfer_of(row: Sequence[Any]) -> Transfer:
    """A Transfer from a row's first columns, in _TRANSFER_FIELDS order."""
    tid, debit, credit, asset, amount, kind, pending_id, code, memo = row[:9]
    return Transfer(
        tid, debit, credit, asset, int(amount), TransferKind(kind), pending_id, code, memo
    )


class _Rows:
    """What ``post_batch`` reads and writes, as plain values, in portable SQL (the
    path SQLite takes): IN lists in chunks, and ``executemany`` writes."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def read(
        self,
        account_ids: Iterable[str],
        transfer_ids: Iterable[str],
        settled_ids: Iterable[str],
        meanwhile: Callable[[], object],
    ) -> tuple[
        dict[str, Sequence[Any]],
        dict[str, tuple[Transfer, int, str]],
        dict[str, tuple[Transfer, bool]],
    ]:
        """``lock_accounts``, ``recorded`` and ``lock_pendings``, in that order (the
        locking order), and ``meanwhile`` (here after them)."""
        out = (
            self.lock_accounts(account_ids),
            self.recorded(transfer_ids),
            self.lock_pendings(settled_ids),
        )
        meanwhile()
        return out

    def lock_accounts(self, ids: Iterable[str]) -> dict[str, Sequence[Any]]:
        """The rows (in _ACCOUNT_FIELDS order) of the accounts of ``ids`` that exist,
        locked FOR UPDATE in id order."""
        a = _ACCOUNTS.c
        out: dict[str, Sequence[Any]] = {}
        for chunk in chunks(sorted(ids)):
            query = (
                select(*(a[f] for f in _ACCOUNT_FIELDS))
                .where(a.id.in_(chunk))
                .order_by(a.id)
                .with_for_update()
            )
            out.update((row[0], row) for row in self.db.execute(query))
        return out

    def recorded(self, ids: Iterable[str]) -> dict[str, tuple[Transfer, int, str]]:
        """id -> (transfer, seq, hash) of those of ``ids`` recorded already."""
        c = _TRANSFERS.c
        out: dict[str, tuple[Transfer, int, str]] = {}
        for chunk in chunks(sorted(ids)):
            query = select(*(c[f] for f in _TRANSFER_FIELDS), c.seq, c.hash).where(c.id.in_(chunk))
            for row in self.db.execute(query):
                out[row[0]] = (_transfer_of(row), row[9], row[10])
        return out

    def lock_pendings(self, ids: Iterable[str]) -> dict[str, tuple[Transfer, bool]]:
        """id -> (transfer, still open) of those of ``ids`` recorded, locked FOR UPDATE
        in id order."""
        c = _TRANSFERS.c
        out: dict[str, tuple[Transfer, bool]] = {}
        for chunk in chunks(sorted(ids)):
            query = (
                select(*(c[f] for f in _TRANSFER_FIELDS), c.closed_by)
                .where(c.id.in_(chunk))
                .order_by(c.id)
                .with_for_update()
            )
            for row in self.db.execute(query):
                out[row[0]] = (_transfer_of(row), row[9] is None)
        return out

    def insert_transfers(self, rows: Iterable[tuple[Any, ...]]) -> None:
        conn = self.db.connection()
        for chunk in chunks(list(rows)):
            conn.execute(insert(_TRANSFERS), [dict(zip(_COLUMNS, r, strict=True)) for r in chunk])

    def update(
        self,
        accounts: Sequence[AccountState],
        closed: Sequence[tuple[str, str]],
        meanwhile: Callable[[], object],
    ) -> None:
        """Store the changed accounts' sums and the settled pending transfers'
        ``closed_by`` (pending id, settled by), and run ``meanwhile`` (here after)."""
        self.update_sums(accounts)
        self.update_closed(closed)
        meanwhile()

    def update_sums(self, accounts: Sequence[AccountState]) -> None:
        if accounts:
            self.db.connection().execute(
                _UPDATE_SUMS,
                [{"key": s.id, **{name: getattr(s, name) for name in SUMS}} for s in accounts],
            )

    def update_closed(self, closed: Sequence[tuple[str, str]]) -> None:
        """Set ``closed_by`` of recorded pending transfers: (pending id, settled by)."""
        if closed:
            self.db.connection().execute(
                _UPDATE_CLOSED, [{"key": k, "closed": by} for k, by in closed]
            )


class _PostgresRows(_Rows):
    """The same on PostgreSQL, one statement each whatever the batch's size: the new
    transfers go in by COPY (to psycopg's own connection, the one the session's
    transaction runs on), and the reads and updates take their ids and sums as one
    JSON array each, unpacked by the server (``json_array_elements``): psycopg turns a
    list of 10,000 strings into an array parameter at a few microseconds a string, and
    ``json.dumps`` does it in C at a tenth of that."""

    def _driver(self) -> psycopg.Connection[Any]:
        driver = self.db.connection().connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        return driver

    def read(
        self,
        account_ids: Iterable[str],
        transfer_ids: Iterable[str],
        settled_ids: Iterable[str],
        meanwhile: Callable[[], object],
    ) -> tuple[
        dict[str, Sequence[Any]],
        dict[str, tuple[Transfer, int, str]],
        dict[str, tuple[Transfer, bool]],
    ]:
        """The three reads in one pipeline: sent at once, run by the server in order
        while ``meanwhile`` runs here, on psycopg's cursors (whose plain tuples cost a
        third of SQLAlchemy's rows)."""
        driver = self._driver()
        queries = (
            (_PG_LOCK_ACCOUNTS, list(account_ids)),
            (_PG_RECORDED, list(transfer_ids)),
            (_PG_LOCK_PENDINGS, list(settled_ids)),
        )
        results: list[list[tuple[Any, ...]]] = []
        with driver.pipeline():
            cursors = [driver.cursor() if ids else None for _, ids in queries]
            for cursor, (sql, ids) in zip(cursors, queries, strict=True):
                if cursor is not None:
                    cursor.execute(sql, (_json(ids),))
            meanwhile()
            for cursor in cursors:
                results.append(cursor.fetchall() if cursor is not None else [])
                if cursor is not None:
                    cursor.close()
        accounts, recorded, pendings = results
        return (
            {row[0]: row for row in accounts},
            {row[0]: (_transfer_of(row), row[9], row[10]) for row in recorded},
            {row[0]: (_transfer_of(row), row[9] is None) for row in pendings},
        )

    def insert_transfers(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """COPY, in a savepoint: a rule that fails mid-stream aborts the COPY, and the
        savepoint takes back what the server had stored of it."""
        rows = iter(rows)
        first = next(rows, None)
        if first is None:
            return
        # The session emits the SAVEPOINT when next asked for its connection (_driver).
        savepoint = self.db.begin_nested()
        with savepoint, self._driver().cursor() as cursor, cursor.copy(_PG_COPY) as copy:
            copy.write_row(first)
            for row in rows:
                copy.write_row(row)

    def update(
        self,
        accounts: Sequence[AccountState],
        closed: Sequence[tuple[str, str]],
        meanwhile: Callable[[], object],
    ) -> None:
        """Both UPDATEs in one pipeline, run by the server while ``meanwhile`` runs."""
        statements = []
        if accounts:
            columns = [[s.id for s in accounts]]
            columns += ([getattr(s, name) for s in accounts] for name in SUMS)
            statements.append((_PG_UPDATE_SUMS, tuple(map(_json, columns))))
        if closed:
            by_pending = (_json([k for k, _ in closed]), _json([by for _, by in closed]))
            statements.append((_PG_UPDATE_CLOSED, by_pending))
        driver = self._driver()
        with driver.pipeline(), driver.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
            meanwhile()


def _json(values: Sequence[Any]) -> str:
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def _pg_array(of: str = "text") -> str:
    """A parameter that is a JSON array, as a PostgreSQL array of ``of``."""
    return f"ARRAY(SELECT json_array_elements_text(%s::json)::{of})"


_PG_LOCK_ACCOUNTS = (
    f"SELECT {', '.join(_ACCOUNT_FIELDS)} FROM ledger_accounts"
    f" WHERE id = ANY({_pg_array()}) ORDER BY id FOR UPDATE"
)
_PG_RECORDED = (
    f"SELECT {', '.join(_TRANSFER_FIELDS)}, seq, hash FROM ledger_transfers"
    f" WHERE id = ANY({_pg_array()})"
)
_PG_LOCK_PENDINGS = (
    f"SELECT {', '.join(_TRANSFER_FIELDS)}, closed_by FROM ledger_transfers"
    f" WHERE id = ANY({_pg_array()}) ORDER BY id FOR UPDATE"
)
_PG_COPY = f"COPY ledger_transfers ({', '.join(_COLUMNS)}) FROM STDIN"
_PG_UPDATE_SUMS = (
    f"UPDATE ledger_accounts AS a SET {', '.join(f'{s} = v.{s}' for s in SUMS)}"
    f" FROM unnest({_pg_array()}, {', '.join(_pg_array('bigint') for _ in SUMS)})"
    f" AS v(id, {', '.join(SUMS)}) WHERE a.id = v.id"
)
_PG_UPDATE_CLOSED = (
    "UPDATE ledger_transfers AS t SET closed_by = v.by"
    f" FROM unnest({_pg_array()}, {_pg_array()}) AS v(id, by) WHERE t.id = v.id"
)


def _refresh_loaded(
    db: Session, sums: Sequence[AccountState], closed: Sequence[tuple[str, str]]
) -> None:
    """Give the rows this session has loaded the values just written (the writes
    bypass the ORM, and a stale object would be read back as the truth). Accounts
    are known by their key; transfers (keyed by ``seq``) by the ``id`` loaded."""
    if not db.identity_map:
        return
    by_account = {s.id: s for s in sums}
    by_pending = dict(closed)
    for state in db.identity_map.all_states():
        if state.class_ is LedgerAccount and state.identity is not None:
            account = by_account.get(state.identity[0])
            if account is not None:
                for name in SUMS:
                    set_committed_value(state.obj(), name, getattr(account, name))
        elif state.class_ is LedgerTransfer and by_pending:
            by = by_pending.get(state.dict.get("id", ""))
            if by is not None:
                set_committed_value(state.obj(), "closed_by", by)


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
