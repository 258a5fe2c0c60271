"""Hourly reward blocks: gather the published inputs, compute, pay, publish.

Block ``n`` is the network's ``n``-th hour of emission; it covers the window
``[starts_at, starts_at + length_s)``. ``length_s`` is an hour, or less with
fast blocks (``IDLEGRID_BLOCK_INTERVAL_S``, for demos and tests): uptime is
then accounted per block-length bucket and scaled to an hour, so the rules
(5 h of uptime, the score) read the same in block-hours.

Statuses: ``protocol.BlockStatus``, drawn there.

Paying: the hour's emission is minted into the reward account
(``LedgerService.emit``); the block then moves what it pays from
``rewards:pool:IO`` to ``rewards:unclaimed:IO`` in one transfer (id
``reward:<n>``) and credits each recipient (owner or co-staker) its units in
``reward_credits``, in the same transaction as the published documents.
Wallets claim their credits when they like (``ClaimService``): a block of a
million devices writes one transfer, not one per wallet. A block whose outputs
were recorded is never computed or credited again.

Storing: the published documents go to the document store (``docstore``,
compressed, named by their hash) before the transaction that publishes the
block commits, so a published block always has its documents (a crash in
between leaves an unused file, nothing worse); the block's ``inputs_json`` and
``outputs_json`` columns stay empty. Blocks stored before kept them in those
columns, and are served from there. Seasons read a block's inputs through
``inputs_of`` (column or store), so a season announced after its blocks were
published finishes as any other.

Retention: the per-device rows (``block_rewards``, what ``rewards_of`` lists)
of blocks older than the newest ``block_rewards_keep_blocks`` published ones
are deleted by the loop, a few thousand devices a statement
(``prune_rewards``): the blocks' documents hold the same facts. Wallet credits
and claims are never deleted here.

Listing: a block publishes the devices that could take part, those with a
passed proof or a stake (either costs its owner something), and only counts
the rest (``unlisted``): registration is free, so a flood of devices that
never prove themselves and stake nothing must not grow every block's
documents for ever. Leaving them out changes no reward: each would be
excluded for its missing proof and stake.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import orjson
from sqlalchemy import String, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.catalog import Catalog
from idlegrid.core import block_publication, emission, rewards, staking
from idlegrid.core.block_columns import BlockInputs, BlockResult, Devices, multiplier_text
from idlegrid.core.fees import format_amount
from idlegrid.core.ledger import Transfer
from idlegrid.errors import InternalError, NotFound
from idlegrid.protocol import (
    BlockList,
    BlockStatus,
    BlockSummary,
    Readiness,
    RewardEntry,
    RewardList,
)
from idlegrid.server.db.bulk import fetch_rows, insert_rows
from idlegrid.server.db.models import (
    Block,
    BlockReward,
    Device,
    DeviceUptime,
    StakeRow,
)
from idlegrid.server.docstore import DocumentStore, DocumentStoreError
from idlegrid.server.services.ledger import REWARDS, UNCLAIMED, LedgerService
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
PAGE_ROWS = 200  # per table on a block's explorer page; the published JSON has every device
VERIFY_PER_TICK = 2  # blocks published before, checked per pass of the loop
PRUNE_DEVICES_PER_STATEMENT = 2_000  # devices whose old reward rows one DELETE takes
PRUNE_DEVICES_PER_TICK = 50_000  # a million devices are swept in 20 passes of the loop
_EMPTY = ("[]", "[ ]")  # an empty JSON list as SQLite and PostgreSQL give it back as text


class BlockService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        ledger: LedgerService,
        catalog: Catalog,
        settings: ServerSettings,
        clock: Callable[[], float],
        seasons: SeasonService | None = None,
        documents: DocumentStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.seasons = seasons
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self.length_s = settings.block_interval_s
        # Closing waits a little for late heartbeats of the window, then flushes what
        # the liveness table holds (``flush_liveness``, set by the app) and gathers.
        self.grace_s = 2 * settings.flush_interval_s + settings.reaper_interval_s
        self.flush_liveness: Callable[[], None] | None = None
        if documents is None:
            assert settings.block_documents_dir is not None  # filled in by the settings
            documents = DocumentStore(settings.block_documents_dir)
        self.documents = documents
        # Retention's sweep over the devices: where it stopped, the cut-off it began
        # with, and the cut-off of the last whole sweep (nothing to do until it moves).
        self._prune_after = ""
        self._sweep_below = 0
        self._pruned_below = 0

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
                        Block.status.in_([BlockStatus.IN_PROGRESS, BlockStatus.FAILED]),
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
        self.check_published(VERIFY_PER_TICK + len(closed))
        self.prune_rewards(PRUNE_DEVICES_PER_TICK)
        return closed

    def check_published(self, limit: int) -> list[int]:
        """Check up to ``limit`` published blocks not checked yet, newest first, as anyone
        can from the bytes served (``rewards.verify_published``: the outputs name the
        inputs' hash, and the inputs recompute to the outputs), and record whether each
        did (what the explorer's badge shows). Here, in the loop, so that no page view
        ever recomputes a block; older blocks are taken a few per pass."""
        with self.sessions() as db:
            todo = list(
                db.scalars(
                    select(Block.number)
                    .where(Block.status == BlockStatus.COMPLETED, Block.verified.is_(None))
                    .order_by(Block.number.desc())
                    .limit(limit)
                )
            )
        for number in todo:
            try:
                with self.sessions() as db:
                    stored = self._stored(db, number)
                inputs, outputs = self._documents(stored)
                outputs_hash = stored[3]
                ok = (
                    inputs is not None
                    and outputs is not None
                    and block_publication.document_hash(outputs) == outputs_hash
                    and rewards.verify_published(inputs, outputs)
                )
            except InternalError:  # its documents are missing or damaged on disk (logged)
                ok = False
            except (ValueError, TypeError, AttributeError, KeyError):  # not even a block's JSON
                ok = False
            if not ok:
                log.error("block %d does not recompute from its published documents", number)
            with self.sessions.begin() as db:
                db.execute(update(Block).where(Block.number == number).values(verified=ok))
        return todo

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
                    status=BlockStatus.IN_PROGRESS.value,
                    emission=emission.hour_amount(number),
                    created_at=now,
                )
            )
            number += 1
            begin += self.length_s

    def close(self, number: int) -> bool:
        """Gather, compute, credit and publish block ``number``; False if it failed."""
        with self.sessions.begin() as db:
            block = db.get(Block, number, with_for_update=True)
            if block is None or block.status == BlockStatus.COMPLETED:
                return False
            if block.outputs_hash is not None:
                # Computed and credited before (only its status was lost): never again.
                block.status, block.error = BlockStatus.COMPLETED.value, None
                return True
            block.status = BlockStatus.PROCESSING.value
        try:
            self.ledger.emit(number)  # once per block: the transfer id is the block's
            if self.flush_liveness is not None:
                # Every uptime second accounted before now (past the window's end) is
                # committed before the gather reads it: none of the window is missed.
                self.flush_liveness()
            with self.sessions.begin() as db, _frozen_gc():
                block = db.get(Block, number, with_for_update=True)
                assert block is not None
                inputs = self.gather(db, block)
                gc.freeze()  # a million inputs: keep full collections from walking them
                published = block_publication.inputs_to_dict(inputs)
                document = block_publication.canonical_json(published)
                result = rewards.compute_block(inputs, block_publication.document_hash(document))
                self._credit(db, block, result)
                self._publish(db, block, published, document, result)
                if self.seasons is not None:
                    self.seasons.add_block(db, number, inputs)
            return True
        except Exception as exc:
            log.exception("block %d failed", number)
            with self.sessions.begin() as db:
                block = db.get(Block, number)
                assert block is not None
                block.status = BlockStatus.FAILED.value
                block.error = "".join(traceback.format_exception_only(exc)).strip()[:512]
            return False

    # -- inputs --------------------------------------------------------------------------

    def gather(self, db: Session, block: Block) -> BlockInputs:
        """Every device registered by the window's end that has a passed proof or a
        stake, with its facts for the window, as columns (one pass over plain rows: no
        ORM objects for a million devices); the others are counted in ``block.unlisted``."""
        start, end = block.starts_at, block.starts_at + block.length_s
        length = block.length_s
        in_window = dict(
            fetch_rows(
                db,
                select(DeviceUptime.device_id, DeviceUptime.seconds).where(
                    DeviceUptime.hour == start
                ),
            )
        )
        # Uptime through the window = each device's running total less what was
        # accounted for later windows: reads the newest buckets only, not all history.
        later = dict(
            fetch_rows(
                db,
                select(DeviceUptime.device_id, func.sum(DeviceUptime.seconds))
                .where(DeviceUptime.hour > start)
                .group_by(DeviceUptime.device_id),
            )
        )
        stakes = self._stakes(db, end)
        listed = or_(Device.proof_passed_at.is_not(None), Device.id.in_(select(StakeRow.device_id)))
        registered = select(func.count()).select_from(Device).where(Device.registered_at < end)
        block.unlisted = int(db.scalar(registered) or 0) - int(
            db.scalar(registered.where(listed)) or 0
        )
        query = (
            select(
                Device.id, Device.owner, Device.kind, Device.model, Device.processors,
                Device.proof_passed_at, Device.readiness, Device.tier, Device.status,
                Device.uptime_s,
            ).where(Device.registered_at < end, listed)
        )  # fmt: skip
        # By code point, whatever the database's collation (Python's sort is linear on
        # rows that arrive in order).
        rows = sorted(fetch_rows(db, query), key=lambda r: str(r[0]))
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 10
        (ids, owners, kinds, models, processors, passed_at, readiness, tiers, statuses,
         totals) = columns  # fmt: skip
        # Column by column (a million devices: no per-device dictionaries of columns).
        processors = [max(1, p) for p in processors]
        known = {pair: self._hardware(*pair) for pair in set(zip(models, processors, strict=True))}
        hardware = [known[pair] for pair in zip(models, processors, strict=True)]
        hour_s = rewards.block_hour_seconds
        up = [min(HOUR_S, hour_s(in_window.get(d, 0.0), length)) for d in ids]
        cumulative = [
            max(u, hour_s(max(0.0, total - later.get(d, 0.0)), length))
            for d, total, u in zip(ids, totals, up, strict=True)
        ]
        unrewarded = Readiness.NOT_REWARD_READY.value
        staked = [stakes.get(d, (0, ())) for d in ids]
        devices = Devices(
            device_id=ids,
            owner=owners,
            kind=["cpu" if k == "cpu" else "gpu" for k in kinds],  # RewardPool: Apple is a GPU
            multiplier=[h[0] for h in hardware],
            processors=processors,
            uptime_s=up,
            cumulative_uptime_s=cumulative,
            proof_passed=[
                t is not None and t < end and r != unrewarded
                for t, r in zip(passed_at, readiness, strict=True)
            ],
            stake_units=[units for units, _ in staked],
            minimum_stake_units=[h[1] for h in hardware],
            has_wallet=[True] * len(ids),  # the owner's key is a Solana wallet
            tier=[t or 0 for t in tiers],
            status=statuses,
            costakers=[(i, s, b) for i, (_, shares) in enumerate(staked) for s, b in shares],
        )
        return BlockInputs(
            hour=block.number,
            emission_units=block.emission,
            devices=devices,
            gpu_pool_bps=self.settings.gpu_pool_bps,
        )

    @staticmethod
    def _stakes(db: Session, at: float) -> dict[str, tuple[int, tuple[tuple[str, int], ...]]]:
        """Device → (effective stake, earning co-stakers) at ``at``. Plain rows: a stake
        with nothing cooling and no co-stakes (most of them) is just its active amount."""
        rows = fetch_rows(
            db,
            select(
                StakeRow.device_id,
                StakeRow.owner,
                StakeRow.active,
                cast(StakeRow.cooling, String),  # text: most are "[]", decoded only if not
                cast(StakeRow.costakes, String),
            ),
        )
        out: dict[str, tuple[int, tuple[tuple[str, int], ...]]] = {}
        for device_id, owner, active, cooling, costakes in rows:
            if cooling in _EMPTY and costakes in _EMPTY:
                out[device_id] = (active, ())
                continue
            stake = to_core(
                StakeRow(
                    device_id=device_id,
                    owner=owner,
                    active=active,
                    cooling=json.loads(cooling),
                    costakes=json.loads(costakes),
                )
            )
            out[device_id] = (
                staking.effective_stake(stake, at),
                staking.reward_shares(stake, at),
            )
        return out

    def _hardware(self, model: str | None, processors: int) -> tuple[str, int]:
        """(multiplier as published, minimum stake) of a model; 0 for unknown models."""
        hw = self.catalog.get(model) if model else None
        if hw is None:
            return multiplier_text(Fraction(0)), 0
        multiplier = staking.parse_multiplier(hw.multiplier)
        return multiplier_text(multiplier), staking.minimum_stake(multiplier, processors)

    # -- crediting and publishing ---------------------------------------------------------

    def _credit(self, db: Session, block: Block, result: BlockResult) -> None:
        """Move the block's rewards to the unclaimed account and credit each wallet its
        share (claimed later, ``ClaimService``). One transfer per block, whatever its size."""
        owed = result.credits()
        total = sum(owed.values())
        block.paid = total
        if not total:
            return
        posted = self.ledger.book.post(
            db, Transfer(f"reward:{block.number}", REWARDS, UNCLAIMED, "IO", total, code="reward")
        )
        if posted.replayed:
            return  # credited before, with its credits (a block is never paid twice)
        number = block.number
        insert_rows(
            db,
            "reward_credits",
            ("recipient", "number", "units"),
            [(recipient, number, owed[recipient]) for recipient in sorted(owed)],
        )

    def _publish(
        self,
        db: Session,
        block: Block,
        inputs: dict[str, Any],
        inputs_document: bytes,
        result: BlockResult,
    ) -> None:
        """Store both documents as hashed (in the document store, before the caller's
        transaction commits), what the block's page shows, and a row per device for
        per-device reads."""
        published = block_publication.block_to_dict(result)
        outputs = block_publication.canonical_json(published)
        with ThreadPoolExecutor(1, thread_name_prefix="block-documents") as pool:
            # Compressing 200 MB takes seconds, and zlib and hashlib let go of the GIL:
            # the rows are inserted meanwhile. Joined below, so before the commit.
            stored = pool.submit(self._store_documents, inputs_document, outputs)
            self._publish_rows(db, block, inputs, published, result)
            block.inputs_hash, block.outputs_hash = stored.result()
        if block.inputs_hash != result.inputs_hash:  # pragma: no cover - one hash function
            raise RuntimeError(f"block {block.number}: inputs stored as {block.inputs_hash}")

    def _store_documents(self, inputs: bytes, outputs: bytes) -> tuple[str, str]:
        return self.documents.put(inputs), self.documents.put(outputs)

    def _publish_rows(
        self,
        db: Session,
        block: Block,
        inputs: dict[str, Any],
        published: dict[str, Any],
        result: BlockResult,
    ) -> None:
        block.inputs_json = None
        block.outputs_json = None
        block.page_json = _page_document(inputs, published)
        block.verified = None
        block.nominated = result.nominated
        block.excluded = len(result.devices) - result.nominated
        block.status = BlockStatus.COMPLETED.value
        block.closed_at = self.clock()
        block.error = None
        number, denominator = block.number, result.score_denominator
        insert_rows(
            db,
            "block_rewards",
            ("device_id", "number", "units", "score", "reasons"),
            [
                (device_id, number, units, f"{weight}/{denominator}", why or None)
                for device_id, units, weight, why in zip(
                    result.devices.device_id, result.units, result.weights, result.reasons,
                    strict=True,
                )
            ],
        )  # fmt: skip

    # -- retention ------------------------------------------------------------------------

    def prune_rewards(self, max_devices: int) -> int:
        """Delete the per-device reward rows of blocks older than the newest
        ``block_rewards_keep_blocks`` published ones, for up to ``max_devices`` devices
        (``PRUNE_DEVICES_PER_STATEMENT`` a transaction), continuing where the last call
        stopped; returns the rows deleted. The rows are keyed by device first, so each
        statement names its devices: the database finds their old rows without reading
        the rest of the table. Credits (``reward_credits``) and claims are untouched."""
        keep = self.settings.block_rewards_keep_blocks
        if not keep:
            return 0
        with self.sessions() as db:
            newest = db.scalar(
                select(func.max(Block.number)).where(Block.status == BlockStatus.COMPLETED)
            )
        below = 0 if newest is None else int(newest) - keep + 1
        if below <= self._pruned_below:
            return 0  # swept since the last block was published
        if not self._prune_after:
            self._sweep_below = below  # a new sweep: what it leaves, it leaves below this
        deleted = seen = 0
        while seen < max_devices:
            with self.sessions.begin() as db:
                ids = list(
                    db.scalars(
                        select(Device.id)
                        .where(Device.id > self._prune_after)
                        .order_by(Device.id)
                        .limit(PRUNE_DEVICES_PER_STATEMENT)
                    )
                )
                if ids:
                    gone = db.execute(
                        delete(BlockReward).where(
                            BlockReward.device_id.in_(ids), BlockReward.number < below
                        )
                    )
                    deleted += gone.rowcount or 0  # type: ignore[attr-defined]
            seen += len(ids)
            if len(ids) < PRUNE_DEVICES_PER_STATEMENT:  # the sweep reached the last device
                self._prune_after, self._pruned_below = "", self._sweep_below
                break
            self._prune_after = ids[-1]
        if deleted:
            log.info("deleted %d per-device reward rows of blocks before %d", deleted, below)
        return deleted

    # -- reads ----------------------------------------------------------------------------

    @staticmethod
    def _stored(db: Session, number: int) -> tuple[Any, ...]:
        """(inputs column, inputs hash, outputs column, outputs hash) of a block."""
        found = db.execute(
            select(
                Block.inputs_json, Block.inputs_hash, Block.outputs_json, Block.outputs_hash
            ).where(Block.number == number)
        ).one_or_none()
        if found is None:
            raise NotFound("no such block", number=number)
        return tuple(found)

    def _documents(self, stored: tuple[Any, ...]) -> tuple[bytes | None, bytes | None]:
        """A block's published inputs and outputs (``_stored``), exactly as hashed."""
        inputs, inputs_hash, outputs, outputs_hash = stored
        return self._document(inputs, inputs_hash), self._document(outputs, outputs_hash)

    def _document(self, column: bytes | None, digest: str | None) -> bytes | None:
        """A published document: from its column where a block stored before the
        document store kept it there, else from the store (read after the session
        closes: no connection held while a file is read); None where not published."""
        if column is not None:
            return bytes(column)
        if digest is None:
            return None
        try:
            return self.documents.get(digest)
        except DocumentStoreError as exc:  # missing or damaged on disk: never served
            log.error("a published document cannot be read: %s", exc)
            raise InternalError(
                "this published document cannot be read on this server", document=digest
            ) from exc

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

    def view_json(self, number: int) -> bytes:
        """A block's summary and its published inputs and outputs (enough to recompute
        it), as JSON, with the stored documents spliced in byte for byte: a block of a
        million devices is served without parsing or encoding 200 MB again."""
        with self.sessions() as db:
            b = self.get(db, number)
            head = BlockSummary(**_summary(b)).model_dump_json().encode()
            stored = self._stored(db, number)
        inputs, outputs = self._documents(stored)
        return b"".join(
            (head[:-1], b',"inputs":', inputs or b"null", b',"outputs":', outputs or b"null", b"}")
        )

    def verified(self, number: int) -> bool | None:
        """Whether a completed block recomputed from its published inputs to its outputs
        hash; None while it is not completed or not checked yet (``check_published``)."""
        with self.sessions() as db:
            return self.get(db, number).verified

    def page(self, number: int) -> BlockPage:
        """What the explorer shows of a block: its summary, whether it verified, and the
        first rows of its tables, stored at publication; a page view never parses the
        block's documents (a block of a million devices is hundreds of megabytes)."""
        with self.sessions() as db:
            b = self.get(db, number)
            summary = BlockSummary(**_summary(b))
            stored, verified = b.page_json, b.verified
            if stored is None and b.status == BlockStatus.COMPLETED and b.inputs_json is not None:
                # Published before blocks kept their page (migration 0011): once, here.
                stored = _page_document(orjson.loads(b.inputs_json), b.outputs or {})
                b.page_json = stored
                db.commit()
        shown = orjson.loads(stored) if stored is not None else {}
        return BlockPage(
            block=summary,
            verified=verified,
            paid=shown.get("paid", []),
            excluded=shown.get("excluded", []),
            pools=shown.get("pools", []),
            notes=shown.get("notes", []),
        )

    def document(self, number: int, which: str) -> bytes:
        """A completed block's published ``inputs`` or ``outputs``: the exact bytes that
        were hashed (``inputs_hash``, ``outputs_hash``)."""
        column, digest = {
            "inputs": (Block.inputs_json, Block.inputs_hash),
            "outputs": (Block.outputs_json, Block.outputs_hash),
        }[which]
        with self.sessions() as db:
            found = db.execute(select(column, digest).where(Block.number == number)).one_or_none()
        document = None if found is None else self._document(*found)
        if document is None:
            raise NotFound("no such published block", number=number)
        return document

    def inputs_of(self, db: Session, number: int) -> dict[str, Any] | None:
        """A block's published inputs, parsed, read in ``db`` (a season's finish reads
        them in its own transaction); None while it is not published."""
        inputs, digest = self._stored(db, number)[:2]
        document = self._document(inputs, digest)
        return None if document is None else _json_object(orjson.loads(document))

    def published_inputs(self, number: int) -> dict[str, Any] | None:
        """A block's published inputs, parsed (what a season recomputes from); None
        while it is not published."""
        with self.sessions() as db:
            inputs, digest = self._stored(db, number)[:2]
        document = self._document(inputs, digest)
        return None if document is None else _json_object(orjson.loads(document))

    def rewards_of(self, device_id: str, limit: int) -> RewardList:
        """What a device earned per block, newest first, and why it was left out: the
        blocks whose per-device rows are kept (``prune_rewards``); older blocks' are in
        their published documents."""
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
                    score=_reduced(r.score),
                    excluded_because=r.reasons.split(",") if r.reasons else [],
                )
                for r in rows
            ],
        )


@dataclass(frozen=True, slots=True)
class BlockPage:
    """A block as its explorer page shows it (``BlockService.page``)."""

    block: BlockSummary
    verified: bool | None
    paid: list[dict[str, Any]]
    excluded: list[dict[str, Any]]
    pools: list[dict[str, Any]]
    notes: list[str]


def _page_document(inputs: dict[str, Any], outputs: dict[str, Any]) -> bytes:
    """The first ``PAGE_ROWS`` nominated and excluded devices, the pools and the notes."""
    paid, excluded = block_publication.published_rows(inputs, outputs, PAGE_ROWS)
    return orjson.dumps(
        {
            "paid": paid,
            "excluded": excluded,
            "pools": outputs.get("pools", []),
            "notes": outputs.get("notes", []),
        }
    )


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("a published document is a JSON object")
    return value


def _reduced(score: str) -> str:
    """A stored "weight/denominator" score in lowest terms ("0" when excluded)."""
    value = Fraction(score)
    return f"{value.numerator}/{value.denominator}" if value else "0"


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
        "unlisted": b.unlisted,
        "inputs_hash": b.inputs_hash,
        "outputs_hash": b.outputs_hash,
        "error": b.error,
    }
