"""A local network on this machine: one control plane and N worker agents, each
a real subprocess in its own process group, as a provider would run them.

Used by ``idlegrid up``, ``idlegrid demo`` and the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx
import psutil

from idlegrid.errors import NotFound, TransportError
from idlegrid.identity import KeypairFileError, load_keypair
from idlegrid.worker.raynode import port_is_free

T = TypeVar("T")

LOCATIONS = ["US", "DE", "JP", "BR", "IN", "GB", "SG", "CA", "FR", "AU"]
# Local "machines" get addresses of their own, so that each sandbox owns its node's
# address and reaches its peers' (and never the host's loopback): from the
# benchmarking range (RFC 2544), added to the host's loopback interface.
PEER_NETWORK = "198.18.0.0/24"
NODE_MEMORY_MB = 4096


def local_address(index: int) -> str:
    return f"198.18.0.{10 + index % 240}"


def sandbox_problem() -> str | None:
    """Why this host cannot sandbox local workers (None: it can)."""
    from idlegrid.errors import SandboxUnavailable
    from idlegrid.worker.sandbox import default_sandbox

    try:
        default_sandbox().check()
    except SandboxUnavailable as exc:
        return exc.message
    return None


def overlay_problem() -> str | None:
    """Why local agents cannot form clusters over the overlay (None: they can)."""
    from idlegrid.worker.wireguard import available

    return available()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def add_local_address(ip: str) -> None:
    """Put ``ip`` on the host's loopback interface (root; already there is fine)."""
    from idlegrid.worker.sandbox import host_addresses

    if ip in host_addresses():
        return
    done = subprocess.run(
        ["ip", "addr", "add", f"{ip}/32", "dev", "lo"], capture_output=True, text=True
    )
    if done.returncode != 0 and ip not in host_addresses():
        raise RuntimeError(f"cannot add {ip} to the loopback interface: {done.stderr.strip()}")


class LocalNetwork:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        workers: int = 3,
        heartbeat_interval_s: float = 2.0,
        min_uptime_s: float | None = None,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        overlay: bool = False,
        wrap: Callable[[str], list[str]] | None = None,
        worker_ips: Sequence[str] | None = None,
    ) -> None:
        """``host``, ``wrap`` and ``worker_ips`` place the processes elsewhere than on
        this host's loopback (the overlay's tests: ``wrap(name)`` prefixes a process's
        command, e.g. ``ip netns exec home-1``, and ``worker_ips`` are the agents'
        own addresses there)."""
        self.data_dir = data_dir.resolve()
        self.host = host
        # Run the overlay (a relay beside the server; clusters form over WireGuard)
        # where the agents can: sandboxed, with wireguard-go (see ``overlay_on``).
        self.overlay = overlay
        self.overlay_on = False
        self.wrap = wrap
        self.worker_ips = list(worker_ips) if worker_ips is not None else None
        self.port = port
        self.workers = workers
        self.heartbeat_interval_s = heartbeat_interval_s
        self.min_uptime_s = min_uptime_s
        self.server_url = f"http://{host}:{port}"
        self.env = {**os.environ, "IDLEGRID_SERVER": self.server_url, **(env or {})}
        self.server: subprocess.Popen[bytes] | None = None
        self.relay: subprocess.Popen[bytes] | None = None
        self.agents: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self._sandbox_problem: str | bool | None = False  # False: not checked yet

    @property
    def sandboxed(self) -> bool:
        """Whether local workers run buyers' nodes in the sandbox (root, bwrap, pasta)."""
        if self._sandbox_problem is False:
            self._sandbox_problem = sandbox_problem()
            if self._sandbox_problem is not None:
                print(
                    f"warning: local workers run unsandboxed ({self._sandbox_problem}); "
                    "their devices are rented only to their owners",
                    file=sys.stderr,
                )
        return self._sandbox_problem is None

    @property
    def overlay_off(self) -> str | None:
        """Why clusters here will not form over the overlay although it was asked for
        (None: asked for and possible, or not asked for)."""
        if not self.overlay:
            return None
        if not self.sandboxed:
            return f"the sandbox is off: {self._sandbox_problem}"
        return overlay_problem()

    # -- processes -----------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        prefix = self.wrap(name) if self.wrap is not None else []
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "idlegrid.cli.main", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )

    def start_server(self, timeout_s: float = 30.0) -> None:
        if self.wrap is None and not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} is in use: pick another with --port")
        env = {
            # A local network is for trying things: the faucet, SQLite and an authority
            # key made on the spot (the server's defaults refuse them; settings.py).
            "IDLEGRID_ENVIRONMENT": "development",
            "IDLEGRID_BEAT_PORT": "0",  # any free one, told to the agents
            **self.env,
            "IDLEGRID_DATA_DIR": str(self.data_dir),
            "IDLEGRID_PORT": str(self.port),
            "IDLEGRID_HOST": self.host,
            "IDLEGRID_HEARTBEAT_INTERVAL_S": str(self.heartbeat_interval_s),
        }
        if self.min_uptime_s is not None:
            env["IDLEGRID_MIN_UPTIME_S"] = str(self.min_uptime_s)
        relay = None
        if self.overlay and self.overlay_off is None:
            relay, first, second = (free_udp_port() for _ in range(3))
            env.update(
                IDLEGRID_OVERLAY="true",
                IDLEGRID_OVERLAY_HOST=self.host,
                IDLEGRID_OVERLAY_RENDEZVOUS_PORTS=json.dumps([first, second]),
                IDLEGRID_OVERLAY_RELAYS=json.dumps([f"{self.host}:{relay}"]),
            )
        self.server = self._spawn("server", ["server"], env)
        self.wait_for(self._healthy, timeout_s, "the control plane to answer /healthz")
        if relay is not None:
            listen = ["--listen", f"{self.host}:{relay}", "--server", self.server_url]
            self.relay = self._spawn("relay", ["relay", *listen], self.env)
            self.overlay_on = True

    def _healthy(self) -> bool:
        if self.server is not None and self.server.poll() is not None:
            raise RuntimeError(
                f"the control plane exited with {self.server.returncode}; "
                f"see {self.data_dir / 'logs' / 'server.log'}"
            )
        try:
            return httpx.get(f"{self.server_url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def keypair_path(self, index: int) -> Path:
        return self.data_dir / "keys" / f"worker-{index}.json"

    def device_id(self, index: int) -> str:
        """The device id (public key) of worker ``index``, once it has started."""
        return str(load_keypair(self.keypair_path(index)).pubkey())

    def worker_ip(self, index: int) -> str:
        if self.worker_ips is not None:
            return self.worker_ips[index]
        return local_address(index) if self.sandboxed else "127.0.0.1"

    def cores_each(self) -> int:
        """The physical cores each local agent claims: this machine's, shared out."""
        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        return max(1, physical // max(1, self.workers))

    def start_worker(self, index: int, *extra: str) -> subprocess.Popen[bytes]:
        ip = self.worker_ip(index)
        if self.sandboxed:
            if self.worker_ips is None:
                add_local_address(ip)
            isolation = ["--ray-peer-network", PEER_NETWORK, "--ray-memory-mb", str(NODE_MEMORY_MB)]
        else:
            isolation = ["--no-sandbox"]
        args = [
            "worker",
            "start",
            "--server",
            self.server_url,
            "--keypair",
            str(self.keypair_path(index)),
            "--location",
            LOCATIONS[index % len(LOCATIONS)],
            "--name",
            f"local-{index}",
            # Ray nodes of local "machines" share this host: small object
            # stores, two CPUs each, and an address each.
            "--ray-ip",
            ip,
            *isolation,
            "--ray-object-store-mb",
            "150",
            "--ray-num-cpus",
            "2",
            # and each claims (and is proven on) the share of the cores it really gets
            "--cpu-cores",
            str(self.cores_each()),
            "--ray-log-dir",
            str(self.data_dir / "logs"),
            *extra,
        ]
        # Several "machines" share this one: one BLAS thread each keeps their
        # proofs of compute from fighting over the cores.
        env = {
            **self.env,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        proc = self._spawn(f"worker-{index}", args, env)
        self.agents[index] = proc
        return proc

    def start(self) -> None:
        self.start_server()
        for i in range(self.workers):
            self.start_worker(i)

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.agents.pop(index)
        _stop_group(proc, sig)

    def stop_server(self, sig: int = signal.SIGTERM) -> None:
        if self.server is not None:
            _stop_group(self.server, sig)
            self.server = None

    def close(self) -> None:
        for index in list(self.agents):
            self.kill_worker(index, signal.SIGTERM)
        self.stop_server()
        if self.relay is not None:
            _stop_group(self.relay, signal.SIGTERM)
            self.relay = None
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting -------------------------------------------------------------------

    @staticmethod
    def wait_for(
        predicate: Callable[[], T | None], timeout_s: float, what: str, poll_s: float = 0.2
    ) -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            # Not there yet: the server is starting, the device not yet registered,
            # the agent not yet done writing its keypair.
            with contextlib.suppress(TransportError, NotFound, KeypairFileError, OSError):
                result = predicate()
                if result:
                    return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(poll_s)


def _stop_group(proc: subprocess.Popen[bytes], sig: int, grace_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
