"""Reward seasons on the server: points after every block, IO at the end.

The rules are pure (``core/seasons.py``). A season is announced by the network
(its block range, point pools and conversion ratio, published with a hash).
After each completed block, ``add_block`` adds every qualifying device's
points for that block-hour to ``season_points`` (in the block's transaction).
When the season's last block has completed, ``finish`` recomputes the whole
season from the blocks' published inputs (so anyone can), publishes the
results and their hash, and pays each owner's IO from the community genesis
allocation (tokens already in the treasury: a book transfer, like a grant).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core import block_columns, seasons
from idlegrid.core.ledger import Transfer
from idlegrid.errors import InvalidRequest, NotFound
from idlegrid.protocol import (
    BlockStatus,
    SeasonCreate,
    SeasonList,
    SeasonStanding,
    SeasonStatus,
    SeasonView,
)
from idlegrid.server.db.bulk import add_season_points
from idlegrid.server.db.models import Block, Season, SeasonPoints
from idlegrid.server.services.ledger import LedgerService, genesis_account, user_account

log = logging.getLogger("idlegrid.server.seasons")

SEASON_FUNDS = genesis_account("community")


# The rules a season row holds, named alike in the row and in ``core.seasons.Season``.
FIELDS = ("id", "name", "starts_hour", "ends_hour", "gpu_points", "cpu_points", "points_per_io")


def to_core(row: Season) -> seasons.Season:
    return seasons.Season(**{f: getattr(row, f) for f in FIELDS})


class SeasonService:
    def __init__(
        self, sessions: sessionmaker[Session], ledger: LedgerService, clock: Callable[[], float]
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.clock = clock
        # A published block's inputs, read in the session given: the block service's
        # (its documents live in the document store; app.py wires it), else the
        # column where blocks stored before the store kept them.
        self.block_inputs: Callable[[Session, int], dict[str, Any] | None] = _column_inputs

    def create(self, req: SeasonCreate) -> SeasonView:
        """Announce a season; ``core.seasons.Season`` checks its rules."""
        if req.ends_block <= req.starts_block:
            raise InvalidRequest(
                "a season ends after it starts: ends_block must be above starts_block",
                starts_block=req.starts_block,
                ends_block=req.ends_block,
            )
        season = seasons.Season(
            id=secrets.token_hex(8),
            name=req.name,
            starts_hour=req.starts_block,
            ends_hour=req.ends_block,
            gpu_points=req.gpu_points,
            cpu_points=req.cpu_points,
            points_per_io=req.points_per_io,
        )
        fields = {f: getattr(season, f) for f in FIELDS}
        row = Season(**fields, status=SeasonStatus.ANNOUNCED.value)
        with self.sessions.begin() as db:
            db.add(row)
        return season_view(row)

    def add_block(self, db: Session, number: int, inputs: block_columns.BlockInputs) -> None:
        """Add the block-hour's points of every season that covers it."""
        covering = list(
            db.scalars(
                select(Season).where(Season.starts_hour <= number, Season.ends_hour > number)
            )
        )
        if not covering:
            return
        d = inputs.devices
        for row in covering:
            row.status = SeasonStatus.RUNNING.value
            earned = seasons.season_hour(to_core(row), inputs)
            add_season_points(
                db,
                [
                    (row.id, device_id, owner, kind, earned[device_id])
                    for device_id, owner, kind in zip(d.device_id, d.owner, d.kind, strict=True)
                    if earned[device_id]
                ],
            )

    def finish_due(self) -> list[str]:
        """Finish every season whose last block has completed."""
        finished = []
        with self.sessions() as db:
            done = db.scalar(
                select(Block.number)
                .where(Block.status == BlockStatus.COMPLETED)
                .order_by(Block.number.desc())
                .limit(1)
            )
            if done is None:
                return []
            due = list(
                db.scalars(
                    select(Season.id).where(
                        Season.status.in_([SeasonStatus.ANNOUNCED, SeasonStatus.RUNNING]),
                        Season.ends_hour <= done + 1,
                    )
                )
            )
        for season_id in due:
            if self.finish(season_id):
                finished.append(season_id)
        return finished

    def finish(self, season_id: str) -> bool:
        with self.sessions.begin() as db:
            row = db.get(Season, season_id, with_for_update=True)
            if row is None or row.status == SeasonStatus.COMPLETED:
                return False
            season = to_core(row)
            blocks = list(
                db.scalars(
                    select(Block).where(
                        Block.number >= row.starts_hour, Block.number < row.ends_hour
                    )
                )
            )
            if any(b.status != BlockStatus.COMPLETED for b in blocks):
                return False
            inputs = [self.block_inputs(db, b.number) for b in blocks]
            if any(i is None for i in inputs):
                return False
            results = seasons.compute_season(season, [i for i in inputs if i is not None])
            row.results = seasons.results_to_dict(results)
            row.results_hash = seasons.results_hash(results)
            transfers = []
            for owner, units in sorted(results.owner_units().items()):
                if units:
                    self.ledger.book.open_account(db, user_account(owner, "IO"), "IO")
                    transfers.append(
                        Transfer(
                            f"season:{row.id}:{owner}",
                            SEASON_FUNDS,
                            user_account(owner, "IO"),
                            "IO",
                            units,
                            code="season",
                            memo=row.name,
                        )
                    )
            if transfers:
                self.ledger.book.post_batch(db, transfers)
            row.status = SeasonStatus.COMPLETED.value
            log.info("season %s finished: %d owners paid", row.name, len(transfers))
            return True

    def view(self, season_id: str) -> SeasonView:
        """A season with its standings, and its results once finished."""
        with self.sessions() as db:
            row = db.get(Season, season_id)
            if row is None:
                raise NotFound("no such season", season_id=season_id)
            points = db.scalars(
                select(SeasonPoints)
                .where(SeasonPoints.season_id == row.id)
                .order_by(SeasonPoints.points.desc())
                .limit(1000)
            )
            standings = [
                SeasonStanding(
                    device_id=p.device_id,
                    owner=p.owner,
                    kind=p.kind,
                    points=f"{p.points / seasons.MILLI:.3f}",
                )
                for p in points
            ]
            return season_view(row, standings)

    def list_seasons(self) -> SeasonList:
        with self.sessions() as db:
            rows = db.scalars(select(Season).order_by(Season.starts_hour.desc()))
            return SeasonList(items=[season_view(r) for r in rows])


def season_view(row: Season, standings: list[SeasonStanding] | None = None) -> SeasonView:
    done = row.status == SeasonStatus.COMPLETED
    return SeasonView(
        id=row.id,
        name=row.name,
        starts_block=row.starts_hour,
        ends_block=row.ends_hour,
        gpu_points=row.gpu_points,
        cpu_points=row.cpu_points,
        points_per_io=row.points_per_io,
        status=SeasonStatus(row.status),
        rules_hash=seasons.season_hash(to_core(row)),
        results_hash=row.results_hash if done else None,
        results=row.results,
        standings=standings or [],
    )


def _column_inputs(db: Session, number: int) -> dict[str, Any] | None:
    block = db.get(Block, number)
    return None if block is None else block.inputs
