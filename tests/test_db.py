"""The session convention on SQLite: ``sessions.begin()`` writes and takes the write
lock up front; a plain ``sessions()`` reads and never waits for a writer."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select

from idlegrid.ledger.tables import LedgerAccount
from idlegrid.server.db.engine import make_engine, migrate, session_factory


def test_a_read_does_not_wait_for_a_writer_and_a_second_writer_does(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'idlegrid.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    second_writer_done = threading.Event()

    def second_writer() -> None:
        with sessions.begin() as db:
            db.connection()  # BEGIN IMMEDIATE: waits for the first writer
        second_writer_done.set()

    with sessions.begin() as writer:
        writer.connection()  # holds the write lock from here to the end of the block
        with sessions() as reader:  # the old BEGIN IMMEDIATE here waited 30 s, then failed
            assert reader.scalar(select(func.count()).select_from(LedgerAccount)) == 0
        thread = threading.Thread(target=second_writer)
        thread.start()
        assert not second_writer_done.wait(0.5)  # still queued behind the first
    thread.join(10)
    assert second_writer_done.is_set()
    engine.dispose()
