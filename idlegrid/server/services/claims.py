"""Claiming block rewards: a wallet takes every credit since its last claim at once.

Blocks credit what each wallet (a device's owner or a co-staker) earned in
``reward_credits`` and move the tokens to ``rewards:unclaimed:IO`` (one
transfer per block). A claim moves the wallet's credits of blocks after its
last claim, through the newest credited block, to ``user:<wallet>:IO`` with
the transfer id ``claim:<wallet>:<through>``, and the tokens from the chain's
reward account to the treasury (which backs every book balance). The id is
fixed by the wallet and the last block claimed, so a claim is recorded once:
a second claim with nothing new is refused (``NothingToClaim``), also when two
race. A claim deletes the credits it took (its ``reward_claims`` row keeps their
sum; the blocks' published outputs keep the detail), so ``reward_credits``
holds only what is still owed, and the audit checks that the unclaimed account
holds exactly that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core.fees import format_amount
from idlegrid.core.ledger import Transfer
from idlegrid.errors import NothingToClaim
from idlegrid.ledger.chain import Asset, ChainOp
from idlegrid.ledger.tables import LedgerAccount
from idlegrid.protocol import RewardBalance, RewardClaimView
from idlegrid.server.db.models import RewardClaim, RewardCredit
from idlegrid.server.services.ledger import UNCLAIMED, LedgerService, onchain, user_account

log = logging.getLogger("idlegrid.server.claims")


class ClaimService:
    def __init__(
        self, sessions: sessionmaker[Session], ledger: LedgerService, clock: Callable[[], float]
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.clock = clock

    def balance(self, wallet: str, claims_shown: int = 20) -> RewardBalance:
        """What the wallet has earned, claimed and may claim now, and its last claims."""
        with self.sessions() as db:
            recent = list(
                db.scalars(
                    select(RewardClaim)
                    .where(RewardClaim.recipient == wallet)
                    .order_by(RewardClaim.through.desc())
                    .limit(claims_shown)
                )
            )
            after = _claimed_through(db, wallet)
            through, unclaimed = _unclaimed(db, wallet, after)
            earned = unclaimed + int(
                db.scalar(
                    select(func.coalesce(func.sum(RewardClaim.units), 0)).where(
                        RewardClaim.recipient == wallet
                    )
                )
                or 0
            )
        return RewardBalance(
            wallet=wallet,
            earned=format_amount(earned, "IO"),
            unclaimed=format_amount(unclaimed, "IO"),
            claimed_through=after,
            credited_through=through if through is not None else after,
            claims=[_claim_view(c) for c in recent],
        )

    def claim(self, wallet: str) -> RewardClaimView:
        """Move every credit since the wallet's last claim to its book account."""
        account = user_account(wallet, "IO")
        with self.sessions.begin() as db:
            self.ledger.book.open_account(db, account, "IO")
            # One claim per wallet at a time (PostgreSQL: the row lock; SQLite takes
            # the write lock when the transaction begins): a second claim reads the
            # credits only after the first has deleted the ones it took.
            db.get(LedgerAccount, account, with_for_update=True, populate_existing=True)
            after = _claimed_through(db, wallet)
            through, units = _unclaimed(db, wallet, after)
            if through is None:
                raise NothingToClaim(wallet=wallet, claimed_through=after)
            transfer_id = f"claim:{wallet}:{through}"
            posted = self.ledger.book.post_batch(
                db,
                [
                    Transfer(transfer_id, UNCLAIMED, account, "IO", units, code="claim"),
                    Transfer(
                        f"{transfer_id}:chain",
                        onchain("treasury", "IO"),
                        onchain("reward", "IO"),
                        "IO",
                        units,
                        code="claim-move",
                    ),
                ],
            )
            if posted[0].replayed:  # a racing claim recorded it first
                raise NothingToClaim(wallet=wallet, claimed_through=through)
            db.execute(
                delete(RewardCredit).where(
                    RewardCredit.recipient == wallet, RewardCredit.number <= through
                )
            )
            row = RewardClaim(
                recipient=wallet,
                through=through,
                units=units,
                transfer_id=transfer_id,
                at=self.clock(),
            )
            db.add(row)
            layout = self.ledger.chain.layout
            move = ChainOp(
                "transfer",
                Asset.IO,
                units,
                source=layout.account("reward", Asset.IO),
                dest=layout.account("treasury", Asset.IO),
            )
            self.ledger.outbox.record(db, f"{transfer_id}:chain", move)
            view = _claim_view(row)
        log.info("%s claimed %s IO through block %d", wallet, view.amount, through)
        return view


def _claim_view(c: RewardClaim) -> RewardClaimView:
    return RewardClaimView(
        wallet=c.recipient,
        amount=format_amount(c.units, "IO"),
        through=c.through,
        transfer_id=c.transfer_id,
        at=c.at,
    )


def _claimed_through(db: Session, wallet: str) -> int:
    """The last block the wallet claimed through; -1 before its first claim."""
    last = db.scalar(select(func.max(RewardClaim.through)).where(RewardClaim.recipient == wallet))
    return -1 if last is None else int(last)


def _unclaimed(db: Session, wallet: str, after: int) -> tuple[int | None, int]:
    """(newest credited block, units) of the wallet's credits after block ``after``."""
    through, units = db.execute(
        select(func.max(RewardCredit.number), func.coalesce(func.sum(RewardCredit.units), 0)).where(
            RewardCredit.recipient == wallet, RewardCredit.number > after
        )
    ).one()
    return (None if through is None else int(through)), int(units or 0)
