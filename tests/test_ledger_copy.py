"""``Book.post_batch`` writes PostgreSQL's batches by COPY and SQLite's by executemany:
both must record exactly what the rules say, down to the byte. The same batches go
to both databases and to a plain fold of the pure rules (``core/ledger.py``), and
every column of every row must agree; a batch that fails half-way through its COPY
leaves the transaction as it was; rows the session had loaded see the writes; and
the hash worked out ahead of the rules is the core's, byte for byte."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core.ledger import (
    GENESIS_HASH,
    AccountState,
    Transfer,
    TransferKind,
    apply,
    chain_hash,
)
from idlegrid.errors import InsufficientFunds, InvalidAmount, TransferExists
from idlegrid.ledger.book import Book, balanced
from idlegrid.ledger.tables import LedgerAccount, LedgerTransfer
from idlegrid.server.db import make_engine, migrate, session_factory
from tests.conftest import POSTGRES_URL, T0, FakeClock

PENDING, POST, VOID = TransferKind.PENDING, TransferKind.POST_PENDING, TransferKind.VOID_PENDING
ACCOUNTS = ["world", "alice", "bob", "escrow", "fees", "zoë:IO"]
# Text that COPY's text format must escape (tab, newline, backslash), non-ASCII, quotes.
ODD_MEMOS = ["tab\there", "line\nbreak", "back\\slash \\N", "quote \"x\" 'y'", "ünïcødé ✓ 𝄞", ""]


def batches() -> list[list[Transfer]]:
    first = [
        Transfer(f"fund:{a}", "world", a, "IO", 1_000_000, code="deposit") for a in ACCOUNTS[1:]
    ]
    first += [
        Transfer(f"memo:{i}", "alice", "bob", "IO", 10 + i, code="odd", memo=m)
        for i, m in enumerate(ODD_MEMOS)
    ]
    first += [
        Transfer("hold:1", "alice", "escrow", "IO", 5_000, PENDING, code="escrow"),
        Transfer("hold:2", "bob", "escrow", "IO", 7_000, PENDING, code="escrow"),
        Transfer("hold:3", "zoë:IO", "escrow", "IO", 900, PENDING, code="escrow"),
    ]
    second = [
        Transfer("settle:1", "alice", "escrow", "IO", 4_000, POST, "hold:1", code="settle"),
        Transfer("void:2", "bob", "escrow", "IO", 7_000, VOID, "hold:2", code="void"),
        first[0],  # a replay, in a batch that records new transfers too
        # opened and settled in the same batch
        Transfer("hold:4", "alice", "escrow", "IO", 300, PENDING, code="escrow"),
        Transfer("settle:4", "alice", "escrow", "IO", 300, POST, "hold:4", code="settle"),
        Transfer("pay", "escrow", "bob", "IO", 3_990, code="pay", memo="for hold:1"),
        Transfer("fee", "escrow", "fees", "IO", 10, code="fee"),
    ]
    third = [first[1], second[0]]  # replays only: nothing to write
    fourth = [
        Transfer(f"many:{i}", ACCOUNTS[1 + i % 5], ACCOUNTS[1 + (i + 1) % 5], "IO", 1 + i % 97)
        for i in range(3_000)
    ]
    fourth.append(Transfer("settle:3", "zoë:IO", "escrow", "IO", 899, POST, "hold:3"))
    return [first, second, third, fourth]


def expected_rows(clock_times: list[float]) -> tuple[list[tuple[Any, ...]], dict[str, tuple]]:
    """The rows and the account sums a transfer-at-a-time fold of the pure rules gives."""
    states = {a: AccountState(a, "IO", no_overdraft=a != "world") for a in ACCOUNTS}
    rows: dict[str, list[Any]] = {}
    pending: dict[str, Transfer] = {}
    seq, chain = 0, GENESIS_HASH
    for batch, now in zip(batches(), clock_times, strict=True):
        for t in batch:
            if t.id in rows:
                continue
            settles = pending.pop(t.pending_id, None) if t.pending_id else None
            states[t.debit], states[t.credit] = apply(t, states[t.debit], states[t.credit], settles)
            if settles is not None:
                rows[settles.id][8] = t.id
            if t.kind is PENDING:
                pending[t.id] = t
            seq += 1
            chain = chain_hash(chain, t, seq)
            rows[t.id] = [
                seq, t.id, t.debit, t.credit, t.asset, t.amount, t.kind.value,
                t.pending_id, None, t.code, t.memo, now, chain,
            ]  # fmt: skip
    sums = {
        a: (s.debits_pending, s.debits_posted, s.credits_pending, s.credits_posted)
        for a, s in states.items()
    }
    return [tuple(r) for r in rows.values()], sums


def dump(db: Session) -> tuple[list[tuple[Any, ...]], dict[str, tuple], tuple[int, str]]:
    c = LedgerTransfer.__table__.c
    columns = [c[n] for n in ("seq", "id", "debit", "credit", "asset", "amount", "kind")]
    columns += [c[n] for n in ("pending_id", "closed_by", "code", "memo", "at", "hash")]
    rows = [tuple(r) for r in db.execute(select(*columns).order_by(c.seq))]
    sums = {
        r.id: (r.debits_pending, r.debits_posted, r.credits_pending, r.credits_posted)
        for r in db.scalars(select(LedgerAccount))
    }
    head = db.execute(text("SELECT seq, hash FROM ledger_head")).one()
    return rows, sums, (head[0], head[1])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'copy.db'}"


def open_book(url: str) -> tuple[sessionmaker[Session], Any]:
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    with sessions.begin() as db:
        for a in ACCOUNTS:
            Book().open_account(db, a, "IO", no_overdraft=a != "world")
    return sessions, engine


def post_batches(sessions: sessionmaker[Session], clock_times: list[float]) -> None:
    clock = FakeClock()
    book = Book(clock)
    for batch, now in zip(batches(), clock_times, strict=True):
        clock.now = now
        with sessions.begin() as db:
            posted = book.post_batch(db, batch)
        assert [p.transfer for p in posted] == batch


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_URL is None, reason="set IDLEGRID_TEST_POSTGRES_URL (.ci/run does)")
def test_a_copied_batch_is_byte_identical_to_sqlite_and_to_the_rules(
    postgres_database: str, sqlite_url: str
) -> None:
    # Times that are not round in binary: a float that COPY's text did not carry
    # exactly would show.
    clock_times = [T0 + 0.1, T0 + 1 / 3, T0 + 2.718281828459045, T0 + 1e-6]
    want_rows, want_sums = expected_rows(clock_times)
    got = {}
    for url in (postgres_database, sqlite_url):
        sessions, engine = open_book(url)
        try:
            post_batches(sessions, clock_times)
            with sessions() as db:
                got[url] = dump(db)
                assert Book().verify_chain(db) is None
                assert balanced(Book().totals(db).values())
        finally:
            if url == postgres_database:
                with engine.begin() as conn:
                    conn.execute(text("TRUNCATE ledger_transfers, ledger_accounts, ledger_head"))
            engine.dispose()
    pg, lite = got[postgres_database], got[sqlite_url]
    assert pg[0] == want_rows  # every column, the float times and the hashes included
    assert lite[0] == want_rows
    assert pg[1] == lite[1] == want_sums
    assert pg[2] == lite[2] == (want_rows[-1][0], want_rows[-1][-1])
    closed = {r[1]: r[8] for r in pg[0] if r[8] is not None}
    assert closed == {"hold:1": "settle:1", "hold:2": "void:2", "hold:4": "settle:4",
                      "hold:3": "settle:3"}  # fmt: skip


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    factory, engine = open_book(database_url)
    yield factory
    engine.dispose()


def test_a_batch_that_fails_mid_copy_leaves_the_transaction_usable(
    sessions: sessionmaker[Session],
) -> None:
    """The rules fail at the 2,500th transfer, when PostgreSQL's COPY has long been
    streaming: the savepoint takes back what it had stored, and the same transaction
    goes on to post another batch and commit."""
    book = Book()
    fund = [Transfer(f"fund:{a}", "world", a, "IO", 10_000, code="deposit") for a in ACCOUNTS[1:]]
    spend = [Transfer(f"spend:{i}", "alice", "bob", "IO", 4) for i in range(2_600)]  # 10,400
    later = [Transfer("later", "bob", "alice", "IO", 1)]
    with sessions.begin() as db:
        book.post_batch(db, fund)
        with pytest.raises(InsufficientFunds) as failed:
            book.post_batch(db, spend)
        assert failed.value.details == {"account": "alice", "needed": 4, "available": 0}
        with pytest.raises(TransferExists):
            book.post_batch(db, [*later, Transfer(fund[0].id, "world", "alice", "IO", 1)])
        posted = book.post_batch(db, later)
    assert posted[0].seq == len(fund) + 1
    with sessions() as db:
        rows, sums, head = dump(db)
        assert [r[1] for r in rows] == [t.id for t in fund] + ["later"]
        assert sums["alice"] == (0, 0, 0, 10_001) and sums["bob"] == (0, 1, 0, 10_000)
        assert head == (len(fund) + 1, rows[-1][-1])
        assert book.verify_chain(db) is None


def test_rows_the_session_had_loaded_see_the_batch(sessions: sessionmaker[Session]) -> None:
    """post_batch writes around the ORM; objects already in the session must not
    go on showing the sums (or the open pending transfer) from before it."""
    book = Book()
    with sessions.begin() as db:
        book.post_batch(db, [Transfer("hold", "world", "alice", "IO", 50, PENDING)])
    with sessions.begin() as db:
        alice = db.get(LedgerAccount, "alice")
        hold = db.scalar(select(LedgerTransfer).where(LedgerTransfer.id == "hold"))
        assert alice is not None and hold is not None and hold.closed_by is None
        book.open_account(db, "alice", "IO")  # as the services do before posting
        book.post_batch(
            db,
            [
                Transfer("settle", "world", "alice", "IO", 50, POST, "hold"),
                Transfer("more", "world", "alice", "IO", 7),
            ],
        )
        assert (alice.credits_pending, alice.credits_posted) == (0, 57)
        assert hold.closed_by == "settle"
        assert book.account(db, "alice").balance == 57


names = st.text(min_size=0, max_size=12)  # any text: quotes, backslashes, astral planes


def test_a_transfer_that_cannot_be_hashed_is_refused_by_the_rules(
    sessions: sessionmaker[Session],
) -> None:
    """An amount JSON cannot write (a Decimal) fails the rules' check of amounts, as
    it did when the hash came after them: not a TypeError from working out the hash."""
    bad = Transfer("bad", "world", "alice", "IO", Decimal(5))  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount), sessions.begin() as db:
        Book().post_batch(db, [Transfer("ok", "world", "alice", "IO", 5), bad])
    with sessions() as db:
        assert db.scalars(select(LedgerTransfer.id)).all() == []
