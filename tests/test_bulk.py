"""The liveness flush's bulk statements, across chunk boundaries, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select

from idlegrid.server.db import make_engine, migrate, session_factory
from idlegrid.server.db.bulk import CHUNK_ROWS, add_uptime, touch_devices
from idlegrid.server.db.models import Device, DeviceUptime


def test_bulk_writes_cover_every_row_across_chunks(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    n = CHUNK_ROWS + 123
    ids = [f"dev{i:06d}" for i in range(n)]
    sessions = session_factory(engine)
    with sessions.begin() as db:
        db.execute(
            insert(Device),
            [
                dict(
                    id=d,
                    owner=d,
                    status="up",
                    status_version=0,
                    readiness="pending",
                    kind="cpu",
                    processors=1,
                    hardware={},
                    agent_version="t",
                    registered_at=0.0,
                    uptime_s=1.0,
                )
                for d in ids
            ],
        )
    with sessions.begin() as db:
        touch_devices(db, [(d, 100.0 + i, 2.5) for i, d in enumerate(ids)])
        add_uptime(db, [(d, 0, 2.5) for d in ids] + [(d, 3600, 1.0) for d in ids[:10]])
    with sessions.begin() as db:
        add_uptime(db, [(ids[0], 0, 1.0)])  # an existing bucket grows
    with sessions() as db:
        assert db.scalar(select(func.sum(Device.uptime_s))) == pytest.approx(3.5 * n)
        assert db.scalar(select(Device.last_seen_at).where(Device.id == ids[-1])) == 100.0 + n - 1
        assert db.scalar(select(func.count()).select_from(DeviceUptime)) == n + 10
        first = db.get(DeviceUptime, (ids[0], 0))
        assert first is not None and first.seconds == 3.5
    engine.dispose()
