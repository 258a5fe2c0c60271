"""The worker agent against an in-process control plane: registration, heartbeats,
backoff while the server is away, re-registration, termination, keypair files."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from solders.keypair import Keypair

from idlegrid.identity import KeypairFileError, load_keypair, load_or_create_keypair
from idlegrid.protocol import Assignment, DeviceStatus, RayNodeReport
from idlegrid.sdk import Client
from idlegrid.server.settings import ServerSettings
from idlegrid.worker.agent import Agent, Backoff
from idlegrid.worker.raynode import RayConfig, RayDuty, RayNode
from idlegrid.worker.sandbox import Launched, NodeSpec, NoSandbox
from tests.conftest import FakeClock, Network, cpu_hardware


def make_agent(client: Client, clock: FakeClock) -> Agent:
    return Agent(
        client, cpu_hardware(), location="FR", clock=clock, backoff=Backoff(rng=random.Random(1))
    )


def test_agent_registers_then_heartbeats_on_the_servers_interval(
    network: Network, clock: FakeClock
) -> None:
    kp = Keypair()
    agent = make_agent(network.client(kp), clock)
    assert agent.step() <= 0.5  # the challenge duty looks twice a second
    assert agent.registered and agent.status is DeviceStatus.UP
    interval = network.settings.heartbeat_interval_s
    assert agent._next_run["heartbeat"] == pytest.approx(clock() + interval)
    for _ in range(2):
        clock.advance(interval)
        agent.step()
    network.tick()
    view = network.client().get_device(agent.device_id)
    assert view.location == "FR" and view.uptime_s == pytest.approx(20)


def test_an_agent_files_its_device_under_its_owner_for_this_network(
    network: Network, clock: FakeClock
) -> None:
    owner = Keypair()
    agent = Agent(network.client(Keypair()), cpu_hardware(), owner=owner, clock=clock)
    agent.step()  # the attestation is signed for the network the server names
    assert network.client().get_device(agent.device_id).owner == str(owner.pubkey())


def test_agent_backs_off_while_the_server_is_unreachable(clock: FakeClock) -> None:
    client = Client("http://127.0.0.1:9", keypair=Keypair(), timeout_s=0.5)
    agent = make_agent(client, clock)
    delays = [agent.step() for _ in range(8)]
    assert not agent.registered
    assert delays[0] <= 0.5 and max(delays) <= 30
    assert delays[-1] > delays[0]  # it grows
    assert agent.backoff.attempts == 8


def test_agent_registers_again_when_the_server_forgot_it(
    network: Network, clock: FakeClock, tmp_path: Path
) -> None:
    kp = Keypair()
    agent = make_agent(network.client(kp), clock)
    agent.step()
    # A new control plane on an empty database: the device is unknown there.
    fresh = Network(
        ServerSettings(database_url=f"sqlite:///{tmp_path / 'fresh.db'}", data_dir=tmp_path),
        clock,
    )
    try:
        agent.client = fresh.client(kp)
        clock.advance(10)
        agent.step()  # heartbeat → unknown_device → will register
        assert not agent.registered
        agent.step()
        assert agent.registered
        assert fresh.client().get_device(agent.device_id).status is DeviceStatus.UP
    finally:
        fresh.close()


def test_agent_stops_when_terminated(network: Network, clock: FakeClock) -> None:
    kp = Keypair()
    agent = make_agent(network.client(kp), clock)
    agent.step()
    network.client(kp).terminate_device(agent.device_id)
    clock.advance(10)
    stop = threading.Event()
    agent.run(stop)  # returns by itself
    assert not stop.is_set()


def test_keypair_file_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "device.json"
    kp, created = load_or_create_keypair(path)
    assert created and path.stat().st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    assert len(data) == 64  # the Solana CLI's format
    again, created = load_or_create_keypair(path)
    assert not created and again.pubkey() == kp.pubkey()


def test_keypair_file_that_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    load_or_create_keypair(path)
    path.chmod(0o644)
    with pytest.raises(KeypairFileError, match="chmod 600"):
        load_keypair(path)


def test_garbage_keypair_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    path.write_text("[1, 2, 3]")
    path.chmod(0o600)
    with pytest.raises(KeypairFileError):
        load_keypair(path)


def test_a_stopped_ray_node_leaves_no_session_files(tmp_path: Path) -> None:
    """Stopping a node deletes its Ray sessions: the buyer's files, logs and spilled
    objects do not outlive the rental on the provider's disk."""
    assignment = Assignment(cluster_id="c" * 32, generation=0, role="worker", token="t")
    node = RayNode(assignment, "device-for-the-test", RayConfig(), "127.0.0.1")
    node.temp_dir = tmp_path / "ray"
    session = node.temp_dir / "session_2026-11-28_08-00-00_000000_1"
    (session / "runtime_resources" / "working_dir_files").mkdir(parents=True)
    (session / "runtime_resources" / "working_dir_files" / "model.pt").write_bytes(b"weights")
    (node.temp_dir / "session_latest").symlink_to(session)
    other = node.temp_dir / "keep-me"
    other.write_text("not a session")
    node.launched = NoSandbox().launch(
        NodeSpec(name="test", ip="127.0.0.1", ports=range(0), command=["sleep", "30"], env={})
    )
    node.stop(grace_s=5)
    assert node.proc is not None and node.proc.returncode is not None
    assert node.proc.stdout is not None
    node.proc.stdout.close()  # the agent's reader thread closes it
    assert not session.exists() and not (node.temp_dir / "session_latest").is_symlink()
    assert other.read_text() == "not a session"


class _Recorder:
    """The agent's client, as RayDuty sees it: it records the node reports."""

    def __init__(self) -> None:
        self.reports: list[RayNodeReport] = []
        self.base_url = "http://127.0.0.1:9"

    def report_ray_node(self, device_id: str, report: RayNodeReport) -> None:
        self.reports.append(report)


class _BrokenSandbox(NoSandbox):
    backend = "bubblewrap"

    def launch(self, spec: NodeSpec) -> Launched:
        raise OSError("pasta failed (1): Failed to bind any port")


def test_a_sandbox_that_cannot_start_is_reported_as_a_failed_node() -> None:
    """The control plane then treats it as any failed node: the next spare is hired
    and the buyer pays nothing for it (tests/test_clusters.py)."""
    agent = SimpleNamespace(
        assignment=Assignment(cluster_id="c" * 32, generation=1, role="head", token="t"),
        device_id="device-for-the-test",
        client=_Recorder(),
    )
    duty = RayDuty(RayConfig(node_ip="127.0.0.1"), sandbox=_BrokenSandbox())
    duty.run(agent)  # type: ignore[arg-type]
    (report,) = agent.client.reports
    assert report.state == "failed" and "Failed to bind" in (report.error or "")
    assert duty.node is None
