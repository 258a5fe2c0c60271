"""What one control-plane process holds, and the FastAPI dependencies that reach it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy import Engine

from idlegrid.server.auth import NonceStore, authenticate, precheck
from idlegrid.server.beats import BeatService
from idlegrid.server.idle import IdleMonitor
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.mailbox import Mailbox
from idlegrid.server.metrics import Metrics
from idlegrid.server.middleware import SIGNED_METHOD
from idlegrid.server.services.api_keys import ApiKeyService
from idlegrid.server.services.blocks import BlockService
from idlegrid.server.services.claims import ClaimService
from idlegrid.server.services.clusters import ClusterService
from idlegrid.server.services.devices import DeviceService
from idlegrid.server.services.ledger import LedgerService
from idlegrid.server.services.overlay import OverlayService
from idlegrid.server.services.proofs import ProofService
from idlegrid.server.services.quotes import QuoteService
from idlegrid.server.services.seasons import SeasonService
from idlegrid.server.services.staking import StakingService
from idlegrid.server.settings import ServerSettings

T = TypeVar("T")


@dataclass
class AppState:
    settings: ServerSettings
    network: str  # settings.network_id, or the one derived from the authority's key
    engine: Engine
    clock: Callable[[], float]
    liveness: LivenessTable
    mailbox: Mailbox
    nonces: NonceStore
    metrics: Metrics
    devices: DeviceService
    proofs: ProofService
    ledger: LedgerService
    clusters: ClusterService
    quotes: QuoteService
    api_keys: ApiKeyService
    staking: StakingService
    blocks: BlockService
    seasons: SeasonService
    claims: ClaimService
    idle: IdleMonitor
    overlay: OverlayService
    beats: BeatService


def network_of(state: AppState) -> str:
    """This deployment's network identifier, which every signature covers."""
    return state.network  # made once (app.py): Keypair.pubkey() alone costs ~20 µs


def app_scoped(request: Request, name: str, make: Callable[[], T]) -> T:
    """One ``make()`` per app, made on first use (inside the event loop) and kept."""
    found: T | None = getattr(request.app.state, name, None)
    if found is None:
        found = make()
        setattr(request.app.state, name, found)
    return found


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.idlegrid
    return state


async def get_state(request: Request) -> AppState:
    # async: a plain def dependency would cost every request a threadpool round trip.
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]


def signed_method(request: Request) -> str:
    """The method the client sent and signed (HEAD is served as GET)."""
    method: str = request.scope.get(SIGNED_METHOD, request.method)
    return method


def signed_target(request: Request) -> str:
    """The path and query exactly as sent: what a signature covers."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    return str(path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else ""))


async def signed_by(request: Request) -> str:
    """The public key that signed this request (see core/signing.py)."""
    state = app_state(request)
    # Headers first: an unsigned, malformed or stale request is refused unread.
    precheck(request.headers, state.clock(), state.settings.max_clock_skew_s, network_of(state))
    body = await request.body()
    return authenticate(
        request.headers,
        signed_method(request),
        signed_target(request),
        body,
        state.clock(),
        state.settings.max_clock_skew_s,
        state.nonces,
        network_of(state),
    )


Signer = Annotated[str, Depends(signed_by)]


async def buyer(request: Request) -> str:
    """The buyer a request acts for: an API key (``Authorization: Bearer ig_…``),
    or else a request signed by the buyer's wallet key."""
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() == "bearer" and key:
        return app_state(request).api_keys.owner_of(key.strip())
    return await signed_by(request)


Buyer = Annotated[str, Depends(buyer)]
