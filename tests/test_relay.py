"""The overlay's relay (``idlegrid/relay.py``) and rendezvous (``server/rendezvous.py``).

Hellos carry real Ed25519 signatures (the control plane's ticket and the member's
own), WireGuard keys are real X25519 keys, and the handshake messages the relay
routes are in WireGuard's real format with a real ``mac1``, so routing by mac1 is
tested as WireGuard will exercise it. The logic is driven here without sockets;
``test_relay_sockets.py`` puts both services on real UDP sockets and runs real
WireGuard interfaces through the relay.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from solders.keypair import Keypair

from idlegrid.core import overlay
from idlegrid.relay import Relay
from idlegrid.server.rendezvous import Rendezvous

NETWORK = "testnet"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class WgKey:
    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> WgKey:
        sk = X25519PrivateKey.generate()
        return cls(
            sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
            sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        )

    @property
    def b64(self) -> str:
        return base64.b64encode(self.public).decode()


@dataclass
class Node:
    cluster: str
    signer: Keypair
    wg: WgKey
    address: str


AUTHORITY = Keypair()


def node(cluster: str = "c1", address: str = "100.96.0.2") -> Node:
    return Node(cluster, Keypair(), WgKey.generate(), address)


def hello(
    n: Node,
    now: float = T0,
    *,
    authority: Keypair = AUTHORITY,
    network: str = NETWORK,
    expires: int | None = None,
    sent_ms: int | None = None,
    signed_by: Keypair | None = None,
) -> bytes:
    expires = int(now) + 3600 if expires is None else expires
    ticket_msg = overlay.ticket_message(
        network, n.cluster, str(n.signer.pubkey()), n.wg.b64, n.address, expires
    )
    h = overlay.Hello(
        network=network,
        cluster_id=n.cluster,
        signer=str(n.signer.pubkey()),
        key=n.wg.b64,
        address=n.address,
        expires=expires,
        ticket=base64.b64encode(bytes(authority.sign_message(ticket_msg))).decode(),
        sent_ms=int(now * 1000) if sent_ms is None else sent_ms,
    )
    signature = bytes((signed_by or n.signer).sign_message(overlay.hello_message(h.body())))
    return overlay.encode_hello(h, signature)


# -- WireGuard's messages, in its real format ---------------------------------------------


def with_macs(body: bytes, responder: bytes) -> bytes:
    """Append mac1 (BLAKE2s-128 keyed by HASH("mac1----" || responder's public key),
    over the message up to it) and an empty mac2, as WireGuard does."""
    mac1 = hashlib.blake2s(body, key=overlay.mac1_key(responder), digest_size=16).digest()
    return body + mac1 + bytes(16)


def initiation(sender: int, responder: bytes) -> bytes:
    body = struct.pack("<I", 1) + struct.pack("<I", sender) + os.urandom(32 + 48 + 28)
    return with_macs(body, responder)


def response(sender: int, receiver: int, initiator: bytes) -> bytes:
    body = struct.pack("<III", 2, sender, receiver) + os.urandom(32 + 16)
    return with_macs(body, initiator)


def cookie(receiver: int) -> bytes:
    return struct.pack("<II", 3, receiver) + os.urandom(24 + 32)


def data(receiver: int, size: int = 64) -> bytes:
    return struct.pack("<IIQ", 4, receiver, 7) + os.urandom(size)


def test_the_test_messages_are_wireguards() -> None:
    k = WgKey.generate()
    for packet, kind in [
        (initiation(1, k.public), 1),
        (response(2, 1, k.public), 2),
        (cookie(1), 3),
        (data(1), 4),
    ]:
        assert overlay.wg_type(packet) == kind
    assert overlay.mac1_matches(initiation(1, k.public), overlay.mac1_key(k.public))
    assert not overlay.mac1_matches(
        initiation(1, k.public), overlay.mac1_key(WgKey.generate().public)
    )


# -- hellos ---------------------------------------------------------------------------------


def relay(clock: Clock | None = None) -> Relay:
    return Relay(NETWORK, str(AUTHORITY.pubkey()), clock=clock or Clock())


def test_a_good_hello_registers_and_gets_no_reply() -> None:
    r, n = relay(), node()
    assert r.datagram_received(hello(n), ("198.51.100.7", 51820)) == []
    member = r.members()[n.wg.b64]
    assert (member.cluster_id, member.addr, member.signer) == (
        "c1",
        ("198.51.100.7", 51820),
        str(n.signer.pubkey()),
    )
    assert member.seen_at == T0
    assert r.stats()["members"] == 1 and r.stats()["hellos"] == 1


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n: hello(n, authority=Keypair()), id="wrong-authority"),
        pytest.param(lambda n: hello(n, network="othernet"), id="wrong-network"),
        pytest.param(lambda n: hello(n, expires=int(T0) - 1), id="expired-ticket"),
        pytest.param(lambda n: hello(n, sent_ms=int((T0 - 31) * 1000)), id="stale"),
        pytest.param(lambda n: hello(n, sent_ms=int((T0 + 31) * 1000)), id="from-the-future"),
        pytest.param(lambda n: hello(n, signed_by=Keypair()), id="signer-mismatch"),
        pytest.param(lambda n: b"IGOV\x01\x00\x05hello" + bytes(64), id="bad-form"),
        pytest.param(lambda n: hello(n)[:-1], id="truncated"),
        pytest.param(lambda n: hello(n) + bytes(1200), id="oversize"),
    ],
)
def test_a_bad_hello_is_refused(make: object) -> None:
    r, n = relay(), node()
    assert callable(make)
    assert r.datagram_received(make(n), ("198.51.100.7", 51820)) == []
    assert r.members() == {}
    assert r.stats()["dropped"] == {"hello_refused": 1}


def test_a_hello_flood_from_one_address_costs_its_bucket_not_the_members() -> None:
    """Hellos a stranger forges (a ticket from another authority) are verified only
    while its address has tokens; a member's hellos from elsewhere still register."""
    clock = Clock()
    r, n = relay(clock), node()
    flood = [hello(node(), authority=Keypair()) for _ in range(200)]
    for packet in flood:
        assert r.datagram_received(packet, ("203.0.113.66", 666)) == []
    dropped = r.stats()["dropped"]
    assert dropped["hello_refused"] == overlay.HELLO_SOURCE_BURST
    assert dropped["hello_rate_limited"] == 200 - overlay.HELLO_SOURCE_BURST
    r.datagram_received(hello(n), ("198.51.100.7", 1000))
    assert r.members()[n.wg.b64].addr == ("198.51.100.7", 1000)


def test_a_replayed_or_older_hello_is_refused() -> None:
    clock = Clock()
    r, n = relay(clock), node()
    first = hello(n)
    r.datagram_received(first, ("198.51.100.7", 1000))
    clock.now += 2
    # A captured hello, replayed from elsewhere, cannot move the member.
    assert r.datagram_received(first, ("203.0.113.66", 666)) == []
    older = hello(n, sent_ms=int(T0 * 1000) - 500)
    r.datagram_received(older, ("203.0.113.66", 666))
    assert r.members()[n.wg.b64].addr == ("198.51.100.7", 1000)
    assert r.stats()["dropped"] == {"hello_replayed": 2}
    r.datagram_received(hello(n, clock.now), ("198.51.100.7", 1000))
    assert r.members()[n.wg.b64].seen_at == clock.now


def test_ping_gets_its_token_back() -> None:
    r = relay()
    assert r.datagram_received(b"IGOP" + b"x" * 8, ("192.0.2.1", 40000)) == [
        (b"IGOQ" + b"x" * 8, ("192.0.2.1", 40000))
    ]
    assert r.datagram_received(b"IGOP", ("192.0.2.1", 40000)) == [(b"IGOQ", ("192.0.2.1", 40000))]
    assert r.datagram_received(b"IGOP" + bytes(33), ("192.0.2.1", 40000)) == []


# -- forwarding -----------------------------------------------------------------------------


@dataclass
class Three:
    relay: Relay
    clock: Clock
    a: Node
    b: Node
    c: Node
    addr: dict[str, tuple[str, int]]


@pytest.fixture
def three() -> Three:
    clock = Clock()
    r = relay(clock)
    a, b, c = node(address="100.96.0.2"), node(address="100.96.0.3"), node(address="100.96.0.4")
    addr = {"a": ("198.51.100.1", 1111), "b": ("198.51.100.2", 2222), "c": ("198.51.100.3", 3333)}
    for name, n in zip("abc", (a, b, c), strict=True):
        r.datagram_received(hello(n), addr[name])
    assert r.stats()["members"] == 3
    return Three(r, clock, a, b, c, addr)


def test_an_initiation_goes_to_the_member_its_mac1_names(three: Three) -> None:
    r, addr = three.relay, three.addr
    init = initiation(0xA1, three.c.wg.public)
    assert r.datagram_received(init, addr["a"]) == [(init, addr["c"])]
    init_b = initiation(0xA2, three.b.wg.public)
    assert r.datagram_received(init_b, addr["a"]) == [(init_b, addr["b"])]
    # The responder answers: routed by the index the initiator chose.
    resp = response(0xC1, 0xA1, three.a.wg.public)
    assert r.datagram_received(resp, addr["c"]) == [(resp, addr["a"])]
    # Data both ways, and a cookie reply, by the receivers' indices.
    to_c, to_a = data(0xC1), data(0xA1, 1024)
    assert r.datagram_received(to_c, addr["a"]) == [(to_c, addr["c"])]
    assert r.datagram_received(to_a, addr["c"]) == [(to_a, addr["a"])]
    cook = cookie(0xA2)
    assert r.datagram_received(cook, addr["b"]) == [(cook, addr["a"])]
    stats = r.stats()
    assert stats["forwarded_packets"] == 6
    assert stats["forwarded_bytes"] == 148 * 2 + 92 + len(to_c) + len(to_a) + 64
    assert stats["dropped"] == {}


def test_a_member_cannot_take_over_another_members_handshake_index(three: Three) -> None:
    """b repeats the index a chose, in an initiation and in a response: the relay keeps
    a's claim, and packets to that index still reach a, until a's claim expires."""
    r, addr, clock = three.relay, three.addr, three.clock
    r.datagram_received(initiation(0xA1, three.c.wg.public), addr["a"])
    assert r.datagram_received(initiation(0xA1, three.c.wg.public), addr["b"]) == []
    assert r.datagram_received(response(0xA1, 0xC7, three.c.wg.public), addr["b"]) == []
    to_a = data(0xA1)
    assert r.datagram_received(to_a, addr["c"]) == [(to_a, addr["a"])]
    assert r.stats()["dropped"] == {"index_taken": 2}
    # a's own repeat refreshes its claim; once a's claim is old, the index is free.
    r.datagram_received(initiation(0xA1, three.c.wg.public), addr["a"])
    clock.now += 301
    for n in (three.b, three.c):
        r.datagram_received(hello(n, clock.now), addr["b" if n is three.b else "c"])
    init_b = initiation(0xA1, three.c.wg.public)
    assert r.datagram_received(init_b, addr["b"]) == [(init_b, addr["c"])]


def test_unroutable_and_strangers_packets_are_dropped(three: Three) -> None:
    r, addr = three.relay, three.addr
    # An initiation for a key that is no member, data to an index no one chose.
    assert r.datagram_received(initiation(1, WgKey.generate().public), addr["a"]) == []
    assert r.datagram_received(data(0xDEAD), addr["a"]) == []
    # An initiation to oneself is not forwarded back.
    assert r.datagram_received(initiation(2, three.a.wg.public), addr["a"]) == []
    # Not WireGuard, from a member.
    assert r.datagram_received(b"\x05\x00\x00\x00" + bytes(60), addr["a"]) == []
    assert r.datagram_received(b"GET / HTTP/1.1\r\n\r\n", addr["a"]) == []
    # Anything from an address no hello registered, even a perfect initiation.
    stranger = ("203.0.113.9", 9999)
    assert r.datagram_received(initiation(3, three.b.wg.public), stranger) == []
    assert r.datagram_received(data(0xA1), (addr["a"][0], 1112)) == []
    assert r.stats()["dropped"] == {"unroutable": 3, "not_wireguard": 2, "stranger": 2}
    assert r.stats()["forwarded_packets"] == 0


def test_nothing_crosses_clusters(three: Three) -> None:
    r, addr = three.relay, three.addr
    d = node(cluster="c2")
    addr_d = ("198.51.100.4", 4444)
    r.datagram_received(hello(d), addr_d)
    assert r.stats()["clusters"] == 2
    # d's initiation, made for a's key, names no member of c2.
    assert r.datagram_received(initiation(0xD1, three.a.wg.public), addr_d) == []
    # An index chosen in c1 means nothing to c2's members, and the other way.
    r.datagram_received(initiation(0xA1, three.b.wg.public), addr["a"])
    assert r.datagram_received(data(0xA1), addr_d) == []
    assert r.datagram_received(response(0xD2, 0xA1, three.a.wg.public), addr_d) == []
    assert r.datagram_received(data(0xD2), addr["b"]) == []
    assert r.datagram_received(initiation(0xA9, d.wg.public), addr["a"]) == []
    assert r.stats()["forwarded_packets"] == 1
    assert r.stats()["dropped"] == {"unroutable": 5}


def test_rebinding_moves_a_member(three: Three) -> None:
    r, addr, clock = three.relay, three.addr, three.clock
    r.datagram_received(initiation(0xA1, three.c.wg.public), addr["a"])
    r.datagram_received(response(0xC1, 0xA1, three.a.wg.public), addr["c"])
    clock.now += 2
    moved = ("198.51.100.99", 40001)  # the NAT gave a's socket a new mapping
    r.datagram_received(hello(three.a, clock.now), moved)
    assert r.members()[three.a.wg.b64].addr == moved
    to_a = data(0xA1)
    assert r.datagram_received(to_a, addr["c"]) == [(to_a, moved)]
    to_c = data(0xC1)
    assert r.datagram_received(to_c, moved) == [(to_c, addr["c"])]
    assert r.datagram_received(to_c, addr["a"]) == []  # the old address is nobody now
    assert r.stats()["dropped"] == {"stranger": 1}
    # Another member taking over an address (b's NAT reused it) evicts its old owner.
    clock.now += 1
    r.datagram_received(hello(three.b, clock.now), moved)
    assert three.a.wg.b64 not in r.members()
    assert r.members()[three.b.wg.b64].addr == moved


def test_silent_members_are_forgotten(three: Three) -> None:
    r, addr, clock = three.relay, three.addr, three.clock
    r.datagram_received(initiation(0xA1, three.c.wg.public), addr["a"])
    clock.now += 59
    r.datagram_received(hello(three.a, clock.now), addr["a"])
    to_a = data(0xA1)
    assert r.datagram_received(to_a, addr["c"]) == [(to_a, addr["a"])]  # c: 59 s, still here
    clock.now += 2  # b and c: 61 s without a hello
    r.datagram_received(b"IGOP", ("192.0.2.1", 1))
    assert set(r.members()) == {three.a.wg.b64}
    assert r.datagram_received(initiation(0xA2, three.c.wg.public), addr["a"]) == []
    assert r.datagram_received(data(0xA1), addr["c"]) == []
    assert r.stats()["members"] == 1


# -- the rendezvous -------------------------------------------------------------------------


def rendezvous(clock: Clock | None = None) -> Rendezvous:
    return Rendezvous(NETWORK, str(AUTHORITY.pubkey()), clock=clock or Clock())


def test_rendezvous_tells_easy_from_hard_from_unknown() -> None:
    clock = Clock()
    rv = rendezvous(clock)
    easy, hard, half, never = node(), node(), node(), node()
    assert rv.datagram_received(hello(easy), ("198.51.100.1", 5000), 0)
    assert rv.datagram_received(hello(easy), ("198.51.100.1", 5000), 1)
    rv.datagram_received(hello(hard), ("198.51.100.2", 6000), 0)
    rv.datagram_received(hello(hard), ("198.51.100.2", 6001), 1)
    rv.datagram_received(hello(half), ("198.51.100.3", 7000), 1)
    assert rv.sighting("c1", easy.wg.b64) == ("198.51.100.1:5000", overlay.NatKind.EASY, T0)
    assert rv.sighting("c1", hard.wg.b64) == ("198.51.100.2:6000", overlay.NatKind.HARD, T0)
    assert rv.sighting("c1", half.wg.b64) == ("198.51.100.3:7000", overlay.NatKind.UNKNOWN, T0)
    assert rv.sighting("c1", never.wg.b64) == (None, overlay.NatKind.UNKNOWN, None)
    assert rv.sighting("c2", easy.wg.b64) == (None, overlay.NatKind.UNKNOWN, None)
    # Port 0's sighting ages out first: port 1's endpoint stands alone.
    clock.now += 100
    rv.datagram_received(hello(easy, clock.now), ("198.51.100.1", 5000), 1)
    clock.now += 21
    assert rv.sighting("c1", easy.wg.b64) == (
        "198.51.100.1:5000",
        overlay.NatKind.UNKNOWN,
        T0 + 100,
    )
    assert rv.sighting("c1", hard.wg.b64) == (None, overlay.NatKind.UNKNOWN, None)
    rv.forget("c1")
    assert rv.sighting("c1", easy.wg.b64) == (None, overlay.NatKind.UNKNOWN, None)


def test_rendezvous_refuses_bad_and_replayed_hellos() -> None:
    clock = Clock()
    rv, n = rendezvous(clock), node()
    first = hello(n)
    assert rv.datagram_received(first, ("198.51.100.1", 5000), 0)
    assert not rv.datagram_received(first, ("203.0.113.66", 666), 0)  # replayed on port 0
    assert rv.datagram_received(first, ("198.51.100.1", 5000), 1)  # port 1's first
    assert not rv.datagram_received(hello(n, authority=Keypair()), ("198.51.100.1", 5000), 0)
    assert not rv.datagram_received(hello(n, signed_by=Keypair()), ("198.51.100.1", 5000), 0)
    assert not rv.datagram_received(initiation(1, n.wg.public), ("198.51.100.1", 5000), 0)
    assert rv.sighting("c1", n.wg.b64)[0] == "198.51.100.1:5000"
    assert rv.stats()["dropped"] == {"hello_replayed": 1, "hello_refused": 2, "not_hello": 1}
    with pytest.raises(ValueError):
        rv.datagram_received(first, ("198.51.100.1", 5000), 2)
