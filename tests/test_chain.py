"""The chain contract against the embedded VM: real transactions, real SPL Token program.

``RpcChain`` shares every instruction, signature and check tested here (``SplChain``);
only its transport is untested (no cluster in the suite).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.state import Mint, TokenAccount

from idlegrid.ledger.chain import (
    DECIMALS,
    TREASURY_ROLES,
    AccountNotFound,
    Asset,
    ChainError,
    ChainLayout,
    Snapshottable,
    layout_for,
)
from idlegrid.ledger.connect import make_chain
from idlegrid.ledger.litesvm import LiteSvmChain
from idlegrid.ledger.rpc import RpcChain

IO = 10 ** DECIMALS[Asset.IO]  # one IO in smallest units
SOL = 1_000_000_000


@pytest.fixture
def authority() -> Keypair:
    return Keypair()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "chain" / "state.json"


@pytest.fixture
def chain(authority: Keypair, state_file: Path) -> LiteSvmChain:
    chain = LiteSvmChain(authority, state_file)
    chain.setup()
    return chain


def funded_user(chain: LiteSvmChain) -> Keypair:
    user = Keypair()
    chain.airdrop_sol(str(user.pubkey()), SOL)
    return user


def user_with_io(chain: LiteSvmChain, amount: int) -> tuple[Keypair, str]:
    user = funded_user(chain)
    deposit = chain.token_account(str(user.pubkey()), Asset.IO)
    chain.mint_to(Asset.IO, deposit, amount)
    return user, deposit


def sol_balance(chain: LiteSvmChain, pubkey: Pubkey) -> int:
    account = chain._get_account(pubkey)
    return 0 if account is None else account.lamports


# -- setup ---------------------------------------------------------------------------


def test_setup_creates_two_mints_and_twelve_role_accounts(
    chain: LiteSvmChain, authority: Keypair
) -> None:
    layout = chain.layout
    assert layout == layout_for(authority.pubkey())
    for asset in Asset:
        raw = chain._get_account(Pubkey.from_string(layout.mint(asset)))
        assert raw is not None
        mint = Mint.from_bytes(raw.data)
        assert (mint.decimals, mint.mint_authority, mint.supply) == (
            DECIMALS[asset],
            authority.pubkey(),
            0,
        )
    addresses = {layout.account(role, asset) for role in TREASURY_ROLES for asset in Asset}
    assert len(addresses) == 12
    for role in TREASURY_ROLES:
        for asset in Asset:
            raw = chain._get_account(Pubkey.from_string(layout.account(role, asset)))
            assert raw is not None
            account = TokenAccount.from_bytes(raw.data)
            assert account.owner == authority.pubkey()
            assert str(account.mint) == layout.mint(asset)
            assert account.amount == 0


def test_setup_is_idempotent_and_sends_nothing_the_second_time(
    chain: LiteSvmChain, authority: Keypair
) -> None:
    lamports = sol_balance(chain, authority.pubkey())
    assert chain.setup() == chain.layout
    assert sol_balance(chain, authority.pubkey()) == lamports  # no fee: no transaction


def test_layout_round_trips_through_json(chain: LiteSvmChain) -> None:
    text = chain.layout.to_json()
    assert json.loads(text)["mints"].keys() == {"IO", "USDC"}
    assert ChainLayout.from_json(text) == chain.layout


# -- minting, transfers, burns -----------------------------------------------------------


def test_mint_to_raises_balance_and_supply(chain: LiteSvmChain) -> None:
    reward = chain.layout.account("reward", Asset.IO)
    signature = chain.mint_to(Asset.IO, reward, 7 * IO)
    assert len(signature) > 80  # base58 of 64 bytes
    assert chain.balance(reward) == 7 * IO
    assert chain.supply(Asset.IO) == 7 * IO
    assert chain.supply(Asset.USDC) == 0


def test_user_deposits_io_into_the_treasury(chain: LiteSvmChain) -> None:
    user, deposit = user_with_io(chain, 5 * IO)
    assert chain.token_account(str(user.pubkey()), Asset.IO) == deposit  # same address, no error
    treasury = chain.layout.account("treasury", Asset.IO)

    chain.transfer(Asset.IO, deposit, treasury, 2 * IO, owner=user)

    assert chain.balance(deposit) == 3 * IO
    assert chain.balance(treasury) == 2 * IO
    assert chain.supply(Asset.IO) == 5 * IO


def test_overdraft_fails_with_the_token_programs_logs(chain: LiteSvmChain) -> None:
    user, deposit = user_with_io(chain, IO)
    treasury = chain.layout.account("treasury", Asset.IO)
    with pytest.raises(ChainError) as raised:
        chain.transfer(Asset.IO, deposit, treasury, IO + 1, owner=user)
    assert any("insufficient funds" in line for line in raised.value.logs)
    assert "insufficient funds" in str(raised.value)
    assert raised.value.signature is not None
    assert (chain.balance(deposit), chain.balance(treasury)) == (IO, 0)


def test_transfer_signed_by_someone_else_fails(chain: LiteSvmChain) -> None:
    _, deposit = user_with_io(chain, IO)
    thief = funded_user(chain)  # funded, so the failure is the owner check, not the fee
    with pytest.raises(ChainError) as raised:
        chain.transfer(Asset.IO, deposit, chain.layout.account("treasury", Asset.IO), 1, thief)
    assert any("owner does not match" in line for line in raised.value.logs)
    assert chain.balance(deposit) == IO


def test_wallet_without_sol_cannot_pay_the_fee(chain: LiteSvmChain) -> None:
    user = Keypair()
    deposit = chain.token_account(str(user.pubkey()), Asset.IO)
    chain.mint_to(Asset.IO, deposit, IO)
    with pytest.raises(ChainError, match="AccountNotFound"):
        chain.transfer(Asset.IO, deposit, chain.layout.account("fee", Asset.IO), 1, user)


def test_transfer_of_the_wrong_asset_fails(chain: LiteSvmChain) -> None:
    user, deposit = user_with_io(chain, IO)
    with pytest.raises(ChainError):
        chain.transfer(Asset.USDC, deposit, chain.layout.account("treasury", Asset.USDC), 1, user)


def test_two_identical_transfers_both_land(chain: LiteSvmChain) -> None:
    user, deposit = user_with_io(chain, 10 * IO)
    escrow = chain.layout.account("escrow", Asset.IO)
    first = chain.transfer(Asset.IO, deposit, escrow, IO, owner=user)
    second = chain.transfer(Asset.IO, deposit, escrow, IO, owner=user)
    assert first != second
    assert chain.balance(escrow) == 2 * IO


def test_burn_lowers_supply_and_balance(chain: LiteSvmChain) -> None:
    burn = chain.layout.account("burn", Asset.USDC)
    chain.mint_to(Asset.USDC, burn, 1_000_000)
    chain.burn(Asset.USDC, burn, 400_000)
    assert chain.balance(burn) == 600_000
    assert chain.supply(Asset.USDC) == 600_000


def test_burn_from_a_users_account_fails(chain: LiteSvmChain) -> None:
    _, deposit = user_with_io(chain, IO)
    with pytest.raises(ChainError, match="owner does not match"):
        chain.burn(Asset.IO, deposit, 1)
    assert chain.supply(Asset.IO) == IO


def test_bad_amounts_and_unknown_accounts(chain: LiteSvmChain) -> None:
    treasury = chain.layout.account("treasury", Asset.IO)
    with pytest.raises(ValueError):
        chain.mint_to(Asset.IO, treasury, -1)
    with pytest.raises(ValueError):
        chain.mint_to(Asset.IO, treasury, 2**64)
    with pytest.raises(AccountNotFound):
        chain.balance(str(Keypair().pubkey()))


# -- persistence --------------------------------------------------------------------


def test_state_survives_a_restart(
    chain: LiteSvmChain, authority: Keypair, state_file: Path
) -> None:
    user, deposit = user_with_io(chain, 5 * IO)
    treasury = chain.layout.account("treasury", Asset.IO)
    chain.transfer(Asset.IO, deposit, treasury, IO, owner=user)
    chain.mint_to(Asset.USDC, chain.layout.account("escrow", Asset.USDC), 123)
    assert state_file.exists()
    assert not [p for p in state_file.parent.iterdir() if p != state_file]  # no temp files left

    reborn = LiteSvmChain(authority, state_file)

    assert reborn.setup() == chain.layout
    assert (reborn.balance(deposit), reborn.balance(treasury)) == (4 * IO, IO)
    assert reborn.supply(Asset.IO) == 5 * IO
    assert reborn.supply(Asset.USDC) == 123
    # The user's SOL survived too: they can still pay for their own transfer.
    reborn.transfer(Asset.IO, deposit, treasury, IO, owner=user)
    reborn.burn(Asset.IO, treasury, IO)
    assert (reborn.balance(deposit), reborn.balance(treasury)) == (3 * IO, IO)
    assert reborn.supply(Asset.IO) == 4 * IO
    assert LiteSvmChain(authority, state_file).balance(deposit) == 3 * IO


def test_snapshot_and_restore_in_memory(authority: Keypair) -> None:
    chain = LiteSvmChain(authority)
    chain.setup()
    treasury = chain.layout.account("treasury", Asset.IO)
    chain.mint_to(Asset.IO, treasury, 10)
    saved = chain.snapshot()
    chain.mint_to(Asset.IO, treasury, 5)
    chain.restore(saved)  # replaces the VM: the later mint is gone
    assert (chain.balance(treasury), chain.supply(Asset.IO)) == (10, 10)
    assert isinstance(chain, Snapshottable)


def test_a_snapshot_of_another_authority_is_refused(chain: LiteSvmChain) -> None:
    with pytest.raises(ValueError, match="authority"):
        LiteSvmChain(Keypair()).restore(chain.snapshot())


# -- the factory ----------------------------------------------------------------------


def test_make_chain_picks_the_adapter_by_url(authority: Keypair, tmp_path: Path) -> None:
    embedded = make_chain("litesvm", authority, tmp_path / "s.json")
    assert isinstance(embedded, LiteSvmChain)
    assert isinstance(make_chain("embedded", authority), LiteSvmChain)
    rpc = make_chain("http://127.0.0.1:8899", authority)  # no connection is made
    assert isinstance(rpc, RpcChain)
    assert not isinstance(rpc, Snapshottable)
    assert rpc.layout == embedded.layout  # the layout depends on the authority alone
    rpc.close()
    with pytest.raises(ValueError):
        make_chain("solana://nowhere", authority)
