"""Helpers for tests that rent clusters on a real local network (``cloud`` fixture)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from solders.keypair import Keypair

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
def rented(client: Client, quantity: int, name: str) -> Iterator[ClusterView]:
    """A running cluster for the block, terminated after it however the block ends
    (a failed test must not keep the shared network's devices)."""
    view = deploy_running(client, quantity, name)
    try:
        yield view
    finally:
        with contextlib.suppress(ClusterNotActive):
            client.terminate_cluster(view.id)


def device_index(net: LocalNetwork, device_id: str) -> int:
    return next(i for i in net.agents if net.device_id(i) == device_id)
