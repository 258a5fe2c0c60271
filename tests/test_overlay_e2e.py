"""Clusters across NATs, end to end (docs/networking.md), on network namespaces.

A public network holds the control plane (with its rendezvous) and two relays. Three
homes, each behind its own NAT with no port forwarded: two "easy" NATs (hole
punching works), one "hard" (a mapping per destination: it does not). The buyer
sits behind a NAT of its own. Three devices, one per home, are rented as one
cluster; the buyer joins its overlay (``idlegrid clusters connect``) and submits a
Ray job that works on all three and moves data between them. WireGuard's own view
(``wg show``) must then have the two easy homes talking directly and the hard one
through the relay; a job still completes while a home's NAT changes its public
address beneath it; a node whose WireGuard dies is a failed node; and when the
preferred relay dies, the other carries the relayed paths.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from cloud_support import rented
from netlab import Home, NetLab, netlab_available

from idlegrid.identity import load_or_create_keypair
from idlegrid.localnet import LocalNetwork, sandbox_problem
from idlegrid.protocol import FaucetRequest
from idlegrid.sdk import Client
from idlegrid.worker import wireguard

HERE = Path(__file__).parent
RELAY_PORTS = (3478, 3578)  # two relays: the first is preferred, the second takes over
SERVER_PORT = 18080
PYTHON = sys.executable

_reason = netlab_available() or wireguard.available() or sandbox_problem()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"overlay e2e: {_reason}")


@dataclass
class World:
    lab: NetLab
    net: LocalNetwork
    homes: list[Home]
    buyer: Home
    relays: list[str]
    relay_procs: list[subprocess.Popen[bytes]]

    def cli(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "idlegrid.cli.main", *args]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with NetLab() as lab:
        lab.link_root()
        homes = [lab.add_home("a", "easy"), lab.add_home("b", "easy"), lab.add_home("c", "hard")]
        buyer = lab.add_home("buyer", "easy")
        places = {"server": lab.public, **{f"worker-{i}": h.ns for i, h in enumerate(homes)}}
        relays = [f"{lab.public_ip}:{port}" for port in RELAY_PORTS]
        net = LocalNetwork(
            tmp_path_factory.mktemp("overlay"),
            port=SERVER_PORT,
            workers=3,
            heartbeat_interval_s=1.0,
            min_uptime_s=2.0,
            host=lab.public_ip,
            wrap=lambda name: ["ip", "netns", "exec", places[name]],
            worker_ips=[h.lan_ip for h in homes],
            env={
                "IDLEGRID_PROOF_MIN_EFFICIENCY": "0.01",
                "IDLEGRID_PROOF_RETRY_S": "2",
                "IDLEGRID_OVERLAY": "true",
                "IDLEGRID_OVERLAY_HOST": lab.public_ip,
                "IDLEGRID_OVERLAY_RELAYS": json.dumps(relays),
            },
        )
        with net:
            net.start_server()
            log = open(net.data_dir / "logs" / "relay.log", "ab")  # noqa: SIM115
            world = World(lab, net, homes, buyer, relays, [])
            try:
                for port in RELAY_PORTS:
                    world.relay_procs.append(
                        lab.popen(
                            lab.public,
                            [*world.cli("relay"), "--listen", f"0.0.0.0:{port}", "--server",
                             net.server_url],
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )  # fmt: skip
                for i in range(3):
                    net.start_worker(i)
                with Client(net.server_url) as client:
                    net.wait_for(
                        lambda: client.list_devices(readiness="cluster_ready").total == 3,
                        180,
                        "3 devices cluster-ready",
                    )
                yield world
            finally:
                log.close()


def buyer_wallet(world: World, tmp: Path) -> tuple[Client, Path]:
    path = tmp / "buyer.json"
    kp, _ = load_or_create_keypair(path)
    client = Client(world.net.server_url, keypair=kp)
    client.faucet(str(kp.pubkey()), FaucetRequest(asset="IO", amount="1000"))
    return client, path


class Lines:
    """A child's output, line by line, read on a thread (so waits can time out)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait(self, predicate: object, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if callable(predicate) and predicate(line):
                    return line
            time.sleep(0.2)
        raise AssertionError(f"no such line within {timeout_s} s: {''.join(self.lines)[-3000:]}")


def connect(world: World, cluster_id: str, wallet: Path) -> tuple[subprocess.Popen[str], dict]:
    proc = world.lab.popen(
        world.buyer.ns,
        world.cli("clusters", "connect", cluster_id, "--keypair", str(wallet), "--server",
                  world.net.server_url, "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = Lines(proc.stdout).wait(lambda s: s.startswith("{"), 90)
    return proc, json.loads(line)


def submit(world: World, cluster_id: str, wallet: Path, tmp: Path, *args: str) -> Lines:
    work = tmp / "job"
    work.mkdir(exist_ok=True)
    shutil.copy(HERE / "overlay_job.py", work / "overlay_job.py")
    proc = world.lab.popen(
        world.buyer.ns,
        world.cli("jobs", "submit", cluster_id, "--working-dir", str(work), "--keypair",
                  str(wallet), "--server", world.net.server_url, "--", "python",
                  "overlay_job.py", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return Lines(proc.stdout)


def wg_paths(world: World) -> dict[tuple[int, int], str]:
    """(home i, home j) -> where home i's WireGuard sends to home j's node, from
    ``wg show all dump`` (every interface's UAPI socket is on this host)."""
    dump = subprocess.run(["wg", "show", "all", "dump"], capture_output=True, text=True)
    own: dict[str, str] = {}
    peers: list[tuple[str, str, str]] = []
    for line in dump.stdout.splitlines():
        f = line.split("\t")
        if len(f) == 5:
            own[f[0]] = f[2]
        elif len(f) == 9:
            peers.append((f[0], f[1], f[3]))
    index = {}
    for i in range(3):
        prefix = f"ig{world.net.device_id(i)[:6]}"
        for name in own:
            if name.startswith(prefix):
                index[name] = i
    by_key = {own[name]: i for name, i in index.items()}
    return {
        (index[name], by_key[key]): endpoint
        for name, key, endpoint in peers
        if name in index and key in by_key
    }


def wait_paths(world: World, want: dict[tuple[int, int], str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    paths: dict[tuple[int, int], str] = {}
    while time.monotonic() < deadline:
        paths = wg_paths(world)
        if all(_at(paths.get(pair, ""), where) for pair, where in want.items()):
            return
        time.sleep(1)
    raise AssertionError(f"paths {paths}, wanted {want}")


def _at(endpoint: str, where: str) -> bool:
    """``where`` is an address (any port) or an exact ip:port."""
    return endpoint == where if ":" in where else endpoint.split(":")[0] == where


def test_three_homes_behind_nat_form_one_cluster_direct_where_possible_relayed_else(
    world: World, tmp_path: Path
) -> None:
    client, wallet = buyer_wallet(world, tmp_path)
    with client, rented(client, 3, "overlay", join=False) as view:
        assert view.ray_address and view.ray_address.startswith("100.")
        proc, place = connect(world, view.id, wallet)
        try:
            assert place["dashboard_url"] == view.dashboard_url
            out = submit(world, view.id, wallet, tmp_path, "2", "0")
            done = out.wait(lambda s: "SUCCEEDED" in s or "FAILED" in s, 240)
            assert "SUCCEEDED" in done, "".join(out.lines)[-3000:]
            result = json.loads(out.wait(lambda s: s.startswith("RESULT "), 5)[7:])
            assert result["nodes"] == 3 and len(result["addresses"]) == 3
            assert all(a.startswith("100.") for a in result["addresses"])
            a, b = world.homes[:2]
            relay = world.relays[0]
            wait_paths(
                world,
                {
                    (0, 1): b.public_ip,
                    (1, 0): a.public_ip,
                    (0, 2): relay,
                    (2, 0): relay,
                    (1, 2): relay,
                    (2, 1): relay,
                },
                90,
            )
        finally:
            proc.terminate()


def test_a_job_survives_its_home_nat_changing_its_public_address(
    world: World, tmp_path: Path
) -> None:
    client, wallet = buyer_wallet(world, tmp_path)
    with client, rented(client, 3, "rebind", join=False) as view:
        proc, _ = connect(world, view.id, wallet)
        try:
            out = submit(world, view.id, wallet, tmp_path, "24", "1")
            out.wait(lambda s: s.startswith("round 4/"), 180)
            before = world.homes[0].public_ip
            after = world.lab.rebind(world.homes[0])
            assert after != before
            done = out.wait(lambda s: "SUCCEEDED" in s or "FAILED" in s, 300)
            assert "SUCCEEDED" in done, "".join(out.lines)[-3000:]
            # The direct path is found again at the home's new address.
            wait_paths(world, {(1, 0): after}, 120)
        finally:
            proc.terminate()


def test_a_node_whose_overlay_dies_is_a_failed_node(world: World, tmp_path: Path) -> None:
    """Its peers can no longer reach it: the agent stops its Ray node and reports it
    failed, and the cluster closes the node (without pay from then on)."""
    client, _ = buyer_wallet(world, tmp_path)
    with client, rented(client, 3, "wgdies", join=False) as view:
        worker = next(n.device_id for n in view.nodes if n.role == "worker")
        killed = subprocess.run(["pkill", "-f", f"wireguard-go -f ig{worker[:6]}"])
        assert killed.returncode == 0
        deadline = time.monotonic() + 60
        node = next(n for n in client.get_cluster(view.id).nodes if n.device_id == worker)
        while node.left_at is None and time.monotonic() < deadline:
            time.sleep(0.5)
            node = next(n for n in client.get_cluster(view.id).nodes if n.device_id == worker)
        assert node.left_at is not None, node
        assert client.get_cluster(view.id).status == "running"


def test_when_a_relay_dies_the_next_one_carries_the_relayed_paths(
    world: World, tmp_path: Path
) -> None:
    """Run last: it kills the preferred relay for good."""
    client, wallet = buyer_wallet(world, tmp_path)
    with client, rented(client, 3, "relaydies", join=False) as view:
        proc, _ = connect(world, view.id, wallet)
        try:
            first, second = world.relays
            wait_paths(world, {(0, 2): first, (2, 0): first}, 60)
            world.relay_procs[0].kill()
            wait_paths(world, {(0, 2): second, (2, 0): second, (1, 2): second}, 60)
            out = submit(world, view.id, wallet, tmp_path, "2", "0")
            done = out.wait(lambda s: "SUCCEEDED" in s or "FAILED" in s, 240)
            assert "SUCCEEDED" in done, "".join(out.lines)[-3000:]
        finally:
            proc.terminate()
