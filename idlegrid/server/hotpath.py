"""The heartbeat and registration endpoints as bare Starlette routes.

Heartbeats are the one request every device sends all the time, and
registrations come in floods when a fleet joins. FastAPI's dependency solving
and validation layers cost more than a heartbeat's own work (about 60 % of its
server time) and about half of a registration's, so these routes do the same
steps by hand: parse the body with the wire model, authenticate, do the work,
reply. Errors raise the same exceptions, mapped by the app's handlers. The
FastAPI routes of the same paths in ``routes/devices.py`` document them in the
OpenAPI schema and delegate here.

``HotLane``, the innermost middleware, serves these routes before the router is
reached: a request to them still passes the outer layers (the 500 handler, security
headers, the body's bounds) but not the router's matching, the exception middleware
and the dependency exit stack, each a layer of ASGI calls around every request and
its response. Errors are answered by the same handlers the app registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from idlegrid.errors import InvalidRequest, NotYourDevice, UnknownDevice
from idlegrid.protocol import HeartbeatRequest, HeartbeatResponse, RegisterRequest
from idlegrid.server.group_commit import GroupCommit
from idlegrid.server.params import refuse_nul
from idlegrid.server.ratelimit import RateLimiter, source_key
from idlegrid.server.state import app_scoped, app_state, network_of, signed_by

HEARTBEAT_PATH = "/v1/devices/{device_id}/heartbeat"
REGISTER_PATH = "/v1/devices"


async def heartbeat(request: Request) -> Response:
    state = app_state(request)
    device_id: str = request.path_params["device_id"]
    signer = await signed_by(request)
    try:
        req = HeartbeatRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc.errors()) from None
    if signer != device_id:
        raise NotYourDevice("a device may only heartbeat for itself", device_id=device_id)
    now = state.clock()
    try:
        status = state.liveness.heartbeat(device_id, now)
    except UnknownDevice:
        # Back after being inactive (the table lets such devices go): once, from the
        # database; an id it has never registered stays unknown.
        if not await run_in_threadpool(state.devices.revive, device_id):
            raise
        status = state.liveness.heartbeat(device_id, now)
    state.metrics.heartbeats.inc()
    box = state.mailbox.get(device_id)
    state.idle.heartbeat(device_id, req.cpu_percent, req.gpu_percent, box.busy, now)
    reply = HeartbeatResponse(
        status=status,
        interval_s=state.settings.heartbeat_interval_s,
        server_time=now,
        challenge_id=box.challenge_id,
        assignment=state.overlay.freshen(box.assignment, device_id) if box.assignment else None,
        beat=state.beats.offer(device_id, req.beat_key, now) if req.beat_key else None,
    )
    return Response(reply.model_dump_json(), media_type="application/json")


async def register(request: Request) -> Response:
    await refuse_nul(request)
    state = app_state(request)
    # FastAPI's order, kept: the body is read first (one too slow is a 408), a JSON
    # body that does not parse is a 422 signed or not, and only then the signature
    # (401) before what the body says is judged.
    body = await request.body()
    try:
        req = RegisterRequest.model_validate_json(body)
    except ValidationError as exc:
        said_json = "json" in request.headers.get("content-type", "")
        if not (said_json and all(e["type"] == "json_invalid" for e in exc.errors())):
            await signed_by(request)  # unsigned: a 401 first
        raise InvalidRequest.from_validation(exc.errors()) from None
    signer = await signed_by(request)
    # Registration is free, so it is rate-limited per source and per owner (one token
    # each), before it costs a thread or a transaction; an owner's bucket only once its
    # attestation verifies, so nobody can spend another owner's registrations.
    if req.owner is not None and req.owner != signer:
        state.devices.check_attestation(signer, req, network_of(state))
    settings = state.settings
    limits = app_scoped(
        request,
        "registration_limits",
        lambda: RateLimiter(settings.registration_rate_per_s, settings.registration_burst),
    )
    now = state.clock()
    source = source_key(request.client.host if request.client is not None else None)
    for key in (source, f"owner:{req.owner or signer}"):
        limits.check(key, now, "registrations")
    # Group commit: registrations that arrive together share one transaction, and
    # those waiting wait on the event loop, so that a flood of them cannot fill the
    # thread pool and starve everyone else's requests of threads (group_commit.py).
    group = app_scoped(
        request,
        "registration_group",
        # The attestations were verified above, before the owner's bucket.
        lambda: GroupCommit(
            partial(state.devices.register_many, attested=True),
            lanes=settings.registration_concurrency,
        ),
    )
    view, created = await group.submit((signer, req, network_of(state)))
    state.metrics.registrations.labels(new=str(created).lower()).inc()
    return Response(
        view.model_dump_json(), status_code=201 if created else 200, media_type="application/json"
    )


routes = [
    Route(HEARTBEAT_PATH, heartbeat, methods=["POST"]),
    Route(REGISTER_PATH, register, methods=["POST"]),
]


class HotLane:
    """Serve ``routes`` (plain request → response endpoints) ahead of the router, and
    pass every other request on to ``app``."""

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await self._serve(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            # The app's handler of the nearest class, as ExceptionMiddleware picks one;
            # the catch-all (Exception, a 500) is the outermost middleware's to answer.
            handlers = scope["app"].exception_handlers
            handler = next(
                (handlers[c] for c in type(exc).__mro__ if c in handlers and c is not Exception),
                None,
            )
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
