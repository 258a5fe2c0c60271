"""Beats: heartbeats as one authenticated datagram after a signed handshake.

The rules (core/beats.py) with plain values; then the control plane's real UDP port
(an in-process app, its lifespan bound to a free loopback port) through the agent's
real channel, with real X25519 keys: what a beat does, and that forgery, replay,
staleness, another device's session and another network are refused.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.keypair import Keypair

from idlegrid.core import beats
from idlegrid.errors import InvalidRequest
from idlegrid.protocol import DeviceStatus, HeartbeatRequest, RegisterRequest
from idlegrid.worker.agent import HeartbeatDuty
from idlegrid.worker.beats import MAX_MISSES, BeatChannel
from tests.conftest import FakeClock, Network, cpu_hardware

KEYS = beats.SessionKeys(up=bytes(range(32)), down=bytes(range(32, 64)))
SID = b"\x01" * 8
NOW = 1_800_000_000.0


def sessions(life_s: float = 3600) -> beats.BeatSessions:
    table = beats.BeatSessions(life_s, max_skew_s=60)
    table.open("dev-a", SID, KEYS, NOW)
    return table


def beat(counter: int = 1, *, sent: float = NOW, key: bytes = KEYS.up, sid: bytes = SID) -> bytes:
    return beats.encode_beat(key, sid, counter, int(sent * 1000), 12.5, None)


def test_a_beat_is_taken_once_and_in_order() -> None:
    table = sessions()
    taken = table.take(beat(1), NOW)
    assert not isinstance(taken, str)
    session, got = taken
    assert (session.device_id, got.counter, got.cpu_percent, got.gpu_percent) == (
        "dev-a",
        1,
        12.5,
        None,
    )
    assert table.take(beat(1), NOW) == beats.REPLAYED
    assert not isinstance(table.take(beat(5), NOW), str)
    assert table.take(beat(3), NOW) == beats.REPLAYED  # late, after a newer one


def test_forged_stale_expired_and_unknown_beats_are_dropped() -> None:
    table = sessions(life_s=100)
    assert table.take(beat(key=bytes(32)), NOW) == beats.BAD_TAG
    assert table.take(beat(sent=NOW - 61), NOW) == beats.STALE
    assert table.take(beat(sent=NOW + 61), NOW) == beats.STALE
    assert table.take(beat(sid=b"\x02" * 8), NOW) == beats.UNKNOWN_SESSION
    assert table.take(beat()[:-1], NOW) == beats.MALFORMED
    assert table.take(b"IGB2" + beat()[4:], NOW) == beats.MALFORMED
    assert table.take(beat(), NOW + 100) == beats.EXPIRED
    # None of the refusals moved the counter: the genuine beat 1 is still taken.
    assert not isinstance(table.take(beat(1), NOW), str)


@given(st.integers(0, beats.BEAT_BYTES - 1), st.integers(1, 255))
def test_any_changed_byte_is_refused(position: int, flip: int) -> None:
    packet = bytearray(beat(1))
    packet[position] ^= flip
    assert isinstance(sessions().take(bytes(packet), NOW), str)


def test_a_load_out_of_range_is_refused_even_when_signed() -> None:
    body = beats._BEAT.pack(beats.BEAT_MAGIC, SID, 1, int(NOW * 1000), 10_001, beats.NO_LOAD)
    assert sessions().take(body + beats._tag(KEYS.up, body), NOW) == beats.BAD_LOAD


def test_a_device_has_one_session_and_expired_ones_are_swept() -> None:
    table = sessions(life_s=100)
    table.open("dev-a", b"\x03" * 8, KEYS, NOW + 1)  # a renewal closes the first
    assert table.take(beat(), NOW + 1) == beats.UNKNOWN_SESSION
    table.open("dev-b", b"\x04" * 8, KEYS, NOW + 50)
    assert len(table) == 2
    assert table.sweep(NOW + 120) == 1 and len(table) == 1
    with pytest.raises(ValueError):
        table.open("dev-c", b"\x04" * 8, KEYS, NOW + 50)  # a session id is never reused


def test_a_device_gets_a_new_session_only_after_the_reopen_gap() -> None:
    table = sessions()
    assert not table.may_open("dev-a", NOW + beats.REOPEN_S - 1)
    assert table.may_open("dev-a", NOW + beats.REOPEN_S)
    assert table.may_open("dev-b", NOW)  # another device is not held back
    table.close("dev-a")
    assert table.may_open("dev-a", NOW)  # none open (closed, as on a server restart)
    short = sessions(life_s=100)  # a short life: a tenth of it
    assert not short.may_open("dev-a", NOW + 9) and short.may_open("dev-a", NOW + 10)


def test_keys_bind_network_device_session_and_both_public_keys() -> None:
    shared = bytes(range(1, 33))
    base = dict(
        network="n1", device_id="d1", session=SID, device_key=b"a" * 32, server_key=b"b" * 32
    )
    keys = beats.session_keys(shared, **base)  # type: ignore[arg-type]
    assert keys.up != keys.down
    for name, other in [
        ("network", "n2"),
        ("device_id", "d2"),
        ("session", b"\x09" * 8),
        ("device_key", b"c" * 32),
        ("server_key", b"c" * 32),
    ]:
        changed = beats.session_keys(shared, **{**base, name: other})  # type: ignore[arg-type]
        assert changed.up != keys.up and changed.down != keys.down, name
    with pytest.raises(ValueError):
        beats.session_keys(bytes(32), **base)  # type: ignore[arg-type]


def test_acks_round_trip_only_under_their_key_and_amplify_nothing() -> None:
    ack = beats.encode_ack(KEYS.down, SID, 7, DeviceStatus.PAUSED, beats.HTTP_WANTED, 10.0)
    got = beats.decode_ack(KEYS.down, ack)
    assert got == beats.Ack(SID, 7, DeviceStatus.PAUSED, True, 10.0)
    assert beats.decode_ack(KEYS.up, ack) is None
    assert beats.decode_ack(KEYS.down, ack[:-1]) is None
    assert beats.ACK_BYTES <= beats.BEAT_BYTES


# -- the control plane's port, through the agent's channel ------------------------------


def registered(network: Network) -> tuple[Keypair, str]:
    kp = Keypair()
    network.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))
    return kp, str(kp.pubkey())


OPENED: list[BeatChannel] = []


@pytest.fixture(autouse=True)
def _close_channels() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def channel(network: Network, kp: Keypair, clock: FakeClock) -> BeatChannel:
    client = network.client(kp)
    ch = BeatChannel(
        network=client.network, device_id=str(kp.pubkey()), api_host="127.0.0.1", wall=clock
    )
    OPENED.append(ch)
    return ch


def open_channel(network: Network, kp: Keypair, clock: FakeClock) -> BeatChannel:
    ch = channel(network, kp, clock)
    resp = network.client(kp).heartbeat(str(kp.pubkey()), HeartbeatRequest(beat_key=ch.new_key()))
    assert resp.beat is not None and resp.beat.port == network.state.beats.port
    ch.accept(resp.beat)
    assert ch.open
    return ch


def refused(network: Network) -> dict[str, float]:
    counts = {}
    for metric in network.state.metrics.beats_refused.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["reason"]] = sample.value
    return counts


def test_a_beat_keeps_a_device_up_and_carries_its_load(network: Network, clock: FakeClock) -> None:
    kp, device = registered(network)
    ch = open_channel(network, kp, clock)
    before = network.state.metrics.heartbeats._value.get()
    clock.advance(20)
    ack = ch.beat(42.0, None, timeout_s=5)
    assert ack is not None and ack.status is DeviceStatus.UP and not ack.http_wanted
    assert ack.interval_s == network.settings.heartbeat_interval_s
    assert network.state.liveness.get(device).last_seen == clock.now
    assert network.state.metrics.heartbeats._value.get() == before + 1
    # Beats alone keep it up past the TTL a silent device would exceed.
    for _ in range(3):
        clock.advance(network.settings.heartbeat_interval_s)
        assert ch.beat(1.0, None, timeout_s=5) is not None
        network.tick()
    assert network.client().get_device(device).status is DeviceStatus.UP


def test_a_waiting_challenge_asks_for_an_http_heartbeat(network: Network, clock: FakeClock) -> None:
    kp, device = registered(network)
    ch = open_channel(network, kp, clock)
    network.state.mailbox.set_challenge(device, "ch-1")
    ack = ch.beat(None, None, timeout_s=5)
    assert ack is not None and ack.http_wanted


def test_forged_replayed_stale_and_foreign_beats_get_no_answer(
    network: Network, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    kp, device = registered(network)
    ch = open_channel(network, kp, clock)
    other_kp, _ = registered(network)
    other = open_channel(network, other_kp, clock)
    port = network.state.beats.port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.3)
    request.addfinalizer(sock.close)
    session = ch._session
    sent = int(clock.now * 1000)

    def answered(packet: bytes) -> bool:
        sock.sendto(packet, ("127.0.0.1", port))
        try:
            sock.recv(64)
        except TimeoutError:
            return False
        return True

    good = beats.encode_beat(ch._keys.up, session, 10, sent, None, None)  # type: ignore[union-attr]
    assert answered(good)
    assert not answered(good)  # replayed
    forged = beats.encode_beat(bytes(32), session, 11, sent, None, None)
    assert not answered(forged)
    stale = beats.encode_beat(ch._keys.up, session, 12, sent - 61_000, None, None)  # type: ignore[union-attr]
    assert not answered(stale)
    # Another device's key on this device's session, and the reverse.
    foreign = beats.encode_beat(other._keys.up, session, 13, sent, None, None)  # type: ignore[union-attr]
    assert not answered(foreign)
    rng = random.Random(7)
    for size in (0, 1, 47, 48, 49, 1500):
        assert not answered(bytes(rng.getrandbits(8) for _ in range(size)))
    counts = refused(network)
    assert counts[beats.REPLAYED] == 1 and counts[beats.BAD_TAG] == 2
    assert counts[beats.STALE] == 1 and counts[beats.MALFORMED] >= 5
    assert network.state.liveness.get(device) is not None
    # The port still serves: the device's next beat (counter above the last taken).
    assert answered(beats.encode_beat(ch._keys.up, session, 14, sent, None, None))  # type: ignore[union-attr]


def test_a_session_made_for_another_network_never_verifies(
    network: Network, clock: FakeClock
) -> None:
    kp, _ = registered(network)
    ch = BeatChannel(
        network=lambda: "idlegrid:elsewhere",
        device_id=str(kp.pubkey()),
        api_host="127.0.0.1",
        wall=clock,
    )
    OPENED.append(ch)
    resp = network.client(kp).heartbeat(str(kp.pubkey()), HeartbeatRequest(beat_key=ch.new_key()))
    assert resp.beat is not None
    ch.accept(resp.beat)
    assert ch.beat(None, None, timeout_s=0.3) is None
    assert refused(network)[beats.BAD_TAG] == 1


def test_offers_to_one_device_are_spaced(network: Network, clock: FakeClock) -> None:
    """Each session costs the server an X25519 exchange: a device asking in every
    signed heartbeat gets one per REOPEN_S, and stays on HTTP in between."""
    kp, device = registered(network)
    client = network.client(kp)
    first = client.heartbeat(
        device, HeartbeatRequest(beat_key=channel(network, kp, clock).new_key())
    )
    again = client.heartbeat(
        device, HeartbeatRequest(beat_key=channel(network, kp, clock).new_key())
    )
    assert first.beat is not None and again.beat is None
    assert again.status is DeviceStatus.UP
    clock.advance(beats.REOPEN_S)
    later = client.heartbeat(
        device, HeartbeatRequest(beat_key=channel(network, kp, clock).new_key())
    )
    assert later.beat is not None and later.beat.session != first.beat.session


def test_a_low_order_beat_key_is_a_422(network: Network) -> None:
    kp, device = registered(network)
    with pytest.raises(InvalidRequest):
        network.client(kp).heartbeat(device, HeartbeatRequest(beat_key="00" * 32))


class View:
    """What the heartbeat duty sees of an agent."""

    def __init__(self, network: Network, kp: Keypair) -> None:
        self.client = network.client(kp)
        self.device_id = str(kp.pubkey())
        self.hardware = cpu_hardware()
        self.status: DeviceStatus | None = None
        self.pending_challenge: str | None = None
        self.assignment = None


def test_the_duty_beats_between_http_heartbeats_and_falls_back(
    network: Network, clock: FakeClock
) -> None:
    kp, device = registered(network)
    agent = View(network, kp)
    duty = HeartbeatDuty(10.0, channel(network, kp, clock))
    http = network.state.metrics.heartbeats
    duty.run(agent)  # HTTP: no session yet; opens one
    assert duty.beats is not None and duty.beats.open
    opened = duty.beats._session
    duty.run(agent)  # a beat
    assert len(network.state.beats.sessions) == 1 and duty.beats._session == opened
    assert agent.status is DeviceStatus.UP and http._value.get() == 2
    network.state.mailbox.set_challenge(device, "ch-9")
    duty.run(agent)  # a beat whose ack asks for HTTP, then HTTP with the challenge
    assert agent.pending_challenge == "ch-9"
    # Serving a cluster, it heartbeats over HTTP (only the reply can end the assignment).
    agent.assignment = object()  # type: ignore[assignment]
    network.state.mailbox.set_challenge(device, None)
    before = http._value.get()
    duty.run(agent)
    assert http._value.get() == before + 1 and agent.assignment is None
    # The control plane restarts (its sessions are gone): the beat goes unanswered and
    # the duty heartbeats over HTTP at once, with a new session.
    network.state.beats.sessions.close(device)
    before = http._value.get()
    duty.run(agent)
    assert http._value.get() == before + 1 and duty.beats.open
    assert duty.beats._session != opened


def test_unanswered_beats_leave_the_duty_on_http(network: Network, clock: FakeClock) -> None:
    kp, _ = registered(network)
    agent = View(network, kp)
    ch = channel(network, kp, clock)
    duty = HeartbeatDuty(0.2, ch)
    network.state.beats.port = closed_port()  # offers point where nothing answers
    for _ in range(MAX_MISSES):
        duty.run(agent)  # HTTP, offered a session nobody answers
        duty.run(agent)  # the beat misses; HTTP again
        clock.advance(beats.REOPEN_S)  # so that the next HTTP heartbeat is offered one
    assert not ch.open and not ch.wants_session()
    assert agent.status is DeviceStatus.UP


def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port
