"""Request signatures: what a device or owner signs, and how it is checked.

Every agent and owner request carries four headers, and may carry a fifth::

    X-Idlegrid-Key        the signer's Ed25519 public key (base58)
    X-Idlegrid-Timestamp  Unix seconds, as an integer string
    X-Idlegrid-Nonce      16-64 characters from [A-Za-z0-9_-], unique per request
    X-Idlegrid-Signature  Ed25519 signature (base58) over signing_message(...)
    X-Idlegrid-Network    the network it was signed for (optional: for a clear error)

The signed message binds the network (a deployment's identifier, served at
``/healthz``), the method, the path with its query string, the SHA-256 of the
body, the timestamp and the nonce, so a captured request cannot be replayed (the
nonce), delayed (the timestamp), altered (everything else) or taken to another
deployment (the network). The first line names the scheme: whenever what is
signed changes, the scheme changes (``idlegrid-v1`` did not bind the network).
The server keeps nonces for twice the allowed clock skew; older requests are
refused as stale, so the nonce store stays bounded.
"""

from __future__ import annotations

import hashlib
import re

from solders.pubkey import Pubkey
from solders.signature import Signature

SCHEME = "idlegrid-v2"
HEADER_KEY = "X-Idlegrid-Key"
HEADER_TIMESTAMP = "X-Idlegrid-Timestamp"
HEADER_NONCE = "X-Idlegrid-Nonce"
HEADER_SIGNATURE = "X-Idlegrid-Signature"
HEADER_NETWORK = "X-Idlegrid-Network"
# A large upload declares its body's SHA-256 here, so that its signature is checked
# against the declared digest before the body is read, and the body against the
# digest as it streams in (the speed test's upload).
HEADER_CONTENT_SHA256 = "X-Idlegrid-Content-Sha256"
SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")
SIGNATURE_HEADERS = (HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# Unix seconds in ASCII digits only: int() would also take "+1", " 1", "1_0" and
# other scripts' digits, so one instant would have many signed spellings.
TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")


def signing_message(
    network: str, method: str, path: str, body: bytes, timestamp: str, nonce: str
) -> bytes:
    """The exact bytes a request's signature covers."""
    return digest_message(network, method, path, hashlib.sha256(body).hexdigest(), timestamp, nonce)


def digest_message(
    network: str, method: str, path: str, body_sha256: str, timestamp: str, nonce: str
) -> bytes:
    """``signing_message`` from the body's SHA-256 (hex): for a body checked as it streams."""
    fields = [SCHEME, network, method.upper(), path, body_sha256, timestamp, nonce]
    return "\n".join(fields).encode()


def owner_attestation_message(network: str, device_id: str) -> bytes:
    """What an owner signs to accept a device into their account on ``network``."""
    return f"{SCHEME}\n{network}\nowner-attests\n{device_id}".encode()


def network_id(authority_pubkey: str) -> str:
    """A deployment's default network identifier: its authority key is its own."""
    return f"idlegrid:{authority_pubkey}"


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
    """The skew in seconds when it is within the limit, otherwise None (also for a
    timestamp that is not ASCII digits, ``TIMESTAMP_RE``)."""
    if TIMESTAMP_RE.fullmatch(timestamp) is None:
        return None
    ts = int(timestamp)
    skew = abs(now - ts)
    return skew if skew <= max_skew_s else None
