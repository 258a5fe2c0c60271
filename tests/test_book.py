"""The book over a real database (SQLite and PostgreSQL): the same rules as the
pure model, idempotent ids, a tamper-evident chain, and racing withdrawals."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core.ledger import Transfer
from idlegrid.errors import IdlegridError, InsufficientFunds, TransferExists, UnknownAccount
from idlegrid.ledger.book import Book, balanced
from idlegrid.server.db import make_engine, migrate, session_factory
from idlegrid.server.db.models import LedgerTransfer
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
