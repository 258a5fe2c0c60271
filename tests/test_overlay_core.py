"""The overlay's pure rules (core/overlay.py): addresses, hellos, relay routing, paths."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.keypair import Keypair

from idlegrid.core import overlay as core
from idlegrid.core.overlay import NatKind, PathState, PathView, PeerPath, plan_path

NETWORK = "idlegrid:test"


def test_cluster_networks_are_24s_inside_the_overlay_space() -> None:
    for i in range(200):
        net = core.cluster_network(f"{i:032x}")
        assert net.prefixlen == 24 and net.subnet_of(core.OVERLAY_SPACE)
    assert core.cluster_network("a" * 32) == core.cluster_network("a" * 32)


@given(st.lists(st.text(min_size=1, max_size=20), unique=True, max_size=60))
def test_node_addresses_are_distinct_hosts_of_the_network(names: list[str]) -> None:
    net = core.cluster_network("c" * 32)
    taken: set[str] = set()
    for name in names:
        address = core.node_address(net, taken, name)
        ip = ipaddress.IPv4Address(address)
        assert ip in net and ip not in (net.network_address, net.broadcast_address)
        assert address not in taken
        taken.add(address)


def test_a_full_network_refuses_one_more() -> None:
    net = ipaddress.IPv4Network("100.96.0.0/30")  # two hosts
    taken = {core.node_address(net, set(), "a")}
    taken.add(core.node_address(net, taken, "b"))
    with pytest.raises(core.OverlayError):
        core.node_address(net, taken, "c")


def _hello(
    authority: Keypair, member: Keypair, now: float, network: str = NETWORK, expires: int = 0
) -> bytes:
    key = base64.b64encode(os.urandom(32)).decode()
    expires = expires or int(now) + 3600
    message = core.ticket_message(network, "c1", str(member.pubkey()), key, "100.96.0.2", expires)
    ticket = base64.b64encode(bytes(authority.sign_message(message))).decode()
    hello = core.Hello(
        network, "c1", str(member.pubkey()), key, "100.96.0.2", expires, ticket, int(now * 1000)
    )
    signature = bytes(member.sign_message(core.hello_message(hello.body())))
    return core.encode_hello(hello, signature)


def test_a_hello_is_checked_end_to_end() -> None:
    authority, member, now = Keypair(), Keypair(), 1_000_000.0
    packet = _hello(authority, member, now)
    hello = core.decode_hello(packet, network=NETWORK, authority=str(authority.pubkey()), now=now)
    assert hello.signer == str(member.pubkey()) and hello.cluster_id == "c1"
    refused = {
        "another authority": dict(authority=str(Keypair().pubkey())),
        "another network": dict(network="idlegrid:other"),
        "stale": dict(now=now + core.HELLO_MAX_AGE_S + 1),
    }
    for changes in refused.values():
        args = dict(network=NETWORK, authority=str(authority.pubkey()), now=now) | changes
        with pytest.raises(core.OverlayError):
            core.decode_hello(packet, **args)  # type: ignore[arg-type]
    tampered = bytearray(packet)
    tampered[-70] ^= 1  # inside the body
    with pytest.raises(core.OverlayError):
        core.decode_hello(
            bytes(tampered), network=NETWORK, authority=str(authority.pubkey()), now=now
        )
    expired = _hello(authority, member, now, expires=int(now) - 1)
    with pytest.raises(core.OverlayError, match="expired"):
        core.decode_hello(expired, network=NETWORK, authority=str(authority.pubkey()), now=now)


@pytest.mark.parametrize(
    "times",
    ['"expires":1e400,"sent_ms":1', '"expires":1,"sent_ms":-1', '"expires":1e2,"sent_ms":1'],
)
def test_times_that_are_not_int64_unix_times_are_refused(times: str) -> None:
    """Non-finite, negative or float times: an OverlayError, never another exception."""
    body = ('{"address":"a","cluster":"c",' + times + ',"key":"k","network":"n",'
            '"signer":"s","ticket":"t"}').encode()  # fmt: skip
    packet = core.HELLO_MAGIC + bytes([1]) + len(body).to_bytes(2, "big") + body + bytes(64)
    with pytest.raises(core.OverlayError):
        core.decode_hello(packet, network="n", authority="1" * 32, now=0)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_hello_or_an_overlay_error(data: bytes) -> None:
    with contextlib.suppress(core.OverlayError):
        core.decode_hello(core.HELLO_MAGIC + data, network=NETWORK, authority="1" * 32, now=0)


def test_no_hello_is_a_wireguard_message() -> None:
    packet = _hello(Keypair(), Keypair(), 1e6)
    assert core.wg_type(packet) is None and core.is_hello(packet)


def _initiation(responder_public: bytes, sender: int) -> bytes:
    body = bytes([1, 0, 0, 0]) + sender.to_bytes(4, "little") + os.urandom(32 + 48 + 28)
    mac1 = hashlib.blake2s(body, key=core.mac1_key(responder_public), digest_size=16).digest()
    return body + mac1 + bytes(16)


def test_an_initiation_names_its_responder_by_mac1_and_data_by_index() -> None:
    a, b = os.urandom(32), os.urandom(32)
    packet = _initiation(b, 0xDEADBEEF)
    assert core.wg_type(packet) == core.WG_INITIATION
    assert core.mac1_matches(packet, core.mac1_key(b))
    assert not core.mac1_matches(packet, core.mac1_key(a))
    assert core.wg_sender_index(packet) == 0xDEADBEEF
    data = bytes([4, 0, 0, 0]) + (7).to_bytes(4, "little") + bytes(8) + bytes(32)
    assert core.wg_type(data) == core.WG_DATA and core.wg_receiver_index(data) == 7
    response = bytes([2, 0, 0, 0]) + (1).to_bytes(4, "little") + (9).to_bytes(4, "little")
    response += bytes(92 - len(response))
    assert core.wg_type(response) == core.WG_RESPONSE and core.wg_receiver_index(response) == 9
    assert core.wg_type(packet[:-1]) is None and core.wg_type(b"\x05" + bytes(40)) is None


def test_nat_kind_from_two_sightings() -> None:
    assert core.nat_kind(None, "1.2.3.4:5") == NatKind.UNKNOWN
    assert core.nat_kind("1.2.3.4:5", "1.2.3.4:5") == NatKind.EASY
    assert core.nat_kind("1.2.3.4:5", "1.2.3.4:6") == NatKind.HARD


# -- paths: an event table over plan_path ----------------------------------------------------

RELAY, PEER = "203.0.113.9:3478", "203.0.113.20:40000"


def view(**kw: object) -> PathView:
    base: dict[str, object] = dict(
        mine=NatKind.EASY,
        theirs=NatKind.EASY,
        peer_endpoint=PEER,
        wg_endpoint=RELAY,
        last_rx=None,
        relay=RELAY,
    )
    return PathView(**(base | kw))  # type: ignore[arg-type]


def test_two_easy_nats_try_direct_then_keep_it_when_it_delivers() -> None:
    p, endpoint = plan_path(PeerPath(), view(), 100.0)
    assert p.state == PathState.TRYING and endpoint == PEER
    # While trying, WireGuard roams back to the relay: the direct path is asserted again.
    p, endpoint = plan_path(p, view(wg_endpoint=RELAY), 101.0)
    assert p.state == PathState.TRYING and endpoint == PEER
    p, endpoint = plan_path(p, view(wg_endpoint=PEER), 100.0 + core.TRY_S)
    assert p.state == PathState.SETTLING and endpoint is None
    settled = 100.0 + core.TRY_S + core.SETTLE_S
    p, endpoint = plan_path(p, view(wg_endpoint=PEER, last_rx=settled), settled)
    assert p.state == PathState.DIRECT and endpoint is None
    # It stays while packets come on it.
    p, endpoint = plan_path(p, view(wg_endpoint=PEER, last_rx=settled + 5), settled + 6)
    assert p.state == PathState.DIRECT and endpoint is None


def test_a_direct_try_that_roams_back_to_the_relay_fails_and_backs_off() -> None:
    p = PeerPath(PathState.SETTLING, 100.0, PEER)
    p, endpoint = plan_path(p, view(wg_endpoint=RELAY, last_rx=101.0), 101.0)
    assert p.state == PathState.RELAYED and endpoint == RELAY
    assert p.failures == 1 and p.retry_at == 101.0 + core.RETRY_S[1]
    p2, endpoint = plan_path(p, view(), 102.0)
    assert p2 == p and endpoint is None  # waits for its retry time


def test_a_silent_direct_peer_goes_back_to_the_relay_and_retries_soon() -> None:
    p = PeerPath(PathState.DIRECT, 100.0, PEER)
    p, endpoint = plan_path(p, view(wg_endpoint=PEER, last_rx=100.0), 100.0 + core.STALE_S + 1)
    assert p.state == PathState.RELAYED and endpoint == RELAY
    assert p.retry_at - (100.0 + core.STALE_S + 1) == core.RETRY_S[0]


def test_a_peer_that_moved_is_tried_at_its_new_endpoint() -> None:
    p = PeerPath(PathState.DIRECT, 100.0, PEER)
    moved = "203.0.113.21:40000"
    p, endpoint = plan_path(p, view(peer_endpoint=moved, wg_endpoint=PEER, last_rx=104), 105)
    assert p.state == PathState.RELAYED and endpoint == RELAY
    p, endpoint = plan_path(p, view(peer_endpoint=moved), 105 + core.RETRY_S[0])
    assert p.state == PathState.TRYING and endpoint == moved


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [(NatKind.HARD, NatKind.EASY), (NatKind.EASY, NatKind.HARD), (NatKind.UNKNOWN, NatKind.EASY)],
)
def test_a_hard_or_unknown_nat_stays_relayed(mine: NatKind, theirs: NatKind) -> None:
    p, endpoint = plan_path(PeerPath(), view(mine=mine, theirs=theirs), 100.0)
    assert p.state == PathState.RELAYED and endpoint is None
    # If WireGuard was left pointing elsewhere, it is put back on the relay.
    p, endpoint = plan_path(p, view(mine=mine, theirs=theirs, wg_endpoint=PEER), 101.0)
    assert p.state == PathState.RELAYED and endpoint == RELAY


@given(
    st.lists(
        st.tuples(
            st.sampled_from([RELAY, PEER, None]),
            st.booleans(),
            st.sampled_from([PEER, "203.0.113.21:1", None]),
            st.floats(0.1, 20.0),
        ),
        max_size=40,
    )
)
def test_paths_never_point_wireguard_anywhere_but_the_relay_or_the_peer(
    steps: list[tuple[str | None, bool, str | None, float]],
) -> None:
    p, now = PeerPath(), 100.0
    for wg_endpoint, heard, peer_endpoint, dt in steps:
        now += dt
        v = view(
            wg_endpoint=wg_endpoint, last_rx=now if heard else None, peer_endpoint=peer_endpoint
        )
        p, endpoint = plan_path(p, v, now)
        assert endpoint in (None, RELAY, peer_endpoint)
        if p.state != PathState.RELAYED:
            assert p.endpoint == peer_endpoint


def test_the_hello_gate_limits_verifies_per_source_and_in_all() -> None:
    """A flood of well-formed hellos (each would cost Ed25519 verifies) is cut at its
    source's bucket, and many sources at the service's; a member elsewhere gets in."""
    authority, now = Keypair(), 1_000_000.0
    gate = core.HelloGate(
        NETWORK, str(authority.pubkey()), source_rate=1, source_burst=3, total_rate=1, total_burst=5
    )
    forged = _hello(Keypair(), Keypair(), now)  # a stranger's authority: refused if verified
    answers = [gate.admit(forged, "198.51.100.66", now) for _ in range(5)]
    assert answers == ["hello_refused"] * 3 + ["hello_rate_limited"] * 2
    member = _hello(authority, Keypair(), now)
    assert isinstance(gate.admit(member, "203.0.113.7", now), core.Hello)  # its own bucket
    # Many sources: the service's bucket (5, one taken per verify) runs out.
    spread = [gate.admit(forged, f"192.0.2.{i}", now) for i in range(3)]
    assert spread == ["hello_refused", "hello_overloaded", "hello_overloaded"]
    later = now + 2  # both buckets refill
    assert gate.admit(forged, "198.51.100.66", later) == "hello_refused"
    # An IPv6 host's whole /64 is one source.
    six = core.HelloGate(NETWORK, str(authority.pubkey()), source_rate=1, source_burst=1)
    assert six.admit(forged, "2001:db8::1", now) == "hello_refused"
    assert six.admit(forged, "2001:db8::ffff", now) == "hello_rate_limited"


def test_the_hello_gate_refuses_replays_per_slot_and_forgets_stale_slots() -> None:
    authority, member, now = Keypair(), Keypair(), 1_000_000.0
    gate = core.HelloGate(NETWORK, str(authority.pubkey()))
    packet = _hello(authority, member, now)
    assert isinstance(gate.admit(packet, "203.0.113.7", now, slot="0"), core.Hello)
    assert gate.admit(packet, "203.0.113.8", now, slot="0") == "hello_replayed"
    assert isinstance(gate.admit(packet, "203.0.113.7", now, slot="1"), core.Hello)
    assert len(gate) == 2
    gate.sweep(now + core.HELLO_MAX_AGE_S)
    assert len(gate) == 2  # still fresh enough to be replayed: remembered
    gate.sweep(now + core.HELLO_MAX_AGE_S + 2)
    assert len(gate) == 0


def test_a_member_uses_the_nearest_live_relay_and_keeps_it_against_small_gains() -> None:
    relays = ["198.51.100.1:3478", "198.51.100.2:3478", "198.51.100.3:3478"]
    near, far, mid = relays[1], relays[0], relays[2]
    assert core.choose_relay(relays, {}, None) == far  # none answers yet: the first listed
    assert core.choose_relay([], {}, None) is None
    rtt = {far: 0.080, near: 0.010, mid: 0.040}
    assert core.choose_relay(relays, rtt, None) == near
    assert core.choose_relay(relays, rtt, far) == near  # 10 ms is well under 0.7 × 80 ms
    close = {far: 0.080, near: 0.030, mid: 0.035}
    assert core.choose_relay(relays, close, mid) == mid  # 30 ms vs 35 ms: not worth a move
    assert core.choose_relay(relays, {far: 0.080}, near) == far  # the current one went quiet
    gone = "203.0.113.9:3478"  # no longer listed by the control plane
    assert core.choose_relay(relays, {gone: 0.001, mid: 0.050}, gone) == mid
    assert core.choose_relay(relays, {far: 0.02, near: 0.02}, None) == far  # a tie: list order
