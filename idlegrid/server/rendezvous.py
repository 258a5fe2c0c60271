"""The control plane's rendezvous: where each overlay member is, and what NAT it is behind.

Members send hellos (``core/overlay.py``) from WireGuard's own UDP port to both of
the rendezvous's ports. A hello's source address is the member's public endpoint
as the NAT maps WireGuard's socket, which peers need for hole punching. Seeing the
member on two ports tells the NAT's kind: the same endpoint for both destinations
is a NAT that maps one socket to one endpoint (``easy``: hole punching works);
two endpoints mean a mapping per destination (``hard``: the pair stays relayed).

Hellos are checked exactly as the relays check them (ticket, signature, age, and
newer than the last one taken on that port for that key, so a captured hello
cannot move a member). Nothing is ever sent back. :class:`Rendezvous` holds the
sightings, with no sockets and an injectable clock; :class:`RendezvousServer`
binds its two UDP ports. The app asks ``sighting`` when it builds assignments.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from idlegrid.core import overlay

log = logging.getLogger("idlegrid.server.rendezvous")

SIGHTING_TTL_S = 120.0  # an endpoint seen longer ago than this counts as unseen
SWEEP_S = 30.0


@dataclass(frozen=True, slots=True)
class Seen:
    endpoint: str  # "ip:port"
    at: float


def _endpoint(addr: Any) -> str:
    host = str(addr[0])
    return f"[{host}]:{int(addr[1])}" if ":" in host else f"{host}:{int(addr[1])}"


class Rendezvous:
    """Sightings of overlay members on the two ports; no sockets, clock injectable."""

    def __init__(
        self, network: str, authority: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._seen: dict[tuple[str, str], list[Seen | None]] = {}  # (cluster, key) → per port
        self._gate = overlay.HelloGate(network, authority)
        self._swept = 0.0
        self.hellos = 0
        self.dropped: Counter[str] = Counter()

    def datagram_received(self, data: bytes, addr: Any, port_index: int) -> bool:
        """Take a datagram that arrived on port ``port_index`` (0 or 1) from ``addr``;
        whether it was a hello that was taken."""
        if port_index not in (0, 1):
            raise ValueError("the rendezvous has two ports: 0 and 1")
        now = self.clock()
        if now - self._swept >= SWEEP_S:
            self._sweep(now)
        if not overlay.is_hello(data):
            self.dropped["not_hello"] += 1
            return False
        hello = self._gate.admit(data, str(addr[0]), now, slot=str(port_index))
        if isinstance(hello, str):
            self.dropped[hello] += 1
            return False
        self.hellos += 1
        seen = self._seen.setdefault((hello.cluster_id, hello.key), [None, None])
        seen[port_index] = Seen(_endpoint(addr), now)
        return True

    def sighting(
        self, cluster_id: str, key: str
    ) -> tuple[str | None, overlay.NatKind, float | None]:
        """The member's public endpoint (as port 0 saw it, else port 1), its NAT's kind
        and when it was last seen; ``(None, UNKNOWN, None)`` when not seen lately."""
        now = self.clock()
        first, second = (
            s if s is not None and now - s.at <= SIGHTING_TTL_S else None
            for s in self._seen.get((cluster_id, key), [None, None])
        )
        endpoint = first.endpoint if first else second.endpoint if second else None
        kind = overlay.nat_kind(
            first.endpoint if first else None, second.endpoint if second else None
        )
        times = [s.at for s in (first, second) if s is not None]
        return endpoint, kind, max(times) if times else None

    def forget(self, cluster_id: str) -> None:
        """Drop the cluster's sightings (it ended)."""
        for entry in [e for e in self._seen if e[0] == cluster_id]:
            del self._seen[entry]

    def _sweep(self, now: float) -> None:
        self._swept = now
        for entry, seen in list(self._seen.items()):
            if all(s is None or now - s.at > SIGHTING_TTL_S for s in seen):
                del self._seen[entry]
        self._gate.sweep(now)

    def stats(self) -> dict[str, Any]:
        return {"sightings": len(self._seen), "hellos": self.hellos, "dropped": dict(self.dropped)}


class _Port(asyncio.DatagramProtocol):
    def __init__(self, rendezvous: Rendezvous, index: int) -> None:
        self.rendezvous = rendezvous
        self.index = index

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.rendezvous.datagram_received(data, addr, self.index)
        except Exception:  # one bad packet must not stop the service
            log.exception("rendezvous: packet from %s", addr)


class RendezvousServer:
    """A :class:`Rendezvous` on two UDP ports of ``host`` (0 picks a free port;
    ``ports`` holds the bound ones after ``start``)."""

    def __init__(self, rendezvous: Rendezvous, host: str, ports: tuple[int, int]) -> None:
        self.rendezvous = rendezvous
        self.host = host
        self.ports = ports
        self._transports: list[asyncio.DatagramTransport] = []

    async def start(self) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        bound: list[int] = []
        try:
            for index, port in enumerate(self.ports):
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Port, self.rendezvous, index),
                    local_addr=(self.host, port),
                )
                self._transports.append(transport)
                bound.append(int(transport.get_extra_info("sockname")[1]))
        except BaseException:
            self.close()
            raise
        self.ports = (bound[0], bound[1])
        log.info("rendezvous listening on %s ports %d and %d", self.host, *self.ports)
        return self.ports

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports = []
