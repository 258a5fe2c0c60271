"""Group commit for requests that each cost a transaction: those that arrive
together are written together.

A registration is a small insert, and on SQLite or PostgreSQL most of its cost is
the transaction around it (begin, the write lock, commit) and the ORM's round
trips, not its rows. ``GroupCommit`` queues calls on the event loop and runs them
in batches, one thread and one call of ``run_many`` per batch. It does not wait
to fill a batch (a lone request would pay for that): the first call runs at once,
and calls that arrive while ``lanes`` batches run are taken together next, as a
database's group commit does. So under load batches grow by themselves, and the
calls waiting cost no thread: the queue is also the admission line that keeps a
flood of them from filling the thread pool (``registration_concurrency``).

``run_many`` returns one outcome per item, in order: a result, or the exception
that item raises to its caller (one bad item does not fail the others).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        run_many: Callable[[Sequence[T]], Sequence[R | Exception]],
        *,
        lanes: int = 1,
        max_batch: int = 256,
    ) -> None:
        if lanes < 1 or max_batch < 1:
            raise ValueError("lanes and max_batch are at least 1")
        self._run_many = run_many
        self.lanes = lanes
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches: list[int] = []
        """Sizes of the last batches (at most 1,000), for tests and metrics."""

    async def submit(self, item: T) -> R:
        """``run_many([item])[0]``, batched with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._running < self.lanes:
            self._running += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                batch = [(item, f) for item, f in batch if not f.done()]  # gone: cancelled
                if not batch:
                    continue
                self.batches = [*self.batches[-999:], len(batch)]
                outcomes: Sequence[R | Exception]
                try:
                    outcomes = await run_in_threadpool(self._run_many, [i for i, _ in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} items")
                except Exception as exc:  # the whole batch failed: each caller hears why
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._running -= 1
