"""How fast the double-entry book posts transfers and settles hourly rentals, on this machine.

Run it as::

    .venv/bin/python benchmarks/ledger.py [--quick] [--full] [--rentals 100000,1000000]
                                          [--backends sqlite,postgresql] [--json]

The rows labelled ``Book`` go through the production code: ``Book.post`` and
``Book.post_batch`` (``idlegrid/ledger/book.py``) on an engine from ``make_engine`` and a
schema from ``migrate``, with the caller owning the transaction, as the services do::

    with sessions.begin() as db:
        book.post_batch(db, transfers)

The account set is what a network of 10,000 users looks like, named as the ledger
service (``idlegrid/server/services/ledger.py``) names them: 10,000 IO wallets
``user:<pubkey>:IO`` (``no_overdraft``), the treasury's mirror ``onchain:treasury:IO``
that deposits come from (overdraft allowed), ``escrow:held:IO`` and ``revenue:fees:IO``
(``no_overdraft``). Accounts are bulk-inserted and every wallet is funded with a 10,000 IO
deposit before anything is timed; transfers and rentals are generated in advance, so only
posting is timed. It prints:

1. **Posted transfers per second**, on SQLite (a file in a temporary directory, WAL, as
   ``make_engine`` sets it up) and on PostgreSQL (a throwaway database,
   ``idlegrid_bench_ledger``, created on the server of ``--postgres-url`` and dropped at
   the end): *one at a time* (one database transaction per ``Book.post``) and *batched*
   (``Book.post_batch`` of 1,000 and of 10,000 transfers per transaction), between random
   users. The goal is ≥ 20,000 transfers/s batched on PostgreSQL: PASS or FAIL is judged
   on ``Book.post_batch``'s best batched rate there.

2. **The time to settle 100,000 and 1,000,000 hourly rentals.** One hourly settlement is
   the four transfers the network posts for it: the buyer's escrow (a PENDING transfer
   buyer → escrow of the hour's price, made when the rental was paid) is POST_PENDING'd
   for the price; the provider is paid escrow → provider the price less the 0.25%
   provider fee; that fee goes escrow → fees; and the buyer's 0.25% reservation fee goes
   buyer → fees (fees from ``core/fees.py``, prices 0.25 to 3.90 IO an hour). The pending
   escrows are created before the clock starts, then the settlements are timed in
   ``post_batch`` transactions of 1,000 rentals (4,000 transfers). Settling a million
   rentals through ``Book`` would take hours here, so by default a sample (2,000
   rentals; 20,000 through the sketch below) is settled and the larger counts are
   *extrapolated* linearly from its rate, and labelled so; ``--full`` settles every
   ``--rentals`` count for real (the time to reach each count is read off one run of the
   largest).

3. **Where ``Book.post_batch`` spends its time.** Every SQL statement is counted and its
   time in the driver summed (SQLAlchemy ``before/after_cursor_execute`` events), by kind,
   for one batch of 10,000. ``post_batch`` looks each transfer id up with its own SELECT;
   that SELECT autoflushes the session, so every transfer also costs its own INSERT and
   account and chain-head UPDATEs: about five round trips per transfer, batched or not.
   To put a number on the fix, the benchmark also times ``SetBook`` (below), rows
   labelled ``sketch``: a set-based ``post_batch`` with the same rules and results that
   reads the batch's transfer ids and pending transfers in one SELECT each and writes
   everything at the end: one executemany INSERT of the transfers, one executemany
   UPDATE of the accounts (and the head). It is not production code. Before anything is
   timed it is checked against ``Book`` on two fresh SQLite books fed the same random
   batches (posted, pending, posts, voids, replays, conflicts, overdrafts, unknown
   accounts): the same results or the same error for every batch, and the same accounts
   and chain. Accounts are funded and escrows pre-created through it (untimed), because
   ``Book`` would take half a minute for those alone.

At the end each book is checked: the hash chain verifies (``Book.verify_chain``), every
asset balances (``Book.totals``), and the escrow account holds nothing.

Both backends share the machine's cores with the benchmark itself (PostgreSQL is a
server process on the same machine), so the figures are a lower bound for a dedicated
database. ``Book`` and the sketch run one after the other on the same database, the
sketch second, on the larger table. The default run takes about 2.5 minutes on 2 cores;
``--quick`` (smaller samples, one batch per size) about one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from solders.pubkey import Pubkey
from sqlalchemy import Engine, bindparam, create_engine, event, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from idlegrid.core import fees
from idlegrid.core import ledger as core
from idlegrid.core.ledger import Transfer, TransferKind
from idlegrid.errors import IdlegridError, TransferExists, UnknownAccount
from idlegrid.ledger.book import Book, Posted, _state, _transfer, balanced
from idlegrid.server.db import make_engine, migrate, session_factory
from idlegrid.server.db.models import LedgerAccount, LedgerHead, LedgerTransfer
from idlegrid.server.services.ledger import escrow_account, fees_account, onchain, user_account

GOAL_PER_S = 20_000  # transfers per second, batched, on PostgreSQL
ASSET = "IO"
UNIT = 10 ** fees.DECIMALS[ASSET]
FUNDING = 10_000 * UNIT  # per user
PRICES = tuple(int(p * UNIT) for p in (0.25, 0.80, 1.50, 2.20, 3.90))  # IO per hour
# The ledger service's accounts: deposits come from the treasury's mirror (which may go
# negative), hires are held in escrow, fees are revenue.
TREASURY, ESCROW, FEES = onchain("treasury", ASSET), escrow_account(ASSET), fees_account(ASSET)
TRANSFERS_PER_RENTAL = 4
DEFAULT_POSTGRES_URL = os.environ.get(
    "IDLEGRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DATABASE_NAME = "idlegrid_bench_ledger"

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


@functools.cache
def user(i: int) -> str:
    """The i-th user's wallet account, ``user:<pubkey>:IO`` as the ledger service names
    it, with a made-up public key that is the same on every run."""
    return user_account(str(Pubkey(hashlib.sha256(f"bench-user-{i}".encode()).digest())), ASSET)


# -- the sketch: a set-based post_batch, measured next to Book ---------------------------

SETTLING = (TransferKind.POST_PENDING, TransferKind.VOID_PENDING)
SUMS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
CHUNK = 5000  # ids per IN (...) list, rows per INSERT call: under SQLite's parameter limit
_ACCOUNTS = LedgerAccount.__table__
_TRANSFERS = LedgerTransfer.__table__
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


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SetBook(Book):
    """``Book`` with a set-based ``post_batch``: the same locks, rules, chain and results,
    a constant number of statements per batch instead of about five per transfer.

    Reads: the chain head and the accounts FOR UPDATE (as ``Book``), the batch's transfer
    ids in one SELECT (replays), and the transfers it settles in one SELECT … FOR UPDATE.
    The loop then runs on plain values, and the writes come last: one multi-row INSERT of
    the new transfers, one executemany UPDATE of the accounts' four sums, one of the
    settled transfers' ``closed_by``, and the head. Rows this session had loaded are kept
    in step with ``set_committed_value``."""

    def post_batch(self, db: Session, transfers: Sequence[Transfer]) -> list[Posted]:
        head = db.get(LedgerHead, 1, with_for_update=True)
        if head is None:
            head = LedgerHead(id=1, seq=0, hash=core.GENESIS_HASH)
            db.add(head)
        account_ids = sorted({a for t in transfers for a in (t.debit, t.credit)})
        rows: dict[str, LedgerAccount] = {}
        for chunk in _chunks(account_ids):
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
        for chunk in _chunks(sorted({t.id for t in transfers})):
            for r in db.scalars(select(LedgerTransfer).where(LedgerTransfer.id.in_(chunk))):
                recorded[r.id] = (_transfer(r), r.seq, r.hash)
        settled_ids = sorted(
            {t.pending_id for t in transfers if t.kind in SETTLING and t.pending_id}
        )
        pending_rows: dict[str, LedgerTransfer] = {}
        for chunk in _chunks(settled_ids):
            query = (
                select(LedgerTransfer)
                .where(LedgerTransfer.id.in_(chunk))
                .order_by(LedgerTransfer.id)
                .with_for_update()
            )
            pending_rows.update((r.id, r) for r in db.scalars(query))
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
            debit, credit = core.apply(
                t, states[t.debit], states[t.credit], pending, pending_open=is_open
            )
            states[t.debit], states[t.credit] = debit, credit
            if pending is not None and t.pending_id is not None:
                pendings[t.pending_id] = (pending, False)
                closed[t.pending_id] = t.id
            if t.kind is TransferKind.PENDING:
                pendings[t.id] = (t, True)
            seq += 1
            chain = core.chain_hash(chain, t, seq)
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
            for chunk in _chunks(list(new_rows.values())):
                conn.execute(insert(_TRANSFERS), chunk)
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


# -- counting statements -------------------------------------------------------------------

_TABLES = ("ledger_transfers", "ledger_accounts", "ledger_head")


def statement_kind(statement: str) -> str:
    """e.g. ``SELECT ledger_transfers`` or ``UPDATE ledger_accounts (executemany)``."""
    verb = statement.split(None, 1)[0].upper() if statement.strip() else "?"
    table = next((t for t in _TABLES if t in statement), "")
    lock = " FOR UPDATE" if "FOR UPDATE" in statement.upper() else ""
    return f"{verb} {table}{lock}".strip()


@dataclass
class Statements:
    """Every statement an engine sends, by kind: calls, parameter sets, seconds in the
    driver (cursor.execute / executemany; the commit itself is not a statement)."""

    calls: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    _started: float = 0.0

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        self._started = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        kind = statement_kind(statement) + (" (executemany)" if executemany else "")
        self.calls[kind] += 1
        self.rows[kind] += len(parameters) if executemany else 1
        self.seconds[kind] += time.perf_counter() - self._started

    def reset(self) -> None:
        self.calls.clear()
        self.rows.clear()
        self.seconds.clear()

    def total(self) -> int:
        return sum(self.calls.values())

    def breakdown(self, transfers: int, wall_s: float) -> list[dict[str, Any]]:
        return [
            {
                "statement": kind,
                "calls": self.calls[kind],
                "rows": self.rows[kind],
                "per_transfer": round(self.calls[kind] / transfers, 3),
                "driver_s": round(self.seconds[kind], 3),
                "share": round(self.seconds[kind] / wall_s, 3),
            }
            for kind in sorted(self.calls, key=lambda k: -self.seconds[k])
        ]


# -- the databases ---------------------------------------------------------------------------


@dataclass
class Backend:
    name: str  # "sqlite" or "postgresql"
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    statements: Statements


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _psycopg(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


@contextlib.contextmanager
def postgres_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``, dropped on the way out (and first,
    should a previous run have been killed before it could drop it)."""
    admin = create_engine(_psycopg(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            progress(f"dropped the PostgreSQL database {name}")
    finally:
        admin.dispose()


def open_backend(name: str, url: str) -> Backend:
    engine = make_engine(url)
    migrate(engine)
    statements = Statements()
    statements.attach(engine)
    return Backend(name, url, engine, session_factory(engine), statements)


def server_settings(backend: Backend) -> dict[str, str]:
    if backend.name == "sqlite":
        return {"sqlite": sqlite3.sqlite_version, "journal_mode": "wal", "synchronous": "normal"}
    with backend.engine.connect() as conn:
        return {
            name: str(conn.exec_driver_sql(f"SHOW {name}").scalar())
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }


def create_accounts(backend: Backend, users: int) -> None:
    """Bulk-insert the users and the system accounts (setup, not timed), then fund every
    user from the treasury mirror through the sketch (not timed either)."""
    now = time.time()

    def row(account_id: str, no_overdraft: bool) -> dict[str, Any]:
        return {
            "id": account_id,
            "asset": ASSET,
            "no_overdraft": no_overdraft,
            "debits_pending": 0,
            "debits_posted": 0,
            "credits_pending": 0,
            "credits_posted": 0,
            "created_at": now,
        }

    rows = [row(TREASURY, False), row(ESCROW, True), row(FEES, True)]
    rows += [row(user(i), True) for i in range(users)]
    with backend.sessions.begin() as db:
        for chunk in _chunks(rows, 2000):
            db.execute(insert(_ACCOUNTS), list(chunk))
    funding = [
        Transfer(f"fund:{i}", TREASURY, user(i), ASSET, FUNDING, code="deposit")
        for i in range(users)
    ]
    post_all(backend, SetBook(), funding, 10_000)


def post_all(backend: Backend, book: Book, transfers: Sequence[Transfer], batch: int) -> None:
    for chunk in _chunks(transfers, batch):
        with backend.sessions.begin() as db:
            book.post_batch(db, chunk)


# -- workloads -------------------------------------------------------------------------------


def random_transfers(rng: random.Random, prefix: str, n: int, users: int) -> list[Transfer]:
    out = []
    for i in range(n):
        a = rng.randrange(users)
        b = rng.randrange(users - 1)
        b += b >= a
        amount = rng.randrange(1, UNIT)  # under 1 IO: nobody runs dry
        out.append(Transfer(f"{prefix}:{i}", user(a), user(b), ASSET, amount, code="transfer"))
    return out


@dataclass
class Rentals:
    """``n`` paid hourly rentals: a buyer, a provider and a price each; the transfers
    are made on demand, so a million rentals fit in a few lists of ints."""

    prefix: str
    buyers: list[int]
    providers: list[int]
    prices: list[int]

    @classmethod
    def generate(cls, rng: random.Random, prefix: str, n: int, users: int) -> Rentals:
        buyers, providers = [], []
        for _ in range(n):
            b = rng.randrange(users)
            p = rng.randrange(users - 1)
            buyers.append(b)
            providers.append(p + (p >= b))
        return cls(prefix, buyers, providers, [rng.choice(PRICES) for _ in range(n)])

    def __len__(self) -> int:
        return len(self.prices)

    def escrow_id(self, r: int) -> str:
        return f"{self.prefix}:{r}:escrow"

    def escrows(self, start: int, stop: int) -> list[Transfer]:
        """What the buyers paid: a PENDING buyer → escrow of the hour's price each."""
        return [
            Transfer(
                self.escrow_id(r),
                user(self.buyers[r]),
                ESCROW,
                ASSET,
                self.prices[r],
                TransferKind.PENDING,
                code="escrow",
            )
            for r in range(start, stop)
        ]

    def settlements(self, start: int, stop: int) -> list[Transfer]:
        out = []
        for r in range(start, stop):
            buyer, provider, price = user(self.buyers[r]), user(self.providers[r]), self.prices[r]
            fee = fees.fee(price, ASSET)  # the same 0.25% for either side, in IO
            key = f"{self.prefix}:{r}"
            out += [
                Transfer(
                    f"{key}:settle",
                    buyer,
                    ESCROW,
                    ASSET,
                    price,
                    TransferKind.POST_PENDING,
                    pending_id=self.escrow_id(r),
                    code="rental",
                ),
                Transfer(f"{key}:pay", ESCROW, provider, ASSET, price - fee, code="payout"),
                Transfer(f"{key}:provider-fee", ESCROW, FEES, ASSET, fee, code="fee"),
                Transfer(f"{key}:reservation-fee", buyer, FEES, ASSET, fee, code="fee"),
            ]
        return out


# -- timing ----------------------------------------------------------------------------------


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def time_one_at_a_time(
    backend: Backend, book: Book, transfers: Sequence[Transfer]
) -> dict[str, Any]:
    backend.statements.reset()
    started = time.perf_counter()
    for t in transfers:
        with backend.sessions.begin() as db:
            book.post(db, t)
    seconds = time.perf_counter() - started
    return {
        "transfers": len(transfers),
        "transactions": len(transfers),
        "seconds": round(seconds, 3),
        "per_s": _rate(len(transfers), seconds),
        "statements_per_transfer": round(backend.statements.total() / len(transfers), 3),
    }


def time_batched(
    backend: Backend, book: Book, transfers: Sequence[Transfer], batch: int
) -> dict[str, Any]:
    backend.statements.reset()
    started = time.perf_counter()
    transactions = 0
    for chunk in _chunks(transfers, batch):
        with backend.sessions.begin() as db:
            book.post_batch(db, chunk)
        transactions += 1
    seconds = time.perf_counter() - started
    return {
        "batch": batch,
        "transfers": len(transfers),
        "transactions": transactions,
        "seconds": round(seconds, 3),
        "per_s": _rate(len(transfers), seconds),
        "statements_per_transfer": round(backend.statements.total() / len(transfers), 4),
        "breakdown": backend.statements.breakdown(len(transfers), seconds),
    }


def time_settlement(
    backend: Backend,
    book: Book,
    rentals: Rentals,
    batch_rentals: int,
    checkpoints: Sequence[int],
    label: str,
) -> dict[str, Any]:
    """Settle every rental in ``rentals`` in transactions of ``batch_rentals``; the
    elapsed time is read at each checkpoint (a number of rentals settled)."""
    marks = sorted({c for c in checkpoints if c <= len(rentals)} | {len(rentals)})
    times: dict[int, float] = {}
    backend.statements.reset()
    started = last_note = time.perf_counter()
    done = 0
    while done < len(rentals):
        stop = min(done + batch_rentals, len(rentals), next(m for m in marks if m > done))
        transfers = rentals.settlements(done, stop)
        with backend.sessions.begin() as db:
            book.post_batch(db, transfers)
        done = stop
        now = time.perf_counter()
        if done in marks:
            times[done] = now - started
        if now - last_note > 15 and done < len(rentals):
            last_note = now
            eta = (now - started) / done * (len(rentals) - done)
            progress(f"    {label}: {done:,}/{len(rentals):,} rentals settled, ~{eta:.0f} s to go")
    seconds = times[len(rentals)]
    return {
        "rentals": len(rentals),
        "batch_rentals": batch_rentals,
        "seconds": round(seconds, 3),
        "rentals_per_s": _rate(len(rentals), seconds),
        "transfers_per_s": _rate(TRANSFERS_PER_RENTAL * len(rentals), seconds),
        "statements_per_rental": round(backend.statements.total() / len(rentals), 3),
        "checkpoints": {str(k): round(v, 3) for k, v in sorted(times.items())},
    }


def settle_times(measured: dict[str, Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """The time for each requested count: read off the run where it was reached,
    extrapolated linearly from the measured rate where it was not."""
    out = []
    for n in sizes:
        if str(n) in measured["checkpoints"]:
            seconds, basis = measured["checkpoints"][str(n)], "measured"
        else:
            seconds = n / measured["rentals_per_s"]
            basis = f"EXTRAPOLATED from {measured['rentals']:,} measured"
        out.append({"rentals": n, "seconds": round(seconds, 1), "basis": basis})
    return out


# -- the sketch against Book -----------------------------------------------------------------


def check_sketch(work: Path, batches: int, seed: int = 20261128) -> dict[str, Any]:
    """Feed ``Book`` and ``SetBook`` the same random batches on two fresh SQLite books:
    every batch must give the same postings (seq, hash, replayed) or the same error, and
    the books must end with the same accounts, chain head and recorded transfers (which
    pending ones are closed, and by what, included)."""
    names = ["world", "a", "b", "c", "d"]
    pair: list[tuple[sessionmaker[Session], Book, Engine]] = []
    for label, book in (("book", Book()), ("sketch", SetBook())):
        engine = make_engine(f"sqlite:///{work / f'check-{label}.db'}")
        migrate(engine)
        sessions = session_factory(engine)
        with sessions.begin() as db:
            for name in names:
                book.open_account(db, name, ASSET, no_overdraft=name != "world")
        pair.append((sessions, book, engine))
    rng = random.Random(seed)
    users = names[1:]
    history: list[Transfer] = []
    open_pendings: list[Transfer] = []  # as far as the generator knows
    counter = 0

    def op() -> Transfer:
        nonlocal counter
        counter += 1
        tid = f"c{counter}"
        roll = rng.random()
        if roll < 0.08 and history:  # a retry, now and then with other fields
            t = rng.choice(history)
            return replace(t, amount=t.amount + 1) if rng.random() < 0.2 else t
        if roll < 0.28:
            return Transfer(tid, "world", rng.choice(users), ASSET, rng.randint(1, 1000))
        if roll < 0.50:
            a, b = rng.sample(users, 2)
            return Transfer(tid, a, b, ASSET, rng.randint(1, 150))
        if roll < 0.70:
            a, b = rng.sample(names, 2)
            t = Transfer(tid, a, b, ASSET, rng.randint(1, 150), TransferKind.PENDING)
            open_pendings.append(t)
            return t
        if roll < 0.98 and open_pendings:
            p = rng.choice(open_pendings)
            if rng.random() < 0.9:  # else settle it twice
                open_pendings.remove(p)
            if rng.random() < 0.6:
                amount = rng.randint(1, p.amount + (1 if rng.random() < 0.05 else 0))
                kind = TransferKind.POST_PENDING
            else:
                amount, kind = p.amount, TransferKind.VOID_PENDING
            debit, credit = (p.debit, p.credit) if rng.random() < 0.97 else (p.credit, p.debit)
            return Transfer(tid, debit, credit, ASSET, amount, kind, pending_id=p.id)
        return Transfer(tid, "world", "nobody", ASSET, 5)

    committed = failed = replays = same_batch = 0
    errors: Counter[str] = Counter()
    try:
        for i in range(batches):
            before = list(open_pendings)
            batch = [op() for _ in range(rng.randint(1, 8))]
            history += batch
            outcomes: list[Any] = []
            for sessions, book, _ in pair:
                try:
                    with sessions.begin() as db:
                        posted = book.post_batch(db, batch)
                    outcomes.append([(p.seq, p.hash, p.replayed) for p in posted])
                except IdlegridError as e:
                    outcomes.append(type(e).__name__)
            if outcomes[0] != outcomes[1]:
                raise AssertionError(
                    f"batch {i}: Book gave {outcomes[0]}, the sketch {outcomes[1]}"
                )
            if isinstance(outcomes[0], str):
                failed += 1
                errors[outcomes[0]] += 1
                open_pendings[:] = before  # rolled back
            else:
                committed += 1
                replays += sum(replayed for _, _, replayed in outcomes[0])
                ids = {t.id for t in batch}
                same_batch += sum(t.kind in SETTLING and t.pending_id in ids for t in batch)
            with pair[0][0]() as one, pair[1][0]() as two:
                if Book().accounts(one) != Book().accounts(two):
                    raise AssertionError(f"batch {i}: the accounts differ")
        with pair[0][0]() as one, pair[1][0]() as two:
            heads = [(h.seq, h.hash) for h in (one.get(LedgerHead, 1), two.get(LedgerHead, 1))]
            if heads[0] != heads[1]:
                raise AssertionError("the chain heads differ")
            c = LedgerTransfer
            query = select(c.seq, c.id, c.kind, c.pending_id, c.closed_by, c.hash).order_by(c.seq)
            if list(one.execute(query)) != list(two.execute(query)):
                raise AssertionError("the recorded transfers differ")
            if Book().verify_chain(two) is not None:
                raise AssertionError("the sketch's chain does not verify")
    finally:
        for _, _, engine in pair:
            engine.dispose()
    return {
        "batches": batches,
        "committed": committed,
        "failed_alike": failed,
        "errors": dict(errors),
        "replays_committed": replays,
        "settled_in_their_own_batch": same_batch,
        "transfers": len(history),
        "ok": True,
    }


# -- one backend, start to end ---------------------------------------------------------------


@dataclass
class Plan:
    users: int
    one_at_a_time: int
    batch_sizes: list[int]
    batched_transfers: int  # per batch size (at least one batch)
    rentals: list[int]
    sample_book: int
    sample_sketch: int
    settle_batch: int
    full: bool
    sketch: bool


def bench_backend(backend: Backend, plan: Plan, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {"database": redact(backend.url), "settings": server_settings(backend)}
    started = time.perf_counter()
    progress(f"{backend.name}: {plan.users:,} user accounts, funded with 10,000 IO each")
    create_accounts(backend, plan.users)
    out["setup_s"] = round(time.perf_counter() - started, 2)
    books: list[tuple[str, Book]] = [("Book", Book())]
    if plan.sketch:
        books.append(("sketch", SetBook()))

    out["throughput"] = []
    for label, book in books:
        transfers = random_transfers(rng, f"one:{label}", plan.one_at_a_time, plan.users)
        progress(f"{backend.name}: {label}: {len(transfers):,} transfers one at a time")
        r = time_one_at_a_time(backend, book, transfers)
        out["throughput"].append({"book": label, "mode": "one at a time", **r})
        progress(f"    {r['per_s']:,.0f} transfers/s")
        for size in plan.batch_sizes:
            n = max(size, plan.batched_transfers // size * size)
            transfers = random_transfers(rng, f"batch{size}:{label}", n, plan.users)
            progress(f"{backend.name}: {label}: {n:,} transfers in batches of {size:,}")
            r = time_batched(backend, book, transfers, size)
            out["throughput"].append({"book": label, "mode": f"batches of {size:,}", **r})
            progress(
                f"    {r['per_s']:,.0f} transfers/s, "
                f"{r['statements_per_transfer']:.3f} statements per transfer"
            )

    out["settlement"] = []
    for label, book in books:
        sample = plan.sample_book if label == "Book" else plan.sample_sketch
        n = max(plan.rentals) if plan.full else min(sample, max(plan.rentals))
        rentals = Rentals.generate(rng, f"rent:{label}", n, plan.users)
        progress(f"{backend.name}: {label}: pre-creating {n:,} pending escrows (not timed)")
        for start in range(0, n, 10_000):
            stop = min(start + 10_000, n)
            post_all(backend, SetBook(), rentals.escrows(start, stop), 10_000)
        progress(
            f"{backend.name}: {label}: settling {n:,} hourly rentals "
            f"({TRANSFERS_PER_RENTAL * n:,} transfers) in batches of {plan.settle_batch:,}"
        )
        r = time_settlement(
            backend, book, rentals, plan.settle_batch, plan.rentals, f"{backend.name} {label}"
        )
        r["book"] = label
        r["times"] = settle_times(r, plan.rentals)
        out["settlement"].append(r)
        progress(
            f"    {r['rentals_per_s']:,.0f} rentals/s ({r['transfers_per_s']:,.0f} transfers/s)"
        )

    progress(f"{backend.name}: checking the book (chain, totals, escrow)")
    started = time.perf_counter()
    book = Book()
    with backend.sessions() as db:
        chain = book.verify_chain(db)
        totals = book.totals(db)
        escrow = book.account(db, ESCROW)
        count = db.scalar(select(LedgerHead.seq))
    out["check"] = {
        "transfers_recorded": count,
        "chain_ok": chain is None,
        "chain_problem": chain,
        "balanced": balanced(totals.values()),
        "escrow_empty": escrow.balance == 0 and escrow.credits_pending == 0,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not (chain is None and out["check"]["balanced"] and out["check"]["escrow_empty"]):
        raise AssertionError(f"{backend.name}: the book does not check out: {out['check']}")
    return out


# -- the report ------------------------------------------------------------------------------

LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    pg = results["backends"].get("postgresql")
    if not pg or "throughput" not in pg:
        return {"goal_per_s": GOAL_PER_S, "result": "NOT MEASURED"}

    def best(book: str) -> float | None:
        rates = [
            r["per_s"]
            for r in pg["throughput"]
            if r["book"] == book and r["mode"] != "one at a time"
        ]
        return max(rates) if rates else None

    book = best("Book")
    assert book is not None
    return {
        "goal_per_s": GOAL_PER_S,
        "book_best_batched_per_s": book,
        "percent_of_goal": round(100 * book / GOAL_PER_S, 1),
        "result": "PASS" if book >= GOAL_PER_S else "FAIL",
        "sketch_best_batched_per_s": best("sketch"),
    }


def breakdown_table(name: str, label: str, r: dict[str, Any]) -> Any:
    from rich.table import Table

    method = "Book.post_batch" if label == "Book" else "the sketch's post_batch"
    table = Table(
        title=f"Where {method} spends {r['transfers']:,} transfers in batches of "
        f"{r['batch']:,} on {LABELS[name]} ({r['seconds']:.2f} s)",
        title_justify="left",
    )
    for col in ("statement", "calls", "rows", "calls per transfer", "driver s", "share of time"):
        table.add_column(col, justify="left" if col == "statement" else "right")
    driver = 0.0
    for s in r["breakdown"]:
        driver += s["driver_s"]
        table.add_row(
            s["statement"],
            f"{s['calls']:,}",
            f"{s['rows']:,}",
            f"{s['per_transfer']:.3f}",
            f"{s['driver_s']:.2f}",
            f"{100 * s['share']:.0f}%",
        )
    table.add_row(
        "outside the driver (SQLAlchemy, Python, commit)",
        "",
        "",
        "",
        f"{r['seconds'] - driver:.2f}",
        f"{100 * (r['seconds'] - driver) / r['seconds']:.0f}%",
    )
    return table


def print_report(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=150)
    backends = results["backends"]
    ran = {name: b for name, b in backends.items() if "throughput" in b}

    throughput = Table(title="Posted transfers per second", title_justify="left")
    for name in ("database", "post_batch", "mode", "transfers", "transactions", "seconds"):
        throughput.add_column(name, justify="right" if name in ("transfers", "seconds") else "left")
    throughput.add_column("transfers/s", justify="right")
    throughput.add_column("statements/transfer", justify="right")
    for name, b in ran.items():
        for r in b["throughput"]:
            throughput.add_row(
                LABELS[name],
                r["book"],
                r["mode"],
                f"{r['transfers']:,}",
                f"{r['transactions']:,}",
                f"{r['seconds']:.2f}",
                f"{r['per_s']:,.0f}",
                f"{r['statements_per_transfer']:.3f}",
            )
    console.print(throughput)
    v = results["verdict"]
    if v["result"] == "NOT MEASURED":
        console.print(f"Goal ≥ {GOAL_PER_S:,} transfers/s batched on PostgreSQL: NOT MEASURED")
    else:
        colour = "green" if v["result"] == "PASS" else "red"
        sketch = (
            f" The set-based sketch: {v['sketch_best_batched_per_s']:,.0f}/s."
            if v["sketch_best_batched_per_s"]
            else ""
        )
        console.print(
            f"Goal ≥ {GOAL_PER_S:,} transfers/s batched on PostgreSQL: Book.post_batch's best "
            f"is {v['book_best_batched_per_s']:,.0f}/s ({v['percent_of_goal']:.1f}% of the "
            f"goal): [bold {colour}]{v['result']}[/bold {colour}].{sketch}",
            highlight=False,
        )

    settle = Table(
        title="Settling hourly rentals: post the buyer's escrow, pay the provider, the 0.25% "
        "provider fee, the 0.25% reservation fee (4 transfers each)",
        title_justify="left",
    )
    for name in ("database", "post_batch", "rentals", "time", "basis"):
        settle.add_column(name, justify="right" if name in ("rentals", "time") else "left")
    settle.add_column("measured run", justify="left")
    for name, b in ran.items():
        for r in b["settlement"]:
            run = (
                f"{r['rentals']:,} rentals in {r['seconds']:.1f} s: {r['rentals_per_s']:,.0f} "
                f"rentals/s, {r['transfers_per_s']:,.0f} transfers/s, batches of "
                f"{r['batch_rentals']:,} rentals"
            )
            for t in r["times"]:
                settle.add_row(
                    LABELS[name],
                    r["book"],
                    f"{t['rentals']:,}",
                    duration(t["seconds"]),
                    t["basis"],
                    run,
                )
    console.print(settle)

    for name, b in ran.items():
        for label in ("Book", "sketch"):
            batched = [r for r in b["throughput"] if r["book"] == label and "breakdown" in r]
            if batched:
                console.print(breakdown_table(name, label, max(batched, key=lambda x: x["batch"])))

    c = results.get("sketch_check")
    if c:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(c["errors"].items()))
        console.print(
            f"Sketch check: {c['batches']} random batches ({c['transfers']} transfers) through "
            f"Book and the sketch on two SQLite books: the same postings for {c['committed']} "
            f"(with {c['replays_committed']} replays and {c['settled_in_their_own_batch']} "
            "pending transfers settled in their own batch), the "
            f"same error for {c['failed_alike']} ({kinds}), "
            "same accounts, chain and closed pending transfers.",
            highlight=False,
        )
    for name, b in backends.items():
        if "skipped" in b:
            console.print(f"{LABELS[name]}: skipped: {escape(b['skipped'])}", highlight=False)
            continue
        k = b["check"]
        settings = ", ".join(f"{key} {value}" for key, value in b["settings"].items())
        console.print(
            f"{LABELS[name]} ({settings}): {k['transfers_recorded']:,} transfers recorded; chain "
            f"verifies: {k['chain_ok']}, balanced: {k['balanced']}, escrow empty: "
            f"{k['escrow_empty']} (checked in {k['seconds']:.0f} s).",
            highlight=False,
        )
    m = results["machine"]
    console.print(
        f"Machine: {m['cpus']} CPUs ({m['processor'] or 'unknown'}), Python {m['python']}, "
        f"{results['total_s']:.0f} s in all. The database server shares the CPUs with the "
        "benchmark, so these are lower bounds for a dedicated database.",
        highlight=False,
    )


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 100000,1000000")
    return sorted(set(sizes))


def parse_backends(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(names) - set(LABELS)
    if not names or unknown:
        raise argparse.ArgumentTypeError("choose from sqlite,postgresql")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure the idlegrid book's posted transfers per second and the time to "
        "settle hourly rentals, on SQLite and PostgreSQL."
    )
    parser.add_argument(
        "--rentals",
        type=parse_sizes,
        default=[100_000, 1_000_000],
        help="rental counts to give settle times for (default 100000,1000000)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="settle the largest --rentals count for real through both books instead of "
        "extrapolating from a sample (hours through Book for 1,000,000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller samples: about a minute in all"
    )
    parser.add_argument(
        "--backends",
        type=parse_backends,
        default=["sqlite", "postgresql"],
        help="sqlite,postgresql",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="a server and a database to connect to for creating and dropping the "
        f"benchmark's own database {DATABASE_NAME} (default {redact(DEFAULT_POSTGRES_URL)}, "
        "or $IDLEGRID_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--one-at-a-time", type=int, default=None, help="default 1000")
    parser.add_argument(
        "--batch-sizes", type=parse_sizes, default=[1_000, 10_000], help="default 1000,10000"
    )
    parser.add_argument(
        "--batched-transfers",
        type=int,
        default=None,
        help="transfers timed per batch size (default 10000)",
    )
    parser.add_argument(
        "--sample", type=int, default=None, help="rentals settled through Book (default 2000)"
    )
    parser.add_argument(
        "--sketch-sample",
        type=int,
        default=None,
        help="rentals settled through the sketch (default 20000)",
    )
    parser.add_argument("--settle-batch", type=int, default=1_000, help="rentals per post_batch")
    parser.add_argument(
        "--no-sketch", action="store_true", help="time Book only (the sketch still funds)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    quick = args.quick
    plan = Plan(
        users=args.users,
        one_at_a_time=args.one_at_a_time or (200 if quick else 1_000),
        batch_sizes=args.batch_sizes,
        batched_transfers=args.batched_transfers or (1 if quick else 10_000),
        rentals=args.rentals,
        sample_book=args.sample or (500 if quick else 2_000),
        sample_sketch=args.sketch_sample or (5_000 if quick else 20_000),
        settle_batch=args.settle_batch,
        full=args.full,
        sketch=not args.no_sketch,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join([sys.executable, *sys.argv]),
        "plan": asdict(plan),
        "backends": {},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="idlegrid-bench-ledger-") as tmp:
            work = Path(tmp)
            if plan.sketch:
                progress("checking the sketch against Book on random batches (SQLite)")
                results["sketch_check"] = check_sketch(work, 100 if quick else 300)
            for name in args.backends:
                with contextlib.ExitStack() as stack:
                    if name == "sqlite":
                        url = f"sqlite:///{work / 'ledger.db'}"
                    else:
                        try:
                            url = stack.enter_context(
                                postgres_database(args.postgres_url, DATABASE_NAME)
                            )
                        except Exception as e:  # no server: say so, and go on
                            progress(f"PostgreSQL: skipped: {e}")
                            results["backends"][name] = {"skipped": f"{type(e).__name__}: {e}"}
                            continue
                    backend = open_backend(name, url)
                    stack.callback(backend.engine.dispose)
                    results["backends"][name] = bench_backend(backend, plan, args.seed)
    except KeyboardInterrupt:
        progress("interrupted; the benchmark database has been dropped")
        return 130
    results["verdict"] = verdict(results)
    results["total_s"] = round(time.monotonic() - _T0, 1)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
