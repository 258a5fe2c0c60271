"""Connectivity tiers (pure) and the agent's speed test against the API."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.keypair import Keypair

from idlegrid.core import signing
from idlegrid.core.connectivity import mbps, tier, tier_name
from idlegrid.errors import (
    BadSignature,
    MissingSignature,
    NotYourDevice,
    PayloadTooLarge,
    RateLimited,
    UnknownDevice,
)
from idlegrid.protocol import ConnectivityReport, RegisterRequest
from idlegrid.worker.agent import Agent
from idlegrid.worker.duties import ConnectivityDuty
from tests.conftest import Network, cpu_hardware


@pytest.mark.parametrize(
    ("down", "up", "expected"),
    [(2000, 1500, 4), (1600, 1199, 3), (800, 600, 3), (500, 300, 2), (100, 10, 1), (99, 500, 0)],
)
def test_tiers_follow_io_nets_floors(down: float, up: float, expected: int) -> None:
    assert tier(down, up) == expected


@given(st.floats(0, 1e5), st.floats(0, 1e5), st.floats(0, 1e4))
def test_more_bandwidth_never_lowers_the_tier(down: float, up: float, more: float) -> None:
    assert tier(down + more, up) >= tier(down, up)
    assert tier(down, up + more) >= tier(down, up)


def test_names_and_units() -> None:
    assert [tier_name(n) for n in (4, 3, 2, 1, 0)] == [
        "ultra_high",
        "high",
        "medium",
        "low",
        "none",
    ]
    assert mbps(125_000_000, 1.0) == 1000.0


def test_agent_measures_and_reports_its_connectivity(network: Network) -> None:
    kp = Keypair()
    client = network.client(kp)
    client.register_device(RegisterRequest(hardware=cpu_hardware()))
    agent = Agent(client, cpu_hardware())
    ConnectivityDuty(nbytes=1024 * 1024).run(agent)
    view = network.client().get_device(agent.device_id)
    assert view.tier is not None and view.tier >= 1
    assert any(e.kind == "connectivity" for e in view.events)


def test_only_the_device_reports_its_connectivity_and_uploads_are_bounded(
    network: Network,
) -> None:
    kp, other = Keypair(), Keypair()
    network.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))
    report = ConnectivityReport(latency_ms=1, download_mbps=1e4, upload_mbps=1e4)
    with pytest.raises(NotYourDevice):
        network.client(other).report_connectivity(str(kp.pubkey()), report)
    with pytest.raises(PayloadTooLarge):
        network.client(kp).speedtest_upload(bytes(33 * 1024 * 1024))


def test_the_schema_says_the_upload_takes_bytes(network: Network) -> None:
    # Undocumented until the fuzzer (tests/test_fuzz_openapi.py) could send it none.
    upload = network.app.openapi()["paths"]["/v1/speedtest"]["post"]
    assert "application/octet-stream" in upload["requestBody"]["content"]


def test_the_speed_test_is_for_registered_devices_and_rate_limited(network: Network) -> None:
    stranger, kp = Keypair(), Keypair()
    unsigned = network.http.get("/v1/speedtest", params={"bytes": "1024"})  # no bytes served
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, MissingSignature.code)
    with pytest.raises(UnknownDevice):  # a fresh key: refused before its upload is read
        network.client(stranger).speedtest_upload(bytes(20 * 1024 * 1024))
    with pytest.raises(UnknownDevice):
        network.client(stranger).speedtest_download(1024)
    network.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))
    device = network.client(kp)
    per_hour = network.settings.speedtests_per_hour
    for _ in range(per_hour // 2):
        assert device.speedtest_download(1024) == 1024
        device.speedtest_upload(bytes(1024))
    with pytest.raises(RateLimited) as refused:
        device.speedtest_download(1024)
    assert refused.value.details["retry_after_s"] > 0
    network.clock.advance(3600 / per_hour)
    assert device.speedtest_download(1024) == 1024  # one transfer back after its share


def test_a_forged_speed_test_spends_nothing_of_the_device_it_names(network: Network) -> None:
    """A device's public key is public: a request that names it with a signature that
    does not verify is refused before its body is read, and spends none of the device's
    allowance (it did: twelve of them locked the device out for an hour, and each held
    its 32 MiB body; benchmarks/abuse.py). An upload declares its body's SHA-256, which
    the signature covers, and the body streamed in must be that one."""
    from idlegrid.sdk.client import sign_request

    kp, forger = Keypair(), Keypair()
    device_id = str(kp.pubkey())
    network.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))
    net_id = network.client().network()
    body = bytes(4096)
    declared = {signing.HEADER_CONTENT_SHA256: hashlib.sha256(body).hexdigest()}
    undeclared = network.http.build_request("POST", "/v1/speedtest", content=body)
    sign_request(undeclared, kp, network.clock(), net_id)  # the device's own, no digest
    answer = network.http.send(undeclared)
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request")
    for _ in range(2 * network.settings.speedtests_per_hour):
        request = network.http.build_request(
            "POST", "/v1/speedtest", content=body, headers=declared
        )
        sign_request(request, forger, network.clock(), net_id)
        request.headers[signing.HEADER_KEY] = device_id  # claims to be the device
        answer = network.http.send(request)
        assert (answer.status_code, answer.json()["code"]) == (401, BadSignature.code)
    # A genuine signature over other bytes than those sent does not pass either.
    signed_digest = {signing.HEADER_CONTENT_SHA256: hashlib.sha256(b"signed bytes").hexdigest()}
    request = network.http.build_request(
        "POST", "/v1/speedtest", content=b"signed bytes", headers=signed_digest
    )
    sign_request(request, kp, network.clock(), net_id)
    tampered = network.http.build_request(
        "POST", "/v1/speedtest", content=b"other bytes!", headers=request.headers
    )
    assert network.http.send(tampered).status_code == 401
    device = network.client(kp)
    device.speedtest_upload(bytes(1024))  # its allowance is intact
    assert device.speedtest_download(1024) == 1024
