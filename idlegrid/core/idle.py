"""Idle-use abuse: heavy foreign load on a device that should be idle. Pure.

A device earns block rewards for being idle and ready. One that is neither
hired nor proving, yet keeps its processors busy (mining, or renting itself out
elsewhere), is abusing its idle time: io.net blocks devices over 30 % CPU or
5–20 % GPU while idle. Heartbeats report the machine's CPU and GPU load
(averaged over the interval since the previous heartbeat), and ``observe``
follows one device's heartbeats:

- a heartbeat is **heavy** when the device is idle (no cluster, no proof
  waiting) and its CPU load ≥ ``cpu_percent`` or its GPU load ≥ ``gpu_percent``;
- consecutive heavy heartbeats make a **streak**; a light or busy heartbeat,
  or a silence longer than ``max_gap_s``, ends it;
- a streak that has lasted ``window_s`` (15 minutes by default) over at least
  ``min_samples`` heartbeats is **abuse**: it is returned once, and the next
  finding needs a new streak of the full window.

A proof of compute lasts seconds, so it cannot make a 15-minute streak on its
own, and heartbeats that carry no load figures are never heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdleRules:
    cpu_percent: float = 30.0
    gpu_percent: float = 20.0
    window_s: float = 900.0
    min_samples: int = 3
    max_gap_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Streak:
    """Consecutive heavy heartbeats of one device."""

    since: float
    last: float
    samples: int
    peak_cpu: float
    peak_gpu: float

    def evidence(self) -> str:
        return (
            f"idle yet loaded for {self.last - self.since:.0f} s over {self.samples} "
            f"heartbeats (peak CPU {self.peak_cpu:.0f} %, GPU {self.peak_gpu:.0f} %)"
        )


def is_heavy(cpu: float | None, gpu: float | None, busy: bool, rules: IdleRules) -> bool:
    if busy:
        return False
    return (cpu is not None and cpu >= rules.cpu_percent) or (
        gpu is not None and gpu >= rules.gpu_percent
    )


def observe(
    streak: Streak | None,
    *,
    cpu: float | None,
    gpu: float | None,
    busy: bool,
    now: float,
    rules: IdleRules,
) -> tuple[Streak | None, Streak | None]:
    """One heartbeat: (the device's streak after it, the streak that proved abuse or None)."""
    if not is_heavy(cpu, gpu, busy, rules):
        return None, None
    c, g = cpu or 0.0, gpu or 0.0
    if streak is None or now - streak.last > rules.max_gap_s or now < streak.last:
        streak = Streak(since=now, last=now, samples=1, peak_cpu=c, peak_gpu=g)
    else:
        streak = Streak(
            since=streak.since,
            last=now,
            samples=streak.samples + 1,
            peak_cpu=max(streak.peak_cpu, c),
            peak_gpu=max(streak.peak_gpu, g),
        )
    if now - streak.since >= rules.window_s and streak.samples >= rules.min_samples:
        return None, streak
    return streak, None
