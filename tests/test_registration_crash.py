"""Group-committed registrations survive a crash of the control plane: a real server
process, killed between the inserts of a batch of new devices and its commit (the
``registrations_before_commit`` fault point) or by SIGKILL in the middle of a flood,
loses no registration it answered 201 for and leaves nothing half-written (a device
without its ``registered`` event, or an event without its device). The same
registrations retried after a restart come out exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from solders.keypair import Keypair
from sqlalchemy import create_engine, select

from idlegrid import faults
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import RegisterRequest
from idlegrid.sdk import Client
from idlegrid.sdk.client import sign_request
from idlegrid.server.db.models import Device, DeviceEvent
from idlegrid.server.hotpath import REGISTER_PATH
from idlegrid.worker.raynode import free_port
from tests.conftest import cpu_hardware

pytestmark = pytest.mark.e2e

FAULT = "registrations_before_commit"


@contextmanager
def control_plane(data_dir: Path, fault: str = "") -> Iterator[LocalNetwork]:
    """A real ``idlegrid server`` process on ``data_dir`` (SQLite there), in its own
    process group, stopped group and all on exit. ``fault`` arms ``IDLEGRID_FAULT``
    (empty: disarmed, even when this process's environment sets it)."""
    net = LocalNetwork(
        data_dir,
        port=free_port(),
        workers=0,
        env={
            "IDLEGRID_FAULT": fault,
            # Every registration here comes from this one address: no per-source limit.
            "IDLEGRID_REGISTRATION_RATE_PER_S": "0",
        },
    )
    try:
        net.start_server(timeout_s=60)
        yield net
    finally:
        net.close()


def server_log(data_dir: Path) -> str:
    return (data_dir / "logs" / "server.log").read_text(errors="replace")


def registration(http: httpx.AsyncClient, kp: Keypair, i: int, network: str) -> httpx.Request:
    """A signed ``POST /v1/devices`` for a fresh device, as the SDK signs it (a fresh
    nonce and timestamp each time it is built)."""
    body = RegisterRequest(hardware=cpu_hardware(), name=f"crash-{i}", agent_version="test")
    request = http.build_request(
        "POST",
        REGISTER_PATH,
        content=body.model_dump_json().encode(),
        headers={"content-type": "application/json"},
    )
    sign_request(request, kp, time.time(), network)
    return request


async def _send_all(
    url: str, network: str, keypairs: list[Keypair], concurrency: int, kill: tuple[int, int] | None
) -> list[httpx.Response | httpx.TransportError]:
    """Register every keypair's device, ``concurrency`` requests in flight at once;
    each one's response or transport error, in order. ``kill``: (pid, n): SIGKILL the
    server process ``pid`` as soon as ``n`` 201s have come back."""
    outcomes: list[httpx.Response | httpx.TransportError | None] = [None] * len(keypairs)
    queue = list(range(len(keypairs)))
    created = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal created
            while queue:
                i = queue.pop(0)
                try:
                    response = await http.send(registration(http, keypairs[i], i, network))
                except httpx.TransportError as exc:
                    outcomes[i] = exc
                    continue
                outcomes[i] = response
                if response.status_code == 201:
                    created += 1
                    if kill is not None and created == kill[1]:
                        os.kill(kill[0], signal.SIGKILL)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def send_all(
    net: LocalNetwork,
    network: str,
    keypairs: list[Keypair],
    concurrency: int,
    kill_after: int | None = None,
) -> list[httpx.Response | httpx.TransportError]:
    kill = None
    if kill_after is not None:
        assert net.server is not None
        kill = (net.server.pid, kill_after)
    return asyncio.run(_send_all(net.server_url, network, keypairs, concurrency, kill))


def stored(data_dir: Path) -> tuple[Counter[str], Counter[str]]:
    """What the database holds: each device id's rows in ``devices`` (0 or 1, it is the
    primary key) and its ``registered`` events in ``device_events``."""
    engine = create_engine(f"sqlite:///{data_dir / 'idlegrid.db'}")
    try:
        with engine.connect() as conn:
            devices = Counter(conn.scalars(select(Device.id)))
            events = Counter(
                conn.scalars(select(DeviceEvent.device_id).where(DeviceEvent.kind == "registered"))
            )
    finally:
        engine.dispose()
    return devices, events


def assert_whole(devices: Counter[str], events: Counter[str]) -> None:
    """Nothing half-written: every device once, with exactly one ``registered`` event,
    and no such event without its device."""
    assert all(n == 1 for n in devices.values()), devices
    assert set(events) == set(devices), set(events) ^ set(devices)
    assert all(n == 1 for n in events.values()), events


def network_of(net: LocalNetwork) -> str:
    with Client(net.server_url) as client:
        return client.network()


def wait_exit(net: LocalNetwork, timeout_s: float = 30) -> int:
    assert net.server is not None
    return net.server.wait(timeout_s)


def test_a_crash_before_the_batch_commits_registers_nobody_and_a_retry_registers_each_once(
    tmp_path: Path,
) -> None:
    keypairs = [Keypair() for _ in range(40)]
    ids = [str(kp.pubkey()) for kp in keypairs]

    with control_plane(tmp_path, fault=FAULT) as net:
        network = network_of(net)
        outcomes = send_all(net, network, keypairs, concurrency=len(keypairs))
        assert wait_exit(net) == faults.EXIT_CODE
    # The process died with the first batch written, not committed: nobody got an
    # answer, let alone a 201.
    answered = [o for o in outcomes if isinstance(o, httpx.Response)]
    assert answered == [], [(r.status_code, r.text[:200]) for r in answered]
    assert all(isinstance(o, httpx.TransportError) for o in outcomes)
    assert f"fault injected at {FAULT}" in server_log(tmp_path)

    with control_plane(tmp_path) as net:
        # The dying batch's devices (and everyone else's) are not there, in the API
        # or the database, and nothing of them is half there.
        with Client(net.server_url) as client:
            assert client.list_devices().total == 0
        devices, events = stored(tmp_path)
        assert not set(devices) & set(ids) and not set(events) & set(ids)
        assert_whole(devices, events)

        # Retried (signed afresh, as a client's retry would be): each is new, once.
        retried = send_all(net, network_of(net), keypairs, concurrency=len(keypairs))
        assert [o.status_code if isinstance(o, httpx.Response) else o for o in retried] == [
            201
        ] * len(ids)
        assert [o.json()["id"] for o in retried if isinstance(o, httpx.Response)] == ids
        devices, events = stored(tmp_path)
        assert set(devices) == set(ids)
        assert_whole(devices, events)
        with Client(net.server_url) as client:
            assert client.list_devices().total == len(ids)


def test_sigkill_mid_flood_keeps_every_201_and_a_retry_registers_the_rest_once(
    tmp_path: Path,
) -> None:
    keypairs = [Keypair() for _ in range(600)]
    ids = [str(kp.pubkey()) for kp in keypairs]

    with control_plane(tmp_path) as net:
        network = network_of(net)
        outcomes = send_all(net, network, keypairs, concurrency=32, kill_after=80)
        assert wait_exit(net) == -signal.SIGKILL
    created = {
        ids[i]
        for i, o in enumerate(outcomes)
        if isinstance(o, httpx.Response) and o.status_code == 201
    }
    other = [
        (o.status_code, o.text[:200])
        for o in outcomes
        if isinstance(o, httpx.Response) and o.status_code != 201
    ]
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, httpx.TransportError)]
    assert other == []  # every answer was a 201 (fresh devices, no rate limit)
    assert len(created) >= 80
    assert failed, "the kill came after the whole flood: nothing was cut off"

    with control_plane(tmp_path) as net:
        devices, events = stored(tmp_path)
        # A 201 means committed: each of them is there, whole.
        missing = created - set(devices)
        assert not missing, f"{len(missing)} device(s) answered 201 are gone after the restart"
        assert set(devices) <= set(ids)
        assert_whole(devices, events)

        # Everyone retried: new ones 201, those already there (committed, even if
        # their answer was cut off) 200, and every device exactly once.
        retried = send_all(net, network_of(net), keypairs, concurrency=32)
        statuses = [o.status_code if isinstance(o, httpx.Response) else o for o in retried]
        assert statuses == [200 if device_id in devices else 201 for device_id in ids]
        devices, events = stored(tmp_path)
        assert set(devices) == set(ids)
        assert_whole(devices, events)
