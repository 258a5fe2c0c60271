"""The control plane's FastAPI application: wiring, error mapping and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from idlegrid import explorer
from idlegrid.catalog import Catalog, load_catalog
from idlegrid.core import signing
from idlegrid.core.idle import IdleRules
from idlegrid.core.lifecycle import Timing
from idlegrid.errors import IdlegridError, InternalError, InvalidRequest
from idlegrid.identity import load_or_create_keypair
from idlegrid.ledger.connect import make_chain
from idlegrid.ledger.oracle import FixedOracle
from idlegrid.server import hotpath, loops
from idlegrid.server.auth import NonceStore
from idlegrid.server.beats import BeatServer, BeatService
from idlegrid.server.db import make_engine, migrate, session_factory
from idlegrid.server.idle import IdleMonitor
from idlegrid.server.liveness import LivenessTable
from idlegrid.server.mailbox import Mailbox
from idlegrid.server.metrics import Metrics
from idlegrid.server.middleware import BodyLimit, BodyRefused, HeadAsGet, SecurityHeaders
from idlegrid.server.openapi import document_errors
from idlegrid.server.rendezvous import RendezvousServer
from idlegrid.server.routes import clusters, devices, proofs, staking, system, wallets
from idlegrid.server.services.api_keys import ApiKeyService
from idlegrid.server.services.blocks import BlockService
from idlegrid.server.services.claims import ClaimService
from idlegrid.server.services.clusters import ClusterService
from idlegrid.server.services.devices import DeviceService
from idlegrid.server.services.ledger import LedgerService
from idlegrid.server.services.market import Marketplace
from idlegrid.server.services.match_index import MarketIndex
from idlegrid.server.services.overlay import OverlayService
from idlegrid.server.services.proofs import ProofService
from idlegrid.server.services.quotes import QuoteService
from idlegrid.server.services.seasons import SeasonService
from idlegrid.server.services.staking import StakingService
from idlegrid.server.settings import ServerSettings
from idlegrid.server.state import AppState, buyer, signed_by
from idlegrid.version import __version__

log = logging.getLogger("idlegrid.server")

HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def build_state(
    settings: ServerSettings,
    clock: Callable[[], float] = time.time,
    catalog: Catalog | None = None,
) -> AppState:
    catalog = catalog or load_catalog()
    engine = make_engine(settings.database_url)
    migrate(engine)
    liveness = LivenessTable(
        Timing(settings.heartbeat_ttl_s, settings.inactive_after_s, settings.block_interval_s)
    )
    service = DeviceService(session_factory(engine), liveness, catalog, settings, clock)
    service.load_liveness()
    mailbox = Mailbox()
    proof_service = ProofService(
        session_factory(engine), liveness, mailbox, catalog, settings, clock
    )
    proof_service.load_pending()
    authority, _ = load_or_create_keypair(
        settings.authority_keypair or settings.data_dir / "keys" / "authority.json"
    )
    chain = make_chain(settings.chain_url, authority, settings.data_dir / "chain.json")
    oracle = FixedOracle(settings.io_usd_price)
    ledger = LedgerService(session_factory(engine), chain, authority, oracle, clock)
    ledger.genesis()
    network = settings.network_id or signing.network_id(str(authority.pubkey()))
    overlay = OverlayService(session_factory(engine), settings, authority, network, clock)
    index = MarketIndex(session_factory(engine), liveness, clock)
    market = Marketplace(session_factory(engine), liveness, catalog, oracle, clock, index)
    cluster_service = ClusterService(
        session_factory(engine), ledger, liveness, mailbox, market, settings, clock, overlay
    )
    cluster_service.load()
    seasons = SeasonService(session_factory(engine), ledger, clock)
    idle = IdleMonitor(
        IdleRules(
            cpu_percent=settings.idle_cpu_percent,
            gpu_percent=settings.idle_gpu_percent,
            window_s=settings.idle_window_s,
            max_gap_s=max(300.0, 2 * settings.heartbeat_ttl_s),
        )
    )
    metrics = Metrics()
    beat_service = BeatService(
        network=network,
        liveness=liveness,
        mailbox=mailbox,
        idle=idle,
        heartbeats=metrics.heartbeats,
        refused=metrics.beats_refused,
        interval_s=settings.heartbeat_interval_s,
        life_s=settings.beat_session_s,
        max_skew_s=settings.max_clock_skew_s,
        host=settings.beat_host,
        clock=clock,
    )
    state = AppState(
        settings=settings,
        network=network,
        engine=engine,
        clock=clock,
        liveness=liveness,
        mailbox=mailbox,
        nonces=NonceStore(retention_s=2 * settings.max_clock_skew_s),
        metrics=metrics,
        devices=service,
        proofs=proof_service,
        ledger=ledger,
        clusters=cluster_service,
        quotes=QuoteService(session_factory(engine), market, settings, clock),
        api_keys=ApiKeyService(session_factory(engine), clock),
        staking=StakingService(session_factory(engine), ledger, catalog, settings, clock, idle),
        blocks=BlockService(session_factory(engine), ledger, catalog, settings, clock, seasons),
        seasons=seasons,
        claims=ClaimService(session_factory(engine), ledger, clock),
        idle=idle,
        overlay=overlay,
        beats=beat_service,
    )
    state.blocks.flush_liveness = lambda: loops.flush_liveness(state)
    seasons.block_inputs = state.blocks.inputs_of
    # Every service that writes devices or proofs tells the match index what it wrote.
    for writer in (service, proof_service, market, cluster_service, state.staking, state.blocks):
        index.watch(writer.sessions)
    index.reload()
    return state


def create_app(
    settings: ServerSettings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    catalog: Catalog | None = None,
    run_loops: bool = True,
) -> FastAPI:
    """Build the app. ``run_loops=False`` leaves reaping and flushing to the caller
    (tests drive them with ``loops.reap_and_flush`` and an injected clock)."""
    settings = settings or ServerSettings()
    state = build_state(settings, clock, catalog)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(c) for c in loops.background(state)] if run_loops else []
        rendezvous = None
        if state.overlay.enabled:
            rendezvous = RendezvousServer(
                state.overlay.rendezvous, "0.0.0.0", settings.overlay_rendezvous_ports
            )
            await rendezvous.start()
            state.overlay.rendezvous_ports = rendezvous.ports
        beat_port = None
        if settings.beats:
            beat_port = BeatServer(state.beats, settings.host, settings.beat_port)
            await beat_port.start()
        try:
            yield
        finally:
            if beat_port is not None:
                beat_port.close()
            if rendezvous is not None:
                rendezvous.close()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            try:
                loops.reap_and_flush(state)  # write what is queued before exiting
            except Exception:
                log.exception("final liveness flush failed")
            state.engine.dispose()
            state.ledger.chain.close()

    app = FastAPI(
        title="idlegrid control plane",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks up three providers in os.environ on every
        # request (3.6 us each time, measured); the control plane's metrics are its own
        # Prometheus ones (/metrics), so it is off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.idlegrid = state
    app.include_router(system.router)
    # before devices: its /{id}/{action} would shadow their /v1/devices/{id}/… routes
    app.include_router(proofs.router)
    app.include_router(clusters.router)
    app.include_router(staking.router)
    app.include_router(devices.router)
    app.include_router(wallets.router)
    app.include_router(explorer.router)
    app.mount("/explorer/static", explorer.static_files(), name="explorer_static")
    _install_error_handlers(app, state)
    document_errors(app, signed=(signed_by, buyer, proofs.registered_device, devices.heartbeat))
    # The last added runs first: security headers on every answer, HEAD as GET,
    # then the body's bounds, then the hot routes ahead of the router.
    app.add_middleware(hotpath.HotLane, routes=hotpath.routes)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        large={"/reveal": 4 * 1024 * 1024, "/v1/speedtest": proofs.SPEEDTEST_MAX_BYTES},
        timeout_s=settings.body_timeout_s,
        min_rate_bps=settings.body_min_rate_bps,
    )
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders, prefix="/explorer")
    return app


def _install_error_handlers(app: FastAPI, state: AppState) -> None:
    def respond(
        status: int, body: dict[str, object], headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        state.metrics.errors.labels(code=str(body["code"])).inc()
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(IdlegridError)
    async def _idlegrid_error(_: Request, exc: IdlegridError) -> JSONResponse:
        return respond(exc.http_status, exc.to_body())

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = InvalidRequest.from_validation(exc.errors())
        return respond(err.http_status, err.to_body())

    @app.exception_handler(BodyRefused)
    async def _body_refused(_: Request, exc: BodyRefused) -> JSONResponse:
        return respond(exc.error.http_status, exc.error.to_body(), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it could not parse (not UTF-8, nested past
            # Python's recursion limit, a broken form): a malformed request, 422.
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "unparsable"
            err = InvalidRequest(
                "the body could not be parsed",
                errors=[{"loc": ["body"], "msg": str(exc.detail), "type": cause}],
            )
            return respond(err.http_status, err.to_body())
        code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return respond(exc.status_code, {"code": code, "message": str(exc.detail), "details": {}})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The exception goes on to the server, which then drops the connection:
        # say so, or a keep-alive client sends its next request into a closed socket.
        log.exception("unhandled error", exc_info=exc)
        err = InternalError()
        return respond(err.http_status, err.to_body(), {"connection": "close"})
