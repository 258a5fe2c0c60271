"""The agent's end of beats (core/beats.py): one UDP socket per session.

``BeatChannel.new_key()`` makes a fresh X25519 key pair whose public half goes in a
signed HTTP heartbeat; ``accept`` derives the session's keys from the control
plane's answer; ``beat`` sends one beat and waits briefly for its ack. The
heartbeat duty (``agent.py``) beats while a session holds, and heartbeats over HTTP
when there is none, when half its life is gone, when an ack asks for it, or when an
ack does not come. After ``MAX_MISSES`` beats in a row go unanswered (UDP blocked
on the way, say) it stops asking for sessions for ``COOLDOWN_S``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from idlegrid.core import beats
from idlegrid.protocol import BeatOffer

log = logging.getLogger("idlegrid.worker.beats")

MAX_MISSES = 3
COOLDOWN_S = 600.0


class BeatChannel:
    def __init__(
        self,
        *,
        network: Callable[[], str],
        device_id: str,
        api_host: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.network = network
        self.device_id = device_id
        self.api_host = api_host
        self.clock = clock
        self.wall = wall
        self._private: X25519PrivateKey | None = None
        self._sock: socket.socket | None = None
        self._keys: beats.SessionKeys | None = None
        self._session = b""
        self._counter = 0
        self._renew_at = 0.0
        self._expires_at = 0.0
        self.misses = 0
        self._cooldown_until = 0.0

    @property
    def open(self) -> bool:
        return self._sock is not None and self.clock() < self._expires_at

    def wants_session(self) -> bool:
        """Whether the next HTTP heartbeat should ask for a (new) session."""
        now = self.clock()
        return now >= self._cooldown_until and (not self.open or now >= self._renew_at)

    def new_key(self) -> str:
        self._private = X25519PrivateKey.generate()
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def accept(self, offer: BeatOffer) -> None:
        """Open the session the control plane offered for the last ``new_key``."""
        if self._private is None:
            return
        device_key = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        server_key = bytes.fromhex(offer.server_key)
        session = bytes.fromhex(offer.session)
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(server_key))
            keys = beats.session_keys(
                shared,
                network=self.network(),
                device_id=self.device_id,
                session=session,
                device_key=device_key,
                server_key=server_key,
            )
            addr = socket.getaddrinfo(
                offer.host or self.api_host, offer.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(addr[0], socket.SOCK_DGRAM)
            sock.connect(addr[4])
        except (OSError, ValueError) as exc:
            log.warning("no beat session: %s", exc)
            self._miss()
            return
        self.close()
        self._private = None
        self._sock, self._keys, self._session, self._counter = sock, keys, session, 0
        now = self.clock()
        self._expires_at = now + offer.expires_in_s
        self._renew_at = now + offer.expires_in_s / 2

    def beat(
        self, cpu_percent: float | None, gpu_percent: float | None, timeout_s: float
    ) -> beats.Ack | None:
        """Send one beat; its ack, or None when none came within ``timeout_s``."""
        if self._sock is None or self._keys is None:
            return None
        self._counter += 1
        packet = beats.encode_beat(
            self._keys.up,
            self._session,
            self._counter,
            int(self.wall() * 1000),
            cpu_percent,
            gpu_percent,
        )
        deadline = self.clock() + timeout_s
        try:
            self._sock.send(packet)
            while (left := deadline - self.clock()) > 0:
                self._sock.settimeout(left)
                ack = beats.decode_ack(self._keys.down, self._sock.recv(64))
                mine = ack is not None and ack.session == self._session
                if ack is not None and mine and ack.counter == self._counter:
                    self.misses = 0
                    return ack
        except OSError:  # a timeout, or a refused port (ICMP)
            pass
        self._miss()
        self.close()  # the next HTTP heartbeat asks for a new session
        return None

    def _miss(self) -> None:
        self.misses += 1
        if self.misses >= MAX_MISSES:
            log.warning("beats unanswered %d times: HTTP only for %.0f s", self.misses, COOLDOWN_S)
            self._cooldown_until = self.clock() + COOLDOWN_S
            self.misses = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._keys = None
        self._expires_at = 0.0
