"""Staking (signed by the owner or co-staker), blocks and rewards (public), and
slashes (raised and decided by the network's authority key, appealed by the
device's owner)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from idlegrid.core.fees import format_amount, parse_amount
from idlegrid.errors import PermissionDenied
from idlegrid.protocol import (
    PUBKEY_PATTERN,
    AppealRequest,
    BlockList,
    BlockSummary,
    BlockView,
    CoStakeView,
    DecisionRequest,
    RewardEntry,
    RewardList,
    SeasonCreate,
    SeasonList,
    SeasonStanding,
    SeasonView,
    ShareRequest,
    SlashList,
    SlashRequest,
    SlashView,
    StakeAmount,
    StakeView,
)
from idlegrid.server.db.models import Block, BlockReward, Season, SeasonPoints, Slash
from idlegrid.server.state import AppState, Signer, StateDep

router = APIRouter(tags=["staking and rewards"])

DeviceId = Annotated[str, Path(pattern=PUBKEY_PATTERN)]


def io(units: int) -> str:
    return format_amount(units, "IO")


def _stake_view(state: AppState, device_id: str) -> StakeView:
    v: dict[str, Any] = state.staking.view(device_id)
    return StakeView(
        device_id=device_id,
        owner=v["owner"],
        minimum=io(v["minimum"]),
        effective=io(v["effective"]),
        active=io(v["active"]),
        cooling=[(io(a), t) for a, t in v["cooling"]],
        costakes=[
            CoStakeView(staker=s, amount=io(a), share_bps=b, exit_requested_at=e, counts=c)
            for s, a, b, e, c in v["costakes"]
        ],
        costake_share_bps=v["costake_share_bps"],
        slashed_pending=io(v["slashed_pending"]),
        meets_minimum=v["effective"] >= v["minimum"] > 0,
    )


@router.get("/v1/devices/{device_id}/stake", response_model=StakeView)
def get_stake(device_id: DeviceId, state: StateDep) -> StakeView:
    return _stake_view(state, device_id)


@router.post("/v1/devices/{device_id}/stake", response_model=StakeView)
def stake(device_id: DeviceId, req: StakeAmount, signer: Signer, state: StateDep) -> StakeView:
    """The owner stakes IO from their balance behind the device."""
    state.staking.stake(signer, device_id, parse_amount(req.amount, "IO"))
    return _stake_view(state, device_id)


@router.post("/v1/devices/{device_id}/unstake", response_model=StakeView)
def unstake(device_id: DeviceId, req: StakeAmount, signer: Signer, state: StateDep) -> StakeView:
    """Start a 14-day cooldown; refused while the device is hired."""
    state.staking.unstake(signer, device_id, parse_amount(req.amount, "IO"))
    return _stake_view(state, device_id)


@router.post("/v1/devices/{device_id}/stake/withdraw", response_model=StakeView)
def withdraw(device_id: DeviceId, signer: Signer, state: StateDep) -> StakeView:
    """Pay out the signer's stake that finished cooling down."""
    state.staking.withdraw(signer, device_id)
    return _stake_view(state, device_id)


@router.post("/v1/devices/{device_id}/stake/share", response_model=StakeView)
def share(device_id: DeviceId, req: ShareRequest, signer: Signer, state: StateDep) -> StakeView:
    """The owner sets the share of rewards offered to co-stakers."""
    state.staking.set_share(signer, device_id, req.share_bps)
    return _stake_view(state, device_id)


@router.post("/v1/devices/{device_id}/costake", response_model=StakeView)
def costake(device_id: DeviceId, req: StakeAmount, signer: Signer, state: StateDep) -> StakeView:
    """Co-stake behind someone's device (up to half its stake), for the owner's share."""
    state.staking.costake(signer, device_id, parse_amount(req.amount, "IO"))
    return _stake_view(state, device_id)


@router.post("/v1/devices/{device_id}/costake/exit", response_model=StakeView)
def costake_exit(device_id: DeviceId, signer: Signer, state: StateDep) -> StakeView:
    """7 days' notice (still earning), then a 14-day cooldown, then withdraw."""
    state.staking.costake_exit(signer, device_id)
    return _stake_view(state, device_id)


# -- blocks and rewards ------------------------------------------------------------------------


def _summary(b: Block) -> dict[str, Any]:
    return {
        "number": b.number,
        "starts_at": b.starts_at,
        "length_s": b.length_s,
        "status": b.status,
        "emission": io(b.emission),
        "paid": io(b.paid),
        "nominated": b.nominated,
        "excluded": b.excluded,
        "inputs_hash": b.inputs_hash,
        "outputs_hash": b.outputs_hash,
        "error": b.error,
    }


@router.get("/v1/blocks", response_model=BlockList)
def list_blocks(state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> BlockList:
    with state.blocks.sessions() as db:
        rows = db.scalars(select(Block).order_by(Block.number.desc()).limit(limit))
        return BlockList(items=[BlockSummary(**_summary(b)) for b in rows])


@router.get("/v1/blocks/{number}", response_model=BlockView)
def get_block(number: int, state: StateDep) -> BlockView:
    """A block with its published inputs and outputs: enough to recompute it."""
    with state.blocks.sessions() as db:
        b = state.blocks.get(db, number)
        return BlockView(**_summary(b), inputs=b.inputs, outputs=b.outputs)


@router.get("/v1/devices/{device_id}/rewards", response_model=RewardList)
def device_rewards(
    device_id: DeviceId, state: StateDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 500
) -> RewardList:
    with state.blocks.sessions() as db:
        rows = list(
            db.scalars(
                select(BlockReward)
                .where(BlockReward.device_id == device_id)
                .order_by(BlockReward.number.desc())
                .limit(limit)
            )
        )
    return RewardList(
        device_id=device_id,
        total=io(sum(r.units for r in rows)),
        items=[
            RewardEntry(
                block=r.number,
                units=io(r.units),
                score=r.score,
                excluded_because=r.reasons.split(",") if r.reasons else [],
            )
            for r in rows
        ],
    )


# -- slashes -----------------------------------------------------------------------------------


def _authority(state: AppState, signer: str) -> None:
    if signer != str(state.ledger.authority.pubkey()):
        raise PermissionDenied("only the network's authority key may do this")


def _slash_view(s: Slash) -> SlashView:
    return SlashView(
        id=s.id,
        device_id=s.device_id,
        reason=s.reason,
        evidence=s.evidence,
        amount=io(s.units),
        shares=[(str(a), io(int(u))) for a, u in s.shares],
        status=s.status,  # type: ignore[arg-type]
        created_at=s.created_at,
        appeal_until=s.appeal_until,
        appeal=s.appeal,
        decided_at=s.decided_at,
    )


def _get_slash(state: AppState, slash_id: str) -> SlashView:
    with state.staking.sessions() as db:
        s = db.get(Slash, slash_id)
        assert s is not None
        return _slash_view(s)


@router.get("/v1/slashes", response_model=SlashList)
def list_slashes(state: StateDep, device_id: str | None = None) -> SlashList:
    with state.staking.sessions() as db:
        q = select(Slash).order_by(Slash.created_at.desc())
        if device_id:
            q = q.where(Slash.device_id == device_id)
        return SlashList(items=[_slash_view(s) for s in db.scalars(q.limit(1000))])


@router.post("/v1/slashes", response_model=SlashView, status_code=201)
def create_slash(req: SlashRequest, signer: Signer, state: StateDep) -> SlashView:
    _authority(state, signer)
    return _get_slash(state, state.staking.slash(req.device_id, req.reason, req.evidence))


@router.post("/v1/slashes/{slash_id}/appeal", response_model=SlashView)
def appeal(slash_id: str, req: AppealRequest, signer: Signer, state: StateDep) -> SlashView:
    state.staking.appeal(signer, slash_id, req.text)
    return _get_slash(state, slash_id)


@router.post("/v1/slashes/{slash_id}/decision", response_model=SlashView)
def decide(slash_id: str, req: DecisionRequest, signer: Signer, state: StateDep) -> SlashView:
    _authority(state, signer)
    state.staking.decide(slash_id, req.accept)
    return _get_slash(state, slash_id)


# -- seasons -----------------------------------------------------------------------------------


def _season_view(state: AppState, row: Season, standings: bool = False) -> SeasonView:
    done = row.status == "completed"
    rows: list[SeasonPoints] = []
    if standings:
        with state.seasons.sessions() as db:
            rows = list(
                db.scalars(
                    select(SeasonPoints)
                    .where(SeasonPoints.season_id == row.id)
                    .order_by(SeasonPoints.points.desc())
                    .limit(1000)
                )
            )
    return SeasonView(
        id=row.id,
        name=row.name,
        starts_block=row.starts_hour,
        ends_block=row.ends_hour,
        gpu_points=row.gpu_points,
        cpu_points=row.cpu_points,
        points_per_io=row.points_per_io,
        status=row.status,  # type: ignore[arg-type]
        rules_hash=None if done else row.results_hash,
        results_hash=row.results_hash if done else None,
        results=row.results,
        standings=[
            SeasonStanding(
                device_id=p.device_id, owner=p.owner, kind=p.kind, points=f"{p.points / 1000:.3f}"
            )
            for p in rows
        ],
    )


@router.post("/v1/seasons", response_model=SeasonView, status_code=201)
def create_season(req: SeasonCreate, signer: Signer, state: StateDep) -> SeasonView:
    """Announce a season (the network's authority key signs)."""
    _authority(state, signer)
    row = state.seasons.create(
        req.name, req.starts_block, req.ends_block, req.gpu_points, req.cpu_points,
        req.points_per_io,
    )  # fmt: skip
    return _season_view(state, row)


@router.get("/v1/seasons", response_model=SeasonList)
def list_seasons(state: StateDep) -> SeasonList:
    with state.seasons.sessions() as db:
        rows = list(db.scalars(select(Season).order_by(Season.starts_hour.desc())))
    return SeasonList(items=[_season_view(state, r) for r in rows])


@router.get("/v1/seasons/{season_id}", response_model=SeasonView)
def get_season(season_id: str, state: StateDep) -> SeasonView:
    with state.seasons.sessions() as db:
        row = state.seasons.get(db, season_id)
    return _season_view(state, row, standings=True)
