"""Pure-core tests: idle-use abuse from heartbeat load (core/idle.py)."""

from __future__ import annotations

from idlegrid.core.idle import IdleRules, Streak, observe

RULES = IdleRules()  # 30 % CPU, 20 % GPU, 15 minutes, 3 heartbeats, 5-minute gaps


def run(loads: list[tuple[float, float | None, float | None, bool]]) -> list[Streak]:
    """Feed (time, cpu, gpu, busy) heartbeats; return every finding."""
    streak: Streak | None = None
    found = []
    for now, cpu, gpu, busy in loads:
        streak, abuse = observe(streak, cpu=cpu, gpu=gpu, busy=busy, now=now, rules=RULES)
        if abuse is not None:
            found.append(abuse)
    return found


def test_fifteen_minutes_of_heavy_idle_load_is_abuse_once_per_window() -> None:
    beats = [(60.0 * i, 95.0, None, False) for i in range(32)]  # 31 minutes
    first, second = run(beats)
    assert (first.since, first.last, first.samples) == (0.0, 900.0, 16)
    assert (second.since, second.last) == (960.0, 1860.0)  # a new full window
    assert "900 s over 16 heartbeats" in first.evidence() and "CPU 95 %" in first.evidence()


def test_gpu_load_alone_counts() -> None:
    assert run([(60.0 * i, 5.0, 25.0, False) for i in range(16)])
    assert not run([(60.0 * i, 5.0, 19.9, False) for i in range(16)])


def test_a_light_busy_or_silent_moment_ends_the_streak() -> None:
    heavy = [(60.0 * i, 95.0, None, False) for i in range(16)]
    light = list(heavy)
    light[8] = (480.0, 10.0, None, False)
    assert not run(light)
    busy = list(heavy)
    busy[8] = (480.0, 95.0, None, True)  # hired or proving: the load is ours
    assert not run(busy)
    silent = [b for b in heavy if not 300 < b[0] < 700]  # 7 minutes without a heartbeat
    assert not run(silent)
    assert not run([(60.0 * i, None, None, False) for i in range(16)])  # no figures


def test_a_window_needs_enough_heartbeats() -> None:
    sparse = IdleRules(max_gap_s=1_000)
    streak, abuse = observe(None, cpu=99, gpu=None, busy=False, now=0, rules=sparse)
    streak, abuse = observe(streak, cpu=99, gpu=None, busy=False, now=900, rules=sparse)
    assert abuse is None and streak is not None and streak.samples == 2
    streak, abuse = observe(streak, cpu=99, gpu=None, busy=False, now=901, rules=sparse)
    assert abuse is not None and streak is None
