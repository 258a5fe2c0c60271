"""The worker agent's main loop: register, then run its duties on their intervals.

Duties are small periodic classes (after SkyPilot's skylet events): each has an
``interval_s`` and a ``run(agent)`` (the contract is ``duty.py``). A duty that
fails is logged and tried again at its next turn; the agent never dies of one.
When the server cannot be reached, the agent backs off exponentially (with
jitter, capped) and carries on where it left off once the server is back. A
device the server no longer knows (for instance after its database was reset)
registers again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil
from solders.keypair import Keypair

from idlegrid.core.signing import owner_attestation_message
from idlegrid.errors import (
    AuthenticationError,
    DeviceTerminated,
    IdlegridError,
    TransportError,
    Unavailable,
    UnknownDevice,
)
from idlegrid.protocol import (
    Assignment,
    DeviceStatus,
    HardwareInfo,
    HeartbeatRequest,
    RegisterRequest,
)
from idlegrid.sdk import Client
from idlegrid.version import __version__
from idlegrid.worker.beats import BeatChannel
from idlegrid.worker.duties import ChallengeDuty, ConnectivityDuty
from idlegrid.worker.duty import AgentView, Duty
from idlegrid.worker.hardware import gpu_utilization
from idlegrid.worker.raynode import RayConfig, RayDuty, sandbox_prefix
from idlegrid.worker.sandbox import NoSandbox, Sandbox

log = logging.getLogger("idlegrid.worker")

RETRYABLE = (TransportError, Unavailable)


@dataclass
class Backoff:
    """Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … capped at ``cap_s``."""

    base_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * 2**self.attempts)
        self.attempts += 1
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempts = 0


class HeartbeatDuty:
    """A heartbeat each interval: a beat (one datagram, worker/beats.py) while a beat
    session holds, the device serves no cluster and the server has nothing for it;
    else signed HTTP."""

    name = "heartbeat"

    def __init__(self, interval_s: float, beats: BeatChannel | None = None) -> None:
        self.interval_s = interval_s
        self.beats = beats

    def run(self, agent: AgentView) -> None:
        gpu = gpu_utilization() if agent.hardware.gpus else None
        cpu = psutil.cpu_percent(interval=None)
        # A device serving a cluster heartbeats over HTTP: only its reply says when the
        # assignment changes or ends (an ack says only that the mailbox holds something).
        serving = agent.assignment is not None
        channel = self.beats
        if channel is not None and channel.open and not serving:
            ack = channel.beat(cpu, gpu, timeout_s=min(1.0, self.interval_s / 2))
            if ack is not None:
                agent.status = ack.status
                self.interval_s = ack.interval_s
                if not ack.http_wanted:
                    return
        beat_key = channel.new_key() if channel is not None and channel.wants_session() else None
        req = HeartbeatRequest(cpu_percent=cpu, gpu_percent=gpu, beat_key=beat_key)
        resp = agent.client.heartbeat(agent.device_id, req)
        agent.status = resp.status
        agent.pending_challenge = resp.challenge_id or agent.pending_challenge
        agent.assignment = resp.assignment
        self.interval_s = resp.interval_s  # the server sets the pace
        if channel is not None and beat_key is not None and resp.beat is not None:
            channel.accept(resp.beat)


class Agent:
    def __init__(
        self,
        client: Client,
        hardware: HardwareInfo,
        *,
        name: str | None = None,
        location: str | None = None,
        owner: Keypair | None = None,
        heartbeat_interval_s: float = 10.0,
        connectivity_interval_s: float = 6 * 3600,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        ray: RayConfig | None = None,
        sandbox: Sandbox | None = None,
        beats: bool = False,
    ) -> None:
        if client.keypair is None:
            raise ValueError("the agent's client needs the device keypair")
        self.client = client
        self.device_id = str(client.keypair.pubkey())
        self.hardware = hardware
        self.name = name
        self.location = location
        self.owner = owner  # files the device under this owner, who attests to it
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.registered = False
        self.status: DeviceStatus | None = None
        self.pending_challenge: str | None = None
        self.assignment: Assignment | None = None
        self.challenges = ChallengeDuty()
        self.sandbox: Sandbox = sandbox or NoSandbox()
        self.sandbox.sweep(sandbox_prefix(self.device_id))  # what a killed agent left
        self.ray = RayDuty(ray, sandbox=self.sandbox)
        channel = None
        if beats:  # over UDP to the API's host; an in-process client has none
            host = urlsplit(client.base_url).hostname or "localhost"
            channel = BeatChannel(network=client.network, device_id=self.device_id, api_host=host)
        self.heartbeat = HeartbeatDuty(heartbeat_interval_s, channel)
        self.duties: list[Duty] = [
            self.heartbeat,
            self.challenges,
            ConnectivityDuty(connectivity_interval_s),
            self.ray,
        ]
        self._next_run: dict[str, float] = {}

    def register(self) -> None:
        owner = owner_signature = None
        if self.owner is not None:  # signed for this server's network, asked now
            owner = str(self.owner.pubkey())
            message = owner_attestation_message(self.client.network(), self.device_id)
            owner_signature = str(self.owner.sign_message(message))
        view = self.client.register_device(
            RegisterRequest(
                hardware=self.hardware,
                name=self.name,
                location=self.location,
                owner=owner,
                owner_signature=owner_signature,
                agent_version=__version__,
                sandbox=self.sandbox.info(),
            )
        )
        self.registered = True
        self.status = view.status
        log.info("registered %s as %s (%s, %s)", self.device_id, view.status, view.kind, view.model)

    def step(self) -> float:
        """Do whatever is due; return how long to sleep before the next step."""
        try:
            if not self.registered:
                self.register()
                self._next_run.clear()
            for duty in self.duties:
                if self._next_run.get(duty.name, 0.0) <= self.clock():
                    self._run_duty(duty)
                    self._next_run[duty.name] = self.clock() + duty.interval_s
        except (*RETRYABLE, AuthenticationError) as exc:
            # An unreachable server, or one that refuses our signature (a skewed
            # clock, say): both may heal, so wait and try again rather than exit.
            delay = self.backoff.next_delay()
            log.warning("%s: %s; retrying in %.1fs", type(exc).__name__, exc.message, delay)
            return delay
        self.backoff.reset()
        if not self.registered:
            return 0.0
        now = self.clock()
        return max(0.0, min(self._next_run.values(), default=now + 1.0) - now)

    def _run_duty(self, duty: Duty) -> None:
        """Run one duty; only the errors the main loop acts on escape."""
        try:
            duty.run(self)
        except UnknownDevice:
            log.warning("the server does not know this device; registering again")
            self.registered = False
        except (DeviceTerminated, AuthenticationError, *RETRYABLE):
            raise
        except IdlegridError as exc:
            log.error("duty %s refused: %s (%s)", duty.name, exc.message, exc.code)
        except Exception:
            log.exception("duty %s failed", duty.name)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set or the device is terminated."""
        try:
            while not stop.is_set():
                try:
                    delay = self.step()
                except DeviceTerminated:
                    log.error("device %s was terminated by its owner; exiting", self.device_id)
                    return
                stop.wait(delay)
        finally:
            self.ray.close()
            if self.heartbeat.beats is not None:
                self.heartbeat.beats.close()
