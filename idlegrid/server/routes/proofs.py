"""Proof-of-compute and connectivity routes. Challenge steps are signed by the
device; proof history is public."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from idlegrid.core import signing
from idlegrid.core.connectivity import tier_name
from idlegrid.errors import BadSignature, InvalidRequest, NotYourDevice, UnknownDevice
from idlegrid.protocol import (
    ChallengeSpec,
    CommitRequest,
    CommitResponse,
    ConnectivityReport,
    ConnectivityView,
    ProofList,
    ProofView,
    RevealRequest,
)
from idlegrid.server.auth import authenticate_digest, precheck
from idlegrid.server.params import refuse_nul
from idlegrid.server.ratelimit import RateLimiter
from idlegrid.server.state import (
    Signer,
    StateDep,
    app_scoped,
    app_state,
    network_of,
    signed_by,
    signed_method,
    signed_target,
)

router = APIRouter(tags=["proofs"], dependencies=[Depends(refuse_nul)])

SPEEDTEST_MAX_BYTES = 32 * 1024 * 1024
SPEEDTEST_UPLOADS = 4  # uploads read at once; the rest wait
_NOISE = os.urandom(1024 * 1024)  # incompressible, so a proxy cannot flatter the figure


@router.get("/v1/devices/{device_id}/challenges/{proof_id}", response_model=ChallengeSpec)
def fetch_challenge(
    device_id: str, proof_id: str, signer: Signer, state: StateDep
) -> ChallengeSpec:
    """The challenge's seed and sizes; the clock starts at the first fetch."""
    return state.proofs.fetch(signer, device_id, proof_id)


@router.post(
    "/v1/devices/{device_id}/challenges/{proof_id}/commit",
    response_model=CommitResponse | ProofView,
)
def commit_challenge(
    device_id: str, proof_id: str, req: CommitRequest, signer: Signer, state: StateDep
) -> CommitResponse | ProofView:
    """The Merkle root; answered with the checks to open (or the failed proof)."""
    return state.proofs.commit(signer, device_id, proof_id, req)


@router.post("/v1/devices/{device_id}/challenges/{proof_id}/reveal", response_model=ProofView)
def reveal_challenge(
    device_id: str, proof_id: str, req: RevealRequest, signer: Signer, state: StateDep
) -> ProofView:
    """The openings; answered with the verdict."""
    return state.proofs.reveal(signer, device_id, proof_id, req)


@router.get("/v1/devices/{device_id}/proofs", response_model=ProofList)
def proof_history(device_id: str, state: StateDep) -> ProofList:
    return state.proofs.history(device_id)


@router.post("/v1/devices/{device_id}/connectivity", response_model=ConnectivityView)
def report_connectivity(
    device_id: str, req: ConnectivityReport, signer: Signer, state: StateDep
) -> ConnectivityView:
    if signer != device_id:
        raise NotYourDevice("a device reports only its own connectivity", device_id=device_id)
    tier = state.devices.set_connectivity(device_id, req)
    return ConnectivityView(**req.model_dump(), tier=tier, tier_name=tier_name(tier))


def registered_device(request: Request) -> str:
    """The device a speed-test request claims to come from, if it is registered and
    has a transfer left: the speed test spends the network's bandwidth, so strangers
    get none of it. Everything that can be checked before the body (the headers, the
    device, its allowance) is; the signature is checked by the route, and only a
    request whose signature verifies spends the device's allowance (``spend``), so a
    stranger who names a device's public key cannot use it up."""
    state = app_state(request)
    signer, *_ = precheck(
        request.headers, state.clock(), state.settings.max_clock_skew_s, network_of(state)
    )
    if state.liveness.get(signer) is None:
        raise UnknownDevice("the speed test is for registered devices", device_id=signer)
    _speedtest_limits(request).check(f"device:{signer}", state.clock(), "speed tests", spend=False)
    return signer


def _speedtest_limits(request: Request) -> RateLimiter:
    per_hour = app_state(request).settings.speedtests_per_hour
    return app_scoped(request, "speedtest_limits", lambda: RateLimiter(per_hour / 3600, per_hour))


def _spend(request: Request, signer: str) -> None:
    _speedtest_limits(request).check(f"device:{signer}", app_state(request).clock(), "speed tests")


SpeedtestDevice = Annotated[str, Depends(registered_device)]


@router.get(
    "/v1/speedtest",
    response_class=Response,
    responses={
        200: {
            "description": "incompressible bytes",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def speedtest_download(
    request: Request,
    device: SpeedtestDevice,
    nbytes: Annotated[int, Query(alias="bytes", ge=1, le=SPEEDTEST_MAX_BYTES)] = 1024 * 1024,
) -> Response:
    """``bytes`` bytes of noise, for a registered device's download test."""
    _spend(request, await signed_by(request))
    whole, rest = divmod(nbytes, len(_NOISE))
    return Response(_NOISE * whole + _NOISE[:rest], media_type="application/octet-stream")


@router.post(
    "/v1/speedtest",
    openapi_extra={
        "parameters": [
            {
                "name": signing.HEADER_CONTENT_SHA256,
                "in": "header",
                "required": True,
                "description": "the body's SHA-256, which the signature covers",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            }
        ],
        "requestBody": {
            "description": f"any bytes, up to {SPEEDTEST_MAX_BYTES} (the upload test)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
    },
)
async def speedtest_upload(request: Request, device: SpeedtestDevice) -> dict[str, int]:
    """Takes a registered device's upload test. The request declares its body's SHA-256
    (``X-Idlegrid-Content-Sha256``), so the signature is checked against it before a
    byte of the body is read: nobody but the device can make the server read an
    upload or spend its allowance. The body is then hashed as it streams in, never
    held, a few uploads at a time, and must be the one declared."""
    state = app_state(request)
    declared = request.headers.get(signing.HEADER_CONTENT_SHA256, "")
    if not signing.SHA256_HEX_RE.fullmatch(declared):
        raise InvalidRequest(
            f"an upload declares its body's SHA-256 (lower-case hex) in "
            f"{signing.HEADER_CONTENT_SHA256}",
            header=signing.HEADER_CONTENT_SHA256,
        )
    signer = authenticate_digest(
        request.headers,
        signed_method(request),
        signed_target(request),
        declared,
        state.clock(),
        state.settings.max_clock_skew_s,
        state.nonces,
        network_of(state),
    )
    _spend(request, signer)
    line = app_scoped(request, "speedtest_line", lambda: asyncio.Semaphore(SPEEDTEST_UPLOADS))
    async with line:
        digest, received = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            received += len(chunk)
    if digest.hexdigest() != declared:
        raise BadSignature(
            "the body is not the one whose SHA-256 was declared and signed",
            signer=signer,
            declared=declared,
        )
    return {"received": received}
