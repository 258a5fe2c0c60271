"""What each device's next heartbeat reply carries: its open challenge and its
cluster assignment.

The services that decide them write here (``ProofService`` when it issues or
closes a challenge, ``ClusterService`` when a cluster's nodes change); the
heartbeat's hot path reads a device's box in one dictionary lookup and reaches
into no service. One control-plane process owns the boxes (docs/architecture.md
on replicas); each service refills its part from the database at start.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from idlegrid.protocol import Assignment


@dataclass(frozen=True, slots=True)
class Box:
    challenge_id: str | None = None
    assignment: Assignment | None = None

    @property
    def busy(self) -> bool:
        """Proving or hired: the device's load is the network's, not foreign."""
        return self.challenge_id is not None or self.assignment is not None


EMPTY = Box()


class Mailbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[str, Box] = {}

    def get(self, device_id: str) -> Box:
        return self._boxes.get(device_id, EMPTY)

    def challenge(self, device_id: str) -> str | None:
        return self.get(device_id).challenge_id

    def assignment(self, device_id: str) -> Assignment | None:
        return self.get(device_id).assignment

    def set_challenge(self, device_id: str, challenge_id: str | None) -> None:
        with self._lock:
            self._put(device_id, Box(challenge_id, self.get(device_id).assignment))

    def set_assignment(self, device_id: str, assignment: Assignment | None) -> None:
        with self._lock:
            self._put(device_id, Box(self.get(device_id).challenge_id, assignment))

    def drop_assignment(self, device_id: str, cluster_id: str) -> None:
        """Forget the device's assignment if it is still to ``cluster_id``."""
        with self._lock:
            box = self.get(device_id)
            if box.assignment is not None and box.assignment.cluster_id == cluster_id:
                self._put(device_id, Box(box.challenge_id, None))

    def load_challenges(self, challenges: Mapping[str, str]) -> None:
        """Replace every open challenge (at start, from the database)."""
        with self._lock:
            for device_id, box in list(self._boxes.items()):
                self._put(device_id, Box(None, box.assignment))
            for device_id, challenge_id in challenges.items():
                self._put(device_id, Box(challenge_id, self.get(device_id).assignment))

    def __len__(self) -> int:
        return len(self._boxes)

    def _put(self, device_id: str, box: Box) -> None:
        if box == EMPTY:
            self._boxes.pop(device_id, None)
        else:
            self._boxes[device_id] = box
