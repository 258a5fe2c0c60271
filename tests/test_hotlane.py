"""``HotLane`` (server/hotpath.py): the heartbeat and registration routes served ahead
of the router. A request it takes must be answered as the router would answer it
(the same error bodies and metrics, the outer layers' headers and bounds, a 500 that
closes the connection), and every other request must go on to the app untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from solders.keypair import Keypair
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from idlegrid.protocol import RegisterRequest
from idlegrid.sdk.client import sign_request
from idlegrid.server.hotpath import HEARTBEAT_PATH, REGISTER_PATH, HotLane
from tests.conftest import Network, cpu_hardware


def errors_counted(network: Network, code: str) -> float:
    return network.state.metrics.errors.labels(code=code)._value.get()  # type: ignore[no-any-return]


def test_the_lane_takes_its_routes_and_passes_every_other_request_on() -> None:
    passed: list[tuple[str, str]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        passed.append((scope["method"], scope["path"]))
        await PlainTextResponse("app")(scope, receive, send)

    async def hot(request: Request) -> Response:
        return PlainTextResponse(f"hot {request.path_params['device_id']}")

    lane = HotLane(app, [Route("/v1/devices/{device_id}/heartbeat", hot, methods=["POST"])])

    async def requests() -> list[str]:
        transport = httpx.ASGITransport(app=lane)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            hot_answer = (await http.post("/v1/devices/abc/heartbeat")).text
            assert passed == []
            # Another method, a longer path, another route: the app's.
            others = [
                await http.get("/v1/devices/abc/heartbeat"),
                await http.post("/v1/devices/abc/heartbeat/x"),
                await http.post("/v1/devices"),
            ]
            return [hot_answer] + [r.text for r in others]

    assert asyncio.run(requests()) == ["hot abc", "app", "app", "app"]
    assert passed == [
        ("GET", "/v1/devices/abc/heartbeat"),
        ("POST", "/v1/devices/abc/heartbeat/x"),
        ("POST", "/v1/devices"),
    ]


def test_errors_on_the_lane_are_the_apps_answers(network: Network) -> None:
    http = network.http
    before = errors_counted(network, "missing_signature")
    unsigned = http.post(REGISTER_PATH, json={"hardware": cpu_hardware().model_dump()})
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "missing_signature"
    assert unsigned.headers["x-content-type-options"] == "nosniff"
    assert errors_counted(network, "missing_signature") == before + 1
    # Not JSON at all, said to be JSON: a 422 before the signature, as FastAPI does.
    broken = http.post(
        REGISTER_PATH, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["code"] == "invalid_request"
    # The body's bounds still hold in front of the lane.
    limit = network.settings.max_body_bytes
    huge = http.post(REGISTER_PATH, content=b"x" * (limit + 1))
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
    # A method the route does not take goes on to the router: 405, as before.
    wrong = http.get(HEARTBEAT_PATH.format(device_id=str(Keypair().pubkey())))
    assert wrong.status_code == 405


def test_an_unexpected_error_on_the_lane_is_a_500_that_closes_the_connection(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(items: Any, **options: Any) -> list[Any]:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(network.state.devices, "register_many", broken)
    body = RegisterRequest(hardware=cpu_hardware()).model_dump_json().encode()
    request = network.http.build_request(
        "POST", REGISTER_PATH, content=body, headers={"content-type": "application/json"}
    )
    sign_request(request, Keypair(), network.clock(), network.state.network)
    response = network.http.send(request)
    assert response.status_code == 500
    assert response.json()["code"] == "internal"
    assert response.headers["connection"] == "close"
