"""Background loops of the control plane. A failing pass is logged and retried;
it never stops the loop."""

from __future__ import annotations

import asyncio
import logging

from idlegrid.server.state import AppState

log = logging.getLogger("idlegrid.server.loops")


def reap_and_flush(state: AppState) -> int:
    """One pass: mark silent devices, then write the queued liveness batch.

    Returns the number of status changes the reaper made. A batch whose write
    fails is put back and written with the next one, so nothing is lost.
    """
    changes = state.liveness.reap(state.clock())
    batch = state.liveness.drain()
    if batch:
        try:
            with state.metrics.flush_seconds.time():
                state.devices.flush(batch)
        except Exception:
            state.liveness.requeue(batch)
            state.metrics.flush_failures.inc()
            raise
    return len(changes)


async def liveness_loop(state: AppState) -> None:
    interval = min(state.settings.flush_interval_s, state.settings.reaper_interval_s)
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(reap_and_flush, state)
        except Exception:
            log.exception("liveness pass failed; retrying in %.1fs", interval)


async def proof_loop(state: AppState) -> None:
    """Expire late challenges, issue due ones, promote proven devices."""
    interval = state.settings.proof_tick_s
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(state.proofs.tick)
        except Exception:
            log.exception("proof pass failed; retrying in %.1fs", interval)


async def buyback_loop(state: AppState) -> None:
    """Turn fee revenue into burned IO, once an interval."""
    interval = state.settings.buyback_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            burned = await asyncio.to_thread(state.ledger.buyback_and_burn)
            for what, units in burned:
                log.info("burned %d IO units from %s", units, what)
        except Exception:
            log.exception("buy-back failed; retrying in %.0fs", interval)
