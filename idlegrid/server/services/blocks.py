"""Hourly reward blocks: gather the published inputs, compute, pay, publish.

Block ``n`` is the network's ``n``-th hour of emission; it covers the window
``[starts_at, starts_at + length_s)``. ``length_s`` is an hour, or less with
fast blocks (``IDLEGRID_BLOCK_INTERVAL_S``, for demos and tests): uptime is
then accounted per block-length bucket and scaled to an hour, so the rules
(5 h of uptime, the score) read the same in block-hours.

Statuses: ``in_progress`` while the window is open; ``processing`` while its
inputs are gathered and it is computed and paid (one transaction);
``completed``; ``failed`` (the error is kept, and the next pass retries).

Paying: the hour's emission is minted into the reward account
(``LedgerService.emit``), then each recipient (owner or co-staker) is paid from
``rewards:pool:IO`` with the transfer id ``reward:<n>:<recipient>``, and the
tokens move from the chain's reward account to the treasury. Transfer ids are
fixed per block and recipient, so a block can never be paid twice, even if a
pass is retried after a crash.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.catalog import Catalog
from idlegrid.core import emission, rewards, staking
from idlegrid.core.fees import format_amount
from idlegrid.core.ledger import Transfer
from idlegrid.errors import NotFound
from idlegrid.ledger.chain import Asset
from idlegrid.protocol import (
    BlockList,
    BlockSummary,
    BlockView,
    DeviceStatus,
    Readiness,
    RewardEntry,
    RewardList,
)
from idlegrid.server.db.models import Block, BlockReward, Device, DeviceUptime, StakeRow
from idlegrid.server.services.ledger import REWARDS, LedgerService, onchain, user_account
from idlegrid.server.services.seasons import SeasonService
from idlegrid.server.services.staking import to_core
from idlegrid.server.settings import ServerSettings

log = logging.getLogger("idlegrid.server.blocks")


@contextlib.contextmanager
def _frozen_gc() -> Iterator[None]:
    """Whatever ``gc.freeze()`` parks inside goes back to the collector at the end."""
    try:
        yield
    finally:
        gc.unfreeze()


HOUR_S = 3600
_REWARDS_TABLE = cast(Table, BlockReward.__table__)


class BlockService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        ledger: LedgerService,
        catalog: Catalog,
        settings: ServerSettings,
        clock: Callable[[], float],
        seasons: SeasonService | None = None,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.seasons = seasons
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self.length_s = settings.block_interval_s
        # Closing waits for the liveness flusher to write the window's last uptime.
        self.grace_s = 2 * settings.flush_interval_s + settings.reaper_interval_s

    # -- the loop ------------------------------------------------------------------------

    def tick(self) -> list[int]:
        """Open the current block, close every block whose window has passed."""
        now = self.clock()
        closed = []
        with self.sessions.begin() as db:
            self._open_current(db, now)
        with self.sessions() as db:
            due = list(
                db.scalars(
                    select(Block.number)
                    .where(
                        Block.status.in_(["in_progress", "failed"]),
                        Block.starts_at + Block.length_s + self.grace_s <= now,
                    )
                    .order_by(Block.number)
                )
            )
        for number in due:
            if self.close(number):
                closed.append(number)
        if closed and self.seasons is not None:
            self.seasons.finish_due()
        return closed

    def _open_current(self, db: Session, now: float) -> None:
        start = float(int(now // self.length_s) * self.length_s)
        last = db.scalar(select(Block).order_by(Block.number.desc()).limit(1))
        if last is not None and last.starts_at >= start:
            return
        number = 0 if last is None else last.number + 1
        begin = start if last is None else last.starts_at + last.length_s
        # Windows missed while the server was down still get their blocks.
        while begin <= start and number < emission.EPOCHS:
            db.add(
                Block(
                    number=number,
                    starts_at=begin,
                    length_s=self.length_s,
                    status="in_progress",
                    emission=emission.hour_amount(number),
                    created_at=now,
                )
            )
            number += 1
            begin += self.length_s

    def close(self, number: int) -> bool:
        """Gather, compute, pay and publish block ``number``; False if it failed."""
        with self.sessions.begin() as db:
            block = db.get(Block, number, with_for_update=True)
            if block is None or block.status == "completed":
                return False
            block.status = "processing"
        try:
            self.ledger.emit(number)  # once per block: the transfer id is the block's
            with self.sessions.begin() as db, _frozen_gc():
                block = db.get(Block, number, with_for_update=True)
                assert block is not None
                inputs = self.gather(db, block)
                gc.freeze()  # a million inputs: keep full collections from walking them
                published = rewards.inputs_to_dict(inputs)  # built once: hashed and stored
                digest = hashlib.sha256(rewards.canonical_json(published)).hexdigest()
                result = rewards.compute_block(inputs, digest)
                self._pay(db, block, result)
                self._publish(db, block, published, result)
                if self.seasons is not None:
                    self.seasons.add_block(db, number, inputs)
            return True
        except Exception as exc:
            log.exception("block %d failed", number)
            with self.sessions.begin() as db:
                block = db.get(Block, number)
                assert block is not None
                block.status = "failed"
                block.error = "".join(traceback.format_exception_only(exc)).strip()[:512]
            return False

    # -- inputs --------------------------------------------------------------------------

    def gather(self, db: Session, block: Block) -> rewards.BlockInputs:
        """Every device registered by the window's end, with its facts for the window."""
        start, end = block.starts_at, block.starts_at + block.length_s
        length = block.length_s
        in_window = dict(
            db.execute(
                select(DeviceUptime.device_id, DeviceUptime.seconds).where(
                    DeviceUptime.hour == start
                )
            ).all()
        )
        cumulative = dict(
            db.execute(
                select(DeviceUptime.device_id, func.sum(DeviceUptime.seconds))
                .where(DeviceUptime.hour <= start)
                .group_by(DeviceUptime.device_id)
            ).all()
        )
        stakes = {row.device_id: to_core(row) for row in db.scalars(select(StakeRow))}
        devices = []
        for d in db.scalars(select(Device).where(Device.registered_at < end)):
            hw = self.catalog.get(d.model) if d.model else None
            stake = stakes.get(d.id)
            up = min(HOUR_S, rewards.block_hour_seconds(in_window.get(d.id, 0.0), length))
            devices.append(
                rewards.DeviceInput(
                    device_id=d.id,
                    owner=d.owner,
                    kind=rewards.DeviceKind.CPU if d.kind == "cpu" else rewards.DeviceKind.GPU,
                    multiplier=Fraction(str(hw.multiplier)) if hw else Fraction(0),
                    processors=max(1, d.processors),
                    uptime_s=up,
                    cumulative_uptime_s=max(
                        up, rewards.block_hour_seconds(cumulative.get(d.id, 0.0), length)
                    ),
                    proof_passed=d.proof_passed_at is not None
                    and d.proof_passed_at < end
                    and d.readiness != Readiness.NOT_REWARD_READY.value,
                    stake_units=staking.effective_stake(stake, end) if stake else 0,
                    minimum_stake_units=(
                        staking.minimum_stake(hw.multiplier, max(1, d.processors)) if hw else 0
                    ),
                    has_wallet=True,  # the owner's key is a Solana wallet
                    tier=d.tier or 0,
                    status=DeviceStatus(d.status),
                    costakers=staking.reward_shares(stake, end) if stake else (),
                )
            )
        return rewards.BlockInputs(
            hour=block.number,
            emission_units=block.emission,
            devices=tuple(devices),
            gpu_pool_bps=self.settings.gpu_pool_bps,
        )

    # -- paying and publishing ------------------------------------------------------------

    def _pay(self, db: Session, block: Block, result: rewards.Block) -> None:
        owed: dict[str, int] = defaultdict(int)
        for r in result.rewards:
            if r.owner_units:
                owed[r.owner] += r.owner_units
            for staker, units in r.costakers:
                owed[staker] += units
        total = sum(owed.values())
        if not total:
            block.paid = 0
            return
        self.ledger.book.open_accounts(db, (user_account(r, "IO") for r in owed), "IO")
        transfers = [
            Transfer(
                f"reward:{block.number}:{recipient}",
                REWARDS,
                user_account(recipient, "IO"),
                "IO",
                units,
                code="reward",
            )
            for recipient, units in sorted(owed.items())
            if units
        ]
        transfers.append(
            Transfer(
                f"reward:{block.number}:chain",
                onchain("treasury", "IO"),
                onchain("reward", "IO"),
                "IO",
                total,
                code="reward-move",
            )
        )
        posted = self.ledger.book.post_batch(db, transfers)
        block.paid = total
        if posted[-1].replayed:
            return  # paid before (a retried pass): the tokens have moved already
        layout = self.ledger.chain.layout
        self.ledger.chain.transfer(
            Asset.IO,
            layout.account("reward", Asset.IO),
            layout.account("treasury", Asset.IO),
            total,
            self.ledger.authority,
        )

    def _publish(
        self, db: Session, block: Block, published: dict[str, Any], result: rewards.Block
    ) -> None:
        """Store the inputs document (as hashed) and the outputs, and a row per device."""
        block.inputs = published
        block.inputs_hash = result.inputs_hash
        block.outputs = outputs = rewards.block_to_dict(result)  # built once, hashed as is
        block.outputs_hash = hashlib.sha256(rewards.canonical_json(outputs)).hexdigest()
        block.nominated = len(result.rewards)
        block.excluded = len(result.excluded)
        block.status = "completed"
        block.closed_at = self.clock()
        block.error = None
        rows: list[dict[str, Any]] = [
            {"number": block.number, "device_id": r.device_id, "units": r.units,
             "score": f"{r.score.numerator}/{r.score.denominator}", "reasons": None}
            for r in result.rewards
        ]  # fmt: skip
        rows += [
            {"number": block.number, "device_id": x.device_id, "units": 0, "score": "0",
             "reasons": ",".join(r.value for r in x.reasons)}
            for x in result.excluded
        ]  # fmt: skip
        db.query(BlockReward).filter(BlockReward.number == block.number).delete()
        if rows:
            db.execute(insert(_REWARDS_TABLE), rows)  # Core: no ORM bookkeeping

    # -- reads ----------------------------------------------------------------------------

    def get(self, db: Session, number: int) -> Block:
        block = db.get(Block, number)
        if block is None:
            raise NotFound("no such block", number=number)
        return block

    def summaries(self, limit: int) -> BlockList:
        """The newest blocks first."""
        with self.sessions() as db:
            rows = db.scalars(select(Block).order_by(Block.number.desc()).limit(limit))
            return BlockList(items=[BlockSummary(**_summary(b)) for b in rows])

    def view(self, number: int) -> BlockView:
        """A block with its published inputs and outputs: enough to recompute it."""
        with self.sessions() as db:
            b = self.get(db, number)
            return BlockView(**_summary(b), inputs=b.inputs, outputs=b.outputs)

    def rewards_of(self, device_id: str, limit: int) -> RewardList:
        """What a device earned per block, newest first, and why it was left out."""
        with self.sessions() as db:
            rows = list(
                db.scalars(
                    select(BlockReward)
                    .where(BlockReward.device_id == device_id)
                    .order_by(BlockReward.number.desc())
                    .limit(limit)
                )
            )
        return RewardList(
            device_id=device_id,
            total=format_amount(sum(r.units for r in rows), "IO"),
            items=[
                RewardEntry(
                    block=r.number,
                    units=format_amount(r.units, "IO"),
                    score=r.score,
                    excluded_because=r.reasons.split(",") if r.reasons else [],
                )
                for r in rows
            ],
        )


def _summary(b: Block) -> dict[str, Any]:
    return {
        "number": b.number,
        "starts_at": b.starts_at,
        "length_s": b.length_s,
        "status": b.status,
        "emission": format_amount(b.emission, "IO"),
        "paid": format_amount(b.paid, "IO"),
        "nominated": b.nominated,
        "excluded": b.excluded,
        "inputs_hash": b.inputs_hash,
        "outputs_hash": b.outputs_hash,
        "error": b.error,
    }
