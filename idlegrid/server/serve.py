"""Serving the control plane over HTTP: uvicorn with the limits a public server needs.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but not one
that is slow: a client that sends half its headers, a byte at a time, holds its
connection (and a file descriptor) as long as it likes, and a fresh connection that
sends nothing is never closed. So the HTTP protocol here adds a deadline: a
request's headers must be complete within ``header_timeout_s`` of the connection
opening or of the request's first byte, else the connection is closed. The
body has its own deadline, in ``middleware.BodyLimit`` (408, a JSON error).

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from
``trusted_proxies`` (addresses or networks of the reverse proxies that terminate
TLS), and by default from no one: an untrusted client could otherwise claim any
address or scheme. The explorer marks its cookie ``Secure`` when the scheme it
sees, after this, is https.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5  # uvicorn's own default, said here so it is not lost
GRACEFUL_SHUTDOWN_S = 5


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers are
    not complete within ``header_timeout_s`` of the connection opening or of the
    request's first byte. (An idle connection between requests is uvicorn's
    ``timeout_keep_alive``'s.)"""

    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._waiting_after: object = None  # the cycle answered before this request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if self._header_deadline is None and idle:
            self._arm_header_deadline()  # the first bytes of a new request
        super().data_received(data)
        # uvicorn starts a new cycle once a request's headers are parsed.
        if self._header_deadline is not None and self.cycle is not self._waiting_after:
            self._cancel_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._waiting_after = self.cycle
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol_with_header_timeout(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    return type(
        "HeaderDeadlineProtocol",
        (HeaderDeadlineProtocol,),
        {"header_timeout_s": header_timeout_s},
    )


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    trusted_proxies: Sequence[str] = (),
    log_level: str = "warning",
) -> uvicorn.Config:
    """How ``idlegrid server`` runs ``app`` (tests serve with the same config)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_with_header_timeout(header_timeout_s),
        log_level=log_level,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # uvicorn's default trusts loopback (and FORWARDED_ALLOW_IPS): say it here.
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies),
    )


def serve(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    trusted_proxies: Sequence[str] = (),
) -> None:
    """Serve until interrupted; exit 3 if the server never started (as ``uvicorn.run``:
    the port is taken, say)."""
    config = uvicorn_config(
        app, host, port, header_timeout_s=header_timeout_s, trusted_proxies=trusted_proxies
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)
