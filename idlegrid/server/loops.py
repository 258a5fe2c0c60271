"""Background loops of the control plane. A failing pass is logged and retried;
it never stops the loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from idlegrid.server.state import AppState

log = logging.getLogger("idlegrid.server.loops")


_FLUSHING = threading.Lock()


def reap_and_flush(state: AppState) -> int:
    """One pass: mark silent devices, then write the queued liveness batch.

    Returns the number of status changes the reaper made. A batch whose write
    fails is put back and written with the next one, so nothing is lost.
    """
    changes = state.liveness.reap(state.clock())
    flush_liveness(state)
    return len(changes)


def flush_liveness(state: AppState) -> None:
    """Write every uptime second and status change accounted so far. When it returns,
    everything heartbeats brought before the call is committed: a pass that another
    thread had drained and was still writing is waited for (one flush at a time), so
    a reward block that flushes first and then gathers sees all of it."""
    with _FLUSHING:
        batch = state.liveness.drain()
        if not batch:
            return
        try:
            with state.metrics.flush_seconds.time():
                state.devices.flush(batch)
        except Exception:
            state.liveness.requeue(batch)
            state.metrics.flush_failures.inc()
            raise
        state.liveness.forget_inactive(batch.changes)


def buyback_and_burn(state: AppState) -> None:
    """One pass: turn fee revenue into burned IO."""
    for what, units in state.ledger.buyback_and_burn():
        log.info("burned %d IO units from %s", units, what)


async def every(interval_s: float, name: str, step: Callable[[], object]) -> None:
    """Run ``step`` in a worker thread every ``interval_s``, for ever; a failing
    pass is logged and the next one runs on time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(step)
        except Exception:
            log.exception("%s pass failed; retrying in %.1fs", name, interval_s)


def background(state: AppState) -> list[Coroutine[Any, Any, None]]:
    """The control plane's loops: liveness, proofs of compute, buy-back and burn, the
    chain outbox,
    clusters (deploy watch, healing, expiry, hourly settlement), reward blocks and
    slashes whose appeal window closed."""
    s = state.settings
    return [
        every(
            min(s.flush_interval_s, s.reaper_interval_s), "liveness", lambda: reap_and_flush(state)
        ),
        every(s.proof_tick_s, "proof", state.proofs.tick),
        every(s.buyback_interval_s, "buy-back", lambda: buyback_and_burn(state)),
        every(s.outbox_interval_s, "chain outbox", state.ledger.outbox.drain),
        every(s.cluster_tick_s, "clusters", state.clusters.tick),
        every(s.price_interval_s, "prices", state.clusters.market.record_prices),
        every(s.match_index_reload_s, "match index", state.clusters.market.reload_index),
        every(min(60.0, s.block_interval_s / 4), "blocks", state.blocks.tick),
        every(min(60.0, s.block_interval_s), "slashes", state.staking.tick),
    ]
