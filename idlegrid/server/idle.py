"""Idle-use abuse on the heartbeat path (rules in ``core/idle.py``).

The monitor keeps each device's streak of heavy idle heartbeats in memory (a
dictionary update per heartbeat, like the liveness table) and queues every
finding; the staking loop records each as misconduct and slashes it once
(``StakingService.tick``). A finding whose write fails is put back. Streaks
live in memory only: a restart forgets them, which can delay a finding by one
window but never invents one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from idlegrid.core.idle import IdleRules, Streak, is_heavy, observe


@dataclass(frozen=True, slots=True)
class Finding:
    device_id: str
    at: float
    evidence: str


class IdleMonitor:
    def __init__(self, rules: IdleRules) -> None:
        self.rules = rules
        self._streaks: dict[str, Streak] = {}
        self._found: list[Finding] = []
        self._lock = threading.Lock()

    def heartbeat(
        self, device_id: str, cpu: float | None, gpu: float | None, busy: bool, now: float
    ) -> None:
        if device_id not in self._streaks and not is_heavy(cpu, gpu, busy, self.rules):
            return  # the common case, on the hot path: nothing to follow, no lock
        with self._lock:
            streak, abuse = observe(
                self._streaks.get(device_id), cpu=cpu, gpu=gpu, busy=busy, now=now, rules=self.rules
            )
            if streak is None:
                self._streaks.pop(device_id, None)
            else:
                self._streaks[device_id] = streak
            if abuse is not None:
                self._found.append(Finding(device_id, now, abuse.evidence()))

    def drain(self) -> list[Finding]:
        with self._lock:
            found, self._found = self._found, []
        return found

    def requeue(self, found: list[Finding]) -> None:
        with self._lock:
            self._found[:0] = found
