"""The control plane's beat port: heartbeats as datagrams (the rules are core/beats.py).

``BeatService`` opens sessions when a signed HTTP heartbeat asks for one
(``offer``) and takes beats on a UDP port of the API's host (``BeatServer``). A beat
taken does what the HTTP heartbeat does on the hot path (liveness, the idle
monitor, the heartbeat counter) and is answered with an ack that carries the
device's status, the pace and whether its mailbox wants an HTTP heartbeat. Sessions
live in this process, as the liveness table and the mailboxes do (one owner per
device: docs/architecture.md on replicas); a restart forgets them, and each agent,
hearing no ack, heartbeats over HTTP once and opens a new one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client import Counter

from idlegrid.core import beats
from idlegrid.errors import InvalidRequest, UnknownDevice
from idlegrid.protocol import BeatOffer
from idlegrid.server.idle import IdleMonitor
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.mailbox import Mailbox

log = logging.getLogger("idlegrid.server.beats")

# Room for bursts of beats while the event loop is busy elsewhere: the kernel's
# default (~208 KiB) holds fewer than 200 small datagrams. Linux caps it at
# net.core.rmem_max, so raise that too on a busy control plane.
RCVBUF_BYTES = 4 << 20


class BeatService:
    def __init__(
        self,
        *,
        network: str,
        liveness: LivenessTable,
        mailbox: Mailbox,
        idle: IdleMonitor,
        heartbeats: Counter,
        refused: Counter,
        interval_s: float,
        life_s: float,
        max_skew_s: float,
        host: str | None,
        clock: Callable[[], float],
    ) -> None:
        self.network = network
        self.liveness = liveness
        self.mailbox = mailbox
        self.idle = idle
        self.heartbeats = heartbeats
        self.refused = refused
        self.interval_s = interval_s
        self.host = host or None
        self.clock = clock
        self.sessions = beats.BeatSessions(life_s, max_skew_s)
        self.port: int | None = None  # once bound; no offers before

    def offer(self, device_id: str, beat_key: str, now: float) -> BeatOffer | None:
        """Open a session for a device that signed ``beat_key``; None while unbound or
        when the device had one too lately (core/beats.REOPEN_S)."""
        if self.port is None or not self.sessions.may_open(device_id, now):
            return None
        device_key = bytes.fromhex(beat_key)
        private = X25519PrivateKey.generate()
        server_key = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(device_key))
            session = secrets.token_bytes(beats.SESSION_BYTES)
            keys = beats.session_keys(
                shared,
                network=self.network,
                device_id=device_id,
                session=session,
                device_key=device_key,
                server_key=server_key,
            )
        except ValueError:  # a low-order point: no secret to share
            raise InvalidRequest("beat_key is not a usable X25519 public key") from None
        self.sessions.open(device_id, session, keys, now)
        return BeatOffer(
            session=session.hex(),
            server_key=server_key.hex(),
            host=self.host,
            port=self.port,
            expires_in_s=self.sessions.life_s,
        )

    def answer(self, packet: bytes) -> bytes | None:
        """The ack for one datagram, or None (dropped, counted by reason)."""
        now = self.clock()
        taken = self.sessions.take(packet, now)
        if isinstance(taken, str):
            self.refused.labels(taken).inc()
            return None
        session, beat = taken
        try:
            status = self.liveness.heartbeat(session.device_id, now)
        except UnknownDevice:
            # Gone from the table (inactive): HTTP revives it, so say nothing and the
            # agent, hearing no ack, heartbeats over HTTP.
            self.sessions.close(session.device_id)
            self.refused.labels(beats.UNKNOWN_SESSION).inc()
            return None
        self.heartbeats.inc()
        box = self.mailbox.get(session.device_id)
        self.idle.heartbeat(session.device_id, beat.cpu_percent, beat.gpu_percent, box.busy, now)
        flags = beats.HTTP_WANTED if box.busy else 0
        return beats.encode_ack(
            session.keys.down, beat.session, beat.counter, status, flags, self.interval_s
        )


class _Port(asyncio.DatagramProtocol):
    def __init__(self, service: BeatService) -> None:
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            ack = self.service.answer(data)
        except Exception:  # one bad packet must not stop the port
            log.exception("beat from %s", addr)
            return
        if ack is not None and self.transport is not None:
            self.transport.sendto(ack, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("beat port: %s", exc)  # an ICMP error for an ack: the device moved on


class BeatServer:
    """The beat port on ``host``: 0 picks a free one (``service.port`` says which)."""

    def __init__(self, service: BeatService, host: str, port: int) -> None:
        self.service = service
        self.bind = (host, port)
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Port(self.service), local_addr=self.bind
        )
        self._transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        self.service.port = int(transport.get_extra_info("sockname")[1])
        log.info(
            "beats on %s port %d (receive buffer %d bytes)",
            self.bind[0],
            self.service.port,
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )
        return self.service.port

    def close(self) -> None:
        self.service.port = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
