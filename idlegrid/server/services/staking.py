"""Stakes and slashes: the rules of ``core/staking.py`` over the database, the
book and the chain.

Staked IO sits in the chain's stake account. In the book, each device has one
account ``stake:<device>:IO`` holding everything staked on it (owner and
co-stakers); the ``stakes`` row says whose it is. Staking moves the staker's
balance into it, and the tokens from the treasury to the stake account on
chain, in one step (book first, then chain, then commit; a chain failure rolls
the book back, as in ``services/ledger.py``).

A slash takes a share of every stake on the device (co-stakers share it) into
``slashed:<device>:IO`` for the appeal window; an accepted appeal puts it
back, otherwise it is burned on chain from the stake account.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.catalog import Catalog
from idlegrid.core import staking
from idlegrid.core.fees import format_amount
from idlegrid.core.ledger import Transfer
from idlegrid.core.staking import Cooldown, CoStake, Stake
from idlegrid.errors import (
    InvalidAmount,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    StakeBelowMinimum,
    UnknownDevice,
)
from idlegrid.ledger.chain import Asset, ChainOp, Role
from idlegrid.protocol import CoStakeView, SlashList, SlashView, StakeView
from idlegrid.server.db.models import Device, DeviceEvent, Slash, StakeRow
from idlegrid.server.idle import IdleMonitor
from idlegrid.server.services.ledger import LedgerService, onchain, user_account
from idlegrid.server.services.proofs import misconduct
from idlegrid.server.settings import ServerSettings

log = logging.getLogger("idlegrid.server.staking")

SLASH_REASONS = ("spoofing", "failed_proof", "idle_abuse", "hardware_swap")
OPEN_SLASHES = ("pending", "appealed")
SLASH_BPS = {"spoofing": 10_000, "failed_proof": 1_000, "idle_abuse": 2_500, "hardware_swap": 5_000}
"""How much of the stake each reason takes (basis points)."""


def io(units: int) -> str:
    return format_amount(units, "IO")


def stake_account(device_id: str) -> str:
    return f"stake:{device_id}:IO"


def slashed_account(device_id: str) -> str:
    return f"slashed:{device_id}:IO"


def to_core(row: StakeRow) -> Stake:
    return Stake(
        device_id=row.device_id,
        owner=row.owner,
        active=row.active,
        cooling=tuple(Cooldown(int(a), float(t)) for a, t in row.cooling),
        costakes=tuple(
            CoStake(str(s), int(a), int(b), None if e is None else float(e))
            for s, a, b, e in row.costakes
        ),
    )


def store(row: StakeRow, stake: Stake) -> None:
    row.active = stake.active
    row.cooling = [[c.amount, c.unlocks_at] for c in stake.cooling]
    row.costakes = [[c.staker, c.amount, c.share_bps, c.exit_requested_at] for c in stake.costakes]


class StakingService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        ledger: LedgerService,
        catalog: Catalog,
        settings: ServerSettings,
        clock: Callable[[], float],
        idle: IdleMonitor | None = None,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self.idle = idle

    # -- reads --------------------------------------------------------------------------

    def minimum(self, dev: Device) -> int:
        if dev.model is None:
            return 0
        return staking.minimum_stake(self.catalog.get(dev.model).multiplier, dev.processors)

    def view(self, device_id: str) -> StakeView:
        """What is staked on a device, as the API and the explorer show it."""
        now = self.clock()
        with self.sessions() as db:
            dev = db.get(Device, device_id)
            if dev is None:
                raise UnknownDevice(device_id=device_id)
            row = db.get(StakeRow, device_id)
            stake = to_core(row) if row is not None else Stake(device_id, dev.owner)
            minimum = self.minimum(dev)
            pending = db.scalar(
                select(func.coalesce(func.sum(Slash.units), 0)).where(
                    Slash.device_id == device_id, Slash.status.in_(OPEN_SLASHES)
                )
            )
        return StakeView(
            device_id=device_id,
            owner=stake.owner,
            minimum=io(minimum),
            effective=io(staking.effective_stake(stake, now)),
            active=io(stake.active),
            cooling=[(io(c.amount), c.unlocks_at) for c in stake.cooling],
            costakes=[
                CoStakeView(
                    staker=c.staker,
                    amount=io(c.amount),
                    share_bps=c.share_bps,
                    exit_requested_at=c.exit_requested_at,
                    counts=c.counts(now),
                )
                for c in stake.costakes
            ],
            costake_share_bps=row.costake_share_bps if row is not None else 0,
            slashed_pending=io(int(pending or 0)),
            meets_minimum=staking.meets_minimum(stake, minimum, now),
        )

    # -- the owner's stake ----------------------------------------------------------------

    def stake(self, signer: str, device_id: str, amount: int) -> None:
        """Refused when the owner's active stake would stay under the minimum:
        a stake that cannot nominate the device would only lock IO up."""
        with self.sessions.begin() as db:
            dev, row = self._load(db, device_id)
            self._owner(signer, row)
            stake = staking.add_stake(to_core(row), amount)
            minimum = self.minimum(dev)
            if stake.active < minimum:
                raise StakeBelowMinimum(
                    device_id=device_id,
                    minimum=format_amount(minimum, "IO"),
                    stake=format_amount(stake.active, "IO"),
                )
            store(row, stake)
            self._lock_in(db, signer, device_id, amount)

    def unstake(self, signer: str, device_id: str, amount: int) -> None:
        with self.sessions.begin() as db:
            dev, row = self._load(db, device_id)
            self._owner(signer, row)
            hired = dev.cluster_id is not None
            store(row, staking.unstake(to_core(row), amount, hired=hired, now=self.clock()))

    def withdraw(self, signer: str, device_id: str) -> int:
        """Pay out the signer's stake that has finished cooling down (owner or co-staker)."""
        now = self.clock()
        with self.sessions.begin() as db:
            _, row = self._load(db, device_id)
            stake = to_core(row)
            if signer == row.owner:
                stake, units = staking.withdraw_unlocked(stake, now)
            else:
                stake, units = staking.withdraw_costake(stake, signer, now)
            if units == 0:
                raise InvalidTransition("nothing has finished cooling down", device_id=device_id)
            store(row, stake)
            self._release(db, signer, device_id, units)
            return units

    def set_share(self, signer: str, device_id: str, share_bps: int) -> None:
        """The owner sets the share of rewards offered to new co-stakers."""
        if not 0 <= share_bps <= staking.BPS:
            raise InvalidAmount("share_bps is 0-10,000", share_bps=share_bps)
        with self.sessions.begin() as db:
            _, row = self._load(db, device_id)
            self._owner(signer, row)
            row.costake_share_bps = share_bps

    # -- co-stakes -----------------------------------------------------------------------

    def costake(self, signer: str, device_id: str, amount: int) -> None:
        with self.sessions.begin() as db:
            _, row = self._load(db, device_id)
            stake = staking.add_costake(
                to_core(row), signer, amount, row.costake_share_bps, self.clock()
            )
            store(row, stake)
            self._lock_in(db, signer, device_id, amount)

    def costake_exit(self, signer: str, device_id: str) -> None:
        with self.sessions.begin() as db:
            _, row = self._load(db, device_id)
            store(row, staking.request_costake_exit(to_core(row), signer, self.clock()))

    # -- slashing ------------------------------------------------------------------------

    def slash_misconduct(self) -> int:
        """Slash every recorded misconduct (spoofing, failing after verification, a
        hardware swap, idle-use abuse) not slashed yet; each event is slashed once."""
        with self.sessions() as db:
            done = select(Slash.source_event).where(Slash.source_event.is_not(None))
            events = list(
                db.execute(
                    select(DeviceEvent.id, DeviceEvent.device_id, DeviceEvent.detail).where(
                        DeviceEvent.kind == "misconduct", DeviceEvent.id.not_in(done)
                    )
                ).all()
            )
        for event_id, device_id, detail in events:
            self.slash(device_id, detail["reason"], detail["evidence"], source_event=event_id)
        return len(events)

    def slash(
        self, device_id: str, reason: str, evidence: str, source_event: int | None = None
    ) -> str:
        if reason not in SLASH_BPS:
            raise InvalidAmount("unknown slash reason", reason=reason, allowed=SLASH_REASONS)
        now = self.clock()
        with self.sessions.begin() as db:
            _, row = self._load(db, device_id)
            stake, shares = staking.slash(to_core(row), SLASH_BPS[reason])
            units = sum(u for _, u in shares)
            store(row, stake)
            slash_id = secrets.token_hex(16)
            if units:
                self.ledger.book.open_account(db, slashed_account(device_id), "IO")
                self.ledger.book.post(
                    db,
                    Transfer(
                        f"slash:{slash_id}",
                        stake_account(device_id),
                        slashed_account(device_id),
                        "IO",
                        units,
                        code="slash",
                        memo=reason,
                    ),
                )
            db.add(
                Slash(
                    id=slash_id,
                    device_id=device_id,
                    reason=reason,
                    evidence=evidence[:512],
                    source_event=source_event,
                    units=units,
                    shares=[list(s) for s in shares],
                    status="pending",
                    created_at=now,
                    appeal_until=now + self.settings.slash_appeal_s,
                )
            )
            log.warning("slashed %s: %d units for %s", device_id, units, reason)
            return slash_id

    def appeal(self, signer: str, slash_id: str, text: str) -> None:
        with self.sessions.begin() as db:
            s = self._slash(db, slash_id)
            row = db.get(StakeRow, s.device_id)
            if row is None or signer != row.owner:
                raise PermissionDenied("only the device's owner may appeal", slash_id=slash_id)
            if s.status != "pending" or self.clock() > s.appeal_until:
                raise InvalidTransition("the appeal window is closed", status=s.status)
            s.status = "appealed"
            s.appeal = text[:512]

    def decide(self, slash_id: str, accept: bool) -> None:
        """The network's ruling on an appeal: accepted gives the IO back, rejected burns it."""
        with self.sessions.begin() as db:
            s = self._slash(db, slash_id)
            if s.status not in ("pending", "appealed"):
                raise InvalidTransition("the slash is decided", status=s.status)
            if accept:
                row = db.get(StakeRow, s.device_id, with_for_update=True)
                assert row is not None
                shares = tuple((str(a), int(u)) for a, u in s.shares)
                restored, gone = staking.restore(to_core(row), shares)
                store(row, restored)
                if s.units:
                    self.ledger.book.post(
                        db,
                        Transfer(
                            f"unslash:{s.id}",
                            slashed_account(s.device_id),
                            stake_account(s.device_id),
                            "IO",
                            s.units,
                            code="slash",
                            memo="appeal accepted",
                        ),
                    )
                for staker, units in gone:  # co-stakers who left since: paid their part
                    self._release(db, staker, s.device_id, units)
                s.status = "accepted"
            else:
                self._burn(db, s)
                s.status = "burned"
            s.decided_at = self.clock()

    def tick(self) -> None:
        """The slashing loop: record idle-use abuse the heartbeats showed, slash new
        misconduct, burn what was not appealed."""
        self.record_idle_abuse()
        self.slash_misconduct()
        self.burn_expired()

    def record_idle_abuse(self) -> int:
        """Record each idle-use abuse the monitor found as misconduct (slashed once)."""
        if self.idle is None:
            return 0
        found = self.idle.drain()
        if not found:
            return 0
        try:
            with self.sessions.begin() as db:
                known = set(
                    db.scalars(select(Device.id).where(Device.id.in_({f.device_id for f in found})))
                )
                for f in found:
                    if f.device_id in known:
                        misconduct(db, f.device_id, f.at, "idle_abuse", f.evidence)
        except Exception:
            self.idle.requeue(found)
            raise
        for f in found:
            log.warning("idle-use abuse by %s: %s", f.device_id, f.evidence)
        return len(found)

    def burn_expired(self) -> int:
        """Burn every slash whose appeal window closed without an accepted appeal."""
        now = self.clock()
        with self.sessions() as db:
            due = list(
                db.scalars(
                    select(Slash.id).where(Slash.status == "pending", Slash.appeal_until < now)
                )
            )
        for slash_id in due:
            self.decide(slash_id, accept=False)
        return len(due)

    def slashes(self, device_id: str | None = None) -> SlashList:
        with self.sessions() as db:
            q = select(Slash).order_by(Slash.created_at.desc())
            if device_id:
                q = q.where(Slash.device_id == device_id)
            return SlashList(items=[slash_view(s) for s in db.scalars(q.limit(1000))])

    def get_slash(self, slash_id: str) -> SlashView:
        with self.sessions() as db:
            return slash_view(self._slash(db, slash_id, lock=False))

    # -- internals ------------------------------------------------------------------------

    def _load(self, db: Session, device_id: str, lock: bool = True) -> tuple[Device, StakeRow]:
        dev = db.get(Device, device_id)
        if dev is None:
            raise UnknownDevice(device_id=device_id)
        row = db.get(StakeRow, device_id, with_for_update=lock)
        if row is None:
            row = StakeRow(
                device_id=device_id,
                owner=dev.owner,
                active=0,
                cooling=[],
                costakes=[],
                costake_share_bps=0,
            )
            db.add(row)
            db.flush()
        return dev, row

    @staticmethod
    def _owner(signer: str, row: StakeRow) -> None:
        if signer != row.owner:
            raise PermissionDenied("only the device's owner stakes for it", owner=row.owner)

    def _slash(self, db: Session, slash_id: str, lock: bool = True) -> Slash:
        s = db.get(Slash, slash_id, with_for_update=lock)
        if s is None:
            raise NotFound("no such slash", slash_id=slash_id)
        return s

    def _move_on_chain(self, db: Session, tag: str, source: Role, dest: Role, units: int) -> None:
        """The book mirror of a chain transfer between two network accounts, and the
        transfer itself in the outbox (sent once this transaction commits)."""
        self.ledger.book.post(
            db, Transfer(f"chain:{tag}", onchain(dest, "IO"), onchain(source, "IO"), "IO", units)
        )
        layout = self.ledger.chain.layout
        move = ChainOp(
            "transfer",
            Asset.IO,
            units,
            source=layout.account(source, Asset.IO),
            dest=layout.account(dest, Asset.IO),
        )
        self.ledger.outbox.record(db, f"chain:{tag}", move)

    def _lock_in(self, db: Session, staker: str, device_id: str, units: int) -> None:
        tag = secrets.token_hex(12)
        self.ledger.book.open_account(db, stake_account(device_id), "IO")
        self.ledger.book.post(
            db,
            Transfer(
                f"stake:{tag}",
                user_account(staker, "IO"),
                stake_account(device_id),
                "IO",
                units,
                code="stake",
            ),
        )
        self._move_on_chain(db, tag, "treasury", "stake", units)

    def _release(self, db: Session, staker: str, device_id: str, units: int) -> None:
        tag = secrets.token_hex(12)
        self.ledger.book.open_account(db, user_account(staker, "IO"), "IO")
        self.ledger.book.post(
            db,
            Transfer(
                f"unstake:{tag}",
                stake_account(device_id),
                user_account(staker, "IO"),
                "IO",
                units,
                code="unstake",
            ),
        )
        self._move_on_chain(db, tag, "stake", "treasury", units)

    def _burn(self, db: Session, s: Slash) -> None:
        if not s.units:
            return
        self.ledger.book.post(
            db,
            Transfer(
                f"burn:slash:{s.id}",
                slashed_account(s.device_id),
                onchain("stake", "IO"),
                "IO",
                s.units,
                code="burn",
                memo=f"slash {s.reason}",
            ),
        )
        stake = self.ledger.chain.layout.account("stake", Asset.IO)
        self.ledger.outbox.record(
            db, f"burn:slash:{s.id}", ChainOp("burn", Asset.IO, s.units, source=stake)
        )


def slash_view(s: Slash) -> SlashView:
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
