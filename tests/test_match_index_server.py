"""The server's match index (``services/match_index.py``) against the reference scan.

After random sequences of registrations, readiness, proofs, hires, releases, pauses and
resumes, heartbeats that stop and start again, reaper passes and floors, the index's
candidates and matches equal what ``Marketplace.candidates`` (a fresh scan of the
database and the liveness table) gives, for the public, a buyer and a provider with
unsandboxed devices, with and without price caps. Racing deploys through the index:
``tests/test_clusters.py`` (``test_racing_deploys_never_double_book_…``), whose app
wires the index as the server does.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair
from sqlalchemy import select

from idlegrid.core import matching
from idlegrid.errors import IdlegridError
from idlegrid.protocol import DeployRequest, RegisterRequest, SandboxInfo
from idlegrid.server.db.models import Cluster, Device, Proof
from tests.conftest import FakeClock, Network, cpu_hardware, gpu_hardware

IO = 10**8
SANDBOXED = SandboxInfo(backend="bubblewrap", enforces=["user", "pid", "filesystem", "network"])
OPEN = SandboxInfo(backend="none", reason="--no-sandbox")
# Uptime far above any device's age: its reputation then depends on its proofs only,
# not on the clock, so that the index's (as of its last read) can be compared exactly.
FOREVER_S = 1e12


class Market:
    """A network, its devices' keys, a funded buyer and the devices gone silent."""

    def __init__(self, net: Network, clock: FakeClock) -> None:
        self.net = net
        self.clock = clock
        self.keys: dict[str, Keypair] = {}
        self.silent: set[str] = set()
        self.buyer = Keypair()
        net.state.ledger.grant(str(self.buyer.pubkey()), "IO", 1_000 * IO)  # type: ignore[arg-type]

    def device(self, i: int) -> str | None:
        ids = sorted(self.keys)
        return ids[i % len(ids)] if ids else None

    def register(self, gpu: bool, sandboxed: bool, location: str, ready: bool) -> None:
        kp = Keypair()
        device_id = str(kp.pubkey())
        self.keys[device_id] = kp
        client = self.net.client(kp)
        hw = gpu_hardware() if gpu else cpu_hardware()
        sandbox = SANDBOXED if sandboxed else OPEN
        client.register_device(RegisterRequest(hardware=hw, location=location, sandbox=sandbox))
        client.heartbeat(device_id)
        if ready:
            self.ready(device_id)

    def ready(self, device_id: str) -> None:
        """Proven and up long enough (as ``ProofService`` would set it)."""
        with self.net.state.devices.sessions.begin() as db:
            dev = db.get(Device, device_id)
            if dev.readiness == "pending" and dev.status == "up":
                dev.readiness = "cluster_ready"
                dev.proof_passed_at = self.clock()
            dev.uptime_s = FOREVER_S

    def proof(self, device_id: str, passed: bool) -> None:
        with self.net.state.devices.sessions.begin() as db:
            db.add(
                Proof(
                    id=secrets.token_hex(16),
                    device_id=device_id,
                    status="verified" if passed else "failed",
                    seed="00",
                    n=1,
                    rounds=1,
                    checks_k=1,
                    work_flop=1.0,
                    claimed_tflops=1.0,
                    deadline_s=1.0,
                    memory_mb=0,
                    created_at=self.clock(),
                )
            )

    def deploy(self, quantity: int) -> None:
        client = self.net.client(self.buyer)
        try:
            quote = client.quote(DeployRequest(name="p", hardware="cpu", quantity=quantity))
            client.deploy(quote.id)
            event("deployed")
        except IdlegridError as exc:
            event(f"not deployed: {type(exc).__name__}")  # too few devices: nothing hired

    def terminate(self, i: int) -> None:
        with self.net.state.clusters.sessions() as db:
            live = sorted(
                db.scalars(
                    select(Cluster.id).where(
                        Cluster.owner == str(self.buyer.pubkey()),
                        Cluster.status.in_(["deployment_requested", "deploying", "running"]),
                    )
                )
            )
        if live:
            self.net.client(self.buyer).terminate_cluster(live[i % len(live)])
            event("terminated")

    def owner_action(self, device_id: str, action: str) -> None:
        client = self.net.client(self.keys[device_id])
        act = client.pause_device if action == "pause" else client.resume_device
        with contextlib.suppress(IdlegridError):  # not allowed in its state
            act(device_id)

    def heartbeats(self, seconds: float) -> None:
        """Time passes; every device not silenced heartbeats."""
        self.clock.advance(seconds)
        for device_id, kp in self.keys.items():
            if device_id not in self.silent:
                with contextlib.suppress(IdlegridError):
                    self.net.client(kp).heartbeat(device_id)

    def renters(self) -> list[str | None]:
        """The public, the buyer, and a provider (who may own unsandboxed devices)."""
        owners = sorted(self.keys)[:1]
        return [None, str(self.buyer.pubkey()), *owners]


REQUESTS = [
    matching.Requirements(kind="cpu", quantity=1),
    matching.Requirements(kind="cpu", quantity=2),
    matching.Requirements(kind="cpu", quantity=2, locations=frozenset({"DE"})),
    matching.Requirements(quantity=None),
    matching.Requirements(kind="gpu", quantity=1, max_reputation=0.7),
]
CAPS = [None, 0, 1_500_000, 10**12]


def assert_agrees(m: Market) -> None:
    market = m.net.state.clusters.market
    assert market.index is not None
    with market.sessions() as db:
        for renter in m.renters():
            for cap in CAPS:
                want, want_floors = market.candidates(db, cap, renter)
                got, got_floors = market.index.candidates(db, renter, cap)
                assert sorted(got, key=lambda c: c.device_id) == sorted(
                    want, key=lambda c: c.device_id
                )
                assert got_floors == want_floors
                if renter is None and cap is None:
                    event(f"public candidates: {min(len(want), 3)}+")
                for req in REQUESTS:
                    assert market.index.match(db, req, renter, cap) == matching.match(want, req)


def ops() -> st.SearchStrategy[tuple[Any, ...]]:
    i = st.integers(0, 50)
    return st.one_of(
        st.tuples(
            st.just("register"),
            st.booleans(),
            st.booleans(),
            st.sampled_from(["DE", "FR"]),
            st.booleans(),
        ),
        st.tuples(
            st.just("register"),
            st.booleans(),
            st.booleans(),
            st.sampled_from(["DE", "FR"]),
            st.booleans(),
        ),
        st.tuples(st.just("ready"), i),
        st.tuples(st.just("proof"), i, st.booleans()),
        st.tuples(st.just("deploy"), st.integers(1, 3)),
        st.tuples(st.just("terminate"), i),
        st.tuples(st.just("pause"), i),
        st.tuples(st.just("resume"), i),
        st.tuples(st.just("silence"), i),
        st.tuples(st.just("speak"), i),
        st.tuples(st.just("time"), st.sampled_from([5.0, 30.0])),
        st.tuples(st.just("tick")),
        st.tuples(st.just("floor"), i, st.sampled_from(["0", "0.5", "2"])),
    )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(ops(), min_size=4, max_size=30))
def test_the_index_agrees_with_a_scan_of_the_database(
    network: Network, clock: FakeClock, steps: list[tuple[Any, ...]]
) -> None:
    """One network for every example: devices pile up, as in a server's life; each
    example starts with four of its own, ready."""
    m = Market(network, clock)
    for gpu, location in ((False, "DE"), (False, "DE"), (False, "FR"), (True, "DE")):
        m.register(gpu, True, location, True)
    for op, *args in steps:
        device_id = m.device(args[0]) if args and isinstance(args[0], int) else None
        if op == "register":
            m.register(*args)
        elif op == "deploy":
            m.deploy(args[0])
        elif op == "terminate":
            m.terminate(args[0])
        elif op == "time":
            m.heartbeats(args[0])  # 30 s is past the 25 s TTL for the silent ones
        elif op == "tick":
            network.tick()
        elif device_id is None:
            continue
        elif op == "ready":
            m.ready(device_id)
        elif op == "proof":
            m.proof(device_id, args[1])
        elif op in ("pause", "resume"):
            m.owner_action(device_id, op)
        elif op == "silence":
            m.silent.add(device_id)
        elif op == "speak":
            m.silent.discard(device_id)
        elif op == "floor":
            m.net.client(m.keys[device_id]).set_floor(device_id, args[1])
        assert_agrees(m)
