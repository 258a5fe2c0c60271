"""How long a buyer waits for a Ray cluster, and what the sandbox costs: deploy request
to ``running``, beside a bare start of the same Ray nodes with and without the sandbox,
and a CPU-bound Ray job on a node with and without it, on this machine::

    .venv/bin/python benchmarks/deploy.py [--sizes 1,2,4] [--repeats 3] [--job-seconds 4]
        [--json]

Needs what the sandbox needs (root, ``bwrap``, ``pasta``, ``nsenter``, ``setpriv``, ``ip``):
it says so and exits otherwise. Bare nodes are ``RayNode``s, the class the agents run,
with the agents' ``RayConfig`` (150 MB object store, ``--num-cpus 2``, a memory cap of
``localnet.NODE_MEMORY_MB``, the local peers' network ``localnet.PEER_NETWORK`` left
open) and the agents' environment (``RayNode.environment()``: token auth with a fresh
``RAY_AUTH_TOKEN``, usage stats off; plus one BLAS thread, as ``LocalNetwork`` gives its
agents). They run on addresses of their own, 198.18.0.200 and up (added to the host's
loopback as ``LocalNetwork`` adds its workers'; an unsandboxed node's port block is one
free on every address, as Ray listens on 0.0.0.0 for some), unsandboxed (``NoSandbox``) or
sandboxed (``Bubblewrap``: a network namespace with ``pasta``, ``bwrap``, ``setpriv``,
cgroups), started with ``RayNode.start()`` and stopped with ``RayNode.stop()``, as an
agent starts and stops its node. A node is up when "Ray runtime started" appears in its
output (``RayNode.up``), stamped the moment ``RayNode`` sees it. Stopping a node waits
until every process it started is gone (SIGKILL to any that outlive ``RayNode.stop``),
so that the next run starts clean; a sandbox's namespace and cgroups go with it.

First, with nothing else of this benchmark running:

1. **A CPU-bound job.** For each of R repeats, a 1-node cluster (a head) unsandboxed and
   one sandboxed (the order alternates from repeat to repeat), each started, used and
   stopped in turn. A driver outside a sandbox cannot attach to a node inside (Ray's
   sockets live there), so both get the job through the Jobs API, on the head's
   dashboard port with the cluster's token, as a buyer submits one: ``python -c`` a
   script that runs 2 Ray tasks (one per CPU the node has), each a fixed pure-Python
   loop (calibrated here, once, to take ``--job-seconds`` on one core of this machine),
   after 2 short tasks that start the workers. The job times the 2 tasks itself, from
   submitting them to their results (**workload**): job submission, the driver's start
   and its ``ray.init()`` are not in it. Also printed: submit to ``SUCCEEDED`` as polled
   every 50 ms (end to end), the tasks' CPU time over their wall time (under 1: the
   cores were busy with something else, or the cgroup's quota throttled them), and
   sandboxed / unsandboxed of the tasks' CPU time (the computation itself).

Then one local network (``idlegrid.localnet.LocalNetwork``: a control plane and 4
worker agents, each a real process, heartbeating every 1 s, its Ray nodes sandboxed on
198.18.0.10-13) is started; the benchmark waits until the 4 devices are
``cluster_ready`` and funds a buyer from the faucet. For each cluster size N and each
of R repeats, back to back:

2. **Bare Ray, unsandboxed and sandboxed** (the order alternates from repeat to repeat).
   The head starts first (``RayNode.start()``: the sandbox's namespace, ``pasta``,
   routes and cgroups are set up in it, so they are timed); the N-1 workers start
   together (one thread each, as N agents would) as soon as the head is up. The time is
   from starting the head to the last node up (the nodes are made, their port blocks
   picked, before that). The sandbox's overhead is sandboxed /
   unsandboxed of the same repeat, summarised over the repeats. How long the head's
   ``RayNode.start()`` takes to return is printed too: the sandbox's own setup, before
   ``ray start`` runs, and less noisy than the rest.
3. **Bare Ray, sandboxed, all at once** (N > 1): the same, but the workers start with
   the head (``ray start --address`` waits for the head's GCS). The control plane gives
   the workers the head's address as soon as the head reports ``starting``, so this is
   the schedule idlegrid itself follows, less the heartbeats.
4. **idlegrid.** ``client.quote`` + ``client.deploy`` for N CPU devices, then
   ``get_cluster`` every 50 ms until the status is ``running``. The time is from the
   quote request to the first reply that says ``running``. The replies also show when
   the head's node went ``starting`` (its agent picked the assignment up from a
   heartbeat reply) and ``up``, and when every worker went ``starting`` (they learn the
   head's address from a later heartbeat reply); these are printed as a timeline, with
   the CPU time that Ray, the control plane, the agents and the poller used meanwhile.
   Then ``terminate_cluster``, and the benchmark waits until the head's dashboard stops
   answering and the agents' Ray processes are gone, so that the next run starts clean.
   Its nodes are sandboxed, so idlegrid / bare is against bare sandboxed (head first);
   against unsandboxed is printed beside it.

Per size, the median and the minimum of each are printed, with the ratios; then the
job's figures; and a line per goal: the sandbox costs under 10 % of deploy time
(sandboxed / unsandboxed bare, median per size, the worst size) and under 5 % of a
CPU-bound job's time (workload, median over repeats); idlegrid at most 1.5x bare Ray;
io.net's 30-120 s.

The machine's cores are shared: with the control plane, the agents, and whatever else
runs here, so figures are noisy; the load average before and after is printed. Only
processes this benchmark started are ever stopped (never ``ray stop``, which would stop
every Ray node on the host), and only its own sandboxes' namespaces are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import psutil
from common import finish, machine, parse_counts, print_table
from solders.keypair import Keypair

from idlegrid.errors import SandboxUnavailable
from idlegrid.localnet import NODE_MEMORY_MB, PEER_NETWORK, LocalNetwork, add_local_address
from idlegrid.protocol import Assignment, ClusterView, DeployRequest, FaucetRequest
from idlegrid.sdk import Client
from idlegrid.worker.raynode import PORTS, RayConfig, RayNode, free_port, port_block
from idlegrid.worker.sandbox import Bubblewrap, NoSandbox, Sandbox

WORKERS = 4
HEARTBEAT_INTERVAL_S = 1.0
MIN_UPTIME_S = 2.0
# Proofs are measured elsewhere; here a loaded machine must not fail them.
NETWORK_ENV = {"IDLEGRID_PROOF_MIN_EFFICIENCY": "0.01", "IDLEGRID_PROOF_RETRY_S": "2"}
# What LocalNetwork gives each agent (when it sandboxes), and so each Ray node it starts.
RAY_CONFIG = RayConfig(
    object_store_mb=150, num_cpus=2, memory_mb=NODE_MEMORY_MB, peer_network=PEER_NETWORK
)
AGENT_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BARE_ADDRESS = "198.18.0.{}"  # from 200 up: outside LocalNetwork's workers' (10 and up)
BARE_FIRST = 200
POLL_S = 0.05
START_TIMEOUT_S = 180.0  # the control plane's deploy_timeout_s
STOP_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 300.0
BLOCK_WAIT_S = 90.0  # for a free port block (TIME_WAIT lasts 60 s)
JOB_TASKS = 2  # one per CPU the node has
GOAL_RATIO = 1.5
SANDBOX_DEPLOY_GOAL = 1.10  # sandboxed / unsandboxed bare deploy
SANDBOX_JOB_GOAL = 1.05  # sandboxed / unsandboxed CPU-bound workload
IONET_S = (30.0, 120.0)
ENDED = ("failed", "terminated", "completed")
ATTEMPTS = 3  # per measurement, when Ray or the cluster fails to start
CPU_KEYS = ("ray", "control_plane", "agents", "benchmark")
KINDS = ("none", "bubblewrap")  # unsandboxed, sandboxed
KIND_NAMES = {"none": "unsandboxed", "bubblewrap": "sandboxed"}

T = TypeVar("T")

_T0 = time.monotonic()
# Names of this run's nodes: their sandboxes' namespaces and cgroups start with
# ``ig-bench<RUN>-`` (``sandbox_prefix``), so only this run's are ever swept.
RUN = secrets.token_hex(2)[:3]


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


class StartFailed(RuntimeError):
    """A Ray node, a job or a cluster did not come up (an overloaded machine can time
    Ray out)."""


def sandbox_for(kind: str) -> Sandbox:
    return Bubblewrap() if kind == "bubblewrap" else NoSandbox("benchmark baseline")


def bare_address(index: int) -> str:
    return BARE_ADDRESS.format(BARE_FIRST + index)


# -- bare Ray ----------------------------------------------------------------------------


class Stamped(threading.Event):
    """``RayNode.up``, remembering when it was first set (by ``RayNode``'s reader
    thread, the moment "Ray runtime started" appears)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def set(self) -> None:
        if self.at is None:
            self.at = time.perf_counter()
        super().set()


class BareNode(RayNode):
    """One Ray node as an agent would run it (``RayNode``), but started by us."""

    def __init__(
        self,
        role: Literal["head", "worker"],
        index: int,
        token: str,
        head_address: str | None,
        sandbox: Sandbox,
        taken: Iterable[BareNode] = (),
    ) -> None:
        assignment = Assignment(
            cluster_id="bare", generation=0, role=role, token=token, head_address=head_address
        )
        super().__init__(
            assignment, f"bench{RUN}-{index}", RAY_CONFIG, bare_address(index), sandbox
        )
        if not self.sandboxed:
            # Ray listens on every address for some ports (the GCS, the raylet): a
            # block free on this node's address alone may be another's (a sandboxed
            # node's pasta listens on its own address), and this node's neighbours,
            # not listening yet, have not taken theirs.
            self.block = port_block("0.0.0.0", frozenset(n.block.start for n in taken))
            self.ports = {k: self.block.start + PORTS.index(k) for k in self.ports}
        self.up = self.stamp = Stamped()
        self.token = token
        self.descendants: list[psutil.Process] = []
        self._stop_lock = threading.Lock()
        self._stopped = False
        self.launch_s = 0.0

    def start(self) -> None:
        """``RayNode.start()``, timed: the sandbox's setup (its namespace, ``pasta``,
        routes, cgroups) happens in it, before ``ray start`` runs."""
        started = time.perf_counter()
        super().start()
        self.launch_s = time.perf_counter() - started

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **AGENT_ENV}  # as LocalNetwork runs its agents

    @property
    def what(self) -> str:
        return f"bare {self.assignment.role} ({KIND_NAMES[self.sandbox.backend]})"

    def wait_up(self, deadline: float) -> float:
        while not self.up.wait(0.05):
            if self.exited():
                tail = "".join(self.output[-3:]).strip()[-300:]
                raise StartFailed(f"{self.what} exited: {tail}")
            if time.perf_counter() > deadline:
                raise StartFailed(f"{self.what} not up in time")
        assert self.stamp.at is not None
        return self.stamp.at

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            leader = psutil.Process(self.proc.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.Error:
            return []

    def remember_processes(self) -> None:
        known = {p.pid for p in self.descendants}
        self.descendants += [p for p in self.processes() if p.pid not in known]

    def stop(self, grace_s: float = 10.0) -> None:
        """``RayNode.stop`` (SIGTERM to ``ray start``, then SIGKILL to its group; a
        sandbox goes with its namespace and cgroups), once; then SIGKILL to any process
        the node started that outlived it, and wait until all are gone."""
        with self._stop_lock:
            if self._stopped:
                return
            self.remember_processes()
            super().stop(grace_s)
            for p in self.descendants:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            if not wait_gone(self.descendants, time.perf_counter() + 10):
                progress(f"  warning: {self.what} left processes behind")
            if not self.sandboxed:  # Ray's temp dir of its own (a sandbox's is its tmpfs)
                shutil.rmtree(self.temp_dir, ignore_errors=True)
            self._stopped = True


def cpu_s(procs: Iterable[psutil.Process]) -> float:
    """User + system CPU seconds of ``procs`` themselves (not of their children)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def wait_gone(procs: Sequence[psutil.Process], deadline: float) -> bool:
    while not all(gone(p) for p in procs):
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop_nodes(nodes: list[BareNode]) -> None:
    """Stop them all together (a thread each, as their agents would), then forget them."""
    for t in [node.stop_in_background() for node in nodes]:
        t.join()
    nodes.clear()


# Nodes start in these threads, one each, as their agents would start them. They live
# as long as the benchmark: a node's process gets SIGTERM when the thread that started
# it ends (``PR_SET_PDEATHSIG`` is per thread).
LAUNCHERS = ThreadPoolExecutor(WORKERS, thread_name_prefix="launch")


def start_together(nodes: Sequence[BareNode]) -> None:
    """``RayNode.start()`` of each, all at once."""
    for f in [LAUNCHERS.submit(node.start) for node in nodes]:
        try:
            f.result()
        except (OSError, RuntimeError) as exc:  # a sandbox that cannot be set up
            raise StartFailed(f"could not start a node: {exc}") from exc


@dataclass
class BareRun:
    total_s: float  # start to the last node up
    head_s: float  # start to the head up
    stop_s: float
    ray_cpu_s: float  # CPU time of the nodes' processes alive when the last was up
    launch_s: float  # the head's RayNode.start()


def new_node(
    role: Literal["head", "worker"],
    index: int,
    token: str,
    head_address: str | None,
    sandbox: Sandbox,
    live: list[BareNode],
) -> BareNode:
    """A ``BareNode`` clear of the ports of ``live``, added to it, once a port block is
    free: a stopped node's ports stay in TIME_WAIT for up to a minute, and there are
    only so many blocks."""
    deadline = time.perf_counter() + BLOCK_WAIT_S
    while True:
        try:
            node = BareNode(role, index, token, head_address, sandbox, taken=live)
        except RuntimeError as exc:  # port_block: no free block
            if time.perf_counter() > deadline:
                raise StartFailed(str(exc)) from exc
            time.sleep(1.0)
            continue
        live.append(node)
        return node


def bare_ray(size: int, kind: str, live: list[BareNode], all_at_once: bool = False) -> BareRun:
    """Start a head and ``size - 1`` workers as the agents would, the workers once the
    head is up (or with it, ``all_at_once``); then stop them. The nodes are made (their
    port blocks picked) before the clock starts."""
    token = secrets.token_hex(32)
    sandbox = sandbox_for(kind)
    try:
        head = new_node("head", 0, token, None, sandbox, live)
        workers = [
            new_node("worker", i, token, head.gcs_address, sandbox, live) for i in range(1, size)
        ]
        started = time.perf_counter()
        deadline = started + START_TIMEOUT_S
        start_together([head])
        if not all_at_once:
            head.wait_up(deadline)
        start_together(workers)
        head_at = head.wait_up(deadline)
        done_at = max([head_at, *(w.wait_up(deadline) for w in workers)])
        ray_cpu = cpu_s(p for node in live for p in node.processes())
    finally:
        stopping = time.perf_counter()
        stop_nodes(live)
        stop_s = time.perf_counter() - stopping
    return BareRun(done_at - started, head_at - started, stop_s, ray_cpu, head.launch_s)


# -- a CPU-bound job ---------------------------------------------------------------------

SPIN = """
def spin(n):
    x = 0
    for i in range(n):
        x = (x + i * i) % 1000003
    return x
"""
# Run as ``python -c JOB_SCRIPT ITERATIONS TASKS`` by the node's job supervisor.
JOB_SCRIPT = (
    SPIN
    + """
import json, sys, time
import ray

n, tasks = int(sys.argv[1]), int(sys.argv[2])


@ray.remote(num_cpus=1)
def timed(n):
    wall, cpu = time.perf_counter(), time.process_time()
    spin(n)
    return time.perf_counter() - wall, time.process_time() - cpu


ray.init()
ray.get([timed.remote(n // 50) for _ in range(tasks)])  # a worker per task, started
started = time.perf_counter()
runs = ray.get([timed.remote(n) for _ in range(tasks)])
wall = time.perf_counter() - started
print("RESULT " + json.dumps({"workload_s": wall, "tasks": runs}))
"""
)


def calibrate(seconds: float) -> int:
    """How many iterations of ``spin`` take ``seconds`` on one core here (best of 3)."""
    scope: dict[str, Any] = {}
    exec(SPIN, scope)
    n, best = 1_000_000, float("inf")
    for _ in range(3):
        started = time.perf_counter()
        scope["spin"](n)
        best = min(best, time.perf_counter() - started)
    return max(1, round(n * seconds / best))


@dataclass
class JobRun:
    up_s: float  # start to the head up
    connect_s: float  # the head up to its Jobs API answering
    workload_s: float  # the tasks, timed inside the job
    end_to_end_s: float  # submit to SUCCEEDED, as polled
    task_wall_s: list[float]
    task_cpu_s: list[float]

    @property
    def cpu_per_wall(self) -> float:
        return sum(self.task_cpu_s) / sum(self.task_wall_s)


def jobs_client(node: BareNode, deadline: float) -> Any:
    """A Jobs API client of the head's dashboard, once it answers."""
    from ray.job_submission import JobSubmissionClient

    url = f"http://{node.ip}:{node.ports['dashboard']}"
    while True:
        try:
            return JobSubmissionClient(url, headers={"Authorization": f"Bearer {node.token}"})
        except (ConnectionError, RuntimeError) as exc:
            if time.perf_counter() > deadline:
                raise StartFailed(f"the Jobs API at {url} did not answer: {exc}") from exc
            if node.exited():
                raise StartFailed(f"{node.what} exited") from exc
            time.sleep(0.2)


def cpu_job(kind: str, iterations: int, live: list[BareNode]) -> JobRun:
    """Start a head, run the job on it through the Jobs API, stop the head."""
    from ray.job_submission import JobStatus

    try:
        head = new_node("head", 0, secrets.token_hex(32), None, sandbox_for(kind), live)
        started = time.perf_counter()
        start_together([head])
        up_at = head.wait_up(started + START_TIMEOUT_S)
        jobs = jobs_client(head, up_at + START_TIMEOUT_S)
        connected = time.perf_counter()
        entrypoint = f"python -c {shlex.quote(JOB_SCRIPT)} {iterations} {JOB_TASKS}"
        submitted = time.perf_counter()
        job_id = jobs.submit_job(entrypoint=entrypoint)
        while not (status := jobs.get_job_status(job_id)).is_terminal():
            if time.perf_counter() - submitted > JOB_TIMEOUT_S:
                jobs.stop_job(job_id)
                raise StartFailed(f"the job did not end in {JOB_TIMEOUT_S:.0f}s")
            time.sleep(POLL_S)
        end_to_end = time.perf_counter() - submitted
        logs = jobs.get_job_logs(job_id)
        if status != JobStatus.SUCCEEDED:
            raise StartFailed(f"the job {status.value} ({KIND_NAMES[kind]}): {logs[-300:]}")
        line = next((x for x in logs.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise StartFailed(f"the job printed no RESULT: {logs[-300:]}")
        got = json.loads(line.removeprefix("RESULT "))
    finally:
        stop_nodes(live)
    return JobRun(
        up_s=up_at - started,
        connect_s=connected - up_at,
        workload_s=got["workload_s"],
        end_to_end_s=end_to_end,
        task_wall_s=[t[0] for t in got["tasks"]],
        task_cpu_s=[t[1] for t in got["tasks"]],
    )


# -- idlegrid ----------------------------------------------------------------------------


@dataclass
class Milestones:
    """Seconds from the quote request at which each step was first seen."""

    deployed: float = 0.0  # the deploy reply: devices reserved, escrow paid
    head_starting: float | None = None  # the head's agent started `ray start --head`
    head_up: float | None = None
    workers_starting: float | None = None  # every worker started `ray start --address`
    running: float | None = None
    server_running_s: float | None = None  # the server's running_at - created_at
    polls: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # by whom, over the deploy
    nodes_seen: dict[str, str] = field(default_factory=dict)

    def see(self, view: ClusterView, at: float) -> None:
        self.polls += 1
        live = [n for n in view.nodes if n.left_at is None]
        head = [n for n in live if n.role == "head"]
        workers = [n for n in live if n.role == "worker"]
        if head and head[0].state in ("starting", "up") and self.head_starting is None:
            self.head_starting = at
        if head and head[0].state == "up" and self.head_up is None:
            self.head_up = at
        if (
            workers
            and all(n.state in ("starting", "up") for n in workers)
            and self.workers_starting is None
        ):
            self.workers_starting = at
        if view.status == "running" and self.running is None:
            self.running = at
            if view.running_at is not None:
                self.server_running_s = view.running_at - view.created_at
        self.nodes_seen = {n.device_id[:8]: n.state for n in live}

    def timeline(self) -> dict[str, float | None]:
        """Seconds from the quote request, as first seen by a poll (50 ms apart)."""
        return {
            "deployed": self.deployed,
            "head_starting": self.head_starting,
            "workers_starting": self.workers_starting,
            "head_up": self.head_up,
            "running": self.running,
        }


def wait_devices_free(client: Client, size: int, timeout_s: float = 120.0) -> None:
    LocalNetwork.wait_for(
        lambda: client.list_devices(status="up", readiness="cluster_ready").total >= size,
        timeout_s,
        f"{size} free cluster-ready devices",
    )


def idlegrid_processes(net: LocalNetwork) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The control plane's process and the agents' (without their Ray nodes)."""
    with contextlib.suppress(psutil.Error):
        assert net.server is not None
        server = [psutil.Process(net.server.pid)]
        return server, [psutil.Process(a.pid) for a in net.agents.values()]
    return [], []


def idlegrid_deploy(
    client: Client, net: LocalNetwork, size: int, name: str
) -> tuple[Milestones, ClusterView]:
    m = Milestones()
    server, agents = idlegrid_processes(net)
    server_cpu, agents_cpu, own_cpu = cpu_s(server), cpu_s(agents), time.process_time()
    started = time.perf_counter()
    quote = client.quote(DeployRequest(name=name, hardware="cpu", quantity=size))
    view = client.deploy(quote.id)
    m.deployed = time.perf_counter() - started
    next_poll = time.perf_counter()
    while True:
        view = client.get_cluster(view.id)
        at = time.perf_counter() - started
        m.see(view, at)
        if view.status == "running":
            m.cpu_s = {
                "ray": cpu_s(ray_processes_of(net)),
                "control_plane": cpu_s(server) - server_cpu,
                "agents": cpu_s(agents) - agents_cpu,
                "benchmark": time.process_time() - own_cpu,
            }
            return m, view
        if view.status in ENDED:
            raise StartFailed(f"cluster {view.id} {view.status}: {view.reason}")
        if at > START_TIMEOUT_S:
            raise StartFailed(f"cluster {view.id} not running after {at:.0f}s: {m.nodes_seen}")
        next_poll += POLL_S
        time.sleep(max(0.0, next_poll - time.perf_counter()))


def ray_processes_of(net: LocalNetwork) -> list[psutil.Process]:
    found = []
    for agent in net.agents.values():
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(agent.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "ray" in " ".join(p.cmdline()[:3]).lower() or "raylet" in p.name():
                        found.append(p)
    return found


def dashboard_answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/api/version", timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def idlegrid_terminate(client: Client, net: LocalNetwork, view: ClusterView) -> float:
    """Terminate, then wait until the head's dashboard stops answering and every Ray
    process the agents had started is gone; returns seconds."""
    ray_procs = ray_processes_of(net)  # daemons may outlive `ray start`: track them all
    started = time.perf_counter()
    if client.get_cluster(view.id).status not in ENDED:
        client.terminate_cluster(view.id)
    deadline = started + STOP_TIMEOUT_S
    while time.perf_counter() < deadline:
        if (
            not (view.dashboard_url and dashboard_answers(view.dashboard_url))
            and all(gone(p) for p in ray_procs)
            and not ray_processes_of(net)
        ):
            return time.perf_counter() - started
        time.sleep(0.2)
    progress(f"  warning: cluster {view.id}: Ray still running {STOP_TIMEOUT_S:.0f}s after")
    return time.perf_counter() - started


# -- the run -------------------------------------------------------------------------------


def idlegrid_run(client: Client, net: LocalNetwork, size: int, name: str) -> dict[str, Any]:
    """One deploy, timed, then torn down (a failed one too)."""
    wait_devices_free(client, size)
    try:
        m, view = idlegrid_deploy(client, net, size, name)
    except StartFailed:
        for c in client.list_clusters(active=True).items:
            idlegrid_terminate(client, net, c)
        raise
    teardown = idlegrid_terminate(client, net, view)
    assert m.running is not None
    return {
        "total_s": round(m.running, 3),
        "server_running_s": None if m.server_running_s is None else round(m.server_running_s, 3),
        "timeline_s": {k: None if v is None else round(v, 3) for k, v in m.timeline().items()},
        "polls": m.polls,
        "cpu_s": {k: round(v, 2) for k, v in m.cpu_s.items()},
        "teardown_s": round(teardown, 3),
    }


def summarise(values: Iterable[float | None]) -> dict[str, float | None]:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(xs), 3),
        "min": round(min(xs), 3),
        "max": round(max(xs), 3),
    }


def paired(runs: dict[str, list[Any]], value: Callable[[Any], float]) -> dict[str, Any]:
    """Sandboxed / unsandboxed of each repeat where both were measured, summarised."""
    ratios = [
        value(s) / value(u)
        for u, s in zip(runs["none"], runs["bubblewrap"], strict=True)
        if u is not None and s is not None and value(u) > 0
    ]
    return {"runs": [round(r, 3) for r in ratios], **summarise(ratios)}


def attempter(errors: list[str]) -> Callable[[str, Callable[[], T]], T | None]:
    def attempt(what: str, measure: Callable[[], T]) -> T | None:
        for _ in range(ATTEMPTS):
            try:
                return measure()
            except StartFailed as exc:
                progress(f"  {what}: FAILED: {exc}")
                errors.append(f"{what}: {exc}")
        return None

    return attempt


def order(r: int) -> tuple[str, ...]:
    """Unsandboxed first in even repeats, sandboxed first in odd ones."""
    return KINDS if r % 2 == 0 else KINDS[::-1]


def bench_job(repeats: int, iterations: int, live: list[BareNode]) -> dict[str, Any]:
    runs: dict[str, list[JobRun | None]] = {k: [] for k in KINDS}
    errors: list[str] = []
    attempt = attempter(errors)
    for r in range(repeats):
        for kind in order(r):
            name = KIND_NAMES[kind]
            progress(f"CPU-bound job, run {r + 1}/{repeats}: {name}")
            j = attempt(f"job, {name}", partial(cpu_job, kind, iterations, live))
            runs[kind].append(j)
            if j is not None:
                progress(
                    f"  {name}: workload {j.workload_s:.2f}s, submit to SUCCEEDED "
                    f"{j.end_to_end_s:.2f}s (head up in {j.up_s:.1f}s, Jobs API "
                    f"{j.connect_s:.1f}s later), CPU/wall {j.cpu_per_wall:.2f}"
                )
    out: dict[str, Any] = {"iterations": iterations, "tasks": JOB_TASKS}
    for kind in KINDS:
        done = [j for j in runs[kind] if j is not None]
        out[KIND_NAMES[kind]] = {
            "workload_runs_s": [round(j.workload_s, 3) for j in done],
            "workload_s": summarise(j.workload_s for j in done),
            "end_to_end_s": summarise(j.end_to_end_s for j in done),
            "up_s": summarise(j.up_s for j in done),
            "connect_s": summarise(j.connect_s for j in done),
            "cpu_per_wall": summarise(j.cpu_per_wall for j in done),
            "runs": [asdict(j) for j in done],
        }
    out["ratio_workload"] = paired(runs, lambda j: j.workload_s)
    out["ratio_end_to_end"] = paired(runs, lambda j: j.end_to_end_s)
    # The loop's CPU time: what the sandbox costs the computation itself, whatever
    # else the cores were busy with (the workload's wall time is what the goal is on).
    out["ratio_task_cpu"] = paired(runs, lambda j: sum(j.task_cpu_s))
    out["failed_attempts"] = errors
    return out


def bench_size(
    net: LocalNetwork, client: Client, size: int, repeats: int, live: list[BareNode]
) -> dict[str, Any]:
    bare: dict[str, list[BareRun | None]] = {k: [] for k in KINDS}
    at_once: list[BareRun] = []
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    attempt = attempter(errors)

    for r in range(repeats):
        run = f"{size} device(s), run {r + 1}/{repeats}"
        for kind in order(r):
            name = KIND_NAMES[kind]
            progress(f"{run}: bare ray, {name}, head first")
            b = attempt(f"bare, {name}", partial(bare_ray, size, kind, live))
            bare[kind].append(b)
            if b is not None:
                progress(
                    f"  bare, {name}: {b.total_s:.2f}s (head {b.head_s:.2f}s), stop {b.stop_s:.1f}s"
                )
        if size > 1:
            progress(f"{run}: bare ray, sandboxed, all at once")
            b = attempt(
                "bare, sandboxed, all at once",
                partial(bare_ray, size, "bubblewrap", live, all_at_once=True),
            )
            if b is not None:
                at_once.append(b)
                progress(f"  bare, sandboxed, all at once: {b.total_s:.2f}s (head {b.head_s:.2f}s)")
        progress(f"{run}: idlegrid deploy")
        got = attempt("idlegrid", partial(idlegrid_run, client, net, size, f"bench-{size}-{r}"))
        if got is not None:
            runs.append(got)
            progress(
                f"  idlegrid: {got['total_s']:.2f}s to running, "
                f"torn down in {got['teardown_s']:.1f}s"
            )
    steps = runs[0]["timeline_s"].keys() if runs else ()
    out: dict[str, Any] = {
        "devices": size,
        "bare": bare_summary([b for b in bare["none"] if b is not None]),
        "bare_sandboxed": bare_summary([b for b in bare["bubblewrap"] if b is not None]),
        "bare_all_at_once": bare_summary(at_once) if at_once else None,
        "sandbox_ratio": paired(bare, lambda b: b.total_s),
        "idlegrid": {
            "runs_s": [r["total_s"] for r in runs],
            "total_s": summarise([r["total_s"] for r in runs]),
            "server_running_s": summarise([r["server_running_s"] for r in runs]),
            "timeline_s": {k: summarise([r["timeline_s"][k] for r in runs]) for k in steps},
            "teardown_s": summarise([r["teardown_s"] for r in runs]),
            "cpu_s": {k: summarise([r["cpu_s"][k] for r in runs]) for k in CPU_KEYS},
            "runs": runs,
        },
        "failed_attempts": errors,
    }
    im = out["idlegrid"]["total_s"]
    out["ratio"] = ratio(im, out["bare_sandboxed"]["total_s"])
    out["ratio_unsandboxed"] = ratio(im, out["bare"]["total_s"])
    out["ratio_all_at_once"] = ratio(im, out["bare_all_at_once"]["total_s"]) if at_once else None
    return out


def bare_summary(runs: Sequence[BareRun]) -> dict[str, Any]:
    return {
        "runs_s": [round(b.total_s, 3) for b in runs],
        "total_s": summarise([b.total_s for b in runs]),
        "head_s": summarise([b.head_s for b in runs]),
        "ray_cpu_s": summarise([b.ray_cpu_s for b in runs]),
        "stop_s": summarise([b.stop_s for b in runs]),
        "launch_s": summarise([b.launch_s for b in runs]),
    }


def ratio(idlegrid: dict[str, float | None], bare: dict[str, float | None]) -> dict[str, Any]:
    def of(key: str) -> float | None:
        i, b = idlegrid[key], bare[key]
        return None if i is None or not b else round(i / b, 2)

    return {"median": of("median"), "min": of("min")}


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    measured = [s for s in results["sizes"] if s["sandbox_ratio"]["median"] is not None]
    if measured:
        worst = max(measured, key=lambda s: s["sandbox_ratio"]["median"])
        w = worst["sandbox_ratio"]["median"]
        out["sandbox_deploy"] = {
            "goal_ratio": SANDBOX_DEPLOY_GOAL,
            "worst_median_ratio": w,
            "worst_devices": worst["devices"],
            "result": "PASS" if w < SANDBOX_DEPLOY_GOAL else "FAIL",
        }
    else:
        out["sandbox_deploy"] = {"result": "NOT MEASURED"}
    job = results.get("job")
    jm = job["ratio_workload"]["median"] if job else None
    out["sandbox_job"] = (
        {"result": "NOT MEASURED"}
        if jm is None
        else {
            "goal_ratio": SANDBOX_JOB_GOAL,
            "median_ratio": jm,
            "result": "PASS" if jm < SANDBOX_JOB_GOAL else "FAIL",
        }
    )
    sizes = [s for s in results["sizes"] if s["ratio"]["median"] is not None]
    if not sizes:
        out["deploy"] = {"result": "NOT MEASURED"}
        return out
    worst = max(sizes, key=lambda s: s["ratio"]["median"])
    largest = max(sizes, key=lambda s: s["devices"])
    med = largest["idlegrid"]["total_s"]["median"]
    out["deploy"] = {
        "goal_ratio": GOAL_RATIO,
        "worst_median_ratio": worst["ratio"]["median"],
        "worst_devices": worst["devices"],
        "result": "PASS" if worst["ratio"]["median"] <= GOAL_RATIO else "FAIL",
        "ionet_s": list(IONET_S),
        "largest_devices": largest["devices"],
        "largest_median_s": med,
        "faster_than_ionet": [round(IONET_S[0] / med, 1), round(IONET_S[1] / med, 1)],
    }
    return out


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def pct(r: float | None) -> str:
    return "-" if r is None else f"{(r - 1) * 100:+.1f} %"


def print_report(results: dict[str, Any]) -> None:
    sizes = results["sizes"]

    def mm(d: dict[str, Any] | None, key: str = "total_s") -> str:
        return "-" if d is None else f"{fmt(d[key]['median'])} / {fmt(d[key]['min'])}"

    def x(r: dict[str, Any] | None, key: str = "median") -> str:
        return "-" if r is None or r[key] is None else f"{r[key]:.2f}x"

    def x3(r: dict[str, Any], key: str) -> str:
        return "-" if r[key] is None else f"{r[key]:.3f}x"

    def ms(d: dict[str, float | None]) -> str:
        return fmt(None if d["median"] is None else d["median"] * 1000, ".0f")

    def runs(values: Sequence[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print_table(
        "Start to running, seconds, median / min of "
        f"{results['repeats']} runs; ratio = idlegrid / bare sandboxed (head first)",
        "rrrrrrrrrl",
        (
            "devices",
            "bare",
            "bare sandboxed",
            "sandboxed, all at once",
            "idlegrid",
            "ratio med",
            "ratio min",
            "vs unsandboxed",
            "vs all at once",
            "idlegrid runs",
        ),
        [
            (
                str(s["devices"]),
                mm(s["bare"]),
                mm(s["bare_sandboxed"]),
                mm(s["bare_all_at_once"]),
                mm(s["idlegrid"]),
                x(s["ratio"]),
                x(s["ratio"], "min"),
                x(s["ratio_unsandboxed"]),
                x(s["ratio_all_at_once"]),
                runs(s["idlegrid"]["runs_s"]),
            )
            for s in sizes
        ],
    )
    print_table(
        "The sandbox's cost on deploy: bare Ray, head first, start to the last node up, "
        "seconds; ratio = sandboxed / unsandboxed of the same repeat",
        "rllrrrrlr",
        (
            "devices",
            "unsandboxed runs",
            "sandboxed runs",
            "ratio med",
            "min",
            "max",
            "overhead med",
            "ratios",
            "head's start(), ms: unsandboxed / sandboxed",
        ),
        [
            (
                str(s["devices"]),
                runs(s["bare"]["runs_s"]),
                runs(s["bare_sandboxed"]["runs_s"]),
                x3(s["sandbox_ratio"], "median"),
                x3(s["sandbox_ratio"], "min"),
                x3(s["sandbox_ratio"], "max"),
                pct(s["sandbox_ratio"]["median"]),
                ", ".join(f"{v:.3f}" for v in s["sandbox_ratio"]["runs"]),
                f"{ms(s['bare']['launch_s'])} / {ms(s['bare_sandboxed']['launch_s'])}",
            )
            for s in sizes
        ],
    )
    print(
        "(start(): RayNode.start() returning, median: the sandbox's namespace, pasta, routes "
        "and cgroups are set up in it; then Ray starts.)"
    )

    def at(s: dict[str, Any], step: str) -> str:
        t = s["idlegrid"]["timeline_s"].get(step)
        return fmt(t["median"]) if t else "-"

    print_table(
        "idlegrid's timeline, medians of seconds from the quote request, as polled every "
        "50 ms; bare Ray's (sandboxed) beside it",
        "rrrrrrrrrr",
        (
            "devices",
            "deployed",
            "head starting",
            "workers starting",
            "head up",
            "running",
            "server-side",
            "bare: head up",
            "all up",
            "all at once: all up",
        ),
        [
            (
                str(s["devices"]),
                at(s, "deployed"),
                at(s, "head_starting"),
                at(s, "workers_starting") if s["devices"] > 1 else "-",
                at(s, "head_up"),
                at(s, "running"),
                fmt(s["idlegrid"]["server_running_s"]["median"]),
                fmt(s["bare_sandboxed"]["head_s"]["median"]),
                fmt(s["bare_sandboxed"]["total_s"]["median"]),
                fmt(s["bare_all_at_once"]["total_s"]["median"]) if s["bare_all_at_once"] else "-",
            )
            for s in sizes
        ],
    )
    print(
        "(deployed: the deploy reply; head/workers starting: their agents got the assignment "
        "from a heartbeat reply and ran `ray start`; server-side: the cluster's running_at - "
        "created_at.)"
    )
    print_table(
        "CPU seconds used from the start to up/running, medians (the machine has "
        f"{results['machine']['cpus']} CPUs)",
        "rrrrrrrr",
        (
            "devices",
            "bare: ray nodes",
            "sandboxed: ray nodes",
            "all at once: ray nodes",
            "idlegrid: ray nodes",
            "control plane",
            "agents",
            "poller (this process)",
        ),
        [
            (
                str(s["devices"]),
                fmt(s["bare"]["ray_cpu_s"]["median"], ".1f"),
                fmt(s["bare_sandboxed"]["ray_cpu_s"]["median"], ".1f"),
                fmt(s["bare_all_at_once"]["ray_cpu_s"]["median"], ".1f")
                if s["bare_all_at_once"]
                else "-",
                *(fmt(s["idlegrid"]["cpu_s"][k]["median"], ".1f") for k in CPU_KEYS),
            )
            for s in sizes
        ],
    )
    job = results["job"]
    print_table(
        f"A CPU-bound job on a 1-node cluster, through the Jobs API: {job['tasks']} tasks of "
        f"{job['iterations']:,} loop iterations each; seconds, median / min of "
        f"{results['repeats']} runs",
        "lrrrrrl",
        (
            "node",
            "workload (in the job)",
            "submit to SUCCEEDED",
            "head up",
            "Jobs API after",
            "tasks' CPU / wall",
            "workload runs",
        ),
        [
            (
                name,
                mm(job[name], "workload_s"),
                mm(job[name], "end_to_end_s"),
                fmt(job[name]["up_s"]["median"]),
                fmt(job[name]["connect_s"]["median"]),
                fmt(job[name]["cpu_per_wall"]["median"]),
                runs(job[name]["workload_runs_s"]),
            )
            for name in KIND_NAMES.values()
        ],
    )
    print_table(
        "The sandbox's cost on the job: sandboxed / unsandboxed of the same repeat",
        "lrrrrl",
        ("measured", "ratio med", "min", "max", "overhead med", "ratios"),
        [
            (
                label,
                x3(job[key], "median"),
                x3(job[key], "min"),
                x3(job[key], "max"),
                pct(job[key]["median"]),
                ", ".join(f"{v:.3f}" for v in job[key]["runs"]),
            )
            for label, key in (
                ("workload (in the job)", "ratio_workload"),
                ("submit to SUCCEEDED", "ratio_end_to_end"),
                ("tasks' CPU time", "ratio_task_cpu"),
            )
        ],
    )
    failed = [(f"{s['devices']} device(s)", e) for s in sizes for e in s["failed_attempts"]]
    failed += [("job", e) for e in job["failed_attempts"]]
    if failed:
        print(f"\nFailed attempts (each tried again, up to {ATTEMPTS} times in all):")
    for where, e in failed:
        print(f"  {where}: {e}")
    teardown = ", ".join(
        f"{s['devices']}: {fmt(s['idlegrid']['teardown_s']['median'], '.1f')} s" for s in sizes
    )
    print(f"\nTerminate to every Ray process gone (median, by devices): {teardown}.")
    m = results["machine"]
    print(
        f"Machine: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, Ray {m['ray']}; "
        f"load average {results['load_before']:.1f} before, {results['load_after']:.1f} after; "
        f"{WORKERS} agents heartbeating every {HEARTBEAT_INTERVAL_S:g} s, their nodes "
        f"{'sandboxed' if results['network_sandboxed'] else 'UNSANDBOXED'}; "
        f"{results['total_s']:.0f} s in all."
    )
    v = results["verdict"]
    sd = v["sandbox_deploy"]
    if sd["result"] == "NOT MEASURED":
        print(f"\nGoal: the sandbox < {pct(SANDBOX_DEPLOY_GOAL)} of deploy time: NOT MEASURED.")
    else:
        by = ", ".join(f"{s['devices']}: {x3(s['sandbox_ratio'], 'median')}" for s in sizes)
        print(
            f"\nGoal: the sandbox < {pct(SANDBOX_DEPLOY_GOAL)} of deploy time: median "
            f"sandboxed/unsandboxed bare Ray by devices {by}; worst "
            f"{sd['worst_median_ratio']:.3f}x ({pct(sd['worst_median_ratio'])}) at "
            f"{sd['worst_devices']}: {sd['result']}."
        )
    sj = v["sandbox_job"]
    if sj["result"] == "NOT MEASURED":
        print(f"Goal: the sandbox < {pct(SANDBOX_JOB_GOAL)} of a CPU-bound job: NOT MEASURED.")
    else:
        r = job["ratio_workload"]
        print(
            f"Goal: the sandbox < {pct(SANDBOX_JOB_GOAL)} of a CPU-bound job: median "
            f"sandboxed/unsandboxed workload {sj['median_ratio']:.3f}x "
            f"({pct(sj['median_ratio'])}; min {x3(r, 'min')}, max {x3(r, 'max')}): "
            f"{sj['result']}."
        )
    d = v["deploy"]
    if d["result"] == "NOT MEASURED":
        print(f"Goal ≤ {GOAL_RATIO:g}x bare Ray: NOT MEASURED (no deploy or no bare run).")
        return
    lo, hi = d["faster_than_ionet"]
    ratios = ", ".join(f"{s['devices']}: {x(s['ratio'])}" for s in sizes)
    print(
        f"Goal ≤ {d['goal_ratio']:g}x bare Ray (sandboxed, as idlegrid's nodes are): median "
        f"idlegrid/bare by devices {ratios}; worst {d['worst_median_ratio']:.2f}x at "
        f"{d['worst_devices']}: {d['result']}. io.net takes {IONET_S[0]:.0f}-{IONET_S[1]:.0f} s; "
        f"idlegrid's median for {d['largest_devices']} devices is {d['largest_median_s']:.2f} s "
        f"({lo:g}-{hi:g}x faster)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time from deploy request to a running Ray cluster on a local idlegrid "
        "network, beside a bare start of the same nodes with and without the sandbox, and a "
        "CPU-bound Ray job with and without it."
    )
    parser.add_argument(
        "--sizes",
        type=functools.partial(parse_counts, high=WORKERS),
        default=[1, 2, 4],
        help="default 1,2,4",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (default 3)")
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=4.0,
        help="each job task's loop, in seconds on one idle core here (default 4)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.job_seconds <= 0:
        parser.error("--job-seconds must be positive")

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # the agents and the nodes inherit it too
    try:
        Bubblewrap().check()
    except SandboxUnavailable as exc:
        print(f"this benchmark measures the sandbox, which cannot run here: {exc.message}",
              file=sys.stderr)  # fmt: skip
        return 2
    # A SIGTERM unwinds like Ctrl-C, through every finally that stops a process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: dict[str, Any] = {
        "machine": machine(
            ray=version("ray"),
        ),
        "settings": {
            "workers": WORKERS,
            "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
            "object_store_mb": RAY_CONFIG.object_store_mb,
            "num_cpus": RAY_CONFIG.num_cpus,
            "memory_mb": RAY_CONFIG.memory_mb,
            "poll_s": POLL_S,
            "job_seconds": args.job_seconds,
            "bare_addresses": [bare_address(i) for i in range(max(args.sizes))],
        },
        "repeats": args.repeats,
        "load_before": os.getloadavg()[0],
        "sizes": [],
    }
    live: list[BareNode] = []
    try:
        for i in range(max(args.sizes)):
            add_local_address(bare_address(i))
        iterations = calibrate(args.job_seconds)
        progress(f"job tasks: {iterations:,} iterations (~{args.job_seconds:g} s on one core)")
        results["job"] = bench_job(args.repeats, iterations, live)
        with tempfile.TemporaryDirectory(prefix="idlegrid-bench-deploy-") as tmp:
            progress(f"starting a local network with {WORKERS} agents in {tmp}")
            net = LocalNetwork(
                Path(tmp),
                port=free_port(),
                workers=WORKERS,
                heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
                min_uptime_s=MIN_UPTIME_S,
                env=NETWORK_ENV,
            )
            results["network_sandboxed"] = net.sandboxed
            with net, Client(net.server_url) as public:
                net.start()
                net.wait_for(
                    lambda: public.list_devices(readiness="cluster_ready").total >= WORKERS,
                    240,
                    f"{WORKERS} devices cluster-ready",
                    poll_s=0.5,
                )
                progress(f"{WORKERS} devices cluster-ready")
                kp = Keypair()
                with Client(net.server_url, keypair=kp) as client:
                    client.faucet(str(kp.pubkey()), FaucetRequest(asset="IO", amount="1000"))
                    for size in args.sizes:
                        results["sizes"].append(bench_size(net, client, size, args.repeats, live))
                progress("stopping the local network")
    except KeyboardInterrupt:
        stop_nodes(live)
        progress("interrupted; every process this benchmark started has been stopped")
        return 130
    finally:
        stop_nodes(live)
        LAUNCHERS.shutdown()
        # What a sandbox of this run's might have left (RayNode.stop removes its own).
        Bubblewrap().sweep(f"ig-bench{RUN}-")
    results["load_after"] = os.getloadavg()[0]
    results["verdict"] = verdict(results)
    return finish(results, _T0, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
