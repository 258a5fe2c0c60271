"""Typed settings for the control plane, from the environment and an optional TOML file.

Every field reads from ``IDLEGRID_<NAME>`` (e.g. ``IDLEGRID_DATABASE_URL``); a
TOML file named by ``IDLEGRID_CONFIG`` may set the same names in lower case.
The environment wins over the file. Units are in the names.

The defaults are production's. ``environment = "development"`` switches on the
conveniences a stranger must never meet on a public server (the faucet, a SQLite
file, an authority key the server makes itself); only the local network, the
demo and the tests set it. In production the server refuses to start with any
of them, or with a placeholder database password (``production_problems``), and
``startup_warnings`` names what is allowed but risky (plain HTTP beyond loopback:
the Ray token travels in heartbeat replies).
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

from idlegrid.server.middleware import BODY_MIN_RATE_BPS, BODY_TIMEOUT_S
from idlegrid.server.serve import HEADER_TIMEOUT_S

DEFAULT_DATA_DIR = Path(".idlegrid")
PLACEHOLDER_SECRETS = frozenset(
    {"changethis", "changeme", "change-me", "password", "secret", "example", "placeholder"}
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDLEGRID_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="production",
        description="development: the faucet, SQLite and a self-made authority key are allowed",
    )
    faucet: bool | None = Field(
        default=None, description="free test tokens; unset: on in development, off in production"
    )
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means a SQLite file in data_dir"
    )
    network_id: str = Field(
        default="",
        max_length=100,
        pattern=r"^[A-Za-z0-9:._-]*$",
        description="what every signature is bound to; empty: idlegrid:<authority public key>",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=1, le=65535)

    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    heartbeat_ttl_s: float = Field(
        default=0, ge=0, description="silence before a device is down; 0 means 2.5 intervals"
    )
    inactive_after_s: float = Field(default=5 * 24 * 3600, gt=0)
    max_clock_skew_s: float = Field(default=60.0, gt=0)
    min_uptime_s: float = Field(default=12 * 3600, ge=0)

    # 0 means min(1 s, a quarter (flush) or an eighth (reaper) of the heartbeat interval).
    # Proof of compute (core/proof.py, core/proof_policy.py).
    proof_interval_s: float = Field(default=6 * 3600, gt=0, description="re-prove idle devices")
    proof_retry_s: float = Field(
        default=20,
        gt=0,
        description="after a failure, on a fresh challenge; doubled for each failure in a row",
    )
    proof_retry_max_s: float = Field(default=3600, gt=0, description="the longest retry wait")
    proof_give_up_after: int = Field(
        default=12, ge=1, description="failures in a row before a never-proven device is left be"
    )
    proof_pickup_s: float = Field(default=120, gt=0, description="to fetch an issued challenge")
    proof_target_s: float = Field(default=1.0, gt=0, description="work at the claimed speed")
    proof_min_efficiency: float = Field(
        default=0.2, gt=0, le=1, description="CPUs and Apple silicon: share of the claim"
    )
    proof_gpu_min_efficiency: float = Field(
        default=0.4, gt=0, le=1, description="GPUs: share of the claim (see the proof doc)"
    )
    proof_allowance_s: float = Field(default=3.0, ge=0, description="latency and start-up")
    proof_checks: int = Field(default=48, ge=1, le=1024)
    proof_memory_fraction: float = Field(
        default=0.8, ge=0, le=1, description="share of the claimed VRAM a GPU must hold"
    )
    proof_memory_probes: int = Field(default=4, ge=0, le=256)
    proof_tick_s: float = Field(default=1.0, gt=0)
    proof_n: int = Field(
        default=0, ge=0, le=8192, description="matrix size; 0 means by kind (core.proof.size_for)"
    )

    # Token and ledger.
    chain_url: str = Field(
        default="embedded", description='"embedded" (LiteSVM in-process) or an RPC URL'
    )
    authority_keypair: Path | None = Field(
        default=None, description="the network's Solana authority; default data_dir/keys"
    )
    io_usd_price: Decimal = Field(default=Decimal("1.50"), gt=0, description="oracle, embedded")
    buyback_interval_s: float = Field(default=3600, gt=0, description="fee buy-back and burn")
    outbox_interval_s: float = Field(
        default=1.0, gt=0, description="finish chain operations a crash or an outage left"
    )

    # IO Cloud (services/clusters.py).
    quote_ttl_s: float = Field(default=300, gt=0, description="how long a quote holds")
    deploy_timeout_s: float = Field(default=180, gt=0, description="to running, or it fails")
    cluster_tick_s: float = Field(default=1.0, gt=0, description="heal, expire, deploy watch")
    settle_interval_s: float = Field(default=3600, gt=0, description="pay providers")
    price_interval_s: float = Field(default=300, gt=0, description="record the price history")
    match_index_reload_s: float = Field(
        default=600, gt=0, description="re-read every hireable device into the match index"
    )
    # Beats (core/beats.py, docs/protocol.md): heartbeats as one authenticated datagram
    # after a signed handshake; agents fall back to HTTP where UDP does not pass.
    beats: bool = Field(default=True, description="offer agents beat sessions over UDP")
    beat_port: int = Field(
        default=8471, ge=0, le=65535, description="the beats' UDP port on host (0: any free one)"
    )
    beat_host: str = Field(
        default="", description="the address agents send beats to; empty: the API's host"
    )
    beat_session_s: float = Field(
        default=3600, gt=0, le=7 * 24 * 3600, description="how long a beat session holds"
    )
    # The overlay (core/overlay.py, docs/networking.md): clusters whose nodes reach
    # each other over WireGuard, through NATs, with relays where no direct path opens.
    overlay: bool = Field(
        default=False, description="new clusters form over the overlay (agents need WireGuard)"
    )
    overlay_host: str = Field(
        default="", description="the address agents reach the rendezvous at; empty: off"
    )
    overlay_rendezvous_ports: tuple[int, int] = Field(
        default=(3479, 3480), description="the rendezvous's two UDP ports (NAT kind)"
    )
    overlay_relays: list[str] = Field(
        default_factory=list, description='relays, as JSON: ["203.0.113.7:3478"]'
    )
    overlay_ticket_s: int = Field(
        default=7 * 24 * 3600, gt=0, description="how long an overlay ticket holds"
    )

    # Staking and block rewards (services/staking.py, services/blocks.py).
    block_interval_s: int = Field(
        default=3600,
        ge=1,
        le=3600,
        description="one block per interval; under 3600 = fast blocks (demos, tests): "
        "uptime is then accounted per block and scaled to an hour",
    )
    gpu_pool_bps: int = Field(default=9500, ge=0, le=10_000, description="GPU share of a block")
    block_documents_dir: Path | None = Field(
        default=None,
        description="where blocks' published documents are kept (compressed, named by "
        "their SHA-256); default data_dir/documents",
    )
    block_rewards_keep_blocks: int = Field(
        default=24 * 30,
        ge=0,
        description="per-device reward rows kept for the newest this many published blocks "
        "(older ones are in the blocks' documents; wallet credits and claims are always "
        "kept); 0: keep all",
    )
    slash_appeal_s: float = Field(default=30 * 24 * 3600, gt=0, description="appeal window")
    # Idle-use abuse (core/idle.py): load this high on every heartbeat for this long.
    idle_cpu_percent: float = Field(default=30.0, gt=0, le=100)
    idle_gpu_percent: float = Field(default=20.0, gt=0, le=100)
    idle_window_s: float = Field(default=900.0, gt=0)

    flush_interval_s: float = Field(default=0, ge=0)
    reaper_interval_s: float = Field(default=0, ge=0)
    registration_concurrency: int = Field(
        default=2,
        ge=1,
        description="registration transactions at once, each writing every registration "
        "waiting (group commit); the rest wait in line",
    )
    registration_rate_per_s: float = Field(
        default=1.0, ge=0, description="per source address and per owner; 0: unlimited"
    )
    registration_burst: int = Field(default=60, ge=1, description="registrations at once")
    speedtests_per_hour: int = Field(
        default=12, ge=1, description="speed-test transfers a device may make an hour"
    )
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_page_size: int = Field(default=1000, gt=0)
    # Slow clients (server/serve.py, middleware.BodyLimit).
    header_timeout_s: float = Field(
        default=HEADER_TIMEOUT_S, gt=0, description="a request's headers, from its first byte"
    )
    body_timeout_s: float = Field(
        default=BODY_TIMEOUT_S, gt=0, description="a body, plus a second per body_min_rate_bps"
    )
    body_min_rate_bps: float = Field(default=BODY_MIN_RATE_BPS, gt=0)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks whose X-Forwarded-For/-Proto are believed "
        '(JSON list in the environment, e.g. ["10.0.0.5"]); behind a proxy, set it, or '
        "every client shares the proxy's address and its rate limits",
    )
    audit_cache_s: float = Field(
        default=5.0, ge=0, description="the public ledger audit is taken at most this often"
    )
    quotes_per_minute: int = Field(
        default=60, ge=0, description="quotes an API key may ask for a minute; 0: unlimited"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {entry!r}") from None
        return value

    @model_validator(mode="after")
    def _fill_derived(self) -> ServerSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'idlegrid.db'}"
        if self.block_documents_dir is None:
            self.block_documents_dir = self.data_dir / "documents"
        # A device is down after missing two heartbeats and half of a third, so a
        # dead agent is noticed within three intervals, reaper tick included.
        if self.heartbeat_ttl_s == 0:
            self.heartbeat_ttl_s = 2.5 * self.heartbeat_interval_s
        if self.flush_interval_s == 0:
            self.flush_interval_s = min(1.0, self.heartbeat_interval_s / 4)
        if self.reaper_interval_s == 0:
            # Detection takes at most TTL + one tick: 2.5 + 0.125 intervals.
            self.reaper_interval_s = min(1.0, self.heartbeat_interval_s / 8)
        if 3600 % self.block_interval_s:
            raise ValueError("block_interval_s must divide an hour (3600 s)")
        if self.heartbeat_ttl_s < self.heartbeat_interval_s:
            raise ValueError("heartbeat_ttl_s must be at least heartbeat_interval_s")
        if self.faucet is None:
            self.faucet = self.environment == "development"
        if self.environment == "production" and (problems := production_problems(self)):
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    def startup_warnings(self) -> list[str]:
        """What the server allows but an operator should hear about when it starts."""
        out = []
        if self.host not in LOOPBACK_HOSTS:
            out.append(
                f"serving plain HTTP on {self.host}: put TLS in front of it (a reverse proxy); "
                "devices' Ray tokens travel in heartbeat replies"
            )
        if self.environment == "production" and self.chain_url == "embedded":
            out.append(
                "the chain is the embedded LiteSVM (a file in data_dir), not a Solana cluster: "
                "set IDLEGRID_CHAIN_URL to an RPC endpoint for real tokens"
            )
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        import os

        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("IDLEGRID_CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)


def production_problems(settings: ServerSettings) -> list[str]:
    """Why ``settings`` must not serve strangers; empty when they may."""
    problems = []
    if settings.database_url.startswith("sqlite"):
        problems.append("production needs PostgreSQL: set IDLEGRID_DATABASE_URL")
    if settings.faucet:
        problems.append("the faucet mints free tokens: unset IDLEGRID_FAUCET")
    key = settings.authority_keypair
    if key is None or not key.expanduser().is_file():
        problems.append(
            "the network's authority key must be made and kept outside the server: set "
            "IDLEGRID_AUTHORITY_KEYPAIR to an existing Solana keypair file"
            + ("" if key is None else f" ({key} does not exist)")
        )
    password = make_url(settings.database_url).password
    if password is not None and str(password).lower() in PLACEHOLDER_SECRETS:
        problems.append("the database password is a placeholder: set a real one")
    return problems
