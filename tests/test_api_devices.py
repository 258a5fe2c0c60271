"""In-process API tests through the SDK: registration, heartbeats, signatures,
owners, the reaper and uptime. Each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
from solders.keypair import Keypair

from idlegrid.core import signing
from idlegrid.errors import (
    BadSignature,
    DeviceTerminated,
    InvalidRequest,
    InvalidTransition,
    MissingSignature,
    NotYourDevice,
    RateLimited,
    ReplayedRequest,
    StaleRequest,
    UnknownDevice,
)
from idlegrid.protocol import DeviceStatus, RegisterRequest
from idlegrid.sdk.client import sign_request
from idlegrid.server.ratelimit import RateLimiter, source_key
from idlegrid.server.settings import ServerSettings
from tests.conftest import T0, FakeClock, Network, cpu_hardware, gpu_hardware

S = DeviceStatus

# A valid registration but for its sandbox, which is filled in by the cases.
SANDBOX_BODY = b'{"hardware": ' + cpu_hardware().model_dump_json().encode() + b', "sandbox": %s}'


def register(net: Network, keypair: Keypair | None = None, **kw: object) -> Keypair:
    keypair = keypair or Keypair()
    hardware = kw.pop("hardware", cpu_hardware())
    net.client(keypair).register_device(RegisterRequest(hardware=hardware, **kw))
    return keypair


def test_register_detects_model_and_is_up(network: Network) -> None:
    kp = Keypair()
    view = network.client(kp).register_device(
        RegisterRequest(hardware=gpu_hardware(), location="DE", name="rig-1")
    )
    assert view.id == str(kp.pubkey()) and view.owner == view.id
    assert (view.status, view.kind.value, view.processors) == (S.UP, "gpu", 8)
    assert view.model == "h100-sxm-80gb"
    assert view.readiness.value == "pending"
    assert network.client().get_device(view.id).hardware.gpus[0].vram_mb == 81559


def test_reregistration_is_idempotent_and_notes_hardware_changes(network: Network) -> None:
    kp = register(network)
    again = network.client(kp).register_device(RegisterRequest(hardware=gpu_hardware()))
    assert again.model == "h100-sxm-80gb"
    assert network.client().list_devices().total == 1
    kinds = [e.kind for e in network.client().get_device(again.id).events]
    assert "hardware_changed" in kinds and "registered" in kinds


def test_the_schema_documents_both_answers_to_a_registration(network: Network) -> None:
    # The fuzzer (tests/test_fuzz_openapi.py) found the 200 of a re-registration
    # undocumented: the schema named only 201.
    kp = register(network)
    body = RegisterRequest(hardware=cpu_hardware()).model_dump_json().encode()
    request = network.http.build_request(
        "POST", "/v1/devices", content=body, headers={"content-type": "application/json"}
    )
    sign_request(request, kp, network.clock(), network.client().network())
    assert network.http.send(request).status_code == 200
    responses = network.app.openapi()["paths"]["/v1/devices"]["post"]["responses"]
    for status in ("200", "201"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/DeviceView"}, status


def test_unknown_hardware_is_unsupported_not_guessed(network: Network) -> None:
    kp = register(network, hardware=gpu_hardware("NVIDIA GeForce GTX 9999"))
    view = network.client().get_device(str(kp.pubkey()))
    assert view.status is S.UNSUPPORTED and view.model is None


def test_heartbeats_accrue_uptime_by_hour(network: Network, clock: FakeClock) -> None:
    clock.now = T0 + 3600 - 15  # 15 s before an hour boundary
    kp = register(network)
    device = str(kp.pubkey())
    client = network.client(kp)
    for _ in range(3):
        clock.advance(10)
        assert client.heartbeat(device).status is S.UP
    network.tick()
    detail = network.client().get_device(device)
    assert detail.uptime_s == pytest.approx(30)
    assert [(h.hour, h.seconds) for h in detail.uptime_hours] == [(T0, 15.0), (T0 + 3600, 15.0)]


def test_silent_device_goes_down_then_inactive_and_comes_back(
    network: Network, clock: FakeClock
) -> None:
    kp = register(network)
    device = str(kp.pubkey())
    ttl = network.settings.heartbeat_ttl_s
    clock.advance(ttl)
    network.tick()
    assert network.client().get_device(device).status is S.UP
    clock.advance(1)
    network.tick()
    assert network.client().get_device(device).status is S.DOWN
    clock.advance(5 * 24 * 3600)
    network.tick()
    assert network.client().get_device(device).status is S.INACTIVE
    # Inactive, and committed: the liveness table lets it go (registration is free:
    # devices that never come back must not hold memory), and its heartbeat brings
    # it back from the database.
    assert network.state.liveness.get(device) is None
    metrics = network.http.get("/metrics").text
    assert 'idlegrid_devices{status="inactive"} 1.0' in metrics
    assert network.client(kp).heartbeat(device).status is S.UP
    assert network.state.liveness.get(device) is not None
    network.tick()
    events = [e.detail.get("to") for e in network.client().get_device(device).events]
    assert events[:3] == ["up", "inactive", "down"]
    # The gap is not uptime.
    assert network.client().get_device(device).uptime_s == 0

    # Inactive again, then a restart: it is not loaded, and still comes back.
    clock.advance(5 * 24 * 3600 + 2 * ttl)
    network.tick()
    network.tick()
    restarted = Network(network.settings, clock)
    try:
        assert len(restarted.state.liveness) == 0
        assert restarted.client(kp).heartbeat(device).status is S.UP
    finally:
        restarted.close()


def test_forged_signature_is_refused(network: Network) -> None:
    victim = register(network)
    forger = Network_client_claiming(network, Keypair(), str(victim.pubkey()))
    resp = forger.post(f"/v1/devices/{victim.pubkey()}/heartbeat", json={})
    assert resp.status_code == 401 and resp.json()["code"] == "bad_signature"


def Network_client_claiming(network: Network, signer: Keypair, claimed: str) -> httpx.Client:
    """A raw client that signs with ``signer`` but names ``claimed`` as the key."""

    here = network.client().network()

    def forge(request: httpx.Request) -> None:
        sign_request(request, signer, network.clock(), here)
        request.headers[signing.HEADER_KEY] = claimed

    network.http.event_hooks["request"] = [forge]
    return network.http


def test_stale_and_replayed_and_cross_device_requests_are_refused(
    network: Network, clock: FakeClock
) -> None:
    a, b = register(network), register(network)
    # Stale: the agent's clock is 2 minutes behind.
    behind = FakeClock(clock.now - 120)
    from idlegrid.sdk import Client

    stale = Client("http://testserver", keypair=a, http=network.http, clock=behind)
    with pytest.raises(StaleRequest):
        stale.heartbeat(str(a.pubkey()))
    # Replayed: the same signed request twice.
    request = network.http.build_request(
        "POST",
        f"/v1/devices/{a.pubkey()}/heartbeat",
        content=b"{}",
        headers={"content-type": "application/json"},
    )
    sign_request(request, a, clock.now, network.client().network())
    assert network.http.send(request).status_code == 200
    replay = network.http.send(request)
    assert replay.status_code == 401 and replay.json()["code"] == ReplayedRequest.code
    # Cross-device: a signs a heartbeat for b.
    with pytest.raises(NotYourDevice):
        network.client(a).heartbeat(str(b.pubkey()))
    # Unsigned.
    resp = network.http.post(f"/v1/devices/{a.pubkey()}/heartbeat", json={})
    assert resp.status_code == 401 and resp.json()["code"] == MissingSignature.code


def test_unknown_device_heartbeat_is_404(network: Network) -> None:
    kp = Keypair()
    with pytest.raises(UnknownDevice):
        network.client(kp).heartbeat(str(kp.pubkey()))


def test_owner_controls_their_devices_only(network: Network, clock: FakeClock) -> None:
    owner, stranger = Keypair(), Keypair()
    devices = []
    for _ in range(2):
        kp = Keypair()
        attestation = owner.sign_message(
            signing.owner_attestation_message(network.client().network(), str(kp.pubkey()))
        )
        register(network, kp, owner=str(owner.pubkey()), owner_signature=str(attestation))
        devices.append(str(kp.pubkey()))
    mine = network.client().list_devices(owner=str(owner.pubkey()))
    assert mine.total == 2
    boss = network.client(owner)
    with pytest.raises(NotYourDevice):
        network.client(stranger).pause_device(devices[0])
    assert boss.pause_device(devices[0]).status is S.PAUSED
    # A paused device heartbeats but stays paused; the reaper leaves it alone.
    assert network.client(Keypair()).list_devices(status=S.PAUSED).total == 1
    with pytest.raises(InvalidTransition):
        boss.resume_device(devices[1])
    assert boss.resume_device(devices[0]).status is S.UP
    assert boss.terminate_device(devices[1]).status is S.TERMINATED
    with pytest.raises(DeviceTerminated):
        boss.terminate_device(devices[1])
    network.tick()
    assert network.client().get_device(devices[1]).status is S.TERMINATED


def test_terminated_device_cannot_heartbeat_or_reregister(network: Network) -> None:
    kp = register(network)
    device = str(kp.pubkey())
    network.client(kp).terminate_device(device)  # its own owner
    with pytest.raises(DeviceTerminated):
        network.client(kp).heartbeat(device)
    with pytest.raises(DeviceTerminated):
        register(network, kp)


def test_owner_attestation_must_verify(network: Network) -> None:
    owner = Keypair()
    kp = Keypair()
    wrong = owner.sign_message(
        signing.owner_attestation_message(network.client().network(), "someone-else")
    )
    with pytest.raises(BadSignature):
        register(network, kp, owner=str(owner.pubkey()), owner_signature=str(wrong))
    with pytest.raises(BadSignature):
        register(network, kp, owner=str(owner.pubkey()))
    assert network.client().list_devices().total == 0


def test_one_flush_writes_every_queued_change_of_many_devices(
    network: Network, clock: FakeClock
) -> None:
    """A flush holding two changes per device (down, then inactive, as after a long
    partition) writes each device's newest status in one statement and an event for
    each change, in order."""
    devices = [str(register(network).pubkey()) for _ in range(3)]
    network.tick()
    clock.advance(network.settings.heartbeat_ttl_s + 1)
    network.state.liveness.reap(clock.now)  # up → down, queued
    clock.advance(5 * 24 * 3600)
    network.state.liveness.reap(clock.now)  # down → inactive, queued
    network.tick()
    for device in devices:
        view = network.client().get_device(device)
        assert view.status is S.INACTIVE
        trail = [e.detail.get("to") for e in view.events if e.kind == "status"]
        assert trail[:2] == ["inactive", "down"]  # newest first


def test_a_late_flush_never_undoes_an_owner_action(network: Network, clock: FakeClock) -> None:
    kp = register(network)
    device = str(kp.pubkey())
    clock.advance(network.settings.heartbeat_ttl_s + 1)
    network.state.liveness.reap(clock.now)  # queued: up → down, not yet flushed
    network.client(kp).pause_device(device)
    network.tick()  # now the stale "down" is written... or not
    assert network.client().get_device(device).status is S.PAUSED
    network.state.devices.load_liveness()  # as after a restart: from the database
    assert network.state.liveness.get(device).status is S.PAUSED


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/v1/devices?limit=0", None, 422, "invalid_request"),
        ("GET", "/v1/devices?status=sleepy", None, 422, "invalid_request"),
        ("GET", "/v1/devices/nope", None, 404, "unknown_device"),
        ("GET", "/v1/nothing-here", None, 404, "not_found"),
        ("DELETE", "/v1/devices", None, 405, "method_not_allowed"),
        ("POST", "/v1/devices", b"{not json", 401, "missing_signature"),
    ],
)
def test_bad_requests_get_json_errors(
    network: Network, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    resp = network.http.request(method, path, content=body)
    assert resp.status_code == status
    assert resp.json()["code"] == code


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 422, "invalid_request"),
        (b'{"hardware": {"kind": "quantum"}}', 422, "invalid_request"),
        (b'{"hardware": 7}', 422, "invalid_request"),
        (b"[]", 422, "invalid_request"),
        (SANDBOX_BODY % b'{"backend": "docker"}', 422, "invalid_request"),
        (SANDBOX_BODY % b'{"backend": "bubblewrap", "enforces": "all"}', 422, "invalid_request"),
        (SANDBOX_BODY % b'{"enforces": ["user\\u0000"]}', 422, "invalid_request"),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
    ],
)
def test_bad_signed_bodies_get_json_errors(
    network: Network, body: bytes, status: int, code: str
) -> None:
    request = network.http.build_request(
        "POST", "/v1/devices", content=body, headers={"content-type": "application/json"}
    )
    sign_request(request, Keypair(), network.clock(), network.client().network())
    resp = network.http.send(request)
    assert (resp.status_code, resp.json()["code"]) == (status, code)


def test_bad_location_is_refused_by_the_sdk_model() -> None:
    with pytest.raises(ValueError):
        RegisterRequest(hardware=cpu_hardware(), location="Germany")


def test_list_filters_and_pages(network: Network) -> None:
    for i in range(5):
        register(network, location="US" if i % 2 else "DE")
    register(network, hardware=gpu_hardware())
    c = network.client()
    assert c.list_devices(location="DE").total == 3
    assert c.list_devices(kind="gpu").total == 1
    page = c.list_devices(limit=2, offset=4)
    assert page.total == 6 and len(page.items) == 2
    with pytest.raises(InvalidRequest):
        c.list_devices(limit=5000)


def test_health_metrics_and_openapi(network: Network) -> None:
    kp = register(network)
    network.client(kp).heartbeat(str(kp.pubkey()))
    health = network.client().health()
    assert health.devices_live == 1
    metrics = network.http.get("/metrics").text
    assert "idlegrid_heartbeats_total 1.0" in metrics
    assert 'idlegrid_devices{status="up"} 1.0' in metrics
    assert "/v1/devices/{device_id}/heartbeat" in network.http.get("/openapi.json").json()["paths"]


def test_state_survives_a_control_plane_restart(network: Network, clock: FakeClock) -> None:
    kp = register(network)
    device = str(kp.pubkey())
    for _ in range(3):
        clock.advance(5)
        network.client(kp).heartbeat(device)
    network.close()  # lifespan shutdown flushes what is queued
    restarted = Network(network.settings, clock)
    try:
        assert restarted.client().get_device(device).uptime_s == pytest.approx(15)
        clock.advance(5)
        assert restarted.client(kp).heartbeat(device).status is S.UP
        restarted.tick()
        assert restarted.client().get_device(device).uptime_s == pytest.approx(20)
    finally:
        restarted.close()


def test_an_unexpected_failure_is_a_json_500_without_a_traceback(network: Network) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("secret internals")

    network.state.devices.list = broken
    resp = network.http.get("/v1/devices")
    assert resp.status_code == 500
    assert resp.json() == {
        "code": "internal",
        "message": "The server failed unexpectedly; the failure is logged there.",
        "details": {},
    }
    assert "secret" not in resp.text


@pytest.mark.parametrize("body", [b"{not json", b'{"cpu_percent": 500}', b"[]"])
def test_bad_heartbeat_bodies_get_json_errors(network: Network, body: bytes) -> None:
    kp = register(network)
    request = network.http.build_request(
        "POST",
        f"/v1/devices/{kp.pubkey()}/heartbeat",
        content=body,
        headers={"content-type": "application/json"},
    )
    sign_request(request, kp, network.clock(), network.client().network())
    resp = network.http.send(request)
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_request")
    assert resp.json()["details"]["errors"]


def test_a_request_signed_for_another_deployment_is_refused(
    network: Network, settings: ServerSettings, clock: FakeClock
) -> None:
    here = network.client().health().network
    assert here == f"idlegrid:{network.state.ledger.authority.pubkey()}"
    staging = Network(settings.model_copy(update={"network_id": "idlegrid:staging"}), clock)
    try:
        assert staging.client().network() == "idlegrid:staging"
        body = RegisterRequest(hardware=cpu_hardware()).model_dump_json().encode()
        request = staging.http.build_request(
            "POST", "/v1/devices", content=body, headers={"content-type": "application/json"}
        )
        sign_request(request, Keypair(), clock(), "idlegrid:staging")
        del request.headers[signing.HEADER_NETWORK]  # a captured request, replayed here
        replayed = network.http.send(request)
        assert (replayed.status_code, replayed.json()["code"]) == (401, "bad_signature")
        assert replayed.json()["details"]["network"] == here
        assert staging.http.send(request).status_code == 201  # where it was meant for
    finally:
        staging.close()


def test_registrations_are_rate_limited_per_source_and_owner(
    settings: ServerSettings, clock: FakeClock
) -> None:
    limited = Network(
        settings.model_copy(update={"registration_rate_per_s": 1.0, "registration_burst": 3}),
        clock,
    )
    try:
        for _ in range(3):
            register(limited)
        with pytest.raises(RateLimited) as refused:  # a fourth fresh key, same address
            register(limited)
        assert refused.value.details["limit"] == "source"
        assert 0 < refused.value.details["retry_after_s"] <= 1
        clock.advance(1)
        register(limited)  # a token is back
        # A forged attestation is refused before it spends the named owner's tokens.
        victim, kp = Keypair(), Keypair()
        clock.advance(10)
        with pytest.raises(BadSignature):
            register(
                limited, kp, owner=str(victim.pubkey()), owner_signature=str(kp.sign_message(b"x"))
            )
        limits = limited.app.state.registration_limits
        assert f"owner:{victim.pubkey()}" not in limits
    finally:
        limited.close()


def test_an_ipv6_source_is_its_64_and_a_mapped_ipv4_its_address() -> None:
    """One IPv6 host is usually given a whole /64: a bucket per address would give it
    2^64 buckets, so the /64 is the source."""
    a, b = source_key("2001:db8:1:2::1"), source_key("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert a == b == "source:2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != a
    assert source_key("::ffff:192.0.2.7") == source_key("192.0.2.7") == "source:192.0.2.7"
    assert source_key(None) == "source:unknown"
    assert source_key("testclient") == "source:testclient"


def test_a_rate_limiter_refills_and_forgets_the_oldest_keys() -> None:
    limits = RateLimiter(rate_per_s=2.0, burst=2, max_keys=3)
    assert limits.take("a", 0.0, spend=False) is None and len(limits) == 0  # only a look
    assert limits.take("a", 0.0) is None and limits.take("a", 0.0) is None
    assert limits.take("a", 0.0, spend=False) == pytest.approx(0.5)  # looking takes nothing
    assert limits.take("a", 0.0) == pytest.approx(0.5)  # one token in half a second
    assert limits.take("a", 0.5) is None
    for key in "bcd":
        limits.take(key, 1.0)
    assert len(limits) == 3 and "a" not in limits
    assert RateLimiter(rate_per_s=0, burst=1).take("x", 0.0) is None  # 0: unlimited
