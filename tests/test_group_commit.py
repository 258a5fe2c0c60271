"""Group commit of registrations (server/group_commit.py, DeviceService.register_many).

First the batcher alone, on a real event loop with real threads: a lone call runs
at once, calls that arrive while a batch runs go together next, one item's error
reaches only its caller. Then registrations through the in-process app on SQLite
and PostgreSQL: a batch of new, repeated, already registered and badly attested
devices gives each its own answer, one row and one event per device, exactly
what one-at-a-time registration writes; and a flood of concurrent registrations
really shares transactions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from solders.keypair import Keypair
from sqlalchemy import func, select

from idlegrid.core import signing
from idlegrid.errors import BadSignature, DeviceTerminated
from idlegrid.protocol import DeviceStatus, RegisterRequest
from idlegrid.server.db.models import Device, DeviceEvent
from idlegrid.server.group_commit import GroupCommit
from tests.conftest import Network, cpu_hardware

# -- the batcher ----------------------------------------------------------------------


def test_a_lone_call_runs_at_once_and_a_crowd_goes_together() -> None:
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def run_many(items: Sequence[int]) -> list[int | Exception]:
        batches.append(list(items))
        if len(batches) == 1:
            started.set()
            assert release.wait(5)
        return [i * 10 for i in items]

    async def main() -> list[int]:
        group: GroupCommit[int, int] = GroupCommit(run_many, lanes=1)
        first = asyncio.create_task(group.submit(0))
        await asyncio.to_thread(started.wait, 5)  # the first runs alone, at once
        rest = [asyncio.create_task(group.submit(i)) for i in range(1, 21)]
        await asyncio.sleep(0.05)
        release.set()
        return [await first, *[await t for t in rest]]

    assert asyncio.run(main()) == [i * 10 for i in range(21)]
    assert batches == [[0], list(range(1, 21))]


def test_one_items_error_reaches_only_its_caller_and_a_batchs_reaches_all() -> None:
    def run_many(items: Sequence[int]) -> list[int | Exception]:
        if -1 in items:
            raise RuntimeError("the transaction failed")
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    async def main() -> tuple[list[Any], list[Any]]:
        group: GroupCommit[int, int] = GroupCommit(run_many, lanes=1)
        mixed = await asyncio.gather(*(group.submit(i) for i in range(4)), return_exceptions=True)
        failed = await asyncio.gather(group.submit(-1), return_exceptions=True)
        return mixed, failed

    mixed, failed = asyncio.run(main())
    assert mixed[0] == 0 and mixed[2] == 2
    assert isinstance(mixed[1], ValueError) and str(mixed[1]) == "bad 1"
    assert isinstance(mixed[3], ValueError)
    assert isinstance(failed[0], RuntimeError)


def test_a_caller_that_gave_up_is_skipped_and_the_rest_answered() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def run_many(items: Sequence[int]) -> list[int | Exception]:
        seen.append(list(items))
        if len(seen) == 1:
            assert release.wait(5)
        return list(items)

    async def main() -> list[int]:
        group: GroupCommit[int, int] = GroupCommit(run_many, lanes=1)
        first = asyncio.create_task(group.submit(0))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(group.submit(1))
        kept = asyncio.create_task(group.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client hung up while it waited
        release.set()
        return [await first, await kept]

    assert asyncio.run(main()) == [0, 2]
    assert seen == [[0], [2]]


def test_lanes_and_batch_sizes_are_at_least_one() -> None:
    with pytest.raises(ValueError):
        GroupCommit(lambda items: list(items), lanes=0)


# -- registrations --------------------------------------------------------------------


def request_for(network: Network, device: Keypair, owner: Keypair | None = None) -> RegisterRequest:
    if owner is None:
        return RegisterRequest(hardware=cpu_hardware())
    message = signing.owner_attestation_message(network.client().network(), str(device.pubkey()))
    return RegisterRequest(
        hardware=cpu_hardware(),
        owner=str(owner.pubkey()),
        owner_signature=str(owner.sign_message(message)),
    )


def counts(network: Network, device_id: str) -> tuple[int, int]:
    with network.state.devices.sessions() as db:
        rows = db.scalar(select(func.count()).select_from(Device).where(Device.id == device_id))
        registered = db.scalar(
            select(func.count())
            .select_from(DeviceEvent)
            .where(DeviceEvent.device_id == device_id, DeviceEvent.kind == "registered")
        )
    return int(rows or 0), int(registered or 0)


def test_a_batch_answers_each_registration_as_one_at_a_time_would(network: Network) -> None:
    service = network.state.devices
    net = network.client().network()
    fresh = [Keypair() for _ in range(3)]
    known, owned, stranger, terminated = Keypair(), Keypair(), Keypair(), Keypair()
    network.client(known).register_device(request_for(network, known))
    network.client(terminated).register_device(request_for(network, terminated))
    network.client(terminated).terminate_device(str(terminated.pubkey()))
    forged = request_for(network, owned, owner=stranger)
    forged = forged.model_copy(update={"owner_signature": forged.owner_signature[::-1]})
    items = [
        *[(str(k.pubkey()), request_for(network, k), net) for k in fresh],
        (str(fresh[0].pubkey()), request_for(network, fresh[0]), net),  # named twice
        (str(known.pubkey()), request_for(network, known), net),  # already registered
        (str(owned.pubkey()), forged, net),  # an attestation that does not verify
        (str(owned.pubkey()), request_for(network, owned, owner=stranger), net),
        (str(terminated.pubkey()), request_for(network, terminated), net),
    ]
    outcomes = service.register_many(items)
    assert len(outcomes) == len(items)
    views = outcomes[:3]
    assert all(not isinstance(v, Exception) and v[1] for v in views)
    again, refreshed = outcomes[3], outcomes[4]
    assert not isinstance(again, Exception) and again[1] is False  # the second was a refresh
    assert not isinstance(refreshed, Exception) and refreshed[1] is False
    assert isinstance(outcomes[5], BadSignature)
    owned_view = outcomes[6]
    assert not isinstance(owned_view, Exception) and owned_view[0].owner == str(stranger.pubkey())
    assert isinstance(outcomes[7], DeviceTerminated)
    for k in [*fresh, owned]:
        assert counts(network, str(k.pubkey())) == (1, 1)
        live = network.state.liveness.get(str(k.pubkey()))
        assert live is not None and live.status is DeviceStatus.UP
    # Written as a registration on its own writes it (ids and times aside).
    alone = Keypair()
    single = network.client(alone).register_device(request_for(network, alone))
    batched = outcomes[1]
    assert not isinstance(batched, Exception)
    skip = {"id", "owner", "registered_at", "last_seen_at"}
    assert batched[0].model_dump(exclude=skip) == single.model_dump(exclude=skip)
    with service.sessions() as db:
        rows = {
            d.id: (d.next_proof_at, d.status_version, d.readiness, d.sandbox_backend)
            for d in db.scalars(select(Device).where(Device.id.in_([views[1][0].id, single.id])))
        }
    assert rows[views[1][0].id] == rows[single.id]


def test_concurrent_registrations_share_transactions(network: Network) -> None:
    """A flood through the app: while the first transaction runs, the rest queue and
    go together; every one is answered 201 and written once."""
    service = network.state.devices
    plain = service.register_many
    fleet = [Keypair() for _ in range(24)]

    def held(items: Sequence[Any], **options: Any) -> list[Any]:
        # Each batch waits until every request has reached the group: the ones that
        # come meanwhile must then go together, whatever the threads' timing.
        group = network.app.state.registration_group
        deadline = time.monotonic() + 10
        while sum(group.batches) + len(group._pending) < len(fleet):
            assert time.monotonic() < deadline, "the requests never all arrived"
            time.sleep(0.01)
        return plain(items, **options)

    service.register_many = held  # type: ignore[method-assign]

    def register(k: Keypair) -> bool:
        view = network.client(k).register_device(RegisterRequest(hardware=cpu_hardware()))
        return view.id == str(k.pubkey())

    with ThreadPoolExecutor(24) as pool:
        assert all(pool.map(register, fleet))
    batches = network.app.state.registration_group.batches
    lanes = network.settings.registration_concurrency
    assert sum(batches) == len(fleet) and len(batches) <= lanes + 1
    for k in fleet:
        assert counts(network, str(k.pubkey())) == (1, 1)
