"""Pure-core tests: the device state machine and uptime accounting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idlegrid.core import lifecycle
from idlegrid.core.lifecycle import HOUR_S, OwnerAction, Timing
from idlegrid.errors import DeviceTerminated, InvalidTransition
from idlegrid.protocol import DeviceStatus, Readiness

S = DeviceStatus
TIMING = Timing(ttl_s=25, inactive_after_s=5 * 24 * HOUR_S)


@given(st.floats(0, 1e9), st.floats(0, 10 * HOUR_S))
def test_split_by_hour_conserves_time_and_respects_boundaries(start: float, length: float) -> None:
    buckets = lifecycle.split_by_hour(start, start + length)
    assert sum(s for _, s in buckets) == pytest.approx(length, abs=1e-6)
    hours = [h for h, _ in buckets]
    assert hours == sorted(set(hours))
    assert all(h % HOUR_S == 0 and 0 < s <= HOUR_S for h, s in buckets)


def test_split_by_hour_crossing_a_boundary() -> None:
    assert lifecycle.split_by_hour(3590.0, 3610.0) == [(0, 10.0), (3600, 10.0)]
    assert lifecycle.split_by_hour(10.0, 10.0) == []


def test_uptime_accrues_only_between_close_heartbeats() -> None:
    assert lifecycle.accrue_uptime(None, 100.0, 25) == []
    assert lifecycle.accrue_uptime(90.0, 100.0, 25) == [(0, 10.0)]
    assert lifecycle.accrue_uptime(50.0, 100.0, 25) == []  # a gap: the device was down


def test_heartbeat_brings_live_states_up_and_keeps_sticky_ones() -> None:
    for status in (S.UP, S.DOWN, S.INACTIVE):
        assert lifecycle.on_heartbeat(status) is S.UP
    for status in (S.PAUSED, S.BLOCKED, S.UNSUPPORTED):
        assert lifecycle.on_heartbeat(status) is status
    with pytest.raises(DeviceTerminated):
        lifecycle.on_heartbeat(S.TERMINATED)


def test_silence_goes_down_then_inactive() -> None:
    assert lifecycle.on_silence(S.UP, 0.0, 25.0, TIMING) is S.UP
    assert lifecycle.on_silence(S.UP, 0.0, 25.1, TIMING) is S.DOWN
    assert lifecycle.on_silence(S.DOWN, 0.0, 5 * 24 * HOUR_S, TIMING) is S.DOWN
    assert lifecycle.on_silence(S.DOWN, 0.0, 5 * 24 * HOUR_S + 1, TIMING) is S.INACTIVE
    assert lifecycle.on_silence(S.PAUSED, 0.0, 1e9, TIMING) is S.PAUSED


@pytest.mark.parametrize(
    ("status", "action", "live", "expected"),
    [
        (S.UP, OwnerAction.PAUSE, True, S.PAUSED),
        (S.DOWN, OwnerAction.PAUSE, False, S.PAUSED),
        (S.PAUSED, OwnerAction.RESUME, True, S.UP),
        (S.PAUSED, OwnerAction.RESUME, False, S.DOWN),
        (S.UP, OwnerAction.TERMINATE, True, S.TERMINATED),
        (S.BLOCKED, OwnerAction.TERMINATE, True, S.TERMINATED),
    ],
)
def test_owner_actions(status: S, action: OwnerAction, live: bool, expected: S) -> None:
    assert lifecycle.on_owner_action(status, action, live) is expected


@pytest.mark.parametrize(
    ("status", "action"),
    [(S.UP, OwnerAction.RESUME), (S.BLOCKED, OwnerAction.PAUSE), (S.BLOCKED, OwnerAction.RESUME)],
)
def test_invalid_owner_actions(status: S, action: OwnerAction) -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.on_owner_action(status, action, True)


def test_terminated_is_final() -> None:
    for action in OwnerAction:
        with pytest.raises(DeviceTerminated):
            lifecycle.on_owner_action(S.TERMINATED, action, True)


def test_readiness_needs_proof_and_uptime() -> None:
    pending = Readiness.PENDING
    assert lifecycle.readiness(S.UP, pending, 13 * HOUR_S, 12 * HOUR_S, False) is pending
    assert lifecycle.readiness(S.UP, pending, 11 * HOUR_S, 12 * HOUR_S, True) is pending
    ready = lifecycle.readiness(S.UP, pending, 12 * HOUR_S, 12 * HOUR_S, True)
    assert ready is Readiness.CLUSTER_READY
    assert lifecycle.readiness(S.BLOCKED, ready, 99 * HOUR_S, 0, True) is pending
    hired = Readiness.HIRED
    assert lifecycle.readiness(S.DOWN, hired, 0, 12 * HOUR_S, False) is hired
