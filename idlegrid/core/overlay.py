"""The overlay's rules: addresses, tickets, hello packets, relay routing, path choice.

A cluster's nodes sit behind NATs. Each cluster gets an overlay: a /24 of
``OVERLAY_SPACE``, one address per node (and per buyer that joins), and a WireGuard
key pair per node made on the device (the private key never leaves it). WireGuard
(``wireguard-go``) carries every packet between nodes, encrypted end to end; what
this module decides is who may use the network's UDP services and which path a
pair of nodes takes. No sockets, clocks or files here: plain values in and out.

Tickets. The control plane signs, with its own key, that a WireGuard key belongs to
a member of a cluster on this network until a time::

    ticket_message(network, cluster, signer, key, address, expires)

``signer`` is the member's Ed25519 identity (the device, or the buyer's wallet).

Hellos. A node tells the rendezvous and the relays where it is by sending, from
its WireGuard socket's own port (so that a NAT maps it as it maps WireGuard's
packets), a hello: the ticket and a fresh timestamp, signed by ``signer``. The
services learn the packet's source address (the node's public endpoint as they
see it) and nothing else. A hello older than the last one taken for the same key
is refused, so a captured one cannot move a node elsewhere::

    b"IGOV" | version (1 byte) | body length (2 bytes, big-endian) | body (JSON) | signature (64)

The first byte of every WireGuard message is its type (1-4), so a hello can never
be taken for one.

Relay routing. A relay forwards WireGuard's messages between registered members of
one cluster and can read none of them. It routes a handshake initiation (type 1)
by its ``mac1``, which is keyed by the responder's public key (public), so trying
each member's key names the destination; every other message names its receiver
by the index that receiver chose in its own handshake (types 2, 3 and 4), which
the relay learns from the handshakes it forwards.

Paths. Each pair starts relayed (always possible). Where both ends sit behind a
NAT that maps a socket to one public endpoint whatever the destination ("easy":
the rendezvous sees the same endpoint on both of its ports), each end points
WireGuard at the other's public endpoint and sends towards it, which opens both
NATs (hole punching). WireGuard follows the source of the latest authenticated
packet, so whichever path delivers wins; ``plan_path`` asserts the direct path
for a while, lets it settle, and keeps it only if WireGuard still uses it and
packets keep coming, else it returns to the relay and tries again later::

    relayed ──both easy, endpoint known, retry time──▶ trying ──TRY_S──▶ settling
       ▲                                                                   │
       ├──────── still on the relay, or nothing received ◀─────────────────┤
       │                                                                   ▼
       └──── roamed to the relay, silent STALE_S, or the peer moved ──── direct
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import struct
from dataclasses import dataclass, replace
from enum import StrEnum

from solders.pubkey import Pubkey
from solders.signature import Signature

from idlegrid.core.buckets import TokenBuckets, source_key

OVERLAY_SPACE = ipaddress.IPv4Network("100.96.0.0/12")  # inside CGNAT space, 4096 /24s
CLUSTER_PREFIX = 24
HELLO_MAGIC = b"IGOV"
HELLO_VERSION = 1
HELLO_MAX_BYTES = 1200
HELLO_MAX_AGE_S = 30.0  # a hello is taken when its timestamp is this fresh
TICKET_SCHEME = "idlegrid-overlay-ticket-v1"
HELLO_SCHEME = "idlegrid-overlay-hello-v1"
KEEPALIVE_S = 2  # WireGuard's persistent keepalive between members
TRY_S = 8.0  # how long a direct path is asserted
SETTLE_S = 3 * KEEPALIVE_S  # then left alone: still direct and heard from means it works
STALE_S = 15.0  # a direct peer silent this long has lost its path
RETRY_S = (5.0, 30.0, 60.0, 120.0, 300.0)  # after the nth failed try


class OverlayError(ValueError):
    """A packet or ticket that must be refused (its reason in the message)."""


# -- addresses ------------------------------------------------------------------------------


def cluster_network(cluster_id: str) -> ipaddress.IPv4Network:
    """The cluster's /24: fixed by its id, so every replica of the control plane agrees."""
    count = 1 << (CLUSTER_PREFIX - OVERLAY_SPACE.prefixlen)
    index = int.from_bytes(hashlib.sha256(cluster_id.encode()).digest()[:4], "big") % count
    base = int(OVERLAY_SPACE.network_address) + (index << (32 - CLUSTER_PREFIX))
    return ipaddress.IPv4Network((base, CLUSTER_PREFIX))


def node_address(network: ipaddress.IPv4Network, taken: set[str], name: str) -> str:
    """A free host address of ``network`` for ``name`` (a device id or a buyer's peer
    name): its preferred one when free, else the next free one."""
    hosts = network.num_addresses - 2
    start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % hosts
    for step in range(hosts):
        address = str(network.network_address + 1 + (start + step) % hosts)
        if address not in taken:
            return address
    raise OverlayError(f"no free address in {network}")


# -- keys -----------------------------------------------------------------------------------


def parse_wg_key(text: str) -> bytes:
    """A WireGuard public key: 32 bytes in standard base64 (44 characters)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise OverlayError("a WireGuard key is 32 bytes in base64") from exc
    if len(raw) != 32 or len(text) != 44:
        raise OverlayError("a WireGuard key is 32 bytes in base64")
    return raw


def _verify(signer: str, signature: bytes, message: bytes) -> bool:
    try:
        return bool(Signature(signature).verify(Pubkey.from_string(signer), message))
    except ValueError:
        return False


# -- tickets and hellos ---------------------------------------------------------------------


def ticket_message(
    network: str, cluster_id: str, signer: str, key: str, address: str, expires: int
) -> bytes:
    """What the control plane signs to admit ``key`` to ``cluster_id``'s overlay."""
    return "\n".join(
        [TICKET_SCHEME, network, cluster_id, signer, key, address, str(expires)]
    ).encode()


@dataclass(frozen=True, slots=True)
class Hello:
    """A member's hello, once checked."""

    network: str
    cluster_id: str
    signer: str  # Ed25519 identity (base58)
    key: str  # WireGuard public key (base64)
    address: str  # overlay address
    expires: int  # the ticket's, Unix seconds
    ticket: str  # the control plane's signature (base64)
    sent_ms: int  # the hello's own timestamp

    def body(self) -> bytes:
        fields = {
            "network": self.network,
            "cluster": self.cluster_id,
            "signer": self.signer,
            "key": self.key,
            "address": self.address,
            "expires": self.expires,
            "ticket": self.ticket,
            "sent_ms": self.sent_ms,
        }
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()

    def ticket_message(self) -> bytes:
        return ticket_message(
            self.network, self.cluster_id, self.signer, self.key, self.address, self.expires
        )


def hello_message(body: bytes) -> bytes:
    return HELLO_SCHEME.encode() + b"\n" + body


def encode_hello(hello: Hello, signature: bytes) -> bytes:
    """The packet, given ``signer``'s signature over ``hello_message(hello.body())``."""
    body = hello.body()
    if len(signature) != 64:
        raise OverlayError("an Ed25519 signature is 64 bytes")
    packet = HELLO_MAGIC + bytes([HELLO_VERSION]) + struct.pack(">H", len(body)) + body + signature
    if len(packet) > HELLO_MAX_BYTES:
        raise OverlayError(f"a hello is at most {HELLO_MAX_BYTES} bytes")
    return packet


def is_hello(packet: bytes) -> bool:
    return packet[:4] == HELLO_MAGIC


def decode_hello(packet: bytes, *, network: str, authority: str, now: float) -> Hello:
    """Check a hello: its form, the control plane's ticket (``authority`` signed it,
    for this ``network``, not expired), the member's signature, and its freshness."""
    if len(packet) > HELLO_MAX_BYTES or not is_hello(packet) or len(packet) < 7 + 64:
        raise OverlayError("not a hello")
    if packet[4] != HELLO_VERSION:
        raise OverlayError(f"hello version {packet[4]} is not {HELLO_VERSION}")
    (length,) = struct.unpack(">H", packet[5:7])
    body, signature = packet[7 : 7 + length], packet[7 + length :]
    if len(signature) != 64:
        raise OverlayError("a hello ends with a 64-byte signature")
    try:
        f = json.loads(body)
        hello = Hello(
            network=str(f["network"]),
            cluster_id=str(f["cluster"]),
            signer=str(f["signer"]),
            key=str(f["key"]),
            address=str(f["address"]),
            expires=int(f["expires"]),
            ticket=str(f["ticket"]),
            sent_ms=int(f["sent_ms"]),
        )
        ticket = base64.b64decode(hello.ticket, validate=True)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # 1e400: OverflowError
        raise OverlayError("a hello's body is not the expected JSON") from exc
    if not (0 <= hello.expires < 2**63 and 0 <= hello.sent_ms < 2**63):
        raise OverlayError("a hello's times are Unix seconds and milliseconds")
    if hello.body() != body:
        raise OverlayError("a hello's body is not in its one canonical form")
    if hello.network != network:
        raise OverlayError(f"this hello is for network {hello.network!r}")
    parse_wg_key(hello.key)
    if hello.expires < now:
        raise OverlayError("the ticket has expired")
    if abs(now - hello.sent_ms / 1000) > HELLO_MAX_AGE_S:
        raise OverlayError("the hello is stale")
    if len(ticket) != 64 or not _verify(authority, ticket, hello.ticket_message()):
        raise OverlayError("the ticket is not the control plane's")
    if not _verify(hello.signer, signature, hello_message(body)):
        raise OverlayError("the hello is not signed by its ticket's member")
    return hello


RELAY_SWITCH_RATIO = 0.7  # another relay must answer this much faster to move to it


def choose_relay(relays: list[str], rtt: dict[str, float], current: str | None) -> str | None:
    """The relay a member sends relayed packets through: the nearest of those that
    answer (``rtt``: each live relay's round trip in seconds), but the ``current``
    one is kept while it answers unless another answers in under
    ``RELAY_SWITCH_RATIO`` of its time, so that two relays about as near do not take
    turns. None answering: the first listed (it may be back before its pings are).
    Since every member says hello to every relay, members may each use another
    relay and still reach one another."""
    alive = [r for r in relays if r in rtt]
    if not alive:
        return relays[0] if relays else None
    nearest = min(alive, key=lambda r: (rtt[r], relays.index(r)))
    if current in rtt and current in relays and rtt[nearest] >= RELAY_SWITCH_RATIO * rtt[current]:
        return current
    return nearest


HELLO_SOURCE_RATE = 20.0  # hellos a second one source address may have verified
HELLO_SOURCE_BURST = 60.0  # (a member says hello every 2 s: ~40 members behind one NAT)
HELLO_TOTAL_RATE = 2000.0  # and the whole service: about a tenth of a core's verifies
HELLO_TOTAL_BURST = 4000.0


class HelloGate:
    """Which hellos a relay or the rendezvous takes, and what a stranger's datagrams
    may cost it. A hello that passes ``decode_hello``'s cheap checks (form, network,
    freshness) costs one or two Ed25519 verifies, and anyone may send one over UDP;
    so a source address (an IPv4 address, an IPv6 /64) has ``HELLO_SOURCE_RATE``
    verifies a second and the service ``HELLO_TOTAL_RATE``: a flood from one address
    is cut at its own bucket, and a flood from many (UDP sources are easy to forge)
    costs the service a bounded share of a core, though it may then crowd out real
    members' hellos until it stops (members are forgotten only after a minute of
    silence). A verified hello is taken only if it was sent after the last one taken
    for its ``slot`` (the member's key, at the rendezvous also the port): replays and
    reordered hellos are refused, and a slot is forgotten once its last hello is too
    old to be taken again anyway.

    ``admit`` answers the hello, or why not (a counter's name)."""

    def __init__(
        self,
        network: str,
        authority: str,
        source_rate: float = HELLO_SOURCE_RATE,
        source_burst: float = HELLO_SOURCE_BURST,
        total_rate: float = HELLO_TOTAL_RATE,
        total_burst: float = HELLO_TOTAL_BURST,
    ) -> None:
        self.network = network
        self.authority = authority
        self._sources = TokenBuckets(source_rate, source_burst)
        self._total = TokenBuckets(total_rate, total_burst, max_keys=1)
        self._last_sent: dict[tuple[str, str], int] = {}  # (slot, key) → sent_ms taken

    def admit(self, data: bytes, source_host: str, now: float, slot: str = "") -> Hello | str:
        if self._sources.take(source_key(source_host), now) is not None:
            return "hello_rate_limited"
        if self._total.take("", now) is not None:
            return "hello_overloaded"
        try:
            hello = decode_hello(data, network=self.network, authority=self.authority, now=now)
        except OverlayError:
            return "hello_refused"
        if hello.sent_ms <= self._last_sent.get((slot, hello.key), -1):
            return "hello_replayed"
        self._last_sent[(slot, hello.key)] = hello.sent_ms
        return hello

    def sweep(self, now: float) -> None:
        """Forget the slots whose last hello is stale anyway (its replay needs no memory
        to refuse)."""
        cutoff = int((now - HELLO_MAX_AGE_S - 1.0) * 1000)
        for slot in [k for k, sent in self._last_sent.items() if sent < cutoff]:
            del self._last_sent[slot]

    def __len__(self) -> int:
        return len(self._last_sent)


# -- WireGuard messages, as a relay sees them ------------------------------------------------

WG_INITIATION, WG_RESPONSE, WG_COOKIE, WG_DATA = 1, 2, 3, 4
_SIZES = {WG_INITIATION: 148, WG_RESPONSE: 92, WG_COOKIE: 64}
_MAC1_LABEL = b"mac1----"


def wg_type(packet: bytes) -> int | None:
    """The WireGuard message type, or None for anything that is not one."""
    if len(packet) < 16 or packet[1:4] != b"\0\0\0":
        return None
    kind = packet[0]
    if kind in _SIZES:
        return kind if len(packet) == _SIZES[kind] else None
    return kind if kind == WG_DATA and len(packet) >= 32 and len(packet) % 16 == 0 else None


def wg_sender_index(packet: bytes) -> int:
    """The index the sender chose (handshake messages)."""
    return int.from_bytes(packet[4:8], "little")


def wg_receiver_index(packet: bytes) -> int:
    """The index the receiver chose: where a response, cookie or data message goes."""
    offset = 8 if packet[0] == WG_RESPONSE else 4
    return int.from_bytes(packet[offset : offset + 4], "little")


def mac1_key(public_key: bytes) -> bytes:
    """``HASH(LABEL_MAC1 || responder's public key)``: keys the mac1 of messages to it."""
    return hashlib.blake2s(_MAC1_LABEL + public_key).digest()


def mac1_matches(packet: bytes, key: bytes) -> bool:
    """Whether a handshake message's mac1 was made for the responder whose
    ``mac1_key`` is ``key``: how a relay names an initiation's destination."""
    end = len(packet) - 32
    mac = hashlib.blake2s(packet[:end], key=key, digest_size=16).digest()
    return mac == packet[end : end + 16]


# -- paths ----------------------------------------------------------------------------------


class PathState(StrEnum):
    RELAYED = "relayed"
    TRYING = "trying"
    SETTLING = "settling"
    DIRECT = "direct"


class NatKind(StrEnum):
    """How the rendezvous saw a member: ``easy`` (one public endpoint whatever the
    destination: hole punching works), ``hard`` (one per destination: relayed), or
    ``unknown`` (not seen on both of its ports yet)."""

    UNKNOWN = "unknown"
    EASY = "easy"
    HARD = "hard"


def nat_kind(first: str | None, second: str | None) -> NatKind:
    """From the endpoints the rendezvous saw on its two ports."""
    if first is None or second is None:
        return NatKind.UNKNOWN
    return NatKind.EASY if first == second else NatKind.HARD


@dataclass(frozen=True, slots=True)
class PeerPath:
    """Where one peer's packets go, and since when."""

    state: PathState = PathState.RELAYED
    since: float = 0.0
    endpoint: str | None = None  # the direct endpoint tried or used
    failures: int = 0
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PathView:
    """What the agent knows of one peer at one moment."""

    mine: NatKind
    theirs: NatKind
    peer_endpoint: str | None  # as the rendezvous saw it
    wg_endpoint: str | None  # where WireGuard sends to it now
    last_rx: float | None  # when something last came from it (rx bytes grew)
    relay: str | None  # the relay endpoint to use for it


def plan_path(p: PeerPath, v: PathView, now: float) -> tuple[PeerPath, str | None]:
    """The peer's next path state, and the endpoint WireGuard must be told (None:
    leave it as it is)."""
    heard = v.last_rx is not None and now - v.last_rx <= STALE_S
    direct_ok = v.mine == NatKind.EASY and v.theirs == NatKind.EASY and v.peer_endpoint
    if p.state == PathState.RELAYED:
        if direct_ok and now >= p.retry_at:
            return PeerPath(PathState.TRYING, now, v.peer_endpoint, p.failures), v.peer_endpoint
        if v.relay is not None and v.wg_endpoint not in (v.relay, None) and not direct_ok:
            return p, v.relay
        if v.wg_endpoint is None and v.relay is not None:
            return p, v.relay
        return p, None
    if p.state in (PathState.TRYING, PathState.SETTLING) and v.peer_endpoint != p.endpoint:
        return _fail(p, now, soon=True), v.relay  # it moved while we tried: try its new place
    if p.state == PathState.TRYING:
        if now - p.since < TRY_S:
            return p, (p.endpoint if v.wg_endpoint != p.endpoint else None)
        return replace(p, state=PathState.SETTLING, since=now), None
    if p.state == PathState.SETTLING:
        if v.wg_endpoint != p.endpoint:
            return _fail(p, now), v.relay  # the peer's packets still come through the relay
        if now - p.since < SETTLE_S:
            return p, None
        if heard and v.last_rx is not None and v.last_rx >= p.since:
            return PeerPath(PathState.DIRECT, now, p.endpoint, 0, 0.0), None
        return _fail(p, now), v.relay
    # DIRECT
    if v.peer_endpoint != p.endpoint or v.wg_endpoint != p.endpoint or not heard:
        return _fail(p, now, soon=True), v.relay
    return p, None


def _fail(p: PeerPath, now: float, soon: bool = False) -> PeerPath:
    failures = 0 if soon else p.failures + 1
    wait = RETRY_S[0] if soon else RETRY_S[min(failures, len(RETRY_S) - 1)]
    return PeerPath(PathState.RELAYED, now, None, failures, now + wait)
