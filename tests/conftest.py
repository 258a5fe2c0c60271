"""Shared fixtures: a controllable clock, databases (SQLite always, PostgreSQL when
IDLEGRID_TEST_POSTGRES_URL is set, as .ci/run does), and in-process apps."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from solders.keypair import Keypair
from sqlalchemy import create_engine, text

from idlegrid.catalog import Catalog
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import DeviceKind, GpuInfo, HardwareInfo
from idlegrid.sdk import Client
from idlegrid.sdk.inprocess import InProcessTransport
from idlegrid.server.app import create_app
from idlegrid.server.db.models import Base
from idlegrid.server.settings import ServerSettings
from idlegrid.worker.raynode import free_port

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The tests may use development's conveniences (SQLite, the faucet, an authority key
# made on the spot), as may every server and CLI process they start; the defaults
# are production's (tests/test_settings_and_cli.py checks them with this unset).
os.environ["IDLEGRID_ENVIRONMENT"] = "development"
# Tests register devices by the dozen from one address; the limit has its own test.
os.environ["IDLEGRID_REGISTRATION_RATE_PER_S"] = "0"
# Beats on any free UDP port: servers of parallel tests must not share one.
os.environ["IDLEGRID_BEAT_PORT"] = "0"

POSTGRES_URL = os.environ.get("IDLEGRID_TEST_POSTGRES_URL")
T0 = 1_798_675_200.0  # 2027-01-01T00:00:00Z, an hour boundary


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class LiveClock(FakeClock):
    """Real time, plus whatever a test adds: for timings that must be measured."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def __call__(self) -> float:
        return time.time() + self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    assert POSTGRES_URL is not None
    name = f"idlegrid_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _backends() -> list[object]:
    return [
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    POSTGRES_URL is None, reason="set IDLEGRID_TEST_POSTGRES_URL (.ci/run does)"
                ),
            ],
        ),
    ]


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'idlegrid.db'}"
        return
    url = request.getfixturevalue("postgres_database")
    yield url
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> ServerSettings:
    return ServerSettings(
        database_url=database_url,
        data_dir=tmp_path,
        heartbeat_interval_s=10,
        min_uptime_s=3600,
    )


class Network:
    """An in-process control plane, reached through the SDK."""

    def __init__(
        self, settings: ServerSettings, clock: FakeClock, catalog: Catalog | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.app = create_app(settings, clock=clock, catalog=catalog, run_loops=False)
        self.http = httpx.Client(
            base_url="http://testserver", transport=InProcessTransport(self.app)
        )

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.app.state.idlegrid

    def client(self, keypair: Keypair | None = None) -> Client:
        return Client("http://testserver", keypair=keypair, http=self.http, clock=self.clock)

    def tick(self) -> None:
        """One reaper + flush pass, as the background loop would run it."""
        from idlegrid.server.loops import reap_and_flush

        reap_and_flush(self.state)

    def close(self) -> None:
        self.http.close()  # closes the transport: the app's shutdown runs


@pytest.fixture
def network(settings: ServerSettings, clock: FakeClock) -> Iterator[Network]:
    net = Network(settings, clock)
    yield net
    net.close()


def cpu_hardware(model: str = "Intel(R) Xeon(R) Processor") -> HardwareInfo:
    return HardwareInfo(
        kind=DeviceKind.CPU,
        cpu_model=model,
        cpu_cores=8,
        cpu_physical_cores=4,
        ram_mb=32768,
        disk_total_gb=500,
        disk_free_gb=200,
        os="Linux",
        os_version="6.1",
        arch="x86_64",
    )


def gpu_hardware(
    name: str = "NVIDIA H100 80GB HBM3", count: int = 8, vram_mb: int = 81559
) -> HardwareInfo:
    hw = cpu_hardware("AMD EPYC 9654 96-Core Processor")
    return hw.model_copy(
        update={
            "kind": DeviceKind.GPU,
            "gpus": [GpuInfo(index=i, name=name, vram_mb=vram_mb) for i in range(count)],
            "gpu_driver": "550.54.15",
            "cuda_version": "12.4",
        }
    )


def write_keypair(path: Path, keypair: Keypair) -> Path:
    path.write_text(json.dumps(list(bytes(keypair))))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """A local network whose agents run real Ray nodes when hired, shared by the
    IO Cloud end-to-end tests and the examples (starting Ray costs seconds)."""
    with LocalNetwork(
        tmp_path_factory.mktemp("cloud"),
        port=free_port(),
        workers=3,
        heartbeat_interval_s=1.0,
        min_uptime_s=2.0,
        # Clusters here form over the WireGuard overlay as they do in production, the
        # tests joining as the buyer (on direct addresses with IDLEGRID_TEST_OVERLAY=0,
        # or where wireguard-go or the sandbox is missing); the overlay's own tests,
        # NATs and relays included, are tests/test_overlay_e2e.py.
        overlay=os.environ.get("IDLEGRID_TEST_OVERLAY", "1") == "1",
        # Proofs are tested elsewhere; here a loaded machine must not fail them.
        env={
            "IDLEGRID_PROOF_MIN_EFFICIENCY": "0.01",
            "IDLEGRID_PROOF_RETRY_S": "2",
            "IDLEGRID_BLOCK_INTERVAL_S": "10",  # fast blocks: a block-hour is 10 s
            # A secret of the agents' own: no buyer's job may see it (test_sandbox).
            "AWS_SECRET_ACCESS_KEY": "agent-only-secret-3f1c",
        },
    ) as net:
        net.start()
        # Asked for, the overlay must be on: a machine without it fails, never skips
        # (`make` installs wireguard-go with the sandbox's tools).
        assert net.overlay_off is None, f"no overlay for the cloud tests: {net.overlay_off}"
        with Client(net.server_url) as client:
            net.wait_for(
                lambda: client.list_devices(readiness="cluster_ready").total == 3,
                120,
                "3 devices cluster-ready",
            )
        yield net
