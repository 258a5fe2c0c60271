"""Helpers for tests that rent clusters on a real local network (``cloud`` fixture)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from solders.keypair import Keypair

from idlegrid.cli.connect import on_overlay
from idlegrid.errors import ClusterNotActive
from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import ClusterView, DeployRequest, FaucetRequest
from idlegrid.sdk import Client


def funded_buyer(net: LocalNetwork, io: str = "1000") -> tuple[Client, str]:
    kp = Keypair()
    client = Client(net.server_url, keypair=kp)
    client.faucet(str(kp.pubkey()), FaucetRequest(asset="IO", amount=io))
    return client, str(kp.pubkey())


def wait_status(
    client: Client, cluster_id: str, want: str = "running", timeout_s: float = 120.0
) -> ClusterView:
    deadline = time.monotonic() + timeout_s
    view = client.get_cluster(cluster_id)
    while view.status != want and time.monotonic() < deadline:
        assert view.status not in ("failed", "terminated", "completed"), view
        time.sleep(0.25)
        view = client.get_cluster(cluster_id)
    assert view.status == want, view
    return view


def deploy_running(client: Client, quantity: int, name: str = "test") -> ClusterView:
    """Deploy once ``quantity`` devices are free (an earlier test's cluster may still be
    winding down, a restarted agent still proving itself), then wait until running."""
    deadline = time.monotonic() + 120
    while (
        client.list_devices(readiness="cluster_ready").total < quantity
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    quote = client.quote(DeployRequest(name=name, hardware="cpu", quantity=quantity))
    return wait_status(client, client.deploy(quote.id).id)


@contextlib.contextmanager
def rented(client: Client, quantity: int, name: str, join: bool = True) -> Iterator[ClusterView]:
    """A running cluster for the block, terminated after it however the block ends
    (a failed test must not keep the shared network's devices). On the overlay,
    this host joins it as the buyer's peer unless ``join`` is False."""
    view = deploy_running(client, quantity, name)
    try:
        if join:
            with joined(client, view) as view:
                yield view
        else:
            yield view
    finally:
        with contextlib.suppress(ClusterNotActive):
            client.terminate_cluster(view.id)


@contextlib.contextmanager
def joined(client: Client, view: ClusterView) -> Iterator[ClusterView]:
    """On the overlay, this host joins the cluster as the buyer's own peer
    (``idlegrid clusters connect``, as a buyer would), so that its dashboard, Jobs
    API and Ray client are reachable from here; off it, nothing to do."""
    if not on_overlay(view):
        yield view
        return
    assert client.keypair is not None, "connect signs with the buyer's wallet"
    with tempfile.TemporaryDirectory() as tmp:
        wallet = Path(tmp) / "wallet.json"
        wallet.write_text(json.dumps(list(bytes(client.keypair))))
        wallet.chmod(0o600)
        command = [sys.executable, "-m", "idlegrid.cli.main", "clusters", "connect", view.id]
        command += ["--keypair", str(wallet), "--server", str(client.base_url), "--json"]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert proc.stdout is not None
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
            reader.start()
            deadline = time.monotonic() + 90
            while not any(x.startswith("{") for x in lines) and time.monotonic() < deadline:
                assert proc.poll() is None, "".join(lines)[-2000:]
                time.sleep(0.2)
            assert any(x.startswith("{") for x in lines), "".join(lines)[-2000:]
            yield client.get_cluster(view.id)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def device_index(net: LocalNetwork, device_id: str) -> int:
    return next(i for i in net.agents if net.device_id(i) == device_id)
