"""The overlay's relay: forwards WireGuard's packets between members of one cluster.

A cluster's nodes sit behind NATs, and where hole punching cannot work (a "hard"
NAT on either end) their WireGuard packets go through a relay on a public address.
The relay reads none of them: WireGuard encrypts and authenticates end to end. It
only has to know where each packet goes, and it learns that from what it sees
(the rules are in ``core/overlay.py``):

* a hello (``IGOV``), sent by a member from WireGuard's own UDP port, registers
  the member's WireGuard key at the hello's source address, once the control
  plane's ticket and the member's signature check out and its timestamp is newer
  than the last one taken for that key (a captured hello cannot move a member).
  No reply: the hello came from WireGuard's port, and WireGuard would get it;
* a ping (``IGOP`` + up to 32 bytes) gets a pong (``IGOQ`` + the same bytes), so
  agents can tell which relays are alive and how far they are;
* a WireGuard message from a registered address is forwarded within the sender's
  cluster only: a handshake initiation to the member whose public key its
  ``mac1`` was made for, every other message to the member that chose its
  receiver index in a handshake this relay forwarded.

Everything else is dropped and counted. :class:`Relay` is the logic with no
sockets (``datagram_received`` returns what to send, so tests need no network);
:class:`RelayServer` puts it on a UDP socket; ``idlegrid relay`` runs one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from idlegrid.core import overlay

log = logging.getLogger("idlegrid.relay")

Addr = tuple[str, int]

MEMBER_TTL_S = 60.0  # a member not heard from this long is forgotten
INDEX_TTL_S = 300.0  # a handshake index outlives WireGuard's keypairs (180 s) comfortably
SWEEP_S = 5.0  # how often expired entries are swept out
PING_MAGIC = b"IGOP"
PONG_MAGIC = b"IGOQ"
PING_MAX_BYTES = 32  # the token after the magic


@dataclass(slots=True)
class Member:
    """A registered WireGuard key: where its packets go."""

    cluster_id: str
    key: str  # base64
    addr: Addr
    signer: str
    seen_at: float
    mac1: bytes  # mac1_key of the raw public key, tried against initiations


def _addr(addr: Any) -> Addr:
    """asyncio gives (host, port) for IPv4 and a 4-tuple for IPv6: keep host and port."""
    return (str(addr[0]), int(addr[1]))


class Relay:
    """The relay's state and rules; no sockets, clock injectable."""

    def __init__(
        self, network: str, authority: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._members: dict[str, Member] = {}  # WireGuard key → member
        self._by_addr: dict[Addr, str] = {}  # source address → key
        self._clusters: dict[str, set[str]] = {}  # cluster → its members' keys
        self._indices: dict[tuple[str, int], tuple[str, float]] = {}  # (cluster, index) → key
        self._gate = overlay.HelloGate(network, authority)
        self._swept = 0.0
        self.forwarded_packets = 0
        self.forwarded_bytes = 0
        self.hellos = 0
        self.pongs = 0
        self.dropped: Counter[str] = Counter()

    # -- the one entry point --------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> list[tuple[bytes, Addr]]:
        """What to send in answer to ``data`` from ``addr``: nothing, a pong, or the
        packet forwarded to one member."""
        source = _addr(addr)
        now = self.clock()
        if now - self._swept >= SWEEP_S:
            self._sweep(now)
        if overlay.is_hello(data):
            self._hello(data, source, now)
            return []
        if data[:4] == PING_MAGIC:
            if len(data) - 4 > PING_MAX_BYTES:
                self.dropped["ping_oversize"] += 1
                return []
            self.pongs += 1
            return [(PONG_MAGIC + data[4:], source)]
        return self._forward(data, source, now)

    # -- hellos ---------------------------------------------------------------------------

    def _hello(self, data: bytes, source: Addr, now: float) -> None:
        hello = self._gate.admit(data, source[0], now)
        if isinstance(hello, str):
            self.dropped[hello] += 1
            return
        self.hellos += 1
        member = self._members.get(hello.key)
        if member is not None and member.cluster_id != hello.cluster_id:
            self._remove(hello.key)  # the key's ticket is now for another cluster
            member = None
        if member is None:
            raw = overlay.parse_wg_key(hello.key)
            member = Member(
                hello.cluster_id, hello.key, source, hello.signer, now, overlay.mac1_key(raw)
            )
            self._members[hello.key] = member
            self._clusters.setdefault(hello.cluster_id, set()).add(hello.key)
        elif member.addr != source:  # NAT rebinding or a new network: it moved
            log.debug("member %s moved from %s to %s", hello.key, member.addr, source)
            if self._by_addr.get(member.addr) == hello.key:
                del self._by_addr[member.addr]
        member.addr, member.signer, member.seen_at = source, hello.signer, now
        previous = self._by_addr.get(source)
        if previous is not None and previous != hello.key:
            self._remove(previous)  # one address is one member: the newest hello wins
        self._by_addr[source] = hello.key

    def _remove(self, key: str) -> None:
        member = self._members.pop(key, None)
        if member is None:
            return
        if self._by_addr.get(member.addr) == key:
            del self._by_addr[member.addr]
        keys = self._clusters.get(member.cluster_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._clusters[member.cluster_id]

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [k for k, m in self._members.items() if now - m.seen_at > MEMBER_TTL_S]:
            self._remove(key)
        self._gate.sweep(now)
        self._indices = {
            index: (key, at)
            for index, (key, at) in self._indices.items()
            if now - at <= INDEX_TTL_S and key in self._members
        }

    # -- forwarding -----------------------------------------------------------------------

    def _live(self, key: str | None, now: float) -> Member | None:
        member = self._members.get(key) if key is not None else None
        if member is None or now - member.seen_at > MEMBER_TTL_S:
            return None
        return member

    def _claim(self, cluster: str, index: int, key: str, now: float) -> bool:
        """Record that ``key`` chose handshake ``index`` (packets to it go to ``key``),
        unless another live member holds it: the first claim stands until it expires,
        so a member cannot divert its cluster's traffic by repeating another's index
        (WireGuard's indices are random 32-bit numbers: an honest clash is a one in
        four billion event, and WireGuard's next handshake picks another)."""
        held = self._indices.get((cluster, index))
        if (
            held is not None
            and held[0] != key
            and now - held[1] <= INDEX_TTL_S
            and self._live(held[0], now) is not None
        ):
            self.dropped["index_taken"] += 1
            return False
        self._indices[(cluster, index)] = (key, now)
        return True

    def _forward(self, data: bytes, source: Addr, now: float) -> list[tuple[bytes, Addr]]:
        sender = self._live(self._by_addr.get(source), now)
        if sender is None:
            self.dropped["stranger"] += 1
            return []
        kind = overlay.wg_type(data)
        if kind is None:
            self.dropped["not_wireguard"] += 1
            return []
        cluster = sender.cluster_id
        target: Member | None = None
        if kind == overlay.WG_INITIATION:
            if not self._claim(cluster, overlay.wg_sender_index(data), sender.key, now):
                return []
            for key in self._clusters.get(cluster, ()):
                if key != sender.key and overlay.mac1_matches(data, self._members[key].mac1):
                    target = self._live(key, now)
                    break
        else:
            if kind == overlay.WG_RESPONSE and not self._claim(
                cluster, overlay.wg_sender_index(data), sender.key, now
            ):
                return []
            owner = self._indices.get((cluster, overlay.wg_receiver_index(data)))
            if owner is not None and owner[0] != sender.key:
                target = self._live(owner[0], now)
        if target is None:
            self.dropped["unroutable"] += 1
            return []
        self.forwarded_packets += 1
        self.forwarded_bytes += len(data)
        return [(data, target.addr)]

    # -- reporting ------------------------------------------------------------------------

    def members(self) -> dict[str, Member]:
        """The registered members by WireGuard key (a copy), the silent ones swept out."""
        self._sweep(self.clock())
        return dict(self._members)

    def stats(self) -> dict[str, Any]:
        self._sweep(self.clock())
        return {
            "members": len(self._members),
            "clusters": len(self._clusters),
            "indices": len(self._indices),
            "hellos": self.hellos,
            "pongs": self.pongs,
            "forwarded_packets": self.forwarded_packets,
            "forwarded_bytes": self.forwarded_bytes,
            "dropped": dict(self.dropped),
        }


# -- on a socket --------------------------------------------------------------------------


class RelayProtocol(asyncio.DatagramProtocol):
    """Feeds each datagram to a :class:`Relay` and sends what it answers."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            replies = self.relay.datagram_received(data, addr)
        except Exception:  # one bad packet must not stop the relay
            log.exception("relay: packet from %s", addr)
            return
        if self.transport is not None:
            for packet, destination in replies:
                self.transport.sendto(packet, destination)

    def error_received(self, exc: Exception) -> None:
        log.debug("relay socket: %s", exc)  # e.g. ICMP port unreachable from a gone member


class RelayServer:
    """A :class:`Relay` on one UDP socket; port 0 picks a free one (see ``port``)."""

    def __init__(self, relay: Relay, host: str = "127.0.0.1", port: int = 0) -> None:
        self.relay = relay
        self.host = host
        self.port = port
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        """Bind and serve; the bound port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: RelayProtocol(self.relay), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def serve_relay(
    host: str,
    port: int,
    network: str,
    authority: str,
    *,
    stop: asyncio.Event | None = None,
    stats_every_s: float = 60.0,
) -> None:
    """Run a relay on ``host:port`` until ``stop`` is set (forever without one),
    logging its stats every ``stats_every_s``."""
    server = RelayServer(Relay(network, authority), host, port)
    bound = await server.start()
    log.info("relay for network %s listening on %s:%d", network, host, bound)
    stop = stop or asyncio.Event()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), stats_every_s)
            except TimeoutError:
                log.info("relay stats %s", server.relay.stats())
    finally:
        server.stop()
        log.info("relay stopped; stats %s", server.relay.stats())
