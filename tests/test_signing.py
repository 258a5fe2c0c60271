"""Pure-core tests of request signatures and the server's checks."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair

from idlegrid.core import signing
from idlegrid.errors import (
    BadSignature,
    MissingSignature,
    ReplayedRequest,
    StaleRequest,
    WrongNetwork,
)
from idlegrid.server.auth import NonceStore, authenticate

NOW = 1_800_000_000.0
NETWORK = "idlegrid:test"


def signed_headers(
    kp: Keypair,
    method: str,
    path: str,
    body: bytes,
    ts: float,
    nonce: str = "n" * 20,
    network: str = NETWORK,
) -> dict[str, str]:
    message = signing.signing_message(network, method, path, body, str(int(ts)), nonce)
    return {
        signing.HEADER_KEY: str(kp.pubkey()),
        signing.HEADER_TIMESTAMP: str(int(ts)),
        signing.HEADER_NONCE: nonce,
        signing.HEADER_SIGNATURE: str(kp.sign_message(message)),
    }


def check(
    headers: dict[str, str],
    body: bytes = b"{}",
    path: str = "/v1/x",
    now: float = NOW,
    nonces: NonceStore | None = None,
) -> str:
    store = NonceStore(120) if nonces is None else nonces
    return authenticate(headers, "POST", path, body, now, 60, store, NETWORK)


def test_a_good_signature_names_its_signer() -> None:
    kp = Keypair()
    assert check(signed_headers(kp, "POST", "/v1/x", b"{}", NOW)) == str(kp.pubkey())


def test_the_message_binds_every_part() -> None:
    base = (NETWORK, "POST", "/v1/x", b"{}", "1", "n" * 20)
    messages = {signing.signing_message(*base)}
    for i, other in enumerate(("idlegrid:other", "GET", "/v1/y", b"{ }", "2", "m" * 20)):
        messages.add(signing.signing_message(*base[:i], other, *base[i + 1 :]))  # type: ignore[arg-type]
    assert len(messages) == 7


def test_a_request_signed_for_another_network_is_refused() -> None:
    kp = Keypair()
    elsewhere = signed_headers(kp, "POST", "/v1/x", b"{}", NOW, network="idlegrid:staging")
    with pytest.raises(BadSignature) as refused:  # as an attacker replays it: no header
        check({k: v for k, v in elsewhere.items() if k != signing.HEADER_NETWORK})
    assert refused.value.details["network"] == NETWORK
    assert refused.value.details["scheme"] == signing.SCHEME
    with pytest.raises(WrongNetwork) as named:  # as the SDK sends it: the header says so
        check({**elsewhere, signing.HEADER_NETWORK: "idlegrid:staging"})
    assert named.value.details == {"network": NETWORK, "signed_for": "idlegrid:staging"}


def test_forged_signature_is_refused() -> None:
    device, forger = Keypair(), Keypair()
    headers = signed_headers(forger, "POST", "/v1/x", b"{}", NOW)
    headers[signing.HEADER_KEY] = str(device.pubkey())  # claims to be the device
    with pytest.raises(BadSignature):
        check(headers)


@pytest.mark.parametrize("field", ["body", "path"])
def test_altered_request_is_refused(field: str) -> None:
    headers = signed_headers(Keypair(), "POST", "/v1/x", b"{}", NOW)
    with pytest.raises(BadSignature):
        check(headers, **({"body": b'{"a":1}'} if field == "body" else {"path": "/v1/y"}))


def test_garbage_headers_are_refused_not_crashed() -> None:
    headers = signed_headers(Keypair(), "POST", "/v1/x", b"{}", NOW)
    for key, value in [
        (signing.HEADER_KEY, "not-a-key"),
        (signing.HEADER_SIGNATURE, "xx"),
        (signing.HEADER_TIMESTAMP, "soon"),
        (signing.HEADER_NONCE, "short"),
    ]:
        with pytest.raises((BadSignature, StaleRequest)):
            check({**headers, key: value})


def test_missing_headers() -> None:
    with pytest.raises(MissingSignature):
        check({})


@pytest.mark.parametrize("skew", [-61, 61, 3600])
def test_stale_timestamp_is_refused(skew: float) -> None:
    headers = signed_headers(Keypair(), "POST", "/v1/x", b"{}", NOW + skew)
    with pytest.raises(StaleRequest):
        check(headers)


def test_replayed_nonce_is_refused_and_store_forgets_old_nonces() -> None:
    kp = Keypair()
    store = NonceStore(retention_s=120)
    headers = signed_headers(kp, "POST", "/v1/x", b"{}", NOW)
    check(headers, nonces=store)
    with pytest.raises(ReplayedRequest):
        check(headers, nonces=store)
    # Another signer may use the same nonce.
    check(signed_headers(Keypair(), "POST", "/v1/x", b"{}", NOW), nonces=store)
    store.claim("someone", "z" * 20, NOW + 500)  # expires everything older than 380 s
    assert len(store) == 1


def test_owner_attestation_is_device_specific() -> None:
    owner = Keypair()
    sig = str(owner.sign_message(signing.owner_attestation_message(NETWORK, "A" * 44)))
    owner_key = str(owner.pubkey())
    attests = signing.owner_attestation_message
    assert signing.verify_signature(owner_key, sig, attests(NETWORK, "A" * 44))
    assert not signing.verify_signature(owner_key, sig, attests(NETWORK, "B" * 44))
    assert not signing.verify_signature(owner_key, sig, attests("idlegrid:other", "A" * 44))
