"""How fast ``Book`` (``idlegrid/ledger/book.py``) posts transfers and settles hourly
rentals on SQLite and PostgreSQL, on this machine::

    .venv/bin/python benchmarks/ledger.py [--quick | --full] [--backends sqlite,postgresql]
                                          [--postgres-url URL] [--json]

Production code throughout: ``make_engine``, ``migrate``, and the caller owning the
transaction as the services do. SQLite is a file in a temporary directory; PostgreSQL a
throwaway database (``idlegrid_bench_ledger``) on the server of ``--postgres-url``,
dropped at the end. The accounts are 10,000 user wallets named as the ledger service
names them (funded with 10,000 IO each before the clock starts), the treasury mirror,
the escrow and the fee account. Transfers are made in advance; only posting is timed.

1. **Transfers per second** between random users: one at a time (``Book.post``, one
   transaction each) and ``Book.post_batch`` in batches of 1,000 and 10,000 (at least 5
   batches of each, 3 with ``--quick``), with the SQL statements per transaction. After
   each batch, the **baseline** writes the same rows straight into tables of the same
   shape (``Baseline``: on PostgreSQL a COPY and one UPDATE of the accounts' sums, on
   SQLite an executemany of each; no reads, locks, rules or hashing): the ceiling the
   database sets. Printed: both rates, the ratio, and the slowest and fastest batch of
   each. Goals, on the best batched rate on PostgreSQL: ≥ 20,000 transfers/s, and
   ≥ 0.75 of the baseline; PASS or FAIL for each.
2. **Settling hourly rentals**, 4 transfers each: POST_PENDING of the buyer's escrow (a
   PENDING transfer made before the clock starts), the provider's pay less the 0.25%
   provider fee, that fee, and the buyer's 0.25% reservation fee; in ``post_batch``
   transactions of 1,000 rentals. By default 100,000 rentals are settled for real and the
   time for 1,000,000 is EXTRAPOLATED from that rate (and labelled so); ``--full``
   settles 1,000,000 for real (not run yet: about 25 minutes on 2 cores by the default
   run's rates); ``--quick`` settles 10,000.

Each book is then checked: the chain verifies, every asset balances, the escrow is
empty. The database server shares the CPUs with the benchmark, so the figures are lower
bounds. The default run takes about 2.5 minutes on 2 cores, ``--quick`` about 20 s.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from common import finish, machine, print_table
from solders.pubkey import Pubkey
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import bindparam

from idlegrid.core import fees
from idlegrid.core.ledger import Transfer, TransferKind
from idlegrid.ledger.book import SUMS, Book, Posted, balanced
from idlegrid.ledger.tables import LedgerAccount, LedgerHead, LedgerTransfer
from idlegrid.orm import chunks
from idlegrid.server.db import make_engine, migrate, session_factory
from idlegrid.server.services.ledger import escrow_account, fees_account, onchain, user_account

GOAL_PER_S = 20_000  # transfers per second, batched, on PostgreSQL
GOAL_RATIO = 0.75  # of the baseline's rate (the same rows written straight in), there
ASSET = "IO"
UNIT = 10 ** fees.DECIMALS[ASSET]
FUNDING = 10_000 * UNIT  # per user
PRICES = tuple(int(p * UNIT) for p in (0.25, 0.80, 1.50, 2.20, 3.90))  # IO per hour
TREASURY, ESCROW, FEES = onchain("treasury", ASSET), escrow_account(ASSET), fees_account(ASSET)
TRANSFERS_PER_RENTAL = 4
RENTALS = (100_000, 1_000_000)  # the counts to give settle times for
USERS = 10_000
BATCH_SIZES = (1_000, 10_000)
SETTLE_BATCH = 1_000  # rentals per post_batch
DEFAULT_POSTGRES_URL = os.environ.get(
    "IDLEGRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DATABASE_NAME = "idlegrid_bench_ledger"
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


@functools.cache
def user(i: int) -> str:
    """The i-th user's wallet, with a made-up public key that is the same on every run."""
    return user_account(str(Pubkey(hashlib.sha256(f"bench-user-{i}".encode()).digest())), ASSET)


# -- the databases ---------------------------------------------------------------------------

_TABLES = ("ledger_transfers", "ledger_accounts", "ledger_head")


def statement_kind(statement: str) -> str:
    """e.g. ``SELECT ledger_accounts FOR UPDATE``."""
    if statement.strip() in ("", ";"):
        return "ping (;)"  # the pool's check of a connection it hands out
    verb = statement.split(None, 1)[0].upper()
    table = next((t for t in _TABLES if t in statement), "")
    lock = " FOR UPDATE" if "FOR UPDATE" in statement.upper() else ""
    return f"{verb} {table}{lock}".strip()


@dataclass
class Backend:
    name: str  # "sqlite" or "postgresql"
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    statements: Counter[str] = field(default_factory=Counter)  # by kind, since the last clear


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def postgres_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``, dropped on the way out (and first,
    should a previous run have been killed before it could drop it)."""
    driver_url = admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(driver_url, isolation_level="AUTOCOMMIT")
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


def counting_cursor(statements: Counter[str]) -> type[psycopg.Cursor[Any]]:
    """A psycopg cursor that counts what it sends: ``Book`` sends some statements (its
    reads, and COPY) to psycopg itself, where SQLAlchemy's events do not see them."""

    class CountingCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            statements[statement_kind(str(query))] += 1
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> None:
            statements[statement_kind(str(query))] += 1
            super().executemany(query, *args, **kwargs)

        def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
            statements[statement_kind(str(statement))] += 1
            return super().copy(statement, *args, **kwargs)

    return CountingCursor


def open_backend(name: str, url: str) -> Backend:
    engine = make_engine(url)
    backend = Backend(name, url, engine, session_factory(engine))
    if name == "postgresql":

        @event.listens_for(engine, "connect")
        def _counting(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.cursor_factory = counting_cursor(backend.statements)

    else:

        @event.listens_for(engine, "after_cursor_execute")
        def _count(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
            backend.statements[statement_kind(statement)] += 1

    migrate(engine)
    return backend


def server_settings(backend: Backend) -> dict[str, str]:
    if backend.name == "sqlite":
        return {"sqlite": sqlite3.sqlite_version, "journal_mode": "wal", "synchronous": "normal"}
    with backend.engine.connect() as conn:
        return {
            name: str(conn.exec_driver_sql(f"SHOW {name}").scalar())
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        }


def post_all(backend: Backend, transfers: Sequence[Transfer], batch: int = 10_000) -> None:
    for chunk in chunks(transfers, batch):
        with backend.sessions.begin() as db:
            Book().post_batch(db, chunk)


def create_accounts(backend: Backend) -> None:
    """Bulk-insert the users and the system accounts, then fund every user from the
    treasury mirror (setup, not timed)."""
    now = time.time()
    rows = [
        {"id": a, "asset": ASSET, "no_overdraft": a != TREASURY, "created_at": now}
        | dict.fromkeys(SUMS, 0)
        for a in [TREASURY, ESCROW, FEES, *map(user, range(USERS))]
    ]
    with backend.sessions.begin() as db:
        for chunk in chunks(rows, 2000):
            db.execute(insert(LedgerAccount), list(chunk))
    fund = [Transfer(f"fund:{i}", TREASURY, user(i), ASSET, FUNDING) for i in range(USERS)]
    post_all(backend, fund)


# -- the baseline: the same rows, written straight in ----------------------------------------

BASELINE_SCHEMA = "baseline"
COLUMNS = [c.name for c in LedgerTransfer.__table__.columns]


class Baseline:
    """The bare ceiling for ``post_batch``: the rows it wrote, written again straight
    into tables of the same shape (copies of ``ledger_accounts`` and ``ledger_transfers``
    with their indexes and foreign keys, in a schema of their own, the accounts as
    funded), with no reads, locks, rules or hashing: per batch, one transaction with, on
    PostgreSQL, a COPY of the transfers and one UPDATE of the changed accounts' sums
    (from JSON arrays, the fastest form tried), and on SQLite an executemany of each."""

    def __init__(self, backend: Backend, directory: Path) -> None:
        self.name = backend.name
        self.conn: Connection = backend.engine.connect()
        md = MetaData()
        self.accounts = LedgerAccount.__table__.to_metadata(md, schema=BASELINE_SCHEMA)
        self.transfers = LedgerTransfer.__table__.to_metadata(md, schema=BASELINE_SCHEMA)
        if self.name == "sqlite":  # outside a transaction, before SQLAlchemy begins one
            path = directory / "baseline.db"
            self.conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                f"ATTACH DATABASE '{path}' AS {BASELINE_SCHEMA}"
            )
        with self.conn.begin():
            if self.name == "postgresql":
                self.conn.exec_driver_sql(f"CREATE SCHEMA {BASELINE_SCHEMA}")
            md.create_all(self.conn)
            self.conn.exec_driver_sql(
                f"INSERT INTO {BASELINE_SCHEMA}.ledger_accounts SELECT * FROM ledger_accounts"
            )
            query = select(self.accounts.c.id, *(self.accounts.c[s] for s in SUMS))
            self.sums = {row[0]: list(row[1:]) for row in self.conn.execute(query)}

    def close(self) -> None:
        self.conn.close()

    def time_batch(self, transfers: Sequence[Transfer], posted: Sequence[Posted]) -> float:
        """Seconds to write the rows ``post_batch`` wrote for ``transfers`` (plain POSTED
        transfers, as ``random_transfers`` makes)."""
        now = time.time()
        rows = [
            (
                p.seq,
                t.id,
                t.debit,
                t.credit,
                t.asset,
                t.amount,
                t.kind.value,
                t.pending_id,
                None,
                t.code,
                t.memo,
                now,
                p.hash,
            )
            for t, p in zip(transfers, posted, strict=True)
        ]
        changed: dict[str, list[int]] = {}
        debits_posted, credits_posted = SUMS.index("debits_posted"), SUMS.index("credits_posted")
        for t in transfers:
            changed[t.debit] = d = self.sums[t.debit]
            changed[t.credit] = c = self.sums[t.credit]
            d[debits_posted] += t.amount
            c[credits_posted] += t.amount
        started = time.perf_counter()
        with self.conn.begin():
            if self.name == "postgresql":
                self._copy_and_update(rows, changed)
            else:
                named = [dict(zip(COLUMNS, r, strict=True)) for r in rows]
                self.conn.execute(insert(self.transfers), named)
                a = self.accounts.c
                self.conn.execute(
                    update(self.accounts)
                    .where(a.id == bindparam("key"))
                    .values({s: bindparam(s) for s in SUMS}),
                    [{"key": k, **dict(zip(SUMS, v, strict=True))} for k, v in changed.items()],
                )
        return time.perf_counter() - started

    def _copy_and_update(self, rows: list[tuple[Any, ...]], changed: dict[str, list[int]]) -> None:
        driver = self.conn.connection.driver_connection
        table = f"{BASELINE_SCHEMA}.ledger_transfers"
        with (
            driver.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
        array = "ARRAY(SELECT json_array_elements_text(%s::json){})"
        sets = ", ".join(f"{s} = v.{s}" for s in SUMS)
        sources = ", ".join([array.format("")] + [array.format("::bigint")] * len(SUMS))
        self.conn.exec_driver_sql(
            f"UPDATE {BASELINE_SCHEMA}.ledger_accounts AS a SET {sets} FROM unnest({sources})"
            f" AS v(id, {', '.join(SUMS)}) WHERE a.id = v.id",
            tuple(json.dumps(list(col)) for col in [changed, *zip(*changed.values(), strict=True)]),
        )


# -- workloads -------------------------------------------------------------------------------


def two_users(rng: random.Random) -> tuple[int, int]:
    a, b = rng.randrange(USERS), rng.randrange(USERS - 1)
    return a, b + (b >= a)


def random_transfers(rng: random.Random, prefix: str, n: int) -> list[Transfer]:
    """Under 1 IO each, between random users: nobody runs dry."""
    out = []
    for i in range(n):
        a, b = two_users(rng)
        out.append(Transfer(f"{prefix}:{i}", user(a), user(b), ASSET, rng.randrange(1, UNIT)))
    return out


@dataclass
class Rentals:
    """``n`` paid hourly rentals: a buyer, a provider and a price each; the transfers
    are made on demand, so a million rentals fit in three lists of ints."""

    buyers: list[int]
    providers: list[int]
    prices: list[int]

    @classmethod
    def generate(cls, rng: random.Random, n: int) -> Rentals:
        buyers, providers = zip(*(two_users(rng) for _ in range(n)), strict=True)
        return cls(list(buyers), list(providers), [rng.choice(PRICES) for _ in range(n)])

    def __len__(self) -> int:
        return len(self.prices)

    def escrows(self, start: int, stop: int) -> list[Transfer]:
        """What the buyers paid: a PENDING buyer → escrow of the hour's price each."""
        pending = TransferKind.PENDING
        return [
            Transfer(f"rent:{r}:escrow", user(self.buyers[r]), ESCROW, ASSET, price, pending)
            for r, price in zip(range(start, stop), self.prices[start:stop], strict=True)
        ]

    def settlements(self, start: int, stop: int) -> list[Transfer]:
        out, post = [], TransferKind.POST_PENDING
        for r in range(start, stop):
            buyer, provider, price = user(self.buyers[r]), user(self.providers[r]), self.prices[r]
            fee = fees.fee(price, ASSET)  # the same 0.25% for either side
            key = f"rent:{r}"
            out += [
                Transfer(f"{key}:settle", buyer, ESCROW, ASSET, price, post, f"{key}:escrow"),
                Transfer(f"{key}:pay", ESCROW, provider, ASSET, price - fee),
                Transfer(f"{key}:provider-fee", ESCROW, FEES, ASSET, fee),
                Transfer(f"{key}:reservation-fee", buyer, FEES, ASSET, fee),
            ]
        return out


# -- timing ----------------------------------------------------------------------------------


def time_posting(
    backend: Backend,
    transfers: Sequence[Transfer],
    batch: int | None,
    baseline: Baseline | None = None,
) -> dict[str, Any]:
    """Post ``transfers`` one per transaction (``Book.post``, ``batch`` None) or in
    ``post_batch`` transactions of ``batch``, each batch followed by the baseline's
    writing of the same rows (not counted in the statements)."""
    book = Book()
    groups = [[t] for t in transfers] if batch is None else list(chunks(transfers, batch))
    backend.statements.clear()
    seconds: list[float] = []
    base_seconds: list[float] = []
    for group in groups:
        started = time.perf_counter()
        with backend.sessions.begin() as db:
            one = batch is None
            posted = [book.post(db, group[0])] if one else book.post_batch(db, group)
        seconds.append(time.perf_counter() - started)
        if baseline is not None and batch is not None:
            counted = Counter(backend.statements)
            base_seconds.append(baseline.time_batch(group, posted))
            backend.statements.clear()  # in place: the counting cursors hold this one
            backend.statements.update(counted)
    total = sum(seconds)
    out: dict[str, Any] = {
        "mode": "one at a time" if batch is None else f"batches of {batch:,}",
        "batch": batch or 1,
        "transfers": len(transfers),
        "transactions": len(groups),
        "seconds": round(total, 3),
        "per_s": round(len(transfers) / total, 1),
        "statements_per_transaction": round(backend.statements.total() / len(groups), 2),
        "statements_by_kind": {
            k: round(n / len(groups), 2) for k, n in sorted(backend.statements.items())
        },
    }
    if batch is not None:
        rates = [len(g) / s for g, s in zip(groups, seconds, strict=True)]
        out["per_s_range"] = [round(min(rates), 1), round(max(rates), 1)]
    if base_seconds:
        base_rates = [len(g) / s for g, s in zip(groups, base_seconds, strict=True)]
        ratios = [b / s for b, s in zip(base_seconds, seconds, strict=True)]
        out["baseline_per_s"] = round(len(transfers) / sum(base_seconds), 1)
        out["baseline_per_s_range"] = [round(min(base_rates), 1), round(max(base_rates), 1)]
        out["ratio"] = round(sum(base_seconds) / total, 3)  # post_batch's rate / baseline's
        out["ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        out["ratio_median"] = round(statistics.median(ratios), 3)
    return out


def time_settlement(
    backend: Backend, rentals: Rentals, batch: int, checkpoints: Sequence[int]
) -> dict[str, Any]:
    """Settle every rental in transactions of ``batch`` rentals, reading the clock at each
    checkpoint (a number of rentals settled) that the run reaches."""
    n = len(rentals)
    marks = sorted({c for c in checkpoints if c <= n} | {n})
    times: dict[int, float] = {}
    book = Book()
    started = last_note = time.perf_counter()
    done = 0
    while done < n:
        stop = min(done + batch, next(m for m in marks if m > done))
        transfers = rentals.settlements(done, stop)
        with backend.sessions.begin() as db:
            book.post_batch(db, transfers)
        done = stop
        now = time.perf_counter()
        if done in marks:
            times[done] = now - started
        if now - last_note > 15 and done < n:
            last_note = now
            eta = (now - started) / done * (n - done)
            progress(f"    {done:,}/{n:,} rentals settled, ~{eta:.0f} s to go")
    rate = n / times[n]
    return {
        "rentals": n,
        "batch_rentals": batch,
        "seconds": round(times[n], 3),
        "rentals_per_s": round(rate, 1),
        "transfers_per_s": round(TRANSFERS_PER_RENTAL * rate, 1),
        # each count asked for: read off the run where it was reached, else extrapolated
        "times": [
            {"rentals": c, "seconds": round(times[c], 1), "basis": "measured"}
            if c in times
            else {"rentals": c, "seconds": round(c / rate, 1), "basis": f"EXTRAPOLATED from {n:,}"}
            for c in checkpoints
        ],
    }


# -- one backend, start to end ---------------------------------------------------------------


def bench_backend(backend: Backend, plan: dict[str, int], directory: Path) -> dict[str, Any]:
    """``plan``: transfers ``one_at_a_time``; batches of each size, ``repeats`` at least and
    ``batched`` transfers at least; rentals to ``settle``."""
    rng = random.Random(1)
    name, settle = backend.name, plan["settle"]
    out: dict[str, Any] = {"database": redact(backend.url), "settings": server_settings(backend)}
    progress(f"{name}: {USERS:,} user accounts, funded with 10,000 IO each (not timed)")
    create_accounts(backend)

    out["throughput"] = []
    runs: list[tuple[str, int | None, int]] = [("one", None, plan["one_at_a_time"])]
    runs += [
        (f"b{size}", size, size * max(plan["repeats"], plan["batched"] // size))
        for size in BATCH_SIZES
    ]
    baseline = Baseline(backend, directory)
    try:
        for prefix, batch, n in runs:
            transfers = random_transfers(rng, prefix, n)
            how = f"in batches of {batch:,}, each beside the baseline" if batch else "one at a time"
            progress(f"{name}: {n:,} transfers {how}")
            r = time_posting(backend, transfers, batch, baseline)
            out["throughput"].append(r)
            if "ratio" in r:
                progress(
                    f"    {r['per_s']:,.0f} transfers/s, the baseline {r['baseline_per_s']:,.0f}/s:"
                    f" {r['ratio']:.2f} of it"
                )
            else:
                progress(f"    {r['per_s']:,.0f} transfers/s")
    finally:
        baseline.close()

    rentals = Rentals.generate(rng, settle)
    progress(f"{name}: pre-creating {settle:,} pending escrows (not timed)")
    for start in range(0, settle, 10_000):
        post_all(backend, rentals.escrows(start, min(start + 10_000, settle)))
    progress(f"{name}: settling {settle:,} rentals ({TRANSFERS_PER_RENTAL * settle:,} transfers)")
    r = time_settlement(backend, rentals, SETTLE_BATCH, RENTALS)
    out["settlement"] = r
    progress(f"    {r['rentals_per_s']:,.0f} rentals/s ({r['transfers_per_s']:,.0f} transfers/s)")

    progress(f"{name}: checking the book (chain, totals, escrow)")
    started = time.perf_counter()
    book = Book()
    with backend.sessions() as db:
        chain = book.verify_chain(db)
        totals = book.totals(db)
        escrow = book.account(db, ESCROW)
        count = db.scalar(select(LedgerHead.seq))
    out["check"] = check = {
        "transfers_recorded": count,
        "chain_ok": chain is None,
        "chain_problem": chain,
        "balanced": balanced(totals.values()),
        "escrow_empty": escrow.balance == 0 and escrow.credits_pending == 0,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not (check["chain_ok"] and check["balanced"] and check["escrow_empty"]):
        raise AssertionError(f"{name}: the book does not check out: {check}")
    return out


# -- the report ------------------------------------------------------------------------------


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    pg = results["backends"].get("postgresql", {})
    batched = [r for r in pg.get("throughput", []) if r["batch"] > 1]
    if not batched:
        return {"goal_per_s": GOAL_PER_S, "goal_ratio": GOAL_RATIO, "result": "NOT MEASURED"}
    best = max(batched, key=lambda r: r["per_s"])
    out = {
        "goal_per_s": GOAL_PER_S,
        "best_batched_per_s": best["per_s"],
        "percent_of_goal": round(100 * best["per_s"] / GOAL_PER_S, 1),
        "result": "PASS" if best["per_s"] >= GOAL_PER_S else "FAIL",
        "goal_ratio": GOAL_RATIO,
    }
    if "ratio" in best:
        out["ratio_to_baseline"] = best["ratio"]
        out["ratio_result"] = "PASS" if best["ratio"] >= GOAL_RATIO else "FAIL"
    return out


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_report(results: dict[str, Any]) -> None:
    backends = results["backends"]
    ran = {LABELS[name]: b for name, b in backends.items() if "throughput" in b}
    print_table(
        "Book: posted transfers per second (the range: the slowest and the fastest batch); the"
        " baseline writes the same rows straight into tables of the same shape, after each batch",
        "llrrrrrrrr",
        [
            "database",
            "mode",
            "transfers",
            "transactions",
            "seconds",
            "transfers/s",
            "baseline/s",
            "ratio",
            "ratio range",
            "statements/tx",
        ],
        [
            (
                db,
                r["mode"],
                f"{r['transfers']:,}",
                f"{r['transactions']:,}",
                f"{r['seconds']:.2f}",
                f"{r['per_s']:,.0f}"
                + (
                    f" ({r['per_s_range'][0]:,.0f}–{r['per_s_range'][1]:,.0f})"
                    if "per_s_range" in r
                    else ""
                ),
                f"{r['baseline_per_s']:,.0f} ({r['baseline_per_s_range'][0]:,.0f}–"
                f"{r['baseline_per_s_range'][1]:,.0f})"
                if "baseline_per_s" in r
                else "",
                f"{r['ratio']:.2f}" if "ratio" in r else "",
                f"{r['ratio_range'][0]:.2f}–{r['ratio_range'][1]:.2f}" if "ratio" in r else "",
                format(r["statements_per_transaction"], "g"),
            )
            for db, b in ran.items()
            for r in b["throughput"]
        ],
    )
    for db, b in ran.items():
        largest = max(b["throughput"], key=lambda r: r["batch"])
        kinds = ", ".join(f"{k} ×{n:g}" for k, n in largest["statements_by_kind"].items())
        print(f"{db}, the statements per batch of {largest['batch']:,}: {kinds}")
    v = results["verdict"]
    print(f"\nGoal ≥ {GOAL_PER_S:,} transfers/s batched on PostgreSQL: ", end="")
    if v["result"] == "NOT MEASURED":
        print("NOT MEASURED")
    else:
        best, share = v["best_batched_per_s"], v["percent_of_goal"]
        print(f"the best is {best:,.0f}/s ({share:.1f}% of the goal): {v['result']}")
        if "ratio_to_baseline" in v:
            print(
                f"Goal ≥ {GOAL_RATIO:.2f} of the baseline there: that batch size's rate is "
                f"{v['ratio_to_baseline']:.2f} of it: {v['ratio_result']}"
            )

    rows = []
    for db, b in ran.items():
        r = b["settlement"]
        run = (
            f"{r['rentals']:,} rentals in {r['seconds']:.1f} s: {r['rentals_per_s']:,.0f} "
            f"rentals/s, {r['transfers_per_s']:,.0f} transfers/s"
        )
        rows += [
            (db, f"{t['rentals']:,}", duration(t["seconds"]), t["basis"], run) for t in r["times"]
        ]
    print_table(
        f"Book: settling hourly rentals, {TRANSFERS_PER_RENTAL} transfers each (post the "
        "escrow, pay the provider, the provider fee, the reservation fee), "
        f"{SETTLE_BATCH:,} rentals a batch",
        "lrrll",
        ("database", "rentals", "time", "basis", "measured run"),
        rows,
    )
    print()
    for name, b in backends.items():
        if "skipped" in b:
            print(f"{LABELS[name]}: skipped: {b['skipped']}")
            continue
        k = b["check"]
        settings = ", ".join(f"{key} {value}" for key, value in b["settings"].items())
        print(
            f"{LABELS[name]} ({settings}): {k['transfers_recorded']:,} transfers recorded; chain "
            f"verifies: {k['chain_ok']}, balanced: {k['balanced']}, escrow empty: "
            f"{k['escrow_empty']} (checked in {k['seconds']:.0f} s)."
        )
    m = results["machine"]
    print(
        f"Machine: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, "
        f"{results['total_s']:.0f} s in all. The database server shares the CPUs with the "
        "benchmark: these are lower bounds for a dedicated database."
    )


# -- the command line ------------------------------------------------------------------------


def parse_backends(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or set(names) - set(LABELS):
        raise argparse.ArgumentTypeError("choose from sqlite,postgresql")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure Book's posted transfers per second and the time to settle "
        "hourly rentals, on SQLite and PostgreSQL."
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="small samples, settle 10,000 rentals (~20 s)"
    )
    size.add_argument(
        "--full",
        action="store_true",
        help="settle 1,000,000 rentals for real (~25 min on 2 cores, estimated)",
    )
    parser.add_argument(
        "--settle", type=int, default=None, help="rentals to settle for real (default 100000)"
    )
    parser.add_argument(
        "--backends", type=parse_backends, default=list(LABELS), help="sqlite,postgresql"
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="a server and a database to connect to for creating and dropping the "
        f"benchmark's own database {DATABASE_NAME} (default {redact(DEFAULT_POSTGRES_URL)}, "
        "or $IDLEGRID_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    quick = args.quick
    plan = {
        "one_at_a_time": 200 if quick else 1_000,
        "batched": 1 if quick else 20_000,  # per batch size, in whole batches
        "repeats": 3 if quick else 5,  # batches of each size at least, each beside the baseline
        "settle": args.settle or (RENTALS[-1] if args.full else 10_000 if quick else RENTALS[0]),
    }
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join([sys.executable, *sys.argv]),
        "plan": plan,
        "backends": {},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="idlegrid-bench-ledger-") as tmp:
            for name in args.backends:
                with contextlib.ExitStack() as stack:
                    if name == "sqlite":
                        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
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
                    results["backends"][name] = bench_backend(backend, plan, Path(tmp))
    except KeyboardInterrupt:
        progress("interrupted; the benchmark database has been dropped")
        return 130
    results["verdict"] = verdict(results)
    return finish(results, _T0, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
