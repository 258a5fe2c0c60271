"""How long the liveness flush takes to write a mass status change (a partition that
silences every device at once): the set-based flush the server runs, beside the
statement-per-change flush it replaced, in the same run on the same database.

    .venv/bin/python benchmarks/flush.py [--devices 30000] [--postgres URL]

Registers the devices through ``DeviceService.register``, lets every one go silent
(the reaper queues one ``down`` each), and times ``DeviceService.flush`` of that
batch; then brings them back, silences them again, and times the old way (one
``UPDATE … WHERE status_version < v`` and one ORM event per change) on the same rows;
last, the database's ceiling: one bare ``UPDATE`` of every row, no versions, no events.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from heartbeats import cpu_hardware
from solders.keypair import Keypair
from sqlalchemy import update

from idlegrid.protocol import RegisterRequest
from idlegrid.server.app import build_state
from idlegrid.server.db.models import Device, DeviceEvent
from idlegrid.server.settings import ServerSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=30_000)
    parser.add_argument("--postgres", help="a scratch PostgreSQL URL (its tables are made)")
    args = parser.parse_args()
    os.environ["IDLEGRID_ENVIRONMENT"] = "development"
    with tempfile.TemporaryDirectory() as work:
        settings = ServerSettings(
            data_dir=Path(work), database_url=args.postgres or "", registration_rate_per_s=0
        )
        now = [1_800_000_000.0]
        state = build_state(settings, lambda: now[0], None)
        hardware = cpu_hardware()
        started = time.perf_counter()
        for i in range(args.devices):
            kp = Keypair()
            state.devices.register(str(kp.pubkey()), RegisterRequest(hardware=hardware), "bench")
            if i and i % 5000 == 0:
                print(f"  registered {i:,}", file=sys.stderr)
        print(f"registered {args.devices:,} in {time.perf_counter() - started:.1f} s")

        def silence() -> None:
            now[0] += settings.heartbeat_ttl_s + 1
            state.liveness.reap(now[0])

        silence()
        batch = state.liveness.drain()
        started = time.perf_counter()
        state.devices.flush(batch)
        set_based = time.perf_counter() - started

        for device_id in list(state.liveness._devices):
            state.liveness.heartbeat(device_id, now[0])
        state.devices.flush(state.liveness.drain())
        silence()
        again = state.liveness.drain()
        started = time.perf_counter()
        with state.devices.sessions.begin() as db:
            for c in sorted(again.changes, key=lambda c: (c.device_id, c.version)):
                result = db.execute(
                    update(Device)
                    .where(Device.id == c.device_id, Device.status_version < c.version)
                    .values(status=c.status.value, status_version=c.version)
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    detail = {"from": c.previous.value, "to": c.status.value, "reason": c.reason}
                    event = DeviceEvent(
                        device_id=c.device_id, at=c.at, kind="status", detail=detail
                    )
                    db.add(event)
        per_change = time.perf_counter() - started

        # The database's own ceiling: one bare statement touching every row.
        started = time.perf_counter()
        with state.devices.sessions.begin() as db:
            db.execute(update(Device).values(status_version=Device.status_version + 1))
        bare = time.perf_counter() - started
        n = len(batch.changes)
        print(
            f"flush of {n:,} status changes ({state.engine.dialect.name}): "
            f"set-based {set_based:.2f} s; one statement per change {per_change:.2f} s "
            f"({per_change / set_based:.1f}x slower); one bare UPDATE of every row "
            f"{bare:.2f} s (the ceiling: the flush at {set_based / bare:.1f}x it)"
        )


if __name__ == "__main__":
    main()
