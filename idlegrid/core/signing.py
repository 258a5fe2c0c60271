"""Request signatures: what a device or owner signs, and how it is checked.

Every agent and owner request carries four headers::

    X-Idlegrid-Key        the signer's Ed25519 public key (base58)
    X-Idlegrid-Timestamp  Unix seconds, as an integer string
    X-Idlegrid-Nonce      16-64 characters from [A-Za-z0-9_-], unique per request
    X-Idlegrid-Signature  Ed25519 signature (base58) over signing_message(...)

The signed message binds the method, the path with its query string, the
SHA-256 of the body, the timestamp and the nonce, so a captured request cannot
be replayed (the nonce), delayed (the timestamp) or altered (everything else).
The server keeps nonces for twice the allowed clock skew; older requests are
refused as stale, so the nonce store stays bounded.
"""

from __future__ import annotations

import hashlib
import re

from solders.pubkey import Pubkey
from solders.signature import Signature

SCHEME = "idlegrid-v1"
HEADER_KEY = "X-Idlegrid-Key"
HEADER_TIMESTAMP = "X-Idlegrid-Timestamp"
HEADER_NONCE = "X-Idlegrid-Nonce"
HEADER_SIGNATURE = "X-Idlegrid-Signature"
SIGNATURE_HEADERS = (HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def signing_message(method: str, path: str, body: bytes, timestamp: str, nonce: str) -> bytes:
    """The exact bytes a request's signature covers."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([SCHEME, method.upper(), path, digest, timestamp, nonce]).encode()


def owner_attestation_message(device_id: str) -> bytes:
    """What an owner signs to accept a device into their account."""
    return f"{SCHEME}\nowner-attests\n{device_id}".encode()


def parse_pubkey(text: str) -> Pubkey | None:
    try:
        return Pubkey.from_string(text)
    except ValueError:
        return None


def verify_signature(pubkey: str, signature: str, message: bytes) -> bool:
    """True when ``signature`` (base58) is ``pubkey``'s signature over ``message``."""
    key = parse_pubkey(pubkey)
    if key is None:
        return False
    try:
        sig = Signature.from_string(signature)
    except ValueError:
        return False
    return bool(sig.verify(key, message))


def check_timestamp(timestamp: str, now: float, max_skew_s: float) -> float | None:
    """The skew in seconds when it is within the limit, otherwise None."""
    try:
        ts = int(timestamp)
    except ValueError:
        return None
    skew = abs(now - ts)
    return skew if skew <= max_skew_s else None
