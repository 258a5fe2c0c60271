"""Beats: the heartbeat as one small authenticated datagram, after a signed handshake.

A signed HTTP heartbeat costs the control plane an Ed25519 verification (about
55 µs of a core) and an HTTP request (about 100 µs more in Python), so one process
answers a few thousand a second; a million devices beating once a minute need
16,700. A beat costs a keyed BLAKE2b over 32 bytes and one datagram each way.

The handshake. A device asks for a session inside a signed heartbeat
(``HeartbeatRequest.beat_key``: a fresh X25519 public key made on the device). The
control plane answers with its own fresh X25519 public key, a random session id,
the UDP port and the session's life (``HeartbeatResponse.beat``). Each side derives
the session's two keys from the shared secret (``session_keys``): no secret crosses
the wire, and none is shared between devices. A party in the middle of a plain-HTTP
connection that swaps the server's key learns the device's beats but cannot forge
one the server takes (that needs the server's or the device's private key), because
the device's key was signed by the device; TLS in front of the API stops even that.
The keys bind the network, the device and both public keys, so a beat made for one
network, device or session verifies nowhere else.

A beat (48 bytes) and its acknowledgement (42 bytes, never larger than the beat, so
the port amplifies nothing)::

    beat: b"IGB1" | session (8) | counter (u64) | sent_ms (u64) | cpu (u16) | gpu (u16) | tag
    ack:  b"IGA1" | session (8) | counter (u64) | status (u8) | flags (u8) | interval_ms (u32) | tag

Integers are big-endian; ``cpu`` and ``gpu`` are hundredths of a percent
(``NO_LOAD`` for a device without one); the tag is BLAKE2b-128 keyed with the
direction's key over everything before it. The control plane takes a beat only if
its session is open and unexpired, its tag verifies (forgery, any changed byte),
its counter is above the last one taken for the session (replay: a beat is taken
once, and a late one after a newer is dropped) and its ``sent_ms`` is within the
clock skew of the server's clock (staleness: a beat held back and released later).
Anything else is dropped without an answer, so a stranger's packets cost one
dictionary lookup and earn nothing. The ack repeats the counter; its ``flags`` say
when the device should make its next heartbeat a signed HTTP one (``HTTP_WANTED``:
its mailbox holds a challenge or a cluster assignment, which only the HTTP reply
carries). A device that hears no ack falls back to HTTP, which also opens a fresh
session (after a server restart, say).

A session costs the control plane an X25519 key pair and exchange (about 100 µs),
so a device gets at most one new session per ``REOPEN_S`` while its last one is
open (``BeatSessions.may_open``); until then its heartbeats simply stay on HTTP.

No sockets or clocks here: plain values in and out (the server's socket is
``server/beats.py``, the agent's ``worker/beats.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from dataclasses import dataclass

from idlegrid.protocol import DeviceStatus

BEAT_MAGIC = b"IGB1"
ACK_MAGIC = b"IGA1"
TAG_BYTES = 16
SESSION_BYTES = 8
NO_LOAD = 0xFFFF
REOPEN_S = 30.0  # the least time between two sessions of one device
HTTP_WANTED = 0x01

_BEAT = struct.Struct("!4s8sQQHH")
_ACK = struct.Struct("!4s8sQBBI")
BEAT_BYTES = _BEAT.size + TAG_BYTES
ACK_BYTES = _ACK.size + TAG_BYTES

# The order is the wire's: an index names a status in an ack. Only appended to.
STATUSES: tuple[DeviceStatus, ...] = (
    DeviceStatus.UP,
    DeviceStatus.DOWN,
    DeviceStatus.PAUSED,
    DeviceStatus.BLOCKED,
    DeviceStatus.UNSUPPORTED,
    DeviceStatus.INACTIVE,
    DeviceStatus.TERMINATED,
)
_STATUS_INDEX = {status: i for i, status in enumerate(STATUSES)}

# Why a beat was dropped (the server counts them by these names).
MALFORMED = "malformed"
UNKNOWN_SESSION = "unknown_session"
EXPIRED = "expired"
BAD_TAG = "bad_tag"
REPLAYED = "replayed"
STALE = "stale"
BAD_LOAD = "bad_load"


@dataclass(frozen=True, slots=True)
class SessionKeys:
    up: bytes  # device → control plane (beats)
    down: bytes  # control plane → device (acks)


def session_keys(
    shared: bytes,
    *,
    network: str,
    device_id: str,
    session: bytes,
    device_key: bytes,
    server_key: bytes,
) -> SessionKeys:
    """Both directions' keys from an X25519 shared secret and what it binds."""
    if len(shared) != 32 or shared == bytes(32):
        raise ValueError("not an X25519 shared secret")
    context = b"\n".join([network.encode(), device_id.encode(), session, device_key, server_key])
    out = hashlib.blake2b(context, key=shared, digest_size=64, person=b"idlegrid beat v1").digest()
    return SessionKeys(up=out[:32], down=out[32:])


def _tag(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(body, key=key, digest_size=TAG_BYTES).digest()


def load_code(percent: float | None) -> int:
    """A load in percent as the wire carries it."""
    if percent is None:
        return NO_LOAD
    return max(0, min(10_000, round(percent * 100)))


def load_percent(code: int) -> float | None:
    return None if code == NO_LOAD else code / 100


@dataclass(frozen=True, slots=True)
class Beat:
    session: bytes
    counter: int
    sent_ms: int
    cpu_percent: float | None
    gpu_percent: float | None


def encode_beat(
    key: bytes,
    session: bytes,
    counter: int,
    sent_ms: int,
    cpu_percent: float | None,
    gpu_percent: float | None,
) -> bytes:
    body = _BEAT.pack(
        BEAT_MAGIC, session, counter, sent_ms, load_code(cpu_percent), load_code(gpu_percent)
    )
    return body + _tag(key, body)


@dataclass(frozen=True, slots=True)
class Ack:
    session: bytes
    counter: int
    status: DeviceStatus
    http_wanted: bool
    interval_s: float


def encode_ack(
    key: bytes,
    session: bytes,
    counter: int,
    status: DeviceStatus,
    flags: int,
    interval_s: float,
) -> bytes:
    body = _ACK.pack(
        ACK_MAGIC, session, counter, _STATUS_INDEX[status], flags, round(interval_s * 1000)
    )
    return body + _tag(key, body)


def decode_ack(key: bytes, packet: bytes) -> Ack | None:
    """The ack if it is one, made with ``key``; None for anything else."""
    if len(packet) != ACK_BYTES:
        return None
    body, tag = packet[: _ACK.size], packet[_ACK.size :]
    if not hmac.compare_digest(_tag(key, body), tag):
        return None
    magic, session, counter, status, flags, interval_ms = _ACK.unpack(body)
    if magic != ACK_MAGIC or status >= len(STATUSES):
        return None
    return Ack(session, counter, STATUSES[status], bool(flags & HTTP_WANTED), interval_ms / 1000)


@dataclass(slots=True)
class Session:
    device_id: str
    keys: SessionKeys
    expires_at: float
    counter: int = 0  # the last counter taken; a device starts at 1


class BeatSessions:
    """The open sessions: at most one per device, each until it expires.

    Sessions are kept in the order they opened; since every session lives as long,
    that is also the order they expire, so ``sweep`` stops at the first live one.
    """

    def __init__(self, life_s: float, max_skew_s: float) -> None:
        self.life_s = life_s
        self.max_skew_ms = max_skew_s * 1000
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._of_device: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, device_id: str, session: bytes, keys: SessionKeys, now: float) -> Session:
        """Open ``session`` for the device, closing the one it had."""
        if len(session) != SESSION_BYTES or session in self._sessions:
            raise ValueError("a session id is 8 fresh bytes")
        self.close(device_id)
        opened = Session(device_id, keys, now + self.life_s)
        self._sessions[session] = opened
        self._of_device[device_id] = session
        self.sweep(now)
        return opened

    def may_open(self, device_id: str, now: float) -> bool:
        """Whether the device may have a new session now: none open, or its open one
        older than ``REOPEN_S`` (or a tenth of a session's life, if that is less)."""
        session = self._sessions.get(self._of_device.get(device_id, b""))
        if session is None:
            return True
        opened_at = session.expires_at - self.life_s
        return now - opened_at >= min(REOPEN_S, self.life_s / 10)

    def close(self, device_id: str) -> None:
        session = self._of_device.pop(device_id, None)
        if session is not None:
            self._sessions.pop(session, None)

    def sweep(self, now: float) -> int:
        """Forget the expired sessions; how many went."""
        gone = 0
        while self._sessions:
            session, oldest = next(iter(self._sessions.items()))
            if oldest.expires_at > now:
                break
            self._sessions.popitem(last=False)
            if self._of_device.get(oldest.device_id) == session:
                del self._of_device[oldest.device_id]
            gone += 1
        return gone

    def take(self, packet: bytes, now: float) -> tuple[Session, Beat] | str:
        """The beat's session and the beat, taken (its counter recorded); or why not."""
        if len(packet) != BEAT_BYTES:
            return MALFORMED
        body = packet[: _BEAT.size]
        magic, session_id, counter, sent_ms, cpu, gpu = _BEAT.unpack(body)
        if magic != BEAT_MAGIC:
            return MALFORMED
        session = self._sessions.get(session_id)
        if session is None:
            return UNKNOWN_SESSION
        if session.expires_at <= now:
            return EXPIRED
        if not hmac.compare_digest(_tag(session.keys.up, body), packet[_BEAT.size :]):
            return BAD_TAG
        if counter <= session.counter:
            return REPLAYED
        if abs(sent_ms - now * 1000) > self.max_skew_ms:
            return STALE
        if (cpu > 10_000 and cpu != NO_LOAD) or (gpu > 10_000 and gpu != NO_LOAD):
            return BAD_LOAD
        session.counter = counter
        return session, Beat(session_id, counter, sent_ms, load_percent(cpu), load_percent(gpu))
