"""A synchronous httpx transport that serves requests from an ASGI app in this
process: the control plane without a socket, for tests and embedding.

httpx's own ``ASGITransport`` is async-only; this runs it on an event loop in a
background thread (an anyio blocking portal) and runs the app's lifespan
there too, so startup and shutdown hooks behave as under a server.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio.from_thread
import httpx


class InProcessTransport(httpx.BaseTransport):
    def __init__(self, app: Any) -> None:
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        lifespan = app.router.lifespan_context(app)
        self._stack.enter_context(self._portal.wrap_async_context_manager(lifespan))
        # App errors become 500 responses, as a server would send them.
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._portal.call(self._handle, request)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = await self._asgi.handle_async_request(request)
        content = await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    def close(self) -> None:
        """Run the app's shutdown and stop the event loop thread."""
        self._stack.close()
