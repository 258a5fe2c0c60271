"""Property tests of the double-entry rules: whatever sequence of transfers,
escrows, posts and voids is attempted, value is conserved, no protected account
is overdrawn, and a failed transfer changes nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlegrid.core import ledger
from idlegrid.core.ledger import AccountState, Transfer, TransferKind
from idlegrid.errors import (
    AssetMismatch,
    InsufficientFunds,
    InvalidAmount,
    PendingTransferClosed,
)

ACCOUNTS = ["world", "alice", "bob", "escrow", "fees"]
KINDS = {
    "posted": TransferKind.POSTED,
    "pending": TransferKind.PENDING,
    "post": TransferKind.POST_PENDING,
    "void": TransferKind.VOID_PENDING,
}

op = st.tuples(
    st.sampled_from(["posted", "pending", "post", "void"]),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(ACCOUNTS),
    st.integers(-5, 1000),
    st.integers(0, 30),  # which earlier pending transfer to settle
)


class Model:
    """The book in memory, through the pure rules only."""

    def __init__(self) -> None:
        self.accounts = {a: AccountState(a, "IO", no_overdraft=a != "world") for a in ACCOUNTS}
        self.pending: list[Transfer] = []
        self.closed: set[str] = set()
        self.n = 0

    def build(
        self, kind: str, debit: str, credit: str, amount: int, pick: int
    ) -> tuple[Transfer, Transfer | None]:
        """The transfer an op means, and the pending one it settles."""
        self.n += 1
        pending = None
        if kind in ("post", "void") and self.pending:
            pending = self.pending[pick % len(self.pending)]
            debit, credit = pending.debit, pending.credit
            if kind == "void":
                amount = pending.amount
        settles = kind in ("post", "void")
        t = Transfer(
            id=f"t{self.n}",
            debit=debit,
            credit=credit,
            asset="IO",
            amount=amount,
            kind=KINDS[kind],
            pending_id=pending.id if pending else ("none" if settles else None),
        )
        return t, pending

    def attempt(self, kind: str, debit: str, credit: str, amount: int, pick: int) -> Transfer:
        t, pending = self.build(kind, debit, credit, amount, pick)
        debit, credit = t.debit, t.credit
        before = dict(self.accounts)
        try:
            d, c = ledger.apply(
                t,
                self.accounts[debit],
                self.accounts[credit],
                pending,
                pending_open=pending is not None and pending.id not in self.closed,
            )
        except (InsufficientFunds, InvalidAmount, PendingTransferClosed, AssetMismatch):
            assert self.accounts == before  # nothing half applied
            return t
        self.accounts[debit], self.accounts[credit] = d, c
        if t.kind is TransferKind.PENDING:
            self.pending.append(t)
        elif pending is not None:
            self.closed.add(pending.id)
        return t

    def check(self) -> None:
        states = self.accounts.values()
        assert sum(a.debits_posted for a in states) == sum(a.credits_posted for a in states)
        assert sum(a.debits_pending for a in states) == sum(a.credits_pending for a in states)
        for a in states:
            assert min(a.debits_pending, a.credits_pending) >= 0
            if a.no_overdraft:
                assert a.debits_posted + a.debits_pending <= a.credits_posted
        open_amount = sum(t.amount for t in self.pending if t.id not in self.closed)
        assert open_amount == sum(a.debits_pending for a in states)


@settings(max_examples=300)
@given(st.lists(op, max_size=60))
def test_conservation_and_no_overdraft_under_any_sequence(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    model = Model()
    for o in ops:
        model.attempt(*o)
        model.check()


def test_escrow_cannot_be_spent_twice() -> None:
    alice = AccountState("alice", "IO", credits_posted=100)
    escrow = AccountState("escrow", "IO")
    hold = Transfer("h", "alice", "escrow", "IO", 80, TransferKind.PENDING)
    alice, escrow = ledger.apply(hold, alice, escrow)
    assert alice.available == 20 and alice.balance == 100
    with pytest.raises(InsufficientFunds) as err:
        ledger.apply(Transfer("x", "alice", "escrow", "IO", 30), alice, escrow)
    assert err.value.details == {"account": "alice", "needed": 30, "available": 20}
    post = Transfer("p", "alice", "escrow", "IO", 50, TransferKind.POST_PENDING, pending_id="h")
    alice, escrow = ledger.apply(post, alice, escrow, hold)
    assert (alice.balance, alice.available, escrow.balance) == (50, 50, 50)
    with pytest.raises(PendingTransferClosed):
        ledger.apply(post, alice, escrow, hold, pending_open=False)


@pytest.mark.parametrize("amount", [0, -1, 1.5, True])
def test_amounts_must_be_positive_integers(amount: object) -> None:
    a, b = AccountState("a", "IO", no_overdraft=False), AccountState("b", "IO")
    with pytest.raises(InvalidAmount):
        ledger.apply(Transfer("t", "a", "b", "IO", amount), a, b)  # type: ignore[arg-type]


def test_assets_must_match() -> None:
    a, b = AccountState("a", "IO", no_overdraft=False), AccountState("b", "USDC")
    with pytest.raises(AssetMismatch):
        ledger.apply(Transfer("t", "a", "b", "IO", 5), a, b)


def test_the_hash_chain_commits_to_every_field_and_position() -> None:
    t = Transfer("t", "a", "b", "IO", 5, code="fee")
    h = ledger.chain_hash(ledger.GENESIS_HASH, t, 1)
    variants = [
        ledger.chain_hash(ledger.GENESIS_HASH, t, 2),
        ledger.chain_hash("1" * 64, t, 1),
        ledger.chain_hash(ledger.GENESIS_HASH, Transfer("t", "a", "b", "IO", 6, code="fee"), 1),
        ledger.chain_hash(ledger.GENESIS_HASH, Transfer("t", "a", "b", "IO", 5, code="tip"), 1),
    ]
    assert h not in variants and len(set(variants)) == 4
