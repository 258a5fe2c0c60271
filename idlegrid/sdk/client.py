"""``Client``: the control plane over HTTP, for buyers, owners, agents and the CLI.

The client talks to an httpx transport, so tests point it at the app in-process
(``httpx.ASGITransport``) and nothing is monkeypatched. Requests that need a
signature (device and owner actions) are signed by ``KeypairAuth`` with the
Ed25519 keypair given to the client. Errors come back as the server's own
exception classes (``idlegrid.errors``); a server that cannot be reached raises
``TransportError``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar, overload

import httpx
from pydantic import BaseModel, TypeAdapter
from solders.keypair import Keypair

from idlegrid.core import signing
from idlegrid.errors import TransportError, error_from_body
from idlegrid.protocol import (
    ApiKeyCreate,
    ApiKeyList,
    ApiKeyView,
    AppealRequest,
    Assignment,
    AuditView,
    BlockList,
    BlockView,
    ChallengeSpec,
    ClusterCreate,
    ClusterList,
    ClusterView,
    CommitRequest,
    CommitResponse,
    ConnectivityReport,
    ConnectivityView,
    DecisionRequest,
    DeployRequest,
    DepositsView,
    DeviceDetail,
    DeviceFloor,
    DeviceList,
    DeviceView,
    ExtendRequest,
    FaucetRequest,
    FloorRequest,
    Health,
    HeartbeatRequest,
    HeartbeatResponse,
    HistoryView,
    OverlayAssignment,
    OverlayInfo,
    OverlayPeerRequest,
    PriceList,
    ProofList,
    ProofView,
    QuoteView,
    RayNodeReport,
    RegisterRequest,
    RevealRequest,
    RewardBalance,
    RewardClaimView,
    RewardList,
    SeasonCreate,
    SeasonList,
    SeasonView,
    ShareRequest,
    SlashList,
    SlashRequest,
    SlashView,
    StakeAmount,
    StakeView,
    SupplyView,
    WalletView,
    WithdrawalView,
    WithdrawRequest,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class KeypairAuth(httpx.Auth):
    """Signs every request with an Ed25519 keypair (see core/signing.py)."""

    requires_request_body = True

    def __init__(
        self, keypair: Keypair, clock: Callable[[], float] = time.time, network: str | None = None
    ) -> None:
        self.keypair = keypair
        self.pubkey = str(keypair.pubkey())
        self.clock = clock
        self.network = network  # the client fills it from /healthz before the first use

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        assert self.network is not None
        sign_request(request, self.keypair, self.clock(), self.network)
        yield request


def sign_request(
    request: httpx.Request,
    keypair: Keypair,
    now: float,
    network: str,
    nonce: str | None = None,
) -> None:
    """Add the signature headers to ``request`` (its body must be read), signed for
    ``network`` (the server's, from ``/healthz``)."""
    timestamp = str(int(now))
    nonce = nonce or secrets.token_urlsafe(18)
    target = request.url.raw_path.decode("ascii")
    message = signing.signing_message(
        network, request.method, target, request.content, timestamp, nonce
    )
    request.headers[signing.HEADER_NETWORK] = network
    request.headers[signing.HEADER_KEY] = str(keypair.pubkey())
    request.headers[signing.HEADER_TIMESTAMP] = timestamp
    request.headers[signing.HEADER_NONCE] = nonce
    request.headers[signing.HEADER_SIGNATURE] = str(keypair.sign_message(message))


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        keypair: Keypair | None = None,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        network: str | None = None,
    ) -> None:
        """``transport`` or a whole ``http`` client (e.g. Starlette's TestClient,
        which runs the app in-process) replace the network. Buyer calls use
        ``api_key`` when given, else the keypair's signature."""
        self.keypair = keypair
        self.api_key = api_key
        self._auth = KeypairAuth(keypair, clock, network) if keypair is not None else None
        self._network = network
        self._http = http or httpx.Client(base_url=base_url, transport=transport, timeout=timeout_s)

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- system --------------------------------------------------------------------

    def health(self) -> Health:
        return self._call("GET", "/healthz", Health)

    def network(self) -> str:
        """The network this server is (what every signature names); asked once."""
        if self._network is None:
            self._network = self.health().network
        return self._network

    # -- devices: the agent's side (signed by the device key) ------------------------

    def register_device(self, req: RegisterRequest) -> DeviceView:
        return self._call("POST", "/v1/devices", DeviceView, json=req, signed=True)

    def heartbeat(self, device_id: str, req: HeartbeatRequest | None = None) -> HeartbeatResponse:
        body = req or HeartbeatRequest()
        path = f"/v1/devices/{device_id}/heartbeat"
        return self._call("POST", path, HeartbeatResponse, json=body, signed=True)

    # -- devices: the owner's side (signed by the owner key) --------------------------

    def pause_device(self, device_id: str) -> DeviceView:
        return self._call("POST", f"/v1/devices/{device_id}/pause", DeviceView, signed=True)

    def resume_device(self, device_id: str) -> DeviceView:
        return self._call("POST", f"/v1/devices/{device_id}/resume", DeviceView, signed=True)

    def terminate_device(self, device_id: str) -> DeviceView:
        return self._call("POST", f"/v1/devices/{device_id}/terminate", DeviceView, signed=True)

    # -- proofs of compute and connectivity (signed by the device key) ---------------------

    def fetch_challenge(self, device_id: str, challenge_id: str) -> ChallengeSpec:
        path = f"/v1/devices/{device_id}/challenges/{challenge_id}"
        return self._call("GET", path, ChallengeSpec, signed=True)

    def commit_challenge(
        self, device_id: str, challenge_id: str, req: CommitRequest
    ) -> CommitResponse | ProofView:
        """The checks to open, or the failed proof when the server refused the commitment."""
        path = f"/v1/devices/{device_id}/challenges/{challenge_id}/commit"
        return self._call("POST", path, _COMMIT_ANSWER, json=req, signed=True)

    def reveal_challenge(self, device_id: str, challenge_id: str, req: RevealRequest) -> ProofView:
        path = f"/v1/devices/{device_id}/challenges/{challenge_id}/reveal"
        return self._call("POST", path, ProofView, json=req, signed=True)

    def report_connectivity(self, device_id: str, req: ConnectivityReport) -> ConnectivityView:
        path = f"/v1/devices/{device_id}/connectivity"
        return self._call("POST", path, ConnectivityView, json=req, signed=True)

    def speedtest_download(self, nbytes: int) -> int:
        """Download ``nbytes`` of noise; returns how many arrived."""
        params = {"bytes": str(nbytes)}
        return len(self._raw("GET", "/v1/speedtest", params=params, signed=True).content)

    def speedtest_upload(self, payload: bytes) -> None:
        digest = {signing.HEADER_CONTENT_SHA256: hashlib.sha256(payload).hexdigest()}
        self._raw("POST", "/v1/speedtest", content=payload, headers=digest, signed=True)

    # -- wallets (money moves only when signed by the wallet's key) --------------------

    def wallet(self, pubkey: str) -> WalletView:
        return self._call("GET", f"/v1/wallets/{pubkey}", WalletView)

    def sweep_deposits(self, pubkey: str) -> DepositsView:
        return self._call("POST", f"/v1/wallets/{pubkey}/deposits", DepositsView, signed=True)

    def withdraw(self, pubkey: str, req: WithdrawRequest) -> WithdrawalView:
        path = f"/v1/wallets/{pubkey}/withdrawals"
        return self._call("POST", path, WithdrawalView, json=req, signed=True)

    def faucet(self, pubkey: str, req: FaucetRequest) -> WalletView:
        path = f"/v1/wallets/{pubkey}/faucet"
        return self._call("POST", path, WalletView, json=req, signed=True)

    def wallet_history(self, pubkey: str) -> HistoryView:
        return self._call("GET", f"/v1/wallets/{pubkey}/history", HistoryView)

    def token_supply(self) -> SupplyView:
        return self._call("GET", "/v1/token/supply", SupplyView)

    def ledger_audit(self) -> AuditView:
        return self._call("GET", "/v1/ledger/audit", AuditView)

    # -- IO Cloud: buyers (API key or wallet signature) ------------------------------------

    def create_api_key(self, name: str = "default") -> ApiKeyView:
        return self._call(
            "POST", "/v1/api-keys", ApiKeyView, json=ApiKeyCreate(name=name), signed=True
        )

    def api_keys(self) -> ApiKeyList:
        return self._call("GET", "/v1/api-keys", ApiKeyList, signed=True)

    def revoke_api_key(self, key_id: str) -> ApiKeyView:
        return self._call("DELETE", f"/v1/api-keys/{key_id}", ApiKeyView, signed=True)

    def quote(self, req: DeployRequest) -> QuoteView:
        return self._call("POST", "/v1/quotes", QuoteView, json=req, buyer=True)

    def deploy(self, quote_id: str) -> ClusterView:
        body = ClusterCreate(quote_id=quote_id)
        return self._call("POST", "/v1/clusters", ClusterView, json=body, buyer=True)

    def list_clusters(self, active: bool = False) -> ClusterList:
        params = {"active": "true"} if active else None
        return self._call("GET", "/v1/clusters", ClusterList, params=params, buyer=True)

    def get_cluster(self, cluster_id: str) -> ClusterView:
        return self._call("GET", f"/v1/clusters/{cluster_id}", ClusterView, buyer=True)

    def extend_cluster(self, cluster_id: str, req: ExtendRequest) -> ClusterView:
        path = f"/v1/clusters/{cluster_id}/extend"
        return self._call("POST", path, ClusterView, json=req, buyer=True)

    def terminate_cluster(self, cluster_id: str) -> ClusterView:
        path = f"/v1/clusters/{cluster_id}/terminate"
        return self._call("POST", path, ClusterView, buyer=True)

    def join_overlay(self, cluster_id: str, key: str) -> OverlayAssignment:
        """Admit this buyer's WireGuard key to the cluster's overlay (ask again for
        fresh peer endpoints); ``idlegrid clusters connect`` does the rest."""
        path = f"/v1/clusters/{cluster_id}/peers"
        req = OverlayPeerRequest(key=key)
        return self._call("POST", path, OverlayAssignment, json=req, buyer=True)

    def overlay_info(self) -> OverlayInfo:
        return self._call("GET", "/v1/overlay", OverlayInfo)

    def set_floor(self, device_id: str, usd: str) -> DeviceFloor:
        path = f"/v1/devices/{device_id}/floor"
        return self._call("POST", path, DeviceFloor, json=FloorRequest(usd=usd), signed=True)

    def prices(self) -> PriceList:
        return self._call("GET", "/v1/prices", PriceList)

    def price_history(self, model: str, location: str = "*") -> PriceList:
        params = {"model": model, "location": location}
        return self._call("GET", "/v1/prices/history", PriceList, params=params)

    # -- IO Cloud: hired agents -----------------------------------------------------------

    def report_ray_node(self, device_id: str, req: RayNodeReport) -> Assignment | None:
        path = f"/v1/devices/{device_id}/ray"
        return self._call("POST", path, _ASSIGNMENT, json=req, signed=True)

    # -- staking (signed by the owner or co-staker), blocks, slashes ---------------------

    def get_stake(self, device_id: str) -> StakeView:
        return self._call("GET", f"/v1/devices/{device_id}/stake", StakeView)

    def stake(self, device_id: str, amount: str) -> StakeView:
        path = f"/v1/devices/{device_id}/stake"
        return self._call("POST", path, StakeView, json=StakeAmount(amount=amount), signed=True)

    def unstake(self, device_id: str, amount: str) -> StakeView:
        path = f"/v1/devices/{device_id}/unstake"
        return self._call("POST", path, StakeView, json=StakeAmount(amount=amount), signed=True)

    def withdraw_stake(self, device_id: str) -> StakeView:
        path = f"/v1/devices/{device_id}/stake/withdraw"
        return self._call("POST", path, StakeView, signed=True)

    def set_costake_share(self, device_id: str, share_bps: int) -> StakeView:
        path = f"/v1/devices/{device_id}/stake/share"
        body = ShareRequest(share_bps=share_bps)
        return self._call("POST", path, StakeView, json=body, signed=True)

    def costake(self, device_id: str, amount: str) -> StakeView:
        path = f"/v1/devices/{device_id}/costake"
        return self._call("POST", path, StakeView, json=StakeAmount(amount=amount), signed=True)

    def costake_exit(self, device_id: str) -> StakeView:
        path = f"/v1/devices/{device_id}/costake/exit"
        return self._call("POST", path, StakeView, signed=True)

    def list_blocks(self, limit: int = 50) -> BlockList:
        return self._call("GET", "/v1/blocks", BlockList, params={"limit": str(limit)})

    def get_block(self, number: int) -> BlockView:
        return self._call("GET", f"/v1/blocks/{number}", BlockView)

    def block_document(self, number: int, which: str) -> bytes:
        """A block's published ``inputs`` or ``outputs`` as the exact bytes that were hashed."""
        return self._raw("GET", f"/v1/blocks/{number}/{which}.json").content

    def device_rewards(self, device_id: str) -> RewardList:
        return self._call("GET", f"/v1/devices/{device_id}/rewards", RewardList)

    def reward_balance(self, wallet: str) -> RewardBalance:
        return self._call("GET", f"/v1/wallets/{wallet}/rewards", RewardBalance)

    def claim_rewards(self) -> RewardClaimView:
        """Claim every block reward credited to this client's wallet since its last claim."""
        return self._call("POST", "/v1/rewards/claim", RewardClaimView, signed=True)

    def slashes(self, device_id: str | None = None) -> SlashList:
        params = {"device_id": device_id} if device_id else None
        return self._call("GET", "/v1/slashes", SlashList, params=params)

    def slash(self, device_id: str, reason: str, evidence: str = "") -> SlashView:
        body = SlashRequest(device_id=device_id, reason=reason, evidence=evidence)  # type: ignore[arg-type]
        return self._call("POST", "/v1/slashes", SlashView, json=body, signed=True)

    def appeal_slash(self, slash_id: str, text: str) -> SlashView:
        path = f"/v1/slashes/{slash_id}/appeal"
        return self._call("POST", path, SlashView, json=AppealRequest(text=text), signed=True)

    def decide_slash(self, slash_id: str, accept: bool) -> SlashView:
        path = f"/v1/slashes/{slash_id}/decision"
        body = DecisionRequest(accept=accept)
        return self._call("POST", path, SlashView, json=body, signed=True)

    def create_season(self, req: SeasonCreate) -> SeasonView:
        return self._call("POST", "/v1/seasons", SeasonView, json=req, signed=True)

    def seasons(self) -> SeasonList:
        return self._call("GET", "/v1/seasons", SeasonList)

    def get_season(self, season_id: str) -> SeasonView:
        return self._call("GET", f"/v1/seasons/{season_id}", SeasonView)

    # -- devices: public reads -----------------------------------------------------------

    def list_devices(self, **filters: Any) -> DeviceList:
        params = {k: str(v) for k, v in filters.items() if v is not None}
        return self._call("GET", "/v1/devices", DeviceList, params=params)

    def get_device(self, device_id: str) -> DeviceDetail:
        return self._call("GET", f"/v1/devices/{device_id}", DeviceDetail)

    def proofs(self, device_id: str) -> ProofList:
        return self._call("GET", f"/v1/devices/{device_id}/proofs", ProofList)

    # -- plumbing ------------------------------------------------------------------------

    def _raw(
        self,
        method: str,
        path: str,
        *,
        content: bytes = b"",
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        signed: bool = False,
        buyer: bool = False,
    ) -> httpx.Response:
        if buyer and self.api_key:
            headers = {**(headers or {}), "authorization": f"Bearer {self.api_key}"}
        elif buyer:
            signed = True
        if signed and self._auth is None:
            raise ValueError("this call must be signed: give the client a keypair")
        if signed and self._auth is not None and self._auth.network is None:
            self._auth.network = self.network()
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                params=params,
                headers=headers,
                auth=self._auth if signed else None,
            )
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach the server: {exc}") from exc
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_from_body(response.status_code, body)
        return response

    @overload
    def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        json: BaseModel | None = None,
        params: dict[str, str] | None = None,
        signed: bool = False,
        buyer: bool = False,
    ) -> M: ...

    @overload
    def _call(
        self,
        method: str,
        path: str,
        model: TypeAdapter[T],
        *,
        json: BaseModel | None = None,
        params: dict[str, str] | None = None,
        signed: bool = False,
        buyer: bool = False,
    ) -> T: ...

    def _call(
        self,
        method: str,
        path: str,
        model: type[M] | TypeAdapter[T],
        *,
        json: BaseModel | None = None,
        params: dict[str, str] | None = None,
        signed: bool = False,
        buyer: bool = False,
    ) -> M | T:
        content = json.model_dump_json().encode() if json is not None else b""
        headers = {"content-type": "application/json"} if json is not None else {}
        response = self._raw(
            method,
            path,
            content=content,
            params=params,
            headers=headers,
            signed=signed,
            buyer=buyer,
        )
        if isinstance(model, TypeAdapter):
            return model.validate_json(response.content)
        return model.model_validate_json(response.content)


_ASSIGNMENT: TypeAdapter[Assignment | None] = TypeAdapter(Assignment | None)
_COMMIT_ANSWER: TypeAdapter[CommitResponse | ProofView] = TypeAdapter(CommitResponse | ProofView)
