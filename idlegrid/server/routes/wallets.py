"""Wallets (signed by the wallet's key for anything that moves money), token
supply and the ledger audit (public)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from idlegrid.core.fees import format_amount, parse_amount
from idlegrid.errors import NotFound, PermissionDenied
from idlegrid.ledger.chain import Asset
from idlegrid.protocol import (
    PUBKEY_PATTERN,
    AuditCheckView,
    AuditView,
    Balance,
    DepositsView,
    FaucetRequest,
    HistoryView,
    SupplyView,
    TransferView,
    WalletView,
    WithdrawalView,
    WithdrawRequest,
)
from idlegrid.server.params import refuse_nul
from idlegrid.server.services.ledger import ASSETS, user_account
from idlegrid.server.state import Signer, StateDep

router = APIRouter(tags=["wallets"], dependencies=[Depends(refuse_nul)])

WalletKey = Annotated[str, Path(pattern=PUBKEY_PATTERN, description="the wallet's public key")]


def _signed_by_itself(signer: str, pubkey: str) -> None:
    if signer != pubkey:
        raise PermissionDenied("a wallet acts only for itself", wallet=pubkey)


@router.get("/v1/wallets/{pubkey}", response_model=WalletView)
def wallet(pubkey: WalletKey, state: StateDep) -> WalletView:
    ledger = state.ledger
    with ledger.sessions() as db:
        balances = ledger.balances(db, pubkey)
    return WalletView(
        owner=pubkey,
        deposit_wallet=str(ledger.deposit_wallet(pubkey).pubkey()),
        balances=[
            Balance(
                asset=a.value,
                balance=format_amount(balances[a.value][0], a.value),
                available=format_amount(balances[a.value][1], a.value),
                deposit_address=ledger.deposit_address(pubkey, a, create=False),
            )
            for a in ASSETS
        ],
    )


@router.post("/v1/wallets/{pubkey}/deposits", response_model=DepositsView)
def sweep_deposits(pubkey: WalletKey, signer: Signer, state: StateDep) -> DepositsView:
    """Credit what arrived at the wallet's deposit addresses."""
    _signed_by_itself(signer, pubkey)
    credited = state.ledger.sweep_deposits(pubkey)
    return DepositsView(credited={a: format_amount(n, a) for a, n in credited.items()})


@router.post("/v1/wallets/{pubkey}/withdrawals", response_model=WithdrawalView)
def withdraw(
    pubkey: WalletKey, req: WithdrawRequest, signer: Signer, state: StateDep
) -> WithdrawalView:
    _signed_by_itself(signer, pubkey)
    units = parse_amount(req.amount, req.asset)
    transfer_id, replayed, op = state.ledger.withdraw(pubkey, req.id, Asset(req.asset), units)
    return WithdrawalView(
        transfer_id=transfer_id,
        asset=req.asset,
        amount=format_amount(units, req.asset),
        replayed=replayed,
        chain=op.status if op is not None else "done",  # type: ignore[arg-type]
        signature=op.signature if op is not None else None,
    )


@router.post("/v1/wallets/{pubkey}/faucet", response_model=WalletView)
def faucet(pubkey: WalletKey, req: FaucetRequest, signer: Signer, state: StateDep) -> WalletView:
    """Development only (``faucet``): tokens to try the network with."""
    if not state.settings.faucet:
        raise NotFound("there is no faucet in production")
    _signed_by_itself(signer, pubkey)
    state.ledger.grant(pubkey, Asset(req.asset), parse_amount(req.amount, req.asset))
    return wallet(pubkey, state)


@router.get("/v1/wallets/{pubkey}/history", response_model=HistoryView)
def history(pubkey: WalletKey, state: StateDep) -> HistoryView:
    ledger = state.ledger
    items: list[TransferView] = []
    with ledger.sessions() as db:
        for asset in ASSETS:
            account = user_account(pubkey, asset)
            for t, at, seq in ledger.book.history(db, account):
                items.append(
                    TransferView(
                        id=t.id,
                        seq=seq,
                        at=at,
                        debit=t.debit,
                        credit=t.credit,
                        asset=t.asset,
                        amount=format_amount(t.amount, t.asset),
                        kind=t.kind.value,
                        code=t.code,
                        memo=t.memo,
                    )
                )
    items.sort(key=lambda v: v.seq, reverse=True)
    return HistoryView(items=items)


@router.get("/v1/token/supply", response_model=SupplyView)
def supply(state: StateDep) -> SupplyView:
    return state.ledger.supply_view()


@router.get("/v1/ledger/audit", response_model=AuditView)
def audit(state: StateDep) -> AuditView:
    """Book = chain, supply and the hash chain, checked at most once per
    ``audit_cache_s`` for everyone (it needs no key)."""
    checked_at, checks = state.ledger.recent_audit(state.settings.audit_cache_s)
    return AuditView(
        ok=all(c.ok for c in checks),
        checks=[AuditCheckView(name=c.name, ok=c.ok, detail=c.detail) for c in checks],
        checked_at=checked_at,
    )
