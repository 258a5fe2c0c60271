"""Random sequences of deposits, escrows, posts, voids, fees, withdrawals and
burns through the ledger service and the real SPL token program: the book
always balances, nothing is overdrawn, book and chain agree, supply adds up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.keypair import Keypair

from idlegrid.core.fees import fee
from idlegrid.core.ledger import Transfer, TransferKind
from idlegrid.errors import IdlegridError
from idlegrid.ledger.chain import Asset
from idlegrid.server.app import build_state
from idlegrid.server.services.ledger import (
    LedgerService,
    escrow_account,
    fees_account,
    user_account,
)
from idlegrid.server.settings import ServerSettings

WALLETS = [str(Keypair().pubkey()) for _ in range(3)]

step = st.one_of(
    st.tuples(
        st.just("deposit"),
        st.sampled_from(WALLETS),
        st.sampled_from(["IO", "USDC"]),
        st.integers(1, 10**9),
    ),
    st.tuples(
        st.just("withdraw"),
        st.sampled_from(WALLETS),
        st.sampled_from(["IO", "USDC"]),
        st.integers(1, 10**9),
    ),
    st.tuples(
        st.just("escrow"),
        st.sampled_from(WALLETS),
        st.sampled_from(["IO", "USDC"]),
        st.integers(1, 10**9),
    ),
    st.tuples(
        st.just("settle"),
        st.sampled_from(WALLETS),
        st.sampled_from(["post", "void"]),
        st.integers(0, 50),
    ),
    st.tuples(st.just("burn"), st.just(""), st.just(""), st.just(0)),
)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LedgerService]:
    data: Path = tmp_path_factory.mktemp("money")
    state = build_state(ServerSettings(data_dir=data))
    yield state.ledger
    state.engine.dispose()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(step, min_size=1, max_size=12))
def test_money_invariants_hold_under_any_sequence(
    ledger: LedgerService, steps: list[tuple[str, str, str, int]]
) -> None:
    escrows: list[Transfer] = []
    for n, (what, wallet, asset, amount) in enumerate(steps):
        tag = f"{id(steps)}-{n}"
        try:
            if what == "deposit":  # tokens arrive at the deposit address from outside
                if asset == "IO":
                    ledger.grant(wallet, Asset.IO, amount)
                else:
                    ledger.chain.mint_to(
                        Asset.USDC, ledger.deposit_address(wallet, Asset.USDC), amount
                    )
                    ledger.sweep_deposits(wallet)
            elif what == "withdraw":
                ledger.withdraw(wallet, tag, Asset(asset), amount)
            elif what == "escrow":  # a buyer pays into escrow, with the reservation fee
                hold = Transfer(
                    f"hold:{tag}",
                    user_account(wallet, asset),
                    escrow_account(asset),
                    asset,
                    amount,
                    TransferKind.PENDING,
                )
                with ledger.sessions.begin() as db:
                    ledger.book.post_batch(
                        db,
                        [
                            hold,
                            Transfer(
                                f"fee:{tag}",
                                user_account(wallet, asset),
                                fees_account(asset),
                                asset,
                                max(1, fee(amount, asset)),
                                code="fee",
                            ),
                        ],
                    )
                escrows.append(hold)
            elif what == "settle" and escrows:
                hold = escrows[amount % len(escrows)]
                kind = TransferKind.POST_PENDING if asset == "post" else TransferKind.VOID_PENDING
                with ledger.sessions.begin() as db:
                    ledger.book.post(
                        db,
                        Transfer(
                            f"{asset}:{tag}",
                            hold.debit,
                            hold.credit,
                            hold.asset,
                            hold.amount,
                            kind,
                            pending_id=hold.id,
                        ),
                    )
            elif what == "burn":
                ledger.buyback_and_burn()
        except IdlegridError:
            pass  # refused (overdraft, closed escrow…): must change nothing
        failed = [c for c in ledger.audit() if not c.ok]
        assert not failed, (what, failed)
