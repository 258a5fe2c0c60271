"""Dialect-aware upserts (SQLite and PostgreSQL both speak ON CONFLICT)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idlegrid.server.db.models import DeviceUptime


def add_uptime(db: Session, rows: Sequence[tuple[str, int, float]]) -> None:
    """Add seconds to (device, hour) uptime buckets, creating missing ones."""
    if not rows:
        return
    dialect = db.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(DeviceUptime)
    stmt = stmt.on_conflict_do_update(
        index_elements=[DeviceUptime.device_id, DeviceUptime.hour],
        set_={"seconds": DeviceUptime.seconds + stmt.excluded.seconds},
    )
    db.execute(stmt, [{"device_id": d, "hour": h, "seconds": s} for d, h, s in rows])
