"""The explorer's pages: server-rendered HTML over the same services the JSON
API's routes call, so a page and ``/v1/…`` always agree.

Every page is a GET that only reads. The one exception is the buyer's key on
the clusters page: a form posts it once and it is kept in an HttpOnly,
SameSite=Strict cookie scoped to ``/explorer`` (a request that carries
``Authorization: Bearer <key>`` works too); it is never put in a URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from idlegrid.core import emission
from idlegrid.core.connectivity import tier_name
from idlegrid.errors import IdlegridError, InvalidRequest
from idlegrid.explorer import charts, queries
from idlegrid.explorer.render import page
from idlegrid.protocol import (
    COUNTRY_PATTERN,
    PUBKEY_PATTERN,
    BlockStatus,
    ClusterView,
    DeviceKind,
    DeviceStatus,
    Readiness,
)
from idlegrid.server.params import BlockNumber, Offset, refuse_nul
from idlegrid.server.state import AppState, StateDep

router = APIRouter(prefix="/explorer", include_in_schema=False, dependencies=[Depends(refuse_nul)])

STATIC_DIR = Path(__file__).parent / "static"
KEY_COOKIE = "idlegrid_api_key"
KEY_COOKIE_MAX_AGE_S = 8 * 3600
DEVICES_PER_PAGE = 50
BLOCKS_SHOWN = 50
DEVICE_REWARDS_SHOWN = 48
DEVICE_PROOFS_SHOWN = 20


def static_files() -> StaticFiles:
    """The stylesheet; app.py mounts it at ``/explorer/static``."""
    return StaticFiles(directory=STATIC_DIR)


def _not_found(request: Request, exc: IdlegridError) -> HTMLResponse:
    return page(request, "error.html", "", exc.http_status, error=exc)


# -- home --------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def home(request: Request, state: StateDep) -> HTMLResponse:
    blocks = state.blocks.summaries(1).items
    return page(
        request,
        "home.html",
        "home",
        fleet=queries.fleet(state),
        totals=queries.totals(state),
        supply=state.ledger.supply_view(),
        latest=blocks[0] if blocks else None,
    )


# -- workers -----------------------------------------------------------------------------------

FILTERS: dict[str, tuple[str, ...]] = {
    "status": tuple(s.value for s in DeviceStatus),
    "kind": tuple(k.value for k in DeviceKind),
    "readiness": tuple(r.value for r in Readiness),
}


@router.get("/devices", response_class=HTMLResponse)
def devices(
    request: Request,
    state: StateDep,
    status: str = "",
    kind: str = "",
    readiness: str = "",
    model: Annotated[str, Query(max_length=64)] = "",
    location: Annotated[str, Query(max_length=8)] = "",
    offset: Offset = 0,
) -> HTMLResponse:
    chosen = {"status": status, "kind": kind, "readiness": readiness}
    problems = [f"unknown {k} {v!r}" for k, v in chosen.items() if v and v not in FILTERS[k]]
    location = location.strip().upper()
    if location and not re.match(COUNTRY_PATTERN, location):
        problems.append(f"a location is a two-letter country code, not {location!r}")
    listing = None
    if not problems:
        listing = state.devices.list(
            status=DeviceStatus(status) if status else None,
            readiness=Readiness(readiness) if readiness else None,
            kind=kind or None,
            model=model.strip() or None,
            location=location or None,
            limit=DEVICES_PER_PAGE,
            offset=offset,
        )
    query = {**chosen, "model": model.strip(), "location": location}
    kept = {k: v for k, v in query.items() if v}

    def link(new_offset: int) -> str:
        return "/explorer/devices?" + urlencode({**kept, "offset": new_offset})

    return page(
        request,
        "devices.html",
        "devices",
        status_code=400 if problems else 200,
        listing=listing,
        problems=problems,
        query=query,
        filters=FILTERS,
        offset=offset,
        per_page=DEVICES_PER_PAGE,
        prev_link=link(max(0, offset - DEVICES_PER_PAGE)) if offset else None,
        next_link=(
            link(offset + DEVICES_PER_PAGE)
            if listing and offset + DEVICES_PER_PAGE < listing.total
            else None
        ),
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device(request: Request, device_id: str, state: StateDep) -> HTMLResponse:
    try:
        detail = state.devices.get(device_id)
        stake = state.staking.view(device_id)
    except IdlegridError as exc:
        return _not_found(request, exc)
    proofs = state.proofs.history(device_id).items[:DEVICE_PROOFS_SHOWN]
    earned = state.blocks.rewards_of(device_id, DEVICE_REWARDS_SHOWN)
    days = queries.daily_uptime(state, [(h.hour, h.seconds) for h in detail.uptime_hours])
    day_bars = [(f"{i - len(days) + 1}d" if i < len(days) - 1 else "today", s / 3600)
                for i, s in enumerate(days)]  # fmt: skip
    return page(
        request,
        "device.html",
        "devices",
        device=detail,
        tier_name=tier_name(detail.tier) if detail.tier is not None else None,
        uptime_30d_s=sum(days),
        uptime_chart=charts.bar_chart(day_bars, testid="uptime-chart", unit="h", label_every=7),
        proofs=proofs,
        rewards=earned,
        stake=stake,
    )


@router.get("/wallets/{wallet}", response_class=HTMLResponse)
def wallet(request: Request, wallet: str, state: StateDep) -> HTMLResponse:
    """An owner's or co-staker's block rewards (earned, claimable, claims) and devices."""
    if not re.fullmatch(PUBKEY_PATTERN, wallet):
        return _not_found(request, InvalidRequest("not a wallet address", wallet=wallet))
    balance = state.claims.balance(wallet)
    devices = state.devices.list(owner=wallet, limit=DEVICES_PER_PAGE, offset=0)
    return page(request, "wallet.html", "staking", balance=balance, devices=devices)


# -- clusters ----------------------------------------------------------------------------------


def _key_of(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    return request.cookies.get(KEY_COOKIE) or None


def _buyer(state: AppState, key: str | None) -> tuple[str | None, str | None]:
    """(owner, problem): who the key belongs to, or why it was not accepted."""
    if not key:
        return None, None
    try:
        return state.api_keys.owner_of(key), None
    except IdlegridError:
        return None, "That API key is not recognised (revoked, or mistyped)."


def _same_origin(request: Request) -> bool:
    """Refuse a form posted from another site (the cookie is SameSite=Strict too)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _clusters_page(
    request: Request,
    state: AppState,
    owner: str | None,
    problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    mine: list[ClusterView] = state.clusters.list_clusters(owner) if owner else []
    return page(
        request,
        "clusters.html",
        "clusters",
        status_code=status_code,
        refresh=status_code == 200,  # a refused key's page answers a POST: never reload it
        public=queries.public_clusters(state),
        owner=owner,
        mine=mine,
        mine_ids={c.id for c in mine},
        problem=problem,
    )


@router.get("/clusters", response_class=HTMLResponse)
def clusters(request: Request, state: StateDep) -> HTMLResponse:
    owner, problem = _buyer(state, _key_of(request))
    return _clusters_page(request, state, owner, problem)


@router.post("/clusters/key", response_class=HTMLResponse)
async def remember_key(request: Request, state: StateDep) -> Response:
    """Check the posted key, then keep it in an HttpOnly cookie for this site's explorer."""
    if not _same_origin(request):
        return Response("cross-site form refused", status_code=403)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("api_key") or [""])[0].strip()
    owner, problem = await run_in_threadpool(_buyer, state, key)
    if owner is None:
        problem = problem or "Paste an API key (idlegrid api-keys create)."
        return await run_in_threadpool(_clusters_page, request, state, None, problem, 401)
    response = RedirectResponse("/explorer/clusters", status_code=303)
    response.set_cookie(
        KEY_COOKIE,
        key,
        max_age=KEY_COOKIE_MAX_AGE_S,
        path="/explorer",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/clusters/forget")
def forget_key(request: Request) -> Response:
    if not _same_origin(request):
        return Response("cross-site form refused", status_code=403)
    response = RedirectResponse("/explorer/clusters", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/explorer", httponly=True, samesite="strict")
    return response


# -- blocks ------------------------------------------------------------------------------------


@router.get("/blocks", response_class=HTMLResponse)
def blocks(request: Request, state: StateDep) -> HTMLResponse:
    return page(
        request,
        "blocks.html",
        "blocks",
        blocks=state.blocks.summaries(BLOCKS_SHOWN).items,
        totals=queries.totals(state),
    )


@router.get("/blocks/{number}", response_class=HTMLResponse)
def block(request: Request, number: BlockNumber, state: StateDep) -> HTMLResponse:
    try:
        shown = state.blocks.page(number)
    except IdlegridError as exc:
        return _not_found(request, exc)
    return page(
        request,
        "block.html",
        "blocks",
        # A completed block never changes: its page need not reload itself.
        refresh=shown.block.status is not BlockStatus.COMPLETED,
        block=shown.block,
        verified=shown.verified,
        paid=shown.paid,
        excluded=shown.excluded,
        pools=shown.pools,
        notes=shown.notes,
    )


# -- staking, token, map -----------------------------------------------------------------------


@router.get("/staking", response_class=HTMLResponse)
def staking_page(request: Request, state: StateDep) -> HTMLResponse:
    lines = queries.stakes(state)
    return page(
        request,
        "staking.html",
        "staking",
        stakes=lines,
        total_effective=sum(s.effective for s in lines),
        total_locked=sum(s.locked for s in lines),
        fully_staked=[s for s in lines if s.meets_minimum],
    )


@router.get("/token", response_class=HTMLResponse)
def token(request: Request, state: StateDep) -> HTMLResponse:
    years = emission.by_period("year")
    latest = state.blocks.summaries(1).items
    hour = latest[0].number if latest else 0
    current_year = min(hour // emission.HOURS_PER_YEAR, len(years) - 1)
    bars = [(str(i), float(emission.to_io(a)) / 1e6) for i, a, _ in years]
    return page(
        request,
        "token.html",
        "token",
        supply=state.ledger.supply_view(),
        years=years,
        hour=hour,
        hour_amount=emission.hour_amount(hour),
        current_year=current_year,
        emission_total=emission.EMISSION_TOTAL_UNITS,
        chart=charts.bar_chart(
            bars, testid="emission-chart", unit="M IO", highlight=current_year, height=200
        ),
    )


@router.get("/map", response_class=HTMLResponse)
def network_map(request: Request, state: StateDep) -> HTMLResponse:
    rows = queries.countries(state)
    counts = [(c.code, c.devices) for c in rows]
    return page(
        request,
        "map.html",
        "map",
        countries=rows,
        unplaced=[c for c in rows if c.code not in charts.CENTROIDS],
        map_svg=charts.dot_map(counts, testid="map-chart"),
        bars=charts.hbar_chart([(c, float(n)) for c, n in counts], testid="country-chart"),
    )
