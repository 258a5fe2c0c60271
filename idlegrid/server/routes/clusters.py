"""IO Cloud routes: API keys, quotes, clusters (for buyers), and the Ray node
reports of hired agents (signed by the device)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from idlegrid.core.clusters import DurationUnit
from idlegrid.errors import NotYourDevice
from idlegrid.protocol import (
    ApiKeyCreate,
    ApiKeyList,
    ApiKeyView,
    Assignment,
    ClusterCreate,
    ClusterList,
    ClusterView,
    DeployRequest,
    DeviceFloor,
    ExtendRequest,
    FloorRequest,
    OverlayAssignment,
    OverlayInfo,
    OverlayPeerRequest,
    PriceList,
    QuoteView,
    RayNodeReport,
)
from idlegrid.server.params import refuse_nul
from idlegrid.server.ratelimit import RateLimiter
from idlegrid.server.state import Buyer, Signer, StateDep, app_scoped

router = APIRouter(tags=["clusters"], dependencies=[Depends(refuse_nul)])

ClusterId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{8}$")]


@router.post("/v1/api-keys", response_model=ApiKeyView, status_code=201)
def create_api_key(req: ApiKeyCreate, signer: Signer, state: StateDep) -> ApiKeyView:
    """Signed by the buyer's wallet key; the key is shown once and stored hashed."""
    return state.api_keys.create(signer, req.name)


@router.get("/v1/api-keys", response_model=ApiKeyList)
def list_api_keys(signer: Signer, state: StateDep) -> ApiKeyList:
    """The signer's keys (signed by the wallet key, as creating one is)."""
    return ApiKeyList(items=state.api_keys.list(signer))


@router.delete("/v1/api-keys/{key_id}", response_model=ApiKeyView)
def revoke_api_key(key_id: KeyId, signer: Signer, state: StateDep) -> ApiKeyView:
    """Revoke one of the signer's keys: refused from the next request on."""
    return state.api_keys.revoke(signer, key_id)


@router.post("/v1/quotes", response_model=QuoteView, status_code=201)
def quote(req: DeployRequest, owner: Buyer, state: StateDep, request: Request) -> QuoteView:
    """Rate-limited per buyer (``quotes_per_minute``): a quote needs no funds, and
    every key of a wallet shares the wallet's bucket, so minting keys buys nothing."""
    per_minute = state.settings.quotes_per_minute
    limits = app_scoped(request, "quote_limits", lambda: RateLimiter(per_minute / 60, per_minute))
    limits.check(f"buyer:{owner}", state.clock(), "quotes")
    return state.quotes.quote(owner, req)


@router.post("/v1/clusters", response_model=ClusterView, status_code=201)
def deploy(req: ClusterCreate, owner: Buyer, state: StateDep) -> ClusterView:
    return state.clusters.deploy(owner, req.quote_id)


@router.get("/v1/clusters", response_model=ClusterList)
def list_clusters(
    owner: Buyer, state: StateDep, active: Annotated[bool, Query()] = False
) -> ClusterList:
    return ClusterList(items=state.clusters.list_clusters(owner, active_only=active))


@router.get("/v1/clusters/{cluster_id}", response_model=ClusterView)
def get_cluster(cluster_id: ClusterId, owner: Buyer, state: StateDep) -> ClusterView:
    return state.clusters.get(owner, cluster_id)


@router.post("/v1/clusters/{cluster_id}/extend", response_model=ClusterView)
def extend(cluster_id: ClusterId, req: ExtendRequest, owner: Buyer, state: StateDep) -> ClusterView:
    return state.clusters.extend(owner, cluster_id, req.duration, DurationUnit(req.duration_unit))


@router.post("/v1/clusters/{cluster_id}/terminate", response_model=ClusterView)
def terminate(cluster_id: ClusterId, owner: Buyer, state: StateDep) -> ClusterView:
    return state.clusters.terminate(owner, cluster_id)


@router.post("/v1/devices/{device_id}/ray", response_model=Assignment | None)
def report_ray_node(
    device_id: str, req: RayNodeReport, signer: Signer, state: StateDep, request: Request
) -> Assignment | None:
    """A hired agent's report on its Ray node; the reply is its assignment now."""
    if signer != device_id:
        raise NotYourDevice("a device reports only for itself", device_id=device_id)
    source = request.client.host if request.client is not None else None
    assignment = state.clusters.report_node(device_id, req, source)
    return state.overlay.freshen(assignment, device_id) if assignment is not None else None


@router.post("/v1/clusters/{cluster_id}/peers", response_model=OverlayAssignment)
def join_overlay(
    cluster_id: ClusterId, req: OverlayPeerRequest, owner: Buyer, state: StateDep
) -> OverlayAssignment:
    """The buyer's own peer in the cluster's overlay (``idlegrid clusters connect``):
    its address, its ticket and the nodes; ask again for fresh endpoints."""
    place = state.overlay.buyer_peer(owner, cluster_id, req.key)
    state.clusters.refresh_assignments(cluster_id)
    return state.overlay.freshen_place(cluster_id, place)


@router.get("/v1/overlay", response_model=OverlayInfo)
def overlay_info(state: StateDep) -> OverlayInfo:
    """Where the rendezvous and the relays listen, and the key that signs tickets."""
    o = state.overlay
    return OverlayInfo(
        enabled=o.enabled,
        network=o.network,
        authority=str(o.authority.pubkey()),
        rendezvous=o.endpoints() if o.enabled else [],
        relays=list(state.settings.overlay_relays),
    )


@router.post("/v1/devices/{device_id}/floor", response_model=DeviceFloor)
def set_floor(device_id: str, req: FloorRequest, signer: Signer, state: StateDep) -> DeviceFloor:
    """The owner's floor: the device is never matched below it."""
    return state.clusters.market.set_floor(signer, device_id, req.usd)


@router.get("/v1/prices", response_model=PriceList)
@router.get("/prices", response_model=PriceList, include_in_schema=False)
def prices(state: StateDep) -> PriceList:
    """Now: the price of one device-hour of every model, per region and overall."""
    return state.clusters.market.price_list()


@router.get("/v1/prices/history", response_model=PriceList)
def price_history(
    state: StateDep,
    model: Annotated[str, Query(max_length=64)],
    location: Annotated[str, Query(max_length=2)] = "*",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> PriceList:
    return state.clusters.market.price_history(model, location, limit)
