"""IO Cloud through the API, in-process: quotes, deploys, forming, healing, the clusters.

Agents are played by the test (heartbeats and Ray node reports through the
SDK), so every step is deterministic; tests/test_cloud_e2e.py runs real agents
and real Ray.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from solders.keypair import Keypair
from sqlalchemy import select

from idlegrid.core import clusters
from idlegrid.core.fees import fee, units
from idlegrid.errors import (
    BadNodeAddress,
    ClusterNotActive,
    InsufficientFunds,
    InvalidApiKey,
    InvalidRequest,
    NoMatchingDevices,
    QuoteExpired,
    QuoteUsed,
    UnknownApiKey,
    UnknownCluster,
)
from idlegrid.ledger.chain import Asset
from idlegrid.protocol import (
    DeployRequest,
    ExtendRequest,
    HardwareInfo,
    RayNodeReport,
    RegisterRequest,
    SandboxInfo,
)
from idlegrid.sdk import Client
from idlegrid.server.db.models import ClusterNode, Device, LedgerTransfer
from idlegrid.server.loops import reap_and_flush
from tests.conftest import FakeClock, Network, cpu_hardware, gpu_hardware

IO = 10**8
SANDBOXED = SandboxInfo(backend="bubblewrap", enforces=["user", "pid", "filesystem", "network"])


class HireableFleet:
    """Devices made cluster-ready by hand, and a funded buyer."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.keys: dict[str, Keypair] = {}
        self.buyer = Keypair()
        self.buyer_id = str(self.buyer.pubkey())

    def add(
        self, hw: HardwareInfo, location: str = "DE", tier: int = 3, sandboxed: bool = True
    ) -> str:
        kp = Keypair()
        device_id = str(kp.pubkey())
        self.keys[device_id] = kp
        client = self.net.client(kp)
        sandbox = SANDBOXED if sandboxed else SandboxInfo(backend="none", reason="--no-sandbox")
        client.register_device(RegisterRequest(hardware=hw, location=location, sandbox=sandbox))
        client.heartbeat(device_id)
        with self.net.state.devices.sessions.begin() as db:
            dev = db.get(Device, device_id)
            dev.status = "up"
            dev.readiness = "cluster_ready"
            dev.tier = tier
            dev.proof_passed_at = self.net.clock()
        return device_id

    def fund(self, units: int, asset: Asset = Asset.IO) -> None:
        self.net.state.ledger.grant(self.buyer_id, asset, units)

    def buyer_client(self) -> Client:
        return self.net.client(self.buyer)

    def agent(self, device_id: str) -> Client:
        return self.net.client(self.keys[device_id])

    def heartbeat_all(self) -> dict[str, object]:
        return {d: self.agent(d).heartbeat(d).assignment for d in self.keys}

    def bring_up(self, cluster_id: str) -> None:
        """Play the agents: the head reports up, then the workers."""
        view = self.buyer_client().get_cluster(cluster_id)
        gen = view.generation
        nodes = [n for n in view.nodes if n.left_at is None]
        for n in sorted(nodes, key=lambda n: n.role != "head"):
            port = 40000 + len(n.device_id)
            self.agent(n.device_id).report_ray_node(
                n.device_id,
                RayNodeReport(
                    cluster_id=cluster_id,
                    generation=gen,
                    state="up",
                    node_ip="10.0.0.1",
                    gcs_port=port if n.role == "head" else None,
                    dashboard_port=port + 1 if n.role == "head" else None,
                    client_port=port + 2 if n.role == "head" else None,
                ),
            )

    def balance(self, who: str, asset: str = "IO") -> int:
        with self.net.state.ledger.sessions() as db:
            return self.net.state.ledger.balances(db, who)[asset][0]


@pytest.fixture
def fleet(network: Network) -> HireableFleet:
    return HireableFleet(network)


def deploy(fleet: HireableFleet, **kw: object) -> tuple[str, int]:
    req = DeployRequest(name="job", **kw)  # type: ignore[arg-type]
    client = fleet.buyer_client()
    quote = client.quote(req)
    view = client.deploy(quote.id)
    return view.id, int(quote.devices)


def transfers(net: Network, code: str) -> list[LedgerTransfer]:
    with net.state.ledger.sessions() as db:
        return list(db.scalars(select(LedgerTransfer).where(LedgerTransfer.code == code)))


def test_deploy_forms_the_cluster_and_the_bill_follows_the_fee_rules(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    gpus = [fleet.add(gpu_hardware()) for _ in range(3)]
    fleet.fund(1_000_000 * IO)
    before = fleet.balance(fleet.buyer_id)
    client = fleet.buyer_client()
    quote = client.quote(DeployRequest(name="train", hardware="h100-sxm-80gb", quantity=2))
    assert quote.devices == 2 and quote.hours == 1
    assert quote.explain["model"] == 3
    cluster = client.deploy(quote.id)
    assert cluster.status == "deployment_requested"
    assert len(cluster.nodes) == 2 and cluster.ray_token
    hired = [n.device_id for n in cluster.nodes]
    assert set(hired) <= set(gpus)

    # The head learns its assignment from its heartbeat; the worker waits for the head.
    assignments = fleet.heartbeat_all()
    head = next(n.device_id for n in cluster.nodes if n.role == "head")
    worker = next(n.device_id for n in cluster.nodes if n.role == "worker")
    assert assignments[head].role == "head" and assignments[head].token == cluster.ray_token
    assert assignments[worker].head_address is None
    idle = (set(gpus) - set(hired)).pop()
    assert assignments[idle] is None

    # The head reports its ports as it starts: the worker may start alongside it.
    fleet.agent(head).report_ray_node(
        head,
        RayNodeReport(
            cluster_id=cluster.id, generation=0, state="starting", node_ip="10.0.0.1", gcs_port=1
        ),
    )
    assert fleet.agent(worker).heartbeat(worker).assignment.head_address == "10.0.0.1:1"
    assert client.get_cluster(cluster.id).ray_address is None  # not running yet

    fleet.bring_up(cluster.id)
    view = client.get_cluster(cluster.id)
    assert view.status == "running"
    assert view.ray_address == f"10.0.0.1:{40000 + len(head)}"
    assert view.dashboard_url and view.ray_client_address
    assert fleet.agent(worker).heartbeat(worker).assignment.head_address == view.ray_address

    clock.advance(1800)  # half of the hour, then the buyer stops
    fleet.heartbeat_all()
    done = client.terminate_cluster(cluster.id)
    assert done.status == "terminated" and done.ray_token is None
    assert all(a is None for a in fleet.heartbeat_all().values())

    price = _price(fleet, cluster.id)
    g = price * 1_800_000 // clusters.MS_PER_HOUR
    charged = 2 * g
    assert fleet.balance(fleet.buyer_id) == before - charged - fee(charged, "IO")
    for d in hired:
        assert fleet.balance(d) == g - fee(g, "IO")
    fees = sum(t.amount for t in transfers(fleet.net, "fee"))
    assert fees == 2 * fee(g, "IO") + fee(charged, "IO")
    assert all(c.ok for c in fleet.net.state.ledger.audit())
    with fleet.net.state.devices.sessions() as db:
        assert all(db.get(Device, d).cluster_id is None for d in hired)
        assert all(db.get(Device, d).readiness == "cluster_ready" for d in hired)


def test_impossible_requests_explain_and_charge_nothing(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    fleet.add(gpu_hardware(), location="DE")
    fleet.add(gpu_hardware(), location="US", tier=1)
    fleet.add(cpu_hardware(), location="DE")
    client = fleet.buyer_client()
    with pytest.raises(NoMatchingDevices) as err:
        client.quote(
            DeployRequest(name="x", hardware="h100-sxm-80gb", quantity=2, locations=["DE"])
        )
    explain = err.value.details["explain"]
    assert explain["model"] == 2 and explain["location"] == 1
    with pytest.raises(NoMatchingDevices) as err:
        client.quote(DeployRequest(name="x", hardware="h100-sxm-80gb", quantity=2, min_tier=2))
    assert err.value.details["explain"]["tier"] == 1
    with pytest.raises(InvalidRequest) as bad:
        client.quote(DeployRequest(name="x", hardware="no-such-gpu"))
    assert bad.value.details["hardware"] == "no-such-gpu"
    key = client.create_api_key().key
    for body in ({"quantity": 0}, {"duration": 0}, {"duration_unit": "minutes"}):
        raw = fleet.net.http.post(
            "/v1/quotes",
            json={"name": "x", "hardware": "cpu", **body},
            headers={"authorization": f"Bearer {key}"},
        )
        assert raw.status_code == 422 and raw.json()["code"] == "invalid_request"
        assert raw.json()["details"]["errors"][0]["loc"][-1] == next(iter(body))

    # Not enough money: nothing is reserved, nothing is charged.
    fleet.fund(1)
    quote = client.quote(DeployRequest(name="x", hardware="h100-sxm-80gb", quantity=2))
    with pytest.raises(InsufficientFunds):
        client.deploy(quote.id)
    with fleet.net.state.devices.sessions() as db:
        assert db.scalars(select(Device).where(Device.cluster_id.is_not(None))).first() is None
    assert fleet.balance(fleet.buyer_id) == 1

    fleet.fund(10_000 * IO)
    clock.advance(fleet.net.settings.quote_ttl_s + 1)
    with pytest.raises(QuoteExpired):
        client.deploy(quote.id)
    with pytest.raises(NoMatchingDevices):  # silent for 5 minutes: none is live
        client.quote(DeployRequest(name="x", hardware="cpu"))
    fleet.heartbeat_all()
    quote = client.quote(DeployRequest(name="x", hardware="cpu"))
    client.deploy(quote.id)
    with pytest.raises(QuoteUsed):
        client.deploy(quote.id)


def test_an_unsandboxed_device_is_rented_only_by_its_owner(fleet: HireableFleet) -> None:
    mine = fleet.add(cpu_hardware(), sandboxed=False)
    stranger = fleet.buyer_client()
    with pytest.raises(NoMatchingDevices) as err:
        stranger.quote(DeployRequest(name="x", hardware="cpu"))
    assert err.value.details["explain"]["available"] == 0
    view = fleet.agent(mine).get_device(mine)
    assert view.sandbox.backend == "none" and view.sandbox.reason == "--no-sandbox"
    assert [e.kind for e in view.events if e.kind == "sandbox"] == []  # new, not a change
    fleet.agent(mine).register_device(
        RegisterRequest(hardware=cpu_hardware(), location="DE", sandbox=SANDBOXED)
    )
    (change,) = [e for e in fleet.agent(mine).get_device(mine).events if e.kind == "sandbox"]
    assert change.detail == {"from": "none", "to": "bubblewrap"}
    fleet.agent(mine).register_device(
        RegisterRequest(
            hardware=cpu_hardware(), location="DE", sandbox=SandboxInfo(reason="--no-sandbox")
        )
    )

    # Its owner (here the device's own key) rents it.
    owner = fleet.agent(mine)
    fleet.net.state.ledger.grant(mine, Asset.IO, 100 * IO)
    cluster = owner.deploy(owner.quote(DeployRequest(name="own", hardware="cpu")).id)
    assert [n.device_id for n in cluster.nodes] == [mine]

    # A sandboxed device is anyone's; the stranger gets it, never the owner-only one.
    other = fleet.add(cpu_hardware())
    quote = stranger.quote(DeployRequest(name="x", hardware="cpu"))
    assert quote.devices == 1 and quote.explain["available"] == 1
    assert fleet.agent(other).get_device(other).sandbox.backend == "bubblewrap"


def test_a_head_cannot_send_its_workers_or_buyer_anywhere(fleet: HireableFleet) -> None:
    for _ in range(2):
        fleet.add(cpu_hardware())
    fleet.fund(100 * IO)
    client = fleet.buyer_client()
    cluster = client.deploy(client.quote(DeployRequest(name="x", hardware="cpu", quantity=2)).id)
    fleet.heartbeat_all()
    head = next(n.device_id for n in cluster.nodes if n.role == "head")
    worker = next(n.device_id for n in cluster.nodes if n.role == "worker")
    for target in ("169.254.169.254", "metadata.google.internal", "0.0.0.0", "224.0.0.1"):
        with pytest.raises(BadNodeAddress) as refused:
            fleet.agent(head).report_ray_node(
                head,
                RayNodeReport(
                    cluster_id=cluster.id, generation=0, state="up", node_ip=target, gcs_port=1
                ),
            )
        assert refused.value.details["node_ip"] == target
    assert fleet.agent(worker).heartbeat(worker).assignment.head_address is None
    assert client.get_cluster(cluster.id).status == "deployment_requested"


def test_api_keys_and_ownership(fleet: HireableFleet) -> None:
    fleet.add(cpu_hardware())
    fleet.fund(100 * IO)
    key = fleet.buyer_client().create_api_key("ci").key
    assert key and key.startswith("ig_")
    with_key = Client("http://testserver", api_key=key, http=fleet.net.http)
    quote = with_key.quote(DeployRequest(name="k", hardware="cpu"))
    cluster = with_key.deploy(quote.id)
    assert with_key.get_cluster(cluster.id).owner == fleet.buyer_id
    bad = Client("http://testserver", api_key="ig_nope_nope", http=fleet.net.http)
    with pytest.raises(InvalidApiKey):
        bad.list_clusters()
    stranger = fleet.net.client(Keypair())
    with pytest.raises(UnknownCluster):
        stranger.get_cluster(cluster.id)
    with pytest.raises(UnknownCluster):
        stranger.terminate_cluster(cluster.id)


def test_a_revoked_api_key_is_refused_at_once(fleet: HireableFleet) -> None:
    owner = fleet.buyer_client()
    created = owner.create_api_key("leaked")
    other = owner.create_api_key("kept")
    leaked = Client("http://testserver", api_key=created.key, http=fleet.net.http)
    assert leaked.list_clusters().items == []  # it works, and the server has looked it up
    with pytest.raises(UnknownApiKey):  # only its owner may revoke it
        fleet.net.client(Keypair()).revoke_api_key(created.id)
    revoked = owner.revoke_api_key(created.id)
    assert revoked.revoked_at is not None and revoked.key is None
    with pytest.raises(InvalidApiKey):
        leaked.list_clusters()
    assert owner.revoke_api_key(created.id).revoked_at == revoked.revoked_at  # once
    keys = {k.id: k for k in owner.api_keys().items}
    assert keys[created.id].revoked_at and keys[other.id].revoked_at is None
    assert all(k.key is None for k in keys.values())  # never shown again
    kept = Client("http://testserver", api_key=other.key, http=fleet.net.http)
    assert kept.list_clusters().items == []


def _kill(fleet: HireableFleet, clock: FakeClock, dead: str, seconds: float) -> float:
    """Let ``dead`` fall silent while the others heartbeat; returns its last heartbeat."""
    last = clock()
    step = fleet.net.settings.heartbeat_interval_s
    waited = 0.0
    while waited < seconds:
        clock.advance(step)
        waited += step
        _heartbeat_except(fleet, dead)
    return last


def test_a_dead_worker_is_replaced_and_not_paid_for_its_downtime(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    devices = [fleet.add(gpu_hardware()) for _ in range(3)]
    fleet.fund(1_000_000 * IO)
    cluster_id, _ = deploy(fleet, hardware="h100-sxm-80gb", quantity=2)
    fleet.heartbeat_all()
    fleet.bring_up(cluster_id)
    client = fleet.buyer_client()
    view = client.get_cluster(cluster_id)
    worker = next(n.device_id for n in view.nodes if n.role == "worker")
    spare = (set(devices) - {n.device_id for n in view.nodes}).pop()

    clock.advance(600)
    fleet.heartbeat_all()
    last = _kill(fleet, clock, worker, 40)
    fleet.net.state.clusters.tick()
    view = client.get_cluster(cluster_id)
    dead = next(n for n in view.nodes if n.device_id == worker)
    assert dead.left_reason == "device down" and dead.left_at == pytest.approx(last, abs=0.01)
    new = next(n for n in view.nodes if n.device_id == spare)
    assert new.role == "worker" and new.left_at is None
    assignment = fleet.agent(spare).heartbeat(spare).assignment
    assert assignment.cluster_id == cluster_id and assignment.head_address == view.ray_address
    fleet.bring_up(cluster_id)
    joined = client.get_cluster(cluster_id)
    assert joined.status == "running"

    clock.advance(300)
    fleet.heartbeat_all()
    client.terminate_cluster(cluster_id)
    price = _price(fleet, cluster_id)
    g_dead = clusters.gross(price, round(view.running_at * 1000), round(last * 1000))
    assert fleet.balance(worker) == g_dead - fee(g_dead, "IO")
    node_new = next(n for n in joined.nodes if n.device_id == spare)
    g_new = clusters.gross(price, round(node_new.joined_at * 1000), round(clock() * 1000))
    assert fleet.balance(spare) == g_new - fee(g_new, "IO")
    assert all(c.ok for c in fleet.net.state.ledger.audit())


def test_without_a_replacement_the_slot_is_refunded_pro_rata(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    [fleet.add(gpu_hardware()) for _ in range(2)]
    fleet.fund(1_000_000 * IO)
    cluster_id, _ = deploy(fleet, hardware="h100-sxm-80gb", quantity=2, duration=2)
    fleet.heartbeat_all()
    fleet.bring_up(cluster_id)
    view = fleet.buyer_client().get_cluster(cluster_id)
    worker = next(n.device_id for n in view.nodes if n.role == "worker")
    last = _kill(fleet, clock, worker, 40)
    fleet.net.state.clusters.tick()
    after = fleet.buyer_client().get_cluster(cluster_id)
    assert after.status == "running" and after.quantity == 1
    refunds = transfers(fleet.net, "refund")
    assert len(refunds) == 1
    assert refunds[0].amount == clusters.slot_refund(
        _price(fleet, cluster_id), round(last * 1000), round(view.expires_at * 1000)
    )


def test_a_replacement_that_never_joins_is_given_up_on(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    """The spare's agent heartbeats but never starts its node: after the deploy timeout
    it is let go unpaid and the next spare is hired (the slot refund when none is left
    is the lost-device path, tested above)."""
    devices = [fleet.add(gpu_hardware()) for _ in range(4)]
    fleet.fund(1_000_000 * IO)
    cluster_id, _ = deploy(fleet, hardware="h100-sxm-80gb", quantity=2)
    fleet.heartbeat_all()
    fleet.bring_up(cluster_id)
    client = fleet.buyer_client()
    view = client.get_cluster(cluster_id)
    worker = next(n.device_id for n in view.nodes if n.role == "worker")
    _kill(fleet, clock, worker, 40)
    fleet.net.state.clusters.tick()
    (stuck,) = [
        n.device_id
        for n in client.get_cluster(cluster_id).nodes
        if n.left_at is None and n.role == "worker"
    ]
    assert stuck in devices and stuck != worker

    timeout = fleet.net.settings.deploy_timeout_s
    clock.advance(timeout / 2)
    _heartbeat_except(fleet, worker)
    fleet.net.state.clusters.tick()
    assert (
        next(n for n in client.get_cluster(cluster_id).nodes if n.device_id == stuck).left_at
        is None
    )
    clock.advance(timeout / 2 + 1)
    _heartbeat_except(fleet, worker)
    fleet.net.state.clusters.tick()
    after = client.get_cluster(cluster_id)
    gone = next(n for n in after.nodes if n.device_id == stuck)
    assert gone.left_reason == "did not join in time" and gone.joined_at is None
    (second,) = {n.device_id for n in after.nodes if n.left_at is None and n.role == "worker"}
    assert second not in (stuck, worker) and after.status == "running"
    fleet.bring_up(cluster_id)
    assert client.get_cluster(cluster_id).status == "running"
    assert fleet.balance(stuck) == 0  # never served: never paid
    assert all(c.ok for c in fleet.net.state.ledger.audit())


def _heartbeat_except(fleet: HireableFleet, dead: str) -> None:
    for d in fleet.keys:
        if d != dead:
            fleet.agent(d).heartbeat(d)
    reap_and_flush(fleet.net.state)


def _price(fleet: HireableFleet, cluster_id: str, asset: str = "IO") -> int:
    """The cluster's price per device-hour, in units (fixed by its quote)."""
    return units(fleet.buyer_client().get_cluster(cluster_id).price_per_device_hour, asset)


def test_a_dead_head_reforms_the_cluster_under_a_new_generation(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    [fleet.add(cpu_hardware()) for _ in range(3)]
    fleet.fund(1_000 * IO)
    cluster_id, _ = deploy(fleet, hardware="cpu", quantity=2)
    fleet.heartbeat_all()
    fleet.bring_up(cluster_id)
    view = fleet.buyer_client().get_cluster(cluster_id)
    head = next(n.device_id for n in view.nodes if n.role == "head")
    _kill(fleet, clock, head, 40)
    fleet.net.state.clusters.tick()
    after = fleet.buyer_client().get_cluster(cluster_id)
    assert after.generation == 1 and after.status == "deploying"
    assert after.ray_address is None
    live = [n for n in after.nodes if n.left_at is None]
    assert len(live) == 2 and {n.role for n in live} == {"head", "worker"}
    assert all(n.generation == 1 for n in live)
    fleet.bring_up(cluster_id)
    assert fleet.buyer_client().get_cluster(cluster_id).status == "running"


def test_expiry_completes_and_hourly_settlement_pays_exactly(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    device = fleet.add(cpu_hardware())
    fleet.fund(1_000 * IO, Asset.USDC)
    before = fleet.balance(fleet.buyer_id, "USDC")
    cluster_id, _ = deploy(fleet, hardware="cpu", duration=2, currency="USDC")
    fleet.heartbeat_all()
    fleet.bring_up(cluster_id)
    price = _price(fleet, cluster_id, "USDC")
    for _hour in range(2):
        for _ in range(6):
            clock.advance(600)
            fleet.heartbeat_all()
            reap_and_flush(fleet.net.state)
        fleet.net.state.clusters.settle()
        assert fleet.balance(device, "USDC") == (_hour + 1) * (price - fee(price, "USDC"))
    fleet.net.state.clusters.tick()
    view = fleet.buyer_client().get_cluster(cluster_id)
    assert view.status == "completed"
    charged = 2 * price
    assert fleet.balance(fleet.buyer_id, "USDC") == before - charged - fee(charged, "USDC")
    with pytest.raises(ClusterNotActive):
        fleet.buyer_client().extend_cluster(cluster_id, ExtendRequest(duration=1))


def test_extend_pays_again_and_moves_the_end(fleet: HireableFleet, clock: FakeClock) -> None:
    fleet.add(cpu_hardware())
    fleet.fund(1_000 * IO)
    cluster_id, _ = deploy(fleet, hardware="cpu")
    fleet.heartbeat_all()
    fleet.bring_up(cluster_id)
    view = fleet.buyer_client().get_cluster(cluster_id)
    longer = fleet.buyer_client().extend_cluster(
        cluster_id, ExtendRequest(duration=1, duration_unit="days")
    )
    assert longer.hours == 25
    assert longer.expires_at == pytest.approx(view.expires_at + 24 * 3600)
    assert len(transfers(fleet.net, "escrow")) == 2


def test_racing_deploys_never_double_book_and_losers_pay_nothing(
    fleet: HireableFleet, clock: FakeClock
) -> None:
    devices = [fleet.add(cpu_hardware()) for _ in range(10)]
    buyers = [Keypair() for _ in range(50)]
    for kp in buyers:
        fleet.net.state.ledger.grant(str(kp.pubkey()), Asset.IO, 100 * IO)
    quotes = [
        fleet.net.client(kp).quote(DeployRequest(name="race", hardware="cpu", quantity=2))
        for kp in buyers
    ]
    start = threading.Barrier(len(buyers))

    def attempt(i: int) -> str | None:
        client = fleet.net.client(buyers[i])
        start.wait()
        try:
            return client.deploy(quotes[i].id).id
        except NoMatchingDevices:
            return None

    with ThreadPoolExecutor(len(buyers)) as pool:
        results = list(pool.map(attempt, range(len(buyers))))
    winners = [r for r in results if r]
    assert len(winners) == 5  # 10 devices, 2 each
    with fleet.net.state.devices.sessions() as db:
        nodes = list(db.scalars(select(ClusterNode)))
        held = [d.cluster_id for d in db.scalars(select(Device)) if d.id in devices]
    assert len({n.device_id for n in nodes}) == len(nodes) == 10
    assert sorted(held) == sorted(w for w in winners for _ in range(2))
    for i, kp in enumerate(buyers):
        owner = str(kp.pubkey())
        if results[i] is None:
            assert fleet.balance(owner) == 100 * IO
        else:
            assert fleet.balance(owner) < 100 * IO
    assert all(c.ok for c in fleet.net.state.ledger.audit())
