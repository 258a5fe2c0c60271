"""The buyer's own peer in a cluster's overlay (``idlegrid clusters connect``, the demo).

``Joined`` makes a WireGuard interface on this machine with a fresh key pair
(root and ``wireguard-go`` needed), has the control plane admit its public key to
the cluster (``POST /v1/clusters/{id}/peers``, signed by the buyer's wallet, the
cluster's owner, whose key also signs its hellos), and keeps it in line on a
thread of its own: it asks for the peers' endpoints every ``refresh_s`` and runs
``OverlayMember.update`` four times a second. ``wait`` returns the cluster once its
head answers WireGuard, so that its dashboard, Jobs API and Ray client are
reachable from here.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import uuid

from solders.keypair import Keypair

from idlegrid.core.overlay import OVERLAY_SPACE
from idlegrid.protocol import ClusterView, OverlayAssignment
from idlegrid.sdk import Client
from idlegrid.worker.overlay import OverlayMember

log = logging.getLogger("idlegrid.cli.connect")


class Joined:
    """This machine as the buyer's peer in ``cluster_id``'s overlay, while entered."""

    def __init__(
        self, server: str, wallet: Keypair, cluster_id: str, refresh_s: float = 2.0
    ) -> None:
        self.server = server
        self.wallet = wallet
        self.cluster_id = cluster_id
        self.refresh_s = refresh_s
        self.client = Client(server, keypair=wallet)
        self.member: OverlayMember | None = None
        self.place: OverlayAssignment | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Joined:
        self.member = OverlayMember(f"igb{uuid.uuid4().hex[:8]}", self.wallet)
        try:
            self.place = self.client.join_overlay(self.cluster_id, self.member.public_key)
            self.member.attach(self.place.address, self.place.prefix)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="overlay-peer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.member is not None and self.place is not None
        last = time.monotonic()
        with Client(self.server, keypair=self.wallet) as client:
            while not self._stop.wait(0.25):
                if time.monotonic() - last >= self.refresh_s:
                    last = time.monotonic()
                    try:
                        self.place = client.join_overlay(self.cluster_id, self.member.public_key)
                    except Exception as exc:  # the control plane away a moment: keep the paths
                        log.warning("could not refresh the overlay's peers: %s", exc)
                self.member.update(self.cluster_id, self.place)

    def wait(self, timeout_s: float = 90.0) -> ClusterView:
        """The cluster, once its head has answered WireGuard (else TimeoutError)."""
        assert self.member is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            view = self.client.get_cluster(self.cluster_id)
            head = head_host(view)
            if view.dashboard_url and head and self.member.reachable(head):
                return view
            time.sleep(0.25)
        raise TimeoutError(f"the head of {self.cluster_id} did not answer over the overlay")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.member is not None:
            self.member.close()
        self.client.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


def head_host(view: ClusterView) -> str:
    """The host of the cluster's Ray address ("" before it has one)."""
    return (view.ray_address or "").rpartition(":")[0]


def on_overlay(view: ClusterView) -> bool:
    """Whether the cluster's Ray listens on overlay addresses (join it to reach it)."""
    try:
        return ipaddress.ip_address(head_host(view)) in OVERLAY_SPACE
    except ValueError:
        return False
