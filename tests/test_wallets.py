"""Money through the API, against the real SPL token program in the embedded
VM: genesis, deposits credited once, withdrawals that cannot overdraw, fee
burns, the audit, and a control-plane restart."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from solders.keypair import Keypair

from idlegrid.core import emission
from idlegrid.core.ledger import Transfer
from idlegrid.errors import InsufficientFunds, InvalidAmount, PermissionDenied, TransferExists
from idlegrid.ledger.chain import Asset
from idlegrid.protocol import FaucetRequest, WithdrawRequest
from idlegrid.server.services.ledger import fees_account, user_account
from tests.conftest import Network


def audit_ok(net: Network) -> None:
    report = net.client().ledger_audit()
    assert report.ok, [c for c in report.checks if not c.ok]


def test_genesis_mints_500m_and_the_audit_passes(network: Network) -> None:
    supply = network.client().token_supply()
    assert Decimal(supply.genesis) == 500_000_000 and Decimal(supply.max) == 800_000_000
    assert Decimal(supply.circulating) == 500_000_000 and Decimal(supply.burned) == 0
    assert network.state.ledger.chain.supply(Asset.IO) == emission.GENESIS_SUPPLY_UNITS
    audit_ok(network)
    network.state.ledger.genesis()  # idempotent: a restart mints nothing more
    assert network.state.ledger.chain.supply(Asset.IO) == emission.GENESIS_SUPPLY_UNITS


def test_emission_mints_only_as_emitted_and_once(network: Network) -> None:
    ledger = network.state.ledger
    assert ledger.emit(0) == emission.FIRST_HOUR_UNITS
    ledger.emit(0)
    ledger.emit(1)
    expected = emission.GENESIS_SUPPLY_UNITS + emission.cumulative(1)
    assert ledger.chain.supply(Asset.IO) == expected
    audit_ok(network)


def test_a_deposit_is_credited_once(network: Network) -> None:
    kp = Keypair()
    me = str(kp.pubkey())
    client = network.client(kp)
    view = client.wallet(me)
    address = view.balances[1].deposit_address
    # A sender creates the recipient's token account (as Solana wallets do), then pays.
    chain = network.state.ledger.chain
    assert chain.token_account(view.deposit_wallet, Asset.USDC) == address
    chain.mint_to(Asset.USDC, address, 25_000_000)  # 25 USDC arrive
    assert client.sweep_deposits(me).credited == {"USDC": "25.000000"}
    assert client.sweep_deposits(me).credited == {}  # nothing new: nothing credited
    usdc = client.wallet(me).balances[1]
    assert (usdc.balance, usdc.available) == ("25.000000", "25.000000")
    assert network.state.ledger.chain.balance(address) == 0
    audit_ok(network)


def test_withdrawals_pay_out_once_and_refuse_bad_amounts(network: Network) -> None:
    kp = Keypair()
    me = str(kp.pubkey())
    client = network.client(kp)
    client.faucet(me, FaucetRequest(asset="IO", amount="100"))
    first = client.withdraw(me, WithdrawRequest(id="w-1", asset="IO", amount="40.5"))
    again = client.withdraw(me, WithdrawRequest(id="w-1", asset="IO", amount="40.5"))
    assert not first.replayed and again.replayed
    assert client.wallet(me).balances[0].balance == "59.50000000"
    mine = network.state.ledger.chain.token_account(me, Asset.IO)
    assert network.state.ledger.chain.balance(mine) == 4_050_000_000
    with pytest.raises(TransferExists):
        client.withdraw(me, WithdrawRequest(id="w-1", asset="IO", amount="1"))
    for amount in ("0", "-3", "0.000000001", "abc", "1e400"):
        with pytest.raises(InvalidAmount):
            client.withdraw(me, WithdrawRequest(id=f"bad-{amount}", asset="IO", amount=amount))
    with pytest.raises(InsufficientFunds):
        client.withdraw(me, WithdrawRequest(id="w-2", asset="IO", amount="60"))
    with pytest.raises(PermissionDenied):
        network.client(Keypair()).withdraw(me, WithdrawRequest(id="x", asset="IO", amount="1"))
    audit_ok(network)


def test_racing_withdrawals_cannot_overdraw(network: Network) -> None:
    kp = Keypair()
    me = str(kp.pubkey())
    network.client(kp).faucet(me, FaucetRequest(asset="IO", amount="100"))
    results: list[str] = []
    barrier = threading.Barrier(4)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            network.state.ledger.withdraw(me, f"race-{i}", Asset.IO, 30 * 10**8)
            results.append("paid")
        except InsufficientFunds:
            results.append("refused")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["paid"] * 3 + ["refused"]
    assert network.client().wallet(me).balances[0].balance == "10.00000000"
    audit_ok(network)


def test_fee_revenue_is_bought_back_and_burned(network: Network) -> None:
    ledger = network.state.ledger
    kp = Keypair()
    me = str(kp.pubkey())
    client = network.client(kp)
    client.faucet(me, FaucetRequest(asset="IO", amount="10"))
    client.faucet(me, FaucetRequest(asset="USDC", amount="3"))
    with ledger.sessions.begin() as db:  # fees as payments will charge them
        ledger.book.post(
            db, Transfer("fee-1", user_account(me, "IO"), fees_account("IO"), "IO", 10**8)
        )
        ledger.book.post(
            db, Transfer("fee-2", user_account(me, "USDC"), fees_account("USDC"), "USDC", 3 * 10**6)
        )
    burned = ledger.buyback_and_burn()
    # 1 IO of IO fees, and 3 USDC at 1.50 USD/IO = 2 IO bought and burned.
    assert burned == [("IO fees", 10**8), ("USDC fees", 2 * 10**8)]
    supply = client.token_supply()
    assert Decimal(supply.burned) == 3
    assert ledger.chain.supply(Asset.IO) == emission.GENESIS_SUPPLY_UNITS - 3 * 10**8
    assert ledger.buyback_and_burn() == []  # nothing left to burn
    audit_ok(network)


def test_the_audit_names_a_discrepancy(network: Network) -> None:
    ledger = network.state.ledger
    treasury = ledger.chain.layout.account("treasury", Asset.USDC)
    ledger.chain.mint_to(Asset.USDC, treasury, 5)  # the chain moves; the book does not
    report = network.client().ledger_audit()
    failed = [c for c in report.checks if not c.ok]
    assert not report.ok and failed[0].name == "treasury USDC: book = chain"
    assert "book 0, chain 5" in failed[0].detail


def test_book_and_chain_still_agree_after_a_restart(network: Network) -> None:
    kp = Keypair()
    me = str(kp.pubkey())
    network.client(kp).faucet(me, FaucetRequest(asset="USDC", amount="7"))
    network.client(kp).withdraw(me, WithdrawRequest(id="a", asset="USDC", amount="2"))
    network.close()
    restarted = Network(network.settings, network.clock)
    try:
        assert restarted.client().wallet(me).balances[1].balance == "5.000000"
        assert restarted.state.ledger.chain.supply(Asset.IO) == emission.GENESIS_SUPPLY_UNITS
        audit_ok(restarted)
    finally:
        restarted.close()


def test_a_malformed_wallet_key_is_a_4xx(network: Network) -> None:
    for path in ("/v1/wallets/not-a-key", "/v1/wallets/0OIl0OIl0OIl0OIl0OIl0OIl0OIl0OIl0/history"):
        resp = network.http.get(path)
        assert (resp.status_code, resp.json()["code"]) == (422, "invalid_request")


def test_a_payout_the_chain_refuses_for_good_is_refunded(network: Network) -> None:
    """The treasury is emptied on chain behind the book's back: the withdrawal's
    transaction fails each time, and after the last attempt the book refunds it."""
    from idlegrid.ledger.outbox import MAX_ATTEMPTS

    ledger = network.state.ledger
    kp = Keypair()
    me = str(kp.pubkey())
    ledger.grant(me, Asset.IO, 100 * 10**8)
    treasury = ledger.chain.layout.account("treasury", Asset.IO)
    ledger.chain.burn(Asset.IO, treasury, ledger.chain.balance(treasury))  # the discrepancy
    _, _, op = ledger.withdraw(me, "w-1", Asset.IO, 40 * 10**8)
    assert op is not None and op.status == "pending" and "insufficient funds" in (op.error or "")
    for _ in range(MAX_ATTEMPTS):
        ledger.outbox.drain()
    op = ledger.outbox.status("withdrawal:" + me + ":w-1")
    assert op is not None and op.status == "failed"
    with ledger.sessions() as db:
        assert ledger.balances(db, me)["IO"] == (100 * 10**8, 100 * 10**8)  # refunded
    failed = [c.name for c in ledger.audit() if not c.ok]
    assert "no chain operation failed" in failed and "treasury IO: book = chain" in failed
    # A retry with the same id is answered from the record: nothing is sent again.
    _, replayed, again = ledger.withdraw(me, "w-1", Asset.IO, 40 * 10**8)
    assert replayed and again is not None and again.status == "failed"


def test_the_public_audit_is_shared_and_walks_only_new_transfers(network: Network) -> None:
    """Anyone may ask for the audit, so the network takes it at most once per
    ``audit_cache_s`` for everyone, and each one re-hashes only the transfers since the
    last: a flood of audit requests costs one audit, and an audit costs what is new."""
    client = network.client()
    first = client.ledger_audit()
    assert first.ok and first.checked_at == network.clock()
    chain_check = next(c for c in first.checks if c.name == "hash chain intact")
    genesis_transfers = int(chain_check.detail.split("..")[1].split()[0])
    assert chain_check.detail == f"ok: transfers 1..{genesis_transfers} checked now"

    ledger = network.state.ledger
    treasury = ledger.chain.layout.account("treasury", Asset.USDC)
    ledger.chain.mint_to(Asset.USDC, treasury, 5)  # a discrepancy, not seen yet
    assert client.ledger_audit() == first  # the same audit, shared

    kp = Keypair()
    me = str(kp.pubkey())
    network.client(kp).faucet(me, FaucetRequest(asset="IO", amount="1"))  # new transfers
    network.clock.advance(network.settings.audit_cache_s)
    later = client.ledger_audit()
    assert later.checked_at == network.clock() and not later.ok
    assert [c.name for c in later.checks if not c.ok] == ["treasury USDC: book = chain"]
    chain_check = next(c for c in later.checks if c.name == "hash chain intact")
    assert chain_check.ok and chain_check.detail.endswith(
        f"checked now, 1..{genesis_transfers} verified before"
    )
