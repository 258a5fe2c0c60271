"""How long a buyer waits for a Ray cluster: deploy request to ``running``, beside a bare
``ray start`` of the same nodes, on this machine::

    .venv/bin/python benchmarks/deploy.py [--sizes 1,2,4] [--repeats 3] [--json]

One local network (``idlegrid.localnet.LocalNetwork``: a control plane and 4 worker
agents, each a real process, heartbeating every 1 s) is started once; the benchmark
waits until the 4 devices are ``cluster_ready`` and funds a buyer from the faucet. Then,
for each cluster size N and each of R repeats, three measurements back to back:

1. **Bare Ray.** The same ``ray start --block`` command lines the agents run, built by
   ``RayNode.command()`` itself (``--node-ip-address 127.0.0.1``, a ``device:`` resource,
   150 MB object store, ``--num-cpus 2``; the head with ``--head`` and its ports, the
   workers with ``--address``), with the agents' environment (``RAY_AUTH_MODE=token``, a
   fresh ``RAY_AUTH_TOKEN``, usage stats off, one BLAS thread). Each node is a child in
   its own process group and is ready when "Ray runtime started" appears in its output.
   The head starts first; the N-1 workers start together as soon as the head is ready.
   The time is from starting the head to the last node ready. The nodes are then
   stopped as the agents stop theirs (SIGTERM to ``ray start``, then SIGKILL to its
   process group), and the benchmark waits until every process they started is gone.
   This is "bare Ray" in the ratio and the goal.
2. **Bare Ray, all at once** (N > 1): the same, but the workers start together with the
   head (``ray start --address`` waits for the head's GCS). The control plane gives the
   workers the head's address as soon as the head reports ``starting``, so this is the
   schedule idlegrid itself follows, less the heartbeats.
3. **idlegrid.** ``client.quote`` + ``client.deploy`` for N CPU devices, then
   ``get_cluster`` every 50 ms until the status is ``running``. The time is from the
   quote request to the first reply that says ``running``. The replies also show when
   the head's node went ``starting`` (its agent picked the assignment up from a
   heartbeat reply) and ``up``, and when every worker went ``starting`` (they learn the
   head's address from a later heartbeat reply); these are printed as a timeline, with
   the CPU time that Ray, the control plane, the agents and the poller used meanwhile.
   Then ``terminate_cluster``, and the benchmark waits until the head's dashboard stops
   answering and the agents' Ray processes are gone, so that the next run starts clean.

Per size, the median and the minimum of each are printed, with idlegrid/bare as a ratio,
and a final line against the goal (at most 1.5x bare Ray) and io.net's 30-120 s.

The machine's cores are shared: with the control plane, the agents, and whatever else
runs here, so figures are noisy; the load average before and after is printed. Only
processes this benchmark started are ever stopped (never ``ray stop``, which would stop
every Ray node on the host).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import httpx
import psutil
from common import finish, machine, parse_counts, print_table
from solders.keypair import Keypair

from idlegrid.localnet import LocalNetwork
from idlegrid.protocol import Assignment, ClusterView, DeployRequest, FaucetRequest
from idlegrid.sdk import Client
from idlegrid.worker.raynode import STARTED_MARKER, RayConfig, RayNode, _die_with_parent, free_port

WORKERS = 4
HEARTBEAT_INTERVAL_S = 1.0
MIN_UPTIME_S = 2.0
# Proofs are measured elsewhere; here a loaded machine must not fail them.
NETWORK_ENV = {"IDLEGRID_PROOF_MIN_EFFICIENCY": "0.01", "IDLEGRID_PROOF_RETRY_S": "2"}
# What LocalNetwork gives each agent, and so each Ray node the agents start.
RAY_CONFIG = RayConfig(node_ip="127.0.0.1", object_store_mb=150, num_cpus=2)
AGENT_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
POLL_S = 0.05
START_TIMEOUT_S = 180.0  # the control plane's deploy_timeout_s
STOP_TIMEOUT_S = 60.0
GOAL_RATIO = 1.5
IONET_S = (30.0, 120.0)
ENDED = ("failed", "terminated", "completed")
ATTEMPTS = 3  # per measurement, when Ray or the cluster fails to start
CPU_KEYS = ("ray", "control_plane", "agents", "benchmark")

T = TypeVar("T")

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


class StartFailed(RuntimeError):
    """A Ray node or a cluster did not come up (an overloaded machine can time Ray out)."""


# -- bare Ray ----------------------------------------------------------------------------


class BareNode:
    """One ``ray start --block`` as an agent would run it, but started by us."""

    def __init__(
        self, role: Literal["head", "worker"], index: int, token: str, head_address: str | None
    ) -> None:
        assignment = Assignment(
            cluster_id="bare", generation=0, role=role, token=token, head_address=head_address
        )
        self.node = RayNode(assignment, f"bare-{index}", RAY_CONFIG, RAY_CONFIG.node_ip or "")
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.output: list[str] = []
        self.descendants: list[psutil.Process] = []

    @property
    def gcs_address(self) -> str:
        return f"{self.node.ip}:{self.node.ports['gcs']}"

    def start(self) -> None:
        env = {**self.node.environment(), **AGENT_ENV}  # as the agents run it
        self.proc = subprocess.Popen(
            self.node.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            # As the agents do, and it stops the node should this benchmark be killed.
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace")
            self.output = [*self.output[-40:], line]
            if STARTED_MARKER in line and not self.ready.is_set():
                self.ready_at = time.perf_counter()
                self.ready.set()

    def wait_ready(self, deadline: float) -> float:
        while not self.ready.wait(0.05):
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = "".join(self.output[-3:]).strip()[-300:]
                raise StartFailed(f"bare ray {self.node.assignment.role} exited: {tail}")
            if time.perf_counter() > deadline:
                raise StartFailed(f"bare ray {self.node.assignment.role} not ready in time")
        return self.ready_at

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            leader = psutil.Process(self.proc.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.Error:
            return []

    def remember_processes(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(psutil.Error):
            known = {p.pid for p in self.descendants}
            for p in psutil.Process(proc.pid).children(recursive=True):
                if p.pid not in known:
                    self.descendants.append(p)

    def terminate(self) -> None:
        """SIGTERM to ``ray start`` alone, as ``RayNode.stop`` does: it stops its own
        daemons (SIGTERM to the whole group instead leaves it waiting on its GCS)."""
        self.remember_processes()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait for ``ray start`` to exit, SIGKILL what is left of its process group (and
        any process it started that left the group), and wait until all are gone."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.perf_counter()))
        self.remember_processes()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for p in self.descendants:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if not wait_gone(self.descendants, time.perf_counter() + 10):
            progress(f"  warning: bare ray {self.node.assignment.role} left processes behind")
        self.proc = None


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


def stop_bare(nodes: Sequence[BareNode], grace_s: float = 10.0) -> None:
    for node in nodes:
        node.terminate()
    deadline = time.perf_counter() + grace_s
    for node in nodes:
        node.reap(deadline)


@dataclass
class BareRun:
    total_s: float  # start to the last node ready
    head_s: float  # start to the head ready
    stop_s: float
    ray_cpu_s: float  # CPU time of the nodes' processes alive when the last was ready


def bare_ray(size: int, live: list[BareNode], all_at_once: bool = False) -> BareRun:
    """Start a head and ``size - 1`` workers as the agents would, the workers once the
    head is ready (or with it, ``all_at_once``); then stop them."""
    token = secrets.token_hex(32)
    head = BareNode("head", 0, token, None)
    live.append(head)
    try:
        started = time.perf_counter()
        deadline = started + START_TIMEOUT_S
        head.start()  # builds the command line, so the head's GCS port is known
        workers = [BareNode("worker", i, token, head.gcs_address) for i in range(1, size)]
        live.extend(workers)
        if not all_at_once:
            head.wait_ready(deadline)
        for w in workers:
            w.start()
        head_at = head.wait_ready(deadline)
        done_at = max([head_at, *(w.wait_ready(deadline) for w in workers)])
        ray_cpu = cpu_s(p for node in live for p in node.processes())
    finally:
        stopping = time.perf_counter()
        stop_bare(live)
        stop_s = time.perf_counter() - stopping
        live.clear()
    return BareRun(done_at - started, head_at - started, stop_s, ray_cpu)


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


def summarise(values: Sequence[float | None]) -> dict[str, float | None]:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"median": None, "min": None}
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3)}


def bench_size(
    net: LocalNetwork, client: Client, size: int, repeats: int, live: list[BareNode]
) -> dict[str, Any]:
    bare: list[BareRun] = []
    at_once: list[BareRun] = []
    runs: list[dict[str, Any]] = []
    errors: list[str] = []

    def attempt(what: str, measure: Callable[[], T]) -> T | None:
        for _ in range(ATTEMPTS):
            try:
                return measure()
            except StartFailed as exc:
                progress(f"  {what}: FAILED: {exc}")
                errors.append(f"{what}: {exc}")
        return None

    for r in range(repeats):
        run = f"{size} device(s), run {r + 1}/{repeats}"
        progress(f"{run}: bare ray start, head first")
        b = attempt("bare", lambda: bare_ray(size, live))
        if b is not None:
            bare.append(b)
            progress(f"  bare: {b.total_s:.2f}s (head {b.head_s:.2f}s), stop {b.stop_s:.1f}s")
        if size > 1:
            progress(f"{run}: bare ray start, all at once")
            b = attempt("bare, all at once", lambda: bare_ray(size, live, all_at_once=True))
            if b is not None:
                at_once.append(b)
                progress(f"  bare, all at once: {b.total_s:.2f}s (head {b.head_s:.2f}s)")
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
        "bare": bare_summary(bare),
        "bare_all_at_once": bare_summary(at_once) if at_once else None,
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
    out["ratio"] = ratio(im, out["bare"]["total_s"])
    out["ratio_all_at_once"] = ratio(im, out["bare_all_at_once"]["total_s"]) if at_once else None
    return out


def bare_summary(runs: Sequence[BareRun]) -> dict[str, Any]:
    return {
        "runs_s": [round(b.total_s, 3) for b in runs],
        "total_s": summarise([b.total_s for b in runs]),
        "head_s": summarise([b.head_s for b in runs]),
        "ray_cpu_s": summarise([b.ray_cpu_s for b in runs]),
    }


def ratio(idlegrid: dict[str, float | None], bare: dict[str, float | None]) -> dict[str, Any]:
    def of(key: str) -> float | None:
        i, b = idlegrid[key], bare[key]
        return None if i is None or not b else round(i / b, 2)

    return {"median": of("median"), "min": of("min")}


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    sizes = [s for s in results["sizes"] if s["ratio"]["median"] is not None]
    if not sizes:
        return {"result": "NOT MEASURED"}
    worst = max(sizes, key=lambda s: s["ratio"]["median"])
    largest = max(sizes, key=lambda s: s["devices"])
    med = largest["idlegrid"]["total_s"]["median"]
    return {
        "goal_ratio": GOAL_RATIO,
        "worst_median_ratio": worst["ratio"]["median"],
        "worst_devices": worst["devices"],
        "result": "PASS" if worst["ratio"]["median"] <= GOAL_RATIO else "FAIL",
        "ionet_s": list(IONET_S),
        "largest_devices": largest["devices"],
        "largest_median_s": med,
        "faster_than_ionet": [round(IONET_S[0] / med, 1), round(IONET_S[1] / med, 1)],
    }


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_report(results: dict[str, Any]) -> None:
    sizes = results["sizes"]

    def mm(d: dict[str, Any] | None) -> str:
        return "-" if d is None else f"{fmt(d['total_s']['median'])} / {fmt(d['total_s']['min'])}"

    def x(r: dict[str, Any] | None, key: str = "median") -> str:
        return "-" if r is None or r[key] is None else f"{r[key]:.2f}x"

    print_table(
        "Start to running, seconds, median / min of "
        f"{results['repeats']} runs; ratio = idlegrid / bare (head first)",
        "rrrrrrrl",
        (
            "devices",
            "bare, head first",
            "bare, all at once",
            "idlegrid",
            "ratio med",
            "ratio min",
            "vs all at once",
            "idlegrid runs",
        ),
        [
            (
                str(s["devices"]),
                mm(s["bare"]),
                mm(s["bare_all_at_once"]),
                mm(s["idlegrid"]),
                x(s["ratio"]),
                x(s["ratio"], "min"),
                x(s["ratio_all_at_once"]),
                ", ".join(f"{v:.2f}" for v in s["idlegrid"]["runs_s"]),
            )
            for s in sizes
        ],
    )

    def at(s: dict[str, Any], step: str) -> str:
        t = s["idlegrid"]["timeline_s"].get(step)
        return fmt(t["median"]) if t else "-"

    print_table(
        "idlegrid's timeline, medians of seconds from the quote request, as polled every "
        "50 ms; bare Ray's beside it",
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
                fmt(s["bare"]["head_s"]["median"]),
                fmt(s["bare"]["total_s"]["median"]),
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
        "CPU seconds used from the start to ready/running, medians (the machine has "
        f"{results['machine']['cpus']} CPUs)",
        "rrrrrrr",
        (
            "devices",
            "bare: ray nodes",
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
                fmt(s["bare_all_at_once"]["ray_cpu_s"]["median"], ".1f")
                if s["bare_all_at_once"]
                else "-",
                *(fmt(s["idlegrid"]["cpu_s"][k]["median"], ".1f") for k in CPU_KEYS),
            )
            for s in sizes
        ],
    )
    failed = [(s["devices"], e) for s in sizes for e in s["failed_attempts"]]
    if failed:
        print(f"\nFailed attempts (each tried again, up to {ATTEMPTS} times in all):")
    for devices, e in failed:
        print(f"  {devices} device(s): {e}")
    teardown = ", ".join(
        f"{s['devices']}: {fmt(s['idlegrid']['teardown_s']['median'], '.1f')} s" for s in sizes
    )
    print(f"\nTerminate to every Ray process gone (median, by devices): {teardown}.")
    m = results["machine"]
    print(
        f"Machine: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, Ray {m['ray']}; "
        f"load average {results['load_before']:.1f} before, {results['load_after']:.1f} after; "
        f"{WORKERS} agents heartbeating every {HEARTBEAT_INTERVAL_S:g} s; "
        f"{results['total_s']:.0f} s in all."
    )
    v = results["verdict"]
    if v["result"] == "NOT MEASURED":
        print(f"\nGoal ≤ {GOAL_RATIO:g}x bare Ray: NOT MEASURED (no deploy reached running).")
        return
    lo, hi = v["faster_than_ionet"]
    ratios = ", ".join(f"{s['devices']}: {x(s['ratio'])}" for s in sizes)
    print(
        f"\nGoal ≤ {v['goal_ratio']:g}x bare Ray: median idlegrid/bare by devices {ratios}; "
        f"worst {v['worst_median_ratio']:.2f}x at {v['worst_devices']}: {v['result']}. "
        f"io.net takes {IONET_S[0]:.0f}-{IONET_S[1]:.0f} s; idlegrid's median for "
        f"{v['largest_devices']} devices is {v['largest_median_s']:.2f} s "
        f"({lo:g}-{hi:g}x faster)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time from deploy request to a running Ray cluster on a local idlegrid "
        "network, beside a bare `ray start` of the same nodes."
    )
    parser.add_argument(
        "--sizes",
        type=functools.partial(parse_counts, high=WORKERS),
        default=[1, 2, 4],
        help="default 1,2,4",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # the agents inherit it too
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
            "poll_s": POLL_S,
        },
        "repeats": args.repeats,
        "load_before": os.getloadavg()[0],
        "sizes": [],
    }
    live: list[BareNode] = []
    try:
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
        stop_bare(live)
        progress("interrupted; every process this benchmark started has been stopped")
        return 130
    finally:
        stop_bare(live)
    results["load_after"] = os.getloadavg()[0]
    results["verdict"] = verdict(results)
    return finish(results, _T0, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
