"""Token buckets, per key, pure (no lock, no clock): what the control plane's rate
limits (``server/ratelimit.py``) and the overlay's hello gates (``core/overlay.py``)
count with.

Each key has a bucket of ``burst`` tokens refilled at ``rate_per_s``; taking one
succeeds or says how long until one is back. Buckets of keys not seen for a while are
forgotten oldest first, so memory stays bounded (``max_keys``) however many sources a
flood comes from: a forgotten key starts again with a full bucket, which costs an
attacker with that many sources nothing it did not have already.

A source is an IPv4 address or an IPv6 /64 (``source_key``): one IPv6 host is
usually given a whole /64, and one bucket per address would give it 2^64 of them.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

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


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        """``rate_per_s`` 0 means unlimited (the local network's benchmarks)."""
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str, now: float, spend: bool = True) -> float | None:
        """Take a token for ``key`` (with ``spend=False`` only look): None when there is
        one, else seconds until one is back."""
        if self.rate_per_s <= 0:
            return None
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate_per_s)
        allowed = tokens >= 1.0
        if spend:
            self._buckets.pop(key, None)
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets
