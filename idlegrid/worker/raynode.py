"""The agent's Ray node: start it for an assignment, watch it, stop it.

A hired agent learns its assignment from heartbeat replies (it dials out;
nothing dials in). ``RayDuty`` reconciles what runs with what is assigned:

- an assignment with no node → start one: ``ray start --head`` for the head,
  ``ray start --address <head>`` for a worker once the head's address is known;
- a node for an older assignment (another cluster, generation or role) → stop
  it, then start the new one;
- no assignment → stop the node.

Every node runs with Ray's token authentication (``RAY_AUTH_MODE=token`` and
the cluster's fresh ``RAY_AUTH_TOKEN``) and a custom resource naming the
device (``device:<id>``), so work can be pinned to a hired device.

``ray start --block`` runs as a child in its own process group, stopped as a
group. On Linux it also gets SIGTERM when the agent dies (``PR_SET_PDEATHSIG``):
a dead agent means a dead node, as when the machine itself dies, and Ray
reschedules the node's tasks elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from idlegrid.protocol import Assignment, RayNodeReport

if TYPE_CHECKING:
    from idlegrid.worker.agent import Agent

log = logging.getLogger("idlegrid.worker.ray")

STARTED_MARKER = "Ray runtime started"
NodeState = Literal["starting", "up", "failed", "stopped"]


@dataclass(frozen=True, slots=True)
class RayConfig:
    """How this agent runs Ray nodes (``idlegrid worker start --ray-*``)."""

    node_ip: str | None = None  # the address other nodes reach; None = detect
    object_store_mb: int | None = None  # None = Ray's default (30% of RAM)
    num_cpus: int | None = None  # None = every core
    log_dir: Path | None = None


def free_port() -> int:
    """A free TCP port from the ephemeral range (above Ray's worker ports)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def detect_ip(server_url: str) -> str:
    """The local address that routes towards the control plane."""
    host = server_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0] or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            ip: str = s.getsockname()[0]
            return ip
        except OSError:
            return "127.0.0.1"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RayNode:
    """One ``ray start --block`` process for one assignment."""

    def __init__(self, assignment: Assignment, device_id: str, config: RayConfig, ip: str) -> None:
        self.assignment = assignment
        self.device_id = device_id
        self.config = config
        self.ip = ip
        self.ports: dict[str, int] = {}
        if assignment.role == "head":
            self.ports = {"gcs": free_port(), "dashboard": free_port(), "client": free_port()}
        self.temp_dir = Path(tempfile.gettempdir()) / "idlegrid-ray" / device_id[:12]
        self.up = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: list[str] = []

    @property
    def key(self) -> tuple[str, int, str]:
        a = self.assignment
        return (a.cluster_id, a.generation, a.role)

    def command(self) -> list[str]:
        ray = str(Path(sys.executable).with_name("ray"))
        agent_port, agent_grpc = free_port(), free_port()
        args = [
            ray,
            "start",
            "--block",
            "--disable-usage-stats",
            "--node-ip-address",
            self.ip,
            "--resources",
            json.dumps({f"device:{self.device_id}": 1, "idlegrid": 1}),
            "--dashboard-agent-listen-port",
            str(agent_port),
            "--dashboard-agent-grpc-port",
            str(agent_grpc),
        ]
        if self.config.object_store_mb:
            args += ["--object-store-memory", str(self.config.object_store_mb * 1024 * 1024)]
        if self.config.num_cpus is not None:
            args += ["--num-cpus", str(self.config.num_cpus)]
        # Its own temp dir: nodes of several "machines" on one host would share
        # /tmp/ray/session_*, and one node unpacking a job's working_dir would
        # replace the directory another's driver runs in. Short: Ray puts Unix
        # sockets under it (about 107 bytes at most).
        args += ["--temp-dir", str(self.temp_dir)]
        if self.assignment.role == "head":
            args += [
                "--head",
                "--port",
                str(self.ports["gcs"]),
                "--dashboard-host",
                "0.0.0.0",
                "--dashboard-port",
                str(self.ports["dashboard"]),
                "--ray-client-server-port",
                str(self.ports["client"]),
            ]
        else:
            assert self.assignment.head_address is not None
            args += ["--address", self.gcs_address]
        return args

    @property
    def gcs_address(self) -> str:
        if self.assignment.role == "head":
            return f"{self.ip}:{self.ports['gcs']}"
        assert self.assignment.head_address is not None
        return self.assignment.head_address

    def environment(self) -> dict[str, str]:
        """The environment ``ray start`` runs in: this process's, plus the cluster's."""
        env = dict(os.environ)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.assignment.token,
            RAY_USAGE_STATS_ENABLED="0",
            # Ray code that looks its cluster up without an address (Ray Train's
            # placement-group cleaner) would otherwise find the newest cluster
            # on the host, perhaps another buyer's.
            RAY_ADDRESS=self.gcs_address,
            # Nothing to drain when the cluster ends: stop at once.
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
            # Jobs run `python …`: it must be this environment's, which has Ray.
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        log.info(
            "ray %s node starting for cluster %s (generation %d)",
            self.assignment.role,
            self.assignment.cluster_id,
            self.assignment.generation,
        )

    def _read(self, stream: IO[bytes]) -> None:
        sink = None
        if self.config.log_dir is not None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            sink = open(self.config.log_dir / f"ray-{self.assignment.cluster_id}.log", "ab")  # noqa: SIM115
        try:
            for raw in stream:
                if sink is not None:
                    sink.write(raw)
                    sink.flush()
                line = raw.decode(errors="replace")
                self.output = [*self.output[-40:], line]
                if STARTED_MARKER in line:
                    self.up.set()
        finally:
            if sink is not None:
                sink.close()

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop_in_background(self) -> threading.Thread:
        """Stop without blocking the agent's loop (heartbeats must go on)."""
        thread = threading.Thread(target=self.stop, name="ray-stop", daemon=True)
        thread.start()
        return thread

    def stop(self, grace_s: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            # `ray start --block` stops its own daemons on SIGTERM; the group
            # kill below is for the ones that outlive the grace period.
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
        proc.wait()
        self.remove_sessions()
        log.info("ray node for cluster %s stopped", self.assignment.cluster_id)

    def remove_sessions(self) -> None:
        """Delete the node's Ray sessions (the buyer's job files, logs and spilled
        objects) once it has stopped: a rental leaves nothing on the provider's disk,
        and session folders no longer pile up."""
        for path in self.temp_dir.glob("session_*"):
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)


class RayDuty:
    """Keep this device's Ray node in line with its assignment."""

    name = "ray"

    def __init__(self, config: RayConfig | None = None, interval_s: float = 0.25) -> None:
        self.config = config or RayConfig()
        self.interval_s = interval_s
        self.node: RayNode | None = None
        self._stopping: threading.Thread | None = None
        self._reported_up = False

    def run(self, agent: Agent) -> None:
        """Never blocks: starting and stopping Ray happen in the background."""
        want = agent.assignment
        node = self.node
        if node is not None and (
            want is None or (want.cluster_id, want.generation, want.role) != node.key
        ):
            self._stopping = node.stop_in_background()
            self.node = None
            self._report(agent, node.assignment, "stopped")
            node = None
        if node is None:
            if want is None or (want.role == "worker" and not want.head_address):
                return
            if self._stopping is not None and self._stopping.is_alive():
                return  # one Ray node per device: wait for the old one to go
            ip = self.config.node_ip or detect_ip(str(agent.client.base_url))
            node = self.node = RayNode(want, agent.device_id, self.config, ip)
            self._reported_up = False
            node.start()
            self._report(agent, want, "starting")
            return
        if node.exited():
            error = "".join(node.output[-5:]).strip()[-500:] or "ray exited"
            log.error("ray node exited: %s", error)
            self.node = None
            self._report(agent, node.assignment, "failed", error=error)
        elif node.up.is_set() and not self._reported_up:
            self._reported_up = True
            self._report(agent, node.assignment, "up")

    def _report(
        self, agent: Agent, a: Assignment, state: NodeState, error: str | None = None
    ) -> None:
        node = self.node
        ports = node.ports if node is not None and node.assignment is a else {}
        report = RayNodeReport(
            cluster_id=a.cluster_id,
            generation=a.generation,
            state=state,
            node_ip=node.ip if node is not None else None,
            gcs_port=ports.get("gcs"),
            dashboard_port=ports.get("dashboard"),
            client_port=ports.get("client"),
            error=error,
        )
        try:
            agent.assignment = agent.client.report_ray_node(agent.device_id, report)
        except Exception as exc:  # the next heartbeat carries the assignment anyway
            log.warning("could not report ray node %s: %s", state, exc)

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()
            self.node = None
        if self._stopping is not None:
            self._stopping.join()
