"""ASGI middleware: bound what a request body may cost before anything reads it,
answer HEAD wherever GET is, and send the explorer's security headers.

``BodyLimit`` refuses a body that is too large (413) or too slow (408). It signals
from inside the app's ``receive`` by raising ``BodyRefused``, an ``HTTPException``:
FastAPI re-raises those from its body parsing (any other exception there becomes a
bare 400), and the app's handler for it answers with the error's JSON body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idlegrid.errors import IdlegridError, PayloadTooLarge, RequestTimeout

BODY_TIMEOUT_S = 15.0
# A large body (a 4 MiB reveal, the speed test's upload) gets longer, as if sent at
# this rate: 512 kbit/s, a slow uplink; 64 KiB then adds a second.
BODY_MIN_RATE_BPS = 64 * 1024


class BodyRefused(HTTPException):
    """The body was refused while the app read it; ``error`` says why."""

    def __init__(self, error: IdlegridError, headers: dict[str, str] | None = None) -> None:
        super().__init__(error.http_status, error.message, headers)
        self.error = error


class BodyLimit:
    """Answer 413 for a body over ``max_bytes``, declared or streamed, and 408 (with
    ``Connection: close``: the rest of the body may still be on its way) for one not
    received within ``timeout_s`` of the request's start, plus its size (declared,
    else the limit) at ``min_rate_bps``. Paths ending in one of ``large`` (suffix →
    limit) get that limit instead."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        large: dict[str, int] | None = None,
        timeout_s: float = BODY_TIMEOUT_S,
        min_rate_bps: float = BODY_MIN_RATE_BPS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.large = large or {}
        self.timeout_s = timeout_s
        self.min_rate_bps = min_rate_bps

    def limit(self, path: str) -> int:
        return next(
            (n for suffix, n in self.large.items() if path.endswith(suffix)), self.max_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit(scope.get("path", ""))
        expected = max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = max_bytes + 1
                if declared > max_bytes:
                    await _send_error(send, PayloadTooLarge(max_bytes=max_bytes))
                    return
                expected = declared
        timeout_s = self.timeout_s + expected / self.min_rate_bps
        deadline = time.monotonic() + timeout_s
        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # e.g. waiting for http.disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                raise _timed_out(timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _too_large(max_bytes)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyRefused as exc:  # an app without the handler (a bare route's app)
            if started:
                raise
            await _send_error(send, exc.error, exc.headers)


def _too_large(max_bytes: int) -> BodyRefused:
    return BodyRefused(PayloadTooLarge(max_bytes=max_bytes))


def _timed_out(timeout_s: float) -> BodyRefused:
    err = RequestTimeout(timeout_s=round(timeout_s, 1))
    return BodyRefused(err, headers={"connection": "close"})


async def _send_error(
    send: Send, err: IdlegridError, extra: Mapping[str, str] | None = None
) -> None:
    body = json.dumps(err.to_body()).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in (extra or {}).items()),
    ]
    await send({"type": "http.response.start", "status": err.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


SIGNED_METHOD = "idlegrid.signed_method"  # scope key: the method as the client sent it


class HeadAsGet:
    """Answer ``HEAD`` as the app answers ``GET``, without the body (RFC 9110 §9.3.2).
    FastAPI routes accept only the methods they name, so ``HEAD /healthz`` would be
    405; a load balancer's health check often uses it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        # The signed method stays HEAD: a signature covers the method the client sent.
        await self.app({**scope, "method": "GET", SIGNED_METHOD: "HEAD"}, receive, headers_only)


# The explorer's pages load only their own stylesheet: no script, no inline style,
# no frames, no other origin. Forms post only to the explorer itself.
EXPLORER_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
EXPLORER_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", EXPLORER_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` on every response, and under ``prefix``
    (the explorer) a strict Content-Security-Policy, no framing and no referrer
    beyond this site. The API's own docs pages (``/docs``) load Swagger UI from a
    CDN, so the policy is the explorer's alone."""

    def __init__(self, app: ASGIApp, prefix: str = "/explorer") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        explorer = path == self.prefix or path.startswith(self.prefix + "/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"x-content-type-options"
                ]
                headers.append((b"x-content-type-options", b"nosniff"))
                if explorer:
                    headers.extend(EXPLORER_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
