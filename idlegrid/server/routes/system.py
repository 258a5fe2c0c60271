"""Health and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from idlegrid.protocol import DeviceStatus, Health
from idlegrid.server.params import refuse_nul
from idlegrid.server.state import StateDep, network_of
from idlegrid.version import __version__

router = APIRouter(tags=["system"], dependencies=[Depends(refuse_nul)])


@router.get("/healthz", response_model=Health)
def healthz(state: StateDep) -> Health:
    return Health(
        version=__version__,
        database=state.engine.dialect.name,
        devices_live=state.liveness.counts().get(DeviceStatus.UP, 0),
        network=network_of(state),
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus' text exposition format"}},
)
def metrics(state: StateDep) -> Response:
    counts = state.liveness.counts()
    counts[DeviceStatus.INACTIVE] = state.devices.count_inactive()  # not held in memory
    for status in DeviceStatus:
        state.metrics.devices.labels(status=status.value).set(counts.get(status, 0))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
