"""End to end with real processes: a control plane and three worker agents, each
a subprocess as a provider would run it, observed through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import DeviceList, DeviceStatus
from idlegrid.sdk import Client
from idlegrid.worker.raynode import free_port

pytestmark = pytest.mark.e2e

HEARTBEAT_S = 2.0


def cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "idlegrid.cli.main", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    data_dir: Path = tmp_path_factory.mktemp("localnet")
    with LocalNetwork(
        data_dir,
        port=free_port(),
        workers=3,
        heartbeat_interval_s=HEARTBEAT_S,
        min_uptime_s=2 * HEARTBEAT_S,
    ) as network:
        network.start()
        yield network


@pytest.fixture(scope="module")
def client(net: LocalNetwork) -> Iterator[Client]:
    with Client(net.server_url) as c:
        yield c


def status_of(client: Client, device_id: str) -> DeviceStatus:
    return client.get_device(device_id).status


def test_three_agents_join_with_detected_hardware(net: LocalNetwork, client: Client) -> None:
    net.wait_for(lambda: client.list_devices(status="up").total == 3, 60, "3 devices up")
    listed = DeviceList.model_validate_json(
        cli("devices", "list", "--json", "--server", net.server_url)
    )
    assert listed.total == 3
    assert {d.location for d in listed.items} == {"US", "DE", "JP"}
    for d in listed.items:
        assert d.status is DeviceStatus.UP and d.kind.value == "cpu"
        assert d.hardware.cpu_cores >= 1 and d.hardware.ram_mb > 0
        assert d.hardware.disk_total_gb > 0 and d.hardware.os == "Linux"
    shown = json.loads(
        cli("devices", "show", listed.items[0].id, "--json", "--server", net.server_url)
    )
    assert shown["id"] == listed.items[0].id and shown["events"][-1]["kind"] == "registered"


def test_agents_prove_their_compute_and_become_cluster_ready(
    net: LocalNetwork, client: Client
) -> None:
    def all_ready() -> bool:
        return client.list_devices(readiness="cluster_ready").total == 3

    net.wait_for(all_ready, 60, "3 devices proven and cluster ready")
    device = net.device_id(0)
    proofs = json.loads(cli("devices", "proofs", device, "--json", "--server", net.server_url))
    (proof,) = proofs["items"]
    assert proof["status"] == "verified" and proof["prover"] == "numpy"
    assert proof["measured_tflops"] >= 0.2 * proof["claimed_tflops"]
    view = client.get_device(device)
    # Loopback beats the low tier's floor by far; how far depends on the load here.
    assert view.tier is not None and view.tier >= 1
    assert view.measured_tflops == proof["measured_tflops"]


def test_killed_agent_goes_down_within_three_intervals_and_comes_back(
    net: LocalNetwork, client: Client
) -> None:
    device = net.device_id(1)
    net.wait_for(lambda: status_of(client, device) is DeviceStatus.UP, 30, "device 1 up")
    net.kill_worker(1)
    killed = time.monotonic()
    net.wait_for(
        lambda: status_of(client, device) is DeviceStatus.DOWN,
        10 * HEARTBEAT_S,
        "device down",
        poll_s=0.05,
    )
    assert time.monotonic() - killed <= 3 * HEARTBEAT_S
    before = client.get_device(device).uptime_s

    net.start_worker(1)
    net.wait_for(lambda: status_of(client, device) is DeviceStatus.UP, 60, "device back up")
    net.wait_for(
        lambda: client.get_device(device).uptime_s >= before + 2 * HEARTBEAT_S,
        10 * HEARTBEAT_S,
        "uptime to be accounted after the restart",
    )
    events = client.get_device(device).events
    changes = [str(e.detail.get("to")) for e in events if e.kind == "status"]
    assert changes[:2] == ["up", "down"]


def test_agents_survive_a_control_plane_restart(net: LocalNetwork, client: Client) -> None:
    net.wait_for(lambda: client.list_devices(status="up").total == 3, 60, "3 devices up")
    uptime = {d.id: d.uptime_s for d in client.list_devices().items}
    net.stop_server()
    time.sleep(HEARTBEAT_S)  # the agents find nobody there and back off
    net.start_server()
    net.wait_for(lambda: client.list_devices(status="up").total == 3, 60, "3 devices up again")
    net.wait_for(
        lambda: all(d.uptime_s > uptime[d.id] for d in client.list_devices().items),
        10 * HEARTBEAT_S,
        "uptime to grow after the restart",
    )
    assert client.list_devices().total == 3  # nobody registered twice


def test_wallet_and_audit_from_the_command_line(net: LocalNetwork, tmp_path: Path) -> None:
    from idlegrid.identity import load_or_create_keypair

    key = tmp_path / "buyer.json"
    kp, _ = load_or_create_keypair(key)
    server = ["--server", net.server_url]
    cli("wallet", "faucet", "IO", "10", "--keypair", str(key), *server)
    paid = json.loads(
        cli("wallet", "withdraw", "IO", "4", "--keypair", str(key), "--id", "w1", "--json", *server)
    )
    assert paid["amount"] == "4.00000000" and not paid["replayed"]
    again = json.loads(
        cli("wallet", "withdraw", "IO", "4", "--keypair", str(key), "--id", "w1", "--json", *server)
    )
    assert again["replayed"]
    view = json.loads(cli("wallet", "balance", "--keypair", str(key), "--json", *server))
    assert view["owner"] == str(kp.pubkey()) and view["balances"][0]["balance"] == "6.00000000"
    report = json.loads(cli("ledger", "audit", "--json", *server))
    assert report["ok"], report
    schedule = json.loads(cli("token", "schedule", "--by", "year", "--json"))
    assert len(schedule) == 21
