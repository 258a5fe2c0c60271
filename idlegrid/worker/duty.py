"""The duty contract, on one page: what a duty is, and what it sees of the agent.

A duty (after SkyPilot's skylet events) has a ``name``, an ``interval_s`` and a
``run(agent)``; the agent (``agent.py``) runs each on its interval and logs one
that fails. What a duty may read and set on the agent is ``AgentView``: the
agent's client and device id, its hardware, and the three things heartbeats and
duties hand each other (the device's status, a pending challenge, the cluster
assignment). The duties (``duties.py``, ``raynode.py``) import this page, not
the agent, so the agent imports its duties and nothing imports the agent back.
"""

from __future__ import annotations

from typing import Protocol

from idlegrid.protocol import Assignment, DeviceStatus, HardwareInfo
from idlegrid.sdk import Client


class AgentView(Protocol):
    """The agent as a duty sees it (``Agent`` is one)."""

    client: Client
    device_id: str
    hardware: HardwareInfo
    status: DeviceStatus | None
    pending_challenge: str | None  # set by a heartbeat, taken by the challenge duty
    assignment: Assignment | None  # the Ray node the server wants this device to run


class Duty(Protocol):
    name: str
    interval_s: float

    def run(self, agent: AgentView) -> None: ...
