"""Engine creation and Alembic migrations, run from code so the server upgrades itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "idlegrid_read_only"  # an execution option: this connection only reads


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # pysqlite opens a transaction only at the first write, so two
            # read-then-write transactions could both read the same balance.
            # Take the driver's hands off and begin every transaction IMMEDIATE
            # (the write lock up front): SQLite's stand-in for SELECT … FOR UPDATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # 16 KiB pages (for files created from now on): a reward block stores
            # hundreds of megabytes in one transaction (benchmarks/blocks.py: 1 s less
            # at a million devices than with 4 KiB pages).
            cur.execute("PRAGMA page_size=16384")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # Readers (plain sessions, see ``Sessions``) begin DEFERRED: in WAL mode a
            # reader never waits for a writer, nor a writer for it.
            read = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)


class Sessions(sessionmaker[Session]):
    """The services' session factory, with the codebase's one convention made cheap:
    ``sessions.begin()`` is a write transaction (on SQLite it takes the write lock up
    front, SQLite's stand-in for SELECT … FOR UPDATE); a plain ``sessions()`` only
    reads, and on SQLite it begins DEFERRED so reads never queue behind writes."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, expire_on_commit=False)
        self._write = engine
        self._read = engine.execution_options(**{READ_ONLY: True})

    def __call__(self, **kw: Any) -> Session:
        kw.setdefault("bind", self._read)
        return super().__call__(**kw)

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with super().__call__(bind=self._write) as session, session.begin():
            yield session


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return Sessions(engine)
