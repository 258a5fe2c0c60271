"""The book over a real database (SQLite and PostgreSQL): the same rules as the
pure model, idempotent ids, a tamper-evident chain, and racing withdrawals."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core.ledger import GENESIS_HASH, Transfer, chain_hash
from idlegrid.errors import IdlegridError, InsufficientFunds, TransferExists, UnknownAccount
from idlegrid.ledger.book import GENESIS, Book, balanced
from idlegrid.ledger.tables import LedgerHead, LedgerTransfer
from idlegrid.server.db import make_engine, migrate, session_factory
from tests.test_ledger_core import ACCOUNTS, Model, op


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    migrate(engine)
    factory = session_factory(engine)
    book = Book()
    with factory.begin() as db:
        for a in ACCOUNTS:
            book.open_account(db, a, "IO", no_overdraft=a != "world")
    yield factory
    engine.dispose()


def test_a_retried_transfer_is_recorded_once(sessions: sessionmaker[Session]) -> None:
    book = Book()
    t = Transfer("deposit-1", "world", "alice", "IO", 500, code="deposit")
    with sessions.begin() as db:
        first = book.post(db, t)
    with sessions.begin() as db:
        again = book.post(db, t)
        assert again.replayed and again.seq == first.seq
        assert book.account(db, "alice").balance == 500
        with pytest.raises(TransferExists):
            book.post(db, Transfer("deposit-1", "world", "alice", "IO", 501, code="deposit"))


def test_a_failed_batch_leaves_nothing_behind(sessions: sessionmaker[Session]) -> None:
    book = Book()
    with pytest.raises(InsufficientFunds), sessions.begin() as db:
        book.post_batch(
            db,
            [
                Transfer("a", "world", "alice", "IO", 10),
                Transfer("b", "alice", "bob", "IO", 11),  # more than alice has
            ],
        )
    with sessions() as db:
        assert book.account(db, "alice").balance == 0
        assert book.history(db, "alice") == []
    with pytest.raises(UnknownAccount), sessions.begin() as db:
        book.post(db, Transfer("c", "world", "nobody", "IO", 1))


def test_tampering_shows_in_the_chain(sessions: sessionmaker[Session]) -> None:
    book = Book()
    with sessions.begin() as db:
        for i in range(5):
            book.post(db, Transfer(f"t{i}", "world", "alice", "IO", 10 + i))
        assert book.verify_chain(db) is None
    with sessions.begin() as db:
        db.execute(update(LedgerTransfer).where(LedgerTransfer.id == "t2").values(amount=999))
    with sessions() as db:
        problem = book.verify_chain(db)
        assert problem is not None and "t2" in problem


def test_the_chain_is_checked_from_a_verified_checkpoint(
    sessions: sessionmaker[Session],
) -> None:
    """An audit re-hashes only what is new since its checkpoint, and still notices a
    rewrite of the verified prefix: a rewrite that keeps the chain whole changes the
    checkpoint's own hash; one that does not is noticed by the next full walk."""
    book = Book()
    with sessions.begin() as db:
        for i in range(5):
            book.post(db, Transfer(f"t{i}", "world", "alice", "IO", 10 + i))
    with sessions() as db:
        problem, first = book.verify_chain_from(db, GENESIS)
    assert problem is None and first.seq == 5
    with sessions.begin() as db:
        for i in range(5, 8):
            book.post(db, Transfer(f"t{i}", "world", "alice", "IO", 10 + i))
    with sessions() as db:
        problem, second = book.verify_chain_from(db, first)
        assert problem is None and second.seq == 8
        assert book.verify_chain_from(db, second) == (None, second)  # nothing new
        # A forged checkpoint (a hash this chain never had) is refused.
        forged = dataclasses.replace(second, hash="f" * 64)
        problem, kept = book.verify_chain_from(db, forged)
        assert problem is not None and "changed after it was verified" in problem
        assert kept == forged

    # Rewrite t1 and re-chain every hash after it, head included: the prefix is
    # consistent again, but transfer 8 no longer carries the hash that was verified.
    with sessions.begin() as db:
        rows = list(db.scalars(select(LedgerTransfer).order_by(LedgerTransfer.seq)))
        previous = GENESIS_HASH
        for row in rows:
            if row.id == "t1":
                row.amount = 999
            t = Transfer(row.id, row.debit, row.credit, row.asset, row.amount)
            row.hash = previous = chain_hash(previous, t, row.seq)
        head = db.get(LedgerHead, 1)
        assert head is not None
        head.hash = previous
    with sessions() as db:
        problem, _ = book.verify_chain_from(db, second)
        assert problem is not None and "transfer 8 changed" in problem
        # A walk from the start cannot tell: the rewrite left a whole chain. This is
        # what a checkpoint kept outside the database (the auditor's memory) adds.
        assert book.verify_chain(db) is None


def test_a_posting_during_the_walk_is_not_a_broken_chain(
    sessions: sessionmaker[Session],
) -> None:
    """The head is read before the walk, which stops at it: transfers committed in
    between are left to the next check instead of failing this one."""
    book = Book()
    with sessions.begin() as db:
        for i in range(3):
            book.post(db, Transfer(f"t{i}", "world", "alice", "IO", 1))
    with sessions() as db:
        head = db.get(LedgerHead, 1)  # this session's view of the head, read first
        assert head is not None and head.seq == 3
        with sessions.begin() as other:
            book.post(other, Transfer("late", "world", "alice", "IO", 1))
        problem, reached = book.verify_chain_from(db, GENESIS)
        assert problem is None
        assert reached.seq == 3  # the walk stops at the head it read first
    with sessions() as db:
        assert book.verify_chain_from(db, reached)[0] is None
        assert book.verify_chain_from(db, reached)[1].seq == 4


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(op, max_size=25))
def test_the_database_book_agrees_with_the_pure_model(
    sessions: sessionmaker[Session],
    ops: list[tuple],  # type: ignore[type-arg]
) -> None:
    book = Book()
    model = Model()
    prefix = f"h{id(ops)}-"
    with sessions() as db:
        start = {a.id: a for a in book.accounts(db)}
    model.accounts = dict(start)
    for o in ops:
        t = model.attempt(*o)  # the same transfer goes to the database, ids prefixed
        if t.pending_id not in (None, "none"):
            t = dataclasses.replace(t, pending_id=prefix + str(t.pending_id))
        t = dataclasses.replace(t, id=prefix + t.id)
        try:
            with sessions.begin() as db:
                book.post(db, t)
        except IdlegridError:
            pass
    with sessions() as db:
        for a in book.accounts(db):
            assert a == model.accounts[a.id], a.id
        assert balanced(book.totals(db).values())
        assert book.verify_chain(db) is None


def test_racing_withdrawals_cannot_overdraw(sessions: sessionmaker[Session]) -> None:
    book = Book()
    with sessions.begin() as db:
        book.post(db, Transfer("fund", "world", "alice", "IO", 100))
    wins: list[str] = []
    losses: list[str] = []
    barrier = threading.Barrier(8)

    def withdraw(i: int) -> None:
        barrier.wait()
        try:
            with sessions.begin() as db:
                book.post(db, Transfer(f"w{i}", "alice", "world", "IO", 30, code="withdrawal"))
            wins.append(f"w{i}")
        except InsufficientFunds:
            losses.append(f"w{i}")

    threads = [threading.Thread(target=withdraw, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(wins) == 3 and len(losses) == 5
    with sessions() as db:
        assert book.account(db, "alice").balance == 10
        assert book.verify_chain(db) is None


def test_racing_opens_of_one_account_both_succeed(sessions: sessionmaker[Session]) -> None:
    """Two transactions open the same new account at once: neither fails, one row."""
    book = Book()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            with sessions.begin() as db:
                barrier.wait(5)
                book.open_account(db, "user:racer:IO", "IO")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with sessions() as db:
        assert book.account(db, "user:racer:IO").balance == 0
        book.open_account(db, "user:racer:IO", "IO")  # and again: nothing happens
