"""SQLAlchemy tables. Times are Unix seconds (double precision) to match the wire.

The hot liveness state lives in memory (``server/liveness.py``); these tables
hold what must survive a crash: the devices, their status as last flushed, and
uptime per device per hour.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

# The ledger's tables are declared in the ledger (ledger/tables.py), beneath the
# server, on the one Base; they are named here too, so that this module names every
# table of the metadata the migrations describe.
from idlegrid.ledger.tables import ChainOperation as ChainOperation
from idlegrid.ledger.tables import LedgerAccount as LedgerAccount
from idlegrid.ledger.tables import LedgerHead as LedgerHead
from idlegrid.ledger.tables import LedgerTransfer as LedgerTransfer
from idlegrid.orm import Base as Base


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(44), primary_key=True)
    owner: Mapped[str] = mapped_column(String(44), index=True)
    name: Mapped[str | None] = mapped_column(String(64))
    location: Mapped[str | None] = mapped_column(String(2), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Bumped on every status change; a flush only writes a newer status.
    status_version: Mapped[int] = mapped_column(BigInteger, default=0)
    readiness: Mapped[str] = mapped_column(String(24), index=True)
    kind: Mapped[str] = mapped_column(String(8), index=True)
    model: Mapped[str | None] = mapped_column(String(64), index=True)
    processors: Mapped[int] = mapped_column(Integer)
    unsupported_reason: Mapped[str | None] = mapped_column(String(160))
    hardware: Mapped[dict[str, Any]] = mapped_column(JSON)
    agent_version: Mapped[str] = mapped_column(String(32))
    registered_at: Mapped[float] = mapped_column(Double)
    last_seen_at: Mapped[float | None] = mapped_column(Double)
    uptime_s: Mapped[float] = mapped_column(Double, default=0.0)
    # Proof of compute: when the next challenge is due (NULL while one is open).
    next_proof_at: Mapped[float | None] = mapped_column(Double, index=True)
    proof_passed_at: Mapped[float | None] = mapped_column(Double)
    proof_failures: Mapped[int] = mapped_column(Integer, default=0)
    spoof_strikes: Mapped[int] = mapped_column(Integer, default=0)
    measured_tflops: Mapped[float | None] = mapped_column(Double)
    # Connectivity, as last measured by the agent.
    latency_ms: Mapped[float | None] = mapped_column(Double)
    download_mbps: Mapped[float | None] = mapped_column(Double)
    upload_mbps: Mapped[float | None] = mapped_column(Double)
    tier: Mapped[int | None] = mapped_column(Integer)
    # The cluster holding this device: set and cleared only by the cluster
    # service, with a conditional UPDATE, so no device is ever in two clusters.
    cluster_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # The least its provider accepts per device-hour, in millionths of a USD (0: none).
    floor_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # How the agent runs buyers' work (protocol.SandboxInfo); "none" is rented only
    # to its owner.
    sandbox_backend: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    sandbox: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Proof(Base):
    """One proof-of-compute challenge and its outcome."""

    __tablename__ = "proofs"
    __table_args__ = (Index("ix_proofs_device_created", "device_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(44), ForeignKey("devices.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(256))
    seed: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)
    rounds: Mapped[int] = mapped_column(Integer)
    checks_k: Mapped[int] = mapped_column(Integer)
    work_flop: Mapped[float] = mapped_column(Double)
    claimed_tflops: Mapped[float] = mapped_column(Double)
    deadline_s: Mapped[float] = mapped_column(Double)
    memory_mb: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)
    fetched_at: Mapped[float | None] = mapped_column(Double)
    committed_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    root: Mapped[str | None] = mapped_column(String(64))
    prover: Mapped[str | None] = mapped_column(String(32))
    elapsed_reported_s: Mapped[float | None] = mapped_column(Double)
    measured_tflops: Mapped[float | None] = mapped_column(Double)
    checks: Mapped[list[Any] | None] = mapped_column(JSON)
    memory_probes: Mapped[list[Any] | None] = mapped_column(JSON)


class DeviceUptime(Base):
    """Seconds of accounted uptime per device per hour."""

    __tablename__ = "device_uptime"

    device_id: Mapped[str] = mapped_column(
        String(44), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    seconds: Mapped[float] = mapped_column(Double)


class DeviceEvent(Base):
    """An append-only trail of what happened to a device (joins, status changes)."""

    __tablename__ = "device_events"
    __table_args__ = (Index("ix_device_events_device_at", "device_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(44), ForeignKey("devices.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ApiKey(Base):
    """A buyer's API key: only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(44), index=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double)


class Quote(Base):
    __tablename__ = "quotes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(44), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    currency: Mapped[str] = mapped_column(String(8))
    price: Mapped[int] = mapped_column(BigInteger)  # per device-hour, smallest units
    devices: Mapped[int] = mapped_column(Integer)
    hours: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    cluster_id: Mapped[str | None] = mapped_column(String(32))


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(44), index=True)
    name: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    product: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(24), index=True)
    reason: Mapped[str | None] = mapped_column(String(256))
    currency: Mapped[str] = mapped_column(String(8))
    price: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    hours: Mapped[int] = mapped_column(Integer)
    paid: Mapped[int] = mapped_column(BigInteger, default=0)
    charged: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    payments: Mapped[int] = mapped_column(Integer, default=0)
    token: Mapped[str | None] = mapped_column(String(128))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    head_device: Mapped[str | None] = mapped_column(String(44))
    node_ip: Mapped[str | None] = mapped_column(String(64))
    gcs_port: Mapped[int | None] = mapped_column(Integer)
    dashboard_port: Mapped[int | None] = mapped_column(Integer)
    client_port: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)
    deploy_deadline: Mapped[float | None] = mapped_column(Double)
    running_at: Mapped[float | None] = mapped_column(Double)
    expires_at: Mapped[float | None] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)
    # Its nodes reach each other over its WireGuard overlay (fixed when deployed).
    overlay: Mapped[bool | None] = mapped_column(Boolean)


class ClusterNode(Base):
    """One device's time in one cluster. A replacement is a new row."""

    __tablename__ = "cluster_nodes"
    __table_args__ = (Index("ix_cluster_nodes_cluster", "cluster_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(32), ForeignKey("clusters.id"))
    device_id: Mapped[str] = mapped_column(String(44), ForeignKey("devices.id"), index=True)
    payee: Mapped[str] = mapped_column(String(44))
    role: Mapped[str] = mapped_column(String(8))
    generation: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # reserved, starting, up, failed, stopped
    # When it was told to (re)start its node: a node not up within the deploy timeout
    # of this, in a cluster that already ran, is given up on (and replaced).
    assigned_at: Mapped[float | None] = mapped_column(Double)
    up_at: Mapped[float | None] = mapped_column(Double)
    joined_ms: Mapped[int | None] = mapped_column(BigInteger)  # paid from here
    left_ms: Mapped[int | None] = mapped_column(BigInteger)  # paid until here
    left_reason: Mapped[str | None] = mapped_column(String(64))
    paid_gross: Mapped[int] = mapped_column(BigInteger, default=0)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)  # nothing more to pay
    overlay_key: Mapped[str | None] = mapped_column(String(44))  # its WireGuard public key


class OverlayPeer(Base):
    """A buyer's own peer in a cluster's overlay (``idlegrid clusters connect``)."""

    __tablename__ = "overlay_peers"
    __table_args__ = (
        UniqueConstraint("cluster_id", "key", name="uq_overlay_peers_cluster_key"),
        Index("ix_overlay_peers_cluster", "cluster_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(32), ForeignKey("clusters.id"))
    signer: Mapped[str] = mapped_column(String(44))  # the buyer's wallet: signs its hellos
    key: Mapped[str] = mapped_column(String(44))
    created_at: Mapped[float] = mapped_column(Double)


class StakeRow(Base):
    """Everything staked on one device (``core.staking.Stake``), and the share of
    its rewards the owner offers co-stakers. The IO itself sits in the chain's
    stake account, mirrored in the book as ``stake:<device>:IO``."""

    __tablename__ = "stakes"

    device_id: Mapped[str] = mapped_column(
        String(44), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(44), index=True)
    active: Mapped[int] = mapped_column(BigInteger, default=0)
    cooling: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [[units, unlocks_at]]
    # [[staker, units, share_bps, exit_requested_at]]
    costakes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    costake_share_bps: Mapped[int] = mapped_column(Integer, default=0)


class Block(Base):
    """One hourly reward block: its published inputs and outputs, and their hashes.

    The documents are stored as the exact bytes that were hashed (canonical JSON:
    a million devices make hundreds of megabytes, encoded once) and loaded only
    when asked for (``deferred``): listing blocks never reads them."""

    __tablename__ = "blocks"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the emission hour
    starts_at: Mapped[float] = mapped_column(Double, unique=True)  # its window's start
    length_s: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    emission: Mapped[int] = mapped_column(BigInteger)
    inputs_json: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    inputs_hash: Mapped[str | None] = mapped_column(String(64))
    outputs_json: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    outputs_hash: Mapped[str | None] = mapped_column(String(64))
    nominated: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    unlisted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    paid: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[float] = mapped_column(Double)
    closed_at: Mapped[float | None] = mapped_column(Double)
    # What its explorer page shows (first rows, pools, notes; written at publication),
    # and whether the blocks loop recomputed it from its inputs (None: not yet).
    page_json: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    verified: Mapped[bool | None] = mapped_column(Boolean)

    @property
    def inputs(self) -> dict[str, Any] | None:
        return None if self.inputs_json is None else orjson.loads(self.inputs_json)

    @property
    def outputs(self) -> dict[str, Any] | None:
        return None if self.outputs_json is None else orjson.loads(self.outputs_json)


class BlockReward(Base):
    """What one device earned in one block (for `idlegrid rewards DEVICE`). Keyed by
    device first: a block appends a million rows, and one B-tree takes them."""

    __tablename__ = "block_rewards"

    device_id: Mapped[str] = mapped_column(String(44), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, ForeignKey("blocks.number"), primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger)
    score: Mapped[str] = mapped_column(String(64))  # "weight/denominator", not reduced
    reasons: Mapped[str | None] = mapped_column(String(256))  # when excluded


class RewardCredit(Base):
    """Units a wallet (an owner or a co-staker) earned in one block, to be claimed."""

    __tablename__ = "reward_credits"

    recipient: Mapped[str] = mapped_column(String(44), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, ForeignKey("blocks.number"), primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger)


class RewardClaim(Base):
    """A wallet's claim of every credit up to block ``through``: one book transfer."""

    __tablename__ = "reward_claims"

    recipient: Mapped[str] = mapped_column(String(44), primary_key=True)
    through: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger)
    transfer_id: Mapped[str] = mapped_column(String(128), unique=True)
    at: Mapped[float] = mapped_column(Double)


class Slash(Base):
    __tablename__ = "slashes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(44), ForeignKey("devices.id"), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    evidence: Mapped[str] = mapped_column(String(512))
    # The device event that raised it (automatic slashes): each is slashed once.
    source_event: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    units: Mapped[int] = mapped_column(BigInteger)
    shares: Mapped[list[Any]] = mapped_column(JSON)  # [[staker, units]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Double)
    appeal_until: Mapped[float] = mapped_column(Double)
    appeal: Mapped[str | None] = mapped_column(String(512))
    decided_at: Mapped[float | None] = mapped_column(Double)


class Season(Base):
    __tablename__ = "seasons"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    starts_hour: Mapped[int] = mapped_column(BigInteger)  # block numbers [starts, ends)
    ends_hour: Mapped[int] = mapped_column(BigInteger)
    gpu_points: Mapped[int] = mapped_column(BigInteger)
    cpu_points: Mapped[int] = mapped_column(BigInteger)
    points_per_io: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    results_hash: Mapped[str | None] = mapped_column(String(64))


class SeasonPoints(Base):
    __tablename__ = "season_points"

    season_id: Mapped[str] = mapped_column(String(32), ForeignKey("seasons.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(44), primary_key=True)
    owner: Mapped[str] = mapped_column(String(44))
    kind: Mapped[str] = mapped_column(String(8))
    points: Mapped[int] = mapped_column(BigInteger, default=0)  # thousandths of a point


class PricePoint(Base):
    """The price of one device-hour of a model in a region, as quoted at ``at``."""

    __tablename__ = "price_points"
    __table_args__ = (Index("ix_price_points_model_at", "model", "location", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[float] = mapped_column(Double, index=True)
    model: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(2))  # "*" for every region
    micro_usd: Mapped[int] = mapped_column(BigInteger)
    utilisation: Mapped[float] = mapped_column(Double)
    idle: Mapped[int] = mapped_column(Integer)
    hired: Mapped[int] = mapped_column(Integer)
