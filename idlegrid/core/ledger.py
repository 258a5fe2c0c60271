"""The double-entry rules, after TigerBeetle. Pure: plain values in, plain values out.

Every movement of value is a *transfer* of a positive integer amount (smallest
units) of one asset from a debit account to a credit account. Transfers are
immutable; their ids are chosen by the caller, who reuses an id on retry, so a
retried request is recorded once. An account keeps four running sums::

    debits_pending   debits_posted   credits_pending   credits_posted

and its balance is ``credits_posted − debits_posted`` (what the network owes
the holder). A *pending* transfer reserves the amount on both sides (escrow);
it is later *posted* (for the full or a smaller amount) or *voided*, once.

Invariants (checked by ``tests/test_ledger_core.py`` with hypothesis):

- conservation: for every asset, Σ debits = Σ credits over all accounts, for
  the pending and the posted sums alike;
- an account flagged ``no_overdraft`` never has
  ``debits_posted + debits_pending > credits_posted`` — pending debits count
  against the balance, so an escrow can never be spent twice;
- a transfer id is applied at most once.

Each transfer also commits to the hash of the one before it (``chain_hash``):
altering, removing or reordering any recorded transfer changes every later
hash, so tampering shows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum

from idlegrid.errors import (
    AssetMismatch,
    InsufficientFunds,
    InvalidAmount,
    PendingTransferClosed,
)

GENESIS_HASH = "0" * 64


class TransferKind(StrEnum):
    """What a transfer does to the books."""

    POSTED = "posted"  # a plain transfer, final at once
    PENDING = "pending"  # reserves; later posted or voided
    POST_PENDING = "post_pending"  # settles a pending transfer
    VOID_PENDING = "void_pending"  # releases a pending transfer


@dataclass(frozen=True, slots=True)
class AccountState:
    id: str
    asset: str
    no_overdraft: bool = True
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @property
    def balance(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """What the holder can still spend: the balance less pending debits."""
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    debit: str
    credit: str
    asset: str
    amount: int
    kind: TransferKind = TransferKind.POSTED
    pending_id: str | None = None  # for POST_PENDING and VOID_PENDING
    code: str = ""  # what it is for: deposit, withdrawal, fee, escrow, burn…
    memo: str = ""

    def canonical(self) -> str:
        """The fields a retry must repeat exactly, and the hash commits to."""
        return json.dumps(
            [
                self.id,
                self.debit,
                self.credit,
                self.asset,
                self.amount,
                self.kind.value,
                self.pending_id,
                self.code,
                self.memo,
            ],
            separators=(",", ":"),
        )


def validate(t: Transfer) -> None:
    if not isinstance(t.amount, int) or isinstance(t.amount, bool) or not 0 < t.amount < 2**63:
        raise InvalidAmount(
            "amounts are positive integers of the smallest unit, below 2^63", amount=t.amount
        )
    if t.debit == t.credit:
        raise InvalidAmount("a transfer needs two different accounts", account=t.debit)
    if t.kind in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING) and not t.pending_id:
        raise InvalidAmount(f"{t.kind.value} needs pending_id")


def _moved(
    a: AccountState,
    debits_pending: int,
    debits_posted: int,
    credits_pending: int,
    credits_posted: int,
) -> AccountState:
    """``a`` with its four sums moved by these amounts (built directly: a batch of
    10,000 transfers makes 20,000 of these, and ``dataclasses.replace`` costs three
    times as much)."""
    return AccountState(
        a.id,
        a.asset,
        a.no_overdraft,
        a.debits_pending + debits_pending,
        a.debits_posted + debits_posted,
        a.credits_pending + credits_pending,
        a.credits_posted + credits_posted,
    )


def apply(
    t: Transfer,
    debit: AccountState,
    credit: AccountState,
    pending: Transfer | None = None,
    pending_open: bool = True,
) -> tuple[AccountState, AccountState]:
    """The two accounts after ``t``, or an error; ``pending`` is the transfer a
    POST_PENDING or VOID_PENDING settles (``pending_open`` whether it still can)."""
    validate(t)
    for account in (debit, credit):
        if account.asset != t.asset:
            raise AssetMismatch(account=account.id, account_asset=account.asset, asset=t.asset)
    if t.kind is TransferKind.POSTED:
        _check_funds(debit, t.amount)
        return (
            _moved(debit, 0, t.amount, 0, 0),
            _moved(credit, 0, 0, 0, t.amount),
        )
    if t.kind is TransferKind.PENDING:
        _check_funds(debit, t.amount)
        return (
            _moved(debit, t.amount, 0, 0, 0),
            _moved(credit, 0, 0, t.amount, 0),
        )
    if pending is None or pending.kind is not TransferKind.PENDING or not pending_open:
        raise PendingTransferClosed(pending_id=t.pending_id)
    if (pending.debit, pending.credit, pending.asset) != (t.debit, t.credit, t.asset):
        raise InvalidAmount("a settlement must name its pending transfer's accounts")
    released = (
        _moved(debit, -pending.amount, 0, 0, 0),
        _moved(credit, 0, 0, -pending.amount, 0),
    )
    if t.kind is TransferKind.VOID_PENDING:
        if t.amount != pending.amount:
            raise InvalidAmount("a void releases the whole pending amount", amount=pending.amount)
        return released
    if t.amount > pending.amount:
        raise InvalidAmount("cannot post more than was pending", pending=pending.amount)
    d, c = released
    return (
        _moved(d, 0, t.amount, 0, 0),
        _moved(c, 0, 0, 0, t.amount),
    )


def _check_funds(debit: AccountState, amount: int) -> None:
    if debit.no_overdraft and amount > debit.available:
        raise InsufficientFunds(account=debit.id, needed=amount, available=debit.available)


def chain_hash(previous: str, t: Transfer, seq: int) -> str:
    """The hash a transfer records: its position, its fields, and the hash before it."""
    return chain_hash_of(previous, seq, t.canonical())


def chain_hash_of(previous: str, seq: int, canonical: str) -> str:
    """``chain_hash`` given the transfer's ``canonical()`` already worked out (a batch
    works them out while the database reads)."""
    return hashlib.sha256(f"{previous}|{seq}|{canonical}".encode()).hexdigest()
