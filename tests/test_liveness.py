"""The in-memory liveness table: reaping in order, coalescing, and requeueing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idlegrid.core.lifecycle import Timing
from idlegrid.errors import UnknownDevice
from idlegrid.protocol import DeviceStatus
from idlegrid.server.liveness import LivenessTable

S = DeviceStatus


def table(*ids: str, now: float = 0.0) -> LivenessTable:
    t = LivenessTable(Timing(ttl_s=25, inactive_after_s=1000))
    for i in ids:
        t.load(i, S.UP, now, 0)
    return t


def test_heartbeats_coalesce_per_device_and_hour() -> None:
    t = table("a")
    for now in (10.0, 20.0, 30.0):
        t.heartbeat("a", now)
    batch = t.drain()
    assert batch.uptime == {("a", 0): 30.0}
    assert batch.last_seen == {"a": 30.0}
    assert not t.drain()


def test_unknown_device() -> None:
    with pytest.raises(UnknownDevice):
        table().heartbeat("x", 1.0)


def test_reaper_marks_only_the_silent_and_records_versions() -> None:
    t = table("a", "b", "c")
    t.heartbeat("b", 20.0)
    changes = t.reap(26.0)
    assert {(c.device_id, c.status) for c in changes} == {("a", S.DOWN), ("c", S.DOWN)}
    assert t.get("b").status is S.UP  # type: ignore[union-attr]
    assert all(c.version == 1 for c in changes)
    assert t.reap(27.0) == []  # nothing new
    late = t.reap(1001.0)
    assert [(c.device_id, c.status) for c in late] == [
        ("b", S.DOWN),
        ("a", S.INACTIVE),
        ("c", S.INACTIVE),
    ]
    assert [(c.device_id, c.status) for c in t.reap(1021.0)] == [("b", S.INACTIVE)]


def test_inactive_devices_are_let_go_once_committed_and_revived_on_return() -> None:
    t = table("a", "b")
    t.reap(26.0)
    changes = t.reap(1001.0)
    assert {c.status for c in changes} == {S.INACTIVE}
    t.heartbeat("b", 1002.0)  # back before the change was committed: kept
    assert t.forget_inactive(changes) == 1
    assert t.get("a") is None and t.get("b") is not None and len(t) == 1
    with pytest.raises(UnknownDevice):
        t.heartbeat("a", 1003.0)
    t.revive("a", S.INACTIVE, 0.0, changes[0].version)
    t.revive("a", S.DOWN, 0.0, 0)  # already back: a second revive changes nothing
    assert t.get("a").status is S.INACTIVE  # type: ignore[union-attr]
    assert t.heartbeat("a", 1004.0) is S.UP
    assert t.get("a").version == changes[0].version + 1  # type: ignore[union-attr]


def test_requeued_batch_merges_with_newer_work() -> None:
    t = table("a")
    t.heartbeat("a", 10.0)
    failed = t.drain()
    t.heartbeat("a", 20.0)
    t.requeue(failed)
    batch = t.drain()
    assert batch.uptime == {("a", 0): 20.0} and batch.last_seen == {"a": 20.0}


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0, 40)), max_size=60))
def test_reaper_agrees_with_a_full_scan(events: list[tuple[int, float]]) -> None:
    """The ordered queues find exactly the devices a scan of every device would."""
    ids = [str(i) for i in range(5)]
    t = table(*ids)
    now = 0.0
    for device, step in events:
        now += step
        t.heartbeat(ids[device], now)
        t.reap(now)
        for i in ids:
            dev = t.get(i)
            assert dev is not None and dev.last_seen is not None
            silent = now - dev.last_seen
            expected = S.UP if silent <= 25 else (S.INACTIVE if silent > 1000 else S.DOWN)
            assert dev.status is expected, (i, silent)
