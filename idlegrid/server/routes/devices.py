"""Device routes: registration and heartbeats (signed by the device), owner
actions (signed by the owner), and public reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from idlegrid.core.lifecycle import OwnerAction
from idlegrid.errors import InvalidRequest
from idlegrid.protocol import (
    COUNTRY_PATTERN,
    PUBKEY_PATTERN,
    DeviceDetail,
    DeviceKind,
    DeviceList,
    DeviceStatus,
    DeviceView,
    HeartbeatRequest,
    HeartbeatResponse,
    Readiness,
    RegisterRequest,
)
from idlegrid.server import hotpath
from idlegrid.server.params import Offset, refuse_nul
from idlegrid.server.state import Signer, StateDep

router = APIRouter(prefix="/v1/devices", tags=["devices"], dependencies=[Depends(refuse_nul)])


@router.post(
    "",
    response_model=DeviceView,
    status_code=201,
    responses={200: {"model": DeviceView, "description": "Already registered: refreshed"}},
)
async def register_device(req: RegisterRequest, signer: Signer, request: Request) -> Response:
    """Signed by the device itself (and, for an owner other than the device, attested
    by the owner). Served by ``server/hotpath.py`` (``HotLane``, ahead of the router);
    declared here for the OpenAPI schema."""
    return await hotpath.register(request)


@router.post("/{device_id}/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(device_id: str, req: HeartbeatRequest, request: Request) -> Response:
    """Signed by the device itself. Served by ``server/hotpath.py`` (``HotLane``, ahead
    of the router); declared here for the OpenAPI schema."""
    return await hotpath.heartbeat(request)


@router.post("/{device_id}/{action}", response_model=DeviceView)
def owner_action(device_id: str, action: str, signer: Signer, state: StateDep) -> DeviceView:
    try:
        parsed = OwnerAction(action)
    except ValueError:
        raise InvalidRequest(
            f"unknown action {action!r}", allowed=", ".join(a.value for a in OwnerAction)
        ) from None
    return state.devices.owner_action(signer, device_id, parsed)


@router.get("", response_model=DeviceList)
def list_devices(
    state: StateDep,
    status: DeviceStatus | None = None,
    readiness: Readiness | None = None,
    owner: Annotated[str | None, Query(pattern=PUBKEY_PATTERN)] = None,
    kind: DeviceKind | None = None,
    model: Annotated[str | None, Query(max_length=64)] = None,
    location: Annotated[str | None, Query(pattern=COUNTRY_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> DeviceList:
    return state.devices.list(
        status=status,
        readiness=readiness,
        owner=owner,
        kind=kind,
        model=model,
        location=location,
        limit=limit,
        offset=offset,
    )


@router.get("/{device_id}", response_model=DeviceDetail)
def get_device(device_id: str, state: StateDep) -> DeviceDetail:
    return state.devices.get(device_id)
