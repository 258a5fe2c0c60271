"""Wire models shared by the server, the worker agent and the SDK.

Compatibility rules (version 1 of the wire):
- Models ignore unknown fields, so a newer peer may add fields freely.
- A field is only ever added with a default; never renamed, retyped or removed
  within version 1. A change that breaks these rules is a new path prefix (/v2).
- Ids are strings. A device's id is its Ed25519 public key in base58.
- Times are Unix seconds (floats) on the wire.
- Every value must be storable, so a model refuses what a database cannot hold
  rather than letting it reach one: floats are finite (``Infinity``, ``NaN`` and
  ``1e400`` are refused), no string anywhere holds NUL (``\x00``: PostgreSQL's
  text cannot), and request integers have bounds within 64 bits (``INT64_MAX``).
- Amounts are decimal strings in one spelling: ASCII digits with at most one
  ``.`` between digits ("12", "12.5"; ``core/fees.py``).
- A number is a JSON number: ``true`` and ``false`` are refused where an integer
  or a float is expected (Python would take them as 1 and 0).
"""

from __future__ import annotations

import types
import typing
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

PUBKEY_PATTERN = r"^[1-9A-HJ-NP-Za-km-z]{32,44}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"


INT64_MAX = 2**63 - 1  # the largest integer a database's BIGINT (and SPL's u64 / 2) holds


def holds_nul(value: object) -> bool:
    """Whether a string in ``value`` (itself, or in its lists, tuples and dicts, keys
    included) holds NUL. Wire models inside are not searched: they checked themselves."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    return False


class Wire(BaseModel):
    """Base of every wire model: unknown fields are ignored; floats are finite and
    strings free of NUL (see the compatibility rules above)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _numeric_fields(cls):
                if isinstance(data.get(name), bool):
                    raise ValueError(f"{name}: a number is expected, not true or false")
        return data

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        for name, value in self.__dict__.items():
            if holds_nul(value):
                raise ValueError(f"{name}: text may not contain NUL (\\x00)")
        return self


_NUMERIC: dict[type, frozenset[str]] = {}


def _numeric_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that hold an int or a float (optional or not)."""
    found = _NUMERIC.get(model)
    if found is None:
        names = set()
        for name, field in model.model_fields.items():
            kinds = {field.annotation}
            origin = typing.get_origin(field.annotation)
            if origin is typing.Union or origin is types.UnionType:
                kinds = set(typing.get_args(field.annotation))
            if kinds & {int, float} and bool not in kinds:
                names.add(field.alias or name)
        found = _NUMERIC[model] = frozenset(names)
    return found


class DeviceKind(StrEnum):
    GPU = "gpu"
    APPLE = "apple"
    CPU = "cpu"


class DeviceStatus(StrEnum):
    UP = "up"
    DOWN = "down"
    PAUSED = "paused"
    BLOCKED = "blocked"
    UNSUPPORTED = "unsupported"
    INACTIVE = "inactive"
    TERMINATED = "terminated"


class Readiness(StrEnum):
    PENDING = "pending"
    CLUSTER_READY = "cluster_ready"
    HIRED = "hired"
    NOT_REWARD_READY = "not_reward_ready"


class GpuInfo(Wire):
    index: int = Field(ge=0, le=255)
    name: str = Field(min_length=1, max_length=128)
    vram_mb: int = Field(ge=0, le=10_000_000)
    uuid: str | None = Field(default=None, max_length=128)


class HardwareInfo(Wire):
    """What the agent detected on its machine."""

    kind: DeviceKind
    cpu_model: str = Field(max_length=256)
    cpu_cores: int = Field(ge=1, le=4096, description="logical cores")
    cpu_physical_cores: int | None = Field(default=None, ge=1, le=4096)
    ram_mb: int = Field(ge=0, le=1_000_000_000)
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=64)
    gpu_driver: str | None = Field(default=None, max_length=64)
    cuda_version: str | None = Field(default=None, max_length=32)
    apple_chip: str | None = Field(default=None, max_length=64)
    apple_gpu_cores: int | None = Field(default=None, ge=1, le=1024)
    disk_total_gb: float = Field(ge=0, le=1e9)
    disk_free_gb: float = Field(ge=0, le=1e9)
    os: str = Field(max_length=64)
    os_version: str = Field(max_length=256)
    arch: str = Field(max_length=32)


class SandboxInfo(Wire):
    """How a device runs buyers' work (``worker/sandbox.py``). A device whose backend
    is ``none`` is matched only to clusters of its own owner."""

    backend: Literal["bubblewrap", "none"] = "none"
    enforces: list[Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")]] = Field(
        default_factory=list, max_length=32
    )
    reason: str | None = Field(default=None, max_length=256, description="why not, or what not")


class RegisterRequest(Wire):
    """Signed by the device key. ``owner`` defaults to the device itself.

    When ``owner`` names another key, ``owner_signature`` must be that key's
    signature over ``owner_attestation_message(device_id)``, so nobody can file a
    device under an owner who did not agree.
    """

    hardware: HardwareInfo
    name: str | None = Field(default=None, max_length=64)
    location: str | None = Field(default=None, pattern=COUNTRY_PATTERN)
    owner: str | None = Field(default=None, pattern=PUBKEY_PATTERN)
    owner_signature: str | None = Field(default=None, max_length=128)
    agent_version: str = Field(default="unknown", max_length=32)
    sandbox: SandboxInfo = Field(
        default_factory=SandboxInfo, description="an agent that says nothing is unsandboxed"
    )


class HeartbeatRequest(Wire):
    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    gpu_percent: float | None = Field(default=None, ge=0, le=100)
    beat_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="a fresh X25519 public key (hex) made on the device: asks for a beat "
        "session (core/beats.py)",
    )


class BeatOffer(Wire):
    """A beat session: heartbeats as datagrams until it expires (core/beats.py)."""

    session: str = Field(pattern=r"^[0-9a-f]{16}$", description="the session id (hex)")
    server_key: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="the control plane's X25519 key (hex)"
    )
    host: str | None = Field(default=None, description="where to send beats; None: the API's host")
    port: int = Field(ge=1, le=65535, description="the UDP port")
    expires_in_s: float = Field(gt=0, description="how long the session holds")


class HeartbeatResponse(Wire):
    status: DeviceStatus
    interval_s: float
    server_time: float
    challenge_id: str | None = Field(default=None, description="a proof waiting to be fetched")
    assignment: Assignment | None = Field(default=None, description="the cluster to serve")
    beat: BeatOffer | None = Field(default=None, description="the session a beat_key asked for")


class Classification(Wire):
    """How the catalog sees a device's hardware."""

    kind: DeviceKind
    model: str | None = Field(description="catalog key; None means unsupported")
    processors: int = Field(ge=0)
    reason: str | None = Field(default=None, description="why unsupported")


class DeviceView(Wire):
    id: str
    owner: str
    name: str | None
    location: str | None
    status: DeviceStatus
    readiness: Readiness
    kind: DeviceKind
    model: str | None
    processors: int
    hardware: HardwareInfo
    registered_at: float
    last_seen_at: float | None
    uptime_s: float = Field(description="cumulative accounted uptime")
    agent_version: str
    proof_passed_at: float | None = None
    measured_tflops: float | None = None
    tier: int | None = Field(default=None, description="connectivity tier, 0-4")
    sandbox: SandboxInfo = Field(default_factory=SandboxInfo)


class DeviceList(Wire):
    items: list[DeviceView]
    total: int


class UptimeHour(Wire):
    hour: float = Field(description="Unix time of the hour's start")
    seconds: float


class DeviceEventView(Wire):
    at: float
    kind: str
    detail: dict[str, str | float | int | None] = Field(default_factory=dict)


class DeviceDetail(DeviceView):
    uptime_hours: list[UptimeHour] = Field(default_factory=list)
    events: list[DeviceEventView] = Field(default_factory=list)


class ErrorBody(Wire):
    code: str
    message: str
    details: dict[str, object] = Field(default_factory=dict)


class Health(Wire):
    status: Literal["ok"] = "ok"
    version: str
    database: str
    devices_live: int
    network: str = Field(default="", description="the network every signature must name")


# -- proof of compute (see core/proof.py) ---------------------------------------------

HEX32 = r"^[0-9a-f]{64}$"


class ProofStatus(StrEnum):
    ISSUED = "issued"
    FETCHED = "fetched"
    COMMITTED = "committed"
    VERIFIED = "verified"
    FAILED = "failed"


class ChallengeSpec(Wire):
    id: str
    seed: str = Field(description="hex; secret until fetched")
    n: int
    rounds: int
    deadline_s: float = Field(description="seconds from the first fetch to the commitment")
    memory_mb: int = Field(description="memory to hold per processor; 0 for none")


class CommitRequest(Wire):
    root: str = Field(pattern=HEX32)
    prover: str = Field(max_length=32)
    elapsed_s: float = Field(ge=0, le=1e9, description="as the prover measured it (informative)")
    memory: Literal["ok", "out_of_memory"] = "ok"


class MemoryProbe(Wire):
    index: int
    nonce: str


class CommitResponse(Wire):
    checks: list[tuple[int, int]]
    memory_probes: list[MemoryProbe] = Field(default_factory=list)


class OpeningWire(Wire):
    round: int
    row: int
    leaf: list[int] = Field(max_length=1024)
    path: list[str] = Field(max_length=64)


class RevealRequest(Wire):
    openings: list[OpeningWire] = Field(max_length=1024)
    memory_answers: list[str] = Field(default_factory=list, max_length=256)


class ProofView(Wire):
    id: str
    device_id: str
    status: ProofStatus
    reason: str | None
    detail: str | None
    n: int
    rounds: int
    checks: int
    work_flop: float
    claimed_tflops: float
    measured_tflops: float | None
    deadline_s: float
    memory_mb: int
    prover: str | None
    created_at: float
    fetched_at: float | None
    committed_at: float | None
    finished_at: float | None


class ProofList(Wire):
    items: list[ProofView]


class ConnectivityReport(Wire):
    """Measured by the agent against the control plane (self-reported)."""

    latency_ms: float = Field(ge=0, le=60_000)
    download_mbps: float = Field(ge=0, le=1_000_000)
    upload_mbps: float = Field(ge=0, le=1_000_000)


class ConnectivityView(ConnectivityReport):
    tier: int
    tier_name: str


# -- token and ledger ---------------------------------------------------------------------

AssetName = Literal["IO", "USDC"]


class Balance(Wire):
    asset: AssetName
    balance: str = Field(description="whole tokens, exact decimal")
    available: str = Field(description="the balance less pending holds")
    deposit_address: str


class WalletView(Wire):
    owner: str
    balances: list[Balance]
    deposit_wallet: str = Field(
        default="", description="owner of the deposit addresses: send tokens to this wallet"
    )


class WithdrawRequest(Wire):
    id: str = Field(min_length=1, max_length=64, description="yours: a retry reuses it")
    asset: AssetName
    amount: str = Field(max_length=40, description='whole tokens, e.g. "12.5"')


class WithdrawalView(Wire):
    transfer_id: str
    asset: AssetName
    amount: str
    replayed: bool
    chain: Literal["pending", "done", "failed"] = Field(
        default="done",
        description="the payout on chain: pending (sent once it can be: retry with the "
        "same id to see), done, or failed (and refunded to the balance)",
    )
    signature: str | None = Field(default=None, description="the payout's transaction")


class DepositsView(Wire):
    credited: dict[str, str] = Field(description="asset → amount credited now")


class FaucetRequest(Wire):
    asset: AssetName
    amount: str = Field(max_length=40)


class TransferView(Wire):
    id: str
    seq: int
    at: float
    debit: str
    credit: str
    asset: str
    amount: str
    kind: str
    code: str
    memo: str


class HistoryView(Wire):
    items: list[TransferView]


class SupplyView(Wire):
    max: str
    genesis: str
    emitted: str
    minted: str
    burned: str
    circulating: str


class AuditCheckView(Wire):
    name: str
    ok: bool
    detail: str


class AuditView(Wire):
    ok: bool
    checks: list[AuditCheckView]
    # When the audit was taken (the public route shares one for ``audit_cache_s``).
    checked_at: float | None = None


# -- IO Cloud: buyers, quotes, clusters ---------------------------------------------------


class ApiKeyCreate(Wire):
    name: str = Field(default="default", min_length=1, max_length=64)


class ApiKeyView(Wire):
    id: str
    name: str
    owner: str
    created_at: float
    key: str | None = Field(default=None, description="shown once, when created")
    revoked_at: float | None = Field(default=None, description="refused from then on")


class ApiKeyList(Wire):
    items: list[ApiKeyView]


ClusterType = Literal["general", "inference", "train"]
ClusterProduct = Literal["ray", "mega-ray"]


class DeployRequest(Wire):
    """What a buyer asks for. ``quantity`` is ignored for ``mega-ray`` (every match)."""

    name: str = Field(min_length=1, max_length=64)
    type: ClusterType = "general"
    product: ClusterProduct = "ray"
    hardware: str = Field(
        min_length=1, max_length=64, description='a catalog model key, or "cpu" for any CPU'
    )
    quantity: int = Field(default=1, ge=1, le=1024)
    locations: list[str] = Field(default_factory=list, max_length=64)
    min_tier: int = Field(default=0, ge=0, le=4, description="connectivity tier, 4 = ultra high")
    suppliers: list[str] = Field(default_factory=list, max_length=64)
    duration: int = Field(default=1, ge=1, le=100_000)
    duration_unit: Literal["hours", "days", "weeks"] = "hours"
    currency: AssetName = "IO"
    start: Literal["now", "flexible"] = Field(
        default="now", description="now costs more; flexible waits for a cheaper moment"
    )
    secure: bool = Field(default=False, description="a dedicated, attested cluster")
    max_price_usd: str | None = Field(
        default=None,
        max_length=20,
        description="auction mode: the most you pay per device-hour, in USD; the lowest "
        "provider asks under it are taken and all are paid the highest accepted ask",
    )


class PriceItem(Wire):
    name: str
    per_device_hour: str
    total: str
    detail: str


class QuoteView(Wire):
    id: str
    request: DeployRequest
    devices: int
    hours: int
    currency: AssetName
    price_per_device_hour: str
    subtotal: str
    buyer_fee: str
    total: str
    usd_per_device_hour: str
    io_usd: str = Field(description="the oracle's IO price used, when the currency is IO")
    expires_at: float
    explain: dict[str, int] = Field(default_factory=dict)
    mode: Literal["dynamic", "auction"] = "dynamic"
    breakdown: list[PriceItem] = Field(
        default_factory=list, description="sums to price_per_device_hour and to subtotal"
    )


class ClusterCreate(Wire):
    quote_id: str = Field(min_length=1, max_length=64)


class ExtendRequest(Wire):
    duration: int = Field(ge=1, le=100_000)
    duration_unit: Literal["hours", "days", "weeks"] = "hours"


class ClusterNodeView(Wire):
    device_id: str
    role: Literal["head", "worker"]
    generation: int
    state: str
    model: str | None
    location: str | None
    joined_at: float | None
    left_at: float | None
    left_reason: str | None
    paid: str


class ClusterView(Wire):
    id: str
    name: str
    owner: str
    type: ClusterType
    product: ClusterProduct
    status: str
    hardware: str
    quantity: int
    currency: AssetName
    price_per_device_hour: str
    hours: int
    paid: str
    charged: str
    refunded: str
    created_at: float
    running_at: float | None
    expires_at: float | None
    ended_at: float | None
    remaining_s: float | None
    generation: int
    reason: str | None = None
    nodes: list[ClusterNodeView] = Field(default_factory=list)
    ray_address: str | None = Field(default=None, description="GCS address, for `ray start`")
    ray_client_address: str | None = Field(default=None, description="ray://host:port")
    dashboard_url: str | None = Field(default=None, description="dashboard and Jobs API")
    ray_token: str | None = Field(default=None, description="RAY_AUTH_TOKEN; owner only")


class ClusterList(Wire):
    items: list[ClusterView]


class OverlayPeer(Wire):
    """Another member of the cluster's overlay (``core/overlay.py``)."""

    name: str = Field(description="device id, or buyer:<wallet>")
    key: str = Field(description="WireGuard public key (base64)")
    address: str = Field(description="overlay IPv4 address")
    endpoint: str | None = Field(default=None, description="ip:port as the rendezvous saw it")
    nat: Literal["unknown", "easy", "hard"] = "unknown"


class OverlayAssignment(Wire):
    """This node's place in its cluster's overlay: its address, the control plane's
    ticket for its WireGuard key (once reported), where the rendezvous and the relays
    listen, and the peers known so far."""

    address: str
    prefix: int = 24
    key: str | None = Field(default=None, description="the WireGuard key the ticket is for")
    nat: Literal["unknown", "easy", "hard"] = Field(
        default="unknown", description="this member's NAT, as the rendezvous saw it"
    )
    ticket: str | None = Field(default=None, description="control plane signature (base64)")
    expires: int | None = None
    authority: str = Field(description="the key that signs tickets (base58)")
    network: str
    rendezvous: list[str] = Field(default_factory=list, description="host:port, two ports")
    relays: list[str] = Field(default_factory=list, description="host:port, preferred first")
    peers: list[OverlayPeer] = Field(default_factory=list)


class OverlayPeerRequest(Wire):
    key: str = Field(min_length=44, max_length=44, description="the buyer's WireGuard public key")


class OverlayInfo(Wire):
    """The network's overlay services (public: relays need the ticket key)."""

    enabled: bool
    network: str
    authority: str = Field(description="the key that signs overlay tickets (base58)")
    rendezvous: list[str]
    relays: list[str]


class Assignment(Wire):
    """What a hired device must run, sent in heartbeat replies: the agent dials
    out and learns its cluster; nothing dials in to it."""

    cluster_id: str
    generation: int
    role: Literal["head", "worker"]
    token: str
    head_address: str | None = Field(default=None, description="GCS ip:port, once the head is up")
    overlay: OverlayAssignment | None = Field(
        default=None, description="the cluster's overlay; None: nodes reach each other directly"
    )


class RayNodeReport(Wire):
    """An agent's report on its Ray node for one cluster generation."""

    cluster_id: str = Field(max_length=64)
    generation: int = Field(ge=0, le=INT64_MAX)
    state: Literal["starting", "up", "failed", "stopped"]
    node_ip: str | None = Field(default=None, max_length=64)
    gcs_port: int | None = Field(default=None, ge=1, le=65535)
    dashboard_port: int | None = Field(default=None, ge=1, le=65535)
    client_port: int | None = Field(default=None, ge=1, le=65535)
    error: str | None = Field(default=None, max_length=512)
    oom_kills: int = Field(
        default=0, ge=0, le=INT64_MAX, description="processes killed at the memory limit"
    )
    overlay_key: str | None = Field(
        default=None, min_length=44, max_length=44, description="this node's WireGuard public key"
    )


# -- staking, blocks, slashes ---------------------------------------------------------------


class StakeAmount(Wire):
    amount: str = Field(max_length=40, description='whole IO, e.g. "200"')


class ShareRequest(Wire):
    share_bps: int = Field(ge=0, le=10_000, description="co-stakers' share of rewards, bps")


class CoStakeView(Wire):
    staker: str
    amount: str
    share_bps: int
    exit_requested_at: float | None
    counts: bool


class StakeView(Wire):
    device_id: str
    owner: str
    minimum: str
    effective: str
    active: str
    cooling: list[tuple[str, float]] = Field(description="(amount, unlocks_at)")
    costakes: list[CoStakeView]
    costake_share_bps: int
    slashed_pending: str
    meets_minimum: bool


class BlockStatus(StrEnum):
    """A reward block's life: ``in_progress`` while its window is open, ``processing``
    while its inputs are gathered and it is computed and paid (one transaction),
    ``completed``, or ``failed`` (its error kept; the next pass retries)::

        in_progress ──window closed──▶ processing ──▶ completed
                                           │  ▲
                                           ▼  └── retried
                                         failed
    """

    IN_PROGRESS = "in_progress"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class SeasonStatus(StrEnum):
    """A season is ``announced`` with its rules, ``running`` from its first block, and
    ``completed`` once its last block has (its results then published)."""

    ANNOUNCED = "announced"
    RUNNING = "running"
    COMPLETED = "completed"


class BlockSummary(Wire):
    number: int
    starts_at: float
    length_s: int
    status: BlockStatus
    emission: str
    paid: str
    nominated: int
    excluded: int
    unlisted: int = Field(
        default=0, description="registered, neither proven nor staked: counted, not published"
    )
    inputs_hash: str | None
    outputs_hash: str | None
    error: str | None = None


class BlockList(Wire):
    items: list[BlockSummary]


class BlockView(BlockSummary):
    inputs: dict[str, object] | None = Field(description="published: recompute from these")
    outputs: dict[str, object] | None


class RewardEntry(Wire):
    block: int
    units: str
    score: str
    excluded_because: list[str] = Field(default_factory=list)


class RewardList(Wire):
    device_id: str
    total: str
    items: list[RewardEntry]


class RewardClaimView(Wire):
    wallet: str
    amount: str
    through: int
    """The newest block this claim covers."""
    transfer_id: str
    at: float | None = None


class RewardBalance(Wire):
    """A wallet's block rewards: earned in all, claimable now (credited after
    block ``claimed_through``, up to ``credited_through``)."""

    wallet: str
    earned: str
    unclaimed: str
    claimed_through: int
    """The last block claimed through; -1 before the first claim."""
    credited_through: int
    claims: list[RewardClaimView] = Field(default_factory=list, description="newest first")


class SlashRequest(Wire):
    device_id: str = Field(pattern=PUBKEY_PATTERN)
    reason: Literal["spoofing", "failed_proof", "idle_abuse", "hardware_swap"]
    evidence: str = Field(default="", max_length=512)


class AppealRequest(Wire):
    text: str = Field(min_length=1, max_length=512)


class DecisionRequest(Wire):
    accept: bool


class SlashView(Wire):
    id: str
    device_id: str
    reason: str
    evidence: str
    amount: str
    shares: list[tuple[str, str]]
    status: Literal["pending", "appealed", "accepted", "burned"]
    created_at: float
    appeal_until: float
    appeal: str | None
    decided_at: float | None


class SlashList(Wire):
    items: list[SlashView]


MAX_POOL_POINTS = 10**15  # × 1,000 milli-points still fits a BIGINT


class SeasonCreate(Wire):
    name: str = Field(min_length=1, max_length=64)
    starts_block: int = Field(ge=0, le=INT64_MAX)
    ends_block: int = Field(ge=1, le=INT64_MAX, description="exclusive")
    # Points are stored as milli-points in 64 bits; points_per_io in 32.
    gpu_points: int = Field(ge=0, le=MAX_POOL_POINTS)
    cpu_points: int = Field(ge=0, le=MAX_POOL_POINTS)
    points_per_io: int = Field(ge=1, le=2**31 - 1, description="e.g. 90: 90 points buy 1 IO")


class SeasonStanding(Wire):
    device_id: str
    owner: str
    kind: str
    points: str = Field(description="points, to three decimals")


class SeasonView(Wire):
    id: str
    name: str
    starts_block: int
    ends_block: int
    gpu_points: int
    cpu_points: int
    points_per_io: int
    status: SeasonStatus
    rules_hash: str = Field(description="sha256 of the season's rules (core.seasons.season_hash)")
    results_hash: str | None = None
    results: dict[str, object] | None = None
    standings: list[SeasonStanding] = Field(default_factory=list)


class SeasonList(Wire):
    items: list[SeasonView]


class FloorRequest(Wire):
    usd: str = Field(max_length=20, description="the least you accept per device-hour, USD")


class DeviceFloor(Wire):
    device_id: str
    usd: str


class PriceEntry(Wire):
    model: str
    location: str = Field(description='ISO country, or "*" for every region')
    usd_per_device_hour: str
    io_per_device_hour: str
    utilisation: float
    idle: int
    hired: int
    at: float


class PriceList(Wire):
    items: list[PriceEntry]
