"""Hardening of the HTTP surface (issue 14): slow clients are cut off, a 500 does
not break a keep-alive client, bodies FastAPI cannot parse are ``422
invalid_request`` and a streamed oversized one ``413``, ``HEAD`` works wherever
``GET`` does, the OpenAPI schema names every error and the right content types,
the explorer sends its security headers and believes a forwarded scheme only
from a trusted proxy, and ``wallet new`` takes ``--server`` like its siblings.

The timeouts and the keep-alive behaviour are properties of the server, not of
the app, so those tests talk to uvicorn over a socket: a server process started
as ``idlegrid server`` starts it (``server/serve.py``), or, where a test needs a
route of its own, the same configuration on a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from solders.keypair import Keypair
from typer.testing import CliRunner

from idlegrid.cli.main import app as cli_app
from idlegrid.sdk import Client
from idlegrid.sdk.client import sign_request
from idlegrid.sdk.inprocess import InProcessTransport
from idlegrid.server.app import create_app
from idlegrid.server.middleware import BodyLimit
from idlegrid.server.serve import uvicorn_config
from idlegrid.server.settings import ServerSettings
from idlegrid.worker.raynode import free_port

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
SLACK_S = 2.0  # a loaded CI machine's scheduling, on top of a deadline


def wait_until_serving(url: str, alive: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert alive(), "the server exited before serving"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(url, port) of a control plane in its own process, started as users start it."""
    port = free_port()
    data_dir = tmp_path_factory.mktemp("http-server")
    env = {
        **os.environ,
        "IDLEGRID_ENVIRONMENT": "development",
        "IDLEGRID_DATA_DIR": str(data_dir),
        "RAY_USAGE_STATS_ENABLED": "0",
        # The deadlines, short, through the settings `idlegrid server` reads.
        "IDLEGRID_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "IDLEGRID_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    log = (data_dir / "server.log").open("wb")
    idlegrid = Path(sys.executable).with_name("idlegrid")
    proc = subprocess.Popen(
        [str(idlegrid), "server", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, lambda: proc.poll() is None)
        yield url, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@contextmanager
def served(app: FastAPI, **config: Any) -> Iterator[str]:
    """Serve ``app`` with ``idlegrid server``'s uvicorn configuration, on a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, thread.is_alive)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def settings_here(tmp_path: Path) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path)  # SQLite; tests run as development


@pytest.fixture
def inprocess(settings_here: ServerSettings) -> Iterator[tuple[FastAPI, httpx.Client]]:
    app = create_app(settings_here, run_loops=False)
    with httpx.Client(base_url="http://testserver", transport=InProcessTransport(app)) as http:
        yield app, http


def closed_after(sock: socket.socket, trickle: bytes, limit_s: float) -> tuple[bytes, float]:
    """Send ``trickle`` every 0.2 s (a slow client) until the server closes the
    connection; what it sent back, and how long that took. Fails past ``limit_s``."""
    start = time.monotonic()
    got = b""
    while time.monotonic() - start < limit_s:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return got, time.monotonic() - start
            got += chunk
        elif trickle:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return got, time.monotonic() - start
    pytest.fail(f"the connection was still open after {limit_s} s (got {got[:200]!r})")


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# -- 11: slow clients ----------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(server_process: tuple[str, int]) -> None:
    _, port = server_process
    with socket.create_connection(("127.0.0.1", port)) as sock:
        got, took = closed_after(sock, b"", HEADER_TIMEOUT_S + SLACK_S)
    assert got == b"" and took >= HEADER_TIMEOUT_S * 0.8


def test_headers_sent_a_line_at_a_time_are_cut_off_at_the_deadline(
    server_process: tuple[str, int],
) -> None:
    _, port = server_process
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        got, took = closed_after(sock, b"X-Slow: 1\r\n", HEADER_TIMEOUT_S + SLACK_S)
    assert got == b"" and took >= HEADER_TIMEOUT_S * 0.8


def test_a_body_sent_a_byte_at_a_time_is_answered_408_and_the_connection_closed(
    server_process: tuple[str, int],
) -> None:
    _, port = server_process
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        got, took = closed_after(sock, b" ", BODY_TIMEOUT_S + SLACK_S)
    status, headers, body = split_response(got)
    assert status == 408 and headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == "request_timeout"
    assert took >= BODY_TIMEOUT_S * 0.8


def test_a_large_body_gets_time_in_proportion_to_its_size() -> None:
    """The deadline is the timeout plus the body's size at a slow uplink's rate, so
    a 4 MiB reveal or speed test from a slow device is not cut off."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        body = json.dumps({"got": len(message["body"])}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    limited = BodyLimit(app, 1000, large={"/big": 10_000}, timeout_s=0.2, min_rate_bps=10_000)

    async def answer(path: str, size: int) -> int:
        async def slow_receive() -> dict[str, Any]:
            await asyncio.sleep(0.5)  # past 0.2 s, within 0.2 s + 1 s
            return {"type": "http.request", "body": b"x" * size, "more_body": False}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        headers = [(b"content-length", str(size).encode())]
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        await limited(scope, slow_receive, send)
        return int(sent[0]["status"])

    assert asyncio.run(answer("/big", 10_000)) == 200
    assert asyncio.run(answer("/small", 100)) == 408


def test_prompt_clients_keep_their_connection(server_process: tuple[str, int]) -> None:
    url, _ = server_process
    with httpx.Client(base_url=url) as http:
        for _ in range(3):
            assert http.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT_S * 0.6)  # under both deadlines, every time
        reply = http.post("/v1/devices", content=b"{}", headers={"content-type": "x/y"})
        assert reply.status_code in (401, 422)  # answered, not timed out


# -- 16: a 500 on a keep-alive connection --------------------------------------------------


def test_a_500_says_connection_close_so_the_next_request_is_not_lost(
    settings_here: ServerSettings,
) -> None:
    app = create_app(settings_here, run_loops=False)

    @app.get("/test-only/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with served(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /test-only/boom HTTP/1.1\r\nHost: x\r\n\r\n")
            got, _ = closed_after(sock, b"", 10)
        status, headers, body = split_response(got)
        assert status == 500 and headers["connection"] == "close"
        assert json.loads(body)["code"] == "internal"
        with httpx.Client(base_url=url) as http:  # one pool: reuses what it may
            for _ in range(5):
                assert http.get("/test-only/boom").status_code == 500
                assert http.get("/healthz").status_code == 200


# -- 18: bodies, HEAD, the OpenAPI schema --------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"hardware": "\xff\xfe"}', b"[" * 30_000 + b"]" * 30_000],
    ids=["invalid-utf8", "nested-past-recursion-limit"],
)
def test_bodies_that_cannot_be_parsed_are_422_invalid_request(
    inprocess: tuple[FastAPI, httpx.Client], body: bytes
) -> None:
    _, http = inprocess
    for path in ("/v1/devices", "/v1/quotes"):
        reply = http.post(path, content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 422, reply.text
        assert reply.json()["code"] == "invalid_request"


def test_a_chunked_body_over_the_limit_is_413(server_process: tuple[str, int]) -> None:
    url, _ = server_process

    def ten_megabytes() -> Iterator[bytes]:
        for _ in range(160):
            yield b" " * 65536

    with httpx.Client(base_url=url) as http:
        reply = http.post(
            "/v1/devices", content=ten_megabytes(), headers={"content-type": "application/json"}
        )
    assert "content-length" not in reply.request.headers  # streamed: nothing declared
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"


def test_head_is_answered_wherever_get_is(server_process: tuple[str, int]) -> None:
    url, _ = server_process
    with httpx.Client(base_url=url) as http:
        head = http.head("/healthz")
        get = http.get("/healthz")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert http.head("/explorer").status_code == 200
        assert http.head("/v1/rewards/claim").status_code == 405  # POST only


def test_a_signed_head_is_checked_as_the_head_it_was_signed_as(
    inprocess: tuple[FastAPI, httpx.Client],
) -> None:
    """HEAD is served as GET, but its signature covers HEAD, the method the client
    sent (it was refused 401); a GET's signature does not pass for a HEAD."""
    _, http = inprocess
    network = Client("http://testserver", http=http).network()
    wallet = Keypair()
    head = http.build_request("HEAD", "/v1/api-keys")
    sign_request(head, wallet, time.time(), network)
    answer = http.send(head)
    assert answer.status_code == 200 and answer.content == b""
    as_get = http.build_request("GET", "/v1/api-keys")
    sign_request(as_get, wallet, time.time(), network)
    replayed = http.build_request("HEAD", "/v1/api-keys", headers=as_get.headers)
    assert http.send(replayed).status_code == 401


def test_the_openapi_schema_documents_every_error_as_the_error_body(
    inprocess: tuple[FastAPI, httpx.Client],
) -> None:
    _, http = inprocess
    schema = http.get("/openapi.json").json()
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    assert set(schema["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    operations = [(p, m, op) for p, ops in schema["paths"].items() for m, op in ops.items()]
    assert len(operations) > 40
    for path, method, op in operations:
        errors = {s: r for s, r in op["responses"].items() if not s.startswith("2")}
        assert {"4XX", "500"} <= errors.keys(), (method, path)
        for status, response in errors.items():
            assert response["content"] == {"application/json": {"schema": error_ref}}, status
        if "{" in path:
            assert "404" in errors, (method, path)
        if method == "post":
            assert {"408", "413", "422"} <= errors.keys(), (method, path)
    heartbeat = schema["paths"]["/v1/devices/{device_id}/heartbeat"]["post"]["responses"]
    assert {"401", "403"} <= heartbeat.keys()
    assert "`bad_signature`" in heartbeat["401"]["description"]
    assert "401" not in schema["paths"]["/v1/devices/{device_id}"]["get"]["responses"]


def test_the_openapi_schema_names_the_right_content_types(
    inprocess: tuple[FastAPI, httpx.Client],
) -> None:
    _, http = inprocess
    paths = http.get("/openapi.json").json()["paths"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    speedtest = paths["/v1/speedtest"]["get"]["responses"]["200"]["content"]
    assert list(speedtest) == ["application/octet-stream"]
    assert speedtest["application/octet-stream"]["schema"]["format"] == "binary"
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")


# -- 19: the explorer's headers and cookie -------------------------------------------------

EXPLORER_PAGES = [
    "/explorer",
    "/explorer/devices",
    "/explorer/map",
    "/explorer/blocks",
    "/explorer/staking",
    "/explorer/token",
    "/explorer/clusters",
    "/explorer/devices/nosuchdevice",
]


def test_the_explorer_sends_security_headers_and_needs_nothing_inline(
    inprocess: tuple[FastAPI, httpx.Client],
) -> None:
    _, http = inprocess
    for path in [*EXPLORER_PAGES, "/explorer/static/explorer.css"]:
        reply = http.get(path)
        assert reply.status_code in (200, 404), path
        csp = reply.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "same-origin"
        if reply.headers["content-type"].startswith("text/html"):
            # The policy allows no inline script or style: the pages must need none.
            html = reply.text.lower()
            assert "<script" not in html and "<style" not in html, path
            assert " style=" not in html and " onclick=" not in html, path
    api = http.get("/healthz")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api.headers  # /docs loads Swagger UI's CDN


def _remember_key(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/explorer/clusters/key",
        data={"api_key": key},
        headers=headers,
        follow_redirects=False,
    )


def test_the_key_cookie_is_secure_behind_a_trusted_tls_proxy_only(
    settings_here: ServerSettings,
) -> None:
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}
    app = create_app(settings_here, run_loops=False)
    with served(app, trusted_proxies=["127.0.0.1"]) as url:
        with Client(url, keypair=Keypair()) as buyer:
            key = buyer.create_api_key("explorer").key
        assert key is not None
        behind_proxy = _remember_key(url, key, **forwarded)
        assert behind_proxy.status_code == 303
        assert "secure" in behind_proxy.headers["set-cookie"].lower()
        plain = _remember_key(url, key)
        assert "secure" not in plain.headers["set-cookie"].lower()
    # By default no proxy is trusted: a client cannot claim https (or an address).
    with served(app) as url:
        spoofed = _remember_key(url, key, **forwarded)
        assert spoofed.status_code == 303
        assert "secure" not in spoofed.headers["set-cookie"].lower()


# -- 20: wallet new --server ---------------------------------------------------------------


def test_wallet_new_accepts_server_like_its_siblings(tmp_path: Path) -> None:
    key = tmp_path / "me.json"
    args = ["wallet", "new", "--keypair", str(key), "--server", "http://127.0.0.1:9", "--json"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["created"] and key.is_file()
