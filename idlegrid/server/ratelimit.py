"""Rate limits in one control-plane process: how registrations (and other free
requests: speed tests, quotes) are limited per source address, per owner, per device
or per buyer, with the token buckets of ``core/buckets.py`` (its docstring: refill,
bounded memory, IPv6 /64 sources) behind a lock for the server's threads.

The limits hold per control-plane process: several replicas behind a balancer
each allow the rate, which bounds what one source can do by the number of
replicas; that is the trade made for keeping the hot path free of a shared store.
"""

from __future__ import annotations

import threading

from idlegrid.core.buckets import TokenBuckets, source_key
from idlegrid.errors import RateLimited

__all__ = ["RateLimiter", "source_key"]


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        """``rate_per_s`` 0 means unlimited (the local network's benchmarks)."""
        self._lock = threading.Lock()
        self._buckets = TokenBuckets(rate_per_s, burst, max_keys)

    def take(self, key: str, now: float, spend: bool = True) -> float | None:
        """Take a token for ``key`` (with ``spend=False`` only look): None when there is
        one, else seconds until one is back."""
        with self._lock:
            return self._buckets.take(key, now, spend)

    def check(self, key: str, now: float, what: str, spend: bool = True) -> None:
        """``take``, else raise ``RateLimited`` ("too many <what>") with the wait and the
        kind of limit (the key's prefix: source, owner, device, buyer)."""
        wait = self.take(key, now, spend)
        if wait is not None:
            raise RateLimited(
                f"too many {what}: retry later",
                limit=key.split(":")[0],
                retry_after_s=round(wait, 1),
            )

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets
