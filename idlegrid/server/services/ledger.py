"""Money: genesis, emission, deposits, withdrawals, fee burns, and the audit.

The book (``ledger/book.py``) and the chain (``ledger/chain.py``) meet here.
Every chain role account has a book mirror ``onchain:<role>:<asset>`` whose
balance is minus what the chain account holds (it is debited when tokens
arrive): so a deposit is one transfer from the treasury mirror to the user's
account, and the audit can compare each mirror with its chain account.

Book accounts::

    onchain:<role>:<asset>   mirror of the network's token account (may go negative)
    user:<pubkey>:<asset>    what the network owes a wallet (never overdrawn)
    genesis:<category>:IO    a genesis allocation, held in the treasury
    rewards:pool:IO          emitted IO waiting to be paid as block rewards
    revenue:fees:<asset>     fee revenue, until bought back and burned
    escrow:held:<asset>      holds as pending transfers (two-phase payments)
    escrow:cluster:<id>:<a>  one cluster's prepayments (services/clusters.py)
    reserve:usdc:USDC        USDC the network keeps after a buy-back

Ordering with the chain: each money path posts to the book and records the
chain movement in the outbox (``ledger/outbox.py``) in one transaction; after
the commit the outbox sends it, once. A crash anywhere leaves an unfinished
operation that the outbox finishes at the next start, so book and chain agree
again and nothing is paid twice; until then the audit counts it as in flight.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

import spl.token.instructions as spl
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core import emission
from idlegrid.core.fees import format_amount
from idlegrid.core.ledger import Transfer
from idlegrid.errors import InsufficientFunds, InvalidAmount, UnknownAccount
from idlegrid.ledger.book import GENESIS, Book, Checkpoint, balanced
from idlegrid.ledger.chain import TREASURY_ROLES, Asset, Chain, ChainOp
from idlegrid.ledger.oracle import PriceOracle, usdc_to_io_units
from idlegrid.ledger.outbox import OpStatus, Outbox
from idlegrid.ledger.tables import ChainOperation, LedgerAccount, LedgerTransfer
from idlegrid.protocol import SupplyView
from idlegrid.server.db.models import RewardCredit

log = logging.getLogger("idlegrid.server.ledger")

ASSETS = (Asset.IO, Asset.USDC)


def onchain(role: str, asset: str) -> str:
    return f"onchain:{role}:{asset}"


def user_account(pubkey: str, asset: str) -> str:
    return f"user:{pubkey}:{asset}"


def genesis_account(category: str) -> str:
    return "genesis:" + category.lower().replace(" ", "_").replace("&", "and") + ":IO"


REWARDS = "rewards:pool:IO"
UNCLAIMED = "rewards:unclaimed:IO"
"""Rewards credited by blocks and not yet claimed (backed by the chain's reward account)."""
USDC_RESERVE = "reserve:usdc:USDC"
BUYBACK_SELLER = genesis_account("R&D & ecosystem")


def fees_account(asset: str) -> str:
    return f"revenue:fees:{asset}"


def escrow_account(asset: str) -> str:
    """Buyers' payments held for hires (pending transfers land here)."""
    return f"escrow:held:{asset}"


@dataclass(frozen=True, slots=True)
class AuditCheck:
    name: str
    ok: bool
    detail: str


class LedgerService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        chain: Chain,
        authority: Keypair,
        oracle: PriceOracle,
        clock: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.chain = chain
        self.authority = authority
        self.oracle = oracle
        self.clock = clock
        self.book = Book(clock)
        # The audit re-hashes only what this process has not verified yet; one at a time.
        self._audit_lock = threading.Lock()
        self._verified: Checkpoint = GENESIS
        self._last_audit: tuple[float, list[AuditCheck]] | None = None
        self.outbox = Outbox(sessions, chain, self.book, authority, self._signer, clock)

    def _signer(self, name: str) -> Keypair:
        """The key an outbox operation is signed with: the authority, or a deposit wallet."""
        if name == "authority":
            return self.authority
        kind, _, pubkey = name.partition(":")
        if kind == "deposit" and pubkey:
            return self.deposit_wallet(pubkey)
        raise ValueError(f"unknown outbox signer {name!r}")

    # -- set-up ----------------------------------------------------------------------

    def genesis(self) -> None:
        """Open the system accounts and mint the genesis supply (idempotent)."""
        layout = self.chain.setup()
        with self.sessions.begin() as db:
            for asset in ASSETS:
                for role in TREASURY_ROLES:
                    self.book.open_account(db, onchain(role, asset), asset, no_overdraft=False)
                self.book.open_account(db, fees_account(asset), asset)
                self.book.open_account(db, escrow_account(asset), asset)
            self.book.open_account(db, REWARDS, "IO")
            self.book.open_account(db, UNCLAIMED, "IO")
            self.book.open_account(db, USDC_RESERVE, "USDC")
            minted = 0
            for category in emission.GENESIS_ALLOCATION:
                account = genesis_account(category.name)
                self.book.open_account(db, account, "IO")
                posted = self.book.post(
                    db,
                    Transfer(
                        f"genesis:{account}",
                        onchain("treasury", "IO"),
                        account,
                        "IO",
                        category.amount,
                        code="genesis",
                        memo=category.note,
                    ),
                )
                minted += 0 if posted.replayed else category.amount
            if minted:
                treasury = layout.account("treasury", Asset.IO)
                self.outbox.record(
                    db, "genesis:mint", ChainOp("mint", Asset.IO, minted, dest=treasury)
                )
                log.info("genesis: minting %s IO", format_amount(minted, "IO"))
        self.outbox.drain()  # and whatever a crash left unfinished

    def emit(self, hour: int) -> int:
        """Mint hour ``hour``'s emission into the reward account (once per hour)."""
        amount = emission.hour_amount(hour)
        with self.sessions.begin() as db:
            posted = self.book.post(
                db,
                Transfer(
                    f"emission:{hour}",
                    onchain("reward", "IO"),
                    REWARDS,
                    "IO",
                    amount,
                    code="emission",
                ),
            )
            if not posted.replayed:
                reward = self.chain.layout.account("reward", Asset.IO)
                self.outbox.record(
                    db, f"emission:{hour}", ChainOp("mint", Asset.IO, amount, dest=reward)
                )
        return amount

    # -- wallets ---------------------------------------------------------------------

    def deposit_wallet(self, pubkey: str) -> Keypair:
        """The network-held wallet whose token accounts are ``pubkey``'s deposit
        addresses, derived from the authority's secret: no table to lose."""
        seed = hashlib.sha256(bytes(self.authority)[:32] + b"deposit" + pubkey.encode()).digest()
        return Keypair.from_seed(seed)

    def deposit_address(self, pubkey: str, asset: Asset, create: bool = True) -> str:
        """The wallet's deposit address for ``asset``. Reads pass ``create=False``:
        creating a token account costs the network rent, and anyone may read."""
        owner = self.deposit_wallet(pubkey).pubkey()
        if not create:
            mint = Pubkey.from_string(self.chain.layout.mint(asset))
            return str(spl.get_associated_token_address(owner, mint))
        return self.chain.token_account(str(owner), asset)

    def sweep_deposits(self, pubkey: str) -> dict[str, int]:
        """Credit whatever arrived at ``pubkey``'s deposit addresses, once: the credit
        and the outbox's transfer of exactly those tokens into the treasury commit
        together, and a sweep waits for an earlier one of the same address to land
        before it reads the balance again."""
        credited: dict[str, int] = {}
        for asset in ASSETS:
            address = self.deposit_address(pubkey, asset)
            for _ in range(3):
                amount = self._sweep(pubkey, asset, address)
                if amount is not None:
                    break
                self.outbox.drain()  # an earlier sweep of this address is unfinished
            else:
                continue
            if amount:
                credited[asset.value] = amount
        return credited

    def _sweep(self, pubkey: str, asset: Asset, address: str) -> int | None:
        """Credit and record one sweep of ``address``: the amount (0 when empty), or
        None when an earlier sweep of it has not landed yet."""
        with self.sessions.begin() as db:
            account = user_account(pubkey, asset)
            self.book.open_account(db, account, asset)
            # One sweep of a wallet at a time: the account row is its lock.
            db.get(LedgerAccount, account, with_for_update=True)
            earlier = db.scalar(
                select(func.count()).where(
                    ChainOperation.source == address, ChainOperation.status == "pending"
                )
            )
            if earlier:
                return None
            amount = self.chain.balance(address)
            if amount <= 0:
                return 0
            n = db.scalar(select(func.count()).where(ChainOperation.source == address)) or 0
            op_id = f"deposit:{address}:{n + 1}"
            self.book.post(
                db,
                Transfer(
                    op_id,
                    onchain("treasury", asset),
                    account,
                    asset,
                    amount,
                    code="deposit",
                    memo=address,
                ),
            )
            treasury = self.chain.layout.account("treasury", asset)
            op = ChainOp("transfer", asset, amount, source=address, dest=treasury)
            self.outbox.record(db, op_id, op, signer=f"deposit:{pubkey}")
        return amount

    def withdraw(
        self, pubkey: str, request_id: str, asset: Asset, amount: int
    ) -> tuple[str, bool, OpStatus | None]:
        """Pay ``amount`` out to ``pubkey``'s own token account. ``request_id`` is
        the caller's: a retry is answered, not paid twice, whatever crashed when.
        Returns (transfer id, replayed, the chain operation's status)."""
        if not 1 <= len(request_id) <= 64:
            raise InvalidAmount("a withdrawal id is 1-64 characters", id=request_id)
        transfer_id = f"withdrawal:{pubkey}:{request_id}"
        debit = Transfer(
            transfer_id,
            user_account(pubkey, asset),
            onchain("treasury", asset),
            asset,
            amount,
            code="withdrawal",
        )
        with self.sessions.begin() as db:
            posted = self.book.post(db, debit)
            if not posted.replayed:
                mint = Pubkey.from_string(self.chain.layout.mint(asset))
                dest = str(spl.get_associated_token_address(Pubkey.from_string(pubkey), mint))
                source = self.chain.layout.account("treasury", asset)
                op = ChainOp("transfer", asset, amount, source=source, dest=dest, dest_owner=pubkey)
                refund = Transfer(
                    f"{transfer_id}:refund",
                    debit.credit,
                    debit.debit,
                    asset,
                    amount,
                    code="withdrawal-refund",
                    memo="the chain refused the payout",
                )
                self.outbox.record(db, transfer_id, op, undo=[refund])
        if posted.replayed:
            self.outbox.drain()  # a retry after a crash finishes what the first try left
        return transfer_id, posted.replayed, self.outbox.status(transfer_id)

    def balances(self, db: Session, pubkey: str) -> dict[str, tuple[int, int]]:
        """(balance, available) per asset; zero for accounts never opened."""
        out = {}
        for asset in ASSETS:
            try:
                a = self.book.account(db, user_account(pubkey, asset))
                out[asset.value] = (a.balance, a.available)
            except UnknownAccount:
                out[asset.value] = (0, 0)
        return out

    def grant(self, pubkey: str, asset: Asset, amount: int) -> None:
        """Development faucet: IO from the community allocation (book only: the
        tokens are already in the treasury); USDC minted on chain to the deposit
        address and swept like any deposit (USDC is not ours to cap)."""
        if asset is Asset.USDC:
            self.chain.mint_to(Asset.USDC, self.deposit_address(pubkey, asset), amount)
            self.sweep_deposits(pubkey)
            return
        with self.sessions.begin() as db:
            account = user_account(pubkey, asset)
            self.book.open_account(db, account, asset)
            self.book.post(
                db,
                Transfer(
                    f"grant:{secrets.token_hex(12)}",
                    genesis_account("community"),
                    account,
                    asset,
                    amount,
                    code="grant",
                ),
            )

    # -- fees, buy-back and burn -------------------------------------------------------

    def buyback_and_burn(self) -> list[tuple[str, int]]:
        """Burn IO fee revenue; spend USDC fee revenue on IO at the oracle price
        and burn that. Returns (what, IO units burned)."""
        burned: list[tuple[str, int]] = []
        treasury_io = self.chain.layout.account("treasury", Asset.IO)
        with self.sessions.begin() as db:
            io_fees = self.book.account(db, fees_account("IO")).available
            if io_fees > 0:
                tag = secrets.token_hex(12)
                self.book.post(
                    db,
                    Transfer(
                        f"burn:{tag}",
                        fees_account("IO"),
                        onchain("treasury", "IO"),
                        "IO",
                        io_fees,
                        code="burn",
                        memo="IO fee revenue",
                    ),
                )
                self._burn(db, f"burn:{tag}", treasury_io, io_fees)
                burned.append(("IO fees", io_fees))
        with self.sessions.begin() as db:
            usdc = self.book.account(db, fees_account("USDC")).available
            price = self.oracle.io_usd()
            io_units = usdc_to_io_units(usdc, price) if usdc else 0
            if io_units > 0:
                tag = secrets.token_hex(12)
                try:
                    self.book.post_batch(
                        db,
                        [
                            Transfer(
                                f"buyback-pay:{tag}",
                                fees_account("USDC"),
                                USDC_RESERVE,
                                "USDC",
                                usdc,
                                code="buyback",
                                memo=f"at {price} USD/IO",
                            ),
                            Transfer(
                                f"burn:{tag}",
                                BUYBACK_SELLER,
                                onchain("treasury", "IO"),
                                "IO",
                                io_units,
                                code="burn",
                                memo="bought with USDC fees",
                            ),
                        ],
                    )
                except InsufficientFunds:
                    log.warning("buy-back skipped: the reserve cannot sell %d units", io_units)
                    return burned
                self._burn(db, f"burn:{tag}", treasury_io, io_units)
                burned.append(("USDC fees", io_units))
        return burned

    def _burn(self, db: Session, op_id: str, account: str, units: int) -> None:
        self.outbox.record(db, op_id, ChainOp("burn", Asset.IO, units, source=account))

    # -- supply and audit --------------------------------------------------------------

    def supply(self, db: Session) -> dict[str, int]:
        """Max, minted (genesis + emitted), burned and circulating IO, in units."""

        def total(code: str) -> int:
            q = select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                LedgerTransfer.code == code, LedgerTransfer.asset == "IO"
            )
            return int(db.scalar(q) or 0)

        genesis, emitted, burned = total("genesis"), total("emission"), total("burn")
        return {
            "max": emission.MAX_SUPPLY_UNITS,
            "genesis": genesis,
            "emitted": emitted,
            "minted": genesis + emitted,
            "burned": burned,
            "circulating": genesis + emitted - burned,
        }

    def supply_view(self) -> SupplyView:
        """``supply`` as the API and the explorer show it: decimal IO, in a read of its own."""
        with self.sessions() as db:
            units = self.supply(db)
        return SupplyView(**{k: format_amount(v, "IO") for k, v in units.items()})

    def recent_audit(self, max_age_s: float) -> tuple[float, list[AuditCheck]]:
        """The newest audit if it is under ``max_age_s`` old, else a new one, with the
        time it was taken: what the public route serves, so that however many callers
        ask, the network audits itself at most once per ``max_age_s`` (callers that
        arrive during an audit wait for it and share it)."""
        with self._audit_lock:
            last = self._last_audit
            if last is None or self.clock() - last[0] >= max_age_s:
                last = self._last_audit = (self.clock(), self._audit())
            return last

    def audit(self) -> list[AuditCheck]:
        """Every check, in order; the first failure is the discrepancy to name.

        The hash chain is checked from this process's last verified checkpoint (the
        first audit walks it all): an audit costs the accounts' sums, the treasury's
        chain balances and the transfers since the last audit, not the whole history."""
        with self._audit_lock:
            checks = self._audit()
            self._last_audit = (self.clock(), checks)
            return checks

    def _audit(self) -> list[AuditCheck]:
        checks: list[AuditCheck] = []
        with self.sessions() as db:
            totals = self.book.totals(db)
            checks.append(
                AuditCheck(
                    "book balances",
                    balanced(totals.values()),
                    "; ".join(
                        f"{a}: debits {t[2]} credits {t[3]}" for a, t in sorted(totals.items())
                    ),
                )
            )
            since = self._verified
            problem, reached = self.book.verify_chain_from(db, since)
            self._verified = reached
            checks.append(
                AuditCheck(
                    "hash chain intact",
                    problem is None,
                    problem or _chain_checked(since, reached),
                )
            )
            layout = self.chain.layout
            # Operations the outbox has not finished are in the book and not yet on chain.
            flying = self.outbox.in_flight(db)
            ahead: dict[str, int] = {}
            minting = 0
            for op in flying:
                if op.source is not None:
                    ahead[op.source] = ahead.get(op.source, 0) - op.amount
                if op.dest is not None:
                    ahead[op.dest] = ahead.get(op.dest, 0) + op.amount
                if op.asset is Asset.IO:
                    minting += {"mint": op.amount, "burn": -op.amount}.get(op.kind, 0)
            note = f" (+ {len(flying)} operations in flight)" if flying else ""
            for asset in ASSETS:
                for role in TREASURY_ROLES:
                    address = layout.account(role, asset)
                    book_holds = -self.book.account(db, onchain(role, asset)).balance
                    chain_holds = self.chain.balance(address) + ahead.get(address, 0)
                    checks.append(
                        AuditCheck(
                            f"{role} {asset.value}: book = chain",
                            book_holds == chain_holds,
                            f"book {book_holds}, chain {chain_holds}{note}",
                        )
                    )
            failed = self.outbox.failed(db)
            checks.append(
                AuditCheck(
                    "no chain operation failed",
                    not failed,
                    "; ".join(f"{i}: {e}" for i, e in failed[:10]) or "ok",
                )
            )
            owed = int(db.scalar(select(func.coalesce(func.sum(RewardCredit.units), 0))) or 0)
            held = self.book.account(db, UNCLAIMED).balance
            checks.append(
                AuditCheck(
                    "unclaimed rewards = credits not yet claimed",
                    held == owed,
                    f"book {held}, owed {owed}",
                )
            )
            s = self.supply(db)
            on_chain = self.chain.supply(Asset.IO) + minting
            checks.append(
                AuditCheck(
                    "minted = circulating + burned",
                    s["minted"] == on_chain + s["burned"],
                    f"minted {s['minted']}, on chain {on_chain}, burned {s['burned']}{note}",
                )
            )
            checks.append(
                AuditCheck(
                    "minted ≤ cap",
                    s["minted"] <= s["max"],
                    f"{s['minted']} of {s['max']}",
                )
            )
        return checks


def _chain_checked(since: Checkpoint, reached: Checkpoint) -> str:
    if reached.seq == since.seq:
        return f"ok: {reached.seq} transfers, none new since the last check"
    before = f", 1..{since.seq} verified before" if since.seq else ""
    return f"ok: transfers {since.seq + 1}..{reached.seq} checked now{before}"
