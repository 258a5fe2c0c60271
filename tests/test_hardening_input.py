"""Hostile input is a 4xx, never a 500 (issue #14): amounts in one spelling only,
integers within 64 bits, finite floats, no NUL in text, timestamps of ASCII digits.
The API tests run on SQLite and on PostgreSQL, whose driver refuses what SQLite takes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from solders.keypair import Keypair

from idlegrid import protocol
from idlegrid.core import signing
from idlegrid.core.fees import parse_amount
from idlegrid.core.pricing import parse_usd
from idlegrid.errors import InvalidAmount, InvalidRequest
from idlegrid.protocol import (
    CommitRequest,
    DeployRequest,
    FaucetRequest,
    RegisterRequest,
    WithdrawRequest,
)
from idlegrid.sdk.client import sign_request
from tests.conftest import T0, Network, cpu_hardware

BIG = 2**63  # one past the largest BIGINT

# -- helpers ---------------------------------------------------------------------------------


def signed(
    net: Network, keypair: Keypair, method: str, path: str, body: object = None
) -> httpx.Response:
    """Send ``body`` (JSON text as given, or an object to encode) signed by ``keypair``."""
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = net.http.build_request(
        method, path, content=content, headers={"content-type": "application/json"}
    )
    sign_request(request, keypair, net.clock(), net.client().network())
    return net.http.send(request)


def registration(**hardware: Any) -> dict[str, Any]:
    hw = json.loads(cpu_hardware().model_dump_json())
    return {"hardware": {**hw, **hardware}}


def code_of(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["code"]


# -- 12, 17: amounts have one spelling -------------------------------------------------------

NOT_AMOUNTS = [
    "1e999999",  # was decimal.Overflow, a 500
    "1E+3",
    "1e-2",
    " 1 ",
    "1 ",
    "1\n",
    "1_000",
    "+5",
    "-5",
    "-0",
    ".5",
    "5.",
    "1..5",
    "1.2.3",
    "١٢",  # Arabic-Indic digits: were credited as 12 IO
    "１２",  # full-width digits
    "0x10",
    "1,5",
    "NaN",
    "Infinity",
    "",
    "1" * 65,
]


@pytest.mark.parametrize("text", NOT_AMOUNTS)
def test_only_the_canonical_decimal_spelling_is_an_amount(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text, "IO")
    with pytest.raises(InvalidRequest):
        parse_usd(text, "usd", Decimal(0))


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("12", 12 * 10**8),
        ("12.5", 1_250_000_000),
        ("0.00000001", 1),
        ("1.500000000000000000000000000000", 150_000_000),  # more zeros than a context holds
        ("007", 7 * 10**8),
        ("92233720368.54775807", BIG - 1),
    ],
)
def test_canonical_amounts_parse_exactly(text: str, units: int) -> None:
    assert parse_amount(text, "IO") == units


def test_over_precise_and_too_large_amounts_are_refused_exactly() -> None:
    # 31 significant digits: a decimal context of 28 would have rounded this to 1 IO.
    with pytest.raises(InvalidAmount):
        parse_amount("1.000000000000000000000000000001", "IO")
    with pytest.raises(InvalidAmount):
        parse_amount("92233720368.54775808", "IO")  # 2**63 units
    assert parse_usd("2.5", "usd", Decimal(0)) == Decimal("2.5")


def owned_device(net: Network) -> tuple[Keypair, str]:
    kp = Keypair()
    net.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))
    return kp, str(kp.pubkey())


@pytest.mark.parametrize("amount", ["1e999999", "١٢", " 1 ", "1_000", "+5", ".5"])
def test_every_amount_route_answers_invalid_amount(network: Network, amount: str) -> None:
    kp, me = owned_device(network)
    body = {"amount": amount}
    for path, sent in [
        (f"/v1/wallets/{me}/faucet", {"asset": "IO", **body}),
        (f"/v1/wallets/{me}/withdrawals", {"id": "w-1", "asset": "IO", **body}),
        (f"/v1/devices/{me}/stake", body),
        (f"/v1/devices/{me}/unstake", body),
        (f"/v1/devices/{me}/costake", body),
    ]:
        assert code_of(signed(network, kp, "POST", path, sent)) == (422, "invalid_amount"), path
    assert network.client().wallet(me).balances[0].balance == "0.00000000"


def test_the_sdk_refuses_what_the_server_refuses(network: Network) -> None:
    kp, me = owned_device(network)
    with pytest.raises(InvalidAmount):
        network.client(kp).faucet(me, FaucetRequest(asset="IO", amount="١٢"))
    with pytest.raises(InvalidAmount):
        network.client(kp).withdraw(me, WithdrawRequest(id="w", asset="IO", amount="1e999999"))
    with pytest.raises(InvalidRequest):
        network.client(kp).set_floor(me, " 2")


# -- 17: timestamps are ASCII digits -----------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        f"+{int(T0)}",
        f" {int(T0)}",
        f"{int(T0)} ",
        "1_798_675_200",
        "١٧٩٨٦٧٥٢٠٠",  # T0 in Arabic-Indic digits
        f"{int(T0)}.0",
        "",
        "9" * 5000,
    ],
)
def test_only_ascii_digit_timestamps_are_fresh(timestamp: str) -> None:
    assert signing.check_timestamp(timestamp, T0, 60) is None
    assert signing.check_timestamp(str(int(T0)), T0, 60) == 0


@pytest.mark.parametrize("timestamp", [f"+{int(T0)}", "1_798_675_200", f"0{int(T0)}x"])
def test_a_signed_request_with_a_non_digit_timestamp_is_refused(
    network: Network, timestamp: str
) -> None:
    kp = Keypair()
    body = json.dumps(registration()).encode()
    nonce = "n" * 24
    message = signing.signing_message(
        network.client().network(), "POST", "/v1/devices", body, timestamp, nonce
    )
    headers = {
        "content-type": "application/json",
        signing.HEADER_KEY: str(kp.pubkey()),
        signing.HEADER_TIMESTAMP: timestamp,
        signing.HEADER_NONCE: nonce,
        signing.HEADER_SIGNATURE: str(kp.sign_message(message)),
    }
    resp = network.http.post("/v1/devices", content=body, headers=headers)
    assert code_of(resp) == (401, "bad_signature")
    assert network.client().list_devices().total == 0


# -- 13: integers within 64 bits -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/devices?offset={BIG}",
        "/v1/devices?offset=-1",
        f"/v1/blocks/{BIG}",
        f"/v1/blocks/{-BIG - 1}",
        "/v1/blocks/-1",
        f"/v1/blocks/{BIG}/inputs.json",
        f"/v1/blocks/{-BIG - 1}/outputs.json",
        f"/explorer/devices?offset={BIG}",
        f"/explorer/blocks/{BIG}",
        f"/explorer/blocks/{-BIG - 1}",
    ],
)
def test_integers_beyond_64_bits_are_invalid_requests(network: Network, path: str) -> None:
    assert code_of(network.http.get(path)) == (422, "invalid_request")


@pytest.mark.parametrize(
    "path",
    [f"/v1/blocks/{BIG - 1}", f"/v1/blocks/{BIG - 1}/inputs.json", f"/explorer/blocks/{BIG - 1}"],
)
def test_the_largest_block_number_is_merely_missing(network: Network, path: str) -> None:
    assert network.http.get(path).status_code == 404
    assert network.http.get(f"/v1/devices?offset={BIG - 1}").json() == {"items": [], "total": 0}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("starts_block", BIG),
        ("ends_block", BIG),
        ("gpu_points", BIG),
        ("cpu_points", 2**60),  # × 1,000 milli-points would overflow its column
        ("points_per_io", 2**31),  # a 32-bit column
    ],
)
def test_season_fields_are_bounded(network: Network, field: str, value: int) -> None:
    season = {
        "name": "s1",
        "starts_block": 0,
        "ends_block": 10,
        "gpu_points": 1000,
        "cpu_points": 1000,
        "points_per_io": 90,
    }
    authority = network.state.ledger.authority
    resp = signed(network, authority, "POST", "/v1/seasons", {**season, field: value})
    assert code_of(resp) == (422, "invalid_request")
    assert network.client().seasons().items == []


def test_a_season_that_ends_before_it_starts_is_named_in_wire_terms(network: Network) -> None:
    """Was 422 ``invalid_amount`` naming the core's ``ends_hour`` (the schema fuzzer)."""
    season = {"name": "s1", "starts_block": 5, "ends_block": 5, "gpu_points": 1,
              "cpu_points": 1, "points_per_io": 90}  # fmt: skip
    resp = signed(network, network.state.ledger.authority, "POST", "/v1/seasons", season)
    assert code_of(resp) == (422, "invalid_request")
    assert resp.json()["details"] == {"starts_block": 5, "ends_block": 5}


# -- 14: floats are finite ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e400", "1e10"])
def test_non_finite_floats_in_a_registration_are_refused(network: Network, value: str) -> None:
    body = json.dumps(registration(disk_total_gb=0.5)).replace("0.5", value)
    resp = signed(network, Keypair(), "POST", "/v1/devices", body)
    assert code_of(resp) == (422, "invalid_request")
    assert network.client().list_devices().total == 0  # and the list still parses


def test_every_wire_model_refuses_non_finite_floats() -> None:
    def models(cls: type[BaseModel]) -> list[type[BaseModel]]:
        return [cls, *(m for sub in cls.__subclasses__() for m in models(sub))]

    wire = models(protocol.Wire)
    assert len(wire) > 50
    assert all(m.model_config.get("allow_inf_nan") is False for m in wire)
    with pytest.raises(ValidationError):
        CommitRequest(root="0" * 64, prover="numpy", elapsed_s=float("inf"))
    with pytest.raises(ValidationError):
        root = "0" * 64
        CommitRequest.model_validate_json(
            f'{{"root": "{root}", "prover": "x", "elapsed_s": 1e400}}'
        )


@pytest.mark.parametrize("value", ["true", "false"])
def test_a_boolean_is_not_a_number(network: Network, value: str) -> None:
    """JSON ``true`` where a number belongs was taken as 1 (a co-stake share of 1 bps,
    a heartbeat's GPU load); found by the schema fuzzer's negative-data check."""
    kp = Keypair()
    device = str(kp.pubkey())
    network.client(kp).register_device(RegisterRequest(hardware=cpu_hardware()))
    resp = signed(
        network, kp, "POST", f"/v1/devices/{device}/heartbeat", f'{{"gpu_percent": {value}}}'
    )
    assert code_of(resp) == (422, "invalid_request")
    body = registration(ram_mb=value == "true")  # a bool where an int belongs
    assert code_of(signed(network, Keypair(), "POST", "/v1/devices", body)) == (
        422,
        "invalid_request",
    )
    ok = signed(network, kp, "POST", f"/v1/devices/{device}/heartbeat", '{"gpu_percent": 1}')
    assert ok.status_code == 200


# -- 15: no NUL in text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {**registration(), "name": "rig\u0000"},
        registration(cpu_model="Xeon\u0000"),
        registration(os_version="\u0000"),
        {**registration(), "agent_version": "1.0\u0000"},
        {**registration(), "sandbox": {"reason": "\u0000"}},
    ],
)
def test_nul_in_a_body_string_is_an_invalid_request(network: Network, body: dict[str, Any]) -> None:
    resp = signed(network, Keypair(), "POST", "/v1/devices", body)
    assert code_of(resp) == (422, "invalid_request")
    assert network.client().list_devices().total == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/devices/rig%00",
        "/v1/devices?model=h100%00",
        "/v1/devices?model%00=x",
        "/v1/devices/rig%00/proofs",
        "/v1/devices/rig%00/stake",
        "/v1/seasons/s%00",
        "/v1/slashes?device_id=%00",
        "/v1/prices/history?model=%00",
        "/explorer/devices/rig%00",
        "/explorer/devices?model=%00",
        "/explorer/wallets/w%00",
    ],
)
def test_nul_in_a_path_or_query_is_an_invalid_request(network: Network, path: str) -> None:
    assert code_of(network.http.get(path)) == (422, "invalid_request")


def test_nul_in_signed_paths_and_nested_lists_is_refused(network: Network) -> None:
    kp, me = owned_device(network)
    resp = signed(network, kp, "POST", f"/v1/devices/{me}%00/pause", {})
    assert code_of(resp) == (422, "invalid_request")
    resp = signed(network, kp, "POST", "/v1/slashes/x%00/appeal", {"text": "mine"})
    assert code_of(resp) == (422, "invalid_request")
    with pytest.raises(ValidationError):
        DeployRequest(name="a", hardware="cpu", suppliers=["\x00"])
    with pytest.raises(ValidationError):
        protocol.ErrorBody(code="x", message="y", details={"k\x00": 1})
