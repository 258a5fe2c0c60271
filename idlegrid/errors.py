"""One exception tree for the server, the agent and the SDK.

Every error carries a machine-readable ``code``, the HTTP status the API maps it
to, and structured ``details``. The server turns an error into a JSON body
``{"code", "message", "details"}``; the SDK turns that body back into the same
class, so callers on both sides catch the same exceptions::

    IdlegridError
    ├── InvalidRequest (400/422)        invalid_request, payload_too_large (413)
    │   ├── PayloadTooLarge
    │   ├── InvalidAmount               invalid_amount
    │   ├── BadNodeAddress              bad_node_address (details: node_ip, source, reason)
    │   ├── StakeBelowMinimum           stake_below_minimum (details: minimum, stake)
    │   └── AssetMismatch               asset_mismatch
    ├── AuthenticationError (401)       the request is not provably from its signer
    │   ├── MissingSignature            missing_signature
    │   ├── BadSignature                bad_signature (details: scheme, network)
    │   ├── WrongNetwork                wrong_network (signed for another deployment)
    │   ├── InvalidApiKey               invalid_api_key
    │   ├── StaleRequest                stale_request (clock skew over the limit)
    │   └── ReplayedRequest             replayed_request (nonce seen before)
    ├── PermissionDenied (403)          the signer may not act on this resource
    │   └── NotYourDevice               not_your_device
    ├── NotFound (404)
    │   ├── UnknownDevice               unknown_device
    │   ├── UnknownAccount              unknown_account
    │   ├── UnknownChallenge            unknown_challenge
    │   ├── UnknownQuote                unknown_quote
    │   ├── UnknownApiKey               unknown_api_key
    │   └── UnknownCluster              unknown_cluster
    ├── Conflict (409)
    │   ├── InvalidTransition           invalid_transition
    │   ├── InsufficientFunds           insufficient_funds
    │   ├── TransferExists              transfer_exists (same id, other fields)
    │   ├── PendingTransferClosed       pending_transfer_closed
    │   ├── CoStakeLimit                costake_limit (co-stakes over half the stake)
    │   ├── CoStakeExists               costake_exists
    │   ├── NothingToClaim              nothing_to_claim (details: wallet, claimed_through)
    │   ├── ChallengeClosed             challenge_closed (a replayed or early step)
    │   ├── NoMatchingDevices           no_matching_devices (details: explain per filter)
    │   ├── QuoteExpired (410)          quote_expired
    │   ├── QuoteUsed                   quote_used
    │   ├── ClusterNotActive            cluster_not_active
    │   └── DeviceTerminated (410)      device_terminated
    ├── RateLimited (429)               rate_limited (details: limit, retry_after_s)
    ├── RequestTimeout (408)            request_timeout (the body came too slowly)
    ├── Unavailable (503)               unavailable (server not ready)
    ├── InternalError (500)             internal (a bug: logged on the server)
    ├── TransportError                  the SDK could not reach the server (no status)
    └── SandboxUnavailable              sandbox_unavailable (agent-side: no backend runs here)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class IdlegridError(Exception):
    """Base of every idlegrid error. ``code`` is stable; ``message`` is for people."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.__class__.__doc__ or self.code
        self.details: dict[str, Any] = details
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidRequest(IdlegridError):
    """The request is malformed or its values are out of range."""

    code = "invalid_request"
    http_status = 422

    @classmethod
    def from_validation(cls, errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
        """From pydantic's ``errors()``: where and what, never the input itself."""
        summary = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in errors[:20]
        ]
        return cls("the request is invalid", errors=summary)


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the server accepts."""

    code = "payload_too_large"
    http_status = 413


class BadNodeAddress(InvalidRequest):
    """A head named an address its workers and buyer must not be sent to
    (``core/addresses.py``)."""

    code = "bad_node_address"


class InvalidAmount(InvalidRequest):
    """The amount is not a positive integer of the smallest unit, or the transfer is malformed."""

    code = "invalid_amount"


class StakeBelowMinimum(InvalidRequest):
    """A device's stake must reach its minimum: 200 IO × max(1, multiplier) × processors."""

    code = "stake_below_minimum"


class AssetMismatch(InvalidRequest):
    """The transfer's asset is not the account's asset."""

    code = "asset_mismatch"


class AuthenticationError(IdlegridError):
    """The request is not provably from the key it names."""

    code = "unauthenticated"
    http_status = 401


class MissingSignature(AuthenticationError):
    """The request lacks one of the signature headers."""

    code = "missing_signature"


class BadSignature(AuthenticationError):
    """The signature does not verify against the named key."""

    code = "bad_signature"


class WrongNetwork(AuthenticationError):
    """The request was signed for another network (deployment) than this one."""

    code = "wrong_network"


class InvalidApiKey(AuthenticationError):
    """The API key is unknown or revoked."""

    code = "invalid_api_key"


class StaleRequest(AuthenticationError):
    """The request's timestamp is too far from the server's clock."""

    code = "stale_request"


class ReplayedRequest(AuthenticationError):
    """The request's nonce has been seen before."""

    code = "replayed_request"


class PermissionDenied(IdlegridError):
    """The signer may not act on this resource."""

    code = "permission_denied"
    http_status = 403


class NotYourDevice(PermissionDenied):
    """The signer is neither the device nor its owner."""

    code = "not_your_device"


class NotFound(IdlegridError):
    """No such resource."""

    code = "not_found"
    http_status = 404


class UnknownDevice(NotFound):
    """No device is registered under this id."""

    code = "unknown_device"


class UnknownAccount(NotFound):
    """No such ledger account."""

    code = "unknown_account"


class UnknownChallenge(NotFound):
    """No such challenge for this device."""

    code = "unknown_challenge"


class UnknownQuote(NotFound):
    """No such quote."""

    code = "unknown_quote"


class UnknownApiKey(NotFound):
    """No such API key among the signer's own."""

    code = "unknown_api_key"


class UnknownCluster(NotFound):
    """No such cluster (or not yours)."""

    code = "unknown_cluster"


class Conflict(IdlegridError):
    """The request conflicts with the resource's current state."""

    code = "conflict"
    http_status = 409


class InvalidTransition(Conflict):
    """The device cannot make this change from its current status."""

    code = "invalid_transition"


class InsufficientFunds(Conflict):
    """The debit account cannot cover the amount (pending debits count against it)."""

    code = "insufficient_funds"


class TransferExists(Conflict):
    """A transfer with this id was recorded with different fields."""

    code = "transfer_exists"


class PendingTransferClosed(Conflict):
    """The pending transfer does not exist, or was already posted or voided."""

    code = "pending_transfer_closed"


class CoStakeLimit(Conflict):
    """Co-stakes would cover more than half of the device's stake, or a device has as
    many co-stakers as it may (``staking.MAX_COSTAKERS``)."""

    code = "costake_limit"


class CoStakeExists(Conflict):
    """This staker already co-stakes this device, or is its owner."""

    code = "costake_exists"


class NothingToClaim(Conflict):
    """No reward has been credited to this wallet since its last claim."""

    code = "nothing_to_claim"


class ChallengeClosed(Conflict):
    """The challenge is not at the step this request is for (a replay, or out of order)."""

    code = "challenge_closed"


class NoMatchingDevices(Conflict):
    """Not enough devices match the request; ``explain`` says how many each filter left."""

    code = "no_matching_devices"


class QuoteExpired(Conflict):
    """The quote has expired: ask for a new one."""

    code = "quote_expired"
    http_status = 410


class QuoteUsed(Conflict):
    """The quote has already paid for a cluster."""

    code = "quote_used"


class ClusterNotActive(Conflict):
    """The cluster has ended; it cannot be changed."""

    code = "cluster_not_active"


class DeviceTerminated(Conflict):
    """The device was terminated by its owner and can no longer act."""

    code = "device_terminated"
    http_status = 410


class RateLimited(IdlegridError):
    """Too many requests of this kind from this source or owner; retry later."""

    code = "rate_limited"
    http_status = 429


class RequestTimeout(IdlegridError):
    """The request's body did not arrive within the server's time limit; send it again."""

    code = "request_timeout"
    http_status = 408


class Unavailable(IdlegridError):
    """The server cannot serve this request right now; retry later."""

    code = "unavailable"
    http_status = 503


class InternalError(IdlegridError):
    """The server failed unexpectedly; the failure is logged there."""

    code = "internal"
    http_status = 500


class TransportError(IdlegridError):
    """The server could not be reached."""

    code = "transport_error"
    http_status = 0


class SandboxUnavailable(IdlegridError):
    """This machine cannot run buyers' work in a sandbox (said at ``worker start``)."""

    code = "sandbox_unavailable"
    http_status = 0


def _all_subclasses(cls: type[IdlegridError]) -> list[type[IdlegridError]]:
    out: list[type[IdlegridError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_ALL_ERRORS: list[type[IdlegridError]] = [IdlegridError, *_all_subclasses(IdlegridError)]
ERRORS_BY_CODE: dict[str, type[IdlegridError]] = {cls.code: cls for cls in _ALL_ERRORS}


def error_from_body(status: int, body: Any) -> IdlegridError:
    """Rebuild the error a server sent. Unknown codes fall back on the status class."""
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        cls = ERRORS_BY_CODE.get(body["code"])
        if cls is None:
            cls = next((c for c in _STATUS_FALLBACK if c.http_status == status), IdlegridError)
        raw = body.get("details")
        details: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return cls(str(body.get("message") or body["code"]), **details)
    return IdlegridError(f"HTTP {status}: {str(body)[:200]}", status=status)


_STATUS_FALLBACK: list[type[IdlegridError]] = [
    InvalidRequest,
    AuthenticationError,
    PermissionDenied,
    NotFound,
    Conflict,
    Unavailable,
]
