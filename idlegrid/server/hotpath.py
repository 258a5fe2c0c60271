"""The heartbeat endpoint as a bare Starlette route.

Heartbeats are the one request every device sends all the time. FastAPI's
dependency solving and validation layers cost more than the work itself (about
60 % of a heartbeat's server time), so this route does the same steps by hand:
parse the body with the wire model, authenticate, update the liveness table,
reply. Errors raise the same exceptions, mapped by the app's handlers. The
FastAPI route of the same path in ``routes/devices.py`` documents it in the
OpenAPI schema and delegates here; this route is matched first.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idlegrid.errors import InvalidRequest, NotYourDevice, UnknownDevice
from idlegrid.protocol import HeartbeatRequest, HeartbeatResponse
from idlegrid.server.state import app_state, signed_by

HEARTBEAT_PATH = "/v1/devices/{device_id}/heartbeat"


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


route = Route(HEARTBEAT_PATH, heartbeat, methods=["POST"])
