"""Bulk writes: the liveness flush's multi-row statements, and ``insert_rows``.

The liveness flush uses a few multi-row statements, not one per row.

A statement per row would make the flusher thread take and release Python's GIL
once per row while the event loop keeps it busy, and each hand-back waits out a
switch interval: under benchmarks/heartbeats.py at 100,000 devices a flush took
3.6 s on average that way, and 0.12 s with these statements. Multi-row
statements (chunks of ``CHUNK_ROWS``) release it once per chunk. The SQL is
written once for both databases: SQLite (≥ 3.33) and PostgreSQL both speak
``INSERT … ON CONFLICT … DO UPDATE`` and ``WITH v(…) AS (VALUES …) UPDATE … FROM v``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

# The ledger chunks its statements too, so the two live beneath both (idlegrid/orm.py).
from idlegrid.orm import CHUNK_ROWS as CHUNK_ROWS
from idlegrid.orm import chunks as chunks


def _mark(db: Session) -> str:
    """The DBAPI's positional placeholder. Raw DBAPI parameters, because
    SQLAlchemy's per-parameter processing costs more than the statement."""
    return "?" if db.get_bind().dialect.paramstyle == "qmark" else "%s"


def add_uptime(db: Session, rows: Sequence[tuple[str, int, float]]) -> None:
    """Add seconds to (device, hour) uptime buckets, creating missing ones."""
    conn = db.connection()
    mark = _mark(db)
    for chunk in chunks(rows):
        row = f"({mark}, {mark}, {mark})"
        sql = (
            "INSERT INTO device_uptime (device_id, hour, seconds) "
            f"VALUES {', '.join([row] * len(chunk))} "
            "ON CONFLICT (device_id, hour) "
            "DO UPDATE SET seconds = device_uptime.seconds + excluded.seconds"
        )
        conn.exec_driver_sql(sql, tuple(x for r in chunk for x in r))


def add_season_points(db: Session, rows: Sequence[tuple[str, str, str, str, int]]) -> None:
    """Add milli-points to (season, device) rows, creating missing ones; a row's owner
    is the newest block's. Rows are (season, device, owner, kind, milli-points)."""
    conn = db.connection()
    mark = _mark(db)
    for chunk in chunks(rows, CHUNK_ROWS // 2):  # five parameters a row
        row = f"({mark}, {mark}, {mark}, {mark}, {mark})"
        sql = (
            "INSERT INTO season_points (season_id, device_id, owner, kind, points) "
            f"VALUES {', '.join([row] * len(chunk))} "
            "ON CONFLICT (season_id, device_id) DO UPDATE SET "
            "points = season_points.points + excluded.points, owner = excluded.owner"
        )
        conn.exec_driver_sql(sql, tuple(x for r in chunk for x in r))


def touch_devices(db: Session, rows: Sequence[tuple[str, float, float]]) -> None:
    """Set (device id, last seen) and add (uptime seconds) to each device's total."""
    conn = db.connection()
    mark = _mark(db)
    for chunk in chunks(rows):
        # A CTE with a column list: the form SQLite and PostgreSQL both accept.
        row = f"({mark}, CAST({mark} AS DOUBLE PRECISION), CAST({mark} AS DOUBLE PRECISION))"
        sql = (
            f"WITH v(id, seen, up) AS (VALUES {', '.join([row] * len(chunk))}) "
            "UPDATE devices SET last_seen_at = v.seen, uptime_s = devices.uptime_s + v.up "
            "FROM v WHERE devices.id = v.id"
        )
        conn.exec_driver_sql(sql, tuple(x for r in chunk for x in r))


def set_statuses(db: Session, rows: Sequence[tuple[str, str, int]]) -> set[str]:
    """Set each (device id, status, version) where the device's stored version is
    older (a late flush never undoes a newer change); returns the ids it changed."""
    conn = db.connection()
    mark = _mark(db)
    changed: set[str] = set()
    for chunk in chunks(rows):
        row = f"({mark}, {mark}, CAST({mark} AS BIGINT))"
        sql = (
            f"WITH v(id, status, version) AS (VALUES {', '.join([row] * len(chunk))}) "
            "UPDATE devices SET status = v.status, status_version = v.version "
            "FROM v WHERE devices.id = v.id AND devices.status_version < v.version "
            "RETURNING devices.id"
        )
        result = conn.exec_driver_sql(sql, tuple(x for r in chunk for x in r))
        changed.update(str(r[0]) for r in result)
    return changed


def insert_rows(
    db: Session, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> None:
    """Append many rows to ``table`` in the session's transaction, as fast as the
    database takes them: PostgreSQL's ``COPY``, SQLite's ``executemany`` (a reward
    block writes a million rows; statements of a few thousand rows each would spend
    more time building SQL than storing it)."""
    if not rows:
        return
    conn = db.connection()
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join([_mark(db)] * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(rows))


def fetch_rows(db: Session, query: Select[*tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Every row of ``query`` as plain tuples, read through the driver's own cursor in
    the session's transaction: for a million rows SQLAlchemy's per-row processing costs
    more than the database does. Only for queries whose columns need no conversion
    (numbers, text) and whose parameters are plain numbers or text (bound as literals)."""
    conn = db.connection()
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    raw: Any = conn.connection.driver_connection
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()
