"""Token buckets, per key, in one process: how registrations (and other free
requests: speed tests, quotes) are rate-limited per source address, per owner,
per device or per buyer.

Each key has a bucket of ``burst`` tokens refilled at ``rate_per_s``; a request
takes one or is refused with how long until one is back. Buckets of keys not
seen for a while are forgotten oldest first, so memory stays bounded
(``max_keys``) however many sources a flood comes from: a forgotten key starts
again with a full bucket, which costs an attacker with that many sources
nothing it did not have already.

The limits hold per control-plane process: several replicas behind a balancer
each allow the rate, which bounds what one source can do by the number of
replicas; that is the trade made for keeping the hot path free of a shared store.

A source is an IPv4 address or an IPv6 /64 (``source_key``): one IPv6 host is
usually given a whole /64, and one bucket per address would give it 2^64 of them.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict

from idlegrid.errors import RateLimited

IPV6_PREFIX = 64


def source_key(host: str | None) -> str:
    """The bucket key of a client address: ``source:<IPv4>`` or ``source:<IPv6 /64>``."""
    if host is None:
        return "source:unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"source:{host}"  # not an address (a test transport's name, say)
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return f"source:{mapped}"
        return f"source:{ipaddress.ip_network((address, IPV6_PREFIX), strict=False)}"
    return f"source:{address}"


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        """``rate_per_s`` 0 means unlimited (the local network's benchmarks)."""
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str, now: float, spend: bool = True) -> float | None:
        """Take a token for ``key`` (with ``spend=False`` only look): None when there is
        one, else seconds until one is back."""
        if self.rate_per_s <= 0:
            return None
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate_per_s)
            allowed = tokens >= 1.0
            if spend:
                self._buckets.pop(key, None)
                self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate_per_s

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
