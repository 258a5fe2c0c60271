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

On a cluster deployed with the overlay (``Assignment.overlay``), the node gets a
WireGuard interface with a fresh key pair first (``worker/overlay.py``), whose public
key goes with the node's reports; its tunnel is moved into the sandbox, Ray binds
to the overlay address, and each tick keeps the overlay's peers and paths in line.

``ray start --block`` runs inside the agent's sandbox (``worker/sandbox.py``: the
buyer's driver, tasks and actors all run in the node), with its ports from one
block (``port_block``), as a child in its own process group. It dies with the
agent: a dead agent means a dead node, as when the machine itself dies, and Ray
reschedules the node's tasks elsewhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import psutil

from idlegrid.protocol import Assignment, RayNodeReport
from idlegrid.worker.duty import AgentView
from idlegrid.worker.overlay import OverlayMember
from idlegrid.worker.sandbox import Launched, Limits, NodeSpec, NoSandbox, Sandbox

log = logging.getLogger("idlegrid.worker.ray")

STARTED_MARKER = "Ray runtime started"
NodeState = Literal["starting", "up", "failed", "stopped"]


@dataclass(frozen=True, slots=True)
class RayConfig:
    """How this agent runs Ray nodes (``idlegrid worker start --ray-*``)."""

    node_ip: str | None = None  # the address other nodes reach; None = detect
    object_store_mb: int | None = None  # None = Ray's default (30% of RAM)
    num_cpus: int | None = None  # None = every core
    memory_mb: int | None = None  # the node's memory cap (sandbox); None = 90% of RAM
    log_dir: Path | None = None
    gpus: tuple[int, ...] = ()  # the GPUs this device lends
    peer_network: str | None = None  # host addresses the sandbox leaves open (local peers)


# Every node's ports come from one block, so a sandbox forwards a known set: the
# fixed services first, then Ray's worker ports, then the rest, which the sandbox
# makes its network namespace's ephemeral range (``NodeSpec.ephemeral``): a port a
# buyer's code binds to 0 (torch.distributed's store, gloo's pairs) is reachable by
# its peers too. Outside Ray's default worker ports (10002-19999) and the kernel's
# ephemeral range (32768-60999).
PORT_BLOCK = 1000
PORT_BLOCKS = range(20000, 32000, PORT_BLOCK)
PORTS = ("gcs", "dashboard", "client", "node_manager", "object_manager", "agent_listen",
         "agent_grpc", "metrics", "runtime_env")  # fmt: skip
FIRST_WORKER_PORT = 10  # offsets in the block: Ray's workers take 10-99,
FIRST_EPHEMERAL_PORT = 100  # and everything else binds from 100 up


def free_port() -> int:
    """A free TCP port from the ephemeral range (above Ray's worker ports)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # As the servers will: a just-stopped node's connections in TIME_WAIT do not
        # keep its block from the next node.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_block(ip: str, taken: frozenset[int] = frozenset()) -> range:
    """The first block of ``PORT_BLOCK`` ports that are all free on ``ip`` (pass
    "0.0.0.0" for a node that listens on every address, as an unsandboxed Ray does)."""
    for start in PORT_BLOCKS:
        block = range(start, start + PORT_BLOCK)
        if start not in taken and all(port_is_free(p, ip) for p in block):
            return block
    raise RuntimeError(f"no free block of {PORT_BLOCK} ports on {ip}")


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


class RayNode:
    """One ``ray start --block`` process for one assignment, run by a sandbox."""

    def __init__(
        self,
        assignment: Assignment,
        device_id: str,
        config: RayConfig,
        ip: str,
        sandbox: Sandbox | None = None,
        overlay: OverlayMember | None = None,
    ) -> None:
        self.assignment = assignment
        self.device_id = device_id
        self.config = config
        # On the overlay, Ray binds to and advertises the node's overlay address; the
        # sandbox keeps ``ip`` for its own way out (pasta), with no port forwarded.
        self.overlay = overlay if assignment.overlay is not None else None
        self.underlay_ip = ip
        self.ip = assignment.overlay.address if self.overlay and assignment.overlay else ip
        self.sandbox: Sandbox = sandbox or NoSandbox()
        # A sandboxed node's ports are pasta's, on its own address; an unsandboxed Ray
        # listens on every address, so its block must be free on all of them.
        self.block = port_block(self.underlay_ip if self.sandboxed else "0.0.0.0")
        self.ports = {name: self.block.start + i for i, name in enumerate(PORTS)}
        if assignment.role != "head":  # a worker runs no control store, dashboard or client
            self.ports = {
                k: v for k, v in self.ports.items() if k not in ("gcs", "dashboard", "client")
            }
        # Ray's temp dir: inside the sandbox, its private /tmp; outside, one of its own
        # (nodes of several "machines" on one host would otherwise share /tmp/ray, and
        # one node unpacking a job's working_dir would replace another's). Short: Ray
        # puts Unix sockets under it (about 107 bytes at most).
        self.temp_dir = (
            Path("/tmp/ray")
            if self.sandboxed
            else Path(tempfile.gettempdir()) / "idlegrid-ray" / device_id[:12]
        )
        self.up = threading.Event()
        self.launched: Launched | None = None
        self.output: list[str] = []
        self.oom_kills = 0

    @property
    def sandboxed(self) -> bool:
        return self.sandbox.backend != "none"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.launched.proc if self.launched is not None else None

    @property
    def key(self) -> tuple[str, int, str]:
        a = self.assignment
        return (a.cluster_id, a.generation, a.role)

    def command(self) -> list[str]:
        ray = str(Path(sys.executable).with_name("ray"))
        p = self.ports
        args = [
            ray,
            "start",
            "--block",
            "--disable-usage-stats",
            "--node-ip-address",
            self.ip,
            "--resources",
            json.dumps({f"device:{self.device_id}": 1, "idlegrid": 1}),
            "--node-manager-port",
            str(p["node_manager"]),
            "--object-manager-port",
            str(p["object_manager"]),
            "--dashboard-agent-listen-port",
            str(p["agent_listen"]),
            "--dashboard-agent-grpc-port",
            str(p["agent_grpc"]),
            "--metrics-export-port",
            str(p["metrics"]),
            "--runtime-env-agent-port",
            str(p["runtime_env"]),
            "--min-worker-port",
            str(self.block.start + FIRST_WORKER_PORT),
            "--max-worker-port",
            str(self.block.start + FIRST_EPHEMERAL_PORT - 1),
            "--temp-dir",
            str(self.temp_dir),
        ]
        if self.config.object_store_mb:
            args += ["--object-store-memory", str(self.config.object_store_mb * 1024 * 1024)]
        if self.config.num_cpus is not None:
            args += ["--num-cpus", str(self.config.num_cpus)]
        if self.sandboxed:
            # Ray's logical memory, under the kernel's cap (the store counts there too).
            args += ["--memory", str(self.memory_mb * 1024 * 1024 * 7 // 10)]
        if self.assignment.role == "head":
            args += [
                "--head",
                "--port",
                str(p["gcs"]),
                # In the sandbox every interface is the namespace's own; outside,
                # the node's address only.
                "--dashboard-host",
                "0.0.0.0" if self.sandboxed else self.ip,
                "--dashboard-port",
                str(p["dashboard"]),
                "--ray-client-server-port",
                str(p["client"]),
            ]
        else:
            assert self.assignment.head_address is not None
            args += ["--address", self.gcs_address]
        return args

    @property
    def memory_mb(self) -> int:
        if self.config.memory_mb:
            return self.config.memory_mb
        return int(psutil.virtual_memory().total * 0.9) // (1024 * 1024)

    @property
    def gcs_address(self) -> str:
        if self.assignment.role == "head":
            return f"{self.ip}:{self.ports['gcs']}"
        assert self.assignment.head_address is not None
        return self.assignment.head_address

    def environment(self) -> dict[str, str]:
        """The cluster's variables for ``ray start``: the sandbox adds only its own."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.assignment.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray code that looks its cluster up without an address (Ray Train's
            # placement-group cleaner) would otherwise find the newest cluster
            # on the host, perhaps another buyer's.
            "RAY_ADDRESS": self.gcs_address,
            # Nothing to drain when the cluster ends: stop at once.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "PYTHONUNBUFFERED": "1",
        }

    def spec(self) -> NodeSpec:
        a = self.assignment
        unique = f"{a.generation % 1000}{a.role[0]}{uuid.uuid4().hex[:4]}"
        attach = None
        if self.overlay is not None and a.overlay is not None:
            member, place = self.overlay, a.overlay

            def attach(netns: str | None) -> None:
                member.attach(place.address, place.prefix, netns)

        return NodeSpec(
            name=sandbox_prefix(self.device_id) + unique,
            ip=self.underlay_ip,
            overlay_ip=self.ip if self.overlay is not None else None,
            attach=attach,
            ports=self.block,
            ephemeral=range(self.block.start + FIRST_EPHEMERAL_PORT, self.block.stop),
            peer_network=self.config.peer_network,
            command=self.command(),
            env=self.environment(),
            gpus=self.config.gpus,
            limits=Limits(cpus=self.config.num_cpus, memory_mb=self.memory_mb),
        )

    def start(self) -> None:
        self.launched = self.sandbox.launch(self.spec())
        assert self.launched.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.launched.proc.stdout,), daemon=True).start()
        log.info(
            "ray %s node starting for cluster %s (generation %d, sandbox %s)",
            self.assignment.role,
            self.assignment.cluster_id,
            self.assignment.generation,
            self.sandbox.backend,
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
            stream.close()
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
        if self.launched is None:
            return
        self.launched.stop(grace_s)
        if self.overlay is not None:
            self.overlay.close()
        if not self.sandboxed:
            self.remove_sessions()
        log.info("ray node for cluster %s stopped", self.assignment.cluster_id)

    def new_oom_kills(self) -> int:
        """Processes the kernel killed at the memory cap since the last call."""
        total = self.launched.oom_kills() if self.launched is not None else 0
        new, self.oom_kills = total - self.oom_kills, total
        return new

    def remove_sessions(self) -> None:
        """Delete the node's Ray sessions (the buyer's job files, logs and spilled
        objects) once an unsandboxed node has stopped; a sandboxed node's vanish
        with its tmpfs."""
        for path in self.temp_dir.glob("session_*"):
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)


def interface_name(device_id: str) -> str:
    """A fresh WireGuard interface's name (at most 15 characters, unique on the host)."""
    return f"ig{device_id[:6]}{uuid.uuid4().hex[:6]}"


def sandbox_prefix(device_id: str) -> str:
    """Names of this device's sandboxes (network namespaces, cgroups) start so: an
    agent sweeps its own leftovers, never another agent's on the same host."""
    return f"ig-{device_id[:8]}-"


class RayDuty:
    """Keep this device's Ray node in line with its assignment."""

    name = "ray"

    def __init__(
        self,
        config: RayConfig | None = None,
        interval_s: float = 0.25,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.config = config or RayConfig()
        self.sandbox: Sandbox = sandbox or NoSandbox()
        self.interval_s = interval_s
        self.node: RayNode | None = None
        self._stopping: threading.Thread | None = None
        self._reported_up = False

    def run(self, agent: AgentView) -> None:
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
            self._reported_up = False
            member = None
            try:
                if want.overlay is not None:
                    signer = agent.client.keypair
                    assert signer is not None  # the agent's client signs as the device
                    member = OverlayMember(interface_name(agent.device_id), signer)
                node = RayNode(want, agent.device_id, self.config, ip, self.sandbox, member)
                self.node = node
                node.start()
            except Exception as exc:  # no ports, a sandbox that cannot start: a failed node
                log.error("could not start the ray node: %s", exc)
                if member is not None:
                    member.close()
                self.node = None
                self._report(agent, want, "failed", error=f"start: {exc}"[-500:])
                return
            self._report(agent, want, "starting")
            return
        if node.overlay is not None and not node.overlay.wg.alive():
            # Its peers can no longer reach it: a failed node (replaced, not billed).
            log.error("the overlay's wireguard-go exited; stopping the ray node")
            self._stopping = node.stop_in_background()
            self.node = None
            self._report(
                agent, node.assignment, "failed", error="the overlay's wireguard-go exited"
            )
            return
        if node.overlay is not None and want is not None and want.overlay is not None:
            node.overlay.update(want.cluster_id, want.overlay)
        oom = node.new_oom_kills()
        if oom:
            log.warning(
                "ray node of cluster %s: %d process(es) killed at the memory cap (%d MiB)",
                node.assignment.cluster_id,
                oom,
                node.memory_mb,
            )
        if node.exited():
            error = "".join(node.output[-5:]).strip()[-400:] or "ray exited"
            if node.oom_kills:
                error = f"{node.oom_kills} process(es) killed at the memory cap; {error}"
            log.error("ray node exited: %s", error)
            self.node = None
            self._report(agent, node.assignment, "failed", error=error)
            if node.overlay is not None:
                node.overlay.close()  # the next node gets a fresh key pair
        elif node.up.is_set() and not self._reported_up:
            self._reported_up = True
            self._report(agent, node.assignment, "up")

    def _report(
        self, agent: AgentView, a: Assignment, state: NodeState, error: str | None = None
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
            oom_kills=node.oom_kills if node is not None and node.assignment is a else 0,
            overlay_key=node.overlay.public_key
            if node is not None and node.assignment is a and node.overlay is not None
            else None,
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
