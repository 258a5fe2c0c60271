"""Staking (signed by the owner or co-staker), blocks and rewards (public), and
slashes (raised and decided by the network's authority key, appealed by the
device's owner)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response

from idlegrid.core.fees import parse_amount
from idlegrid.errors import PermissionDenied
from idlegrid.protocol import (
    PUBKEY_PATTERN,
    AppealRequest,
    BlockList,
    BlockView,
    DecisionRequest,
    RewardBalance,
    RewardClaimView,
    RewardList,
    SeasonCreate,
    SeasonList,
    SeasonView,
    ShareRequest,
    SlashList,
    SlashRequest,
    SlashView,
    StakeAmount,
    StakeView,
)
from idlegrid.server.params import BlockNumber, refuse_nul
from idlegrid.server.state import AppState, Signer, StateDep

router = APIRouter(tags=["staking and rewards"], dependencies=[Depends(refuse_nul)])

DeviceId = Annotated[str, Path(pattern=PUBKEY_PATTERN)]


@router.get("/v1/devices/{device_id}/stake", response_model=StakeView)
def get_stake(device_id: DeviceId, state: StateDep) -> StakeView:
    return state.staking.view(device_id)


@router.post("/v1/devices/{device_id}/stake", response_model=StakeView)
def stake(device_id: DeviceId, req: StakeAmount, signer: Signer, state: StateDep) -> StakeView:
    """The owner stakes IO from their balance behind the device."""
    state.staking.stake(signer, device_id, parse_amount(req.amount, "IO"))
    return state.staking.view(device_id)


@router.post("/v1/devices/{device_id}/unstake", response_model=StakeView)
def unstake(device_id: DeviceId, req: StakeAmount, signer: Signer, state: StateDep) -> StakeView:
    """Start a 14-day cooldown; refused while the device is hired."""
    state.staking.unstake(signer, device_id, parse_amount(req.amount, "IO"))
    return state.staking.view(device_id)


@router.post("/v1/devices/{device_id}/stake/withdraw", response_model=StakeView)
def withdraw(device_id: DeviceId, signer: Signer, state: StateDep) -> StakeView:
    """Pay out the signer's stake that finished cooling down."""
    state.staking.withdraw(signer, device_id)
    return state.staking.view(device_id)


@router.post("/v1/devices/{device_id}/stake/share", response_model=StakeView)
def share(device_id: DeviceId, req: ShareRequest, signer: Signer, state: StateDep) -> StakeView:
    """The owner sets the share of rewards offered to co-stakers."""
    state.staking.set_share(signer, device_id, req.share_bps)
    return state.staking.view(device_id)


@router.post("/v1/devices/{device_id}/costake", response_model=StakeView)
def costake(device_id: DeviceId, req: StakeAmount, signer: Signer, state: StateDep) -> StakeView:
    """Co-stake behind someone's device (up to half its stake), for the owner's share."""
    state.staking.costake(signer, device_id, parse_amount(req.amount, "IO"))
    return state.staking.view(device_id)


@router.post("/v1/devices/{device_id}/costake/exit", response_model=StakeView)
def costake_exit(device_id: DeviceId, signer: Signer, state: StateDep) -> StakeView:
    """7 days' notice (still earning), then a 14-day cooldown, then withdraw."""
    state.staking.costake_exit(signer, device_id)
    return state.staking.view(device_id)


# -- blocks and rewards ------------------------------------------------------------------------


@router.get("/v1/blocks", response_model=BlockList)
def list_blocks(state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> BlockList:
    return state.blocks.summaries(limit)


@router.get("/v1/blocks/{number}", response_model=BlockView)
def get_block(number: BlockNumber, state: StateDep) -> Response:
    """A block with its published inputs and outputs: enough to recompute it."""
    return Response(state.blocks.view_json(number), media_type="application/json")


@router.get(
    "/v1/blocks/{number}/{document}.json",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def get_block_document(
    number: BlockNumber, document: Literal["inputs", "outputs"], state: StateDep
) -> Response:
    """A block's published inputs or outputs, byte for byte as hashed: their SHA-256 is
    the block's ``inputs_hash`` or ``outputs_hash``."""
    return Response(state.blocks.document(number, document), media_type="application/json")


@router.get("/v1/devices/{device_id}/rewards", response_model=RewardList)
def device_rewards(
    device_id: DeviceId, state: StateDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 500
) -> RewardList:
    return state.blocks.rewards_of(device_id, limit)


@router.get("/v1/wallets/{wallet}/rewards", response_model=RewardBalance)
def reward_balance(
    wallet: Annotated[str, Path(pattern=PUBKEY_PATTERN)], state: StateDep
) -> RewardBalance:
    """A wallet's block rewards: earned, claimed through which block, claimable now."""
    return state.claims.balance(wallet)


@router.post("/v1/rewards/claim", response_model=RewardClaimView)
def claim_rewards(signer: Signer, state: StateDep) -> RewardClaimView:
    """Move every reward credited to the signer's wallet since its last claim into its
    balance (409 ``nothing_to_claim`` when there is none: a double claim)."""
    return state.claims.claim(signer)


# -- slashes -----------------------------------------------------------------------------------


def _authority(state: AppState, signer: str) -> None:
    if signer != str(state.ledger.authority.pubkey()):
        raise PermissionDenied("only the network's authority key may do this")


@router.get("/v1/slashes", response_model=SlashList)
def list_slashes(state: StateDep, device_id: str | None = None) -> SlashList:
    return state.staking.slashes(device_id)


@router.post("/v1/slashes", response_model=SlashView, status_code=201)
def create_slash(req: SlashRequest, signer: Signer, state: StateDep) -> SlashView:
    _authority(state, signer)
    return state.staking.get_slash(state.staking.slash(req.device_id, req.reason, req.evidence))


@router.post("/v1/slashes/{slash_id}/appeal", response_model=SlashView)
def appeal(slash_id: str, req: AppealRequest, signer: Signer, state: StateDep) -> SlashView:
    state.staking.appeal(signer, slash_id, req.text)
    return state.staking.get_slash(slash_id)


@router.post("/v1/slashes/{slash_id}/decision", response_model=SlashView)
def decide(slash_id: str, req: DecisionRequest, signer: Signer, state: StateDep) -> SlashView:
    _authority(state, signer)
    state.staking.decide(slash_id, req.accept)
    return state.staking.get_slash(slash_id)


# -- seasons -----------------------------------------------------------------------------------


@router.post("/v1/seasons", response_model=SeasonView, status_code=201)
def create_season(req: SeasonCreate, signer: Signer, state: StateDep) -> SeasonView:
    """Announce a season (the network's authority key signs)."""
    _authority(state, signer)
    return state.seasons.create(req)


@router.get("/v1/seasons", response_model=SeasonList)
def list_seasons(state: StateDep) -> SeasonList:
    return state.seasons.list_seasons()


@router.get("/v1/seasons/{season_id}", response_model=SeasonView)
def get_season(season_id: str, state: StateDep) -> SeasonView:
    return state.seasons.view(season_id)
