"""Checking signed requests: signature, clock skew and replayed nonces.

The nonce store is in memory and bounded by time: a nonce is kept for twice the
allowed skew, after which its request would be refused as stale anyway. It
lives in the one control-plane process that serves agents; sharding agents
across processes shards the store with them (see docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping

from idlegrid.core import signing
from idlegrid.errors import (
    BadSignature,
    MissingSignature,
    ReplayedRequest,
    StaleRequest,
    WrongNetwork,
)


class NonceStore:
    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, signer: str, nonce: str, now: float) -> bool:
        """True the first time (signer, nonce) is seen within the retention window."""
        key = (signer, nonce)
        with self._lock:
            self._expire(now)
            if key in self._seen:
                return False
            self._seen[key] = now
            return True

    def _expire(self, now: float) -> None:
        horizon = now - self.retention_s
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if seen >= horizon:
                break
            del self._seen[key]


def precheck(
    headers: Mapping[str, str], now: float, max_skew_s: float, network: str
) -> tuple[str, str, str, str]:
    """What can be checked before the body is read: the headers are there and well
    formed, the timestamp is fresh, the network is this one. Returns (signer,
    timestamp, nonce, signature), or raises the AuthenticationError that says why not,
    so that a request that cannot verify costs no body read."""
    values = {h: headers.get(h) for h in signing.SIGNATURE_HEADERS}
    missing = [h for h, v in values.items() if not v]
    if missing:
        raise MissingSignature(missing=", ".join(missing))
    signer = values[signing.HEADER_KEY] or ""
    timestamp = values[signing.HEADER_TIMESTAMP] or ""
    nonce = values[signing.HEADER_NONCE] or ""
    signature = values[signing.HEADER_SIGNATURE] or ""
    if not signing.NONCE_RE.match(nonce):
        raise BadSignature("the nonce must be 16-64 characters of [A-Za-z0-9_-]")
    if signing.TIMESTAMP_RE.fullmatch(timestamp) is None:
        raise BadSignature("the timestamp must be Unix seconds in ASCII digits")
    signed_for = headers.get(signing.HEADER_NETWORK)
    if signed_for is not None and signed_for != network:
        raise WrongNetwork(network=network, signed_for=signed_for[:100])
    if signing.check_timestamp(timestamp, now, max_skew_s) is None:
        raise StaleRequest(timestamp=timestamp, server_time=int(now), max_skew_s=max_skew_s)
    return signer, timestamp, nonce, signature


def authenticate(
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    now: float,
    max_skew_s: float,
    nonces: NonceStore,
    network: str,
) -> str:
    """The signer's public key, or an AuthenticationError saying what is wrong.
    ``network`` is this deployment's identifier: every signature covers it."""
    return authenticate_digest(
        headers, method, path, hashlib.sha256(body).hexdigest(), now, max_skew_s, nonces, network
    )


def authenticate_digest(
    headers: Mapping[str, str],
    method: str,
    path: str,
    body_sha256: str,
    now: float,
    max_skew_s: float,
    nonces: NonceStore,
    network: str,
) -> str:
    """``authenticate`` given the body's SHA-256 (hex), for a body hashed as it streams
    in rather than held (the speed test's upload)."""
    signer, timestamp, nonce, signature = precheck(headers, now, max_skew_s, network)
    message = signing.digest_message(network, method, path, body_sha256, timestamp, nonce)
    if not signing.verify_signature(signer, signature, message):
        raise BadSignature(signer=signer, scheme=signing.SCHEME, network=network)
    if not nonces.claim(signer, nonce, now):
        raise ReplayedRequest(nonce=nonce)
    return signer
