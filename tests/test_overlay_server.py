"""The control plane's side of the overlay, in-process: places, tickets, peers, sightings.

Agents are played by the test through the SDK (as in test_clusters.py); the
rendezvous is fed hellos directly. tests/test_overlay_e2e.py runs the real thing
across NATs.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Iterator

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from test_clusters import IO, HireableFleet

from idlegrid.core import overlay as core
from idlegrid.errors import BadNodeAddress, InvalidRequest, UnknownCluster
from idlegrid.protocol import Assignment, DeployRequest, OverlayAssignment, RayNodeReport
from idlegrid.server.services.overlay import MAX_BUYER_PEERS
from idlegrid.server.settings import ServerSettings
from tests.conftest import FakeClock, Network, cpu_hardware


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def fleet(settings: ServerSettings, clock: FakeClock) -> Iterator[HireableFleet]:
    on = settings.model_copy(update={"overlay": True, "overlay_host": "203.0.113.2"})
    net = Network(on, clock)
    try:
        yield HireableFleet(net)
    finally:
        net.close()


def overlay_cluster(fleet: HireableFleet, quantity: int = 2) -> tuple[str, str, list[str]]:
    for _ in range(quantity):
        fleet.add(cpu_hardware())
    fleet.fund(100 * IO)
    client = fleet.buyer_client()
    view = client.deploy(
        client.quote(DeployRequest(name="x", hardware="cpu", quantity=quantity)).id
    )
    head = next(n.device_id for n in view.nodes if n.role == "head")
    workers = [n.device_id for n in view.nodes if n.role == "worker"]
    return view.id, head, workers


def place(fleet: HireableFleet, device_id: str) -> OverlayAssignment:
    a = fleet.agent(device_id).heartbeat(device_id).assignment
    assert a is not None and a.overlay is not None
    return a.overlay


def report(
    fleet: HireableFleet, cluster_id: str, device_id: str, key: str | None, **kw: object
) -> Assignment | None:
    rep = RayNodeReport(
        cluster_id=cluster_id,
        generation=0,
        state=kw.pop("state", "starting"),  # type: ignore[arg-type]
        overlay_key=key,
        **kw,  # type: ignore[arg-type]
    )
    return fleet.agent(device_id).report_ray_node(device_id, rep)


def ticket_holds(o: OverlayAssignment, cluster_id: str, signer: str) -> bool:
    assert o.key is not None and o.ticket is not None and o.expires is not None
    message = core.ticket_message(o.network, cluster_id, signer, o.key, o.address, o.expires)
    signature = Signature(base64.b64decode(o.ticket))
    return bool(signature.verify(Pubkey.from_string(o.authority), message))


def test_each_node_gets_its_place_and_a_ticket_once_its_key_is_known(
    fleet: HireableFleet,
) -> None:
    cluster_id, head, (worker,) = overlay_cluster(fleet)
    network = core.cluster_network(cluster_id)
    first = place(fleet, head)
    assert ipaddress.IPv4Address(first.address) in network
    assert first.ticket is None and first.peers == []  # no key reported yet
    assert place(fleet, worker).address != first.address
    key = wg_key()
    after = report(fleet, cluster_id, head, key)
    assert after is not None and after.overlay is not None
    assert after.overlay.key == key and ticket_holds(after.overlay, cluster_id, head)
    # The worker now has the head as a peer; the head has no peer until the worker reports.
    (peer,) = place(fleet, worker).peers
    assert (peer.name, peer.key, peer.address) == (head, key, first.address)
    assert place(fleet, head).peers == []
    # A ticket for one network or key proves nothing for another.
    forged = after.overlay.model_copy(update={"key": wg_key()})
    assert not ticket_holds(forged, cluster_id, head)
    # The same ticket on every refresh until half its life is gone, then a new one.
    lifetime = fleet.net.settings.overlay_ticket_s
    fleet.net.clock.advance(lifetime // 2 - 10)
    assert (place(fleet, head).ticket, place(fleet, head).expires) == (
        after.overlay.ticket,
        after.overlay.expires,
    )
    fleet.net.clock.advance(20)
    renewed = place(fleet, head)
    assert renewed.expires is not None and after.overlay.expires is not None
    assert renewed.expires > after.overlay.expires and ticket_holds(renewed, cluster_id, head)


def test_the_head_must_name_its_overlay_address(fleet: HireableFleet) -> None:
    cluster_id, head, (worker,) = overlay_cluster(fleet)
    own = place(fleet, head).address
    for wrong in ("10.0.0.1", "100.96.0.1" if own != "100.96.0.1" else "100.96.0.2"):
        with pytest.raises(BadNodeAddress):
            report(fleet, cluster_id, head, wg_key(), state="up", node_ip=wrong, gcs_port=40001)
    report(fleet, cluster_id, head, wg_key(), state="up", node_ip=own, gcs_port=40001)
    a = fleet.agent(worker).heartbeat(worker).assignment
    assert a is not None and a.head_address == f"{own}:40001"


def test_a_key_that_is_not_a_wireguard_key_is_refused(fleet: HireableFleet) -> None:
    cluster_id, head, _ = overlay_cluster(fleet)
    with pytest.raises(InvalidRequest):
        report(fleet, cluster_id, head, "A" * 43 + "!")


def test_peers_carry_what_the_rendezvous_saw(fleet: HireableFleet) -> None:
    cluster_id, head, (worker,) = overlay_cluster(fleet)
    key = wg_key()
    mine = report(fleet, cluster_id, head, key)
    assert mine is not None and mine.overlay is not None
    o = mine.overlay
    assert o.ticket is not None and o.expires is not None
    now = fleet.net.clock()
    rendezvous = fleet.net.state.overlay.rendezvous
    signer = fleet.keys[head]
    for port_index, source in ((0, ("198.51.100.7", 41000)), (1, ("198.51.100.7", 41000))):
        hello = core.Hello(
            o.network, cluster_id, head, key, o.address, o.expires, o.ticket, int(now * 1000)
        )
        signature = bytes(signer.sign_message(core.hello_message(hello.body())))
        assert rendezvous.datagram_received(core.encode_hello(hello, signature), source, port_index)
    (peer,) = place(fleet, worker).peers
    assert (peer.endpoint, peer.nat) == ("198.51.100.7:41000", "easy")
    assert place(fleet, head).nat == "easy"
    # A hello signed by someone else is not taken (the worker cannot move the head).
    hello = core.Hello(
        o.network, cluster_id, head, key, o.address, o.expires, o.ticket, int(now * 1000) + 1
    )
    forged = bytes(fleet.keys[worker].sign_message(core.hello_message(hello.body())))
    packet = core.encode_hello(hello, forged)
    assert not rendezvous.datagram_received(packet, ("198.51.100.8", 1), 0)
    assert place(fleet, worker).peers[0].endpoint == "198.51.100.7:41000"
    # The cluster's end takes its members' sightings with it.
    fleet.buyer_client().terminate_cluster(cluster_id)
    assert rendezvous.sighting(cluster_id, key) == (None, core.NatKind.UNKNOWN, None)


def test_the_buyer_joins_its_own_cluster_and_no_other(fleet: HireableFleet) -> None:
    cluster_id, head, (worker,) = overlay_cluster(fleet)
    buyer = fleet.buyer_client()
    key = wg_key()
    mine = buyer.join_overlay(cluster_id, key)
    assert ipaddress.IPv4Address(mine.address) in core.cluster_network(cluster_id)
    assert ticket_holds(mine, cluster_id, fleet.buyer_id)
    assert buyer.join_overlay(cluster_id, key).address == mine.address  # idempotent
    names = [p.name for p in place(fleet, head).peers]
    assert names == [f"buyer:{key[:12]}"]
    stranger = fleet.net.client(Keypair())
    with pytest.raises(UnknownCluster):
        stranger.join_overlay(cluster_id, wg_key())
    with pytest.raises(InvalidRequest):
        buyer.join_overlay(cluster_id, "not a key" + "=" * 35)
    for _ in range(MAX_BUYER_PEERS - 1):
        buyer.join_overlay(cluster_id, wg_key())
    with pytest.raises(InvalidRequest, match="at most"):
        buyer.join_overlay(cluster_id, wg_key())
    assert len(place(fleet, worker).peers) == MAX_BUYER_PEERS  # the head has no key yet


def test_without_the_overlay_nothing_changes(
    fleet: HireableFleet, settings: ServerSettings
) -> None:
    net = Network(settings, FakeClock())
    try:
        plain = HireableFleet(net)
        cluster_id, head, _ = overlay_cluster(plain)
        a = plain.agent(head).heartbeat(head).assignment
        assert a is not None and a.overlay is None
        with pytest.raises(InvalidRequest, match="not deployed on the overlay"):
            plain.buyer_client().join_overlay(cluster_id, wg_key())
        assert not net.state.overlay.enabled
    finally:
        net.close()
