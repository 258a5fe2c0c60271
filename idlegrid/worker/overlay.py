"""One member's side of a cluster's overlay: its interface, its hellos, its paths.

Used by the agent for each overlay node (``worker/raynode.py``) and by the buyer's
``idlegrid clusters connect``. Each ``update`` (called often; it does only what is
due) does four things, all from what the control plane last said
(``protocol.OverlayAssignment``):

- hellos: every ``HELLO_INTERVAL_S``, a signed hello from WireGuard's own port to
  the rendezvous's two ports and to every relay (``core/overlay.py``), so they
  know where this member is now, NAT rebinding included;
- relays: a ping to each relay from an ordinary socket, timed; the nearest that
  answered lately is the one this member sends relayed packets to
  (``overlay.choose_relay``: a dead relay is passed over, a nearer one is taken
  when it is clearly nearer; a peer that sends through another relay is still
  reached, since every member says hello to every relay);
- peers: WireGuard gets exactly the listed peers, each allowed its own address;
- paths: ``overlay.overlay.plan_path`` per peer, from what WireGuard reports (where it
  sends to that peer, and whether bytes keep coming from it).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from solders.keypair import Keypair

from idlegrid.core import overlay
from idlegrid.protocol import OverlayAssignment, OverlayPeer
from idlegrid.worker.wireguard import KeyPair, WireGuard, parse_endpoint, send_from_port

log = logging.getLogger("idlegrid.worker.overlay")

HELLO_INTERVAL_S = 2.0
PING_INTERVAL_S = 3.0
RELAY_ALIVE_S = 10.0


def resolve(endpoint: str) -> str:
    """``host:port`` with the host as an IPv4 address (WireGuard takes no names)."""
    host, port = parse_endpoint(endpoint)
    return f"{socket.gethostbyname(host)}:{port}"


class OverlayMember:
    """A WireGuard interface with a fresh key pair, kept in line with an assignment."""

    def __init__(
        self, interface: str, signer: Keypair, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys = KeyPair.generate()
        self.wg = WireGuard(interface, self.keys)
        self.signer = signer
        self.clock = clock
        self.paths: dict[bytes, overlay.PeerPath] = {}
        self.peers: dict[bytes, OverlayPeer] = {}
        self._rx: dict[bytes, tuple[int, float]] = {}
        self._last_hello = 0.0
        self._last_ping = 0.0
        self._pings: dict[bytes, tuple[str, float]] = {}  # nonce → (relay, sent at, monotonic)
        self._rtt: dict[str, tuple[float, float]] = {}  # relay → (round trip s, when)
        self._relay: str | None = None
        self._ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._ping.setblocking(False)
        self._resolved: dict[str, str] = {}

    @property
    def public_key(self) -> str:
        return self.keys.public_b64

    def attach(self, address: str, prefix: int, netns: str | None = None) -> None:
        self.wg.attach(address, prefix, netns)

    # -- each tick ------------------------------------------------------------------------

    def update(self, cluster_id: str, o: OverlayAssignment) -> None:
        now = self.clock()
        try:
            self._hellos(cluster_id, o, now)
            self._relays(o, now)
            self._sync_peers(o)
            self._plan(o, now)
        except (OSError, overlay.OverlayError) as exc:
            log.warning("overlay of cluster %s: %s", cluster_id, exc)

    def _endpoint(self, text: str) -> str:
        found = self._resolved.get(text)
        if found is None:
            found = self._resolved[text] = resolve(text)
        return found

    def _hellos(self, cluster_id: str, o: OverlayAssignment, now: float) -> None:
        if o.ticket is None or o.expires is None or o.key != self.public_key:
            return  # the control plane has not taken this key yet
        if now - self._last_hello < HELLO_INTERVAL_S:
            return
        self._last_hello = now
        hello = overlay.Hello(
            network=o.network,
            cluster_id=cluster_id,
            signer=str(self.signer.pubkey()),
            key=self.public_key,
            address=o.address,
            expires=o.expires,
            ticket=o.ticket,
            sent_ms=int(now * 1000),
        )
        signature = bytes(self.signer.sign_message(overlay.hello_message(hello.body())))
        packet = overlay.encode_hello(hello, signature)
        for target in [*o.rendezvous, *o.relays]:
            try:
                send_from_port(self.wg.listen_port, parse_endpoint(self._endpoint(target)), packet)
            except OSError as exc:
                log.debug("hello to %s: %s", target, exc)

    def _relays(self, o: OverlayAssignment, now: float) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                data, (host, port) = self._ping.recvfrom(64)
                # Only the answer to a ping of ours, from where it was sent, counts.
                sent = self._pings.pop(data[4:12], None) if data[:4] == b"IGOQ" else None
                if sent is not None and sent[0] == f"{host}:{port}":
                    sample = time.monotonic() - sent[1]
                    old = self._rtt.get(sent[0])
                    smooth = sample if old is None else (old[0] + sample) / 2
                    self._rtt[sent[0]] = (smooth, now)
        if now - self._last_ping >= PING_INTERVAL_S:
            self._last_ping = now
            sent_at = time.monotonic()
            self._pings = {n: p for n, p in self._pings.items() if sent_at - p[1] < RELAY_ALIVE_S}
            for relay in o.relays:
                endpoint, nonce = self._endpoint(relay), os.urandom(8)
                with contextlib.suppress(OSError):
                    self._ping.sendto(b"IGOP" + nonce, parse_endpoint(endpoint))
                    self._pings[nonce] = (endpoint, sent_at)

    def relay(self, o: OverlayAssignment) -> str | None:
        """The relay to send through: the nearest that answered lately."""
        now = self.clock()
        live = {r: t for r, (t, at) in self._rtt.items() if now - at <= RELAY_ALIVE_S}
        chosen = overlay.choose_relay([self._endpoint(r) for r in o.relays], live, self._relay)
        if chosen != self._relay:
            log.info("overlay relay: %s (round trips %s)", chosen, live)
            self._relay = chosen
        return chosen

    def _sync_peers(self, o: OverlayAssignment) -> None:
        wanted = {base64.b64decode(p.key): p for p in o.peers if p.key != self.public_key}
        relay = self.relay(o)
        for key, peer in wanted.items():
            known = self.peers.get(key)
            if known is None or known.address != peer.address:
                self.wg.set_peer(key, f"{peer.address}/32", relay, overlay.KEEPALIVE_S)
                self.paths[key] = overlay.PeerPath(since=self.clock())
                log.info("overlay peer %s at %s, through %s", peer.name, peer.address, relay)
            self.peers[key] = peer
        for key in set(self.peers) - set(wanted):
            gone = self.peers.pop(key)
            self.wg.remove_peer(key)
            # Its address answers at once, unreachable, and what was open to it is
            # aborted, rather than packets vanishing into a tunnel with no peer: Ray's
            # calls to a dead node fail and its tasks are retried elsewhere, instead
            # of waiting out TCP's timeouts.
            self.wg.unreachable(gone.address)
            self.paths.pop(key, None)
            self._rx.pop(key, None)
            log.info("overlay peer %s at %s left", gone.name, gone.address)

    def _plan(self, o: OverlayAssignment, now: float) -> None:
        status = self.wg.peers()
        relay = self.relay(o)
        mine = overlay.NatKind(o.nat)
        for key, peer in self.peers.items():
            s = status.get(key)
            if s is None:
                continue
            rx, since = self._rx.get(key, (0, None))
            if s.rx_bytes > rx:
                self._rx[key] = (s.rx_bytes, now)
                since = now
            view = overlay.PathView(
                mine=mine,
                theirs=overlay.NatKind(peer.nat),
                peer_endpoint=peer.endpoint,
                wg_endpoint=s.endpoint,
                last_rx=since,
                relay=relay,
            )
            before = self.paths.get(key, overlay.PeerPath())
            after, endpoint = overlay.plan_path(before, view, now)
            self.paths[key] = after
            if endpoint is not None and endpoint != s.endpoint:
                self.wg.set_endpoint(key, endpoint)
            if after.state != before.state:
                log.info(
                    "overlay path to %s: %s -> %s (%s)",
                    peer.name,
                    before.state.value,
                    after.state.value,
                    endpoint or s.endpoint,
                )

    # -- views ----------------------------------------------------------------------------

    def reachable(self, address: str) -> bool:
        """Whether the peer at ``address`` has completed a WireGuard handshake."""
        status = self.wg.peers()
        return any(
            p.address == address and (s := status.get(k)) is not None and s.last_handshake
            for k, p in list(self.peers.items())  # (update may run on another thread)
        )

    def close(self) -> None:
        self._ping.close()
        self.wg.close()
